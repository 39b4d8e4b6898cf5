//! A sink node's task: writes batches, prepares commits at barriers and commits them once
//! their checkpoint is stored.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::Receiver;

use super::{Checkpointing, TaskEnd, in_node, record_watermark};
use crate::error::Result;
use crate::message::Message;
use crate::metrics::NodeMetrics;
use crate::sink::Sink;
use crate::state::NodeState;

pub(super) async fn run_sink(
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
