//! An in-memory sink for tests and embedding: collects every batch it receives (an updating
//! stream's batches with their change column).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use laketide_engine::{EngineError, Result, Sink, SinkSummary, StreamMode};

/// Collects batches; clones of [`MemorySink::handle`] read them.
#[derive(Debug, Default)]
pub struct MemorySink {
    batches: Arc<Mutex<Vec<RecordBatch>>>,
    summary: SinkSummary,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A shared handle to the collected batches.
    pub fn handle(&self) -> Arc<Mutex<Vec<RecordBatch>>> {
        self.batches.clone()
    }
}

#[async_trait]
impl Sink for MemorySink {
    fn accepts(&self, _schema: &Schema, _mode: &StreamMode) -> std::result::Result<(), String> {
        Ok(())
    }

    async fn open(&mut self, _schema: SchemaRef) -> Result<()> {
        Ok(())
    }

    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
        self.summary.rows_written += batch.num_rows() as u64;
        self.batches
            .lock()
            .map_err(|_| EngineError::Internal("memory sink lock poisoned".into()))?
            .push(batch);
        Ok(())
    }

    async fn close(&mut self) -> Result<SinkSummary> {
        Ok(self.summary.clone())
    }
}
