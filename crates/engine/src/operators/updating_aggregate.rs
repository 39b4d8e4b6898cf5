//! GROUP BY without a window: one current result per key, emitted as a changelog.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int8Array, Int64Array, UInt32Array,
};
use datafusion::arrow::compute::kernels::boolean::or;
use datafusion::arrow::compute::kernels::cmp::distinct;
use datafusion::arrow::compute::{interleave, take};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

use super::change_tracker::ChangeTracker;
use super::grouped_state::{GroupRows, GroupedState};
use super::idle_sweep::processing_time_ms;
use super::key_expiry::KeyExpiry;
use super::result_store::ResultStore;
use super::window_aggregate::{
    AggregateSpec, aggregate_inputs, cast_if_needed, evaluate_aggregates, evaluate_all,
    generic_batch, split_columns,
};
use crate::changelog::{ChangeKind, StreamMode, has_change_column};
use crate::error::{EngineError, Result};
use crate::message::CheckpointBarrier;
use crate::operator::{Operator, Output};
use crate::state::{KeyedTable, NodeState};

/// The default time between two emissions of changed results.
pub const DEFAULT_UPDATE_INTERVAL: Duration = Duration::from_secs(1);

/// Aggregates an append-only stream per key with no window, keeping every key's current
/// result, and emits the keys whose result changed as a changelog: `+I` for a new key, a
/// `-U`/`+U` pair (in one batch) for a changed one, nothing for a key whose result is the same.
///
/// Rows are folded into a table of the keys changed since the last emission (one interning
/// pass per batch). At most every `update_interval` of wall time (checked on ticks), and at
/// the end, the changed keys' stored intermediate states are merged with what arrived
/// (`merge_batch`), evaluated, compared with the results last emitted, and written back: the
/// cost of an emission is per changed key, not per key. State grows with the number of keys,
/// unless a state TTL drops the keys that have not changed for that long (processing time;
/// their last results stay where they were written, and a later row of such a key starts
/// from nothing).
pub struct UpdatingAggregate {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    aggregates: Vec<AggregateSpec>,
    aggregate_inputs: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    output_schema: SchemaRef,
    /// The group columns as interned (a single constant column for a global aggregate).
    key_schema: SchemaRef,
    /// What arrived since the last emission, per key.
    pending: GroupedState,
    /// Every key seen, interned: its index is the key's id in `results`.
    keys: Box<dyn GroupValues>,
    /// Per key id: the key columns, the intermediate states, then the results last emitted.
    results: ResultStore,
    /// Which keys changed since each snapshot, for incremental checkpoints.
    changes: ChangeTracker,
    update_interval: Duration,
    last_emission: Instant,
    scratch: Vec<usize>,
    /// Last-change times per key id, and the TTL sweep.
    expiry: KeyExpiry,
    /// Key ids dropped by the TTL that are still interned in `keys`.
    expired: usize,
}

impl std::fmt::Debug for UpdatingAggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdatingAggregate")
            .field("keys", &self.keys.len())
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl UpdatingAggregate {
    /// `group_exprs` (none for a global aggregate) and `aggregates` are over `input`; the
    /// output has one column per group expression, one per aggregate, then the change column,
    /// as in `output_schema`.
    pub fn new(
        input: &Schema,
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        aggregates: Vec<AggregateSpec>,
        output_schema: SchemaRef,
        update_interval: Duration,
    ) -> Result<Self> {
        if output_schema.fields().len() != group_exprs.len() + aggregates.len() + 1
            || !has_change_column(&output_schema)
        {
            return Err(EngineError::Internal(format!(
                "an updating aggregate's output has {} columns for {} groups, {} aggregates and the change column",
                output_schema.fields().len(),
                group_exprs.len(),
                aggregates.len()
            )));
        }
        let mut key_fields = Vec::with_capacity(group_exprs.len().max(1));
        for (i, e) in group_exprs.iter().enumerate() {
            key_fields.push(Field::new(
                format!("group_{i}"),
                e.data_type(input)?,
                e.nullable(input)?,
            ));
        }
        if key_fields.is_empty() {
            key_fields.push(Field::new("all", DataType::Boolean, false));
        }
        let key_schema = Arc::new(Schema::new(key_fields));
        Ok(UpdatingAggregate {
            aggregate_inputs: aggregate_inputs(&aggregates),
            pending: GroupedState::new(key_schema.clone(), aggregates.clone())?,
            keys: new_group_values(key_schema.clone(), &GroupOrdering::None)?,
            key_schema,
            group_exprs,
            aggregates,
            output_schema,
            results: ResultStore::default(),
            changes: ChangeTracker::default(),
            update_interval,
            last_emission: Instant::now(),
            scratch: Vec::new(),
            expiry: KeyExpiry::default(),
            expired: 0,
        })
    }

    /// Drops keys whose result has not changed for `ttl` (`SET state_ttl`).
    pub fn with_state_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.expiry = KeyExpiry::new(ttl.map(|t| t.as_millis() as u64));
        self
    }

    /// Keys with a current result.
    pub fn keys(&self) -> usize {
        self.results.len()
    }

    fn key_columns(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        if self.group_exprs.is_empty() {
            let all: BooleanArray = std::iter::repeat_n(Some(true), batch.num_rows()).collect();
            return Ok(vec![Arc::new(all)]);
        }
        evaluate_all(&self.group_exprs, batch)
    }

    fn new_accumulators(&self) -> Result<Vec<Box<dyn GroupsAccumulator>>> {
        self.aggregates
            .iter()
            .map(|a| a.create_accumulator())
            .collect()
    }

    /// Emits the results of the keys changed since the last emission.
    pub fn emit_changes(&mut self, out: &mut Output) -> Result<()> {
        self.emit_changes_at(processing_time_ms(), out)
    }

    /// [`Self::emit_changes`] at processing time `now` (milliseconds since the epoch).
    pub fn emit_changes_at(&mut self, now: u64, out: &mut Output) -> Result<()> {
        self.last_emission = Instant::now();
        if self.pending.len() == 0 {
            return Ok(());
        }
        let arrived = self.pending.take()?;
        let n = arrived.len();
        self.keys.intern(&arrived.keys, &mut self.scratch)?;
        let ids = std::mem::take(&mut self.scratch);
        let known: Vec<usize> = (0..n).filter(|i| self.results.contains(ids[*i])).collect();
        let known_ids: Vec<usize> = known.iter().map(|i| ids[*i]).collect();
        let before = self.results.get(&known_ids)?;
        let widths = self.state_widths()?;
        let key_width = self.key_schema.fields().len();
        let states_end = key_width + widths.iter().sum::<usize>();
        let (before_states, before_values) = if before.is_empty() {
            (vec![Vec::new(); widths.len()], Vec::new())
        } else {
            (
                split_columns(&before[key_width..states_end], &widths),
                before[states_end..].to_vec(),
            )
        };

        // The new states: what was stored, then what arrived (in that order, for aggregates
        // that depend on it, such as `array_agg` or `first_value` without an ORDER BY).
        let mut combine = self.new_accumulators()?;
        let all: Vec<usize> = (0..n).collect();
        for (a, acc) in combine.iter_mut().enumerate() {
            if !known.is_empty() {
                acc.merge_batch(&before_states[a], &known, n)?;
            }
            acc.merge_batch(&arrived.states[a], &all, n)?;
        }
        let mut states = Vec::with_capacity(combine.len());
        for acc in combine.iter_mut() {
            states.push(acc.state(EmitTo::All)?);
        }
        let mut evaluate = self.new_accumulators()?;
        let mut values = Vec::with_capacity(evaluate.len());
        for (acc, s) in evaluate.iter_mut().zip(&states) {
            acc.merge_batch(s, &all, n)?;
            values.push(acc.evaluate(EmitTo::All)?);
        }
        let mut stored: Vec<ArrayRef> = arrived.keys.clone();
        stored.extend(states.into_iter().flatten());
        stored.extend(values.iter().cloned());
        self.results.put(&ids, stored)?;
        self.expiry.touch(&ids, now);
        self.changes.changed(&ids);
        self.scratch = ids;

        let batch = self.changelog(&arrived, &values, &known, &before_values)?;
        out.batch(batch);
        Ok(())
    }

    /// The changelog of one emission: `+I` for keys seen for the first time, `-U`/`+U` for
    /// known keys whose results differ from `before` (the results of the keys at `known`).
    fn changelog(
        &self,
        arrived: &GroupRows,
        values: &[ArrayRef],
        known: &[usize],
        before: &[ArrayRef],
    ) -> Result<RecordBatch> {
        let n = arrived.len();
        let changed = if known.is_empty() {
            BooleanArray::from(Vec::<bool>::new())
        } else {
            let indices = UInt32Array::from_iter_values(known.iter().map(|i| *i as u32));
            let after: Vec<ArrayRef> = values
                .iter()
                .map(|v| take(v.as_ref(), &indices, None))
                .collect::<std::result::Result<_, _>>()?;
            differs(before, &after, known.len())?
        };
        // Rows of source 0 are the new results (row i = key i), of source 1 the old results
        // (row j = known[j]).
        let mut picks: Vec<(usize, usize)> = Vec::with_capacity(n + known.len());
        let mut kinds: Vec<i8> = Vec::with_capacity(n + known.len());
        let mut next_known = 0;
        for i in 0..n {
            if known.get(next_known) == Some(&i) {
                let j = next_known;
                next_known += 1;
                if changed.value(j) {
                    picks.push((1, j));
                    kinds.push(ChangeKind::UpdateBefore.code());
                    picks.push((0, i));
                    kinds.push(ChangeKind::UpdateAfter.code());
                }
            } else {
                picks.push((0, i));
                kinds.push(ChangeKind::Insert.code());
            }
        }
        let key_count = if self.group_exprs.is_empty() {
            0
        } else {
            arrived.keys.len()
        };
        let known_indices = UInt32Array::from_iter_values(known.iter().map(|i| *i as u32));
        let mut columns = Vec::with_capacity(self.output_schema.fields().len());
        for key in &arrived.keys[..key_count] {
            let old = take(key.as_ref(), &known_indices, None)?;
            columns.push(interleave(&[key.as_ref(), old.as_ref()], &picks)?);
        }
        for (new, old) in values.iter().zip(before_or_empty(before, values)?) {
            columns.push(interleave(&[new.as_ref(), old.as_ref()], &picks)?);
        }
        columns.push(Arc::new(Int8Array::from(kinds)));
        let columns = columns
            .into_iter()
            .zip(self.output_schema.fields())
            .map(|(c, f)| cast_if_needed(c, f.data_type()))
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.output_schema.clone(), columns)?)
    }

    /// Drops the keys idle for longer than the state TTL at processing time `now`; returns
    /// how many. Only between emissions with nothing pending, so a key with new rows is
    /// never dropped.
    pub fn expire_idle_keys(&mut self, now: u64) -> Result<usize> {
        if self.pending.len() > 0 {
            return Ok(0);
        }
        let gone = self.expiry.expire(now);
        if gone.is_empty() {
            return Ok(0);
        }
        let keys = self.results.get(&gone)?;
        let key_width = self.key_schema.fields().len();
        for id in &gone {
            self.results.remove(*id);
        }
        let removed = generic_batch(keys[..key_width].to_vec())?;
        self.changes.removed(removed, self.results.len());
        self.expired += gone.len();
        if self.expired > 1024 && self.expired > self.keys.len() / 2 {
            self.reintern_live_keys()?;
        }
        Ok(gone.len())
    }

    /// Interns the live keys anew (dropping the expired ones from the key table), with new
    /// ids: the results and times move to them.
    fn reintern_live_keys(&mut self) -> Result<()> {
        let (ids, stored) = self.results.all()?;
        let times: Vec<u64> = ids.iter().map(|id| self.expiry.last_changed(*id)).collect();
        let key_width = self.key_schema.fields().len();
        self.keys = new_group_values(self.key_schema.clone(), &GroupOrdering::None)?;
        let mut new_ids = Vec::new();
        self.keys.intern(&stored[..key_width], &mut new_ids)?;
        self.results = ResultStore::default();
        self.results.put(&new_ids, stored)?;
        self.expiry.reset(&new_ids, &times);
        self.changes.renumber(&ids, &new_ids);
        self.expired = 0;
        Ok(())
    }

    fn state_widths(&self) -> Result<Vec<usize>> {
        self.aggregates
            .iter()
            .map(|a| Ok(a.function.state_fields()?.len()))
            .collect()
    }
}

/// The old results, or empty arrays of the new results' types when no key was known.
fn before_or_empty(before: &[ArrayRef], values: &[ArrayRef]) -> Result<Vec<ArrayRef>> {
    if !before.is_empty() {
        return Ok(before.to_vec());
    }
    Ok(values.iter().map(|v| v.slice(0, 0)).collect())
}

/// Per row (of `rows`), whether any column of `a` differs from `b` (NULLs equal each other).
/// Columns the comparison kernel does not support (nested types) count as changed.
fn differs(a: &[ArrayRef], b: &[ArrayRef], rows: usize) -> Result<BooleanArray> {
    let mut any = BooleanArray::from(vec![false; rows]);
    for (x, y) in a.iter().zip(b) {
        let column = match distinct(x, y) {
            Ok(d) => d,
            Err(_) => BooleanArray::from(vec![true; rows]),
        };
        any = or(&any, &column)?;
    }
    Ok(any)
}

/// The state tables: every key's stored row, and what arrived since the last emission.
const RESULTS_TABLE: &str = "results";
const PENDING_TABLE: &str = "pending";

/// Fails unless a saved table has `width` columns.
fn expect_width(table: &RecordBatch, width: usize, name: &str) -> Result<()> {
    if table.num_columns() == width {
        Ok(())
    } else {
        Err(EngineError::User(format!(
            "the saved {name} of an aggregate has {} columns where this query keeps {width}; the query changed (start with --from-scratch)",
            table.num_columns()
        )))
    }
}

impl UpdatingAggregate {
    /// Every key's stored row and last-change time, or `None` without keys.
    fn full_results(&self) -> Result<Option<RecordBatch>> {
        let (ids, _) = self.results.all()?;
        if ids.is_empty() {
            return Ok(None);
        }
        self.results_of(&ids).map(Some)
    }

    /// The stored rows of `ids` (each has one) with their last-change times.
    fn results_of(&self, ids: &[usize]) -> Result<RecordBatch> {
        let mut columns = self.results.get(ids)?;
        let times = ids.iter().map(|id| self.expiry.last_changed(*id) as i64);
        columns.push(Arc::new(Int64Array::from_iter_values(times)));
        generic_batch(columns)
    }

    /// The node state: the results table, if any, and what is pending (kept, not emitted).
    fn state_with(&mut self, results: Option<KeyedTable>) -> Result<NodeState> {
        let mut state = NodeState::empty();
        if let Some(table) = results {
            state = state.with_keyed_table(RESULTS_TABLE, table);
        }
        let pending = self.pending.take()?;
        self.pending.merge(&pending)?;
        if pending.len() > 0 {
            let mut columns = pending.keys;
            columns.extend(pending.states.into_iter().flatten());
            state = state.with_table(PENDING_TABLE, generic_batch(columns)?);
        }
        Ok(state)
    }
}

impl Operator for UpdatingAggregate {
    fn output_schema(&self) -> SchemaRef {
        self.output_schema.clone()
    }

    fn output_mode(&self, inputs: &[StreamMode]) -> std::result::Result<StreamMode, String> {
        if inputs.iter().any(StreamMode::is_updating) {
            return Err("an aggregate over an updating result is not supported yet; aggregate the source rows directly".into());
        }
        // A global aggregate has one row; its key is not a column.
        Ok(StreamMode::Updating {
            key: (0..self.group_exprs.len()).collect(),
        })
    }

    fn open_state(&self) -> u64 {
        self.results.len() as u64
    }

    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let keys = self.key_columns(&batch)?;
        let (args, filters) =
            evaluate_aggregates(&self.aggregates, &self.aggregate_inputs, &batch)?;
        self.pending.update(&keys, &args, &filters)?;
        if self.update_interval.is_zero() {
            self.emit_changes(out)?;
        }
        Ok(())
    }

    fn on_tick(&mut self, out: &mut Output) -> Result<()> {
        let now = processing_time_ms();
        if self.last_emission.elapsed() >= self.update_interval {
            self.emit_changes_at(now, out)?;
        }
        self.expire_idle_keys(now)?;
        Ok(())
    }

    fn finish(&mut self, out: &mut Output) -> Result<()> {
        self.emit_changes(out)
    }

    /// Keyed table `results`: per key its columns, intermediate states, last emitted results
    /// and last-change time (ms); table `pending`: keys and intermediate states of what
    /// arrived since the last emission.
    fn snapshot(&mut self) -> Result<NodeState> {
        let rows = self.full_results()?;
        self.state_with(rows.map(KeyedTable::Full))
    }

    /// As `snapshot`, but `results` holds only the keys changed since the snapshot at the
    /// barrier's base when that is worth it (see [`ChangeTracker`]).
    fn snapshot_at(&mut self, barrier: &CheckpointBarrier) -> Result<NodeState> {
        let mut changes = std::mem::take(&mut self.changes);
        let table = changes.snapshot(
            barrier,
            self.results.len(),
            |t, since| {
                let ids = t.changed_ids(since, |id| self.results.contains(id));
                let n = ids.len();
                (ids, n)
            },
            |ids| self.results_of(&ids),
            || self.full_results(),
        );
        self.changes = changes;
        self.state_with(table?)
    }

    fn restore(&mut self, state: NodeState) -> Result<()> {
        let key_width = self.key_schema.fields().len();
        let widths = self.state_widths()?;
        let states_width: usize = widths.iter().sum();
        let parts = match (state.keyed_table(RESULTS_TABLE), state.table(RESULTS_TABLE)) {
            (Some(table), _) => table.parts(),
            // A checkpoint of format 1 saved the results as one plain table.
            (None, Some(rows)) => KeyedTable::Full(rows.clone()).parts(),
            (None, None) => Vec::new(),
        };
        let width = key_width + states_width + self.aggregates.len();
        let mut ids = Vec::new();
        let mut times: Vec<u64> = Vec::new();
        for part in &parts {
            if let Some(removed) = &part.removed {
                expect_width(removed, key_width, "removed keys")?;
                self.keys.intern(removed.columns(), &mut ids)?;
                for id in &ids {
                    self.results.remove(*id);
                }
                self.expired += ids.len();
            }
            expect_width(&part.rows, width + 1, "results")?;
            let columns = part.rows.columns();
            self.keys.intern(&columns[..key_width], &mut ids)?;
            self.results.put(&ids, columns[..width].to_vec())?;
            for (id, time) in ids
                .iter()
                .zip(columns[width].as_primitive::<Int64Type>().values())
            {
                if *id >= times.len() {
                    times.resize(id + 1, 0);
                }
                times[*id] = *time as u64;
            }
        }
        let (live, _) = self.results.all()?;
        let live_times: Vec<u64> = live.iter().map(|id| times[*id]).collect();
        self.expiry.reset(&live, &live_times);
        self.changes.restored_from(state.keyed_table(RESULTS_TABLE));
        if let Some(table) = state.table(PENDING_TABLE) {
            expect_width(table, key_width + states_width, "pending changes")?;
            let columns = table.columns();
            self.pending.merge(&GroupRows {
                keys: columns[..key_width].to_vec(),
                states: split_columns(&columns[key_width..], &widths),
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "updating_aggregate_tests.rs"]
mod tests;
