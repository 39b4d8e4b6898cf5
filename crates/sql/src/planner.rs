//! Plans a pipeline script into a dataflow: declares tables and views, plans each
//! `INSERT INTO … SELECT` with DataFusion, translates it, and attaches sinks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::compute::can_cast_types;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::view::ViewTable;
use datafusion::common::{Column, DFSchema, DFSchemaRef};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{DdlStatement, Expr, LogicalPlan, cast};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Query, Statement as SqlStatement};

use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use laketide_connectors::{
    LOOKUP_CONNECTORS, Options, build_lookup, build_sink, build_source, is_lookup_only,
};
use laketide_engine::operators::{DEFAULT_UPDATE_INTERVAL, ProjectionOperator, UnionOperator};
use laketide_engine::{
    CHANGE_COLUMN, Dataflow, LookupTable, NodeId, Sink, StreamMode, WatermarkStrategy,
    schema_with_change,
};

use crate::ddl::TableDef;
use crate::error::{Location, Result, SqlError, from_datafusion};
use crate::event_time::{EventTimeOptions, event_time_options};
use crate::script::{Script, Statement};
use crate::session::planning_context;
pub use crate::settings::{PipelineSettings, PlanOptions};
use crate::stream_table::StreamTable;
use crate::system_time::LookupUse;
use crate::translate::{Relations, Translator};
use crate::window_functions::KnownRelations;

pub use crate::event_time::DEFAULT_IDLE_TIMEOUT;

/// A declared table that queries read, validated: a source, or a table only lookup joins read.
struct SourceTable {
    def: TableDef,
    /// The rows the connector reads (the declared columns but a `PROCTIME()` one).
    schema: SchemaRef,
    /// Whether only lookup joins can read it (its connector is not a source).
    lookup_only: bool,
    watermark: Option<Arc<dyn PhysicalExpr>>,
    event_time: EventTimeOptions,
}

/// A planned pipeline, ready to run.
pub struct PlannedPipeline {
    /// The dataflow graph.
    pub dataflow: Dataflow,
    /// Whether every source is bounded (the run ends by itself).
    pub bounded: bool,
    /// The `path` of every Delta and filesystem sink, in sink-name order: the lake the pipeline
    /// writes (its default state directory lives beside these tables).
    pub lake_paths: Vec<String>,
    /// The script's `SET` statements.
    pub settings: PipelineSettings,
}

/// Declares tables and views and plans queries against them.
pub struct Planner {
    ctx: SessionContext,
    relations: KnownRelations,
    sources: BTreeMap<String, SourceTable>,
    sinks: BTreeMap<String, TableDef>,
    views: HashMap<String, LogicalPlan>,
}

impl Default for Planner {
    fn default() -> Self {
        Self::new()
    }
}

fn connector_error(def: &TableDef, e: laketide_connectors::ConnectorError) -> SqlError {
    let message = e.to_string();
    let location = def
        .options
        .iter()
        .find(|(k, _, _)| message.contains(&format!("`{k}`")))
        .map(|(_, _, l)| *l)
        .unwrap_or(def.location);
    SqlError::plan(location, format!("table `{}`: {message}", def.name))
}

impl Planner {
    /// A planner with nothing declared.
    pub fn new() -> Self {
        let relations: KnownRelations = Arc::new(Mutex::new(HashMap::new()));
        Planner {
            ctx: planning_context(&relations),
            relations,
            sources: BTreeMap::new(),
            sinks: BTreeMap::new(),
            views: HashMap::new(),
        }
    }

    /// The planning session (for tests and tools).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The table's connector name and its options without the ones the SQL layer reads.
    fn connector_options(def: &TableDef) -> Result<(String, Options)> {
        let connector = def.connector().ok_or_else(|| {
            SqlError::plan(
                def.location,
                format!("table `{}` needs WITH (connector = '…')", def.name),
            )
        })?;
        let options =
            Options::new(def.connector_option_pairs()).map_err(|e| connector_error(def, e))?;
        Ok((connector, options))
    }

    fn check_new_name(&self, name: &str, location: Location) -> Result<()> {
        if self.sources.contains_key(name)
            || self.sinks.contains_key(name)
            || self.views.contains_key(name)
        {
            return Err(SqlError::plan(
                location,
                format!("`{name}` is declared twice"),
            ));
        }
        Ok(())
    }

    /// Declares a table; `is_sink` says whether some INSERT writes it (else it is a source).
    pub fn declare_table(&mut self, def: &TableDef, is_sink: bool) -> Result<()> {
        self.check_new_name(&def.name, def.location)?;
        let (connector, options) = Self::connector_options(def)?;
        if is_sink {
            for key in ["idle_timeout", "max_future", "late_dead_letter_path"] {
                if def.option(key).is_some() {
                    return Err(SqlError::plan(
                        def.location,
                        format!("table `{}`: `{key}` applies to sources only", def.name),
                    ));
                }
            }
            if let Some(p) = &def.proctime {
                return Err(SqlError::plan(
                    def.location,
                    format!(
                        "table `{}`: column `{p}` is PROCTIME(), which only tables read from can have",
                        def.name
                    ),
                ));
            }
            if let Some(m) = def.metadata.first() {
                return Err(SqlError::plan(
                    def.location,
                    format!(
                        "table `{}`: column `{}` is METADATA, which only tables read from can have",
                        def.name, m.column
                    ),
                ));
            }
            build_sink(&def.name, &connector, options).map_err(|e| connector_error(def, e))?;
            if let Some(columns) = &def.columns {
                self.register_schema(
                    &def.name,
                    Arc::new(Schema::new(columns.clone())),
                    def.location,
                )?;
            }
            self.sinks.insert(def.name.clone(), def.clone());
            return Ok(());
        }
        let Some(columns) = &def.columns else {
            return Err(SqlError::plan(
                def.location,
                format!(
                    "table `{}` is read from, so it needs a column list: CREATE TABLE {} (col TYPE, …) WITH (…)",
                    def.name, def.name
                ),
            ));
        };
        let declared = Arc::new(Schema::new(columns.clone()));
        let schema = stored_schema(def, &declared);
        if is_lookup_only(&connector) {
            return self.declare_lookup_table(def, &connector, options, declared);
        }
        let event_time = event_time_options(def)?;
        build_source(
            &def.name,
            schema.clone(),
            &def.metadata,
            &connector,
            without_lookup_options(options),
            event_time.bound.clone(),
        )
        .map_err(|e| connector_error(def, e))?;
        let watermark = match &def.watermark {
            None => None,
            Some(w) => {
                let df_schema = DFSchema::try_from(schema.as_ref().clone())
                    .map_err(|e| from_datafusion(e, w.location))?;
                let expr = self
                    .ctx
                    .parse_sql_expr(&w.expr.to_string(), &df_schema)
                    .map_err(|e| from_datafusion(e, w.location))?;
                let physical = self
                    .ctx
                    .create_physical_expr(expr, &df_schema)
                    .map_err(|e| from_datafusion(e, w.location))?;
                let t = physical
                    .data_type(&schema)
                    .map_err(|e| from_datafusion(e, w.location))?;
                if !matches!(t, datafusion::arrow::datatypes::DataType::Timestamp(_, _)) {
                    return Err(SqlError::plan(
                        w.location,
                        format!("the WATERMARK expression is {t}, not a TIMESTAMP"),
                    ));
                }
                Some(physical)
            }
        };
        self.register_schema(&def.name, declared, def.location)?;
        self.sources.insert(
            def.name.clone(),
            SourceTable {
                def: def.clone(),
                schema,
                lookup_only: false,
                watermark,
                event_time,
            },
        );
        Ok(())
    }

    /// Declares a table only lookup joins read (`JOIN t FOR SYSTEM_TIME AS OF …`).
    fn declare_lookup_table(
        &mut self,
        def: &TableDef,
        connector: &str,
        options: Options,
        schema: SchemaRef,
    ) -> Result<()> {
        if let Some(w) = &def.watermark {
            return Err(SqlError::plan(
                w.location,
                format!(
                    "table `{}` is a lookup table ({connector}): it has no event time, so no WATERMARK",
                    def.name
                ),
            ));
        }
        if def.proctime.is_some() || !def.metadata.is_empty() {
            return Err(SqlError::plan(
                def.location,
                format!(
                    "table `{}` is a lookup table ({connector}): it has no PROCTIME() or METADATA columns",
                    def.name
                ),
            ));
        }
        let key = def.primary_key_columns();
        build_lookup(&def.name, schema.clone(), connector, options, &key)
            .map_err(|e| connector_error(def, e))?;
        self.register_schema(&def.name, schema.clone(), def.location)?;
        let event_time = event_time_options(def)?;
        self.sources.insert(
            def.name.clone(),
            SourceTable {
                def: def.clone(),
                schema,
                lookup_only: true,
                watermark: None,
                event_time,
            },
        );
        Ok(())
    }

    /// Checks a `FOR SYSTEM_TIME AS OF` of the script: a declared table that lookups can read,
    /// at processing time.
    pub fn check_lookup_use(&self, lookup: &LookupUse) -> Result<()> {
        let Some(table) = self.sources.get(&lookup.table) else {
            return Err(SqlError::plan(
                lookup.location,
                format!(
                    "`{}` is not a declared table that queries read: declare it with CREATE TABLE {} (col TYPE, …, PRIMARY KEY (…)) WITH (connector = 'dynamodb' | 'delta' | 'file', …)",
                    lookup.table, lookup.table
                ),
            ));
        };
        let connector = table.def.connector().unwrap_or_default();
        if !LOOKUP_CONNECTORS.contains(&connector.as_str()) {
            return Err(SqlError::plan(
                lookup.location,
                format!(
                    "table `{}` ({connector}) cannot be read with FOR SYSTEM_TIME AS OF; lookup tables are: {}",
                    lookup.table,
                    LOOKUP_CONNECTORS.join(", ")
                ),
            ));
        }
        if let Some(column) = &lookup.time_column
            && !self
                .sources
                .values()
                .any(|t| t.def.proctime.as_ref() == Some(column))
        {
            return Err(SqlError::plan(
                lookup.location,
                format!(
                    "FOR SYSTEM_TIME AS OF `{column}`: lookups read the table as it is when a row arrives (processing time), and `{column}` is not a `{column} AS PROCTIME()` column of a table; declare one, or write FOR SYSTEM_TIME AS OF PROCTIME() (event-time temporal joins are not supported)"
                ),
            ));
        }
        Ok(())
    }

    fn register_schema(&self, name: &str, schema: SchemaRef, location: Location) -> Result<()> {
        self.ctx
            .register_table(name, Arc::new(StreamTable::new(name, schema.clone())))
            .map_err(|e| from_datafusion(e, location))?;
        self.relations
            .lock()
            .map_err(|_| SqlError::plan(location, "internal: relations lock poisoned"))?
            .insert(name.to_string(), schema);
        Ok(())
    }

    /// Declares a view.
    pub async fn declare_view(
        &mut self,
        name: &str,
        statement: &SqlStatement,
        location: Location,
    ) -> Result<()> {
        self.check_new_name(name, location)?;
        let plan = self
            .ctx
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(statement.clone())))
            .await
            .map_err(|e| from_datafusion(e, location))?;
        let LogicalPlan::Ddl(DdlStatement::CreateView(view)) = plan else {
            return Err(SqlError::plan(location, "expected CREATE VIEW"));
        };
        let input = view.input.as_ref().clone();
        let schema: SchemaRef = Arc::new(input.schema().as_arrow().clone());
        self.ctx
            .register_table(
                name,
                Arc::new(ViewTable::new(input.clone(), view.definition.clone())),
            )
            .map_err(|e| from_datafusion(e, location))?;
        self.relations
            .lock()
            .map_err(|_| SqlError::plan(location, "internal: relations lock poisoned"))?
            .insert(name.to_string(), schema);
        self.views.insert(name.to_string(), input);
        Ok(())
    }

    /// Plans and optimizes a query.
    pub async fn plan_query(&self, query: &Query, location: Location) -> Result<LogicalPlan> {
        let state = self.ctx.state();
        let plan = state
            .statement_to_plan(DfStatement::Statement(Box::new(SqlStatement::Query(
                Box::new(query.clone()),
            ))))
            .await
            .map_err(|e| from_datafusion(e, location))?;
        state
            .optimize(&plan)
            .map_err(|e| from_datafusion(e, location))
    }

    /// Starts a dataflow built from this planner's declarations.
    pub fn builder(&self) -> PipelineBuilder<'_> {
        PipelineBuilder {
            planner: self,
            state: BuilderState {
                planner: self,
                source_nodes: HashMap::new(),
                lookups: HashSet::new(),
                bounded: true,
            },
            dataflow: Dataflow::new(),
            lake_paths: Vec::new(),
            update_interval: DEFAULT_UPDATE_INTERVAL,
            state_ttl: None,
        }
    }
}

struct BuilderState<'p> {
    planner: &'p Planner,
    source_nodes: HashMap<String, NodeId>,
    /// The tables the script reads with `FOR SYSTEM_TIME AS OF`.
    lookups: HashSet<String>,
    bounded: bool,
}

fn lookup_only_error(name: &str, location: Location) -> SqlError {
    SqlError::plan(
        location,
        format!(
            "`{name}` is a lookup table: join a stream with it, `JOIN {name} FOR SYSTEM_TIME AS OF s.proc_time AS x ON s.key = x.key` (it must be the right side of the JOIN), instead of reading it as a stream"
        ),
    )
}

impl BuilderState<'_> {
    /// The source node followed, when the table has a `PROCTIME()` column, by a projection
    /// that puts the time each batch is read in it (the declared columns, in order).
    fn with_proctime(
        &self,
        dataflow: &mut Dataflow,
        table: &SourceTable,
        source: NodeId,
    ) -> Result<NodeId> {
        let Some(proctime) = &table.def.proctime else {
            return Ok(source);
        };
        let location = table.def.location;
        let declared = Arc::new(Schema::new(table.def.columns.clone().unwrap_or_default()));
        let df_schema = DFSchema::try_from(table.schema.as_ref().clone())
            .map_err(|e| from_datafusion(e, location))?;
        let ctx = &self.planner.ctx;
        let exprs = (declared.fields().iter())
            .map(|f| {
                let expr = match f.name() == proctime {
                    true => Expr::ScalarFunction(
                        datafusion::logical_expr::expr::ScalarFunction::new_udf(
                            Arc::new(crate::proctime::ProcTime::udf()),
                            vec![],
                        ),
                    ),
                    false => Expr::Column(Column::from_name(f.name())),
                };
                ctx.create_physical_expr(expr, &df_schema)
                    .map_err(|e| from_datafusion(e, location))
            })
            .collect::<Result<Vec<_>>>()?;
        dataflow
            .add_operator(
                "proctime",
                format!("{proctime} = PROCTIME()"),
                Box::new(ProjectionOperator::new(exprs, declared)),
                vec![source],
            )
            .map_err(|e| SqlError::plan(location, e.to_string()))
    }
}

impl Relations for BuilderState<'_> {
    fn source_node(
        &mut self,
        dataflow: &mut Dataflow,
        name: &str,
        location: Location,
    ) -> Result<NodeId> {
        if let Some(id) = self.source_nodes.get(name) {
            return Ok(*id);
        }
        let table = self.planner.sources.get(name).ok_or_else(|| {
            SqlError::plan(
                location,
                format!(
                    "`{name}` is written by an INSERT in this pipeline and cannot also be read from"
                ),
            )
        })?;
        if table.lookup_only {
            return Err(lookup_only_error(name, location));
        }
        let (connector, options) = Planner::connector_options(&table.def)?;
        let built = build_source(
            name,
            table.schema.clone(),
            &table.def.metadata,
            &connector,
            without_lookup_options(options),
            table.event_time.bound.clone(),
        )
        .map_err(|e| connector_error(&table.def, e))?;
        self.bounded &= built.bounded;
        let strategy = match &table.watermark {
            Some(expr) => WatermarkStrategy::EventTime {
                expr: expr.clone(),
                idle_timeout: table.event_time.idle_timeout,
            },
            None => WatermarkStrategy::ProcessingTime,
        };
        let mut description = built.description;
        match &table.def.watermark {
            Some(w) => description.push_str(&format!("; watermark {}", w.expr)),
            None => description.push_str("; processing time"),
        }
        let id = dataflow.add_source(name, description, built.source, strategy, built.bad_records);
        if let Some(path) = &table.event_time.late_dead_letter_path {
            dataflow
                .keep_late_rows(id, path.into())
                .map_err(|e| SqlError::plan(table.def.location, e.to_string()))?;
        }
        let id = self.with_proctime(dataflow, table, id)?;
        self.source_nodes.insert(name.to_string(), id);
        Ok(id)
    }

    fn view_plan(&self, name: &str) -> Option<LogicalPlan> {
        self.planner.views.get(name).cloned()
    }

    fn is_lookup(&self, name: &str) -> bool {
        self.lookups.contains(name)
            || self
                .planner
                .sources
                .get(name)
                .is_some_and(|t| t.lookup_only)
    }

    fn lookup_table(
        &mut self,
        name: &str,
        key: &[String],
        location: Location,
    ) -> Result<Arc<dyn LookupTable>> {
        let table = self.planner.sources.get(name).ok_or_else(|| {
            SqlError::plan(location, format!("`{name}` is not a declared lookup table"))
        })?;
        let (connector, options) = Planner::connector_options(&table.def)?;
        let schema = Arc::new(Schema::new(table.def.columns.clone().unwrap_or_default()));
        build_lookup(name, schema, &connector, options, key)
            .map_err(|e| SqlError::plan(location, format!("lookup table `{name}`: {e}")))
    }

    fn has_event_time(&self, name: &str) -> bool {
        self.planner
            .sources
            .get(name)
            .is_some_and(|t| t.watermark.is_some())
    }

    fn event_time_column(&self, name: &str) -> Option<String> {
        let table = self.planner.sources.get(name)?;
        table.watermark.as_ref()?;
        table.def.watermark.as_ref().map(|w| w.column.clone())
    }
}

/// Adds queries and sinks to one dataflow.
pub struct PipelineBuilder<'p> {
    planner: &'p Planner,
    state: BuilderState<'p>,
    dataflow: Dataflow,
    lake_paths: Vec<String>,
    update_interval: Duration,
    state_ttl: Option<Duration>,
}

/// A query's output inside a dataflow under construction.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    /// The node producing the rows.
    pub node: NodeId,
    /// Their logical schema.
    pub schema: DFSchemaRef,
    /// The statement's location.
    pub location: Location,
    /// Whether its rows are final or an updating result (then with the change column last).
    pub mode: StreamMode,
}

impl<'p> PipelineBuilder<'p> {
    /// Sets how often updating aggregates emit their changed results (default 1 s).
    pub fn with_update_interval(mut self, interval: Duration) -> Self {
        self.update_interval = interval;
        self
    }

    /// Sets how long keys of updating queries are kept without a change (default: always).
    pub fn with_state_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.state_ttl = ttl;
        self
    }

    /// Names the tables the queries read with `FOR SYSTEM_TIME AS OF` (lookup tables).
    pub fn with_lookups<'a>(mut self, tables: impl IntoIterator<Item = &'a LookupUse>) -> Self {
        self.state
            .lookups
            .extend(tables.into_iter().map(|l| l.table.clone()));
        self
    }

    /// Translates an optimized query plan into the dataflow.
    pub fn add_query(&mut self, plan: &LogicalPlan, location: Location) -> Result<QueryOutput> {
        let mut translator = Translator {
            ctx: &self.planner.ctx,
            dataflow: &mut self.dataflow,
            sources: &mut self.state,
            location,
            session_keys_hint: None,
            update_interval: self.update_interval,
            state_ttl: self.state_ttl,
            pending_rank: None,
        };
        let stream = translator.translate(plan)?;
        Ok(QueryOutput {
            mode: self.dataflow.mode(stream.node).clone(),
            node: stream.node,
            schema: stream.schema,
            location,
        })
    }

    /// Casts and renames a query's columns to a sink's declared columns (by position).
    fn conform(&mut self, output: &QueryOutput, def: &TableDef) -> Result<NodeId> {
        let Some(columns) = &def.columns else {
            return Ok(output.node);
        };
        let fields = output.schema.fields();
        if fields.len() != columns.len() {
            return Err(SqlError::plan(
                output.location,
                format!(
                    "the query produces {} columns but `{}` declares {}",
                    fields.len(),
                    def.name,
                    columns.len()
                ),
            ));
        }
        let mut exprs = Vec::with_capacity(columns.len());
        for (i, target) in columns.iter().enumerate() {
            let (q, f) = output.schema.qualified_field(i);
            if !can_cast_types(f.data_type(), target.data_type()) {
                return Err(SqlError::plan(
                    output.location,
                    format!(
                        "column {} (`{}`) of the query is {} and cannot be written to `{}`.`{}` of type {}",
                        i + 1,
                        f.name(),
                        f.data_type(),
                        def.name,
                        target.name(),
                        target.data_type()
                    ),
                ));
            }
            let column = Expr::Column(Column::from((q, f)));
            let e = cast(column, target.data_type().clone());
            exprs.push(
                self.planner
                    .ctx
                    .state()
                    .create_physical_expr(e, &output.schema)
                    .map_err(|e| from_datafusion(e, output.location))?,
            );
        }
        let mut schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|c| c.clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        if self.dataflow.mode(output.node).is_updating() {
            exprs.push(Arc::new(PhysicalColumn::new(CHANGE_COLUMN, fields.len())));
            schema = schema_with_change(&schema);
        }
        Ok(self.dataflow.add_operator(
            "conform",
            format!("cast to the columns of `{}`", def.name),
            Box::new(ProjectionOperator::new(exprs, schema)),
            vec![output.node],
        )?)
    }

    /// Adds the sink of table `sink` fed by `outputs` (several INSERTs into one table are
    /// merged with a union).
    pub fn add_table_sink(&mut self, sink: &str, outputs: &[QueryOutput]) -> Result<NodeId> {
        let location = outputs.first().map(|o| o.location).unwrap_or_default();
        let def = self.planner.sinks.get(sink).ok_or_else(|| {
            SqlError::plan(location, format!("no table named `{sink}`: declare it with CREATE TABLE {sink} WITH (connector = …)"))
        })?;
        let updating: Vec<&QueryOutput> = outputs
            .iter()
            .filter(|o| self.dataflow.mode(o.node).is_updating())
            .collect();
        if let Some(first) = updating.first()
            && updating.len() < outputs.len()
        {
            return Err(SqlError::plan(
                first.location,
                format!(
                    "this INSERT into `{sink}` produces an updating result and another one a final (append-only) result; one sink takes only one kind"
                ),
            ));
        }
        let location = updating.first().map_or(location, |o| o.location);
        let mut inputs = Vec::with_capacity(outputs.len());
        for o in outputs {
            inputs.push(self.conform(o, def)?);
        }
        let input = self.merge(sink, inputs, location)?;
        let (connector, options) = Planner::connector_options(def)?;
        if matches!(connector.as_str(), "delta" | "filesystem")
            && let Some((_, path, _)) = def.options.iter().find(|(k, _, _)| k == "path")
        {
            self.lake_paths.push(path.clone());
        }
        let built = build_sink(sink, &connector, options).map_err(|e| connector_error(def, e))?;
        let mode = self.dataflow.mode(input).clone();
        if let Err(why) = built.sink.accepts(&self.dataflow.schema(input), &mode) {
            return Err(SqlError::plan(
                location,
                updating_refused(sink, &connector, &why),
            ));
        }
        Ok(self
            .dataflow
            .add_sink(sink, built.description, built.sink, input)?)
    }

    fn merge(&mut self, sink: &str, inputs: Vec<NodeId>, location: Location) -> Result<NodeId> {
        if inputs.len() == 1 {
            return Ok(inputs[0]);
        }
        let first = self.dataflow.schema(inputs[0]);
        for i in &inputs[1..] {
            let other = self.dataflow.schema(*i);
            let types = |s: &Schema| {
                s.fields()
                    .iter()
                    .map(|f| f.data_type().clone())
                    .collect::<Vec<_>>()
            };
            if types(&first) != types(&other) {
                return Err(SqlError::plan(
                    location,
                    format!(
                        "the INSERT statements into `{sink}` produce different column types; make them agree"
                    ),
                ));
            }
        }
        let schema = Arc::new(Schema::new(
            first
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        Ok(self.dataflow.add_operator(
            "union",
            format!("{} INSERTs into `{sink}`", inputs.len()),
            Box::new(UnionOperator::new(schema)),
            inputs,
        )?)
    }

    /// Adds a sink that is not declared in SQL (tests, embedding).
    pub fn add_sink(
        &mut self,
        name: &str,
        description: &str,
        sink: Box<dyn Sink>,
        input: NodeId,
    ) -> Result<NodeId> {
        Ok(self.dataflow.add_sink(name, description, sink, input)?)
    }

    /// The finished pipeline.
    pub fn finish(self) -> PlannedPipeline {
        PlannedPipeline {
            dataflow: self.dataflow,
            bounded: self.state.bounded,
            lake_paths: self.lake_paths,
            settings: PipelineSettings::default(),
        }
    }
}

/// The rows a source's connector reads: the declared columns without a `PROCTIME()` one.
fn stored_schema(def: &TableDef, declared: &SchemaRef) -> SchemaRef {
    match &def.proctime {
        None => declared.clone(),
        Some(p) => Arc::new(Schema::new(
            (declared.fields().iter())
                .filter(|f| f.name() != p)
                .cloned()
                .collect::<Vec<_>>(),
        )),
    }
}

/// The options of a table read as a stream: the `lookup.*` options are for lookups only.
fn without_lookup_options(options: Options) -> Options {
    options.without_prefix("lookup.")
}

/// Why sink `sink` (of `connector`) refuses a query's result, with the ways out.
fn updating_refused(sink: &str, connector: &str, why: &str) -> String {
    format!(
        "the query into `{sink}` produces an updating result (a row per key that changes as input arrives, as from a GROUP BY without a window), and the {connector} sink cannot take it: {why}. Ways out: aggregate over a window (TUMBLE, HOP or SESSION) so that every result is final, or write to a sink that applies changes (delta or dynamodb with `primary_key` equal to the query's GROUP BY columns) or writes them as a changelog (filesystem, kinesis, webhook, console)"
    )
}

/// Plans a whole script: every `INSERT INTO` becomes part of one dataflow sharing sources.
pub async fn plan_script(script: &Script) -> Result<PlannedPipeline> {
    plan_script_with(script, &PlanOptions::default()).await
}

/// [`plan_script`] with options from the command line.
pub async fn plan_script_with(script: &Script, options: &PlanOptions) -> Result<PlannedPipeline> {
    let sinks = script.sink_names();
    let mut planner = Planner::new();
    let mut queries: Vec<(String, LogicalPlan, Location)> = Vec::new();
    let mut settings = PipelineSettings::default();
    for statement in &script.statements {
        match statement {
            Statement::Set {
                name,
                value,
                location,
            } => settings.set(name, value, *location)?,
            Statement::CreateTable(def) => {
                planner.declare_table(def, sinks.contains(def.name.as_str()))?
            }
            Statement::CreateView {
                name,
                statement,
                location,
            } => planner.declare_view(name, statement, *location).await?,
            Statement::Insert {
                sink,
                query,
                location,
            } => {
                if !planner.sinks.contains_key(sink) {
                    return Err(SqlError::plan(
                        *location,
                        format!(
                            "no table named `{sink}` is declared before this INSERT; declare it with CREATE TABLE {sink} WITH (connector = …)"
                        ),
                    ));
                }
                let plan = planner.plan_query(query, *location).await?;
                queries.push((sink.clone(), plan, *location));
            }
        }
    }
    if queries.is_empty() {
        return Err(SqlError::plan(
            Location { line: 1, column: 1 },
            "the script has no INSERT INTO statement: nothing to run",
        ));
    }
    let update_interval = options
        .update_interval
        .or(settings.update_interval)
        .unwrap_or(DEFAULT_UPDATE_INTERVAL);
    for lookup in &script.lookups {
        planner.check_lookup_use(lookup)?;
    }
    let mut builder = planner
        .builder()
        .with_update_interval(update_interval)
        .with_state_ttl(settings.state_ttl)
        .with_lookups(&script.lookups);
    let mut by_sink: BTreeMap<String, Vec<QueryOutput>> = BTreeMap::new();
    for (sink, plan, location) in &queries {
        let output = builder.add_query(plan, *location)?;
        by_sink.entry(sink.clone()).or_default().push(output);
    }
    for (sink, outputs) in &by_sink {
        builder.add_table_sink(sink, outputs)?;
    }
    let mut planned = builder.finish();
    planned.settings = settings;
    Ok(planned)
}
