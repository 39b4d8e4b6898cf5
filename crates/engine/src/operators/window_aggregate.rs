use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, UInt32Array};
use datafusion::arrow::compute::{filter, filter_record_batch, not, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::GroupsAccumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

use super::grouped_state::{GroupRows, GroupedState, split};
use crate::error::{EngineError, Result};
use crate::message::Watermark;
use crate::operator::{Operator, Output};
use crate::state::NodeState;
use crate::time::{
    format_event_time, from_event_time, timestamp_unit, timestamp_values, to_event_time,
};

/// One aggregate of a window aggregation: the function with its arguments, and an optional
/// `FILTER (WHERE …)` predicate.
#[derive(Debug, Clone)]
pub struct AggregateSpec {
    /// The physical aggregate (arguments, DISTINCT, ordering are part of it).
    pub function: Arc<AggregateFunctionExpr>,
    /// Rows for which this is not true are not aggregated.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

impl AggregateSpec {
    pub(crate) fn create_accumulator(&self) -> Result<Box<dyn GroupsAccumulator>> {
        let f = &self.function;
        if f.groups_accumulator_supported() {
            Ok(f.create_groups_accumulator()?)
        } else {
            let f = f.clone();
            Ok(Box::new(
                datafusion::physical_expr::GroupsAccumulatorAdapter::new(move || {
                    f.create_accumulator()
                }),
            ))
        }
    }
}

/// Aggregates rows per window and group, vectorized with DataFusion's group values and groups
/// accumulators, and emits each window's results once, when the watermark passes its end.
///
/// Rows arrive with `window_end` already assigned (by [`super::WindowAssign`] or
/// [`super::SessionAssign`]); rows whose window has already closed are dropped as late. All
/// open windows share one table of groups keyed by (window end, keys), with an index of the
/// ends: per batch the work is one interning pass over its rows, whatever the number of open
/// windows. When the watermark closes some windows and not others, the groups are taken out
/// once with their intermediate states, the closing ones emitted in one batch (ordered by
/// window end) and the rest merged back. State is bounded by the open windows.
pub struct WindowAggregate {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    window_end_group: usize,
    window_end_unit: TimeUnit,
    aggregates: Vec<AggregateSpec>,
    /// Per aggregate: its arguments followed by its ORDER BY expressions (order-sensitive
    /// accumulators order their input themselves, as in DataFusion's AggregateExec).
    aggregate_inputs: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    output_schema: SchemaRef,
    state: GroupedState,
    /// Groups per open window end: the index the watermark closes windows by.
    ends: BTreeMap<i64, usize>,
    /// Current watermark in `window_end_unit`.
    watermark: Option<i64>,
}

impl std::fmt::Debug for WindowAggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowAggregate")
            .field("groups", &self.group_exprs.len())
            .field("aggregates", &self.aggregates.len())
            .field("open_windows", &self.ends.len())
            .field("open_groups", &self.state.len())
            .finish()
    }
}

impl WindowAggregate {
    /// `group_exprs` are evaluated on `input`; `group_exprs[window_end_group]` must be the
    /// window end. The output has one column per group expression, then one per aggregate, and
    /// carries `output_schema`.
    pub fn new(
        input: &Schema,
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        window_end_group: usize,
        aggregates: Vec<AggregateSpec>,
        output_schema: SchemaRef,
    ) -> Result<Self> {
        let mut group_fields = Vec::with_capacity(group_exprs.len());
        for (i, e) in group_exprs.iter().enumerate() {
            group_fields.push(Field::new(
                format!("group_{i}"),
                e.data_type(input)?,
                e.nullable(input)?,
            ));
        }
        let end_type = group_fields
            .get(window_end_group)
            .ok_or_else(|| EngineError::Internal("window_end group out of range".into()))?
            .data_type()
            .clone();
        let window_end_unit = timestamp_unit(&end_type, "window_end")?;
        if output_schema.fields().len() != group_exprs.len() + aggregates.len() {
            return Err(EngineError::Internal(format!(
                "window aggregate output has {} columns for {} groups and {} aggregates",
                output_schema.fields().len(),
                group_exprs.len(),
                aggregates.len()
            )));
        }
        let aggregate_inputs = aggregate_inputs(&aggregates);
        let state = GroupedState::new(Arc::new(Schema::new(group_fields)), aggregates.clone())?;
        Ok(WindowAggregate {
            aggregate_inputs,
            group_exprs,
            window_end_group,
            window_end_unit,
            aggregates,
            output_schema,
            state,
            ends: BTreeMap::new(),
            watermark: None,
        })
    }

    /// Number of windows currently open.
    pub fn open_windows(&self) -> usize {
        self.ends.len()
    }

    /// Number of (window, group) results currently open.
    pub fn open_groups(&self) -> usize {
        self.state.len()
    }

    /// Counts the groups that `update` created (indices from `before` on, in row order) under
    /// their window ends.
    fn index_new_groups(&mut self, ends: &[i64], indices: &[usize], before: usize) {
        let mut next = before;
        for (row, &g) in indices.iter().enumerate() {
            if g == next {
                *self.ends.entry(ends[row]).or_insert(0) += 1;
                next += 1;
            }
        }
    }

    /// Emits every window that ends at or before `watermark` (all of them for `None`).
    fn emit_until(&mut self, watermark: Option<i64>, out: &mut Output) -> Result<()> {
        let closing_ends: Vec<i64> = match watermark {
            Some(w) => self.ends.range(..=w).map(|(e, _)| *e).collect(),
            None => self.ends.keys().copied().collect(),
        };
        if closing_ends.is_empty() {
            return Ok(());
        }
        let closing_groups: usize = closing_ends.iter().map(|e| self.ends[e]).sum();
        for e in &closing_ends {
            self.ends.remove(e);
        }
        let (keys, values) = if closing_groups == self.state.len() {
            self.state.emit()?
        } else {
            let w = watermark.expect("only a watermark leaves windows open");
            let rows = self.state.take()?;
            let ends = timestamp_values(&rows.keys[self.window_end_group])?;
            let closing: BooleanArray = ends.values().iter().map(|e| Some(*e <= w)).collect();
            let (closed, open) = split(&rows, &closing)?;
            self.state.merge(&open)?;
            let mut emitting = self.state.empty_like()?;
            emitting.merge(&closed)?;
            emitting.emit()?
        };
        let mut columns = keys;
        columns.extend(values);
        let columns = columns
            .into_iter()
            .zip(self.output_schema.fields())
            .map(|(c, f)| cast_if_needed(c, f.data_type()))
            .collect::<Result<Vec<_>>>()?;
        let batch = RecordBatch::try_new(self.output_schema.clone(), columns)?;
        let batch = if closing_ends.len() > 1 {
            sort_by_column(&batch, self.window_end_group)?
        } else {
            batch
        };
        out.count_windows(batch.num_rows() as u64);
        out.batch(batch);
        Ok(())
    }
}

/// Per aggregate: its arguments followed by its ORDER BY expressions.
pub(crate) fn aggregate_inputs(aggregates: &[AggregateSpec]) -> Vec<Vec<Arc<dyn PhysicalExpr>>> {
    aggregates
        .iter()
        .map(|a| {
            let mut inputs = a.function.expressions();
            inputs.extend(a.function.order_bys().iter().map(|o| o.expr.clone()));
            inputs
        })
        .collect()
}

/// Evaluates `exprs` on `batch` as arrays.
pub(crate) fn evaluate_all(
    exprs: &[Arc<dyn PhysicalExpr>],
    batch: &RecordBatch,
) -> Result<Vec<ArrayRef>> {
    let rows = batch.num_rows();
    exprs
        .iter()
        .map(|e| {
            e.evaluate(batch)
                .and_then(|v| v.into_array(rows))
                .map_err(|err| EngineError::compute("evaluating an aggregate input", err))
        })
        .collect()
}

/// Evaluates every aggregate's inputs and `FILTER` on `batch`.
pub(crate) fn evaluate_aggregates(
    aggregates: &[AggregateSpec],
    inputs: &[Vec<Arc<dyn PhysicalExpr>>],
    batch: &RecordBatch,
) -> Result<(Vec<Vec<ArrayRef>>, Vec<Option<ArrayRef>>)> {
    let mut args = Vec::with_capacity(aggregates.len());
    let mut filters = Vec::with_capacity(aggregates.len());
    for (a, inputs) in aggregates.iter().zip(inputs) {
        args.push(evaluate_all(inputs, batch)?);
        filters.push(
            a.filter
                .as_ref()
                .map(|f| evaluate_all(std::slice::from_ref(f), batch).map(|mut v| v.remove(0)))
                .transpose()?,
        );
    }
    Ok((args, filters))
}

/// `batch` ordered by timestamp column `column`, keeping the order of equal values.
pub(crate) fn sort_by_column(batch: &RecordBatch, column: usize) -> Result<RecordBatch> {
    let values = timestamp_values(batch.column(column))?;
    let mut order: Vec<u32> = (0..batch.num_rows() as u32).collect();
    order.sort_by_key(|&i| values.value(i as usize));
    let indices = UInt32Array::from(order);
    let columns = take_all(batch.columns(), &indices)?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

pub(crate) fn cast_if_needed(array: ArrayRef, to: &DataType) -> Result<ArrayRef> {
    if array.data_type() == to {
        Ok(array)
    } else {
        Ok(datafusion::arrow::compute::cast(&array, to)?)
    }
}

pub(crate) fn take_all(arrays: &[ArrayRef], indices: &UInt32Array) -> Result<Vec<ArrayRef>> {
    Ok(arrays
        .iter()
        .map(|a| take(a.as_ref(), indices, None))
        .collect::<std::result::Result<_, _>>()?)
}

pub(crate) fn filter_all(arrays: &[ArrayRef], mask: &BooleanArray) -> Result<Vec<ArrayRef>> {
    Ok(arrays
        .iter()
        .map(|a| filter(a.as_ref(), mask))
        .collect::<std::result::Result<_, _>>()?)
}

impl Operator for WindowAggregate {
    fn output_schema(&self) -> SchemaRef {
        self.output_schema.clone()
    }

    fn open_state(&self) -> u64 {
        self.state.len() as u64
    }

    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let mut keys = evaluate_all(&self.group_exprs, &batch)?;
        let (mut args, mut filters) =
            evaluate_aggregates(&self.aggregates, &self.aggregate_inputs, &batch)?;
        let mut ends = timestamp_values(&keys[self.window_end_group])?;

        // Drop rows whose window has already been emitted.
        if let Some(w) = self.watermark {
            let live = ends.values().iter().filter(|e| **e > w).count();
            if live < ends.len() {
                let mask: BooleanArray = ends.values().iter().map(|e| Some(*e > w)).collect();
                let late = filter_record_batch(&batch, &not(&mask)?)?;
                out.late(
                    late,
                    format!(
                        "its window had closed: window_end is at or before the watermark {}",
                        format_event_time(to_event_time(w, self.window_end_unit))
                    ),
                );
                if live == 0 {
                    return Ok(());
                }
                keys = filter_all(&keys, &mask)?;
                args = args
                    .iter()
                    .map(|a| filter_all(a, &mask))
                    .collect::<Result<_>>()?;
                filters = filters
                    .iter()
                    .map(|f| f.as_ref().map(|f| filter(f.as_ref(), &mask)).transpose())
                    .collect::<std::result::Result<_, _>>()?;
                ends = timestamp_values(&keys[self.window_end_group])?;
            }
        }
        let before = self.state.len();
        let indices = self.state.update(&keys, &args, &filters)?.to_vec();
        self.index_new_groups(ends.values(), &indices, before);
        Ok(())
    }

    fn process_watermark(&mut self, watermark: Watermark, out: &mut Output) -> Result<()> {
        if let Watermark::EventTime(t) = watermark {
            let w = from_event_time(t, self.window_end_unit);
            self.watermark = Some(self.watermark.map_or(w, |c| c.max(w)));
            self.emit_until(self.watermark, out)?;
        }
        out.watermark(watermark);
        Ok(())
    }

    fn finish(&mut self, out: &mut Output) -> Result<()> {
        self.emit_until(None, out)
    }

    /// Saves the watermark and every open group with each accumulator's intermediate state
    /// (the same state DataFusion merges across partitions): table `windows` has the group
    /// columns (the window end among them), then the state columns.
    fn snapshot(&mut self) -> Result<NodeState> {
        let rows = self.state.take()?;
        self.state.merge(&rows)?;
        let mut state = NodeState::json(&self.watermark)?;
        if rows.len() > 0 {
            let mut columns = rows.keys;
            columns.extend(rows.states.into_iter().flatten());
            state = state.with_table(WINDOWS_TABLE, generic_batch(columns)?);
        }
        Ok(state)
    }

    fn restore(&mut self, state: NodeState) -> Result<()> {
        self.watermark = state.to_json::<Option<i64>>()?.flatten();
        self.state = self.state.empty_like()?;
        self.ends.clear();
        let Some(table) = state.table(WINDOWS_TABLE) else {
            return Ok(());
        };
        let groups = self.group_exprs.len();
        let widths = self.state.state_widths()?;
        let expected = groups + widths.iter().sum::<usize>();
        // Checkpoints of laketide 0.1 put the window end first, in a column of its own.
        let first = match table.num_columns() {
            n if n == expected => 0,
            n if n == expected + 1 => 1,
            n => {
                return Err(EngineError::User(format!(
                    "the saved window state has {n} columns where this query keeps {expected}; the pipeline changed (start with --from-scratch)"
                )));
            }
        };
        let columns = &table.columns()[first..];
        let rows = GroupRows {
            keys: columns[..groups].to_vec(),
            states: split_columns(&columns[groups..], &widths),
        };
        let before = self.state.len();
        self.state.merge(&rows)?;
        let ends = timestamp_values(&rows.keys[self.window_end_group])?;
        let indices: Vec<usize> = (before..before + rows.len()).collect();
        self.index_new_groups(ends.values(), &indices, before);
        Ok(())
    }
}

/// Splits state columns into one group per aggregate of the given widths.
pub(crate) fn split_columns(columns: &[ArrayRef], widths: &[usize]) -> Vec<Vec<ArrayRef>> {
    let mut next = 0;
    widths
        .iter()
        .map(|w| {
            let part = columns[next..next + w].to_vec();
            next += w;
            part
        })
        .collect()
}

/// A batch of `columns` named `c0`, `c1`, … (nullable), as state tables are stored.
pub(crate) fn generic_batch(columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .enumerate()
            .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The state table of open windows.
const WINDOWS_TABLE: &str = "windows";

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array, StringArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{Int64Type, TimestampMillisecondType};
    use datafusion::functions_aggregate::count::count_udaf;
    use datafusion::functions_aggregate::sum::sum_udaf;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::Column;

    const MS: i64 = 1_000_000;

    /// Windowed rows: `key`, `value`, `window_end` (milliseconds).
    pub(crate) fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Int64, false),
            Field::new(
                "window_end",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
        ]))
    }

    pub(crate) fn rows(data: &[(&str, i64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            input_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(data.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(data.iter().map(|r| r.1))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    data.iter().map(|r| r.2),
                )),
            ],
        )
        .unwrap()
    }

    /// `sum(value)` and `count(value)` per (window_end, key).
    fn aggregate() -> WindowAggregate {
        let schema = input_schema();
        let value: Arc<dyn PhysicalExpr> = Arc::new(Column::new("value", 1));
        let spec = |f, alias: &str| AggregateSpec {
            function: Arc::new(
                AggregateExprBuilder::new(f, vec![value.clone()])
                    .schema(schema.clone())
                    .alias(alias)
                    .build()
                    .unwrap(),
            ),
            filter: None,
        };
        let output = Arc::new(Schema::new(vec![
            Field::new(
                "window_end",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
            Field::new("key", DataType::Utf8, false),
            Field::new("total", DataType::Int64, true),
            Field::new("n", DataType::Int64, true),
        ]));
        WindowAggregate::new(
            &schema,
            vec![
                Arc::new(Column::new("window_end", 2)),
                Arc::new(Column::new("key", 0)),
            ],
            0,
            vec![spec(sum_udaf(), "total"), spec(count_udaf(), "n")],
            output,
        )
        .unwrap()
    }

    /// (window_end, key, total, n) of every batch in `out`.
    fn results(out: &mut Output) -> Vec<(i64, String, i64, i64)> {
        let mut found = Vec::new();
        for m in out.drain() {
            if let crate::message::Message::Batch(b) = m {
                let ends = b.column(0).as_primitive::<TimestampMillisecondType>();
                let keys = b.column(1).as_string::<i32>();
                let totals = b.column(2).as_primitive::<Int64Type>();
                let counts = b.column(3).as_primitive::<Int64Type>();
                for i in 0..b.num_rows() {
                    found.push((
                        ends.value(i),
                        keys.value(i).to_string(),
                        totals.value(i),
                        counts.value(i),
                    ));
                }
            }
        }
        found
    }

    #[test]
    fn a_batch_over_many_window_ends_is_one_table_and_closes_in_end_order() {
        let mut op = aggregate();
        let data: Vec<(&str, i64, i64)> = (1..=1000)
            .rev()
            .flat_map(|end| [("a", end, end), ("b", 1, end)])
            .collect();
        let mut out = Output::default();
        op.process_batch(0, rows(&data), &mut out).unwrap();
        assert_eq!(op.open_windows(), 1000);
        assert_eq!(op.open_groups(), 2000);
        op.process_watermark(Watermark::EventTime(500 * MS), &mut out)
            .unwrap();
        let closed = results(&mut out);
        assert_eq!(closed.len(), 1000);
        assert!(closed.windows(2).all(|w| w[0].0 <= w[1].0), "in end order");
        assert_eq!(closed[0], (1, "a".to_string(), 1, 1));
        assert_eq!(closed[999], (500, "b".to_string(), 1, 1));
        assert_eq!(op.open_groups(), 1000);
        // The groups kept back still aggregate.
        op.process_batch(0, rows(&[("a", 10, 501)]), &mut out)
            .unwrap();
        op.finish(&mut out).unwrap();
        let rest = results(&mut out);
        assert_eq!(rest.len(), 1000);
        assert_eq!(rest[0], (501, "a".to_string(), 511, 2));
    }

    #[test]
    fn rows_of_closed_windows_are_late_and_the_rest_are_kept() {
        let mut op = aggregate();
        let mut out = Output::default();
        op.process_watermark(Watermark::EventTime(100 * MS), &mut out)
            .unwrap();
        op.process_batch(
            0,
            rows(&[("a", 1, 50), ("a", 2, 100), ("a", 3, 150)]),
            &mut out,
        )
        .unwrap();
        let (late, _) = out.take_counters();
        assert_eq!(late, 2);
        let late_rows = out.take_late();
        assert_eq!(late_rows[0].0.num_rows(), 2);
        assert!(
            late_rows[0].1.contains("window had closed"),
            "{}",
            late_rows[0].1
        );
        op.finish(&mut out).unwrap();
        assert_eq!(results(&mut out), vec![(150, "a".to_string(), 3, 1)]);
    }

    #[test]
    fn a_snapshot_restores_every_open_group_exactly() {
        let mut op = aggregate();
        let mut out = Output::default();
        op.process_batch(
            0,
            rows(&[("a", 1, 10), ("b", 2, 10), ("a", 3, 20), ("a", 4, 10)]),
            &mut out,
        )
        .unwrap();
        op.process_watermark(Watermark::EventTime(5 * MS), &mut out)
            .unwrap();
        let state = op.snapshot().unwrap();
        let mut restored = aggregate();
        restored.restore(state).unwrap();
        assert_eq!(restored.open_windows(), 2);
        // Both go on alike, including the watermark (a row for window 5 is late in both).
        for o in [&mut op, &mut restored] {
            o.process_batch(0, rows(&[("b", 5, 20), ("c", 1, 5)]), &mut out)
                .unwrap();
        }
        assert_eq!(out.take_counters().0, 2);
        op.finish(&mut out).unwrap();
        let original = results(&mut out);
        restored.finish(&mut out).unwrap();
        assert_eq!(results(&mut out), original);
        assert_eq!(
            original,
            vec![
                (10, "a".to_string(), 5, 2),
                (10, "b".to_string(), 2, 1),
                (20, "a".to_string(), 3, 1),
                (20, "b".to_string(), 5, 1),
            ]
        );
    }
}
