//! Tables for ad-hoc queries: the Delta tables under a lake root, or the tables a pipeline file
//! declares.

use std::collections::HashMap;
use std::path::Path;

use datafusion::prelude::SessionContext;

use crate::error::{CliError, Result};

/// Registers every Delta table directly under `root` (a directory holding `_delta_log`) in
/// `ctx`, under its directory name, at its latest version or at the version `versions` gives
/// for it (time travel). Returns the names, sorted.
pub async fn register_lake(
    ctx: &SessionContext,
    root: &Path,
    versions: &HashMap<String, u64>,
) -> Result<Vec<String>> {
    let text = root.to_string_lossy();
    let mut names = if text.contains("://") {
        remote_tables(&text).await?
    } else {
        local_tables(root)?
    };
    names.sort();
    if let Some(missing) = versions.keys().find(|t| !names.contains(t)) {
        return Err(CliError::Usage(format!(
            "--at names `{missing}`, which is not a Delta table under {text}"
        )));
    }
    let storage = laketide_connectors::storage::StorageConfig::default().storage_options();
    for name in &names {
        let location = format!("{}/{name}", text.trim_end_matches('/'));
        register_location(
            ctx,
            name,
            &location,
            versions.get(name).copied(),
            storage.clone(),
        )
        .await?;
    }
    Ok(names)
}

/// The Delta tables (folders with a `_delta_log`) directly under an `s3://` lake root.
async fn remote_tables(root: &str) -> Result<Vec<String>> {
    let delta = |source| CliError::Delta {
        context: format!("listing the lake {root}"),
        source,
    };
    let url = deltalake::ensure_table_uri(root).map_err(delta)?;
    let storage = laketide_connectors::storage::StorageConfig::default().storage_options();
    let store = deltalake::DeltaTableBuilder::from_url(url)
        .map_err(delta)?
        .with_storage_options(storage)
        .build_storage()
        .map_err(delta)?
        .object_store(None);
    let list = |e: deltalake::ObjectStoreError| CliError::Delta {
        context: format!("listing the lake {root}"),
        source: e.into(),
    };
    let listing = store.list_with_delimiter(None).await.map_err(list)?;
    let mut names = Vec::new();
    for prefix in listing.common_prefixes {
        let log = prefix.clone().join("_delta_log");
        if !store
            .list_with_delimiter(Some(&log))
            .await
            .map_err(list)?
            .objects
            .is_empty()
            && let Some(name) = prefix.parts().next_back()
        {
            names.push(name.as_ref().to_string());
        }
    }
    Ok(names)
}

/// The Delta tables (folders with a `_delta_log`) directly under a local lake root.
fn local_tables(root: &Path) -> Result<Vec<String>> {
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
        names.push(name);
    }
    Ok(names)
}

/// Registers the Delta table at `path` as `name`, at `version` if given (time travel).
pub async fn register_table(
    ctx: &SessionContext,
    name: &str,
    path: &Path,
    version: Option<u64>,
) -> Result<()> {
    register_location(ctx, name, &path.to_string_lossy(), version, HashMap::new()).await
}

/// Registers the Delta table at `location` (a local path or `s3://…` URL) as `name`.
pub async fn register_location(
    ctx: &SessionContext,
    name: &str,
    location: &str,
    version: Option<u64>,
    storage: HashMap<String, String>,
) -> Result<()> {
    let delta = |context: String| move |source| CliError::Delta { context, source };
    let url =
        deltalake::ensure_table_uri(location).map_err(delta(format!("locating {location}")))?;
    let mut table = deltalake::open_table_with_storage_options(url, storage)
        .await
        .map_err(delta(format!("opening Delta table {location}")))?;
    if let Some(v) = version {
        table
            .load_version(v)
            .await
            .map_err(delta(format!("loading version {v} of {location}")))?;
    }
    let provider = table.table_provider().await?;
    ctx.register_table(name, provider)?;
    Ok(())
}

/// Registers the tables declared in a pipeline file: its sources as a snapshot of what they
/// hold now (read with the pipeline's own decoding rules), its `delta` sinks as Delta tables
/// and its `filesystem` sinks as listing tables. Sinks that hold nothing yet are skipped with a
/// note. Returns the registered names.
pub async fn register_pipeline(ctx: &SessionContext, file: &Path) -> Result<Vec<String>> {
    use datafusion::arrow::datatypes::Schema;
    use datafusion::datasource::MemTable;
    use laketide_connectors::storage::StorageConfig;
    use laketide_connectors::{Options, snapshot_source};
    use laketide_sql::Statement;

    let script = crate::pipeline::load(file)?;
    let sinks = script.sink_names();
    let mut names = Vec::new();
    for statement in &script.statements {
        let Statement::CreateTable(def) = statement else {
            continue;
        };
        let connector = def.connector().unwrap_or_default();
        let mut options = Options::new(def.connector_option_pairs())?;
        if !sinks.contains(def.name.as_str()) {
            let Some(columns) = &def.columns else {
                continue;
            };
            if connector == "kinesis" {
                eprintln!(
                    "note: `{}` reads a Kinesis stream, which has no snapshot to query; query the tables it feeds",
                    def.name
                );
                continue;
            }
            if laketide_connectors::is_lookup_only(&connector) {
                eprintln!(
                    "note: `{}` is a {connector} table read by key in lookup joins; it has no snapshot to query",
                    def.name
                );
                continue;
            }
            // A PROCTIME() column is the time a pipeline reads a row: a snapshot has none.
            let stored: Vec<_> = (columns.iter())
                .filter(|c| def.proctime.as_ref() != Some(c.name()))
                .cloned()
                .collect();
            let schema = std::sync::Arc::new(Schema::new(stored));
            let batches = snapshot_source(
                &def.name,
                schema.clone(),
                &def.metadata,
                &connector,
                options.without_prefix("lookup."),
            )
            .await?;
            ctx.register_table(
                def.name.as_str(),
                std::sync::Arc::new(MemTable::try_new(schema, vec![batches])?),
            )?;
            names.push(def.name.clone());
            continue;
        }
        let Some(path) = options.take("path") else {
            continue;
        };
        let path_ref = Path::new(&path);
        let remote = path.contains("://");
        match connector.as_str() {
            "delta" if remote || path_ref.join("_delta_log").is_dir() => {
                let storage = StorageConfig::from_options(&mut options)?.storage_options();
                match register_location(ctx, &def.name, &path, None, storage).await {
                    Ok(()) => {}
                    Err(CliError::Delta {
                        source: deltalake::DeltaTableError::NotATable(_),
                        ..
                    }) => {
                        eprintln!(
                            "note: `{}` has no data at {path} yet; run the pipeline first",
                            def.name
                        );
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            "filesystem"
                if (remote && {
                    let storage = StorageConfig::from_options(&mut options)?.storage_options();
                    register_object_store(ctx, &path, storage).await?
                }) || (path_ref.is_dir()
                    && std::fs::read_dir(path_ref).is_ok_and(|mut d| d.next().is_some())) =>
            {
                let format = options
                    .take("format")
                    .unwrap_or_else(|| "parquet".into())
                    .to_ascii_lowercase();
                // A prefix is read as a directory of files.
                let path = if remote {
                    format!("{}/", path.trim_end_matches('/'))
                } else {
                    path.clone()
                };
                match format.as_str() {
                    "json" => {
                        ctx.register_json(def.name.as_str(), &path, Default::default())
                            .await?
                    }
                    "csv" => {
                        ctx.register_csv(def.name.as_str(), &path, Default::default())
                            .await?
                    }
                    _ => {
                        ctx.register_parquet(def.name.as_str(), &path, Default::default())
                            .await?
                    }
                }
            }
            "delta" | "filesystem" => {
                eprintln!(
                    "note: `{}` has no data at {path} yet; run the pipeline first",
                    def.name
                );
                continue;
            }
            _ => continue,
        }
        names.push(def.name.clone());
    }
    names.sort();
    Ok(names)
}

/// Makes the bucket of `location` (`s3://bucket/prefix`) readable by the session; returns
/// whether any object exists under the prefix.
async fn register_object_store(
    ctx: &SessionContext,
    location: &str,
    storage: HashMap<String, String>,
) -> Result<bool> {
    let delta = |source| CliError::Delta {
        context: format!("opening {location}"),
        source,
    };
    let url = deltalake::ensure_table_uri(location).map_err(delta)?;
    let bucket = url::Url::parse(&format!(
        "{}://{}",
        url.scheme(),
        url.host_str().unwrap_or_default()
    ))
    .map_err(|e| CliError::Usage(format!("`{location}` is not a valid URL: {e}")))?;
    let store = deltalake::DeltaTableBuilder::from_url(bucket.clone())
        .map_err(delta)?
        .with_storage_options(storage)
        .build_storage()
        .map_err(delta)?
        .object_store(None);
    let prefix = deltalake::Path::from(url.path().trim_matches('/'));
    let listing = store
        .list_with_delimiter(Some(&prefix))
        .await
        .map_err(|e| CliError::Delta {
            context: format!("listing {location}"),
            source: e.into(),
        })?;
    let any = !listing.objects.is_empty() || !listing.common_prefixes.is_empty();
    ctx.register_object_store(&bucket, store);
    Ok(any)
}

/// A session for ad-hoc queries.
pub fn query_context() -> SessionContext {
    SessionContext::new()
}
