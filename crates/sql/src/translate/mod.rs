//! Translation of DataFusion's optimized logical plan into the engine's dataflow.
//!
//! Supported plan nodes: table scans of source tables and window table functions, projections,
//! filters, aliases, windowed and updating aggregates, Top-N and deduplication windows, joins
//! of two append-only streams (`join.rs`) and UNION ALL. Everything else is reported as not
//! supported in a streaming query, at the statement's location.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::datasource::source_as_provider;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column as PhysicalColumn;

use laketide_engine::operators::{
    FilterOperator, ProjectionOperator, SessionAssign, SlidingWindow, UnionOperator, WindowAssign,
};
use laketide_engine::{
    CHANGE_COLUMN, Dataflow, EngineError, LookupTable, NodeId, schema_with_change,
};

use crate::error::{Location, Result, SqlError, from_datafusion};

mod aggregate;
mod join;
mod lookup_join;
mod rank;
mod retracting;
mod session;
use crate::stream_table::StreamTable;
use crate::window_functions::{WindowKind, WindowedTable};

/// Where the window columns of a stream are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowColumns {
    /// Whether the windows are sessions (their bounds are per key, not shared).
    pub(crate) session: bool,
    pub(crate) start: Option<usize>,
    /// `None` when the window end was projected away (then it cannot be grouped by).
    pub(crate) end: Option<usize>,
}

/// A translated (sub)plan: the node producing it, its schema, and its window columns.
#[derive(Debug, Clone)]
pub struct Stream {
    /// The dataflow node whose output this is.
    pub node: NodeId,
    /// The logical schema of its rows.
    pub schema: DFSchemaRef,
    pub(crate) window: Option<WindowColumns>,
    /// Whether the rows carry event time (their sources declare a WATERMARK); otherwise time
    /// is processing time.
    pub(crate) event_time: bool,
    /// The column the watermark is on, where it is known: a source's WATERMARK column, kept
    /// through projections (as a plain column), filters, window assignment and joins.
    pub(crate) time_column: Option<usize>,
}

/// The named relations a query can read: source tables (nodes built on first use and shared
/// between statements) and views.
pub trait Relations {
    /// The node reading source table `name`, created on first use.
    fn source_node(
        &mut self,
        dataflow: &mut Dataflow,
        name: &str,
        location: Location,
    ) -> Result<NodeId>;

    /// The logical plan of view `name`, if it is a view.
    fn view_plan(&self, name: &str) -> Option<LogicalPlan>;

    /// Whether table `name` is read by lookups (`FOR SYSTEM_TIME AS OF`), not as a stream.
    fn is_lookup(&self, name: &str) -> bool;

    /// The lookup table `name`, read by the columns `key` (names).
    fn lookup_table(
        &mut self,
        name: &str,
        key: &[String],
        location: Location,
    ) -> Result<Arc<dyn LookupTable>>;

    /// Whether source table `name` declares a WATERMARK (event time).
    fn has_event_time(&self, name: &str) -> bool;

    /// The event-time column of source table `name` (its `WATERMARK FOR` column), if any.
    fn event_time_column(&self, name: &str) -> Option<String>;
}

/// Translates plans of one pipeline into one dataflow.
pub struct Translator<'a> {
    pub(crate) ctx: &'a SessionContext,
    pub(crate) dataflow: &'a mut Dataflow,
    pub(crate) sources: &'a mut dyn Relations,
    pub(crate) location: Location,
    /// The non-window GROUP BY expressions of the aggregate being translated: a `SESSION`
    /// window without explicit key arguments partitions its sessions by them.
    pub(crate) session_keys_hint: Option<Vec<Expr>>,
    /// How often updating aggregates emit their changed results.
    pub(crate) update_interval: std::time::Duration,
    /// How long updating aggregates keep a key that does not change (`None`: always).
    pub(crate) state_ttl: Option<std::time::Duration>,
    /// The window whose row number a filter being translated limits (Top-N).
    pub(crate) pending_rank: Option<rank::PendingRank>,
}

pub(crate) fn arrow_schema(schema: &DFSchema) -> SchemaRef {
    Arc::new(schema.as_arrow().clone())
}

impl Translator<'_> {
    pub(crate) fn err(&self, message: impl Into<String>) -> SqlError {
        SqlError::plan(self.location, message)
    }

    pub(crate) fn df(&self, e: datafusion::error::DataFusionError) -> SqlError {
        from_datafusion(e, self.location)
    }

    pub(crate) fn physical(&self, expr: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
        self.ctx
            .state()
            .create_physical_expr(expr.clone(), schema)
            .map_err(|e| self.df(e))
    }

    pub(crate) fn operator(
        &mut self,
        name: &str,
        description: String,
        op: Box<dyn laketide_engine::Operator>,
        inputs: Vec<NodeId>,
    ) -> Result<NodeId> {
        self.dataflow
            .add_operator(name, description, op, inputs)
            .map_err(|e| match e {
                EngineError::User(message) => self.err(message),
                other => other.into(),
            })
    }

    /// The arrow schema of the rows `stream`'s node emits for logical schema `schema`: with the
    /// change column last when the stream is updating.
    fn physical_schema(&self, stream: &Stream, schema: &DFSchema) -> SchemaRef {
        let arrow = arrow_schema(schema);
        if self.dataflow.mode(stream.node).is_updating() {
            schema_with_change(&arrow)
        } else {
            arrow
        }
    }

    /// Translates `plan` into nodes and returns its output stream.
    pub fn translate(&mut self, plan: &LogicalPlan) -> Result<Stream> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                let provider = source_as_provider(&scan.source).map_err(|e| self.df(e))?;
                let mut stream = if let Some(windowed) = provider.downcast_ref::<WindowedTable>() {
                    self.windowed(windowed)?
                } else if let Some(table) = provider.downcast_ref::<StreamTable>() {
                    if self.sources.is_lookup(&table.name) {
                        return Err(self.lookup_outside_join(&table.name));
                    }
                    let node = self.sources.source_node(self.dataflow, &table.name, self.location)?;
                    let schema = DFSchema::try_from(self.dataflow.schema(node).as_ref().clone()).map_err(|e| self.df(e))?;
                    let time_column = self.source_time_column(&table.name, &schema);
                    Stream {
                        node,
                        schema: Arc::new(schema),
                        window: None,
                        event_time: self.sources.has_event_time(&table.name),
                        time_column,
                    }
                } else {
                    return Err(self.err(format!(
                        "`{}` is not a streaming table: declare it with CREATE TABLE … WITH (connector = …)",
                        scan.table_name
                    )));
                };
                if let Some(projection) = &scan.projection {
                    let input = arrow_schema(&stream.schema);
                    let exprs: Vec<Arc<dyn PhysicalExpr>> = projection
                        .iter()
                        .map(|i| Arc::new(PhysicalColumn::new(input.field(*i).name(), *i)) as Arc<dyn PhysicalExpr>)
                        .collect();
                    let window = stream.window.map(|w| WindowColumns {
                        session: w.session,
                        start: w.start.and_then(|s| projection.iter().position(|i| *i == s)),
                        end: w.end.and_then(|e| projection.iter().position(|i| *i == e)),
                    });
                    let schema = Arc::new(input.project(projection).map_err(|e| self.df(e.into()))?);
                    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                    let node = self.operator(
                        "project",
                        format!("columns {}", names.join(", ")),
                        Box::new(ProjectionOperator::new(exprs, schema)),
                        vec![stream.node],
                    )?;
                    stream = Stream {
                        node,
                        schema: scan.projected_schema.clone(),
                        window,
                        event_time: stream.event_time,
                        time_column: stream
                            .time_column
                            .and_then(|t| projection.iter().position(|i| *i == t)),
                    };
                } else {
                    stream.schema = scan.projected_schema.clone();
                }
                if let Some(predicate) = datafusion::logical_expr::utils::conjunction(scan.filters.iter().cloned()) {
                    let physical = self.physical(&predicate, &stream.schema)?;
                    let node = self.operator(
                        "filter",
                        predicate.to_string(),
                        Box::new(FilterOperator::new(physical, arrow_schema(&stream.schema))),
                        vec![stream.node],
                    )?;
                    stream.node = node;
                }
                Ok(stream)
            }
            LogicalPlan::Projection(p) => {
                let input = self.translate(&p.input)?;
                let mut exprs = p
                    .expr
                    .iter()
                    .map(|e| self.physical(e, &input.schema))
                    .collect::<Result<Vec<_>>>()?;
                if self.dataflow.mode(input.node).is_updating() {
                    // The change column follows the logical columns and passes through.
                    let at = input.schema.fields().len();
                    exprs.push(Arc::new(PhysicalColumn::new(CHANGE_COLUMN, at)));
                }
                let window = input.window.map(|w| {
                    let find = |idx: usize| {
                        let (q, f) = input.schema.qualified_field(idx);
                        p.expr.iter().position(|e| matches!(e.clone().unalias(), Expr::Column(c) if c.name == *f.name() && (c.relation.is_none() || c.relation.as_ref() == q)))
                    };
                    WindowColumns {
                        session: w.session,
                        end: w.end.and_then(find),
                        start: w.start.and_then(find),
                    }
                });
                let time_column = input.time_column.and_then(|t| {
                    let (q, f) = input.schema.qualified_field(t);
                    p.expr.iter().position(|e| matches!(e.clone().unalias(), Expr::Column(c) if c.name == *f.name() && (c.relation.is_none() || c.relation.as_ref() == q)))
                });
                let names: Vec<String> = p.expr.iter().map(|e| e.to_string()).collect();
                let node = self.operator(
                    "project",
                    names.join(", "),
                    Box::new(ProjectionOperator::new(exprs, self.physical_schema(&input, &p.schema))),
                    vec![input.node],
                )?;
                Ok(Stream {
                    node,
                    schema: p.schema.clone(),
                    window,
                    event_time: input.event_time,
                    time_column,
                })
            }
            LogicalPlan::Filter(f) => {
                if let Some(ranked) = self.rank_filter(f)? {
                    return Ok(ranked);
                }
                let input = self.translate(&f.input)?;
                let predicate = self.physical(&f.predicate, &input.schema)?;
                let node = self.operator(
                    "filter",
                    f.predicate.to_string(),
                    Box::new(FilterOperator::new(predicate, self.physical_schema(&input, &input.schema))),
                    vec![input.node],
                )?;
                Ok(Stream { node, ..input })
            }
            LogicalPlan::SubqueryAlias(a) => {
                let input = self.translate(&a.input)?;
                Ok(Stream {
                    schema: a.schema.clone(),
                    ..input
                })
            }
            LogicalPlan::Aggregate(agg) => self.aggregate(agg),
            LogicalPlan::Union(u) => {
                let inputs = u.inputs.iter().map(|i| self.translate(i)).collect::<Result<Vec<_>>>()?;
                let schema = match inputs.iter().find(|i| self.dataflow.mode(i.node).is_updating()) {
                    Some(updating) => self.physical_schema(updating, &u.schema),
                    None => arrow_schema(&u.schema),
                };
                let node = self.operator(
                    "union",
                    format!("{} inputs", inputs.len()),
                    Box::new(UnionOperator::new(schema)),
                    inputs.iter().map(|s| s.node).collect(),
                )?;
                Ok(Stream {
                    node,
                    schema: u.schema.clone(),
                    window: None,
                    event_time: inputs.iter().all(|s| s.event_time),
                    time_column: None,
                })
            }
            LogicalPlan::Join(join) => self.join(join),
            LogicalPlan::Sort(_) => Err(self.err("ORDER BY has no meaning on an unbounded stream; sort in the sink's readers")),
            LogicalPlan::Limit(_) => Err(self.err("LIMIT is not supported in streaming queries")),
            LogicalPlan::Window(w) => match self.rank_window(w)? {
                Some(ranked) => Ok(ranked),
                None => Err(self.err("OVER (…) window functions are supported in streaming queries only as ROW_NUMBER() filtered by `rn <= N` or `rn = 1` (Top-N and deduplication); for aggregates over time use TUMBLE, HOP or SESSION")),
            },
            LogicalPlan::Distinct(_) => Err(self.err("SELECT DISTINCT is not supported in streaming queries; GROUP BY a window instead")),
            other => Err(self.err(format!(
                "{} is not supported in streaming queries",
                other.display().to_string().split(':').next().unwrap_or("this query")
            ))),
        }
    }

    fn windowed(&mut self, windowed: &WindowedTable) -> Result<Stream> {
        let input = self.relation(&windowed.input)?;
        let input_schema = arrow_schema(&input.schema);
        let time_index = input_schema.index_of(&windowed.time_column).map_err(|_| {
            self.err(format!(
                "`{}` has no column `{}`",
                windowed.input, windowed.time_column
            ))
        })?;
        let (name, kind, op): (&str, WindowKind, Box<dyn laketide_engine::Operator>) =
            match &windowed.kind {
                WindowKind::Tumble { size } => (
                    "tumble",
                    windowed.kind.clone(),
                    Box::new(self.sliding_assign(
                        SlidingWindow::tumbling(*size)?,
                        &input,
                        time_index,
                    )?),
                ),
                WindowKind::Hop { slide, size } => (
                    "hop",
                    windowed.kind.clone(),
                    Box::new(self.sliding_assign(
                        SlidingWindow::hopping(*slide, *size)?,
                        &input,
                        time_index,
                    )?),
                ),
                WindowKind::Session { gap, keys } => {
                    if !input.event_time {
                        return Err(self.err(format!(
                            "SESSION needs event time: declare WATERMARK FOR {} AS … on `{}`",
                            windowed.time_column, windowed.input
                        )));
                    }
                    let (keys, indices) = self.session_keys(windowed, keys, &input_schema)?;
                    (
                        "session",
                        WindowKind::Session { gap: *gap, keys },
                        Box::new(SessionAssign::new(
                            &input_schema,
                            time_index,
                            *gap,
                            indices,
                        )?),
                    )
                }
            };
        let output = op.output_schema();
        let node = self.operator(
            name,
            format!("{} on {}", kind.describe(), windowed.time_column),
            op,
            vec![input.node],
        )?;
        let n = output.fields().len();
        let schema = DFSchema::try_from_qualified_schema(windowed.input.as_str(), output.as_ref())
            .map_err(|e| self.df(e))?;
        Ok(Stream {
            node,
            schema: Arc::new(schema),
            event_time: input.event_time,
            window: Some(WindowColumns {
                session: matches!(kind, WindowKind::Session { .. }),
                start: Some(n - 2),
                end: Some(n - 1),
            }),
            // The input's columns come first, unchanged.
            time_column: input.time_column,
        })
    }

    /// Window assignment for TUMBLE and HOP: by event time, or by processing time when the
    /// input has no WATERMARK.
    fn sliding_assign(
        &self,
        window: SlidingWindow,
        input: &Stream,
        time_index: usize,
    ) -> Result<WindowAssign> {
        let assign = WindowAssign::new(window, &arrow_schema(&input.schema), time_index)?;
        Ok(if input.event_time {
            assign
        } else {
            assign.by_processing_time()
        })
    }

    /// The stream of a named table or view (the first argument of a window function).
    pub(crate) fn relation(&mut self, name: &str) -> Result<Stream> {
        if let Some(plan) = self.sources.view_plan(name) {
            let plan = self.ctx.state().optimize(&plan).map_err(|e| self.df(e))?;
            return self.translate(&plan);
        }
        if self.sources.is_lookup(name) {
            return Err(self.lookup_outside_join(name));
        }
        let node = self
            .sources
            .source_node(self.dataflow, name, self.location)?;
        let schema = DFSchema::try_from_qualified_schema(name, self.dataflow.schema(node).as_ref())
            .map_err(|e| self.df(e))?;
        let time_column = self.source_time_column(name, &schema);
        Ok(Stream {
            node,
            schema: Arc::new(schema),
            window: None,
            event_time: self.sources.has_event_time(name),
            time_column,
        })
    }

    /// The position of source table `name`'s WATERMARK column in `schema` (its rows).
    fn source_time_column(&self, name: &str, schema: &DFSchema) -> Option<usize> {
        let column = self.sources.event_time_column(name)?;
        schema.fields().iter().position(|f| *f.name() == column)
    }
}
