//! The saved form of a retracting aggregate's groups: one Arrow row per group.
//!
//! Columns (generic names `c0`…): the group key (row format, binary), its net row count,
//! whether it changed since the last emission, whether a result was emitted; then per
//! aggregate four columns: a count (`count`'s, or the number of values a sum holds), a sum
//! (16 bytes of the exact integer sum, little-endian, then 8 of the float sum), the values with
//! their counts (`min`, `max`, `count(DISTINCT)`: a list of {value in the row format, count}),
//! and the result last emitted (in the result's type). Columns an aggregate does not use are
//! NULL.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, BooleanArray, Int64Array, ListArray,
    StructArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Fields, Int64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;

use super::retractable::{Retractable, State};
use super::window_aggregate::generic_batch;
use crate::error::{EngineError, Result};

/// One group as saved and restored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SavedGroup {
    pub(crate) key: Box<[u8]>,
    pub(crate) rows: i64,
    pub(crate) changed: bool,
    pub(crate) states: Vec<State>,
    pub(crate) emitted: Option<Vec<ScalarValue>>,
}

/// Columns before the aggregates' and per aggregate.
const GROUP_COLUMNS: usize = 4;
const PER_AGGREGATE: usize = 4;

fn value_fields() -> Fields {
    Fields::from(vec![
        Field::new("value", DataType::Binary, false),
        Field::new("count", DataType::Int64, false),
    ])
}

/// The groups as one batch (`None` when there are none).
pub(crate) fn groups_batch(
    groups: &[SavedGroup],
    aggregates: &[Retractable],
) -> Result<Option<RecordBatch>> {
    if groups.is_empty() {
        return Ok(None);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(BinaryArray::from_iter_values(
            groups.iter().map(|g| &*g.key),
        )),
        Arc::new(Int64Array::from_iter_values(groups.iter().map(|g| g.rows))),
        Arc::new(BooleanArray::from_iter(
            groups.iter().map(|g| Some(g.changed)),
        )),
        Arc::new(BooleanArray::from_iter(
            groups.iter().map(|g| Some(g.emitted.is_some())),
        )),
    ];
    for (a, agg) in aggregates.iter().enumerate() {
        let states: Vec<&State> = groups.iter().map(|g| &g.states[a]).collect();
        columns.push(Arc::new(counts(&states)));
        columns.push(Arc::new(sums(&states)));
        columns.push(Arc::new(value_lists(&states)?));
        let emitted = groups.iter().map(|g| match &g.emitted {
            Some(values) => values[a].clone(),
            None => ScalarValue::try_from(&agg.output).unwrap_or(ScalarValue::Null),
        });
        columns.push(ScalarValue::iter_to_array(emitted)?);
    }
    generic_batch(columns).map(Some)
}

fn counts(states: &[&State]) -> Int64Array {
    Int64Array::from_iter(states.iter().map(|s| match s {
        State::Count(n) | State::Sum { n, .. } => Some(*n),
        State::Values(_) | State::Distinct(_) => None,
    }))
}

fn sums(states: &[&State]) -> BinaryArray {
    let mut b = BinaryBuilder::new();
    for s in states {
        match s {
            State::Sum { int, float, .. } => {
                let mut bytes = int.to_le_bytes().to_vec();
                bytes.extend_from_slice(&float.to_le_bytes());
                b.append_value(bytes);
            }
            _ => b.append_null(),
        }
    }
    b.finish()
}

fn value_lists(states: &[&State]) -> Result<ListArray> {
    let mut values = BinaryBuilder::new();
    let mut value_counts = Vec::new();
    let mut lengths = Vec::with_capacity(states.len());
    let mut valid = Vec::with_capacity(states.len());
    for s in states {
        let entries: Vec<(&[u8], i64)> = match s {
            State::Values(m) => m.iter().map(|(k, c)| (&**k, *c)).collect(),
            State::Distinct(m) => m.iter().map(|(k, c)| (&**k, *c)).collect(),
            _ => {
                lengths.push(0);
                valid.push(false);
                continue;
            }
        };
        lengths.push(entries.len());
        valid.push(true);
        for (k, c) in entries {
            values.append_value(k);
            value_counts.push(c);
        }
    }
    let entries = StructArray::try_new(
        value_fields(),
        vec![
            Arc::new(values.finish()),
            Arc::new(Int64Array::from(value_counts)),
        ],
        None,
    )?;
    let field = Arc::new(Field::new("item", DataType::Struct(value_fields()), false));
    Ok(ListArray::try_new(
        field,
        OffsetBuffer::from_lengths(lengths),
        Arc::new(entries),
        Some(valid.into()),
    )?)
}

/// Reads the groups of a batch written by [`groups_batch`] for these aggregates.
pub(crate) fn read_groups(
    batch: &RecordBatch,
    aggregates: &[Retractable],
) -> Result<Vec<SavedGroup>> {
    let unfit = || {
        EngineError::User(
            "the saved state of an aggregate does not fit this query; the query changed (start with --from-scratch)".into(),
        )
    };
    if batch.num_columns() != GROUP_COLUMNS + PER_AGGREGATE * aggregates.len() {
        return Err(unfit());
    }
    let keys = batch.column(0).as_binary_opt::<i32>().ok_or_else(unfit)?;
    let rows = batch
        .column(1)
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(unfit)?;
    let changed = batch.column(2).as_boolean_opt().ok_or_else(unfit)?;
    let emitted = batch.column(3).as_boolean_opt().ok_or_else(unfit)?;
    let mut groups = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let mut states = Vec::with_capacity(aggregates.len());
        let mut results = Vec::with_capacity(aggregates.len());
        for (a, agg) in aggregates.iter().enumerate() {
            let at = GROUP_COLUMNS + PER_AGGREGATE * a;
            states.push(read_state(agg.empty(), batch, at, i).ok_or_else(unfit)?);
            results.push(ScalarValue::try_from_array(batch.column(at + 3), i)?);
        }
        groups.push(SavedGroup {
            key: Box::from(keys.value(i)),
            rows: rows.value(i),
            changed: changed.value(i),
            states,
            emitted: emitted.value(i).then_some(results),
        });
    }
    Ok(groups)
}

/// Fills `empty` (the aggregate's kind of state) from row `i` of the columns at `at`.
fn read_state(empty: State, batch: &RecordBatch, at: usize, i: usize) -> Option<State> {
    let count = batch.column(at).as_primitive_opt::<Int64Type>()?;
    Some(match empty {
        State::Count(_) => State::Count(count.value(i)),
        State::Sum { .. } => {
            let bytes = batch.column(at + 1).as_binary_opt::<i32>()?.value(i);
            let int = i128::from_le_bytes(bytes.get(..16)?.try_into().ok()?);
            let float = f64::from_le_bytes(bytes.get(16..24)?.try_into().ok()?);
            State::Sum {
                int,
                float,
                n: count.value(i),
            }
        }
        State::Values(_) | State::Distinct(_) => {
            let lists = batch.column(at + 2).as_list_opt::<i32>()?;
            let entries = lists.value(i);
            let entries = entries.as_struct_opt()?;
            let values = entries.column(0).as_binary_opt::<i32>()?;
            let counts = entries.column(1).as_primitive_opt::<Int64Type>()?;
            let pairs = (0..entries.len()).map(|j| (Box::from(values.value(j)), counts.value(j)));
            match empty {
                State::Values(_) => State::Values(pairs.collect()),
                _ => State::Distinct(pairs.collect()),
            }
        }
    })
}
