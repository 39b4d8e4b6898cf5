use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, UInt32Array};
use datafusion::arrow::compute::{filter, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

use crate::error::{EngineError, Result};
use crate::message::Watermark;
use crate::operator::{Operator, Output};
use crate::state::NodeState;
use crate::time::{from_event_time, timestamp_unit, timestamp_values};

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
    fn create_accumulator(&self) -> Result<Box<dyn GroupsAccumulator>> {
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

/// The groups and accumulator states of one window (all windows that end at the same time).
struct OpenWindow {
    groups: Box<dyn GroupValues>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    group_indices: Vec<usize>,
}

/// Aggregates rows per window and group, vectorized with DataFusion's group values and groups
/// accumulators, and emits each window's results once, when the watermark passes its end.
///
/// Rows arrive with `window_end` already assigned (by [`super::WindowAssign`] or
/// [`super::SessionAssign`]); rows whose window has already closed are dropped and counted.
/// State is bounded by the open windows: a window's groups are freed when it is emitted.
pub struct WindowAggregate {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    window_end_group: usize,
    window_end_unit: TimeUnit,
    group_schema: SchemaRef,
    aggregates: Vec<AggregateSpec>,
    /// Per aggregate: its arguments followed by its ORDER BY expressions (order-sensitive
    /// accumulators order their input themselves, as in DataFusion's AggregateExec).
    aggregate_inputs: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    output_schema: SchemaRef,
    open: BTreeMap<i64, OpenWindow>,
    /// Current watermark in `window_end_unit`.
    watermark: Option<i64>,
}

impl std::fmt::Debug for WindowAggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowAggregate")
            .field("groups", &self.group_exprs.len())
            .field("aggregates", &self.aggregates.len())
            .field("open_windows", &self.open.len())
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
        let aggregate_inputs = aggregates
            .iter()
            .map(|a| {
                let mut inputs = a.function.expressions();
                inputs.extend(a.function.order_bys().iter().map(|o| o.expr.clone()));
                inputs
            })
            .collect();
        Ok(WindowAggregate {
            aggregate_inputs,
            group_exprs,
            window_end_group,
            window_end_unit,
            group_schema: Arc::new(Schema::new(group_fields)),
            aggregates,
            output_schema,
            open: BTreeMap::new(),
            watermark: None,
        })
    }

    /// Number of windows currently open.
    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    fn evaluate(
        &self,
        batch: &RecordBatch,
    ) -> Result<(Vec<ArrayRef>, Vec<Vec<ArrayRef>>, Vec<Option<ArrayRef>>)> {
        let rows = batch.num_rows();
        let eval = |e: &Arc<dyn PhysicalExpr>| -> Result<ArrayRef> {
            e.evaluate(batch)
                .and_then(|v| v.into_array(rows))
                .map_err(|err| EngineError::compute("evaluating an aggregate input", err))
        };
        let keys = self
            .group_exprs
            .iter()
            .map(eval)
            .collect::<Result<Vec<_>>>()?;
        let mut args = Vec::with_capacity(self.aggregates.len());
        let mut filters = Vec::with_capacity(self.aggregates.len());
        for (a, inputs) in self.aggregates.iter().zip(&self.aggregate_inputs) {
            args.push(inputs.iter().map(eval).collect::<Result<Vec<_>>>()?);
            filters.push(a.filter.as_ref().map(eval).transpose()?);
        }
        Ok((keys, args, filters))
    }

    fn open_window(&self) -> Result<OpenWindow> {
        Ok(OpenWindow {
            groups: new_group_values(self.group_schema.clone(), &GroupOrdering::None)?,
            accumulators: self
                .aggregates
                .iter()
                .map(|a| a.create_accumulator())
                .collect::<Result<_>>()?,
            group_indices: Vec::new(),
        })
    }

    fn update(
        &mut self,
        end: i64,
        keys: &[ArrayRef],
        args: &[Vec<ArrayRef>],
        filters: &[Option<ArrayRef>],
    ) -> Result<()> {
        if !self.open.contains_key(&end) {
            let w = self.open_window()?;
            self.open.insert(end, w);
        }
        let window = self.open.get_mut(&end).expect("inserted above");
        window.groups.intern(keys, &mut window.group_indices)?;
        let total = window.groups.len();
        for ((acc, values), filter) in window.accumulators.iter_mut().zip(args).zip(filters) {
            let filter = filter.as_ref().map(|f| f.as_boolean());
            acc.update_batch(values, &window.group_indices, filter, total)?;
        }
        Ok(())
    }

    fn emit_until(&mut self, watermark: Option<i64>, out: &mut Output) -> Result<()> {
        let closing: Vec<i64> = match watermark {
            Some(w) => self.open.range(..=w).map(|(k, _)| *k).collect(),
            None => self.open.keys().copied().collect(),
        };
        for end in closing {
            let mut window = self.open.remove(&end).expect("key listed above");
            let groups = window.groups.len() as u64;
            let mut columns = window.groups.emit(EmitTo::All)?;
            for acc in window.accumulators.iter_mut() {
                columns.push(acc.evaluate(EmitTo::All)?);
            }
            let columns = columns
                .into_iter()
                .zip(self.output_schema.fields())
                .map(|(c, f)| cast_if_needed(c, f.data_type()))
                .collect::<Result<Vec<_>>>()?;
            out.batch(RecordBatch::try_new(self.output_schema.clone(), columns)?);
            out.count_windows(groups);
        }
        Ok(())
    }
}

fn cast_if_needed(array: ArrayRef, to: &DataType) -> Result<ArrayRef> {
    if array.data_type() == to {
        Ok(array)
    } else {
        Ok(datafusion::arrow::compute::cast(&array, to)?)
    }
}

fn take_all(arrays: &[ArrayRef], indices: &UInt32Array) -> Result<Vec<ArrayRef>> {
    Ok(arrays
        .iter()
        .map(|a| take(a.as_ref(), indices, None))
        .collect::<std::result::Result<_, _>>()?)
}

fn filter_all(arrays: &[ArrayRef], mask: &BooleanArray) -> Result<Vec<ArrayRef>> {
    Ok(arrays
        .iter()
        .map(|a| filter(a.as_ref(), mask))
        .collect::<std::result::Result<_, _>>()?)
}

impl Operator for WindowAggregate {
    fn output_schema(&self) -> SchemaRef {
        self.output_schema.clone()
    }

    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let (mut keys, mut args, mut filters) = self.evaluate(&batch)?;
        let mut ends = timestamp_values(&keys[self.window_end_group])?;

        // Drop rows whose window has already been emitted.
        if let Some(w) = self.watermark {
            let live = ends.values().iter().filter(|e| **e > w).count();
            if live < ends.len() {
                out.count_late((ends.len() - live) as u64);
                if live == 0 {
                    return Ok(());
                }
                let mask: BooleanArray = ends.values().iter().map(|e| Some(*e > w)).collect();
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

        // Partition the rows by window end (usually one or two distinct ends per batch).
        let values = ends.values();
        let first = values[0];
        if values.iter().all(|e| *e == first) {
            return self.update(first, &keys, &args, &filters);
        }
        let mut partitions: std::collections::HashMap<i64, Vec<u32>> =
            std::collections::HashMap::new();
        for (row, end) in values.iter().enumerate() {
            partitions.entry(*end).or_default().push(row as u32);
        }
        for (end, rows) in partitions {
            let indices = UInt32Array::from(rows);
            let part_keys = take_all(&keys, &indices)?;
            let part_args = args
                .iter()
                .map(|a| take_all(a, &indices))
                .collect::<Result<Vec<_>>>()?;
            let part_filters = filters
                .iter()
                .map(|f| {
                    f.as_ref()
                        .map(|f| take(f.as_ref(), &indices, None))
                        .transpose()
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            self.update(end, &part_keys, &part_args, &part_filters)?;
        }
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

    /// Saves the watermark and, per open window, its groups with every accumulator's
    /// intermediate state (the same state DataFusion merges across partitions): table
    /// `windows` has the window end, the group columns, then the state columns.
    fn snapshot(&mut self) -> Result<NodeState> {
        let mut parts = Vec::with_capacity(self.open.len());
        let ends: Vec<i64> = self.open.keys().copied().collect();
        for end in ends {
            let window = self.open.remove(&end).expect("listed above");
            let (columns, rebuilt) = self.save_window(end, window)?;
            self.open.insert(end, rebuilt);
            parts.push(columns);
        }
        let mut state = NodeState::json(&self.watermark)?;
        if let Some(first) = parts.first() {
            let schema = Arc::new(Schema::new(
                first
                    .iter()
                    .enumerate()
                    .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
                    .collect::<Vec<_>>(),
            ));
            let batches = parts
                .into_iter()
                .map(|columns| RecordBatch::try_new(schema.clone(), columns))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let all = datafusion::arrow::compute::concat_batches(&schema, &batches)?;
            state = state.with_table(WINDOWS_TABLE, all);
        }
        Ok(state)
    }

    fn restore(&mut self, state: NodeState) -> Result<()> {
        self.watermark = state.to_json::<Option<i64>>()?.flatten();
        self.open.clear();
        let Some(table) = state.table(WINDOWS_TABLE) else {
            return Ok(());
        };
        let groups = self.group_exprs.len();
        let ends = table
            .column(0)
            .as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>()
            .ok_or_else(|| EngineError::Internal("window state without window ends".into()))?
            .clone();
        let mut distinct: Vec<i64> = ends.values().to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        for end in distinct {
            let mask: BooleanArray = ends.values().iter().map(|e| Some(*e == end)).collect();
            let rows = datafusion::arrow::compute::filter_record_batch(table, &mask)?;
            let keys = rows.columns()[1..=groups].to_vec();
            let mut window = self.open_window()?;
            window.groups.intern(&keys, &mut window.group_indices)?;
            let total = window.groups.len();
            let mut next = 1 + groups;
            for (acc, spec) in window.accumulators.iter_mut().zip(&self.aggregates) {
                let width = spec.function.state_fields()?.len();
                let states = rows.columns()[next..next + width].to_vec();
                next += width;
                acc.merge_batch(&states, &window.group_indices, total)?;
            }
            if next != rows.num_columns() {
                return Err(EngineError::User(format!(
                    "the saved window state has {} columns where this query keeps {next}; the pipeline changed (start with --from-scratch)",
                    rows.num_columns()
                )));
            }
            self.open.insert(end, window);
        }
        Ok(())
    }
}

/// The state table of open windows.
const WINDOWS_TABLE: &str = "windows";

impl WindowAggregate {
    /// Takes one window's groups and accumulator states out as columns (end, groups, states)
    /// and returns them with an equivalent window rebuilt from them.
    fn save_window(&self, end: i64, mut window: OpenWindow) -> Result<(Vec<ArrayRef>, OpenWindow)> {
        let keys = window.groups.emit(EmitTo::All)?;
        let rows = keys.first().map_or(0, |k| k.len());
        let mut columns: Vec<ArrayRef> = vec![Arc::new(
            datafusion::arrow::array::Int64Array::from(vec![end; rows]),
        )];
        columns.extend(keys.iter().cloned());
        let mut rebuilt = self.open_window()?;
        rebuilt.groups.intern(&keys, &mut rebuilt.group_indices)?;
        let total = rebuilt.groups.len();
        for (acc, fresh) in window
            .accumulators
            .iter_mut()
            .zip(rebuilt.accumulators.iter_mut())
        {
            let states = acc.state(EmitTo::All)?;
            fresh.merge_batch(&states, &rebuilt.group_indices, total)?;
            columns.extend(states);
        }
        Ok((columns, rebuilt))
    }
}
