//! What flows along the edges of a dataflow.

use datafusion::arrow::record_batch::RecordBatch;

/// Event time in nanoseconds since the Unix epoch (UTC). Timestamps without a time zone are
/// read as UTC.
pub type EventTime = i64;

/// A promise that no record with an event time at or before `EventTime` will follow on this
/// edge (records that do are late), or that the edge is idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watermark {
    /// Event time has reached this instant.
    EventTime(EventTime),
    /// The upstream has had no data for its idle timeout: downstream operators leave this input
    /// out of their minimum until it sends an event-time watermark again.
    Idle,
}

impl Watermark {
    /// The watermark that closes every window: sent when a bounded input ends.
    pub const END: Watermark = Watermark::EventTime(EventTime::MAX);
}

/// Marks a consistent cut of the stream for checkpoint `id` (aligned barriers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointBarrier {
    /// Monotonic checkpoint number within one pipeline.
    pub id: u64,
    /// Wall-clock time the checkpoint was started, in milliseconds since the epoch.
    pub started_at_ms: i64,
    /// The newest checkpoint stored before this one was started (in this run, or the one the
    /// run recovered from): an operator may save only what changed since its snapshot for
    /// that checkpoint (a [`crate::KeyedTable::Delta`]). `None`: save everything.
    pub base: Option<u64>,
}

/// One item on a dataflow edge. Order on an edge is preserved end to end.
#[derive(Debug, Clone)]
pub enum Message {
    /// Rows, all with the edge's schema.
    Batch(RecordBatch),
    /// Event-time progress.
    Watermark(Watermark),
    /// A checkpoint barrier.
    Barrier(CheckpointBarrier),
    /// The upstream is finished: nothing follows.
    EndOfStream,
}
