//! Keep-first deduplication by event time as an append-only result: `ROW_NUMBER() OVER
//! (PARTITION BY … ORDER BY <event time>) = 1`, each key's first row emitted once, final.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, Int64Array};
use datafusion::arrow::datatypes::{Field, Int64Type, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::HashMap;
use datafusion::physical_expr::PhysicalSortExpr;

use super::change_tracker::ChangeTracker;
use super::idle_sweep::{IdleSweep, processing_time_ms};
use super::rank::RankSpec;
use super::rank_rows::{EncodedRows, RankRows};
use super::window_aggregate::generic_batch;
use crate::changelog::{ChangeKind, StreamMode};
use crate::error::{EngineError, Result};
use crate::message::{CheckpointBarrier, Watermark};
use crate::operator::{Operator, Output};
use crate::state::{KeyedTable, NodeState};
use crate::time::{from_event_time, timestamp_unit, timestamp_values};

/// A key's best row so far: its time, sort key and row (row format).
#[derive(Debug, Clone)]
struct Candidate {
    time: i64,
    sort: Box<[u8]>,
    row: Box<[u8]>,
}

/// Keeps, per partition, the row with the smallest event time seen, until the watermark
/// passes that time: then no row with an earlier time can arrive on time, and the row is
/// emitted (row number 1) as a final, append-only row. Later rows of an emitted key are
/// dropped. Equal times keep the row that arrived first. State: one candidate per key not yet
/// emitted, and the emitted keys (they grow with the keys, as deduplication's do, unless a
/// state TTL forgets the keys emitted longer ago than that: a later row of such a key is
/// emitted again).
pub struct KeepFirstOperator {
    codec: RankRows,
    time_column: usize,
    time_unit: TimeUnit,
    candidates: HashMap<Box<[u8]>, Candidate>,
    /// (time, key) of every candidate, for the watermark to release in time order.
    by_time: BTreeSet<(i64, Box<[u8]>)>,
    /// Emitted keys.
    emitted: HashMap<Box<[u8]>, Emitted>,
    /// Which keys were emitted or forgotten since each snapshot.
    changes: ChangeTracker,
    ttl: Option<IdleSweep>,
}

/// An emitted key: when (processing time, ms), and the epoch of [`ChangeTracker`] then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Emitted {
    at_ms: u64,
    stamp: u64,
}

impl std::fmt::Debug for KeepFirstOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeepFirstOperator")
            .field("candidates", &self.candidates.len())
            .field("emitted", &self.emitted.len())
            .finish()
    }
}

impl KeepFirstOperator {
    /// Keep-first over rows of `input` partitioned as `spec` says, ordered by the event-time
    /// column `time_column` ascending (`spec.order` must be exactly that).
    pub fn new(
        input: SchemaRef,
        spec: &RankSpec,
        time_column: usize,
        rank_field: Option<&Field>,
    ) -> Result<Self> {
        let time_unit = timestamp_unit(input.field(time_column).data_type(), "the event time")?;
        let by_time = matches!(spec.order.as_slice(),
            [PhysicalSortExpr { expr, options }] if !options.descending
                && expr.downcast_ref::<datafusion::physical_expr::expressions::Column>()
                    .is_some_and(|c| c.index() == time_column));
        if !by_time || spec.limit != 1 {
            return Err(EngineError::Internal(
                "keep-first deduplication is one row ordered by the event time ascending".into(),
            ));
        }
        Ok(KeepFirstOperator {
            codec: RankRows::new(&input, &spec.partition, &spec.order, rank_field, false)?,
            time_column,
            time_unit,
            candidates: HashMap::new(),
            by_time: BTreeSet::new(),
            emitted: HashMap::new(),
            changes: ChangeTracker::default(),
            ttl: None,
        })
    }

    /// Forgets the keys emitted longer than `ttl` ago (processing time, checked on ticks).
    pub fn with_state_ttl(mut self, ttl: Option<std::time::Duration>) -> Self {
        self.ttl = ttl.map(IdleSweep::new);
        self
    }

    /// Forgets the emitted keys older than the TTL at processing time `now` (ms), if a sweep
    /// is due; returns how many.
    pub fn expire_emitted_keys(&mut self, now: u64) -> usize {
        let Some(cutoff) = self.ttl.as_mut().and_then(|t| t.due(now)) else {
            return 0;
        };
        let forgotten: Vec<Box<[u8]>> = self
            .emitted
            .iter()
            .filter(|(_, e)| e.at_ms < cutoff)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &forgotten {
            self.emitted.remove(key);
        }
        if !forgotten.is_empty() {
            let keys = BinaryArray::from_iter_values(forgotten.iter());
            if let Ok(removed) = generic_batch(vec![Arc::new(keys)]) {
                self.changes.removed(removed, self.emitted.len());
            }
        }
        forgotten.len()
    }

    /// Folds rows in: a key's candidate is replaced by a row that sorts before it.
    fn fold(&mut self, batch: &RecordBatch) -> Result<()> {
        let EncodedRows { keys, sorts, rows } = self.codec.encode(batch)?;
        let times = timestamp_values(batch.column(self.time_column))?;
        for i in 0..batch.num_rows() {
            // Rows without a time were taken out (as late) before.
            if times.is_null(i) {
                continue;
            }
            let key = keys.row(i).data();
            if self.emitted.contains_key(key) {
                continue;
            }
            let sort = sorts.row(i).data();
            if let Some(c) = self.candidates.get(key) {
                if *c.sort <= *sort {
                    continue;
                }
                self.by_time.remove(&(c.time, Box::from(key)));
            }
            let time = times.value(i);
            self.by_time.insert((time, Box::from(key)));
            self.candidates.insert(
                Box::from(key),
                Candidate {
                    time,
                    sort: Box::from(sort),
                    row: Box::from(rows.row(i).data()),
                },
            );
        }
        Ok(())
    }

    /// Emits the candidates whose time is at or before `watermark` (all for `None`).
    fn release(&mut self, watermark: Option<i64>, out: &mut Output) -> Result<()> {
        let mut released = Vec::new();
        let at_ms = processing_time_ms();
        let stamp = self.changes.epoch();
        while let Some((time, _)) = self.by_time.first() {
            if watermark.is_some_and(|w| *time > w) {
                break;
            }
            let (_, key) = self.by_time.pop_first().expect("there is a first");
            if let Some(c) = self.candidates.remove(&key) {
                released.push(c);
            }
            self.emitted.insert(key, Emitted { at_ms, stamp });
        }
        if released.is_empty() {
            return Ok(());
        }
        let rows: Vec<(&[u8], u64, ChangeKind)> = released
            .iter()
            .map(|c| (&*c.row, 1, ChangeKind::Insert))
            .collect();
        out.batch(self.codec.batch(&rows)?);
        Ok(())
    }
}

/// State tables: the candidates' rows, and the emitted keys.
const CANDIDATES_TABLE: &str = "candidates";
const EMITTED_TABLE: &str = "emitted";

impl Operator for KeepFirstOperator {
    fn output_schema(&self) -> SchemaRef {
        self.codec.output()
    }

    fn output_mode(&self, inputs: &[StreamMode]) -> std::result::Result<StreamMode, String> {
        if inputs.iter().any(StreamMode::is_updating) {
            return Err("ROW_NUMBER over an updating result is not supported yet; rank the source rows or a window's results".into());
        }
        Ok(StreamMode::AppendOnly)
    }

    fn open_state(&self) -> u64 {
        (self.candidates.len() + self.emitted.len()) as u64
    }

    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let times = batch.column(self.time_column);
        if times.null_count() > 0 {
            let timed = datafusion::arrow::compute::is_not_null(times)?;
            let untimed = datafusion::arrow::compute::not(&timed)?;
            out.late(
                datafusion::arrow::compute::filter_record_batch(&batch, &untimed)?,
                "it has no event time, so it cannot be deduplicated by it",
            );
            return self.fold(&datafusion::arrow::compute::filter_record_batch(
                &batch, &timed,
            )?);
        }
        self.fold(&batch)
    }

    fn process_watermark(&mut self, watermark: Watermark, out: &mut Output) -> Result<()> {
        if let Watermark::EventTime(t) = watermark {
            self.release(Some(from_event_time(t, self.time_unit)), out)?;
        }
        out.watermark(watermark);
        Ok(())
    }

    fn on_tick(&mut self, _out: &mut Output) -> Result<()> {
        self.expire_emitted_keys(processing_time_ms());
        Ok(())
    }

    fn finish(&mut self, out: &mut Output) -> Result<()> {
        self.release(None, out)
    }

    /// Table `candidates`: the input rows waiting for the watermark; keyed table `emitted`:
    /// the keys already emitted (Arrow row format of the partition keys) and when (ms).
    fn snapshot(&mut self) -> Result<NodeState> {
        let all: Vec<(&Box<[u8]>, &Emitted)> = self.emitted.iter().collect();
        let emitted = (!all.is_empty())
            .then(|| emitted_batch(&all).map(KeyedTable::Full))
            .transpose()?;
        self.state_with(emitted)
    }

    /// As `snapshot`, with only the keys emitted or forgotten since the barrier's base when
    /// that is worth it.
    fn snapshot_at(&mut self, barrier: &CheckpointBarrier) -> Result<NodeState> {
        let mut changes = std::mem::take(&mut self.changes);
        let table = changes.snapshot(
            barrier,
            self.emitted.len(),
            |_, since| {
                let changed: Vec<(&Box<[u8]>, &Emitted)> = self
                    .emitted
                    .iter()
                    .filter(|(_, e)| e.stamp > since)
                    .collect();
                let rows = changed.len();
                (changed, rows)
            },
            |changed| emitted_batch(&changed),
            || {
                let all: Vec<(&Box<[u8]>, &Emitted)> = self.emitted.iter().collect();
                (!all.is_empty()).then(|| emitted_batch(&all)).transpose()
            },
        );
        self.changes = changes;
        self.state_with(table?)
    }

    fn restore(&mut self, state: NodeState) -> Result<()> {
        self.candidates.clear();
        self.by_time.clear();
        self.emitted.clear();
        let parts = match (state.keyed_table(EMITTED_TABLE), state.table(EMITTED_TABLE)) {
            (Some(table), _) => table.parts(),
            // Checkpoints of format 1 saved the keys as one plain table.
            (None, Some(keys)) => KeyedTable::Full(keys.clone()).parts(),
            (None, None) => Vec::new(),
        };
        for part in &parts {
            if let Some(removed) = &part.removed {
                for key in saved_keys(removed)?.iter().flatten() {
                    self.emitted.remove(key);
                }
            }
            // Checkpoints before the TTL saved no times: the keys count as emitted now.
            let now = processing_time_ms();
            let times = part
                .rows
                .columns()
                .get(1)
                .and_then(|c| c.as_primitive_opt::<Int64Type>());
            for (i, key) in saved_keys(&part.rows)?.iter().enumerate() {
                let at_ms = times.map_or(now, |t| t.value(i) as u64);
                if let Some(key) = key {
                    self.emitted
                        .insert(Box::from(key), Emitted { at_ms, stamp: 0 });
                }
            }
        }
        self.changes.restored_from(state.keyed_table(EMITTED_TABLE));
        if let Some(table) = state.table(CANDIDATES_TABLE) {
            let schema = self.codec.input();
            if table.num_columns() != schema.fields().len() {
                return Err(EngineError::User(format!(
                    "the saved rows of a deduplication have {} columns where this query keeps {}; the query changed (start with --from-scratch)",
                    table.num_columns(),
                    schema.fields().len()
                )));
            }
            self.fold(&RecordBatch::try_new(schema, table.columns().to_vec())?)?;
        }
        Ok(())
    }
}

impl KeepFirstOperator {
    /// The node state: the candidates, if any, and the emitted keys' table.
    fn state_with(&self, emitted: Option<KeyedTable>) -> Result<NodeState> {
        let mut state = NodeState::empty();
        if !self.candidates.is_empty() {
            let rows: Vec<&[u8]> = self.candidates.values().map(|c| &*c.row).collect();
            state = state.with_table(CANDIDATES_TABLE, generic_batch(self.codec.decode(&rows)?)?);
        }
        if let Some(table) = emitted {
            state = state.with_keyed_table(EMITTED_TABLE, table);
        }
        Ok(state)
    }
}

/// Emitted keys and when, as saved: (key, ms).
fn emitted_batch(keys: &[(&Box<[u8]>, &Emitted)]) -> Result<RecordBatch> {
    let mut builder = BinaryBuilder::new();
    for (k, _) in keys {
        builder.append_value(k);
    }
    let times = Int64Array::from_iter_values(keys.iter().map(|(_, e)| e.at_ms as i64));
    let columns: Vec<ArrayRef> = vec![Arc::new(builder.finish()), Arc::new(times)];
    generic_batch(columns)
}

/// The key column of a saved table of emitted or forgotten keys.
fn saved_keys(table: &RecordBatch) -> Result<&BinaryArray> {
    table
        .column(0)
        .as_any()
        .downcast_ref::<BinaryArray>()
        .ok_or_else(|| EngineError::User("the saved keys of a deduplication cannot be read; the query changed (start with --from-scratch)".into()))
}

#[cfg(test)]
#[path = "keep_first_tests.rs"]
mod tests;
