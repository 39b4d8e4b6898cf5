//! The DataFusion session used for planning streaming queries.

use std::sync::Arc;

use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionContext;
use datafusion::optimizer::{Optimizer, OptimizerRule};
use datafusion::prelude::SessionConfig;

use crate::window_functions::{KnownRelations, WindowFunction};

/// Optimizer rules that rewrite plans into shapes a streaming dataflow cannot run (a single
/// `COUNT(DISTINCT …)` becomes two aggregates, and only the first would be windowed).
const EXCLUDED_RULES: &[&str] = &["single_distinct_aggregation_to_group_by"];

/// A session with the window table functions registered and streaming-safe optimizer rules.
pub fn planning_context(relations: &KnownRelations) -> SessionContext {
    let rules: Vec<Arc<dyn OptimizerRule + Send + Sync>> = Optimizer::new()
        .rules
        .into_iter()
        .filter(|r| !EXCLUDED_RULES.contains(&r.name()))
        .collect();
    let config = SessionConfig::new()
        .with_information_schema(false)
        .set_bool("datafusion.sql_parser.collect_spans", true);
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_optimizer_rules(rules)
        .build();
    let ctx = SessionContext::new_with_state(state);
    ctx.register_udf(crate::proctime::ProcTime::udf());
    // DataFusion looks table functions up by their name as written: register the usual cases.
    for (name, function) in WindowFunction::all(relations) {
        let capitalized = format!("{}{}", name[..1].to_ascii_uppercase(), &name[1..]);
        for spelling in [name.to_string(), name.to_ascii_uppercase(), capitalized] {
            ctx.register_udtf(&spelling, function.clone());
        }
    }
    ctx
}
