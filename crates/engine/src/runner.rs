//! Runs a [`Dataflow`] on tokio: one task per node, bounded channels between them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::{self, BoxStream};
use tokio::sync::mpsc::{Receiver, Sender, channel};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::{EngineError, Result};
use crate::graph::{Dataflow, Node, NodeKind};
use crate::message::{Message, Watermark};
use crate::metrics::{MetricsSnapshot, NodeMetrics};
use crate::operator::{Operator, Output};
use crate::sink::{Sink, SinkSummary};
use crate::source::{Source, SourcePoll};
use crate::watermark::{InputWatermarks, SplitWatermarks, WatermarkStrategy};

/// How a pipeline runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Messages buffered on each edge before the sender waits (backpressure).
    pub channel_capacity: usize,
    /// Cancel to stop: sources stop reading, then everything in flight drains to the sinks,
    /// windows are flushed, and sinks commit.
    pub stop: CancellationToken,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            channel_capacity: 16,
            stop: CancellationToken::new(),
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

/// Runs `dataflow` until every source has finished (bounded) or `options.stop` is cancelled,
/// and every sink has closed. The first error stops all tasks and is returned.
pub async fn run(dataflow: Dataflow, options: RunOptions) -> Result<RunSummary> {
    let started = Instant::now();
    let (nodes, metrics) = dataflow.into_parts();
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
        match kind {
            NodeKind::Source { source, watermark } => {
                tasks.spawn(run_source(name, source, watermark, outputs, metrics, stop));
            }
            NodeKind::Operator(op) => {
                tasks.spawn(run_operator(name, op, inputs, outputs, metrics));
            }
            NodeKind::Sink(sink) => {
                let input = inputs.into_iter().next().expect("a sink has one input");
                tasks.spawn(run_sink(name, sink, schema, input, metrics));
            }
        }
    }

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

async fn run_source(
    name: String,
    mut source: Box<dyn Source>,
    strategy: WatermarkStrategy,
    outputs: Vec<Sender<Message>>,
    metrics: Arc<NodeMetrics>,
    stop: CancellationToken,
) -> Result<TaskEnd> {
    source.open().await.map_err(|e| in_node(&name, e))?;
    let mut splits = SplitWatermarks::new();
    let processing_time = matches!(strategy, WatermarkStrategy::ProcessingTime);
    loop {
        if stop.is_cancelled() {
            tracing::info!(source = %name, "stop requested: draining");
            break;
        }
        let now = Instant::now();
        match source.poll_next().await.map_err(|e| in_node(&name, e))? {
            SourcePoll::Batch { split, batch } => {
                let rows = batch.num_rows() as u64;
                if rows == 0 {
                    continue;
                }
                NodeMetrics::add(&metrics.rows_in, rows);
                NodeMetrics::add(&metrics.rows_out, rows);
                let candidate = strategy.candidate(&batch).map_err(|e| in_node(&name, e))?;
                let split = if processing_time {
                    CLOCK_SPLIT
                } else {
                    split.as_str()
                };
                splits.observe(split, candidate, now);
                if !broadcast(&outputs, Message::Batch(batch)).await {
                    return Ok(TaskEnd::Aborted);
                }
            }
            SourcePoll::Idle => {
                if processing_time {
                    splits.observe(CLOCK_SPLIT, Some(crate::time::now()), now);
                }
            }
            SourcePoll::SplitStarted(split) => {
                if !processing_time {
                    splits.start_split(&split, now);
                }
            }
            SourcePoll::SplitFinished(split) => {
                if !processing_time {
                    splits.finish_split(&split);
                }
            }
            SourcePoll::Finished => break,
        }
        if let Some(timeout) = strategy.idle_timeout() {
            splits.mark_idle(timeout, Instant::now());
        }
        if let Some(w) = splits.advance() {
            record_watermark(&metrics, w);
            if !broadcast(&outputs, Message::Watermark(w)).await {
                return Ok(TaskEnd::Aborted);
            }
        }
    }
    record_watermark(&metrics, Watermark::END);
    if !broadcast(&outputs, Message::Watermark(Watermark::END)).await
        || !broadcast(&outputs, Message::EndOfStream).await
    {
        return Ok(TaskEnd::Aborted);
    }
    Ok(TaskEnd::Finished(None))
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

async fn run_operator(
    name: String,
    mut op: Box<dyn Operator>,
    inputs: Vec<Receiver<Message>>,
    outputs: Vec<Sender<Message>>,
    metrics: Arc<NodeMetrics>,
) -> Result<TaskEnd> {
    let n = inputs.len();
    let mut watermarks = InputWatermarks::new(n);
    let mut ended = vec![false; n];
    let mut merged = merge_inputs(inputs);
    let mut out = Output::default();
    while let Some((i, msg)) = merged.next().await {
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
                if let Some(combined) = watermarks.update(i, w) {
                    op.process_watermark(combined, &mut out)
                        .map_err(|e| in_node(&name, e))?;
                }
            }
            Some(Message::Barrier(_)) => {}
            Some(Message::EndOfStream) => {
                ended[i] = true;
                if let Some(combined) = watermarks.end(i) {
                    op.process_watermark(combined, &mut out)
                        .map_err(|e| in_node(&name, e))?;
                }
                if ended.iter().all(|e| *e) {
                    op.finish(&mut out).map_err(|e| in_node(&name, e))?;
                    out.watermark(Watermark::END);
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
    Ok(TaskEnd::Aborted)
}

async fn run_sink(
    name: String,
    mut sink: Box<dyn Sink>,
    schema: datafusion::arrow::datatypes::SchemaRef,
    mut input: Receiver<Message>,
    metrics: Arc<NodeMetrics>,
) -> Result<TaskEnd> {
    sink.open(schema).await.map_err(|e| in_node(&name, e))?;
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
                Some(Message::Barrier(_)) => {}
                Some(Message::EndOfStream) => break,
                None => return Ok(TaskEnd::Aborted),
            },
            _ = tick.tick() => sink.maintain().await.map_err(|e| in_node(&name, e))?,
        }
    }
    let summary = sink.close().await.map_err(|e| in_node(&name, e))?;
    Ok(TaskEnd::Finished(Some((name, summary))))
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
