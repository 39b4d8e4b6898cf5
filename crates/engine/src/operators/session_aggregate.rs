//! Session windows aggregated as rows arrive: `SESSION(t, ts, gap, keys…)` followed by
//! `GROUP BY keys…, window_start, window_end`, in one operator that holds one accumulator
//! state per open session (and per other group key), never the rows.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Int64Array};
use datafusion::arrow::array::{UInt64Array, builder::BinaryBuilder};
use datafusion::arrow::compute::{filter_record_batch, is_not_null};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::HashMap;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use serde::{Deserialize, Serialize};

use super::grouped_state::{GroupRows, split};
use super::session_generations::Generations;
use super::session_index::{Closed, Key, Session, SessionIndex};
use super::window_aggregate::{
    AggregateSpec, aggregate_inputs, cast_if_needed, evaluate_aggregates, evaluate_all,
    generic_batch, sort_by_column, split_columns,
};
use crate::error::{EngineError, Result};
use crate::message::{EventTime, Watermark};
use crate::operator::{Operator, Output, TICK_INTERVAL};
use crate::state::NodeState;
use crate::time::{
    format_event_time, nanos_per_unit, timestamp_array, timestamp_unit, timestamp_values,
};

/// How the session aggregate is wired: the input, the session definition, and the
/// aggregation planned over the windowed rows (the input's columns, then `window_start` and
/// `window_end`, optionally projected).
#[derive(Debug, Clone)]
pub struct SessionAggregation {
    /// The rows that arrive.
    pub input: SchemaRef,
    /// The event-time column of `input`.
    pub time_column: usize,
    /// The session gap in nanoseconds.
    pub gap_nanos: i64,
    /// The columns of `input` sessions are kept per (none: one sequence of sessions).
    pub key_columns: Vec<usize>,
    /// Columns of the windowed rows that the aggregation reads (`None`: all of them, in
    /// order); the expressions below are over these.
    pub projection: Option<Vec<usize>>,
    /// The GROUP BY expressions.
    pub group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// Which group expression is `window_start`, if grouped by.
    pub start_group: Option<usize>,
    /// Which group expression is `window_end`.
    pub end_group: usize,
    /// The aggregates.
    pub aggregates: Vec<AggregateSpec>,
    /// One column per group expression, then one per aggregate.
    pub output_schema: SchemaRef,
}

/// Aggregates session windows incrementally: each row is assigned to its key's session (a
/// hash lookup; bridging rows merge sessions) and folded into the accumulators of its
/// (session, group) at once. When sessions merge, their groups are re-keyed and their
/// intermediate states merged (`merge_batch`) the next time the groups are taken out. A
/// session closes when the watermark passes its end; closed sessions are emitted together in
/// one batch once they are a quarter of the open ones, within [`TICK_INTERVAL`] of wall
/// time, or at the end, and the watermark sent downstream waits for them. Memory is bounded
/// by the open sessions' states, not by their rows.
pub struct SessionAggregate {
    plan: SessionAggregation,
    time_type: DataType,
    per_unit: i64,
    gap: i64,
    keys: Option<RowConverter>,
    /// The group expressions kept per session: all but `window_start` and `window_end`.
    kept_groups: Vec<usize>,
    /// When the kept groups are the session key's columns (each once, in any order): for
    /// each kept group, its position in the key. Groups are then keyed by session alone and
    /// their values come from the session's key when it closes (no per-row interning of the
    /// key values).
    key_groups: Option<Vec<usize>>,
    aggregate_inputs: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    /// Groups keyed by (session id, kept group values), in generations.
    groups: Generations,
    index: SessionIndex,
    /// Sessions closed by the watermark and not yet emitted, by id.
    pending: HashMap<u64, Closed>,
    pending_since: Option<Instant>,
    /// The watermark in the time column's unit.
    watermark: Option<i64>,
    /// The last watermark received, to forward once the pending sessions are out.
    received: Option<Watermark>,
    /// The last event-time watermark sent downstream (nanoseconds).
    forwarded: Option<EventTime>,
}

impl std::fmt::Debug for SessionAggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionAggregate")
            .field("open_sessions", &self.index.len())
            .field("groups", &self.groups.len())
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl SessionAggregate {
    /// Checks the plan and builds the operator.
    pub fn new(plan: SessionAggregation) -> Result<Self> {
        Self::build(plan, true)
    }

    /// The operator that interns the kept group values per row even where they are the
    /// session key (to test that both ways give the same results and checkpoints).
    #[cfg(test)]
    fn interning_key_values(plan: SessionAggregation) -> Result<Self> {
        Self::build(plan, false)
    }

    fn build(plan: SessionAggregation, groups_by_session: bool) -> Result<Self> {
        let field = plan.input.field(plan.time_column);
        let unit = timestamp_unit(field.data_type(), field.name())?;
        let per_unit = nanos_per_unit(unit);
        if plan.gap_nanos <= 0 || plan.gap_nanos % per_unit != 0 {
            return Err(EngineError::User(format!(
                "the SESSION gap must be a positive whole multiple of the time column's unit ({unit:?})"
            )));
        }
        if plan.output_schema.fields().len() != plan.group_exprs.len() + plan.aggregates.len() {
            return Err(EngineError::Internal(
                "session aggregate output does not match its groups and aggregates".into(),
            ));
        }
        let keys = if plan.key_columns.is_empty() {
            None
        } else {
            Some(RowConverter::new(
                plan.key_columns
                    .iter()
                    .map(|i| SortField::new(plan.input.field(*i).data_type().clone()))
                    .collect(),
            )?)
        };
        let windowed = Self::windowed_schema(&plan, field.data_type())?;
        let kept_groups: Vec<usize> = (0..plan.group_exprs.len())
            .filter(|g| *g != plan.end_group && Some(*g) != plan.start_group)
            .collect();
        let key_groups = kept_groups_as_key(&plan, &kept_groups).filter(|_| groups_by_session);
        let mut key_fields = vec![Field::new("session", DataType::UInt64, false)];
        for &g in kept_groups.iter().filter(|_| key_groups.is_none()) {
            let e = &plan.group_exprs[g];
            key_fields.push(Field::new(
                format!("group_{g}"),
                e.data_type(&windowed)?,
                e.nullable(&windowed)?,
            ));
        }
        let groups = Generations::new(
            Arc::new(Schema::new(key_fields)),
            plan.aggregates.clone(),
            0,
        )?;
        Ok(SessionAggregate {
            time_type: field.data_type().clone(),
            per_unit,
            gap: plan.gap_nanos / per_unit,
            keys,
            kept_groups,
            key_groups,
            aggregate_inputs: aggregate_inputs(&plan.aggregates),
            groups,
            index: SessionIndex::new(plan.gap_nanos / per_unit),
            pending: HashMap::default(),
            pending_since: None,
            watermark: None,
            received: None,
            forwarded: None,
            plan,
        })
    }

    /// The schema the expressions are planned over: the input, the window columns, projected.
    fn windowed_schema(plan: &SessionAggregation, time_type: &DataType) -> Result<Schema> {
        let full = super::schema_with_window_columns(&plan.input, time_type);
        Ok(match &plan.projection {
            Some(p) => full.project(p)?,
            None => full.as_ref().clone(),
        })
    }

    /// Open sessions.
    pub fn open_sessions(&self) -> usize {
        self.index.len()
    }

    /// Sets how many groups a generation takes (tests use tiny ones).
    #[cfg(test)]
    fn set_generation_size(&mut self, size: usize) {
        self.groups.set_size(size);
    }

    /// `batch` as the expressions see it: window columns appended (placeholders: only
    /// `window_start`/`window_end` groups read them, and those come from the session), then
    /// projected.
    fn windowed(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let time = batch.column(self.plan.time_column).clone();
        let mut columns = batch.columns().to_vec();
        columns.push(time.clone());
        columns.push(time);
        let schema = super::schema_with_window_columns(&self.plan.input, &self.time_type);
        let full = RecordBatch::try_new(schema, columns)?;
        Ok(match &self.plan.projection {
            Some(p) => full.project(p)?,
            None => full,
        })
    }

    /// Drops (as late) rows without a time or whose session would already have closed.
    fn drop_late(&self, batch: RecordBatch, out: &mut Output) -> Result<Option<RecordBatch>> {
        let (time, gap, unit) = (self.plan.time_column, self.gap, self.per_unit);
        drop_late_rows(batch, time, gap, self.watermark, unit, out)
    }

    /// Each row's session id, and the generation their groups go to (the current one, which
    /// their sessions are now in).
    fn assign(&mut self, batch: &RecordBatch) -> Result<(UInt64Array, u64)> {
        let times = timestamp_values(batch.column(self.plan.time_column))?;
        let rows = key_rows(self.keys.as_ref(), &self.plan.key_columns, batch)?;
        let current = self.groups.current()?;
        let ids: Vec<u64> = match &rows {
            Some(rows) => (times.values().iter().enumerate())
                .map(|(row, t)| self.index.assign(rows.row(row).data(), *t, current))
                .collect(),
            None => (times.values().iter())
                .map(|t| self.index.assign(&[], *t, current))
                .collect(),
        };
        Ok((UInt64Array::from(ids), current))
    }

    /// Moves sessions that the watermark closed to `pending`.
    fn close(&mut self, watermark: Option<i64>) {
        let closed = self.index.close_until(watermark);
        if !closed.is_empty() && self.pending_since.is_none() {
            self.pending_since = Some(Instant::now());
        }
        for c in closed {
            self.pending.insert(c.id, c);
        }
    }

    /// Emits the pending sessions if enough are waiting (or `force`), then forwards the
    /// watermark they held back.
    fn emit_pending(&mut self, force: bool, out: &mut Output) -> Result<()> {
        let due = force
            || self.pending.len() * 4 >= self.index.len()
            || self
                .pending_since
                .is_some_and(|t| t.elapsed() >= TICK_INTERVAL);
        if !self.pending.is_empty() && due {
            self.emit_sessions(out)?;
        }
        if let Some(w) = self.received {
            let held = self.held_watermark(w);
            if held == w {
                self.received = None;
            }
            self.forward(held, out);
        }
        Ok(())
    }

    /// Sends `w` downstream unless an event time at or after it was sent already.
    fn forward(&mut self, w: Watermark, out: &mut Output) {
        if let Watermark::EventTime(t) = w {
            if self.forwarded.is_some_and(|f| f >= t) {
                return;
            }
            self.forwarded = Some(t);
        }
        out.watermark(w);
    }

    /// The watermark downstream may see while sessions are pending: just before the earliest
    /// pending end, so that their rows are not behind it when they come.
    fn held_watermark(&self, w: Watermark) -> Watermark {
        let Watermark::EventTime(t) = w else {
            return w;
        };
        match self.pending.values().map(|c| c.end).min() {
            Some(end) => Watermark::EventTime(t.min(end.saturating_mul(self.per_unit) - 1)),
            None => w,
        }
    }

    /// Takes out the generations that hold the pending sessions' groups: those groups are
    /// emitted (merged per session), the others go back, to their session's generation if it
    /// is still live, else to the current one.
    fn emit_sessions(&mut self, out: &mut Output) -> Result<()> {
        let Some(through) = self.pending.values().map(|c| c.generation).max() else {
            return Ok(());
        };
        let taken = self.groups.take_through(through)?;
        let rows = self.rekeyed(taken);
        self.index.forget_merges_before(self.groups.oldest());
        let closing: BooleanArray = match rows.keys.first() {
            Some(roots) => roots
                .as_primitive::<UInt64Type>()
                .values()
                .iter()
                .map(|id| Some(self.pending.contains_key(id)))
                .collect(),
            None => BooleanArray::from(Vec::<bool>::new()),
        };
        let (closed, open) = split(&rows, &closing)?;
        self.put_back(&open, through)?;
        let mut emitting = self.groups.empty_state()?;
        emitting.merge(&closed)?;
        let (keys, values) = emitting.emit()?;
        // The next round of closed sessions is about as large: keep the room (growing the
        // map again, rehash by rehash, was a few percent of a session backfill).
        let room = HashMap::with_capacity(self.pending.len());
        let pending = std::mem::replace(&mut self.pending, room);
        self.pending_since = None;
        if keys.is_empty() {
            return Ok(());
        }
        let batch = self.output(&keys, values, &pending)?;
        out.count_windows(batch.num_rows() as u64);
        out.batch(batch);
        Ok(())
    }

    /// Merges groups of open sessions back: into their session's generation when it is newer
    /// than `through` (still live), else into the oldest live one, where the session moves:
    /// those are the oldest open sessions, the next to close, so they stay at the front (in
    /// the current generation they would make the next emission take out every group).
    fn put_back(&mut self, open: &GroupRows, through: u64) -> Result<()> {
        let Some(ids) = open.keys.first() else {
            return Ok(());
        };
        let oldest = self.groups.oldest();
        let mut target = Vec::with_capacity(ids.len());
        for id in ids.as_primitive::<UInt64Type>().values() {
            target.push(match self.index.generation(*id) {
                Some(g) if g > through => g,
                Some(_) => {
                    self.index.move_to(*id, oldest);
                    oldest
                }
                None => {
                    return Err(EngineError::Internal(format!(
                        "session {id} has groups but is neither open nor pending"
                    )));
                }
            });
        }
        self.groups.merge(&target, open)
    }

    /// `rows` keyed by the session their session was merged into (if it was).
    fn rekeyed(&self, mut rows: GroupRows) -> GroupRows {
        if !self.index.has_merges() {
            return rows;
        }
        if let Some(ids) = rows.keys.first() {
            let roots: UInt64Array = ids
                .as_primitive::<UInt64Type>()
                .values()
                .iter()
                .map(|id| self.index.root(*id))
                .collect();
            rows.keys[0] = Arc::new(roots);
        }
        rows
    }

    /// The output rows of emitted groups: window bounds from their sessions, kept group
    /// values, aggregate values; ordered by window end.
    fn output(
        &self,
        keys: &[ArrayRef],
        values: Vec<ArrayRef>,
        sessions: &HashMap<u64, Closed>,
    ) -> Result<RecordBatch> {
        let ids = keys[0].as_primitive::<UInt64Type>();
        let closed: Vec<&Closed> = ids.values().iter().map(|id| &sessions[id]).collect();
        let bound = |f: fn(&Closed) -> i64| -> Result<ArrayRef> {
            let v: Int64Array = closed.iter().map(|c| f(c)).collect();
            timestamp_array(v, &self.time_type)
        };
        let kept = match self.key_groups {
            Some(_) => self.kept_from_keys(closed.iter().map(|c| &c.key))?,
            None => keys[1..].to_vec(),
        };
        let mut columns = Vec::with_capacity(self.plan.output_schema.fields().len());
        for g in 0..self.plan.group_exprs.len() {
            columns.push(if g == self.plan.end_group {
                bound(|c| c.end)?
            } else if Some(g) == self.plan.start_group {
                bound(|c| c.start)?
            } else {
                let k = self.kept_groups.iter().position(|x| *x == g).expect("kept");
                kept[k].clone()
            });
        }
        columns.extend(values);
        let columns = columns
            .into_iter()
            .zip(self.plan.output_schema.fields())
            .map(|(c, f)| cast_if_needed(c, f.data_type()))
            .collect::<Result<Vec<_>>>()?;
        let batch = RecordBatch::try_new(self.plan.output_schema.clone(), columns)?;
        sort_by_column(&batch, self.plan.end_group)
    }

    /// The kept group columns of sessions with these keys (when the kept groups are the
    /// key's columns), one row per key.
    fn kept_from_keys<'a>(&self, keys: impl Iterator<Item = &'a Key>) -> Result<Vec<ArrayRef>> {
        let (Some(converter), Some(positions)) = (&self.keys, &self.key_groups) else {
            return Ok(Vec::new());
        };
        let parser = converter.parser();
        let key_columns = converter.convert_rows(keys.map(|k| parser.parse(k)))?;
        Ok(positions.iter().map(|p| key_columns[*p].clone()).collect())
    }

    /// The keys of the sessions `ids` (open or pending).
    fn session_keys<'a>(&'a self, ids: &'a UInt64Array) -> Result<Vec<&'a Key>> {
        ids.values()
            .iter()
            .map(|id| {
                self.index
                    .key(*id)
                    .or_else(|| self.pending.get(id).map(|c| &c.key))
                    .ok_or_else(|| {
                        EngineError::Internal(format!(
                            "session {id} has groups but is neither open nor pending"
                        ))
                    })
            })
            .collect()
    }

    /// Checkpoints before keys of closed sessions were saved hold them only in their groups'
    /// kept columns: rebuilds them from there (groups keyed by session id, then the kept
    /// group columns).
    fn keys_of_pending_from(&mut self, groups: &[ArrayRef]) -> Result<()> {
        let (Some(converter), Some(positions)) = (&self.keys, &self.key_groups) else {
            return Ok(());
        };
        if self.pending.values().all(|c| !c.key.is_empty()) {
            return Ok(());
        }
        let mut in_key_order = vec![None; positions.len()];
        for (k, p) in positions.iter().enumerate() {
            in_key_order[*p] = Some(groups[1 + k].clone());
        }
        let columns: Vec<ArrayRef> = in_key_order.into_iter().flatten().collect();
        let rows = converter.convert_columns(&columns)?;
        let ids = groups[0].as_primitive::<UInt64Type>();
        for (i, id) in ids.values().iter().enumerate() {
            if let Some(c) = self.pending.get_mut(id).filter(|c| c.key.is_empty()) {
                c.key = Key::from(rows.row(i).data());
            }
        }
        Ok(())
    }
}

/// For each kept group, its position among the session key columns, when every kept group is
/// a plain key column and together they are each key column once (`None` otherwise).
fn kept_groups_as_key(plan: &SessionAggregation, kept: &[usize]) -> Option<Vec<usize>> {
    if kept.len() != plan.key_columns.len() {
        return None;
    }
    let mut positions = Vec::with_capacity(kept.len());
    for &g in kept {
        let column = plan.group_exprs[g].downcast_ref::<Column>()?;
        let input = match &plan.projection {
            Some(p) => *p.get(column.index())?,
            None => column.index(),
        };
        let k = plan.key_columns.iter().position(|c| *c == input)?;
        // Dictionary keys come back from the row format as their values: keep those interned.
        let dictionary = matches!(
            plan.input.field(input).data_type(),
            DataType::Dictionary(..)
        );
        if positions.contains(&k) || dictionary {
            return None;
        }
        positions.push(k);
    }
    Some(positions)
}

/// The session aggregate's checkpoint besides its tables.
#[derive(Debug, Serialize, Deserialize)]
struct SavedSessions {
    watermark: Option<i64>,
    next_id: u64,
}

const GROUPS_TABLE: &str = "groups";
const SESSIONS_TABLE: &str = "sessions";

impl Operator for SessionAggregate {
    fn output_schema(&self) -> SchemaRef {
        self.plan.output_schema.clone()
    }

    fn open_state(&self) -> u64 {
        self.index.len() as u64
    }

    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let Some(batch) = self.drop_late(batch, out)? else {
            return Ok(());
        };
        let (ids, generation) = self.assign(&batch)?;
        let windowed = self.windowed(&batch)?;
        let mut keys: Vec<ArrayRef> = vec![Arc::new(ids)];
        if self.key_groups.is_none() {
            let groups = evaluate_all(&self.plan.group_exprs, &windowed)?;
            keys.extend(self.kept_groups.iter().map(|g| groups[*g].clone()));
        }
        let (args, filters) =
            evaluate_aggregates(&self.plan.aggregates, &self.aggregate_inputs, &windowed)?;
        self.groups.update(generation, &keys, &args, &filters)
    }

    fn process_watermark(&mut self, watermark: Watermark, out: &mut Output) -> Result<()> {
        match watermark {
            Watermark::EventTime(EventTime::MAX) => {
                self.close(None);
                self.received = None;
                self.emit_pending(true, out)?;
                self.forward(watermark, out);
                return Ok(());
            }
            Watermark::EventTime(t) => {
                let w = t.div_euclid(self.per_unit);
                self.watermark = Some(self.watermark.map_or(w, |c| c.max(w)));
                self.close(self.watermark);
                self.received = Some(watermark);
            }
            Watermark::Idle => {
                // Nothing will come for a while: emit what is closed rather than wait.
                self.emit_pending(true, out)?;
                out.watermark(watermark);
                return Ok(());
            }
        }
        self.emit_pending(false, out)
    }

    fn on_tick(&mut self, out: &mut Output) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.emit_pending(false, out)
    }

    fn finish(&mut self, out: &mut Output) -> Result<()> {
        self.close(None);
        if !self.pending.is_empty() {
            self.emit_sessions(out)?;
        }
        Ok(())
    }

    /// Saves every group (keyed by its session's current id) with its accumulators'
    /// intermediate states, the open and pending sessions, and the watermark.
    fn snapshot(&mut self) -> Result<NodeState> {
        // Every group, re-keyed by its session for the checkpoint; in memory each generation
        // gets its own groups back as they were.
        let copied = self.groups.copy_all()?;
        let rows = self.rekeyed(copied);
        let saved = SavedSessions {
            watermark: self.watermark,
            next_id: self.index.next_id(),
        };
        let mut state = NodeState::json(&saved)?;
        if rows.len() > 0 {
            let mut columns = rows.keys;
            // Saved alike either way: the session id, the kept group values, the states.
            if self.key_groups.is_some() {
                let ids = columns[0].as_primitive::<UInt64Type>();
                columns.extend(self.kept_from_keys(self.session_keys(ids)?.into_iter())?);
            }
            columns.extend(rows.states.into_iter().flatten());
            state = state.with_table(GROUPS_TABLE, generic_batch(columns)?);
        }
        let mut ids = Vec::new();
        let mut starts = Vec::new();
        let mut ends = Vec::new();
        let mut pending = Vec::new();
        let mut keys = BinaryBuilder::new();
        let open = self
            .index
            .open_sessions()
            .map(|(id, s)| (id, s.clone(), false));
        let closed = self.pending.values().map(|c| {
            let s = Session {
                key: c.key.clone(),
                start: c.start,
                end: c.end,
                generation: c.generation,
            };
            (c.id, s, true)
        });
        for (id, s, is_pending) in open.chain(closed) {
            ids.push(id);
            starts.push(s.start);
            ends.push(s.end);
            pending.push(is_pending);
            keys.append_value(&s.key);
        }
        if !ids.is_empty() {
            let columns: Vec<ArrayRef> = vec![
                Arc::new(UInt64Array::from(ids)),
                Arc::new(keys.finish()),
                Arc::new(Int64Array::from(starts)),
                Arc::new(Int64Array::from(ends)),
                Arc::new(BooleanArray::from(pending)),
            ];
            state = state.with_table(SESSIONS_TABLE, generic_batch(columns)?);
        }
        Ok(state)
    }

    fn restore(&mut self, state: NodeState) -> Result<()> {
        let saved: Option<SavedSessions> = state.to_json()?;
        let saved = saved.unwrap_or(SavedSessions {
            watermark: None,
            next_id: 0,
        });
        self.watermark = saved.watermark;
        self.groups = self.groups.fresh()?;
        self.pending.clear();
        let mut open = Vec::new();
        if let Some(t) = state.table(SESSIONS_TABLE) {
            let mismatch = || {
                EngineError::User(
                    "the saved session state does not match this query; the pipeline changed (start with --from-scratch)".into(),
                )
            };
            let ids = t
                .column(0)
                .as_primitive_opt::<UInt64Type>()
                .ok_or_else(mismatch)?;
            let keys = t
                .column(1)
                .as_any()
                .downcast_ref::<BinaryArray>()
                .ok_or_else(mismatch)?;
            let starts = t
                .column(2)
                .as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>()
                .ok_or_else(mismatch)?;
            let ends = t
                .column(3)
                .as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>()
                .ok_or_else(mismatch)?;
            let pending = t.column(4).as_boolean_opt().ok_or_else(mismatch)?;
            for i in 0..t.num_rows() {
                let (id, start, end) = (ids.value(i), starts.value(i), ends.value(i));
                let generation = 0;
                let key: Key = keys.value(i).into();
                if pending.value(i) {
                    let closed = Closed {
                        id,
                        start,
                        end,
                        generation,
                        key,
                    };
                    self.pending.insert(id, closed);
                } else {
                    let session = Session {
                        key,
                        start,
                        end,
                        generation,
                    };
                    open.push((id, session));
                }
            }
        }
        self.pending_since = (!self.pending.is_empty()).then(Instant::now);
        // Sessions in generations by age (their ids), as if they had come one by one.
        open.sort_unstable_by_key(|(id, _)| *id);
        let size = self.groups.size() as u64;
        for (rank, (_, s)) in open.iter_mut().enumerate() {
            s.generation = rank as u64 / size;
        }
        self.groups
            .extend_to(open.last().map_or(0, |(_, s)| s.generation))?;
        self.index = SessionIndex::restore(self.gap, saved.next_id, open);
        if let Some(t) = state.table(GROUPS_TABLE) {
            let widths = self.groups.state_widths()?;
            let groups = 1 + self.kept_groups.len();
            if t.num_columns() != groups + widths.iter().sum::<usize>() {
                return Err(EngineError::User(format!(
                    "the saved session groups have {} columns where this query keeps {}; the pipeline changed (start with --from-scratch)",
                    t.num_columns(),
                    groups + widths.iter().sum::<usize>()
                )));
            }
            let mut rows = GroupRows {
                keys: t.columns()[..groups].to_vec(),
                states: split_columns(&t.columns()[groups..], &widths),
            };
            if self.key_groups.is_some() {
                self.keys_of_pending_from(&rows.keys)?;
                rows.keys.truncate(1);
            }
            // Pending sessions' groups go to generation 0, with the oldest open ones.
            let generations: Vec<u64> = rows.keys[0]
                .as_primitive_opt::<UInt64Type>()
                .ok_or_else(|| {
                    EngineError::User(
                        "the saved session groups are not keyed by session; the pipeline changed (start with --from-scratch)".into(),
                    )
                })?
                .values()
                .iter()
                .map(|id| self.index.generation(*id).unwrap_or(0))
                .collect();
            self.groups.merge(&generations, &rows)?;
        }
        Ok(())
    }
}

/// The session key of every row of `batch` (its `columns` in Arrow's row format), or `None`
/// for sessions without keys.
pub(crate) fn key_rows(
    converter: Option<&RowConverter>,
    columns: &[usize],
    batch: &RecordBatch,
) -> Result<Option<Rows>> {
    let Some(converter) = converter else {
        return Ok(None);
    };
    let arrays: Vec<ArrayRef> = columns.iter().map(|i| batch.column(*i).clone()).collect();
    Ok(Some(converter.convert_columns(&arrays)?))
}

/// Hands to `out` as late the rows of `batch` without a time in `time_column`, or whose
/// session would already have closed (time + `gap` at or before `watermark`, both in the
/// column's unit of `per_unit` nanoseconds); returns the rest, if any.
pub(crate) fn drop_late_rows(
    batch: RecordBatch,
    time_column: usize,
    gap: i64,
    watermark: Option<i64>,
    per_unit: i64,
    out: &mut Output,
) -> Result<Option<RecordBatch>> {
    let times = timestamp_values(batch.column(time_column))?;
    let keep: BooleanArray = match watermark {
        None if times.null_count() == 0 => return Ok(Some(batch)),
        None => is_not_null(&times)?,
        Some(w) => times
            .iter()
            .map(|t| Some(t.is_some_and(|t| t + gap > w)))
            .collect(),
    };
    let kept = keep.true_count();
    if kept < batch.num_rows() {
        let reason = match watermark {
            Some(w) => format!(
                "its session had closed (or its event time is NULL): the time plus the gap is at or before the watermark {}",
                format_event_time(w.saturating_mul(per_unit))
            ),
            None => "its event time is NULL".to_string(),
        };
        let late = datafusion::arrow::compute::not(&keep)?;
        out.late(filter_record_batch(&batch, &late)?, reason);
    }
    Ok(match kept {
        0 => None,
        n if n == batch.num_rows() => Some(batch),
        _ => Some(filter_record_batch(&batch, &keep)?),
    })
}

#[cfg(test)]
#[path = "session_aggregate_tests.rs"]
mod tests;
