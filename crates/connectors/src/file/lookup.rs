//! Files (local or on S3) read by a lookup join as a side input: every row is loaded into
//! memory at the first lookup, indexed by the join's key columns, and loaded again every
//! `lookup.reload_interval` (if set), so that the join sees the files' current content.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use laketide_engine::{BadRecords, EngineError, LookupTable, MemoryLookupTable, Result};
use tokio::sync::Mutex;

use super::{FileMode, FileSource, FileSourceConfig};
use crate::registry::read_all;

/// A file side input; see the module docs.
#[derive(Debug)]
pub struct FileLookup {
    name: String,
    config: FileSourceConfig,
    reload_interval: Option<Duration>,
    rows: MemoryLookupTable,
    /// When the rows were last loaded (`None`: not yet).
    loaded_at: Mutex<Option<Instant>>,
}

impl FileLookup {
    /// The side input `name` reading `config`'s files as rows of `schema`, looked up by
    /// `key_columns`. Does no I/O.
    pub fn new(
        name: &str,
        mut config: FileSourceConfig,
        reload_interval: Option<Duration>,
        schema: SchemaRef,
        key_columns: Vec<usize>,
    ) -> Result<Self> {
        config.mode = FileMode::Once;
        Ok(FileLookup {
            name: name.to_string(),
            config,
            reload_interval,
            rows: MemoryLookupTable::new(name, schema, key_columns)?,
            loaded_at: Mutex::new(None),
        })
    }

    /// Every row of the files now.
    async fn load(&self) -> Result<RecordBatch> {
        let schema = LookupTable::schema(&self.rows);
        let bad = Arc::new(BadRecords::new(&self.name, self.config.on_error.clone()));
        let source = FileSource::new(self.config.clone(), schema.clone(), bad);
        let batches = read_all(Box::new(source)).await?;
        Ok(concat_batches(&schema, &batches)?)
    }

    /// Loads the rows if they were never loaded or the reload interval passed.
    async fn refresh(&self) -> Result<()> {
        let mut loaded_at = self.loaded_at.lock().await;
        let due = match (*loaded_at, self.reload_interval) {
            (None, _) => true,
            (Some(at), Some(every)) => at.elapsed() >= every,
            (Some(_), None) => false,
        };
        if due {
            let rows = self.load().await.map_err(|e| match e {
                EngineError::BadRecord { .. } => e,
                other => EngineError::User(format!(
                    "lookup table `{}` ({}): {other}",
                    self.name, self.config.path
                )),
            })?;
            tracing::info!(table = %self.name, rows = rows.num_rows(), "lookup table loaded");
            self.rows.replace(rows)?;
            *loaded_at = Some(Instant::now());
        }
        Ok(())
    }
}

#[async_trait]
impl LookupTable for FileLookup {
    fn schema(&self) -> SchemaRef {
        LookupTable::schema(&self.rows)
    }

    fn key_columns(&self) -> &[usize] {
        self.rows.key_columns()
    }

    fn describe(&self) -> String {
        match self.reload_interval {
            Some(every) => format!(
                "file {} in memory, reloaded every {every:?}",
                self.config.path
            ),
            None => format!("file {} in memory", self.config.path),
        }
    }

    async fn lookup(&self, keys: Vec<ArrayRef>) -> Result<RecordBatch> {
        self.refresh().await?;
        self.rows.get(&keys)
    }
}
