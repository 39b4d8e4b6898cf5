//! laketide's SQL layer: parses pipeline scripts (DataFusion's SQL plus `CREATE TABLE … WITH`,
//! `WATERMARK FOR` and the window table functions `TUMBLE`, `HOP`, `SESSION`), plans queries
//! with DataFusion, and translates the logical plans into the engine's dataflow.

pub mod ddl;
mod error;
mod event_time;
mod planner;
mod proctime;
mod script;
mod session;
mod settings;
mod stream_table;
mod system_time;
mod translate;
mod types;
pub mod window_functions;

pub use error::{Location, Result, SqlError};
pub use planner::{
    DEFAULT_IDLE_TIMEOUT, PipelineBuilder, PipelineSettings, PlanOptions, PlannedPipeline, Planner,
    QueryOutput, plan_script, plan_script_with,
};
pub use script::{Script, Statement, parse_query, parse_script};
pub use session::planning_context;
pub use system_time::LookupUse;
pub use types::arrow_type;
