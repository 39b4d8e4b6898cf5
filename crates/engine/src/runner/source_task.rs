//! A source node's task: polls the source, tracks split watermarks, answers checkpoint
//! triggers.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::{self, Sender};
use tokio_util::sync::CancellationToken;

use super::{Checkpointing, TaskEnd, broadcast, in_node, record_watermark};
use crate::checkpoint::coordinator::{Report, Trigger};
use crate::error::Result;
use crate::message::{Message, Watermark};
use crate::metrics::NodeMetrics;
use crate::source::{Source, SourcePoll};
use crate::watermark::{SplitWatermarks, WatermarkStrategy};

/// Split id under which processing-time watermarks are tracked.
const CLOCK_SPLIT: &str = "processing-time";

/// A source node's task.
pub(super) struct SourceTask {
    pub(super) name: String,
    pub(super) outputs: Vec<Sender<Message>>,
    pub(super) metrics: Arc<NodeMetrics>,
    pub(super) stop: CancellationToken,
    pub(super) checkpointing: Option<(Checkpointing, mpsc::UnboundedReceiver<Trigger>)>,
}

/// What the source loop does next.
enum Step {
    Continue,
    /// The source has read everything (bounded).
    Done,
    Aborted,
}

impl SourceTask {
    pub(super) async fn run(
        mut self,
        mut source: Box<dyn Source>,
        strategy: WatermarkStrategy,
    ) -> Result<TaskEnd> {
        let name = self.name.clone();
        source.open().await.map_err(|e| in_node(&name, e))?;
        let mut splits = SplitWatermarks::new();
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
            let poll = source.poll_next().await.map_err(|e| in_node(&name, e))?;
            let step = self.deliver(poll, &mut splits, &strategy, now).await?;
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
                // Idleness from the source's own evidence only: time spent above waiting
                // for a slow downstream never makes a split idle.
                let caught_up = source.caught_up_splits();
                splits.mark_idle(timeout, &caught_up, Instant::now());
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

    /// Acts on one poll that started at `now`: sends a batch on and tracks its split's
    /// watermark candidate, or records a split starting or finishing, or a poll that found
    /// nothing.
    async fn deliver(
        &self,
        poll: SourcePoll,
        splits: &mut SplitWatermarks,
        strategy: &WatermarkStrategy,
        now: Instant,
    ) -> Result<Step> {
        let processing_time = matches!(strategy, WatermarkStrategy::ProcessingTime);
        Ok(match poll {
            SourcePoll::Batch { split, batch } => {
                let rows = batch.num_rows() as u64;
                if rows == 0 {
                    return Ok(Step::Continue);
                }
                NodeMetrics::add(&self.metrics.rows_in, rows);
                NodeMetrics::add(&self.metrics.rows_out, rows);
                let candidate = strategy
                    .candidate(&batch)
                    .map_err(|e| in_node(&self.name, e))?;
                let split = if processing_time {
                    CLOCK_SPLIT
                } else {
                    split.as_str()
                };
                splits.observe(split, candidate);
                if broadcast(&self.outputs, Message::Batch(batch)).await {
                    Step::Continue
                } else {
                    Step::Aborted
                }
            }
            SourcePoll::Idle if processing_time => {
                splits.observe(CLOCK_SPLIT, Some(crate::time::now()));
                Step::Continue
            }
            SourcePoll::Idle => {
                splits.found_nothing(now);
                Step::Continue
            }
            SourcePoll::SplitStarted(split) => {
                if !processing_time {
                    splits.start_split(&split);
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
        })
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
