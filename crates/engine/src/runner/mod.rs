//! Runs a [`Dataflow`] on tokio: one task per node, bounded channels between them.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, Receiver, Sender, channel};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::coordinator::{Coordinator, Handle, Report, Trigger};

mod inputs;
mod operator_task;
mod restore;
mod sink_task;
mod source_task;

use crate::checkpoint::{CheckpointSettings, NodeKey};
use crate::error::{EngineError, Result};
use crate::graph::{Dataflow, Node, NodeKind};
use crate::message::{Message, Watermark};
use crate::metrics::{MetricsSnapshot, NodeMetrics};
use crate::sink::SinkSummary;
use crate::state::NodeState;
use operator_task::run_operator;
use restore::find_restore;
use sink_task::run_sink;
use source_task::SourceTask;

/// How a pipeline runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Messages buffered on each edge before the sender waits (backpressure).
    pub channel_capacity: usize,
    /// Cancel to stop. Without checkpoints, sources stop reading, then everything in flight
    /// drains to the sinks, windows are flushed, and sinks commit. With checkpoints, a last
    /// checkpoint is taken instead and open windows stay in it for the next run.
    pub stop: CancellationToken,
    /// Take checkpoints and recover from them; `None` runs without state.
    pub checkpoints: Option<CheckpointSettings>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            channel_capacity: 16,
            stop: CancellationToken::new(),
            checkpoints: None,
        }
    }
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Totals of the pipeline's counters.
    pub totals: MetricsSnapshot,
    /// Each sink's name and summary.
    pub sinks: Vec<(String, SinkSummary)>,
    /// Wall-clock duration of the run.
    pub elapsed: Duration,
}

/// How a node task ended without error.
enum TaskEnd {
    Finished(Option<(String, SinkSummary)>),
    /// A downstream or upstream task failed; the real error is reported by that task.
    Aborted,
}

/// A node task's link to the checkpoint coordinator.
struct Checkpointing {
    node: NodeKey,
    handle: Handle,
}

impl Checkpointing {
    fn report(&self, checkpoint: u64, state: NodeState) -> Result<()> {
        self.handle
            .reports
            .send(Report::State {
                checkpoint,
                node: self.node.clone(),
                state,
            })
            .map_err(|_| EngineError::Internal("the checkpoint coordinator is gone".into()))
    }
}

/// Runs `dataflow` until every source has finished (bounded) or `options.stop` is cancelled,
/// and every sink has closed. The first error stops all tasks and is returned.
pub async fn run(dataflow: Dataflow, options: RunOptions) -> Result<RunSummary> {
    let started = Instant::now();
    let (mut nodes, metrics) = dataflow.into_parts();
    let n = nodes.len();
    let mut senders: Vec<Vec<Sender<Message>>> = (0..n).map(|_| Vec::new()).collect();
    let mut receivers: Vec<Vec<Option<Receiver<Message>>>> = nodes
        .iter()
        .map(|node| node.inputs.iter().map(|_| None).collect())
        .collect();
    for (id, node) in nodes.iter().enumerate() {
        for (pos, input) in node.inputs.iter().enumerate() {
            let (tx, rx) = channel(options.channel_capacity.max(1));
            senders[*input].push(tx);
            receivers[id][pos] = Some(rx);
        }
    }
    for (id, node) in nodes.iter().enumerate() {
        if senders[id].is_empty() && !matches!(node.kind, NodeKind::Sink(_)) {
            return Err(EngineError::Internal(format!(
                "node [{id}] {} has no downstream",
                node.name
            )));
        }
    }

    let keys = crate::stable_ids::node_keys(&nodes);
    let mut tasks = JoinSet::new();
    // Checkpointing: restore state, then start the coordinator.
    let mut triggers: Vec<Option<mpsc::UnboundedReceiver<Trigger>>> =
        (0..n).map(|_| None).collect();
    let mut sink_recovery: Vec<Option<(u64, NodeState)>> = (0..n).map(|_| None).collect();
    let mut handle = None;
    if let Some(settings) = &options.checkpoints {
        let sources: Vec<bool> = nodes
            .iter()
            .map(|n| matches!(n.kind, NodeKind::Source { .. }))
            .collect();
        let keyed: Vec<(NodeKey, bool)> = keys.iter().cloned().zip(sources).collect();
        let mut restored = find_restore(settings, &keyed).await?;
        let status = metrics.checkpoint_cell();
        let next_id = settings.store.highest_id().await? + 1;
        if let Some(r) = &restored {
            status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .restored_from = Some(r.id);
            tracing::info!(checkpoint = r.id, store = %settings.store.location(), "recovering from checkpoint");
        }
        let restored_id = restored.as_ref().map(|r| r.id);
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        let (committed_tx, committed_rx) = watch::channel(restored_id.unwrap_or(0));
        let mut sources = Vec::new();
        for (id, node) in nodes.iter_mut().enumerate() {
            let state = restored.as_mut().and_then(|r| r.nodes.remove(&keys[id]));
            match &mut node.kind {
                NodeKind::Source { source, .. } => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    sources.push(tx);
                    triggers[id] = Some(rx);
                    if let Some(state) = state {
                        source.restore(state).map_err(|e| in_node(&node.name, e))?;
                    }
                }
                NodeKind::Operator(op) => {
                    if let Some(state) = state {
                        op.restore(state).map_err(|e| in_node(&node.name, e))?;
                    }
                }
                NodeKind::Sink(sink) => {
                    sink.enable_checkpoints(&settings.pipeline_name);
                    if let Some(state) = state {
                        let checkpoint = restored.as_ref().map_or(0, |r| r.id);
                        sink_recovery[id] = Some((checkpoint, state));
                    }
                }
            }
        }
        handle = Some(Handle {
            reports: reports_tx,
            committed: committed_rx,
        });
        let coordinator = Coordinator {
            store: settings.store.clone(),
            interval: settings.interval,
            fingerprint: settings.fingerprint.clone(),
            next_id,
            base: restored_id,
            incremental: settings.incremental,
            nodes: n,
            sources,
            reports: reports_rx,
            committed: committed_tx,
            stop: options.stop.clone(),
            status,
        };
        tasks.spawn(async move { coordinator.run().await.map(|()| TaskEnd::Finished(None)) });
    }

    for (id, (node, outputs)) in nodes.into_iter().zip(senders).enumerate() {
        let inputs: Vec<Receiver<Message>> = receivers[id]
            .iter_mut()
            .map(|r| r.take().expect("each receiver is taken once"))
            .collect();
        let stop = options.stop.clone();
        let Node {
            name,
            kind,
            metrics,
            schema,
            late,
            ..
        } = node;
        let checkpointing = handle.clone().map(|handle| Checkpointing {
            node: keys[id].clone(),
            handle,
        });
        match kind {
            NodeKind::Source { source, watermark } => {
                let task = SourceTask {
                    name,
                    outputs,
                    metrics,
                    stop,
                    checkpointing: checkpointing.zip(triggers[id].take()),
                };
                tasks.spawn(task.run(source, watermark));
            }
            NodeKind::Operator(op) => {
                tasks.spawn(run_operator(
                    name,
                    op,
                    inputs,
                    outputs,
                    metrics,
                    late,
                    checkpointing,
                ));
            }
            NodeKind::Sink(sink) => {
                let input = inputs.into_iter().next().expect("a sink has one input");
                let recovery = sink_recovery[id].take();
                tasks.spawn(run_sink(
                    name,
                    sink,
                    schema,
                    input,
                    metrics,
                    checkpointing,
                    recovery,
                ));
            }
        }
    }
    drop(handle);

    let mut sinks = Vec::new();
    let mut failure: Option<EngineError> = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(TaskEnd::Finished(Some(summary)))) => sinks.push(summary),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                if failure.is_none() {
                    failure = Some(e);
                    tasks.abort_all();
                }
            }
            Err(join_error) if join_error.is_cancelled() => {}
            Err(join_error) => {
                if failure.is_none() {
                    failure = Some(EngineError::Internal(format!(
                        "a pipeline task panicked: {join_error}"
                    )));
                    tasks.abort_all();
                }
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    sinks.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(RunSummary {
        totals: metrics.snapshot(),
        sinks,
        elapsed: started.elapsed(),
    })
}

/// Sends `msg` to every output; false if any downstream is gone.
async fn broadcast(outputs: &[Sender<Message>], msg: Message) -> bool {
    if let Some((last, rest)) = outputs.split_last() {
        for tx in rest {
            if tx.send(msg.clone()).await.is_err() {
                return false;
            }
        }
        if last.send(msg).await.is_err() {
            return false;
        }
    }
    true
}

fn record_watermark(metrics: &NodeMetrics, w: Watermark) {
    if let Watermark::EventTime(t) = w {
        metrics.watermark.fetch_max(t, Ordering::Relaxed);
        if t != crate::message::EventTime::MAX {
            metrics.watermark_before_end.fetch_max(t, Ordering::Relaxed);
        }
    }
}

/// Prefixes an error with the node it happened in, keeping its kind.
fn in_node(name: &str, e: EngineError) -> EngineError {
    match e {
        EngineError::BadRecord { .. } => e,
        EngineError::User(m) => EngineError::User(format!("{name}: {m}")),
        EngineError::External { context, source } => EngineError::External {
            context: format!("{name}: {context}"),
            source,
        },
        EngineError::Compute { context, source } => EngineError::Compute {
            context: format!("{name}: {context}"),
            source,
        },
        EngineError::Internal(m) => EngineError::Internal(format!("{name}: {m}")),
    }
}
