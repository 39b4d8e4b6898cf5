use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use tokio::sync::mpsc::{Receiver, channel};

use laketide_engine::{BadRecords, EngineError, Result, Source, SourcePoll};

use super::config::FileSourceConfig;
use super::reader::{Reader, ReaderEvent};

/// The split id of a file source: files are read one after another, in path order, so the
/// source has one ordered split.
const SPLIT: &str = "files";

/// Reads JSON-lines, CSV or Parquet files; see [`FileSourceConfig`].
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

#[async_trait]
impl Source for FileSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn open(&mut self) -> Result<()> {
        let (tx, rx) = channel(4);
        let reader = Reader::new(
            self.config.clone(),
            self.schema.clone(),
            self.bad.clone(),
            tx,
        );
        let seen = self.files_read.clone();
        std::thread::Builder::new()
            .name("laketide-file-reader".into())
            .spawn(move || reader.run(seen))
            .map_err(|e| EngineError::external("starting the file reader thread", e))?;
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
            Ok(None) => Err(EngineError::Internal(
                "the file reader thread stopped unexpectedly".into(),
            )),
            Ok(Some(ReaderEvent::Batch(batch))) => Ok(SourcePoll::Batch {
                split: SPLIT.to_string(),
                batch,
            }),
            Ok(Some(ReaderEvent::FileDone(path))) => {
                tracing::debug!(file = %path.display(), "file read");
                self.files_read.insert(path);
                Ok(SourcePoll::Idle)
            }
            Ok(Some(ReaderEvent::Finished)) => Ok(SourcePoll::Finished),
            Ok(Some(ReaderEvent::Failed(e))) => Err(e),
        }
    }
}
