//! An operator node's task: merges its inputs, combines their watermarks and aligns
//! checkpoint barriers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use futures::stream::{self, BoxStream};
use tokio::sync::mpsc::{Receiver, Sender};

use super::{Checkpointing, TaskEnd, broadcast, in_node, record_watermark};
use crate::error::{EngineError, Result};
use crate::late_rows::LateRows;
use crate::message::{CheckpointBarrier, Message, Watermark};
use crate::metrics::NodeMetrics;
use crate::operator::{Operator, Output, TICK_INTERVAL};
use crate::watermark::InputWatermarks;

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

/// Where an operator task's results go: its downstream edges, its counters, and the
/// late-row handlers of the sources upstream.
struct Emitter {
    name: String,
    outputs: Vec<Sender<Message>>,
    metrics: Arc<NodeMetrics>,
    late: Vec<Arc<LateRows>>,
}

impl Emitter {
    /// Sends what the operator emitted downstream, counts it, and hands its late rows over.
    /// `Ok(false)` if a downstream task is gone.
    async fn flush(&self, out: &mut Output) -> Result<bool> {
        let metrics = &self.metrics;
        let (late, windows) = out.take_counters();
        if late > 0 && metrics.late_rows.load(Ordering::Relaxed) == 0 {
            tracing::warn!(
                operator = %metrics.name,
                "rows arrived after their window closed: they are dropped and counted as late (see the run summary; late_dead_letter_path keeps them); a larger WATERMARK delay keeps them in their windows"
            );
        }
        for (rows, reason) in out.take_late() {
            for handler in &self.late {
                handler
                    .record(&self.name, &rows, &reason)
                    .map_err(|e| in_node(&self.name, e))?;
            }
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
            if !broadcast(&self.outputs, msg).await {
                return Ok(false);
            }
        }
        Ok(true)
    }
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

pub(super) async fn run_operator(
    name: String,
    mut op: Box<dyn Operator>,
    inputs: Vec<Receiver<Message>>,
    outputs: Vec<Sender<Message>>,
    metrics: Arc<NodeMetrics>,
    late: Vec<Arc<LateRows>>,
    checkpointing: Option<Checkpointing>,
) -> Result<TaskEnd> {
    let n = inputs.len();
    let emitter = Emitter {
        name: name.clone(),
        outputs,
        metrics: metrics.clone(),
        late,
    };
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
    let mut tick = tokio::time::interval(TICK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (i, msg) = match replay.pop_front() {
            Some((i, m)) => (i, Some(m)),
            None => tokio::select! {
                next = merged.next() => match next {
                    Some(next) => next,
                    None => return Ok(TaskEnd::Aborted),
                },
                _ = tick.tick(), if !finished => {
                    op.on_tick(&mut out).map_err(|e| in_node(&name, e))?;
                    metrics.set_open_state(op.open_state());
                    if !emitter.flush(&mut out).await? {
                        return Ok(TaskEnd::Aborted);
                    }
                    continue;
                }
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
                    if !emitter.flush(&mut out).await? {
                        return Ok(TaskEnd::Aborted);
                    }
                    if let Some(c) = &checkpointing {
                        let state = op.snapshot_at(&barrier).map_err(|e| in_node(&name, e))?;
                        c.report(barrier.id, state)?;
                    }
                    if !broadcast(&emitter.outputs, Message::Barrier(barrier)).await {
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
                    if !emitter.flush(&mut out).await?
                        || !broadcast(&emitter.outputs, Message::EndOfStream).await
                    {
                        return Ok(TaskEnd::Aborted);
                    }
                    return Ok(TaskEnd::Finished(None));
                }
            }
        }
        metrics.set_open_state(op.open_state());
        if !emitter.flush(&mut out).await? {
            return Ok(TaskEnd::Aborted);
        }
    }
}
