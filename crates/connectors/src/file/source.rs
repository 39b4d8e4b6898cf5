use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use tokio::sync::mpsc::{Receiver, channel};

use laketide_engine::{
    BadRecords, EngineError, NodeState, Result, ServiceStatus, Source, SourcePoll,
};
use serde::{Deserialize, Serialize};

use super::config::{FileMode, FileSourceConfig};
use super::reader::{ReaderEvent, start_readers};
use super::store::FileStore;

/// Reads JSON-lines, CSV or Parquet files; see [`FileSourceConfig`]. Each file is a split:
/// its rows arrive in file order, and the source's watermark is the minimum over the files
/// being read (`open_files` at a time, in path order), or when
/// all are finished the largest watermark any of them reached. A file is never idle: it holds
/// the watermark from when a file reader takes it until it is read to its end, however long
/// its reader waits on backpressure (the source lists no caught-up splits); with no file
/// open, the source is idle as a whole once its polls found nothing for the idle timeout.
pub struct FileSource {
    config: FileSourceConfig,
    schema: SchemaRef,
    bad: Arc<BadRecords>,
    events: Option<Receiver<ReaderEvent>>,
    files_read: HashSet<PathBuf>,
    /// Files started and not finished, with the position after the rows delivered so far.
    reading: HashMap<PathBuf, u64>,
    status: Arc<ServiceStatus>,
}

/// The file source's checkpoint: files read to their end, and where each file being read
/// stands (lines consumed for JSON and CSV, rows for Parquet).
#[derive(Debug, Default, Serialize, Deserialize)]
struct FilePositions {
    done: Vec<String>,
    reading: BTreeMap<String, u64>,
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
            reading: HashMap::new(),
            status: Arc::new(ServiceStatus::default()),
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

    fn status(&self) -> Option<Arc<ServiceStatus>> {
        Some(self.status.clone())
    }

    async fn open(&mut self) -> Result<()> {
        let (tx, rx) = channel(4 * self.config.reader_threads.max(1));
        let store = FileStore::for_path(&self.config.path, &self.config.storage)?;
        start_readers(
            store,
            self.config.clone(),
            self.schema.clone(),
            self.bad.clone(),
            self.files_read.clone(),
            self.reading.clone(),
            tx,
            self.status.clone(),
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
            Ok(Some(ReaderEvent::Batch(path, batch, position))) => {
                let split = split_of(&path);
                self.reading.insert(path, position);
                Ok(SourcePoll::Batch { split, batch })
            }
            Ok(Some(ReaderEvent::FileDone(path))) => {
                tracing::debug!(file = %path.display(), "file read");
                let split = split_of(&path);
                self.reading.remove(&path);
                self.files_read.insert(path);
                Ok(SourcePoll::SplitFinished(split))
            }
            Ok(Some(ReaderEvent::Failed(e))) => Err(e),
        }
    }

    fn snapshot(&mut self) -> Result<NodeState> {
        let mut done: Vec<String> = self.files_read.iter().map(|p| split_of(p)).collect();
        done.sort();
        NodeState::json(&FilePositions {
            done,
            reading: self
                .reading
                .iter()
                .map(|(p, n)| (split_of(p), *n))
                .collect(),
        })
    }

    /// Files read to their end are not read again; files being read resume after the saved
    /// position.
    fn restore(&mut self, state: NodeState) -> Result<()> {
        let saved: FilePositions = state.to_json()?.unwrap_or_default();
        self.files_read = saved.done.into_iter().map(PathBuf::from).collect();
        self.reading = saved
            .reading
            .into_iter()
            .map(|(p, n)| (PathBuf::from(p), n))
            .collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Options;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use laketide_engine::OnError;

    fn source(dir: &std::path::Path) -> FileSource {
        let options = Options::new([
            ("path".to_string(), dir.display().to_string()),
            ("format".to_string(), "json".to_string()),
            ("mode".to_string(), "once".to_string()),
            ("batch_size".to_string(), "10".to_string()),
        ])
        .unwrap();
        let config = FileSourceConfig::from_options(options).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        FileSource::new(
            config,
            schema,
            Arc::new(BadRecords::new("t", OnError::Skip)),
        )
    }

    async fn next_ids(source: &mut FileSource) -> Option<Vec<i64>> {
        loop {
            match source.poll_next().await.unwrap() {
                SourcePoll::Batch { batch, .. } => {
                    let ids = batch.column(0).as_primitive::<Int64Type>();
                    return Some((0..ids.len()).map(|i| ids.value(i)).collect());
                }
                SourcePoll::Finished => return None,
                _ => {}
            }
        }
    }

    #[tokio::test]
    async fn a_restored_source_resumes_inside_a_file_after_the_delivered_rows() {
        let dir = tempfile::tempdir().unwrap();
        // Blank lines and a bad record count as consumed lines, not as rows.
        let mut text = String::new();
        for i in 0..35 {
            text.push_str(&format!("{{\"id\":{i}}}\n"));
            if i == 12 {
                text.push_str("\nnot json\n");
            }
        }
        std::fs::write(dir.path().join("a.json"), text).unwrap();
        let mut first = source(dir.path());
        first.open().await.unwrap();
        let mut delivered = next_ids(&mut first).await.unwrap();
        delivered.extend(next_ids(&mut first).await.unwrap());
        let state = first.snapshot().unwrap();
        drop(first);

        let mut second = source(dir.path());
        second.restore(state).unwrap();
        second.open().await.unwrap();
        while let Some(ids) = next_ids(&mut second).await {
            delivered.extend(ids);
        }
        assert_eq!(delivered, (0..35).collect::<Vec<i64>>());

        // A file read to its end is not read again.
        let done = second.snapshot().unwrap();
        let mut third = source(dir.path());
        third.restore(done).unwrap();
        third.open().await.unwrap();
        assert_eq!(next_ids(&mut third).await, None);
    }
}
