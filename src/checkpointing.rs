//! How `laketide run` checkpoints: where the state lives, how often, and how a run recovers.

use std::path::Path;
use std::time::Duration;

use laketide_engine::checkpoint::{CheckpointSettings, Recovery};
use laketide_sql::PlannedPipeline;

use crate::error::{CliError, Result};

/// The checkpoint options of `laketide run`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckpointArgs {
    /// Where checkpoints are kept: a directory or s3://bucket/prefix. Default: a folder
    /// `_laketide_state/<pipeline>` beside the pipeline's first Delta or filesystem table, or
    /// `.laketide_state/<pipeline>` beside the pipeline file when it writes no lake table.
    #[arg(long, value_name = "DIR|URL")]
    pub state: Option<String>,
    /// Time between checkpoints, e.g. 10s, 500ms, 1m. Default: the pipeline's
    /// `SET checkpoint_interval = '…'`, or 10s.
    #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
    pub checkpoint_interval: Option<Duration>,
    /// Run without checkpoints: nothing is resumed, and a stop flushes open windows.
    #[arg(long, conflicts_with_all = ["from_scratch", "keep_positions", "state"])]
    pub no_checkpoints: bool,
    /// Ignore the saved state and start over (reading sources from their start position).
    #[arg(long, conflicts_with = "keep_positions")]
    pub from_scratch: bool,
    /// Resume reading where the last checkpoint stopped but drop its window state (for a
    /// changed pipeline whose state no longer fits).
    #[arg(long)]
    pub keep_positions: bool,
}

/// Time between checkpoints unless the pipeline or the command line says otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

fn parse_interval(text: &str) -> std::result::Result<Duration, String> {
    match laketide_connectors::parse_duration(text) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "`{text}` is not a duration such as 10s, 500ms or 1m"
        )),
    }
}

/// The default state location of the pipeline in `file`.
fn default_state(file: &Path, planned: &PlannedPipeline, name: &str) -> String {
    if let Some(table) = planned.lake_paths.first() {
        let table = table.trim_end_matches('/');
        let parent = match table.rsplit_once('/') {
            // A table that is a whole bucket (`s3://bucket`): the state goes inside it (Delta
            // leaves folders that start with `_` alone).
            Some((parent, _)) if parent.ends_with(":/") => table,
            Some((parent, _)) if !parent.is_empty() => parent,
            _ => ".",
        };
        return format!("{parent}/_laketide_state/{name}");
    }
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.join(".laketide_state").join(name).display().to_string()
}

/// The checkpoint settings of a run of `file`, or `None` with `--no-checkpoints`.
pub fn settings(
    args: &CheckpointArgs,
    file: &Path,
    planned: &PlannedPipeline,
) -> Result<Option<CheckpointSettings>> {
    if args.no_checkpoints {
        return Ok(None);
    }
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| CliError::Usage(format!("{} has no file name", file.display())))?;
    let location = args
        .state
        .clone()
        .unwrap_or_else(|| default_state(file, planned, &name));
    let store = laketide_connectors::state_store::open_checkpoint_store(&location)?;
    let recovery = if args.from_scratch {
        Recovery::FromScratch
    } else if args.keep_positions {
        Recovery::KeepSourcePositions
    } else {
        Recovery::Resume
    };
    // Sinks name their commits after the pipeline and its state location, so two pipelines
    // with one file name but their own state never take each other's commits for theirs.
    let pipeline_name = format!("{name}-{:08x}", crc32fast::hash(location.as_bytes()));
    Ok(Some(CheckpointSettings {
        store,
        interval: args
            .checkpoint_interval
            .or(planned.settings.checkpoint_interval)
            .unwrap_or(DEFAULT_INTERVAL),
        pipeline_name,
        fingerprint: format!(
            "{:08x}",
            crc32fast::hash(planned.dataflow.explain().as_bytes())
        ),
        recovery,
        incremental: true,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn planned(table: &str) -> PlannedPipeline {
        let sql = format!(
            "CREATE TABLE e (id BIGINT) WITH (connector = 'file', path = 'in', mode = 'once');
             CREATE TABLE t WITH (connector = 'delta', path = '{table}');
             INSERT INTO t SELECT id FROM e;"
        );
        laketide_sql::plan_script(&laketide_sql::parse_script(&sql).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_default_state_lives_beside_the_first_lake_table() {
        let file = Path::new("pipelines/p.sql");
        for (table, state) in [
            ("lake/t", "lake/_laketide_state/p"),
            ("t", "./_laketide_state/p"),
            ("s3://bucket/lake/t/", "s3://bucket/lake/_laketide_state/p"),
            ("s3://bucket/t", "s3://bucket/_laketide_state/p"),
            ("s3://bucket", "s3://bucket/_laketide_state/p"),
        ] {
            assert_eq!(default_state(file, &planned(table).await, "p"), state);
        }
    }
}
