//! Groups and their aggregate states in one table: DataFusion's `GroupValues` (the group keys,
//! interned in insertion order) and one `GroupsAccumulator` per aggregate, indexed alike.
//! Window operators key it by (window, keys); emitting some windows and keeping the others
//! takes every group out as keys plus intermediate states ([`GroupRows`]) and merges the
//! rows to keep back (`merge_batch`), the way DataFusion combines partial aggregates.

use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray, UInt32Array};
use datafusion::arrow::compute::{filter, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

use super::window_aggregate::AggregateSpec;
use crate::error::{EngineError, Result};

/// Groups taken out of a [`GroupedState`]: one row per group, its key columns and, per
/// aggregate, its intermediate state columns.
#[derive(Debug, Clone)]
pub(crate) struct GroupRows {
    pub(crate) keys: Vec<ArrayRef>,
    pub(crate) states: Vec<Vec<ArrayRef>>,
}

impl GroupRows {
    /// Number of groups.
    pub(crate) fn len(&self) -> usize {
        self.keys.first().map_or(0, |k| k.len())
    }

    /// The groups where `mask` is true.
    pub(crate) fn filter(&self, mask: &BooleanArray) -> Result<GroupRows> {
        self.map_columns(|c| filter(c.as_ref(), mask))
    }

    /// The groups at `indices`, in that order.
    pub(crate) fn take(&self, indices: &UInt32Array) -> Result<GroupRows> {
        self.map_columns(|c| take(c.as_ref(), indices, None))
    }

    /// The same groups with `f` applied to every key and state column.
    fn map_columns(
        &self,
        f: impl Fn(&ArrayRef) -> std::result::Result<ArrayRef, ArrowError>,
    ) -> Result<GroupRows> {
        let pick = |columns: &[ArrayRef]| -> Result<Vec<ArrayRef>> {
            Ok(columns
                .iter()
                .map(&f)
                .collect::<std::result::Result<_, _>>()?)
        };
        Ok(GroupRows {
            keys: pick(&self.keys)?,
            states: self.states.iter().map(|s| pick(s)).collect::<Result<_>>()?,
        })
    }
}

/// One table of groups with their accumulators.
pub(crate) struct GroupedState {
    key_schema: SchemaRef,
    aggregates: Vec<AggregateSpec>,
    groups: Box<dyn GroupValues>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    indices: Vec<usize>,
}

impl std::fmt::Debug for GroupedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupedState")
            .field("groups", &self.groups.len())
            .finish()
    }
}

impl GroupedState {
    /// An empty table of groups keyed by `key_schema`'s columns.
    pub(crate) fn new(key_schema: SchemaRef, aggregates: Vec<AggregateSpec>) -> Result<Self> {
        Ok(GroupedState {
            groups: new_group_values(key_schema.clone(), &GroupOrdering::None)?,
            accumulators: aggregates
                .iter()
                .map(|a| a.create_accumulator())
                .collect::<Result<_>>()?,
            key_schema,
            aggregates,
            indices: Vec::new(),
        })
    }

    /// An empty table like this one.
    pub(crate) fn empty_like(&self) -> Result<Self> {
        Self::new(self.key_schema.clone(), self.aggregates.clone())
    }

    /// Number of groups.
    pub(crate) fn len(&self) -> usize {
        self.groups.len()
    }

    /// Adds rows: `keys` are the group columns, `args` each aggregate's inputs, `filters` each
    /// aggregate's `FILTER` mask. Returns each row's group index (new groups get the next
    /// indices, in order of first appearance).
    pub(crate) fn update(
        &mut self,
        keys: &[ArrayRef],
        args: &[Vec<ArrayRef>],
        filters: &[Option<ArrayRef>],
    ) -> Result<&[usize]> {
        self.groups.intern(keys, &mut self.indices)?;
        let total = self.groups.len();
        for ((acc, values), filter) in self.accumulators.iter_mut().zip(args).zip(filters) {
            let filter = filter.as_ref().map(|f| f.as_boolean());
            acc.update_batch(values, &self.indices, filter, total)?;
        }
        Ok(&self.indices)
    }

    /// Takes every group out, leaving the table empty.
    pub(crate) fn take(&mut self) -> Result<GroupRows> {
        let keys = if self.groups.is_empty() {
            Vec::new()
        } else {
            self.groups.emit(EmitTo::All)?
        };
        let mut states = Vec::with_capacity(self.accumulators.len());
        for acc in self.accumulators.iter_mut() {
            states.push(acc.state(EmitTo::All)?);
        }
        // Start afresh: what `emit(All)` leaves behind is not meant for reuse.
        *self = self.empty_like()?;
        Ok(GroupRows { keys, states })
    }

    /// Merges groups taken out of a table with the same aggregates (rows with equal keys
    /// combine, as do rows equal to groups already here).
    pub(crate) fn merge(&mut self, rows: &GroupRows) -> Result<()> {
        if rows.len() == 0 {
            return Ok(());
        }
        if rows.states.len() != self.accumulators.len() {
            return Err(EngineError::Internal(format!(
                "{} aggregate states for {} aggregates",
                rows.states.len(),
                self.accumulators.len()
            )));
        }
        self.groups.intern(&rows.keys, &mut self.indices)?;
        let total = self.groups.len();
        for (acc, states) in self.accumulators.iter_mut().zip(&rows.states) {
            acc.merge_batch(states, &self.indices, total)?;
        }
        Ok(())
    }

    /// Emits every group: its key columns and one final value column per aggregate, leaving
    /// the table empty.
    pub(crate) fn emit(&mut self) -> Result<(Vec<ArrayRef>, Vec<ArrayRef>)> {
        if self.groups.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let keys = self.groups.emit(EmitTo::All)?;
        let values = self
            .accumulators
            .iter_mut()
            .map(|acc| acc.evaluate(EmitTo::All))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        *self = self.empty_like()?;
        Ok((keys, values))
    }

    /// The widths of each aggregate's intermediate state, for checkpoints.
    pub(crate) fn state_widths(&self) -> Result<Vec<usize>> {
        self.aggregates
            .iter()
            .map(|a| Ok(a.function.state_fields()?.len()))
            .collect()
    }
}

/// Splits `rows` by `closing` into (closing, staying).
pub(crate) fn split(rows: &GroupRows, closing: &BooleanArray) -> Result<(GroupRows, GroupRows)> {
    let staying = datafusion::arrow::compute::not(closing)?;
    Ok((rows.filter(closing)?, rows.filter(&staying)?))
}
