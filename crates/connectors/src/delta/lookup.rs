//! A Delta table read by a lookup join as a side input: its rows are loaded into memory at
//! the first lookup, indexed by the join's key columns, and loaded again when the table has a
//! new version (checked every `lookup.reload_interval`), so that the join sees what the
//! table holds now (a dimension table kept current by another pipeline's upserts).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use laketide_engine::{EngineError, LookupTable, MemoryLookupTable, Result};
use tokio::sync::Mutex;

use crate::error::ConnectorError;
use crate::options::Options;
use crate::storage::StorageConfig;

/// The option keys of a Delta lookup table.
pub const DELTA_LOOKUP_OPTIONS: &[&str] = &[
    "path",
    "primary_key",
    "lookup.reload_interval",
    "endpoint",
    "region",
    "allow_http",
];

/// How often a Delta lookup table checks for a new version by default.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// What was loaded, and when the table was last checked.
#[derive(Default)]
struct Loaded {
    table: Option<DeltaTable>,
    version: Option<deltalake::kernel::Version>,
    checked_at: Option<Instant>,
}

/// A Delta side input; see the module docs.
pub struct DeltaLookup {
    name: String,
    path: String,
    storage: HashMap<String, String>,
    reload_interval: Duration,
    rows: MemoryLookupTable,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for DeltaLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaLookup")
            .field("path", &self.path)
            .finish()
    }
}

impl DeltaLookup {
    /// The side input `name` reading the Delta table its options name, as rows of `schema`
    /// (columns by name, cast to the declared types), looked up by `key_columns`. Validates
    /// the options; does no I/O.
    pub fn new(
        name: &str,
        mut options: Options,
        schema: SchemaRef,
        key_columns: Vec<usize>,
    ) -> std::result::Result<Self, ConnectorError> {
        let path = options.take_required("path", "delta")?;
        // A `PRIMARY KEY` is informational here: lookups go by the join's columns.
        let _ = options.take("primary_key");
        let reload_interval =
            (options.take_duration("lookup.reload_interval")?).unwrap_or(DEFAULT_RELOAD_INTERVAL);
        let storage = StorageConfig::from_options(&mut options)?.storage_options();
        options.finish("delta lookup", DELTA_LOOKUP_OPTIONS)?;
        Ok(DeltaLookup {
            name: name.to_string(),
            path,
            storage,
            reload_interval,
            rows: MemoryLookupTable::new(name, schema, key_columns)?,
            loaded: Mutex::new(Loaded::default()),
        })
    }

    fn error(&self, what: &str, e: deltalake::DeltaTableError) -> EngineError {
        ConnectorError::delta(
            format!("{what} Delta table `{}` at {}", self.name, self.path),
            e,
        )
        .into()
    }

    /// The table at its latest version (opened the first time).
    async fn latest(&self, loaded: &mut Loaded) -> Result<()> {
        match &mut loaded.table {
            Some(table) => table
                .update_incremental(None)
                .await
                .map_err(|e| self.error("reading", e)),
            None => {
                let url = deltalake::ensure_table_uri(&self.path)
                    .map_err(|e| self.error("locating", e))?;
                let table = deltalake::open_table_with_storage_options(url, self.storage.clone())
                    .await
                    .map_err(|e| self.error("opening", e))?;
                loaded.table = Some(table);
                Ok(())
            }
        }
    }

    /// Every row of `table`, as the declared columns.
    async fn read(&self, table: &DeltaTable) -> Result<RecordBatch> {
        let ctx = SessionContext::new();
        table
            .update_datafusion_session(&ctx.state())
            .map_err(|e| self.error("reading", e))?;
        let provider = table.table_provider().await?;
        let batches = ctx.read_table(provider)?.collect().await?;
        let schema = LookupTable::schema(&self.rows);
        let mut converted = Vec::with_capacity(batches.len());
        for batch in batches {
            let columns = (schema.fields().iter())
                .map(|f| {
                    let column = batch.column_by_name(f.name()).ok_or_else(|| {
                        EngineError::User(format!(
                            "lookup table `{}`: the Delta table at {} has no column `{}`",
                            self.name,
                            self.path,
                            f.name()
                        ))
                    })?;
                    Ok(cast(column, f.data_type())?)
                })
                .collect::<Result<Vec<_>>>()?;
            converted.push(RecordBatch::try_new(schema.clone(), columns)?);
        }
        Ok(concat_batches(&schema, &converted)?)
    }

    /// Loads the rows if the table has a version not loaded yet (checked at most every
    /// reload interval).
    async fn refresh(&self) -> Result<()> {
        let mut loaded = self.loaded.lock().await;
        if loaded
            .checked_at
            .is_some_and(|at| at.elapsed() < self.reload_interval)
        {
            return Ok(());
        }
        self.latest(&mut loaded).await?;
        let table = loaded.table.as_ref().expect("opened above");
        let version = table.version();
        if version != loaded.version || loaded.checked_at.is_none() {
            let rows = self.read(table).await?;
            tracing::info!(table = %self.name, version, rows = rows.num_rows(), "lookup table loaded");
            self.rows.replace(rows)?;
            loaded.version = version;
        }
        loaded.checked_at = Some(Instant::now());
        Ok(())
    }
}

#[async_trait]
impl LookupTable for DeltaLookup {
    fn schema(&self) -> SchemaRef {
        LookupTable::schema(&self.rows)
    }

    fn key_columns(&self) -> &[usize] {
        self.rows.key_columns()
    }

    fn describe(&self) -> String {
        format!(
            "delta {} in memory, reloaded on a new version (checked every {:?})",
            self.path, self.reload_interval
        )
    }

    async fn lookup(&self, keys: Vec<ArrayRef>) -> Result<RecordBatch> {
        self.refresh().await?;
        self.rows.get(&keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::{DeltaSink, DeltaSinkConfig};
    use datafusion::arrow::array::{AsArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use laketide_engine::Sink;
    use std::sync::Arc;

    fn options(pairs: &[(&str, &str)]) -> Options {
        Options::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    /// Appends rows (id, name) to the Delta table at `path` (a new version).
    async fn append(path: &str, ids: Vec<i64>, names: Vec<&str>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let config = DeltaSinkConfig::from_options(options(&[("path", path)])).unwrap();
        let mut sink = DeltaSink::new("dim", config);
        sink.open(schema.clone()).await.unwrap();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(names)),
            ],
        )
        .unwrap();
        sink.write_batch(batch).await.unwrap();
        sink.close().await.unwrap();
    }

    fn names(batch: &RecordBatch) -> Vec<String> {
        let mut names: Vec<String> = (batch.column(1).as_string::<i32>().iter())
            .map(|n| n.unwrap_or("NULL").to_string())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn loads_the_table_and_reloads_it_when_a_new_version_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dim").display().to_string();
        append(&path, vec![1, 2, 2], vec!["a", "b", "b2"]).await;
        // Declared columns: the key as text (cast from BIGINT), and the name.
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let reload = |every: &str| options(&[("path", &path), ("lookup.reload_interval", every)]);
        let table = DeltaLookup::new("dim", reload("0s"), schema.clone(), vec![0]).unwrap();
        let keys = || -> Vec<ArrayRef> { vec![Arc::new(StringArray::from(vec!["1", "2", "3"]))] };
        let found = table.lookup(keys()).await.unwrap();
        assert_eq!(names(&found), vec!["a", "b", "b2"]);
        append(&path, vec![3], vec!["c"]).await;
        let found = table.lookup(keys()).await.unwrap();
        assert_eq!(
            names(&found),
            vec!["a", "b", "b2", "c"],
            "the new version is read"
        );
        // With a long interval the loaded rows stay until it passes.
        let slow = DeltaLookup::new("dim", reload("1h"), schema.clone(), vec![0]).unwrap();
        assert_eq!(slow.lookup(keys()).await.unwrap().num_rows(), 4);
        append(&path, vec![1], vec!["a2"]).await;
        assert_eq!(slow.lookup(keys()).await.unwrap().num_rows(), 4);
        let ids = found.column(0).as_string::<i32>();
        assert!(ids.iter().all(|i| matches!(i, Some("1" | "2" | "3"))));
        let missing = Arc::new(Schema::new(vec![Field::new("nope", DataType::Utf8, true)]));
        let bad = DeltaLookup::new("dim", reload("0s"), missing, vec![0]).unwrap();
        let err = bad.lookup(keys()).await.unwrap_err();
        assert!(err.to_string().contains("has no column `nope`"), "{err}");
    }
}
