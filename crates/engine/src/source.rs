//! The source trait: where records enter a pipeline.

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use std::sync::Arc;
use std::time::Instant;

use crate::error::Result;
use crate::metrics::ServiceStatus;
use crate::state::NodeState;

/// Identifies an independently ordered part of a source (a file, a Kinesis shard). Watermarks
/// are tracked per split and combined as the minimum over active splits.
pub type SplitId = String;

/// What a source returns from one poll.
#[derive(Debug)]
pub enum SourcePoll {
    /// Rows read from one split, in that split's order, with the source's schema.
    Batch { split: SplitId, batch: RecordBatch },
    /// A split is about to deliver data: it holds the watermark back from now on, even before
    /// its first batch (so a slow start cannot make its rows late).
    SplitStarted(SplitId),
    /// Nothing is available right now. Sources return this within about their poll interval
    /// so that the runner can check idle timeouts, stop requests and checkpoints. It says
    /// nothing about splits being idle (see [`Source::caught_up_splits`]); a source without
    /// open splits that returns only this for its idle timeout is idle as a whole.
    Idle,
    /// The split has no more data (a file read to its end, a closed shard consumed); it leaves
    /// the watermark minimum.
    SplitFinished(SplitId),
    /// The source is bounded and has nothing more: the pipeline drains and finishes.
    Finished,
}

/// A source of record batches, pulled by the runner.
///
/// Contract:
/// - `open` runs once before the first `poll_next`; it checks that the source is reachable and
///   its configuration valid, and fails with a clear error otherwise.
/// - `poll_next` is called repeatedly from one task. It must not block a thread; it should
///   return [`SourcePoll::Idle`] rather than wait longer than about a second, because the
///   runner only checks stop requests and idle timeouts between polls.
/// - Batches carry exactly `schema()`. Malformed records are handled by the source through its
///   [`crate::BadRecords`] policy (fail, skip and count, or dead-letter); never dropped silently.
/// - After `Finished` or an error the source is dropped; dropping must release its resources.
/// - Idleness is decided from what the source knows, never from delivery times: a split is
///   idle only when [`Source::caught_up_splits`] has listed it for the source's idle timeout
///   (its reader has nothing to deliver). Time the runner spends waiting on a slow
///   downstream, or a batch waiting behind other splits, never makes a split idle. A source
///   with no open split is idle as a whole when `poll_next` has returned only
///   [`SourcePoll::Idle`] for the idle timeout.
/// - Splits share the way to the runner fairly: a split with data waiting is not held back
///   for long behind another one (readers queue on one bounded channel, served first come
///   first served), so the minimum over splits follows every split's progress.
/// - Checkpoints: `snapshot` is called between polls and must describe exactly the records that
///   `poll_next` has returned so far (read positions, files done); `restore` is called before
///   `open` on recovery with such a snapshot, and the source then resumes right after those
///   records, so nothing is read twice or skipped.
#[async_trait]
pub trait Source: Send {
    /// The schema of every batch.
    fn schema(&self) -> SchemaRef;

    /// Connects and validates; called once.
    async fn open(&mut self) -> Result<()>;

    /// Returns the next batch, or says why there is none.
    async fn poll_next(&mut self) -> Result<SourcePoll>;

    /// Live gauges (per-split lag, throttles) for progress output and metrics, if the source
    /// keeps any. Called once, when the source is added to a dataflow.
    fn status(&self) -> Option<Arc<ServiceStatus>> {
        None
    }

    /// The splits that have nothing to deliver: nothing of theirs is waiting to be returned by
    /// `poll_next` and their reader's latest look found nothing new (a Kinesis shard whose
    /// GetRecords returned no records at the shard's tip). Each comes with the instant since
    /// which it has been caught up without interruption. The runner counts a split idle once
    /// it has been listed, continuously, for the idle timeout; a split never listed is never
    /// idle (a file being read). Called between polls; the
    /// default lists none. See [`crate::CaughtUpSplits`] for a tracker that readers share.
    fn caught_up_splits(&self) -> Vec<(SplitId, Instant)> {
        Vec::new()
    }

    /// The read positions of everything returned so far, for a checkpoint. Sources without
    /// positions (in-memory test data) return an empty state and replay from their start.
    fn snapshot(&mut self) -> Result<NodeState> {
        Ok(NodeState::empty())
    }

    /// Takes back positions saved by `snapshot`; called before `open` when recovering.
    fn restore(&mut self, state: NodeState) -> Result<()> {
        state.expect_empty("a source without positions")
    }
}
