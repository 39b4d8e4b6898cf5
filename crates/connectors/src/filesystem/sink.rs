use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use deltalake::ObjectStore;
use deltalake::logstore::object_store::{ObjectStoreExt, WriteMultipart};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use laketide_engine::{EngineError, NodeState, Result, ServiceStatus, Sink, SinkSummary};

use super::config::FilesystemSinkConfig;
use super::writer::FormatWriter;

/// A written file under its temporary name.
struct FinishedFile {
    temp_path: PathBuf,
    final_path: PathBuf,
}

struct OpenFile {
    writer: FormatWriter,
    temp_path: PathBuf,
    final_path: PathBuf,
    opened: Instant,
    approx_bytes: u64,
}

/// Writes rows to files under a directory or an `s3://` prefix. A file is written under a
/// hidden `.inprogress` name and, when it is rolled (by size or age) or the sink closes,
/// renamed to `part-<start millis>-<n>-<id>.<ext>` (local) or uploaded under that name (object storage, where
/// an upload appears whole), so readers never see a partial file. With checkpoints, a rolled
/// file is staged under a hidden `.pending` name (on object storage: uploaded under it) and
/// renamed to its final name only when a checkpoint that covers it is stored; recovery
/// completes the renames of the checkpoint it restores, and a rename already done is skipped.
pub struct FilesystemSink {
    name: String,
    config: FilesystemSinkConfig,
    /// For `s3://` paths: the store the finished files are uploaded to.
    remote: Option<Arc<dyn ObjectStore>>,
    schema: Option<SchemaRef>,
    current: Option<OpenFile>,
    run_id: String,
    sequence: u64,
    summary: SinkSummary,
    /// Bytes of finished files.
    status: Arc<ServiceStatus>,
    rows_in_file: u64,
    two_phase: bool,
    /// Files staged since the last prepare.
    staged: Vec<StagedFile>,
    /// Staged files per prepared checkpoint, oldest first.
    prepared: Vec<(u64, Vec<StagedFile>)>,
}

/// A finished file under its hidden staging name, waiting for its checkpoint.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct StagedFile {
    /// Local path, or object key under the sink's prefix.
    staged: String,
    /// The name it gets when committed (same directory or prefix).
    name: String,
    rows: u64,
}

impl FilesystemSink {
    /// A sink for table `name`; does no I/O until opened.
    pub fn new(name: impl Into<String>, config: FilesystemSinkConfig) -> Self {
        FilesystemSink {
            name: name.into(),
            config,
            remote: None,
            schema: None,
            current: None,
            run_id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            sequence: 0,
            summary: SinkSummary::default(),
            status: Arc::new(ServiceStatus::default()),
            rows_in_file: 0,
            two_phase: false,
            staged: Vec::new(),
            prepared: Vec::new(),
        }
    }

    /// Stages a finished file under a hidden name until its checkpoint is stored.
    async fn stage(&mut self, file: &FinishedFile) -> Result<()> {
        let name = file
            .final_path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let hidden = format!(".{name}.pending");
        match &self.remote {
            None => {
                let staged = file.final_path.with_file_name(&hidden);
                std::fs::rename(&file.temp_path, &staged)
                    .map_err(|e| self.err("staging", &file.temp_path, e))?;
                self.staged.push(StagedFile {
                    staged: staged.display().to_string(),
                    name,
                    rows: self.rows_in_file,
                });
            }
            Some(store) => {
                upload(store.as_ref(), &file.temp_path, &hidden)
                    .await
                    .map_err(|e| {
                        self.err(
                            "uploading",
                            Path::new(&format!("{}/{hidden}", self.config.path)),
                            e,
                        )
                    })?;
                let _ = std::fs::remove_file(&file.temp_path);
                self.staged.push(StagedFile {
                    staged: hidden,
                    name,
                    rows: self.rows_in_file,
                });
            }
        }
        self.rows_in_file = 0;
        Ok(())
    }

    /// Gives staged files their final names; files already renamed (a commit repeated after a
    /// crash) are skipped.
    async fn publish(&mut self, files: Vec<StagedFile>) -> Result<()> {
        for file in files {
            match &self.remote {
                None => {
                    let staged = PathBuf::from(&file.staged);
                    let target = staged.with_file_name(&file.name);
                    match std::fs::rename(&staged, &target) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound && target.exists() => {}
                        Err(e) => return Err(self.err("publishing", &staged, e)),
                    }
                }
                Some(store) => {
                    let from = deltalake::Path::from(file.staged.as_str());
                    let to = deltalake::Path::from(file.name.as_str());
                    match store.rename(&from, &to).await {
                        Ok(()) => {}
                        Err(deltalake::ObjectStoreError::NotFound { .. })
                            if store.head(&to).await.is_ok() => {}
                        Err(e) => {
                            return Err(self.err(
                                "publishing",
                                Path::new(&format!("{}/{}", self.config.path, file.staged)),
                                e,
                            ));
                        }
                    }
                }
            }
            self.summary.commits += 1;
            self.summary.rows_written += file.rows;
        }
        Ok(())
    }

    fn err(&self, what: &str, path: &Path, e: impl std::fmt::Display) -> EngineError {
        EngineError::external(
            format!("{}: {what} {}", self.name, path.display()),
            e.to_string(),
        )
    }

    fn open_file(&mut self) -> Result<()> {
        let schema = self
            .schema
            .clone()
            .ok_or_else(|| EngineError::Internal("filesystem sink written before open".into()))?;
        self.sequence += 1;
        let ext = self.config.format.extension();
        // The start time first: names sort in the order files were written, across restarts
        // too, so that a changelog replays in name order.
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let base = format!(
            "part-{started:013}-{:05}-{}.{ext}",
            self.sequence, self.run_id
        );
        let dir = self.local_dir();
        let dir = dir.as_path();
        let temp_path = dir.join(format!(".{base}.inprogress"));
        let final_path = dir.join(base);
        let file = File::create(&temp_path).map_err(|e| self.err("creating", &temp_path, e))?;
        let writer = FormatWriter::new(self.config.format, file, &schema)
            .map_err(|e| self.err("writing", &temp_path, e))?;
        self.current = Some(OpenFile {
            writer,
            temp_path,
            final_path,
            opened: Instant::now(),
            approx_bytes: 0,
        });
        Ok(())
    }

    /// Where files are written: the sink's directory, or a staging directory for uploads.
    fn local_dir(&self) -> PathBuf {
        if self.remote.is_some() {
            std::env::temp_dir().join(format!("laketide-{}-{}", self.name, self.run_id))
        } else {
            PathBuf::from(&self.config.path)
        }
    }

    async fn roll(&mut self) -> Result<()> {
        let Some(file) = self.current.take() else {
            return Ok(());
        };
        let OpenFile {
            writer,
            temp_path,
            final_path,
            ..
        } = file;
        writer
            .finish()
            .map_err(|e| self.err("finishing", &temp_path, e))?;
        if let Ok(meta) = std::fs::metadata(&temp_path) {
            self.status.count_bytes(meta.len());
        }
        let file = FinishedFile {
            temp_path,
            final_path,
        };
        if self.two_phase {
            return self.stage(&file).await;
        }
        match &self.remote {
            None => std::fs::rename(&file.temp_path, &file.final_path)
                .map_err(|e| self.err("renaming", &file.temp_path, e))?,
            Some(store) => {
                let name = file
                    .final_path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                upload(store.as_ref(), &file.temp_path, name)
                    .await
                    .map_err(|e| {
                        self.err(
                            "uploading",
                            Path::new(&format!("{}/{name}", self.config.path)),
                            e,
                        )
                    })?;
                let _ = std::fs::remove_file(&file.temp_path);
            }
        }
        self.summary.commits += 1;
        self.summary.rows_written += self.rows_in_file;
        self.rows_in_file = 0;
        Ok(())
    }
}

/// Uploads a local file in parts (so large files never sit in memory whole).
async fn upload(
    store: &dyn ObjectStore,
    file: &Path,
    name: &str,
) -> std::result::Result<(), String> {
    let location = deltalake::Path::from(name);
    let upload = store
        .put_multipart_opts(&location, Default::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut writer = WriteMultipart::new(upload);
    let mut source = File::open(file).map_err(|e| e.to_string())?;
    let mut chunk = vec![0u8; 8 << 20];
    loop {
        let n = source.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        writer
            .wait_for_capacity(4)
            .await
            .map_err(|e| e.to_string())?;
        writer.write(&chunk[..n]);
    }
    writer.finish().await.map_err(|e| e.to_string())?;
    Ok(())
}

#[async_trait]
impl Sink for FilesystemSink {
    fn status(&self) -> Option<Arc<ServiceStatus>> {
        Some(self.status.clone())
    }

    async fn open(&mut self, schema: SchemaRef) -> Result<()> {
        if self.config.path.contains("://") {
            let location = self.config.path.clone();
            let failed = |e: deltalake::DeltaTableError| {
                EngineError::external(format!("{}: opening {location}", self.name), e)
            };
            let url = deltalake::ensure_table_uri(&location).map_err(failed)?;
            let store = deltalake::DeltaTableBuilder::from_url(url)
                .map_err(failed)?
                .with_storage_options(self.config.storage.storage_options())
                .build_storage()
                .map_err(failed)?
                .object_store(None);
            self.remote = Some(store);
        }
        let dir = self.local_dir();
        std::fs::create_dir_all(&dir).map_err(|e| self.err("creating directory", &dir, e))?;
        self.schema = Some(schema);
        Ok(())
    }

    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
        if self.current.is_none() {
            self.open_file()?;
        }
        let file = self.current.as_mut().expect("opened above");
        if let Err(e) = file.writer.write(&batch) {
            let path = file.temp_path.clone();
            return Err(self.err("writing", &path, e));
        }
        file.approx_bytes += batch.get_array_memory_size() as u64;
        self.rows_in_file += batch.num_rows() as u64;
        if file.writer.size(file.approx_bytes) >= self.config.rollover_size {
            self.roll().await?;
        }
        Ok(())
    }

    async fn maintain(&mut self) -> Result<()> {
        if self
            .current
            .as_ref()
            .is_some_and(|f| f.opened.elapsed() >= self.config.rollover_interval)
        {
            self.roll().await?;
        }
        Ok(())
    }

    fn enable_checkpoints(&mut self, _pipeline: &str) {
        self.two_phase = true;
    }

    async fn prepare_commit(&mut self, checkpoint: u64) -> Result<NodeState> {
        self.roll().await?;
        let staged = std::mem::take(&mut self.staged);
        if !staged.is_empty() {
            self.prepared.push((checkpoint, staged));
        }
        NodeState::json(&self.prepared)
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<()> {
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.prepared)
            .into_iter()
            .partition(|(id, _)| *id <= checkpoint);
        self.prepared = later;
        self.publish(ready.into_iter().flat_map(|(_, f)| f).collect())
            .await
    }

    async fn recover(&mut self, _checkpoint: u64, state: NodeState) -> Result<()> {
        let prepared: Vec<(u64, Vec<StagedFile>)> = state.to_json()?.unwrap_or_default();
        self.publish(prepared.into_iter().flat_map(|(_, f)| f).collect())
            .await
    }

    async fn close(&mut self) -> Result<SinkSummary> {
        self.roll().await?;
        if self.remote.is_some() {
            // The staging directory of uploads is empty once the last file is uploaded.
            let _ = std::fs::remove_dir(self.local_dir());
        }
        Ok(self.summary.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filesystem::config::FileFormat;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    use std::time::Duration;

    fn batch(schema: &SchemaRef, n: i64) -> RecordBatch {
        RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..n))],
        )
        .unwrap()
    }

    fn visible_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn rolls_files_by_size_and_by_time_and_hides_open_files() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let config = FilesystemSinkConfig {
            path: dir.path().display().to_string(),
            storage: Default::default(),
            format: FileFormat::Csv,
            rollover_size: 1000,
            rollover_interval: Duration::from_millis(50),
        };
        let mut sink = FilesystemSink::new("t", config);
        sink.open(schema.clone()).await.unwrap();
        // Each batch is well over 1000 bytes in memory: every write rolls a file.
        sink.write_batch(batch(&schema, 200)).await.unwrap();
        sink.write_batch(batch(&schema, 200)).await.unwrap();
        assert_eq!(visible_files(dir.path()).len(), 2);
        // A small batch stays open (hidden) until the interval passes.
        let mut small = FilesystemSink::new(
            "t",
            FilesystemSinkConfig {
                path: dir.path().join("small").display().to_string(),
                storage: Default::default(),
                format: FileFormat::Json,
                rollover_size: 1 << 30,
                rollover_interval: Duration::from_millis(50),
            },
        );
        small.open(schema.clone()).await.unwrap();
        small.write_batch(batch(&schema, 3)).await.unwrap();
        assert!(
            visible_files(&dir.path().join("small")).is_empty(),
            "an open file is hidden"
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        small.maintain().await.unwrap();
        let files = visible_files(&dir.path().join("small"));
        assert_eq!(files.len(), 1, "{files:?}");
        let text = std::fs::read_to_string(dir.path().join("small").join(&files[0])).unwrap();
        assert_eq!(text.lines().count(), 3);
        let summary = sink.close().await.unwrap();
        assert_eq!(summary.rows_written, 400);
        assert_eq!(summary.commits, 2);
    }
}
