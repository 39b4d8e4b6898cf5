//! Loading, planning and running a pipeline file: what `run`, `check` and `explain` share.

use std::path::Path;

use laketide_engine::{RunOptions, RunSummary};
use laketide_sql::{
    PlanOptions, PlannedPipeline, Script, parse_script, plan_script, plan_script_with,
};

use crate::error::{CliError, Result};

/// Reads and parses a pipeline file; errors name the file, line and column.
pub fn load(path: &Path) -> Result<Script> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::io(format!("reading {}", path.display()), e))?;
    parse_script(&text).map_err(|source| CliError::Sql {
        file: path.display().to_string(),
        source,
    })
}

/// Parses and plans a pipeline file into a dataflow (validating every table, option and
/// query) without touching any data; `options` come from the command line.
pub async fn plan_file(path: &Path, options: &PlanOptions) -> Result<PlannedPipeline> {
    let script = load(path)?;
    plan_script_with(&script, options)
        .await
        .map_err(|source| CliError::Sql {
            file: path.display().to_string(),
            source,
        })
}

/// Plans and runs SQL text until its sources finish or `options.stop` is cancelled.
pub async fn run_sql(sql: &str, options: RunOptions) -> Result<RunSummary> {
    let script = parse_script(sql)?;
    let planned = plan_script(&script).await?;
    Ok(laketide_engine::run(planned.dataflow, options).await?)
}
