use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};

use super::session_aggregate::{drop_late_rows, key_rows};
use super::session_state::Sessions;
use crate::error::{EngineError, Result};
use crate::message::Watermark;
use crate::operator::{Operator, Output};
use crate::state::NodeState;
use crate::time::{nanos_per_unit, timestamp_array, timestamp_unit, timestamp_values};

/// Session windows (`SESSION` table function): per key, rows closer than `gap` to each other
/// form one session `[first time, last time + gap)`.
///
/// Rows are held until the watermark passes their session's end, then emitted with
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
    input: SchemaRef,
    schema: SchemaRef,
    sessions: Sessions,
    watermark: Option<i64>,
}

impl std::fmt::Debug for SessionAssign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionAssign")
            .field("gap", &self.gap)
            .field("keys", &self.key_columns)
            .field("buffered_rows", &self.sessions.buffered_rows())
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
        let gap = gap_nanos / per_unit;
        Ok(SessionAssign {
            time_column,
            time_type: field.data_type().clone(),
            gap,
            per_unit,
            key_columns,
            key_converter,
            input: input.clone(),
            schema: super::schema_with_window_columns(input, field.data_type()),
            sessions: Sessions::new(gap),
            watermark: None,
        })
    }

    /// Rows waiting for their session to close.
    pub fn buffered_rows(&self) -> usize {
        self.sessions.buffered_rows()
    }

    /// Emits every session that ends at or before `watermark` (all of them for `None`).
    fn close_sessions(&mut self, watermark: Option<i64>, out: &mut Output) -> Result<()> {
        let closed = self.sessions.close(watermark);
        if closed.is_empty() {
            return Ok(());
        }
        let mut starts = Vec::new();
        let mut ends = Vec::new();
        for s in &closed {
            starts.extend(std::iter::repeat_n(s.start, s.len()));
            ends.extend(std::iter::repeat_n(s.end, s.len()));
        }
        let mut columns = self.sessions.take_rows(&closed)?;
        columns.push(timestamp_array(Int64Array::from(starts), &self.time_type)?);
        columns.push(timestamp_array(Int64Array::from(ends), &self.time_type)?);
        out.batch(RecordBatch::try_new(self.schema.clone(), columns)?);
        Ok(())
    }
}

impl Operator for SessionAssign {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        self.add_rows(batch, out)
    }

    fn process_watermark(&mut self, watermark: Watermark, out: &mut Output) -> Result<()> {
        if let Watermark::EventTime(t) = watermark {
            let w = t.div_euclid(self.per_unit);
            self.watermark = Some(self.watermark.map_or(w, |c| c.max(w)));
            if self.sessions.earliest_end().is_some_and(|end| end <= w) {
                self.close_sessions(Some(w), out)?;
            }
        }
        out.watermark(watermark);
        Ok(())
    }

    fn finish(&mut self, out: &mut Output) -> Result<()> {
        self.close_sessions(None, out)
    }

    /// Saves the watermark and the rows of the open sessions (table `rows`, the input's
    /// columns): re-adding them rebuilds the same sessions.
    fn snapshot(&mut self) -> Result<NodeState> {
        let state = NodeState::json(&self.watermark)?;
        let Some(columns) = self.sessions.held_rows()? else {
            return Ok(state);
        };
        Ok(state.with_table(
            ROWS_TABLE,
            RecordBatch::try_new(self.input.clone(), columns)?,
        ))
    }

    fn restore(&mut self, state: NodeState) -> Result<()> {
        self.sessions = Sessions::new(self.gap);
        // Held rows are re-added before the watermark: some of them are older than it and
        // belong to sessions that a later row kept open.
        self.watermark = None;
        if let Some(rows) = state.table(ROWS_TABLE) {
            if rows.schema().fields().len() != self.input.fields().len() {
                return Err(EngineError::User(
                    "the saved session rows do not match this query; the pipeline changed (start with --from-scratch)".into(),
                ));
            }
            let rows = RecordBatch::try_new(self.input.clone(), rows.columns().to_vec())?;
            self.add_rows(rows, &mut Output::default())?;
        }
        self.watermark = state.to_json::<Option<i64>>()?.flatten();
        Ok(())
    }
}

/// The state table of rows held in open sessions.
const ROWS_TABLE: &str = "rows";

impl SessionAssign {
    /// Adds rows to their sessions, dropping (and counting) those already late.
    fn add_rows(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let (time, gap, unit) = (self.time_column, self.gap, self.per_unit);
        let Some(batch) = drop_late_rows(batch, time, gap, self.watermark, unit, out)? else {
            return Ok(());
        };
        let times = timestamp_values(batch.column(self.time_column))?;
        let keys = key_rows(self.key_converter.as_ref(), &self.key_columns, &batch)?;
        self.sessions.add(batch, times.values(), keys.as_ref());
        Ok(())
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

    fn user_and_time() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("user", DataType::Utf8, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
        ]))
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
        let schema = user_and_time();
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

    #[test]
    fn a_row_bridging_two_sessions_merges_them() {
        let schema = user_and_time();
        let mut op = SessionAssign::new(&schema, 1, 10_000_000, vec![0]).unwrap(); // 10 ms gap
        let mut out = Output::default();
        op.process_batch(0, batch(&schema, &["a", "a"], &[100, 115]), &mut out)
            .unwrap();
        op.process_batch(0, batch(&schema, &["a"], &[108]), &mut out)
            .unwrap();
        op.process_watermark(Watermark::EventTime(124_000_000), &mut out)
            .unwrap();
        assert!(sessions(&mut out).is_empty());
        op.process_watermark(Watermark::EventTime(125_000_000), &mut out)
            .unwrap();
        assert_eq!(
            sessions(&mut out),
            vec![
                ("a".into(), 100, 100, 125),
                ("a".into(), 108, 100, 125),
                ("a".into(), 115, 100, 125)
            ]
        );
    }

    #[test]
    fn a_long_session_does_not_pin_emitted_batches() {
        let schema = user_and_time();
        let mut op = SessionAssign::new(&schema, 1, 1_000_000_000, vec![0]).unwrap(); // 1 s gap
        let mut out = Output::default();
        for b in 0..20i64 {
            // One row of the long session "x" (ends at base + 1000, still open at the watermark
            // base + 999) and 999 rows of short sessions (end base + 700) that close.
            let base = b * 500;
            let mut keys = vec!["x"];
            let mut times = vec![base];
            let names: Vec<String> = (0..999).map(|i| format!("y{b}-{i}")).collect();
            keys.extend(names.iter().map(|n| n.as_str()));
            times.extend(std::iter::repeat_n(base - 300, 999));
            op.process_batch(0, batch(&schema, &keys, &times), &mut out)
                .unwrap();
            op.process_watermark(Watermark::EventTime((base + 999) * 1_000_000), &mut out)
                .unwrap();
        }
        assert_eq!(
            op.buffered_rows(),
            20,
            "only the long session's rows are held"
        );
        assert!(
            op.sessions.stored_rows_for_test() <= 20 + 2 * 999 + 8192,
            "emitted batches were released"
        );
        let closed = sessions(&mut out);
        assert_eq!(closed.len(), 20 * 999);
        let mut last = Output::default();
        op.finish(&mut last).unwrap();
        let long = sessions(&mut last);
        assert_eq!(long.len(), 20);
        assert!(
            long.iter()
                .all(|(k, _, s, e)| k == "x" && *s == 0 && *e == 19 * 500 + 1000)
        );
    }
}
