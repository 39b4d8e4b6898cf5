//! Runs a [`Dataflow`] on tokio: one task per node, bounded channels between them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::{self, BoxStream};
use tokio::sync::mpsc::{self, Receiver, Sender, channel};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::coordinator::{Coordinator, Handle, Report, Trigger};
use crate::checkpoint::{CheckpointSettings, NodeKey, Recovery};
use crate::error::{EngineError, Result};
use crate::graph::{Dataflow, Node, NodeKind};
use crate::message::{CheckpointBarrier, Message, Watermark};
use crate::metrics::{MetricsSnapshot, NodeMetrics};
use crate::operator::{Operator, Output};
use crate::sink::{Sink, SinkSummary};
use crate::source::{Source, SourcePoll};
use crate::state::NodeState;
use crate::watermark::{InputWatermarks, SplitWatermarks, WatermarkStrategy};

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

/// The state to restore, per node, and the checkpoint it comes from.
struct Restored {
    id: u64,
    nodes: BTreeMap<NodeKey, NodeState>,
}

/// Finds the checkpoint to recover from, as `settings.recovery` says. `nodes` lists the
/// dataflow's nodes with whether each is a source.
async fn find_restore(
    settings: &CheckpointSettings,
    nodes: &[(NodeKey, bool)],
) -> Result<Option<Restored>> {
    if settings.recovery == Recovery::FromScratch {
        return Ok(None);
    }
    let Some(checkpoint) = settings.store.latest().await? else {
        return Ok(None);
    };
    let mut states = checkpoint.nodes;
    let is_source = |k: &NodeKey| nodes.iter().any(|(n, source)| n == k && *source);
    let changed = checkpoint.pipeline != settings.fingerprint;
    if changed && settings.recovery != Recovery::KeepSourcePositions {
        return Err(EngineError::User(format!(
            "the pipeline has changed since checkpoint {} in {} was taken, so its state does not fit; run with --from-scratch to start over, or --keep-positions to keep only the source read positions",
            checkpoint.id,
            settings.store.location()
        )));
    }
    if changed {
        tracing::warn!(
            checkpoint = checkpoint.id,
            "the pipeline changed: keeping only the source positions of the checkpoint"
        );
    }
    if settings.recovery == Recovery::KeepSourcePositions {
        states.retain(|k, _| is_source(k));
    }
    for key in states.keys() {
        if !nodes.iter().any(|(n, _)| n == key) {
            return Err(EngineError::User(format!(
                "checkpoint {} in {} holds state of node [{}] {} which this pipeline does not have; run with --from-scratch to start over",
                checkpoint.id,
                settings.store.location(),
                key.id,
                key.name
            )));
        }
    }
    Ok(Some(Restored {
        id: checkpoint.id,
        nodes: states,
    }))
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

    let mut tasks = JoinSet::new();
    // Checkpointing: restore state, then start the coordinator.
    let mut triggers: Vec<Option<mpsc::UnboundedReceiver<Trigger>>> =
        (0..n).map(|_| None).collect();
    let mut sink_recovery: Vec<Option<(u64, NodeState)>> = (0..n).map(|_| None).collect();
    let mut handle = None;
    if let Some(settings) = &options.checkpoints {
        let keys: Vec<(NodeKey, bool)> = nodes
            .iter()
            .enumerate()
            .map(|(id, n)| {
                let key = NodeKey {
                    id,
                    name: n.name.clone(),
                };
                (key, matches!(n.kind, NodeKind::Source { .. }))
            })
            .collect();
        let mut restored = find_restore(settings, &keys).await?;
        let status = metrics.checkpoint_cell();
        let next_id = settings.store.highest_id().await? + 1;
        if let Some(r) = &restored {
            status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .restored_from = Some(r.id);
            tracing::info!(checkpoint = r.id, store = %settings.store.location(), "recovering from checkpoint");
        }
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        let (committed_tx, committed_rx) = watch::channel(restored.as_ref().map_or(0, |r| r.id));
        let mut sources = Vec::new();
        for (id, node) in nodes.iter_mut().enumerate() {
            let key = NodeKey {
                id,
                name: node.name.clone(),
            };
            let state = restored.as_mut().and_then(|r| r.nodes.remove(&key));
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
            ..
        } = node;
        let checkpointing = handle.clone().map(|handle| Checkpointing {
            node: NodeKey {
                id,
                name: name.clone(),
            },
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
    }
}

/// Split id under which processing-time watermarks are tracked.
const CLOCK_SPLIT: &str = "processing-time";

/// A source node's task.
struct SourceTask {
    name: String,
    outputs: Vec<Sender<Message>>,
    metrics: Arc<NodeMetrics>,
    stop: CancellationToken,
    checkpointing: Option<(Checkpointing, mpsc::UnboundedReceiver<Trigger>)>,
}

/// What the source loop does next.
enum Step {
    Continue,
    /// The source has read everything (bounded).
    Done,
    Aborted,
}

impl SourceTask {
    async fn run(
        mut self,
        mut source: Box<dyn Source>,
        strategy: WatermarkStrategy,
    ) -> Result<TaskEnd> {
        let name = self.name.clone();
        source.open().await.map_err(|e| in_node(&name, e))?;
        let mut splits = SplitWatermarks::new();
        let processing_time = matches!(strategy, WatermarkStrategy::ProcessingTime);
        // Whether reading has stopped and, with checkpoints, the task waits for the last one.
        let mut reading = true;
        loop {
            if self.checkpointing.is_some() {
                match self.answer_triggers(source.as_mut(), !reading).await? {
                    Some(end) => return Ok(end),
                    None if !reading => continue,
                    None => {}
                }
            }
            if self.stop.is_cancelled() {
                tracing::info!(source = %name, "stop requested");
                if self.checkpointing.is_some() {
                    // The coordinator takes a last checkpoint; windows stay open in it.
                    reading = false;
                    continue;
                }
                break;
            }
            let now = Instant::now();
            let step = match source.poll_next().await.map_err(|e| in_node(&name, e))? {
                SourcePoll::Batch { split, batch } => {
                    let rows = batch.num_rows() as u64;
                    if rows == 0 {
                        continue;
                    }
                    NodeMetrics::add(&self.metrics.rows_in, rows);
                    NodeMetrics::add(&self.metrics.rows_out, rows);
                    let candidate = strategy.candidate(&batch).map_err(|e| in_node(&name, e))?;
                    let split = if processing_time {
                        CLOCK_SPLIT
                    } else {
                        split.as_str()
                    };
                    splits.observe(split, candidate, now);
                    if broadcast(&self.outputs, Message::Batch(batch)).await {
                        Step::Continue
                    } else {
                        Step::Aborted
                    }
                }
                SourcePoll::Idle => {
                    if processing_time {
                        splits.observe(CLOCK_SPLIT, Some(crate::time::now()), now);
                    }
                    Step::Continue
                }
                SourcePoll::SplitStarted(split) => {
                    if !processing_time {
                        splits.start_split(&split, now);
                    }
                    Step::Continue
                }
                SourcePoll::SplitFinished(split) => {
                    if !processing_time {
                        splits.finish_split(&split);
                    }
                    Step::Continue
                }
                SourcePoll::Finished => Step::Done,
            };
            match step {
                Step::Aborted => return Ok(TaskEnd::Aborted),
                Step::Done => {
                    if !self.send_end().await {
                        return Ok(TaskEnd::Aborted);
                    }
                    let Some((c, _)) = &self.checkpointing else {
                        return Ok(if broadcast(&self.outputs, Message::EndOfStream).await {
                            TaskEnd::Finished(None)
                        } else {
                            TaskEnd::Aborted
                        });
                    };
                    // Everything is read and flushed downstream; the last checkpoint, taken
                    // when every source is here, ends the stream.
                    let _ = c.handle.reports.send(Report::SourceFinished);
                    reading = false;
                    continue;
                }
                Step::Continue => {}
            }
            if let Some(timeout) = strategy.idle_timeout() {
                splits.mark_idle(timeout, Instant::now());
            }
            if let Some(w) = splits.advance() {
                record_watermark(&self.metrics, w);
                if !broadcast(&self.outputs, Message::Watermark(w)).await {
                    return Ok(TaskEnd::Aborted);
                }
            }
        }
        // Stopped without checkpoints: drain what is in flight and flush the windows.
        if !self.send_end().await || !broadcast(&self.outputs, Message::EndOfStream).await {
            return Ok(TaskEnd::Aborted);
        }
        Ok(TaskEnd::Finished(None))
    }

    /// Sends the watermark that closes every window.
    async fn send_end(&self) -> bool {
        record_watermark(&self.metrics, Watermark::END);
        broadcast(&self.outputs, Message::Watermark(Watermark::END)).await
    }

    /// Takes the checkpoints the coordinator asked for (waiting for one when `wait`): saves
    /// the source's positions and sends the barrier. After the last checkpoint the stream
    /// ends, and the task's end is returned.
    async fn answer_triggers(
        &mut self,
        source: &mut dyn Source,
        wait: bool,
    ) -> Result<Option<TaskEnd>> {
        let Some((c, triggers)) = &mut self.checkpointing else {
            return Ok(None);
        };
        let mut first = if wait {
            match triggers.recv().await {
                Some(t) => Some(t),
                None => return Ok(Some(TaskEnd::Aborted)),
            }
        } else {
            None
        };
        loop {
            let trigger = match first.take() {
                Some(t) => t,
                None => match triggers.try_recv() {
                    Ok(t) => t,
                    Err(_) => return Ok(None),
                },
            };
            let state = source.snapshot().map_err(|e| in_node(&self.name, e))?;
            c.report(trigger.barrier.id, state)?;
            if !broadcast(&self.outputs, Message::Barrier(trigger.barrier)).await {
                return Ok(Some(TaskEnd::Aborted));
            }
            if trigger.last {
                return Ok(Some(
                    if broadcast(&self.outputs, Message::EndOfStream).await {
                        TaskEnd::Finished(None)
                    } else {
                        TaskEnd::Aborted
                    },
                ));
            }
        }
    }
}

type Tagged = (usize, Option<Message>);

fn merge_inputs(inputs: Vec<Receiver<Message>>) -> BoxStream<'static, Tagged> {
    let streams = inputs.into_iter().enumerate().map(|(i, rx)| {
        // Each input yields its messages, then one `None` when its channel closes.
        stream::unfold(Some(rx), move |state| async move {
            let mut rx = state?;
            match rx.recv().await {
                Some(m) => Some(((i, Some(m)), Some(rx))),
                None => Some(((i, None), None)),
            }
        })
        .boxed()
    });
    stream::select_all(streams).boxed()
}

async fn flush_output(
    out: &mut Output,
    outputs: &[Sender<Message>],
    metrics: &NodeMetrics,
) -> bool {
    let (late, windows) = out.take_counters();
    if late > 0 && metrics.late_rows.load(Ordering::Relaxed) == 0 {
        tracing::warn!(
            operator = %metrics.name,
            "rows arrived after their window closed: they are dropped and counted as late (see the run summary); a larger WATERMARK delay keeps them"
        );
    }
    NodeMetrics::add(&metrics.late_rows, late);
    NodeMetrics::add(&metrics.windows_emitted, windows);
    let messages: Vec<Message> = out.drain().collect();
    for msg in messages {
        match &msg {
            Message::Batch(b) => NodeMetrics::add(&metrics.rows_out, b.num_rows() as u64),
            Message::Watermark(w) => record_watermark(metrics, *w),
            _ => {}
        }
        if !broadcast(outputs, msg).await {
            return false;
        }
    }
    true
}

/// Barrier alignment of one operator: inputs that delivered the current barrier are held
/// back until it has arrived on every input that has not ended.
struct Alignment {
    barrier: Option<CheckpointBarrier>,
    arrived: Vec<bool>,
    held: Vec<VecDeque<Message>>,
}

impl Alignment {
    fn new(inputs: usize) -> Self {
        Alignment {
            barrier: None,
            arrived: vec![false; inputs],
            held: (0..inputs).map(|_| VecDeque::new()).collect(),
        }
    }

    fn is_held(&self, input: usize) -> bool {
        self.arrived[input]
    }

    /// Records the barrier on `input`; true when every live input has delivered it.
    fn arrive(&mut self, input: usize, barrier: CheckpointBarrier, ended: &[bool]) -> Result<bool> {
        if let Some(b) = self.barrier
            && b.id != barrier.id
        {
            return Err(EngineError::Internal(format!(
                "barrier {} arrived while aligning barrier {}",
                barrier.id, b.id
            )));
        }
        self.barrier = Some(barrier);
        self.arrived[input] = true;
        Ok(self
            .arrived
            .iter()
            .zip(ended)
            .all(|(arrived, ended)| *arrived || *ended))
    }

    /// Ends the alignment: returns the held messages, per input in their order.
    fn release(&mut self) -> Vec<(usize, Message)> {
        self.barrier = None;
        self.arrived.iter_mut().for_each(|a| *a = false);
        let mut released = Vec::new();
        for (i, held) in self.held.iter_mut().enumerate() {
            released.extend(held.drain(..).map(|m| (i, m)));
        }
        released
    }
}

async fn run_operator(
    name: String,
    mut op: Box<dyn Operator>,
    inputs: Vec<Receiver<Message>>,
    outputs: Vec<Sender<Message>>,
    metrics: Arc<NodeMetrics>,
    checkpointing: Option<Checkpointing>,
) -> Result<TaskEnd> {
    let n = inputs.len();
    let mut watermarks = InputWatermarks::new(n);
    let mut ended = vec![false; n];
    // Inputs whose stream drained to the end watermark (rather than stopping at a last
    // checkpoint, which keeps the windows for the next run).
    let mut drained = vec![false; n];
    let mut finished = false;
    let mut merged = merge_inputs(inputs);
    let mut alignment = Alignment::new(n);
    let mut replay: VecDeque<(usize, Message)> = VecDeque::new();
    let mut out = Output::default();
    loop {
        let (i, msg) = match replay.pop_front() {
            Some((i, m)) => (i, Some(m)),
            None => match merged.next().await {
                Some(next) => next,
                None => return Ok(TaskEnd::Aborted),
            },
        };
        if let Some(m) = msg.as_ref()
            && alignment.is_held(i)
        {
            alignment.held[i].push_back(m.clone());
            continue;
        }
        match msg {
            // The channel closed without EndOfStream: the upstream failed.
            None if !ended[i] => return Ok(TaskEnd::Aborted),
            None => {}
            Some(Message::Batch(batch)) => {
                NodeMetrics::add(&metrics.rows_in, batch.num_rows() as u64);
                op.process_batch(i, batch, &mut out)
                    .map_err(|e| in_node(&name, e))?;
            }
            Some(Message::Watermark(w)) => {
                if w == Watermark::END {
                    drained[i] = true;
                }
                if let Some(combined) = watermarks.update(i, w) {
                    op.process_watermark(combined, &mut out)
                        .map_err(|e| in_node(&name, e))?;
                }
                if !finished && drained.iter().all(|d| *d) {
                    // Every input reached its end: emit everything now, ahead of the last
                    // checkpoint's barrier, so that the checkpoint covers it.
                    op.finish(&mut out).map_err(|e| in_node(&name, e))?;
                    out.watermark(Watermark::END);
                    finished = true;
                }
            }
            Some(Message::Barrier(barrier)) => {
                if alignment.arrive(i, barrier, &ended)? {
                    // Everything before the barrier is processed and its output goes first.
                    if !flush_output(&mut out, &outputs, &metrics).await {
                        return Ok(TaskEnd::Aborted);
                    }
                    if let Some(c) = &checkpointing {
                        let state = op.snapshot().map_err(|e| in_node(&name, e))?;
                        c.report(barrier.id, state)?;
                    }
                    if !broadcast(&outputs, Message::Barrier(barrier)).await {
                        return Ok(TaskEnd::Aborted);
                    }
                    let released = alignment.release();
                    for m in released.into_iter().rev() {
                        replay.push_front(m);
                    }
                }
            }
            Some(Message::EndOfStream) => {
                // An input that ends without its end watermark stopped at a last checkpoint:
                // what the operator holds stays in that checkpoint, nothing is flushed.
                ended[i] = true;
                if ended.iter().all(|e| *e) {
                    if !flush_output(&mut out, &outputs, &metrics).await
                        || !broadcast(&outputs, Message::EndOfStream).await
                    {
                        return Ok(TaskEnd::Aborted);
                    }
                    return Ok(TaskEnd::Finished(None));
                }
            }
        }
        if !flush_output(&mut out, &outputs, &metrics).await {
            return Ok(TaskEnd::Aborted);
        }
    }
}

async fn run_sink(
    name: String,
    mut sink: Box<dyn Sink>,
    schema: datafusion::arrow::datatypes::SchemaRef,
    mut input: Receiver<Message>,
    metrics: Arc<NodeMetrics>,
    checkpointing: Option<Checkpointing>,
    recovery: Option<(u64, NodeState)>,
) -> Result<TaskEnd> {
    sink.open(schema).await.map_err(|e| in_node(&name, e))?;
    if let Some((checkpoint, state)) = recovery {
        sink.recover(checkpoint, state)
            .await
            .map_err(|e| in_node(&name, e))?;
    }
    let mut committed = checkpointing.as_ref().map(|c| c.handle.committed.clone());
    // Checkpoints prepared and not yet committed, oldest first.
    let mut prepared: VecDeque<u64> = VecDeque::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            msg = input.recv() => match msg {
                Some(Message::Batch(batch)) => {
                    let rows = batch.num_rows() as u64;
                    NodeMetrics::add(&metrics.rows_in, rows);
                    sink.write_batch(batch).await.map_err(|e| in_node(&name, e))?;
                    NodeMetrics::add(&metrics.rows_out, rows);
                }
                Some(Message::Watermark(w)) => {
                    record_watermark(&metrics, w);
                    sink.on_watermark(w).await.map_err(|e| in_node(&name, e))?;
                }
                Some(Message::Barrier(barrier)) => {
                    if let Some(c) = &checkpointing {
                        let state = sink
                            .prepare_commit(barrier.id)
                            .await
                            .map_err(|e| in_node(&name, e))?;
                        c.report(barrier.id, state)?;
                        prepared.push_back(barrier.id);
                    }
                }
                Some(Message::EndOfStream) => break,
                None => return Ok(TaskEnd::Aborted),
            },
            changed = async { committed.as_mut().expect("guarded").changed().await }, if committed.is_some() => {
                if changed.is_err() {
                    // The coordinator ended; without it nothing more is committed.
                    committed = None;
                    continue;
                }
                let upto = *committed.as_ref().expect("guarded").borrow();
                commit_prepared(sink.as_mut(), &mut prepared, upto).await.map_err(|e| in_node(&name, e))?;
            }
            _ = tick.tick() => sink.maintain().await.map_err(|e| in_node(&name, e))?,
        }
    }
    // The last checkpoint must be stored and committed before the sink closes.
    while !prepared.is_empty() {
        let Some(rx) = committed.as_mut() else {
            return Ok(TaskEnd::Aborted);
        };
        let upto = *rx.borrow_and_update();
        commit_prepared(sink.as_mut(), &mut prepared, upto)
            .await
            .map_err(|e| in_node(&name, e))?;
        if !prepared.is_empty() && rx.changed().await.is_err() {
            return Ok(TaskEnd::Aborted);
        }
    }
    let summary = sink.close().await.map_err(|e| in_node(&name, e))?;
    Ok(TaskEnd::Finished(Some((name, summary))))
}

/// Commits the prepared checkpoints up to `upto` (stored ones), in one `commit` call.
async fn commit_prepared(
    sink: &mut dyn Sink,
    prepared: &mut VecDeque<u64>,
    upto: u64,
) -> Result<()> {
    let mut newest = None;
    while prepared.front().is_some_and(|id| *id <= upto) {
        newest = prepared.pop_front();
    }
    if let Some(id) = newest {
        sink.commit(id).await?;
    }
    Ok(())
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
