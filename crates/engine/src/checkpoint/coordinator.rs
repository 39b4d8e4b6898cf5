//! The checkpoint coordinator: triggers checkpoints at the sources, collects every node's
//! state, stores the checkpoint and then lets the sinks commit.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{Checkpoint, CheckpointInfo, CheckpointStore, NodeKey};
use crate::error::{EngineError, Result};
use crate::message::CheckpointBarrier;
use crate::state::NodeState;

/// Asks a source to take checkpoint `barrier.id`; after a `last` one the source ends its
/// stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Trigger {
    pub barrier: CheckpointBarrier,
    pub last: bool,
}

/// What node tasks tell the coordinator.
#[derive(Debug)]
pub(crate) enum Report {
    /// A node's state for a checkpoint.
    State {
        checkpoint: u64,
        node: NodeKey,
        state: NodeState,
    },
    /// A bounded source has read everything (it still answers triggers).
    SourceFinished,
}

/// The node tasks' side of the coordinator.
#[derive(Debug, Clone)]
pub(crate) struct Handle {
    pub reports: mpsc::UnboundedSender<Report>,
    /// The newest checkpoint that is stored: sinks commit up to it.
    pub committed: watch::Receiver<u64>,
}

pub(crate) struct Coordinator {
    pub store: CheckpointStore,
    pub interval: std::time::Duration,
    pub fingerprint: String,
    pub next_id: u64,
    /// The newest stored checkpoint (in this run, or the one it recovered from): the base
    /// of the next one's incremental snapshots.
    pub base: Option<u64>,
    /// Whether snapshots may be incremental; without, barriers name no base.
    pub incremental: bool,
    pub nodes: usize,
    pub sources: Vec<mpsc::UnboundedSender<Trigger>>,
    pub reports: mpsc::UnboundedReceiver<Report>,
    pub committed: watch::Sender<u64>,
    pub stop: CancellationToken,
    pub status: Arc<Mutex<CheckpointInfo>>,
}

struct Pending {
    started: Instant,
    started_at_ms: i64,
    last: bool,
    states: BTreeMap<NodeKey, NodeState>,
}

impl Coordinator {
    /// Runs until the last checkpoint is stored (after a stop or the end of all sources), or
    /// until every node task is gone. Fails only if the last checkpoint cannot be stored.
    pub async fn run(mut self) -> Result<()> {
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + self.interval, self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
        let mut finished_sources = 0usize;
        let mut last_sent = false;
        loop {
            tokio::select! {
                _ = tick.tick(), if !last_sent => {
                    // One checkpoint at a time: a slow one delays the next rather than piling up.
                    if pending.is_empty() {
                        self.trigger(&mut pending, false);
                    }
                }
                _ = self.stop.cancelled(), if !last_sent => {
                    last_sent = true;
                    self.trigger(&mut pending, true);
                }
                report = self.reports.recv() => match report {
                    None => return Ok(()),
                    Some(Report::SourceFinished) => {
                        finished_sources += 1;
                        if finished_sources == self.sources.len() && !last_sent {
                            last_sent = true;
                            self.trigger(&mut pending, true);
                        }
                    }
                    Some(Report::State { checkpoint, node, state }) => {
                        let Some(p) = pending.get_mut(&checkpoint) else {
                            return Err(EngineError::Internal(format!(
                                "state for unknown checkpoint {checkpoint} from {}", node.name
                            )));
                        };
                        p.states.insert(node, state);
                        if p.states.len() == self.nodes {
                            let p = pending.remove(&checkpoint).expect("present");
                            let last = p.last;
                            self.complete(checkpoint, p).await?;
                            if last {
                                return Ok(());
                            }
                        }
                    }
                }
            }
        }
    }

    fn trigger(&mut self, pending: &mut BTreeMap<u64, Pending>, last: bool) {
        let id = self.next_id;
        self.next_id += 1;
        let started_at_ms = crate::time::now() / 1_000_000;
        pending.insert(
            id,
            Pending {
                started: Instant::now(),
                started_at_ms,
                last,
                states: BTreeMap::new(),
            },
        );
        tracing::debug!(checkpoint = id, last, "checkpoint triggered");
        for source in &self.sources {
            // A source that is gone has failed or been aborted; the run ends with its error.
            let _ = source.send(Trigger {
                barrier: CheckpointBarrier {
                    id,
                    started_at_ms,
                    base: self.base.filter(|_| self.incremental),
                },
                last,
            });
        }
    }

    async fn complete(&mut self, id: u64, p: Pending) -> Result<()> {
        let checkpoint = Checkpoint {
            id,
            pipeline: self.fingerprint.clone(),
            format: super::FORMAT_VERSION,
            started_at_ms: p.started_at_ms,
            completed_at_ms: crate::time::now() / 1_000_000,
            nodes: p.states,
        };
        match self.store.write(&checkpoint).await {
            Ok(bytes) => {
                let duration_ms = p.started.elapsed().as_millis() as u64;
                {
                    let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
                    status.id = id;
                    status.completed_at_ms = checkpoint.completed_at_ms;
                    status.bytes = bytes;
                    status.written_bytes += bytes;
                    status.duration_ms = duration_ms;
                }
                tracing::info!(checkpoint = id, bytes, duration_ms, "checkpoint stored");
                self.base = Some(id);
                let _ = self.committed.send(id);
                self.store.clean_up(id).await;
                Ok(())
            }
            Err(e) if !p.last => {
                self.status.lock().unwrap_or_else(|e| e.into_inner()).failed += 1;
                tracing::warn!(
                    checkpoint = id,
                    "checkpoint could not be stored; the next one will cover its data: {e}"
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
