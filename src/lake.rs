//! The lake: Delta tables under a root directory, registered by name for ad-hoc queries.

use std::path::Path;

use datafusion::prelude::SessionContext;

use crate::error::{CliError, Result};

/// Registers every Delta table directly under `root` (a directory holding `_delta_log`) in
/// `ctx`, under its directory name. Returns the names, sorted.
pub async fn register_lake(ctx: &SessionContext, root: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CliError::Usage(format!(
                "the lake {} does not exist yet; run a pipeline first or pass --lake DIR",
                root.display()
            )));
        }
        Err(e) => {
            return Err(CliError::io(
                format!("listing the lake {}", root.display()),
                e,
            ));
        }
    };
    for entry in entries {
        let entry =
            entry.map_err(|e| CliError::io(format!("listing the lake {}", root.display()), e))?;
        let path = entry.path();
        if !path.join("_delta_log").is_dir() {
            continue;
        }
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        register_table(ctx, &name, &path, None).await?;
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// Registers the Delta table at `path` as `name`, at `version` if given (time travel).
pub async fn register_table(
    ctx: &SessionContext,
    name: &str,
    path: &Path,
    version: Option<u64>,
) -> Result<()> {
    let delta = |context: String| move |source| CliError::Delta { context, source };
    let url = deltalake::ensure_table_uri(path.to_string_lossy())
        .map_err(delta(format!("locating {}", path.display())))?;
    let mut table = deltalake::open_table(url)
        .await
        .map_err(delta(format!("opening Delta table {}", path.display())))?;
    if let Some(v) = version {
        table
            .load_version(v)
            .await
            .map_err(delta(format!("loading version {v} of {}", path.display())))?;
    }
    let provider = table.table_provider().await?;
    ctx.register_table(name, provider)?;
    Ok(())
}

/// A session for ad-hoc queries.
pub fn query_context() -> SessionContext {
    SessionContext::new()
}
