//! Staged changes of a Delta upsert sink: a checkpoint's net changes as a Parquet file under
//! the table's `_laketide_changes/<sink>/` folder, durable before the checkpoint is stored
//! and read back by the MERGE that commits it. Delta readers and VACUUM ignore folders whose
//! names start with `_`.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::{DeltaTable, ObjectStore, Path};

use laketide_engine::{EngineError, Result, ServiceStatus};

/// The folder of a sink's staged files inside its table.
const STAGING_FOLDER: &str = "_laketide_changes";

/// Reads and writes one sink's staged change files in its table's storage.
pub(crate) struct ChangeFiles {
    store: Arc<dyn ObjectStore>,
    folder: String,
    status: Arc<ServiceStatus>,
}

impl ChangeFiles {
    /// The staging folder of the sink with transaction id `app_id` in `table`.
    pub(crate) fn new(table: &DeltaTable, app_id: &str, status: Arc<ServiceStatus>) -> Self {
        let name: String = app_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        ChangeFiles {
            store: table.object_store(),
            folder: format!("{STAGING_FOLDER}/{name}"),
            status,
        }
    }

    /// Writes `changes` as the staged file of `checkpoint`; returns its path in the table.
    pub(crate) async fn write(&self, checkpoint: u64, changes: &RecordBatch) -> Result<String> {
        let mut bytes = Vec::new();
        {
            let mut writer = ArrowWriter::try_new(&mut bytes, changes.schema(), None)
                .map_err(|e| EngineError::external("encoding staged changes", e))?;
            writer
                .write(changes)
                .and_then(|_| writer.close().map(|_| ()))
                .map_err(|e| EngineError::external("encoding staged changes", e))?;
        }
        let file = format!(
            "{}/{checkpoint:020}-{}.parquet",
            self.folder,
            uuid::Uuid::new_v4()
        );
        self.status.count_bytes(bytes.len() as u64);
        self.store
            .put(&Path::from(file.as_str()), Bytes::from(bytes).into())
            .await
            .map_err(|e| EngineError::external(format!("writing staged changes {file}"), e))?;
        Ok(file)
    }

    /// The changes staged in `file`.
    pub(crate) async fn read(&self, file: &str) -> Result<Vec<RecordBatch>> {
        let bytes = self
            .store
            .get(&Path::from(file))
            .await
            .map_err(|e| EngineError::external(format!("reading staged changes {file}"), e))?
            .bytes()
            .await
            .map_err(|e| EngineError::external(format!("reading staged changes {file}"), e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|b| b.build())
            .map_err(|e| EngineError::external(format!("decoding staged changes {file}"), e))?;
        reader
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| EngineError::external(format!("decoding staged changes {file}"), e))
    }

    /// Deletes every staged file (after a recovery merged what it needed: what is left was
    /// staged for a checkpoint that was never stored). Failures only leave stray files.
    pub(crate) async fn delete_all(&self) {
        use futures::TryStreamExt;
        let prefix = Path::from(self.folder.as_str());
        let listed: std::result::Result<Vec<_>, _> =
            self.store.list(Some(&prefix)).try_collect().await;
        match listed {
            Ok(files) => {
                for meta in files {
                    self.delete(meta.location.as_ref()).await;
                }
            }
            Err(e) => {
                tracing::warn!(folder = %self.folder, error = %e, "could not list the staging folder")
            }
        }
    }

    /// Deletes a staged file that was merged; a failure only leaves a stray file behind.
    pub(crate) async fn delete(&self, file: &str) {
        if let Err(e) = self.store.delete(&Path::from(file)).await {
            tracing::warn!(file, error = %e, "could not delete a merged staging file");
        }
    }
}
