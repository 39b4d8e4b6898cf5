//! `laketide lake optimize` and `laketide lake vacuum`: Delta table maintenance, on a local
//! lake or an `s3://` one.

use std::num::NonZeroU64;
use std::time::Duration;

use deltalake::DeltaTable;
use deltalake::kernel::schema::partitions::{FilterOp, FilterValue};
use laketide_connectors::storage::StorageConfig;

use crate::error::{CliError, Result};

/// The location of `table`: a path or URL as given, or a table name under `lake`.
pub fn locate(table: &str, lake: &str) -> String {
    if table.contains('/') {
        table.to_string()
    } else {
        format!("{}/{table}", lake.trim_end_matches('/'))
    }
}

async fn open(location: &str) -> Result<DeltaTable> {
    let delta = |context: String| move |source| CliError::Delta { context, source };
    let url =
        deltalake::ensure_table_uri(location).map_err(delta(format!("locating {location}")))?;
    deltalake::open_table_with_storage_options(url, StorageConfig::default().storage_options())
        .await
        .map_err(delta(format!("opening Delta table {location}")))
}

/// Compacts the small files of a table (of the partitions matching `partitions`, given as
/// `column=value`) into files of about `target_size` bytes.
pub async fn optimize(
    location: &str,
    target_size: Option<u64>,
    partitions: &[String],
) -> Result<String> {
    let table = open(location).await?;
    let mut filters = Vec::with_capacity(partitions.len());
    for p in partitions {
        let (column, value) = p
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--partition takes column=value, not `{p}`")))?;
        filters.push((
            column.trim(),
            FilterOp::Eq,
            FilterValue::Scalar(value.trim()),
        ));
    }
    let mut builder = table.optimize().with_filters(&filters);
    if let Some(size) = target_size.and_then(NonZeroU64::new) {
        builder = builder.with_target_size(size);
    }
    let (_, metrics) = builder.await.map_err(|source| CliError::Delta {
        context: format!("optimizing {location}"),
        source,
    })?;
    Ok(format!(
        "optimized {location}: {} files compacted into {} ({} partitions, {} files left as they were)",
        metrics.num_files_removed,
        metrics.num_files_added,
        metrics.partitions_optimized,
        metrics.total_files_skipped
    ))
}

/// Deletes the files a table no longer references that are older than `retain`.
pub async fn vacuum(location: &str, retain: Duration, dry_run: bool) -> Result<String> {
    let table = open(location).await?;
    let retain = chrono::Duration::from_std(retain)
        .map_err(|_| CliError::Usage("the retention period is too long".into()))?;
    let (_, metrics) = table
        .vacuum()
        .with_retention_period(retain)
        .with_enforce_retention_duration(false)
        .with_dry_run(dry_run)
        .await
        .map_err(|source| CliError::Delta {
            context: format!("vacuuming {location}"),
            source,
        })?;
    let mut out = if dry_run {
        format!(
            "vacuum {location} (dry run): {} files would be deleted",
            metrics.files_deleted.len()
        )
    } else {
        format!(
            "vacuumed {location}: {} files deleted",
            metrics.files_deleted.len()
        )
    };
    for f in &metrics.files_deleted {
        out.push_str(&format!("\n  {f}"));
    }
    Ok(out)
}
