//! The window table functions `TUMBLE`, `HOP` and `SESSION`. In a query they plan as a scan of
//! a [`WindowedTable`]: the input's columns plus `window_start` and `window_end`. The
//! translation into the dataflow replaces that scan with the input stream followed by a window
//! assignment operator.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::TableType;
use datafusion::physical_plan::ExecutionPlan;

use laketide_engine::operators::schema_with_window_columns;

/// Which window and its parameters (durations in nanoseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowKind {
    /// `TUMBLE(t, ts, size)`.
    Tumble { size: i64 },
    /// `HOP(t, ts, slide, size)`.
    Hop { slide: i64, size: i64 },
    /// `SESSION(t, ts, gap [, key …])`: sessions per key; without keys, per GROUP BY key.
    Session { gap: i64, keys: Vec<String> },
}

impl WindowKind {
    /// Human-readable form for `explain`.
    pub fn describe(&self) -> String {
        match self {
            WindowKind::Tumble { size } => format!("tumble size {}", human(*size)),
            WindowKind::Hop { slide, size } => {
                format!("hop slide {} size {}", human(*slide), human(*size))
            }
            WindowKind::Session { gap, keys } if keys.is_empty() => {
                format!("session gap {}", human(*gap))
            }
            WindowKind::Session { gap, keys } => {
                format!("session gap {} per ({})", human(*gap), keys.join(", "))
            }
        }
    }
}

fn human(nanos: i64) -> String {
    let units = [
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "min"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
    ];
    for (n, u) in units {
        if nanos % n == 0 {
            return format!("{}{u}", nanos / n);
        }
    }
    format!("{nanos}ns")
}

/// The relation produced by a window table function.
#[derive(Debug)]
pub struct WindowedTable {
    /// The windowed table or view.
    pub input: String,
    /// The event-time column of the input.
    pub time_column: String,
    /// The window.
    pub kind: WindowKind,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for WindowedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan_err!("window table functions run only in streaming pipelines (laketide run)")
    }
}

/// Schemas of the tables and views a window function may name, shared with the planner.
pub type KnownRelations = Arc<Mutex<HashMap<String, SchemaRef>>>;

/// One of `TUMBLE`, `HOP`, `SESSION`.
#[derive(Debug)]
pub struct WindowFunction {
    name: &'static str,
    relations: KnownRelations,
}

impl WindowFunction {
    /// The three window functions, by SQL name.
    pub fn all(relations: &KnownRelations) -> Vec<(&'static str, Arc<WindowFunction>)> {
        ["tumble", "hop", "session"]
            .into_iter()
            .map(|name| {
                (
                    name,
                    Arc::new(WindowFunction {
                        name,
                        relations: relations.clone(),
                    }),
                )
            })
            .collect()
    }

    fn usage(&self) -> &'static str {
        match self.name {
            "tumble" => "TUMBLE(table, time_column, INTERVAL 'size')",
            "hop" => "HOP(table, time_column, INTERVAL 'slide', INTERVAL 'size')",
            _ => "SESSION(table, time_column, INTERVAL 'gap' [, key_column …])",
        }
    }
}

fn column_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Column(c) if c.relation.is_none() => Some(c.name.clone()),
        Expr::Literal(ScalarValue::Utf8(Some(s)), _) => Some(s.clone()),
        _ => None,
    }
}

fn interval_nanos(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months == 0 => (v.days
            as i64)
            .checked_mul(86_400_000_000_000)?
            .checked_add(v.nanoseconds),
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => (v.days as i64)
            .checked_mul(86_400_000_000_000)?
            .checked_add(v.milliseconds as i64 * 1_000_000),
        _ => None,
    }
}

impl TableFunctionImpl for WindowFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let args = args.exprs();
        let usage = self.usage();
        let expected = if self.name == "hop" { 4 } else { 3 };
        if args.len() < expected || (self.name != "session" && args.len() != expected) {
            return plan_err!(
                "{} takes {expected} arguments: {usage}",
                self.name.to_uppercase()
            );
        }
        let Some(input) = column_name(&args[0]) else {
            return plan_err!("the first argument of {usage} must name a table or view");
        };
        let schema = {
            let relations = self.relations.lock().map_err(|_| {
                datafusion::error::DataFusionError::Internal("relations lock".into())
            })?;
            match relations.get(&input) {
                Some(s) => s.clone(),
                None => {
                    return plan_err!(
                        "{}: no table or view named `{input}`",
                        self.name.to_uppercase()
                    );
                }
            }
        };
        let Some(time_column) = column_name(&args[1]) else {
            return plan_err!("the second argument of {usage} must be a column");
        };
        let time_type = match schema.field_with_name(&time_column) {
            Ok(f) => f.data_type().clone(),
            Err(_) => return plan_err!("`{input}` has no column `{time_column}`"),
        };
        if !matches!(time_type, DataType::Timestamp(_, _)) {
            return plan_err!("the time column `{time_column}` is {time_type}, not a TIMESTAMP");
        }
        let interval = |i: usize| -> DfResult<i64> {
            match interval_nanos(&args[i]) {
                Some(n) if n > 0 => Ok(n),
                _ => plan_err!(
                    "argument {} of {usage} must be a positive INTERVAL of days or less, such as INTERVAL '1' MINUTE",
                    i + 1
                ),
            }
        };
        let kind = match self.name {
            "tumble" => WindowKind::Tumble { size: interval(2)? },
            "hop" => {
                let (slide, size) = (interval(2)?, interval(3)?);
                if slide > size {
                    return plan_err!(
                        "HOP slide is larger than its size; the arguments are (table, time_column, slide, size)"
                    );
                }
                WindowKind::Hop { slide, size }
            }
            _ => {
                let gap = interval(2)?;
                let mut keys = Vec::new();
                for a in &args[3..] {
                    match column_name(a) {
                        Some(k) if schema.field_with_name(&k).is_ok() => keys.push(k),
                        _ => {
                            return plan_err!("SESSION key arguments must be columns of `{input}`");
                        }
                    }
                }
                WindowKind::Session { gap, keys }
            }
        };
        for reserved in ["window_start", "window_end"] {
            if schema.field_with_name(reserved).is_ok() {
                return plan_err!(
                    "`{input}` already has a column `{reserved}`; rename it before windowing"
                );
            }
        }
        Ok(Arc::new(WindowedTable {
            input,
            time_column,
            kind,
            schema: schema_with_window_columns(&schema, &time_type),
        }))
    }
}
