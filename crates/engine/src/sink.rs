//! The sink trait: where results leave a pipeline.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use crate::changelog::StreamMode;
use crate::error::Result;
use crate::message::Watermark;
use crate::metrics::ServiceStatus;
use crate::state::NodeState;

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
/// - `accepts` is called when the sink is added to a dataflow, before anything else, with the
///   schema and mode of the rows it will receive; a sink that cannot apply them refuses with
///   the way out. A sink that accepts an updating stream receives batches whose last column
///   is the change column (see [`crate::ChangeKind`]) and applies the rows in order.
/// - `open` runs once with the schema of the rows that will arrive; it creates the target when
///   it is absent (a table, a directory) and fails clearly when an existing target does not fit.
/// - `write_batch` receives batches in order. A sink may buffer them; buffered rows become
///   visible at the latest on `flush`.
/// - `on_watermark` is informational (sinks may roll files by event time).
/// - `maintain` is called about once a second so that the sink can roll or commit by time.
/// - `close` flushes everything and returns the summary; it is called once, after the last
///   batch. If the pipeline fails, the sink is dropped without `close`: nothing buffered may be
///   made visible half-written (write to temporary names, then commit).
/// - Checkpoints (two-phase commit): when the run takes checkpoints, `enable_checkpoints` is
///   called before `open`, and from then on the sink makes rows visible only in `commit`.
///   At each barrier `prepare_commit(id)` makes every row received so far durable but not yet
///   visible (files written, requests acknowledged) and returns what `commit` will need; once
///   the checkpoint is stored, `commit(id)` makes everything prepared up to `id` visible. On
///   recovery, `recover(id, state)` is called right after `open` with the state prepared for
///   the checkpoint recovered from, and finishes its commit if the crash came before it: it
///   must recognise a commit that already happened (Delta `txn` versions), so that nothing is
///   committed twice. Sinks that write idempotently or at least once flush in
///   `prepare_commit` and keep the default `commit` and `recover`.
#[async_trait]
pub trait Sink: Send {
    /// Whether the sink can apply rows of `schema` in `mode`; `Err` says why not and what
    /// to do instead (a sentence for the user). The default takes append-only rows only.
    fn accepts(&self, _schema: &Schema, mode: &StreamMode) -> std::result::Result<(), String> {
        match mode {
            StreamMode::AppendOnly => Ok(()),
            StreamMode::Updating { .. } => {
                Err("this sink only appends rows and cannot apply updates or deletes".into())
            }
        }
    }

    /// Prepares the target for rows of `schema`.
    async fn open(&mut self, schema: SchemaRef) -> Result<()>;

    /// Accepts a batch of rows.
    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()>;

    /// Live gauges (retries, throttles, bytes sent) for progress output and metrics, if the
    /// sink keeps any. Called once, when the sink is added to a dataflow; a wrapping sink
    /// returns its inner sink's.
    fn status(&self) -> Option<Arc<ServiceStatus>> {
        None
    }

    /// Observes event-time progress.
    async fn on_watermark(&mut self, _watermark: Watermark) -> Result<()> {
        Ok(())
    }

    /// Time-based housekeeping (roll files, commit by interval).
    async fn maintain(&mut self) -> Result<()> {
        Ok(())
    }

    /// Switches the sink to committing on checkpoints; `pipeline` names the pipeline durably
    /// (for transaction identifiers). Called once, before `open`.
    fn enable_checkpoints(&mut self, _pipeline: &str) {}

    /// Phase one of a checkpoint: everything received so far is made durable, not visible.
    async fn prepare_commit(&mut self, _checkpoint: u64) -> Result<NodeState> {
        Ok(NodeState::empty())
    }

    /// Phase two: the checkpoint is stored; make everything prepared up to it visible.
    async fn commit(&mut self, _checkpoint: u64) -> Result<()> {
        Ok(())
    }

    /// On recovery, after `open`: completes the commit of the recovered checkpoint if needed.
    async fn recover(&mut self, _checkpoint: u64, _state: NodeState) -> Result<()> {
        Ok(())
    }

    /// Flushes and returns what was written.
    async fn close(&mut self) -> Result<SinkSummary>;
}
