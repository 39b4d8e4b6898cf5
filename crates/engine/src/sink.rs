//! The sink trait: where results leave a pipeline.

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::Result;
use crate::message::Watermark;

/// What a sink reports when it closes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkSummary {
    /// Rows made durable and visible.
    pub rows_written: u64,
    /// Files, commits or requests, as the sink counts them (for the run summary).
    pub commits: u64,
}

/// A destination for result rows.
///
/// Contract:
/// - `open` runs once with the schema of the rows that will arrive; it creates the target when
///   it is absent (a table, a directory) and fails clearly when an existing target does not fit.
/// - `write_batch` receives batches in order. A sink may buffer them; buffered rows become
///   visible at the latest on `flush`.
/// - `on_watermark` is informational (sinks may roll files by event time).
/// - `maintain` is called about once a second so that the sink can roll or commit by time.
/// - `close` flushes everything and returns the summary; it is called once, after the last
///   batch. If the pipeline fails, the sink is dropped without `close`: nothing buffered may be
///   made visible half-written (write to temporary names, then commit).
#[async_trait]
pub trait Sink: Send {
    /// Prepares the target for rows of `schema`.
    async fn open(&mut self, schema: SchemaRef) -> Result<()>;

    /// Accepts a batch of rows.
    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()>;

    /// Observes event-time progress.
    async fn on_watermark(&mut self, _watermark: Watermark) -> Result<()> {
        Ok(())
    }

    /// Time-based housekeeping (roll files, commit by interval).
    async fn maintain(&mut self) -> Result<()> {
        Ok(())
    }

    /// Flushes and returns what was written.
    async fn close(&mut self) -> Result<SinkSummary>;
}
