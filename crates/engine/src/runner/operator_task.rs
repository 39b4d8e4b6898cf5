//! An operator node's task: polls its inputs, combines their watermarks and aligns
//! checkpoint barriers (parking the inputs that delivered one, see [`InputSet`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::arrow::record_batch::RecordBatch;
use tokio::sync::mpsc::{Receiver, Sender};

use super::inputs::InputSet;
use super::{Checkpointing, TaskEnd, broadcast, in_node, record_watermark};
use crate::error::{EngineError, Result};
use crate::late_rows::LateRows;
use crate::message::{CheckpointBarrier, Message, Watermark};
use crate::metrics::NodeMetrics;
use crate::operator::{Operator, Output, TICK_INTERVAL};
use crate::watermark::InputWatermarks;

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

/// Barrier alignment of one operator: which inputs delivered the barrier being aligned
/// (those are parked until it has come on every input that has not ended).
struct Alignment {
    barrier: Option<CheckpointBarrier>,
    arrived: Vec<bool>,
}

impl Alignment {
    fn new(inputs: usize) -> Self {
        Alignment {
            barrier: None,
            arrived: vec![false; inputs],
        }
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
        Ok(self.complete(ended))
    }

    /// Whether every input that has not ended delivered the barrier being aligned.
    fn complete(&self, ended: &[bool]) -> bool {
        self.barrier.is_some()
            && (self.arrived.iter())
                .zip(ended)
                .all(|(arrived, ended)| *arrived || *ended)
    }

    /// Ends the alignment.
    fn release(&mut self) {
        self.barrier = None;
        self.arrived.iter_mut().for_each(|a| *a = false);
    }
}

/// What to do after a message.
enum Next {
    Continue,
    Stop(TaskEnd),
}

/// One operator task's state between messages.
struct OperatorTask {
    name: String,
    op: Box<dyn Operator>,
    emitter: Emitter,
    checkpointing: Option<Checkpointing>,
    inputs: InputSet,
    watermarks: InputWatermarks,
    ended: Vec<bool>,
    /// Inputs whose stream drained to the end watermark (rather than stopping at a last
    /// checkpoint, which keeps the windows for the next run).
    drained: Vec<bool>,
    finished: bool,
    alignment: Alignment,
    out: Output,
}

pub(super) async fn run_operator(
    name: String,
    op: Box<dyn Operator>,
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
        metrics,
        late,
    };
    let mut task = OperatorTask {
        name,
        op,
        emitter,
        checkpointing,
        inputs: InputSet::new(inputs),
        watermarks: InputWatermarks::new(n),
        ended: vec![false; n],
        drained: vec![false; n],
        finished: false,
        alignment: Alignment::new(n),
        out: Output::default(),
    };
    task.run().await
}

impl OperatorTask {
    async fn run(&mut self) -> Result<TaskEnd> {
        let mut tick = tokio::time::interval(TICK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = tokio::select! {
                next = self.inputs.next() => match next {
                    Some((i, msg)) => self.handle(i, msg).await?,
                    None => Next::Stop(TaskEnd::Aborted),
                },
                _ = tick.tick(), if !self.finished => self.tick().await?,
            };
            if let Next::Stop(end) = next {
                return Ok(end);
            }
        }
    }

    async fn tick(&mut self) -> Result<Next> {
        self.op
            .on_tick(&mut self.out)
            .map_err(|e| in_node(&self.name, e))?;
        self.flush().await
    }

    /// Counts the open state and sends what the operator emitted.
    async fn flush(&mut self) -> Result<Next> {
        self.emitter.metrics.set_open_state(self.op.open_state());
        Ok(match self.emitter.flush(&mut self.out).await? {
            true => Next::Continue,
            false => Next::Stop(TaskEnd::Aborted),
        })
    }

    async fn handle(&mut self, i: usize, msg: Option<Message>) -> Result<Next> {
        match msg {
            // The channel closed without EndOfStream: the upstream failed.
            None if !self.ended[i] => return Ok(Next::Stop(TaskEnd::Aborted)),
            None => {}
            Some(Message::Batch(batch)) => {
                NodeMetrics::add(&self.emitter.metrics.rows_in, batch.num_rows() as u64);
                self.batch(i, batch).await?;
            }
            Some(Message::Watermark(w)) => self.watermark(i, w)?,
            Some(Message::Barrier(barrier)) => {
                if self.alignment.arrive(i, barrier, &self.ended)? {
                    return self.checkpoint(barrier).await;
                }
                self.inputs.park(i);
            }
            Some(Message::EndOfStream) => return self.end_of(i).await,
        }
        self.flush().await
    }

    /// A batch of input `i`, with what the operator fetches for it first, if anything.
    async fn batch(&mut self, i: usize, batch: RecordBatch) -> Result<()> {
        let processed = match self.op.fetch(i, &batch) {
            None => self.op.process_batch(i, batch, &mut self.out),
            Some(fetch) => {
                let fetched = fetch.await.map_err(|e| in_node(&self.name, e))?;
                self.op.process_fetched(i, batch, fetched, &mut self.out)
            }
        };
        processed.map_err(|e| in_node(&self.name, e))
    }

    /// Input `i`'s watermark: the operator sees it, then the combined one if that advanced.
    fn watermark(&mut self, i: usize, w: Watermark) -> Result<()> {
        if w == Watermark::END {
            self.drained[i] = true;
        }
        let before = self.watermarks.of_input(i);
        let combined = self.watermarks.update(i, w);
        let after = self.watermarks.of_input(i);
        if let Some(own) = after.filter(|a| Some(*a) != before) {
            self.op
                .process_input_watermark(i, own, &mut self.out)
                .map_err(|e| in_node(&self.name, e))?;
        }
        if let Some(combined) = combined {
            self.op
                .process_watermark(combined, &mut self.out)
                .map_err(|e| in_node(&self.name, e))?;
        }
        if !self.finished && self.drained.iter().all(|d| *d) {
            // Every input reached its end: emit everything now, ahead of the last
            // checkpoint's barrier, so that the checkpoint covers it.
            self.op
                .finish(&mut self.out)
                .map_err(|e| in_node(&self.name, e))?;
            self.out.watermark(Watermark::END);
            self.finished = true;
        }
        Ok(())
    }

    /// The barrier came on every live input: everything before it is processed and its
    /// output goes first, then the snapshot, then the barrier; the inputs are polled again.
    async fn checkpoint(&mut self, barrier: CheckpointBarrier) -> Result<Next> {
        if let Next::Stop(end) = self.flush().await? {
            return Ok(Next::Stop(end));
        }
        if let Some(c) = &self.checkpointing {
            let state = (self.op)
                .snapshot_at(&barrier)
                .map_err(|e| in_node(&self.name, e))?;
            c.report(barrier.id, state)?;
        }
        if !broadcast(&self.emitter.outputs, Message::Barrier(barrier)).await {
            return Ok(Next::Stop(TaskEnd::Aborted));
        }
        self.alignment.release();
        self.inputs.unpark_all();
        Ok(Next::Continue)
    }

    /// Input `i` ended. An input that ends without its end watermark stopped at a last
    /// checkpoint: what the operator holds stays in that checkpoint, nothing is flushed.
    async fn end_of(&mut self, i: usize) -> Result<Next> {
        self.ended[i] = true;
        if self.ended.iter().all(|e| *e) {
            if !self.emitter.flush(&mut self.out).await?
                || !broadcast(&self.emitter.outputs, Message::EndOfStream).await
            {
                return Ok(Next::Stop(TaskEnd::Aborted));
            }
            return Ok(Next::Stop(TaskEnd::Finished(None)));
        }
        // The inputs still aligning a barrier may have been waiting for this one only.
        if self.alignment.complete(&self.ended) {
            let barrier = self.alignment.barrier.expect("aligning");
            return self.checkpoint(barrier).await;
        }
        self.flush().await
    }
}
