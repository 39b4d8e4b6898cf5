use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use tokio::sync::mpsc::{Receiver, channel};

use laketide_engine::{BadRecords, EngineError, Result, Source, SourcePoll};

use super::config::{FileMode, FileSourceConfig};
use super::reader::{ReaderEvent, start_readers};
use super::store::FileStore;

/// Reads JSON-lines, CSV or Parquet files; see [`FileSourceConfig`]. Each file is a split:
/// its rows arrive in file order, and the source's watermark is the minimum over the files
/// started and not yet finished (`reader_threads` at a time, started in path order).
pub struct FileSource {
    config: FileSourceConfig,
    schema: SchemaRef,
    bad: Arc<BadRecords>,
    events: Option<Receiver<ReaderEvent>>,
    files_read: HashSet<PathBuf>,
}

impl FileSource {
    /// A source of rows of `schema`, reporting bad records to `bad`. Does no I/O until opened.
    pub fn new(config: FileSourceConfig, schema: SchemaRef, bad: Arc<BadRecords>) -> Self {
        FileSource {
            config,
            schema,
            bad,
            events: None,
            files_read: HashSet::new(),
        }
    }

    /// Files read to their end so far.
    pub fn files_read(&self) -> &HashSet<PathBuf> {
        &self.files_read
    }
}

fn split_of(path: &std::path::Path) -> String {
    path.display().to_string()
}

#[async_trait]
impl Source for FileSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn open(&mut self) -> Result<()> {
        let threads = self.config.reader_threads.max(1);
        let (tx, rx) = channel(4 * threads);
        let store = FileStore::for_path(&self.config.path, &self.config.storage)?;
        start_readers(
            store,
            self.config.clone(),
            self.schema.clone(),
            self.bad.clone(),
            self.files_read.clone(),
            threads,
            tx,
        )
        .map_err(|e| EngineError::external("starting the file reader threads", e))?;
        self.events = Some(rx);
        Ok(())
    }

    async fn poll_next(&mut self) -> Result<SourcePoll> {
        let events = self
            .events
            .as_mut()
            .ok_or_else(|| EngineError::Internal("file source polled before open".into()))?;
        let wait = self.config.poll_interval.min(Duration::from_millis(500));
        match tokio::time::timeout(wait, events.recv()).await {
            Err(_elapsed) => Ok(SourcePoll::Idle),
            // The lister and every reader are done: only a bounded source ends this way.
            Ok(None) if self.config.mode == FileMode::Once => Ok(SourcePoll::Finished),
            Ok(None) => Err(EngineError::Internal(
                "the file reader threads stopped unexpectedly".into(),
            )),
            Ok(Some(ReaderEvent::FileStarted(path))) => {
                Ok(SourcePoll::SplitStarted(split_of(&path)))
            }
            Ok(Some(ReaderEvent::Batch(path, batch))) => Ok(SourcePoll::Batch {
                split: split_of(&path),
                batch,
            }),
            Ok(Some(ReaderEvent::FileDone(path))) => {
                tracing::debug!(file = %path.display(), "file read");
                let split = split_of(&path);
                self.files_read.insert(path);
                Ok(SourcePoll::SplitFinished(split))
            }
            Ok(Some(ReaderEvent::Failed(e))) => Err(e),
        }
    }
}
