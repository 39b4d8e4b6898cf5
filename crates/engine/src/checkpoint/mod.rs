//! Consistent checkpoints with aligned barriers.
//!
//! Every `interval` the [`coordinator`] asks each source for its positions; the source saves
//! them and sends a [`crate::CheckpointBarrier`] downstream, in order with its data. An
//! operator snapshots its state once the barrier has arrived on all of its inputs (it holds
//! back what later arrives on inputs that already delivered the barrier), then forwards it. A
//! sink prepares its commit at the barrier. When every node has reported, the coordinator
//! writes the checkpoint to its [`CheckpointStore`] and only then tells the sinks to commit,
//! so what a sink makes visible is always covered by a stored checkpoint.

pub(crate) mod coordinator;
mod store;

use std::time::Duration;

pub use store::{Checkpoint, CheckpointStore, FORMAT_VERSION, NodeKey};

/// How a run recovers from the checkpoints in its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Recovery {
    /// Resume from the newest complete checkpoint; refuse one written by a different pipeline.
    #[default]
    Resume,
    /// Ignore existing state and start over (checkpoint numbers keep increasing).
    FromScratch,
    /// Take only the source positions from the newest checkpoint, even if the pipeline changed:
    /// reading resumes where it stopped, with empty windows.
    KeepSourcePositions,
}

/// Checkpointing of one run.
#[derive(Debug, Clone)]
pub struct CheckpointSettings {
    /// Where checkpoints are written and read.
    pub store: CheckpointStore,
    /// Time between the start of two checkpoints.
    pub interval: Duration,
    /// Names the pipeline durably; sinks derive their transaction ids from it.
    pub pipeline_name: String,
    /// Fingerprint of the pipeline's shape, saved in every checkpoint. Checkpoints of format
    /// 1 are restored only into the same shape; later ones are matched per node by stable id
    /// and node fingerprint, so that other statements can be added or removed.
    pub fingerprint: String,
    /// What to do with existing checkpoints.
    pub recovery: Recovery,
    /// Whether operators may save only what changed since the previous checkpoint (see
    /// [`crate::KeyedTable`]); `false` writes every table in full each time.
    pub incremental: bool,
}

/// The last completed checkpoint, for the status line, the dashboard and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CheckpointInfo {
    /// Its number.
    pub id: u64,
    /// When it was stored (ms since the epoch).
    pub completed_at_ms: i64,
    /// Bytes written to the store.
    pub bytes: u64,
    /// Bytes written by all checkpoints of this run.
    pub written_bytes: u64,
    /// From the trigger to the stored manifest.
    pub duration_ms: u64,
    /// Checkpoints that could not be stored (the next one covers their data).
    pub failed: u64,
    /// The checkpoint this run recovered from, if any.
    pub restored_from: Option<u64>,
}
