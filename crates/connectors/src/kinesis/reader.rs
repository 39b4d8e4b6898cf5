//! Reads one shard: GetRecords in a loop, paced to the service's limits, decoding each response
//! into batches that are handed to the source with the position after them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use laketide_engine::{CaughtUpSplits, EngineError};
use tokio::sync::mpsc::Sender;

use super::client::{CallError, StreamClient};
use super::config::{MIN_GET_RECORDS_INTERVAL, StartPosition};
use super::decode::KinesisDecoder;
use super::position::{IteratorStart, ShardPosition};

/// What shard readers tell the source, in shard order.
#[derive(Debug)]
pub enum ShardEvent {
    /// Rows read (or `None` if all records were bad), and the position after them.
    Records {
        /// The shard.
        shard: String,
        /// The rows.
        batch: Option<RecordBatch>,
        /// The position after the last record of the batch.
        position: ShardPosition,
    },
    /// The shard is closed and was read to its end.
    Finished(String),
    /// The reader stopped on an error.
    Failed(EngineError),
}

/// The settings every shard reader of a source shares.
#[derive(Debug)]
pub struct ReaderSettings {
    /// The client, with its retry policy.
    pub client: StreamClient,
    /// Decodes responses.
    pub decoder: KinesisDecoder,
    /// GetRecords `Limit`.
    pub max_records_per_request: i32,
    /// The longest wait between calls on an idle shard.
    pub poll_interval: Duration,
    /// Which shards have nothing to deliver (the source's evidence of idleness).
    pub caught_up: CaughtUpSplits,
}

/// Reads `shard` from `position` until it is finished, the channel closes, or an error.
pub async fn read_shard(
    settings: Arc<ReaderSettings>,
    shard: String,
    position: ShardPosition,
    events: Sender<ShardEvent>,
) {
    let mut reader = ShardReader {
        settings,
        shard,
        position,
        events,
    };
    if let Err(e) = reader.run().await {
        let _ = reader.events.send(ShardEvent::Failed(e)).await;
    }
}

struct ShardReader {
    settings: Arc<ReaderSettings>,
    shard: String,
    /// The position after the last record handed to the source.
    position: ShardPosition,
    events: Sender<ShardEvent>,
}

impl ShardReader {
    async fn run(&mut self) -> Result<(), EngineError> {
        let client = &self.settings.client;
        let mut iterator: Option<String> = None;
        // Records of this aggregate up to this sub-sequence were delivered before a restart.
        let mut skip: Option<(String, u64)> = None;
        let mut last_call: Option<Instant> = None;
        let mut idle_wait = MIN_GET_RECORDS_INTERVAL;
        loop {
            let current = match &iterator {
                Some(it) => it.clone(),
                None => {
                    let Some(start) = self.position.iterator_start() else {
                        return self.finish().await;
                    };
                    if let IteratorStart::AtSkipping {
                        sequence,
                        skip_through,
                    } = &start
                    {
                        skip = Some((sequence.clone(), *skip_through));
                    }
                    let fetched_at = chrono::Utc::now().timestamp_millis();
                    let it = client.shard_iterator(&self.shard, &start).await?;
                    if start == IteratorStart::Latest {
                        // A new iterator after this one expires continues from the moment it
                        // was taken, not from a later LATEST that would skip what came between.
                        self.position =
                            ShardPosition::Initial(StartPosition::AtTimestamp(fetched_at));
                    }
                    it
                }
            };
            // At most five GetRecords per second per shard.
            if let Some(at) = last_call {
                let since = at.elapsed();
                if since < MIN_GET_RECORDS_INTERVAL {
                    tokio::time::sleep(MIN_GET_RECORDS_INTERVAL - since).await;
                }
            }
            last_call = Some(Instant::now());
            let limit = self.settings.max_records_per_request;
            let response = client
                .retrying("GetRecords", || {
                    client
                        .sdk()
                        .get_records()
                        .shard_iterator(&current)
                        .limit(limit)
                        .send()
                })
                .await;
            let out = match response {
                Ok(out) => out,
                Err(CallError::ExpiredIterator) => {
                    tracing::debug!(shard = %self.shard, "shard iterator expired; getting a new one");
                    iterator = None;
                    continue;
                }
                Err(CallError::Failed(e)) => return Err(e.into()),
            };
            let behind = out.millis_behind_latest();
            if let Some(ms) = behind {
                client.status().set_lag(&self.shard, ms);
            }
            let records = out.records();
            if !records.is_empty() {
                let bytes: usize = records.iter().map(|r| r.data().as_ref().len()).sum();
                client.status().count_bytes(bytes as u64);
                let chunks = self.settings.decoder.decode(
                    &self.shard,
                    records,
                    skip.as_ref().map(|(s, n)| (s.as_str(), *n)),
                )?;
                skip = None;
                for chunk in chunks {
                    self.position = chunk.position.clone();
                    // Counted before it is sent: a shard with rows in flight is never idle.
                    self.settings.caught_up.queued(&self.shard);
                    let event = ShardEvent::Records {
                        shard: self.shard.clone(),
                        batch: chunk.batch,
                        position: chunk.position,
                    };
                    if self.events.send(event).await.is_err() {
                        return Ok(()); // the source is gone
                    }
                }
            }
            match out.next_shard_iterator() {
                None => return self.finish().await,
                Some(next) => iterator = Some(next.to_string()),
            }
            if records.is_empty() && behind.unwrap_or(0) == 0 {
                self.settings
                    .caught_up
                    .found_nothing(&self.shard, Instant::now());
            } else if records.is_empty() {
                self.settings.caught_up.behind(&self.shard);
            }
            // Poll an idle shard less often, up to `poll_interval`; a busy one at full rate.
            if records.is_empty() && behind.unwrap_or(0) == 0 {
                tokio::time::sleep(idle_wait).await;
                idle_wait = (idle_wait * 2).min(self.settings.poll_interval);
            } else {
                idle_wait = MIN_GET_RECORDS_INTERVAL;
            }
        }
    }

    async fn finish(&mut self) -> Result<(), EngineError> {
        self.settings.client.status().remove_split(&self.shard);
        let _ = self
            .events
            .send(ShardEvent::Finished(self.shard.clone()))
            .await;
        Ok(())
    }
}
