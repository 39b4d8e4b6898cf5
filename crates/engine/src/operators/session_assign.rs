use datafusion::arrow::array::{ArrayRef, Int64Array, UInt32Array};
use datafusion::arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};

use crate::error::{EngineError, Result};
use crate::message::Watermark;
use crate::operator::{Operator, Output};
use crate::time::{nanos_per_unit, timestamp_array, timestamp_unit, timestamp_values};

/// Session windows (`SESSION` table function): per key, rows closer than `gap` to each other
/// form one session `[first time, last time + gap)`.
///
/// Rows are buffered until the watermark passes their session's end, then emitted with
/// `window_start` and `window_end` appended. Because a session's end is only known when it
/// closes, its rows wait here (state is bounded by the rows of open sessions). A row whose
/// session would already have closed (`time + gap <= watermark`) is late: dropped and counted.
pub struct SessionAssign {
    time_column: usize,
    time_type: DataType,
    gap: i64,
    per_unit: i64,
    key_columns: Vec<usize>,
    key_converter: Option<RowConverter>,
    schema: SchemaRef,
    input_schema: SchemaRef,
    buffer: Vec<RecordBatch>,
    /// No session can close before this time (in the column's unit).
    earliest_close: i64,
    watermark: Option<i64>,
}

impl std::fmt::Debug for SessionAssign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionAssign")
            .field("gap", &self.gap)
            .field("keys", &self.key_columns)
            .finish()
    }
}

impl SessionAssign {
    /// Sessions over column `time_column` of `input` with gap `gap_nanos`, partitioned by
    /// `key_columns` (none: one global session sequence).
    pub fn new(
        input: &SchemaRef,
        time_column: usize,
        gap_nanos: i64,
        key_columns: Vec<usize>,
    ) -> Result<Self> {
        let field = input.field(time_column);
        let unit = timestamp_unit(field.data_type(), field.name())?;
        let per_unit = nanos_per_unit(unit);
        if gap_nanos <= 0 || gap_nanos % per_unit != 0 {
            return Err(EngineError::User(format!(
                "the SESSION gap must be a positive whole multiple of the time column's unit ({unit:?})"
            )));
        }
        let key_converter = if key_columns.is_empty() {
            None
        } else {
            Some(RowConverter::new(
                key_columns
                    .iter()
                    .map(|i| SortField::new(input.field(*i).data_type().clone()))
                    .collect(),
            )?)
        };
        Ok(SessionAssign {
            time_column,
            time_type: field.data_type().clone(),
            gap: gap_nanos / per_unit,
            per_unit,
            key_columns,
            key_converter,
            schema: super::schema_with_window_columns(input, field.data_type()),
            input_schema: input.clone(),
            buffer: Vec::new(),
            earliest_close: i64::MAX,
            watermark: None,
        })
    }

    /// Rows waiting for their session to close.
    pub fn buffered_rows(&self) -> usize {
        self.buffer.iter().map(|b| b.num_rows()).sum()
    }

    /// Emits every session that ends at or before `watermark` (all of them for `None`).
    fn close_sessions(&mut self, watermark: Option<i64>, out: &mut Output) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let all = concat_batches(&self.input_schema, &self.buffer)?;
        self.buffer.clear();
        let mut sort_columns: Vec<SortColumn> = self
            .key_columns
            .iter()
            .map(|i| SortColumn {
                values: all.column(*i).clone(),
                options: None,
            })
            .collect();
        sort_columns.push(SortColumn {
            values: all.column(self.time_column).clone(),
            options: None,
        });
        let order = lexsort_to_indices(&sort_columns, None)?;
        let times = timestamp_values(all.column(self.time_column))?;
        let times = times.values();
        let keys = match &self.key_converter {
            Some(c) => Some(
                c.convert_columns(
                    &self
                        .key_columns
                        .iter()
                        .map(|i| all.column(*i).clone())
                        .collect::<Vec<ArrayRef>>(),
                )?,
            ),
            None => None,
        };

        let mut closed_rows: Vec<u32> = Vec::new();
        let mut closed_start: Vec<i64> = Vec::new();
        let mut closed_end: Vec<i64> = Vec::new();
        let mut open_rows: Vec<u32> = Vec::new();
        let mut earliest_open_end = i64::MAX;

        let order = order.values();
        let mut segment_begin = 0usize;
        while segment_begin < order.len() {
            // Extend the session while the key is the same and the gap is not reached.
            let first = order[segment_begin] as usize;
            let mut last = first;
            let mut next = segment_begin + 1;
            while next < order.len() {
                let row = order[next] as usize;
                let same_key = keys.as_ref().is_none_or(|k| k.row(row) == k.row(first));
                if !same_key || times[row] - times[last] >= self.gap {
                    break;
                }
                last = row;
                next += 1;
            }
            let start = times[first];
            let end = times[last] + self.gap;
            let segment = &order[segment_begin..next];
            if watermark.is_none_or(|w| end <= w) {
                closed_rows.extend_from_slice(segment);
                closed_start.extend(std::iter::repeat_n(start, segment.len()));
                closed_end.extend(std::iter::repeat_n(end, segment.len()));
            } else {
                open_rows.extend_from_slice(segment);
                earliest_open_end = earliest_open_end.min(end);
            }
            segment_begin = next;
        }

        if !open_rows.is_empty() {
            let indices = UInt32Array::from(open_rows);
            self.buffer.push(take_batch(&all, &indices)?);
        }
        self.earliest_close = earliest_open_end;
        if !closed_rows.is_empty() {
            let indices = UInt32Array::from(closed_rows);
            let mut columns = take_batch(&all, &indices)?.columns().to_vec();
            columns.push(timestamp_array(
                Int64Array::from(closed_start),
                &self.time_type,
            )?);
            columns.push(timestamp_array(
                Int64Array::from(closed_end),
                &self.time_type,
            )?);
            out.batch(RecordBatch::try_new(self.schema.clone(), columns)?);
        }
        Ok(())
    }
}

fn take_batch(batch: &RecordBatch, indices: &UInt32Array) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .map(|c| take(c.as_ref(), indices, None))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

impl Operator for SessionAssign {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let times = timestamp_values(batch.column(self.time_column))?;
        let gap = self.gap;
        let live = |t: Option<i64>| match (t, self.watermark) {
            (None, _) => false,
            (Some(t), Some(w)) => t + gap > w,
            (Some(_), None) => true,
        };
        let keep: Vec<bool> = times.iter().map(live).collect();
        let kept = keep.iter().filter(|k| **k).count();
        out.count_late((keep.len() - kept) as u64);
        let batch = if kept == keep.len() {
            batch
        } else {
            let mask = datafusion::arrow::array::BooleanArray::from(keep);
            datafusion::arrow::compute::filter_record_batch(&batch, &mask)?
        };
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let times = timestamp_values(batch.column(self.time_column))?;
        if let Some(min) = datafusion::arrow::compute::min(&times) {
            self.earliest_close = self.earliest_close.min(min + gap);
        }
        self.buffer.push(batch);
        Ok(())
    }

    fn process_watermark(&mut self, watermark: Watermark, out: &mut Output) -> Result<()> {
        if let Watermark::EventTime(t) = watermark {
            let w = t.div_euclid(self.per_unit);
            self.watermark = Some(self.watermark.map_or(w, |c| c.max(w)));
            if w >= self.earliest_close {
                self.close_sessions(Some(w), out)?;
            }
        }
        out.watermark(watermark);
        Ok(())
    }

    fn finish(&mut self, out: &mut Output) -> Result<()> {
        self.close_sessions(None, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use datafusion::arrow::array::{AsArray, StringArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit, TimestampMillisecondType};
    use std::sync::Arc;

    fn batch(schema: &SchemaRef, keys: &[&str], times: &[i64]) -> RecordBatch {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(keys.to_vec())),
                Arc::new(TimestampMillisecondArray::from(times.to_vec())),
            ],
        )
        .unwrap()
    }

    fn sessions(out: &mut Output) -> Vec<(String, i64, i64, i64)> {
        let mut rows = Vec::new();
        for m in out.drain() {
            if let Message::Batch(b) = m {
                for i in 0..b.num_rows() {
                    rows.push((
                        b.column(0).as_string::<i32>().value(i).to_string(),
                        b.column(1)
                            .as_primitive::<TimestampMillisecondType>()
                            .value(i),
                        b.column(2)
                            .as_primitive::<TimestampMillisecondType>()
                            .value(i),
                        b.column(3)
                            .as_primitive::<TimestampMillisecondType>()
                            .value(i),
                    ));
                }
            }
        }
        rows.sort();
        rows
    }

    #[test]
    fn sessions_close_per_key_when_the_watermark_passes_their_end() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("user", DataType::Utf8, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
        ]));
        let mut op = SessionAssign::new(&schema, 1, 10_000_000, vec![0]).unwrap(); // 10 ms gap
        let mut out = Output::default();
        op.process_batch(
            0,
            batch(&schema, &["a", "b", "a", "a"], &[100, 100, 105, 130]),
            &mut out,
        )
        .unwrap();
        op.process_watermark(Watermark::EventTime(114_000_000), &mut out)
            .unwrap();
        // b's session [100, 110) has closed; a's [100, 115) has not.
        assert_eq!(sessions(&mut out), vec![("b".into(), 100, 100, 110)]);
        op.process_watermark(Watermark::EventTime(115_000_000), &mut out)
            .unwrap();
        assert_eq!(
            sessions(&mut out),
            vec![("a".into(), 100, 100, 115), ("a".into(), 105, 100, 115)]
        );
        // 104 + 10 <= 115: late.
        op.process_batch(0, batch(&schema, &["a", "a"], &[104, 135]), &mut out)
            .unwrap();
        let mut out2 = Output::default();
        op.finish(&mut out2).unwrap();
        assert_eq!(
            sessions(&mut out2),
            vec![("a".into(), 130, 130, 145), ("a".into(), 135, 130, 145)]
        );
        assert_eq!(out.take_counters(), (1, 0));
    }
}
