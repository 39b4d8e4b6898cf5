//! GROUP BY over an updating input (an aggregate of an aggregate): retractions take rows back
//! out of their group's aggregates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Int8Array};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, RowParser, SortField};
use datafusion::common::{HashMap, ScalarValue};
use datafusion::physical_expr::PhysicalExpr;
use serde::Deserialize;

use super::change_tracker::ChangeTracker;
use super::retractable::{Retractable, RetractableSpec, State};
use super::retracting_state::{SavedGroup, groups_batch, read_groups};
use super::window_aggregate::generic_batch;
use super::window_aggregate::{cast_if_needed, evaluate_all};
use crate::changelog::{ChangeKind, StreamMode, change_kinds, has_change_column, kind_at};
use crate::error::{EngineError, Result};
use crate::message::CheckpointBarrier;
use crate::operator::{Operator, Output};
use crate::state::{KeyedTable, NodeState};

/// One group: its net row count, its aggregates' states, the result last emitted, whether it
/// changed since, and the epoch of its last change (for incremental checkpoints).
#[derive(Debug, Clone)]
struct Group {
    rows: i64,
    states: Vec<State>,
    emitted: Option<Vec<ScalarValue>>,
    changed: bool,
    stamp: u64,
}

/// Aggregates an updating stream per key (an append-only one too: its rows are all inserts):
/// `+I`/`+U` rows are added to their group, `-U`/`-D` rows taken out (count, sum and avg subtract; min, max and count(DISTINCT) keep a count per
/// value). Changed groups are emitted at most every `update_interval` and at the end, as a
/// changelog: `+I` for a new group, `-U`/`+U` for a changed result, `-D` when a group's last
/// row was retracted. State: per group its states (values for min, max, DISTINCT).
pub struct RetractingAggregate {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    aggregates: Vec<Retractable>,
    output: SchemaRef,
    keys: RowConverter,
    parser: RowParser,
    groups: HashMap<Box<[u8]>, Group>,
    /// Which groups changed since each snapshot.
    changes: ChangeTracker,
    update_interval: Duration,
    last_emission: Instant,
}

impl std::fmt::Debug for RetractingAggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetractingAggregate")
            .field("groups", &self.groups.len())
            .finish()
    }
}

impl RetractingAggregate {
    /// `group_exprs` and the aggregates' arguments are over `input` (an updating stream's
    /// data columns); the output has one column per group expression, one per aggregate and
    /// the change column, as in `output`.
    pub fn new(
        input: &datafusion::arrow::datatypes::Schema,
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        aggregates: Vec<RetractableSpec>,
        output: SchemaRef,
        update_interval: Duration,
    ) -> Result<Self> {
        if output.fields().len() != group_exprs.len() + aggregates.len() + 1
            || !has_change_column(&output)
        {
            return Err(EngineError::Internal(
                "a retracting aggregate's output is its groups, aggregates and change column"
                    .into(),
            ));
        }
        let aggregates = aggregates
            .into_iter()
            .map(|spec| {
                let t = spec.arg.as_ref().map(|a| a.data_type(input)).transpose()?;
                Retractable::new(spec, t)
            })
            .collect::<Result<Vec<_>>>()?;
        let keys = RowConverter::new(
            group_exprs
                .iter()
                .map(|e| Ok(SortField::new(e.data_type(input)?)))
                .collect::<Result<Vec<_>>>()?,
        )?;
        Ok(RetractingAggregate {
            parser: keys.parser(),
            keys,
            group_exprs,
            aggregates,
            output,
            groups: HashMap::new(),
            changes: ChangeTracker::default(),
            update_interval,
            last_emission: Instant::now(),
        })
    }

    fn fold(&mut self, batch: &RecordBatch) -> Result<()> {
        // Rows of an append-only input are all inserts.
        let (kinds, data) = if has_change_column(batch.schema_ref()) {
            let data: Vec<usize> = (0..batch.num_columns() - 1).collect();
            (Some(change_kinds(batch)?.clone()), batch.project(&data)?)
        } else {
            (None, batch.clone())
        };
        let n = data.num_rows();
        let keys = if self.group_exprs.is_empty() {
            None
        } else {
            Some(
                self.keys
                    .convert_columns(&evaluate_all(&self.group_exprs, &data)?)?,
            )
        };
        let mut args = Vec::with_capacity(self.aggregates.len());
        let mut filters: Vec<Option<BooleanArray>> = Vec::with_capacity(self.aggregates.len());
        for a in &self.aggregates {
            let arg = a
                .spec
                .arg
                .as_ref()
                .map(|e| evaluate_all(std::slice::from_ref(e), &data).map(|mut v| v.remove(0)))
                .transpose()?;
            args.push(a.prepare(arg.as_ref())?);
            filters.push(
                a.spec
                    .filter
                    .as_ref()
                    .map(|f| {
                        evaluate_all(std::slice::from_ref(f), &data)
                            .map(|mut v| v.remove(0).as_boolean().clone())
                    })
                    .transpose()?,
            );
        }
        let epoch = self.changes.epoch();
        for i in 0..n {
            let retract = match &kinds {
                Some(k) => kind_at(k, i)?.is_retraction(),
                None => false,
            };
            let sign = if retract { -1 } else { 1 };
            let key: &[u8] = keys.as_ref().map_or(&[], |k| k.row(i).data());
            if !self.groups.contains_key(key) {
                let states = self.aggregates.iter().map(Retractable::empty).collect();
                self.groups.insert(
                    Box::from(key),
                    Group {
                        rows: 0,
                        states,
                        emitted: None,
                        changed: false,
                        stamp: 0,
                    },
                );
            }
            let group = self.groups.get_mut(key).expect("inserted above");
            group.rows += sign;
            group.changed = true;
            group.stamp = epoch;
            for (a, ((agg, arg), filter)) in
                self.aggregates.iter().zip(&args).zip(&filters).enumerate()
            {
                if filter
                    .as_ref()
                    .is_some_and(|f| !f.is_valid(i) || !f.value(i))
                {
                    continue;
                }
                agg.apply(&mut group.states[a], arg, i, sign);
            }
        }
        Ok(())
    }

    /// Emits the groups changed since the last emission.
    pub fn emit_changes(&mut self, out: &mut Output) -> Result<()> {
        self.last_emission = Instant::now();
        let mut rows: Vec<(Box<[u8]>, Vec<ScalarValue>, ChangeKind)> = Vec::new();
        let mut gone = Vec::new();
        let epoch = self.changes.epoch();
        for (key, group) in self.groups.iter_mut().filter(|(_, g)| g.changed) {
            group.changed = false;
            group.stamp = epoch;
            if group.rows <= 0 {
                if let Some(old) = group.emitted.take() {
                    rows.push((key.clone(), old, ChangeKind::Delete));
                }
                gone.push(key.clone());
                continue;
            }
            let values = group
                .states
                .iter()
                .zip(&self.aggregates)
                .map(|(s, a)| a.evaluate(s))
                .collect::<Result<Vec<_>>>()?;
            match group.emitted.replace(values.clone()) {
                None => rows.push((key.clone(), values, ChangeKind::Insert)),
                Some(old) if old != values => {
                    rows.push((key.clone(), old, ChangeKind::UpdateBefore));
                    rows.push((key.clone(), values, ChangeKind::UpdateAfter));
                }
                Some(_) => {}
            }
        }
        for key in &gone {
            self.groups.remove(key);
        }
        if !gone.is_empty() {
            let keys = BinaryArray::from_iter_values(gone.iter());
            let removed = generic_batch(vec![Arc::new(keys)])?;
            self.changes.removed(removed, self.groups.len());
        }
        if !rows.is_empty() {
            out.batch(self.changelog(&rows)?);
        }
        Ok(())
    }

    fn changelog(&self, rows: &[(Box<[u8]>, Vec<ScalarValue>, ChangeKind)]) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = if self.group_exprs.is_empty() {
            Vec::new()
        } else {
            let parsed: Vec<_> = rows.iter().map(|(k, _, _)| self.parser.parse(k)).collect();
            self.keys.convert_rows(parsed)?
        };
        for (a, agg) in self.aggregates.iter().enumerate() {
            let values = rows.iter().map(|(_, v, _)| v[a].clone());
            let column = if rows.is_empty() {
                datafusion::arrow::array::new_empty_array(&agg.output)
            } else {
                ScalarValue::iter_to_array(values)?
            };
            columns.push(column);
        }
        columns.push(Arc::new(Int8Array::from_iter_values(
            rows.iter().map(|(_, _, k)| k.code()),
        )));
        let columns = columns
            .into_iter()
            .zip(self.output.fields())
            .map(|(c, f)| cast_if_needed(c, f.data_type()))
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.output.clone(), columns)?)
    }
}

/// A group in a checkpoint written before groups were saved as Arrow (read only).
#[derive(Debug, Deserialize)]
struct LegacyGroup {
    key: Vec<u8>,
    rows: i64,
    states: Vec<LegacyState>,
    emitted: Option<Vec<String>>,
}

/// An aggregate state in such a checkpoint (value keys in the row format, as bytes).
#[derive(Debug, Deserialize)]
enum LegacyState {
    Count(i64),
    Sum { int: String, float: f64, n: i64 },
    Values(Vec<(Vec<u8>, i64)>),
    Distinct(Vec<(Vec<u8>, i64)>),
}

impl Operator for RetractingAggregate {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn output_mode(&self, inputs: &[StreamMode]) -> std::result::Result<StreamMode, String> {
        if inputs.len() != 1 {
            return Err("an aggregate has one input".into());
        }
        Ok(StreamMode::Updating {
            key: (0..self.group_exprs.len()).collect(),
        })
    }

    fn open_state(&self) -> u64 {
        self.groups.len() as u64
    }

    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.fold(&batch)?;
        if self.update_interval.is_zero() {
            self.emit_changes(out)?;
        }
        Ok(())
    }

    fn on_tick(&mut self, out: &mut Output) -> Result<()> {
        if self.last_emission.elapsed() >= self.update_interval {
            self.emit_changes(out)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Output) -> Result<()> {
        self.emit_changes(out)
    }

    /// Keyed table `groups` (see `retracting_state.rs`): every group with its states, the
    /// result last emitted and whether it changed since.
    fn snapshot(&mut self) -> Result<NodeState> {
        let all: Vec<&Box<[u8]>> = self.groups.keys().collect();
        let table = self.groups_batch(&all)?.map(KeyedTable::Full);
        Ok(state_with(table))
    }

    /// As `snapshot`, with only the groups changed since the barrier's base when that is
    /// worth it, and the groups deleted since.
    fn snapshot_at(&mut self, barrier: &CheckpointBarrier) -> Result<NodeState> {
        let mut changes = std::mem::take(&mut self.changes);
        let table = changes.snapshot(
            barrier,
            self.groups.len(),
            |_, since| {
                let changed: Vec<&Box<[u8]>> = self
                    .groups
                    .iter()
                    .filter(|(_, g)| g.stamp > since)
                    .map(|(k, _)| k)
                    .collect();
                let rows = changed.len();
                (changed, rows)
            },
            |changed| match self.groups_batch(&changed)? {
                Some(b) => Ok(b),
                None => self.no_groups(),
            },
            || self.groups_batch(&self.groups.keys().collect::<Vec<_>>()),
        );
        self.changes = changes;
        Ok(state_with(table?))
    }

    fn restore(&mut self, state: NodeState) -> Result<()> {
        self.groups.clear();
        if let Some(legacy) = state.to_json::<Vec<(LegacyGroup, bool)>>()? {
            return self.restore_legacy(legacy);
        }
        let Some(table) = state.keyed_table(GROUPS_TABLE) else {
            return Ok(());
        };
        let parts = table.parts();
        for part in &parts {
            if let Some(removed) = &part.removed {
                let keys = removed.column(0).as_binary_opt::<i32>().ok_or_else(|| {
                    EngineError::User("the saved keys of an aggregate cannot be read; the query changed (start with --from-scratch)".into())
                })?;
                for key in keys.iter().flatten() {
                    self.groups.remove(key);
                }
            }
            for g in read_groups(&part.rows, &self.aggregates)? {
                let group = Group {
                    rows: g.rows,
                    states: g.states,
                    emitted: g.emitted,
                    changed: g.changed,
                    stamp: 0,
                };
                self.groups.insert(g.key, group);
            }
        }
        self.changes.restored_from(Some(table));
        Ok(())
    }
}

/// The keyed table of the groups.
const GROUPS_TABLE: &str = "groups";

/// A node state holding the groups table, if any.
fn state_with(groups: Option<KeyedTable>) -> NodeState {
    match groups {
        Some(table) => NodeState::empty().with_keyed_table(GROUPS_TABLE, table),
        None => NodeState::empty(),
    }
}

impl RetractingAggregate {
    /// The saved rows of the groups with these keys (`None` for none).
    fn groups_batch(&self, keys: &[&Box<[u8]>]) -> Result<Option<RecordBatch>> {
        let saved: Vec<SavedGroup> = keys
            .iter()
            .map(|k| {
                let g = &self.groups[*k];
                SavedGroup {
                    key: (*k).clone(),
                    rows: g.rows,
                    changed: g.changed,
                    states: g.states.clone(),
                    emitted: g.emitted.clone(),
                }
            })
            .collect();
        groups_batch(&saved, &self.aggregates)
    }

    /// A groups table with no rows (a delta in which no group changed).
    fn no_groups(&self) -> Result<RecordBatch> {
        let empty = SavedGroup {
            key: Box::from(&[][..]),
            rows: 0,
            changed: false,
            states: self.aggregates.iter().map(Retractable::empty).collect(),
            emitted: None,
        };
        let one = groups_batch(&[empty], &self.aggregates)?.expect("one group");
        Ok(one.slice(0, 0))
    }

    /// Restores a checkpoint whose groups were saved as one JSON document.
    fn restore_legacy(&mut self, saved: Vec<(LegacyGroup, bool)>) -> Result<()> {
        for (g, changed) in saved {
            if g.states.len() != self.aggregates.len() {
                return Err(EngineError::User(
                    "the saved state of an aggregate does not fit this query; the query changed (start with --from-scratch)".into(),
                ));
            }
            let states = g
                .states
                .into_iter()
                .map(|s| {
                    Ok(match s {
                        LegacyState::Count(n) => State::Count(n),
                        LegacyState::Sum { int, float, n } => State::Sum {
                            int: int.parse().map_err(|_| {
                                EngineError::User("a saved sum cannot be read".into())
                            })?,
                            float,
                            n,
                        },
                        LegacyState::Values(v) => State::Values(
                            v.into_iter()
                                .map(|(k, c)| (k.into_boxed_slice(), c))
                                .collect(),
                        ),
                        LegacyState::Distinct(v) => State::Distinct(
                            v.into_iter()
                                .map(|(k, c)| (k.into_boxed_slice(), c))
                                .collect(),
                        ),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let emitted = g
                .emitted
                .map(|values| {
                    values
                        .iter()
                        .zip(&self.aggregates)
                        .map(|(v, a)| restored_value(v, &a.output))
                        .collect::<Result<Vec<_>>>()
                })
                .transpose()?;
            self.groups.insert(
                g.key.into_boxed_slice(),
                Group {
                    rows: g.rows,
                    states,
                    emitted,
                    changed,
                    stamp: 0,
                },
            );
        }
        Ok(())
    }
}

/// A result value of a JSON checkpoint ("\u{0}null" for NULL).
fn restored_value(text: &str, t: &datafusion::arrow::datatypes::DataType) -> Result<ScalarValue> {
    if text == "\u{0}null" {
        return Ok(ScalarValue::try_from(t)?);
    }
    Ok(ScalarValue::try_from_string(text.to_string(), t)?)
}

#[cfg(test)]
#[path = "retracting_aggregate_tests.rs"]
mod tests;
