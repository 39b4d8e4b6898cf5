use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, UInt32Array};
use datafusion::arrow::compute::{filter_record_batch, is_null, not, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{EngineError, Result};
use crate::message::{EventTime, Watermark};
use crate::operator::{Operator, Output};
use crate::state::NodeState;
use crate::time::{
    format_event_time, nanos_per_unit, timestamp_array, timestamp_unit, timestamp_values,
};

/// Fixed-size windows that start every `slide`: a tumbling window has `slide == size`, a
/// hopping window `slide < size`. Durations are in nanoseconds; windows are aligned to the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindow {
    /// Window length.
    pub size_nanos: i64,
    /// Distance between window starts.
    pub slide_nanos: i64,
}

impl SlidingWindow {
    /// `TUMBLE(…, size)`.
    pub fn tumbling(size_nanos: i64) -> Result<Self> {
        Self::hopping(size_nanos, size_nanos)
    }

    /// `HOP(…, slide, size)`.
    pub fn hopping(slide_nanos: i64, size_nanos: i64) -> Result<Self> {
        if size_nanos <= 0 || slide_nanos <= 0 {
            return Err(EngineError::User(
                "window size and slide must be positive intervals".into(),
            ));
        }
        if slide_nanos > size_nanos {
            return Err(EngineError::User(format!(
                "HOP slide ({} ms) is larger than its size ({} ms): rows between windows would be lost",
                slide_nanos / 1_000_000,
                size_nanos / 1_000_000
            )));
        }
        Ok(SlidingWindow {
            size_nanos,
            slide_nanos,
        })
    }

    /// How many windows each row belongs to (at most).
    pub fn windows_per_row(&self) -> usize {
        (self.size_nanos as u64).div_ceil(self.slide_nanos as u64) as usize
    }
}

/// Appends `window_start` and `window_end` to every row (TUMBLE and HOP table functions). For
/// HOP, a row is repeated once per window it falls into. Rows whose time is NULL belong to no
/// window, and copies for windows that the watermark already closed are too late for them:
/// both are dropped as late rows, whole (the aggregate downstream may only see some columns).
#[derive(Debug)]
pub struct WindowAssign {
    window: SlidingWindow,
    time_column: usize,
    time_type: DataType,
    size: i64,
    slide: i64,
    schema: SchemaRef,
    /// Assign by the time rows are processed (the wall clock) instead of the time column.
    processing_time: bool,
    per_unit: i64,
    /// The watermark in the time column's unit: rows only in windows that end at or before it
    /// are late.
    watermark: Option<i64>,
}

impl WindowAssign {
    /// Assigns windows by column `time_column` of `input`; output is `input` plus the two
    /// window columns (see [`super::schema_with_window_columns`]).
    pub fn new(window: SlidingWindow, input: &SchemaRef, time_column: usize) -> Result<Self> {
        let field = input.field(time_column);
        let unit = timestamp_unit(field.data_type(), field.name())?;
        let per_unit = nanos_per_unit(unit);
        if window.size_nanos % per_unit != 0 || window.slide_nanos % per_unit != 0 {
            return Err(EngineError::User(format!(
                "window sizes must be whole multiples of the time column's unit ({unit:?})"
            )));
        }
        Ok(WindowAssign {
            window,
            time_column,
            time_type: field.data_type().clone(),
            size: window.size_nanos / per_unit,
            slide: window.slide_nanos / per_unit,
            schema: super::schema_with_window_columns(input, field.data_type()),
            processing_time: false,
            per_unit,
            watermark: None,
        })
    }

    /// Windows by processing time: every row is assigned by the wall-clock time it is
    /// processed at (for sources without a WATERMARK, whose watermark is the wall clock).
    pub fn by_processing_time(mut self) -> Self {
        self.processing_time = true;
        self
    }

    /// The window definition.
    pub fn window(&self) -> SlidingWindow {
        self.window
    }
}

impl WindowAssign {
    /// The batch with the window columns appended, its row `indices[i]` once per window start
    /// `starts[i]`; the copies of windows that already closed go to `out` as late rows (with
    /// the whole input row, so they can be replayed).
    fn emit(
        &self,
        batch: &RecordBatch,
        indices: Option<&UInt32Array>,
        starts: Int64Array,
        out: &mut Output,
    ) -> Result<()> {
        let size = self.size;
        let ends: Int64Array = starts.unary(|s| s + size);
        let mut columns: Vec<ArrayRef> = match indices {
            None => batch.columns().to_vec(),
            Some(indices) => batch
                .columns()
                .iter()
                .map(|c| take(c.as_ref(), indices, None))
                .collect::<std::result::Result<_, _>>()?,
        };
        columns.push(timestamp_array(starts, &self.time_type)?);
        columns.push(timestamp_array(ends.clone(), &self.time_type)?);
        let assigned = RecordBatch::try_new(self.schema.clone(), columns)?;
        let Some(w) = self.watermark.filter(|_| !self.processing_time) else {
            out.batch(assigned);
            return Ok(());
        };
        if ends.values().iter().all(|e| *e > w) {
            out.batch(assigned);
            return Ok(());
        }
        let open: BooleanArray = ends.values().iter().map(|e| Some(*e > w)).collect();
        out.late(
            filter_record_batch(&assigned, &not(&open)?)?,
            format!(
                "its window had closed: window_end is at or before the watermark {}",
                format_event_time(w.saturating_mul(self.per_unit))
            ),
        );
        out.batch(filter_record_batch(&assigned, &open)?);
        Ok(())
    }
}

impl Operator for WindowAssign {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let rows = batch.num_rows();
        let times = if self.processing_time {
            Int64Array::from_value(crate::time::now().div_euclid(self.per_unit), rows)
        } else {
            timestamp_values(batch.column(self.time_column))?
        };
        let per_row = self.window.windows_per_row();
        let (size, slide) = (self.size, self.slide);

        if per_row == 1 && times.null_count() == 0 {
            // Tumbling fast path: one window per row, no row repetition.
            let starts: Int64Array = times.unary(|t| t - t.rem_euclid(slide));
            return self.emit(&batch, None, starts, out);
        }

        let mut indices: Vec<u32> = Vec::with_capacity(rows * per_row);
        let mut starts: Vec<i64> = Vec::with_capacity(rows * per_row);
        for (row, t) in times.iter().enumerate() {
            let Some(t) = t else {
                continue;
            };
            let last_start = t - t.rem_euclid(slide);
            let mut start = last_start;
            while start > t - size {
                indices.push(row as u32);
                starts.push(start);
                start -= slide;
            }
        }
        if times.null_count() > 0 {
            let no_time = is_null(&times)?;
            out.late(
                filter_record_batch(&batch, &no_time)?,
                "its event time is NULL: it belongs to no window",
            );
        }
        let indices = UInt32Array::from(indices);
        self.emit(&batch, Some(&indices), Int64Array::from(starts), out)
    }

    fn process_watermark(&mut self, watermark: Watermark, out: &mut Output) -> Result<()> {
        if let Watermark::EventTime(t) = watermark
            && t != EventTime::MAX
        {
            let w = t.div_euclid(self.per_unit);
            self.watermark = Some(self.watermark.map_or(w, |c| c.max(w)));
        }
        out.watermark(watermark);
        Ok(())
    }

    /// The watermark, so that rows of closed windows are recognised right after a restart.
    fn snapshot(&mut self) -> Result<NodeState> {
        NodeState::json(&self.watermark)
    }

    fn restore(&mut self, state: NodeState) -> Result<()> {
        self.watermark = state.to_json::<Option<i64>>()?.flatten();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use datafusion::arrow::array::{AsArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::TimeUnit;
    use datafusion::arrow::datatypes::{Field, Schema, TimestampMillisecondType};
    use std::sync::Arc;

    fn run(window: SlidingWindow, times: Vec<Option<i64>>) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        )]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(TimestampMillisecondArray::from(times))],
        )
        .unwrap();
        let mut op = WindowAssign::new(window, &schema, 0).unwrap();
        let mut out = Output::default();
        op.process_batch(0, batch, &mut out).unwrap();
        let Some(Message::Batch(b)) = out.drain().next() else {
            panic!("no output")
        };
        let col = |i: usize| -> Vec<i64> {
            b.column(i)
                .as_primitive::<TimestampMillisecondType>()
                .values()
                .to_vec()
        };
        (col(0), col(1), col(2))
    }

    #[test]
    fn tumbling_windows_align_to_the_epoch() {
        let w = SlidingWindow::tumbling(60_000_000_000).unwrap();
        let (ts, start, end) = run(w, vec![Some(59_999), Some(60_000), Some(-1)]);
        assert_eq!(ts, vec![59_999, 60_000, -1]);
        assert_eq!(start, vec![0, 60_000, -60_000]);
        assert_eq!(end, vec![60_000, 120_000, 0]);
    }

    #[test]
    fn hopping_windows_repeat_rows_and_drop_null_times() {
        // size 3 s, slide 1 s: a row at 2.5 s is in [0,3), [1,4), [2,5).
        let w = SlidingWindow::hopping(1_000_000_000, 3_000_000_000).unwrap();
        let (ts, start, end) = run(w, vec![Some(2_500), None]);
        assert_eq!(ts, vec![2_500, 2_500, 2_500]);
        assert_eq!(start, vec![2_000, 1_000, 0]);
        assert_eq!(end, vec![5_000, 4_000, 3_000]);
    }

    #[test]
    fn slide_larger_than_size_is_rejected() {
        assert!(SlidingWindow::hopping(2, 1).is_err());
    }
}
