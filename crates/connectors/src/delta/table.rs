//! Opening a Delta sink's table: created from the query's schema when absent, checked
//! against it when present.

use datafusion::arrow::datatypes::Schema;
use deltalake::DeltaTable;
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::protocol::SaveMode;

use laketide_engine::{EngineError, Result};

use super::config::DeltaSinkConfig;
use super::schema::check_table_schema;
use crate::error::ConnectorError;

/// A Delta error about sink `name`'s table, saying what was being done.
pub(crate) fn delta_error(
    name: &str,
    config: &DeltaSinkConfig,
    what: &str,
    e: deltalake::DeltaTableError,
) -> EngineError {
    ConnectorError::delta(format!("{what} Delta table `{name}` at {}", config.path), e).into()
}

/// Opens (or creates) the table of sink `name` for rows of `schema`. An existing table's
/// schema must fit, and its partition columns become `config.partition_by`.
pub(crate) async fn open_table(
    name: &str,
    config: &mut DeltaSinkConfig,
    schema: &Schema,
) -> Result<DeltaTable> {
    for p in config.partition_by.iter().chain(&config.primary_key) {
        if schema.field_with_name(p).is_err() {
            return Err(EngineError::User(format!(
                "column `{p}` (named in the options) is not a column of the query feeding `{name}`"
            )));
        }
    }
    let error = |what: &str, e| delta_error(name, config, what, e);
    let url = deltalake::ensure_table_uri(&config.path).map_err(|e| error("locating", e))?;
    let table =
        DeltaTable::try_from_url_with_storage_options(url, config.storage.storage_options())
            .await
            .map_err(|e| error("opening", e))?;
    if table.version().is_none() {
        let kernel_schema: StructType = schema.try_into_kernel().map_err(|e| {
            // The kernel's message carries a backtrace after its first line.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default().trim().to_string();
            EngineError::User(format!(
                "the query's schema cannot be stored in Delta: {first} (cast such columns in the SELECT, e.g. an INTERVAL to BIGINT seconds)"
            ))
        })?;
        return table
            .create()
            .with_columns(kernel_schema.fields().cloned())
            .with_partition_columns(config.partition_by.clone())
            .with_table_name(name.to_string())
            .with_save_mode(SaveMode::Ignore)
            .await
            .map_err(|e| error("creating", e));
    }
    let snapshot = table.snapshot().map_err(|e| error("reading", e))?;
    let existing: Schema = snapshot
        .schema()
        .as_ref()
        .try_into_arrow()
        .map_err(|e| EngineError::external("reading the Delta table's schema", e))?;
    check_table_schema(name, &existing, schema).map_err(EngineError::from)?;
    let partitions = snapshot.metadata().partition_columns().to_vec();
    if !config.partition_by.is_empty() && partitions != config.partition_by {
        return Err(EngineError::User(format!(
            "Delta table `{name}` is partitioned by ({}) but partition_by says ({})",
            partitions.join(", "),
            config.partition_by.join(", ")
        )));
    }
    config.partition_by = partitions;
    Ok(table)
}
