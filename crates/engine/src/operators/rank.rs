//! Top-N and deduplication: `ROW_NUMBER() OVER (PARTITION BY … ORDER BY …)` filtered to the
//! first N rows of each partition.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Int64Array, UInt64Array};
use datafusion::arrow::datatypes::{Field, Int64Type, SchemaRef, UInt64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::HashMap;
use datafusion::physical_expr::{PhysicalExpr, PhysicalSortExpr};

use super::change_tracker::ChangeTracker;
use super::idle_sweep::{IdleSweep, processing_time_ms};
use super::rank_rows::{EncodedRows, RankRows};
use super::window_aggregate::generic_batch;
use crate::changelog::{ChangeKind, StreamMode};
use crate::error::{EngineError, Result};
use crate::message::{CheckpointBarrier, Watermark};
use crate::operator::{Operator, Output};
use crate::state::{KeyedTable, NodeState};
use crate::time::{from_event_time, timestamp_unit, timestamp_values};

/// What a rank operator computes.
#[derive(Debug, Clone)]
pub struct RankSpec {
    /// The PARTITION BY expressions over the input.
    pub partition: Vec<Arc<dyn PhysicalExpr>>,
    /// The ORDER BY of the rank, over the input.
    pub order: Vec<PhysicalSortExpr>,
    /// How many rows of each partition are kept (`rn <= N`; 1 for deduplication).
    pub limit: usize,
    /// With `Some(i)`, input column `i` is a window end among the partition keys: each
    /// partition is final when the watermark passes its window end, and is emitted then, once
    /// (append-only). With `None`, the result is updating.
    pub window_end: Option<usize>,
}

/// One kept row: its sort key (Arrow row format, so byte order is the ORDER BY), its arrival
/// number (ties go to the earlier row), and the row itself (row format of all input columns).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Kept {
    sort: Arc<[u8]>,
    seq: u64,
    row: Arc<[u8]>,
}

/// One partition: its kept rows, best first, and when they last changed: the epoch of
/// [`ChangeTracker`] (for incremental checkpoints) and the processing time (for the TTL).
#[derive(Debug, Default)]
struct Partition {
    rows: Vec<Kept>,
    changed: u64,
    touched_ms: u64,
}

/// Keeps the first `limit` rows of each partition by the ORDER BY and emits them with their
/// row number. Updating form: per batch, each changed partition's new top rows are compared
/// with its old ones position by position: a new position is `+I`, a changed one `-U`/`+U`
/// (keyed by the partition keys and the row number). Windowed form: partitions are kept until
/// the watermark passes their window end, then emitted once as final rows. State is the kept
/// rows: at most `limit` per partition.
pub struct RankOperator {
    spec: RankSpec,
    input: SchemaRef,
    codec: RankRows,
    top: HashMap<Box<[u8]>, Partition>,
    /// Rows kept in all partitions.
    kept_rows: usize,
    /// Which partitions changed since each snapshot (updating form).
    changes: ChangeTracker,
    /// Updating form: partitions unchanged for this long are dropped (`SET state_ttl`).
    ttl: Option<IdleSweep>,
    /// The processing time that changes are stamped with (ms since the epoch).
    now_ms: u64,
    /// Windowed form: partitions per window end, for the watermark to close.
    ends: BTreeMap<i64, Vec<Box<[u8]>>>,
    watermark: Option<i64>,
    next_seq: u64,
}

impl std::fmt::Debug for RankOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RankOperator")
            .field("partitions", &self.top.len())
            .field("limit", &self.spec.limit)
            .finish()
    }
}

impl RankOperator {
    /// A rank over rows of `input`; the output has the input's columns, then the row number
    /// (`UInt64`, named as `rank_field` says), then, in the updating form, the change column.
    pub fn new(input: SchemaRef, spec: RankSpec, rank_field: Option<&Field>) -> Result<Self> {
        if spec.limit == 0 {
            return Err(EngineError::Internal(
                "a rank keeps at least one row".into(),
            ));
        }
        if let Some(end) = spec.window_end {
            timestamp_unit(input.field(end).data_type(), "window_end")?;
        }
        let codec = RankRows::new(
            &input,
            &spec.partition,
            &spec.order,
            rank_field,
            spec.window_end.is_none(),
        )?;
        Ok(RankOperator {
            codec,
            spec,
            input,
            top: HashMap::new(),
            kept_rows: 0,
            changes: ChangeTracker::default(),
            ttl: None,
            now_ms: processing_time_ms(),
            ends: BTreeMap::new(),
            watermark: None,
            next_seq: 0,
        })
    }

    /// Partitions currently kept.
    pub fn partitions(&self) -> usize {
        self.top.len()
    }

    /// In the updating form, drops the partitions whose rows have not changed for `ttl`
    /// (processing time, checked on ticks): their last rows stay where they were written, and
    /// a later row of such a partition starts it afresh (`+I` at row number 1). The windowed
    /// form forgets each window when it closes and ignores this.
    pub fn with_state_ttl(mut self, ttl: Option<std::time::Duration>) -> Self {
        self.ttl = ttl
            .filter(|_| self.spec.window_end.is_none())
            .map(IdleSweep::new);
        self
    }

    /// Drops the partitions unchanged for longer than the TTL at processing time `now` (ms),
    /// if a sweep is due; returns how many.
    pub fn expire_idle_partitions(&mut self, now: u64) -> Result<usize> {
        let Some(cutoff) = self.ttl.as_mut().and_then(|t| t.due(now)) else {
            return Ok(0);
        };
        let idle: Vec<Box<[u8]>> = self
            .top
            .iter()
            .filter(|(_, p)| p.touched_ms < cutoff)
            .map(|(k, _)| k.clone())
            .collect();
        if idle.is_empty() {
            return Ok(0);
        }
        for key in &idle {
            if let Some(p) = self.top.remove(key) {
                self.kept_rows -= p.rows.len();
            }
        }
        let keys = datafusion::arrow::array::BinaryArray::from_iter_values(idle.iter());
        let removed = generic_batch(vec![Arc::new(keys)])?;
        self.changes.removed(removed, self.kept_rows);
        Ok(idle.len())
    }

    /// Folds `batch` in; returns each changed partition with its kept rows before the batch.
    fn fold(
        &mut self,
        batch: &RecordBatch,
        seqs: Option<&UInt64Array>,
    ) -> Result<Vec<(Box<[u8]>, Vec<Kept>)>> {
        let n = batch.num_rows();
        let EncodedRows { keys, sorts, rows } = self.codec.encode(batch)?;
        let ends = self
            .spec
            .window_end
            .map(|c| timestamp_values(batch.column(c)).map(|v| v.values().to_vec()))
            .transpose()?;
        let limit = self.spec.limit;
        let epoch = self.changes.epoch();
        let now = self.now_ms;
        // Each changed partition with its rows before the batch (cheap clones: shared bytes),
        // in the order they first changed.
        let mut changed: Vec<(Box<[u8]>, Vec<Kept>)> = Vec::new();
        let mut seen: HashMap<Box<[u8]>, ()> = HashMap::new();
        for i in 0..n {
            let sort = sorts.row(i);
            let key = keys.row(i).data();
            // Look up before allocating: most rows of a busy partition are not kept.
            if !self.top.contains_key(key) {
                if let Some(ends) = &ends {
                    self.ends.entry(ends[i]).or_default().push(Box::from(key));
                }
                let rows = Vec::with_capacity(limit.min(16));
                let partition = Partition {
                    rows,
                    changed: 0,
                    touched_ms: now,
                };
                self.top.insert(Box::from(key), partition);
            }
            let partition = self.top.get_mut(key).expect("inserted above");
            let list = &mut partition.rows;
            if list.len() == limit && list.last().is_some_and(|l| *l.sort <= *sort.data()) {
                continue;
            }
            if !seen.contains_key(key) {
                let key: Box<[u8]> = Box::from(key);
                seen.insert(key.clone(), ());
                changed.push((key, list.clone()));
                partition.changed = epoch;
                partition.touched_ms = now;
            }
            let seq = match seqs {
                Some(s) => s.value(i),
                None => {
                    self.next_seq += 1;
                    self.next_seq
                }
            };
            let at = list.partition_point(|k| *k.sort <= *sort.data());
            list.insert(
                at,
                Kept {
                    sort: Arc::from(sort.data()),
                    seq,
                    row: Arc::from(rows.row(i).data()),
                },
            );
            if list.len() > limit {
                list.truncate(limit);
            } else {
                self.kept_rows += 1;
            }
        }
        Ok(changed)
    }

    /// The changes of the partitions in `changed` (with their rows before).
    fn changelog(&self, changed: &[(Box<[u8]>, Vec<Kept>)]) -> Result<RecordBatch> {
        let mut out: Vec<(&[u8], u64, ChangeKind)> = Vec::new();
        for (key, before) in changed {
            let after = &self.top[key].rows;
            for (pos, new) in after.iter().enumerate() {
                let rank = pos as u64 + 1;
                match before.get(pos) {
                    Some(old) if old == new => {}
                    Some(old) => {
                        out.push((&old.row, rank, ChangeKind::UpdateBefore));
                        out.push((&new.row, rank, ChangeKind::UpdateAfter));
                    }
                    None => out.push((&new.row, rank, ChangeKind::Insert)),
                }
            }
        }
        self.codec.batch(&out)
    }

    /// Windowed form: emits and forgets every partition whose window ends by `watermark`
    /// (all of them for `None`).
    fn close_until(&mut self, watermark: Option<i64>, out: &mut Output) -> Result<()> {
        let closing: Vec<i64> = match watermark {
            Some(w) => self.ends.range(..=w).map(|(e, _)| *e).collect(),
            None => self.ends.keys().copied().collect(),
        };
        let mut lists = Vec::new();
        for end in closing {
            for key in self.ends.remove(&end).unwrap_or_default() {
                if let Some(p) = self.top.remove(&key) {
                    self.kept_rows -= p.rows.len();
                    lists.push(p.rows);
                }
            }
        }
        let rows: Vec<(&[u8], u64, ChangeKind)> = lists
            .iter()
            .flat_map(|l| {
                l.iter()
                    .enumerate()
                    .map(|(i, k)| (&*k.row, i as u64 + 1, ChangeKind::Insert))
            })
            .collect();
        if !rows.is_empty() {
            out.count_windows(lists.len() as u64);
            out.batch(self.codec.batch(&rows)?);
        }
        Ok(())
    }
}

/// The state table: every kept row with its arrival number.
const KEPT_TABLE: &str = "kept";

impl Operator for RankOperator {
    fn output_schema(&self) -> SchemaRef {
        self.codec.output()
    }

    fn output_mode(&self, inputs: &[StreamMode]) -> std::result::Result<StreamMode, String> {
        if inputs.iter().any(StreamMode::is_updating) {
            return Err("ROW_NUMBER over an updating result is not supported yet; rank the source rows or a window's results".into());
        }
        if self.spec.window_end.is_some() {
            return Ok(StreamMode::AppendOnly);
        }
        // Keyed by the partition columns (when they are plain columns) and the row number; for
        // one row per partition (deduplication) by the partition columns alone.
        let columns: Option<Vec<usize>> = self
            .spec
            .partition
            .iter()
            .map(|e| {
                e.downcast_ref::<datafusion::physical_expr::expressions::Column>()
                    .map(|c| c.index())
            })
            .collect();
        let key = match columns {
            Some(mut k) => {
                if self.spec.limit > 1 {
                    k.push(self.input.fields().len());
                }
                k
            }
            None => Vec::new(),
        };
        Ok(StreamMode::Updating { key })
    }

    fn open_state(&self) -> u64 {
        self.top.len() as u64
    }

    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = match (self.spec.window_end, self.watermark) {
            (Some(end), Some(w)) => {
                let ends = timestamp_values(batch.column(end))?;
                let live: datafusion::arrow::array::BooleanArray =
                    ends.values().iter().map(|e| Some(*e > w)).collect();
                let late = datafusion::arrow::compute::filter_record_batch(
                    &batch,
                    &datafusion::arrow::compute::not(&live)?,
                )?;
                out.late(late, "its window had already been ranked and emitted");
                datafusion::arrow::compute::filter_record_batch(&batch, &live)?
            }
            _ => batch,
        };
        self.now_ms = processing_time_ms();
        let changed = self.fold(&batch, None)?;
        if self.spec.window_end.is_none() && !changed.is_empty() {
            out.batch(self.changelog(&changed)?);
        }
        Ok(())
    }

    fn process_watermark(&mut self, watermark: Watermark, out: &mut Output) -> Result<()> {
        if let (Some(end), Watermark::EventTime(t)) = (self.spec.window_end, watermark) {
            let unit = timestamp_unit(self.input.field(end).data_type(), "window_end")?;
            let w = from_event_time(t, unit);
            self.watermark = Some(self.watermark.map_or(w, |c| c.max(w)));
            self.close_until(self.watermark, out)?;
        }
        out.watermark(watermark);
        Ok(())
    }

    fn on_tick(&mut self, _out: &mut Output) -> Result<()> {
        self.expire_idle_partitions(processing_time_ms())?;
        Ok(())
    }

    fn finish(&mut self, out: &mut Output) -> Result<()> {
        if self.spec.window_end.is_some() {
            self.close_until(None, out)?;
        }
        Ok(())
    }

    /// Keyed table `kept`: the kept rows (the input's columns) and their arrival numbers;
    /// the windowed form's watermark and the next arrival number as JSON.
    fn snapshot(&mut self) -> Result<NodeState> {
        let all: Vec<&Partition> = self.top.values().collect();
        let rows = self.kept_batch(&all)?;
        self.state_with(rows.map(KeyedTable::Full))
    }

    /// As `snapshot`; in the updating form `kept` holds only the partitions changed since
    /// the snapshot at the barrier's base when that is worth it (a changed partition's rows
    /// replace its earlier ones on restore). The windowed form's state is its open windows,
    /// saved in full.
    fn snapshot_at(&mut self, barrier: &CheckpointBarrier) -> Result<NodeState> {
        let barrier = CheckpointBarrier {
            base: barrier.base.filter(|_| self.spec.window_end.is_none()),
            ..*barrier
        };
        let mut changes = std::mem::take(&mut self.changes);
        let table = changes.snapshot(
            &barrier,
            self.kept_rows,
            |_, since| {
                let changed: Vec<&Partition> =
                    self.top.values().filter(|p| p.changed > since).collect();
                let rows = changed.iter().map(|p| p.rows.len()).sum();
                (changed, rows)
            },
            |changed| match self.kept_batch(&changed)? {
                Some(b) => Ok(b),
                None => self.empty_kept_batch(),
            },
            || self.kept_batch(&self.top.values().collect::<Vec<_>>()),
        );
        self.changes = changes;
        self.state_with(table?)
    }

    fn restore(&mut self, state: NodeState) -> Result<()> {
        let (watermark, next_seq) = state.to_json::<(Option<i64>, u64)>()?.unwrap_or_default();
        self.watermark = watermark;
        self.next_seq = next_seq;
        self.top.clear();
        self.ends.clear();
        self.kept_rows = 0;
        let parts = match (state.keyed_table(KEPT_TABLE), state.table(KEPT_TABLE)) {
            (Some(table), _) => table.parts(),
            // A checkpoint of format 1 saved the rows as one plain table.
            (None, Some(rows)) => KeyedTable::Full(rows.clone()).parts(),
            (None, None) => Vec::new(),
        };
        for (i, part) in parts.iter().enumerate() {
            if let Some(removed) = &part.removed {
                let keys = removed
                    .column(0)
                    .as_binary_opt::<i32>()
                    .ok_or_else(|| EngineError::User("the saved keys of a ROW_NUMBER query cannot be read; the query changed (start with --from-scratch)".into()))?;
                for key in keys.iter().flatten() {
                    if let Some(p) = self.top.remove(key) {
                        self.kept_rows -= p.rows.len();
                    }
                }
            }
            let (batch, seqs, touched) = self.saved_rows(&part.rows)?;
            let EncodedRows { keys, .. } = self.codec.encode(&batch)?;
            if i > 0 {
                // A later part holds a changed partition's rows in full: they replace it.
                for row in 0..batch.num_rows() {
                    if let Some(p) = self.top.remove(keys.row(row).data()) {
                        self.kept_rows -= p.rows.len();
                    }
                }
            }
            self.fold(&batch, Some(&seqs))?;
            if let Some(touched) = touched {
                for (row, time) in touched.values().iter().enumerate() {
                    if let Some(p) = self.top.get_mut(keys.row(row).data()) {
                        p.touched_ms = *time as u64;
                    }
                }
            }
        }
        self.changes.restored_from(state.keyed_table(KEPT_TABLE));
        Ok(())
    }
}

impl RankOperator {
    /// The kept rows of `partitions` in arrival order, with their arrival numbers and their
    /// partitions' last-change times (ms); `None` when there are none.
    fn kept_batch(&self, partitions: &[&Partition]) -> Result<Option<RecordBatch>> {
        let mut kept: Vec<(&Kept, u64)> = partitions
            .iter()
            .flat_map(|p| p.rows.iter().map(|k| (k, p.touched_ms)))
            .collect();
        if kept.is_empty() {
            return Ok(None);
        }
        // In arrival order, so that a restore folds them back with ties as they were.
        kept.sort_unstable_by_key(|(k, _)| k.seq);
        let rows: Vec<&[u8]> = kept.iter().map(|(k, _)| &*k.row).collect();
        let mut columns = self.codec.decode(&rows)?;
        columns.push(Arc::new(UInt64Array::from_iter_values(
            kept.iter().map(|(k, _)| k.seq),
        )));
        columns.push(Arc::new(Int64Array::from_iter_values(
            kept.iter().map(|(_, t)| *t as i64),
        )));
        generic_batch(columns).map(Some)
    }

    /// A kept-rows table with no rows (a delta in which nothing changed).
    fn empty_kept_batch(&self) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = self
            .input
            .fields()
            .iter()
            .map(|f| datafusion::arrow::array::new_empty_array(f.data_type()))
            .collect();
        columns.push(Arc::new(UInt64Array::from(Vec::<u64>::new())));
        columns.push(Arc::new(Int64Array::from(Vec::<i64>::new())));
        generic_batch(columns)
    }

    /// The node state: the kept rows, if any, and the watermark and next arrival number.
    fn state_with(&self, kept: Option<KeyedTable>) -> Result<NodeState> {
        let mut state = NodeState::json(&(self.watermark, self.next_seq))?;
        if let Some(table) = kept {
            state = state.with_keyed_table(KEPT_TABLE, table);
        }
        Ok(state)
    }

    /// A saved table of kept rows as input rows, their arrival numbers and, when saved
    /// (not in format-1 checkpoints), their partitions' last-change times.
    fn saved_rows(
        &self,
        table: &RecordBatch,
    ) -> Result<(RecordBatch, UInt64Array, Option<Int64Array>)> {
        let width = self.input.fields().len();
        if table.num_columns() != width + 1 && table.num_columns() != width + 2 {
            return Err(EngineError::User(format!(
                "the saved rows of a ROW_NUMBER query have {} columns where this query keeps {}; the query changed (start with --from-scratch)",
                table.num_columns().saturating_sub(1),
                width
            )));
        }
        let batch = RecordBatch::try_new(self.input.clone(), table.columns()[..width].to_vec())?;
        let seqs = table.column(width).as_primitive::<UInt64Type>().clone();
        let touched = (table.num_columns() == width + 2)
            .then(|| table.column(width + 1).as_primitive::<Int64Type>().clone());
        Ok((batch, seqs, touched))
    }
}

#[cfg(test)]
#[path = "rank_tests.rs"]
mod tests;
