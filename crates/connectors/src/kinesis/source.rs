//! The Kinesis source: discovers shards, reads each in its own task, and delivers their
//! batches with per-shard positions (for checkpoints) and per-shard watermarks (splits).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use laketide_engine::{
    BadRecords, CaughtUpSplits, EngineError, NodeState, Result, ServiceStatus, Source, SourcePoll,
    SplitId,
};
use tokio::sync::mpsc::{Receiver, Sender, channel};
use tokio::task::JoinSet;

use super::client::StreamClient;
use super::config::KinesisSourceConfig;
use super::decode::KinesisDecoder;
use super::position::ShardPosition;
use super::reader::{ReaderSettings, ShardEvent, read_shard};
use super::shards::ShardTracker;
use crate::metadata::MetadataColumn;

/// Rows per batch at most (an aggregated record can hold thousands of user records).
const MAX_BATCH_ROWS: usize = 8192;

/// Reads a Kinesis stream; see [`KinesisSourceConfig`].
///
/// Every shard is a split with its own watermark. A shard created by a split or merge is read
/// only after all its parents were read to their end, so the rows of one partition key arrive
/// in the order they were written. [`KinesisSource::positions`] gives the position after the
/// last row delivered by `poll_next`, per shard; a source created with those positions resumes
/// exactly after them.
pub struct KinesisSource {
    config: KinesisSourceConfig,
    schema: SchemaRef,
    metadata: Vec<MetadataColumn>,
    bad: Arc<BadRecords>,
    status: Arc<ServiceStatus>,
    tracker: ShardTracker,
    settings: Option<Arc<ReaderSettings>>,
    sender: Option<Sender<ShardEvent>>,
    events: Option<Receiver<ShardEvent>>,
    readers: JoinSet<()>,
    pending: VecDeque<SourcePoll>,
    next_discovery: Instant,
    caught_up: CaughtUpSplits,
}

impl KinesisSource {
    /// A source of rows of `schema` (with `metadata` columns filled from record metadata),
    /// resuming from `positions` (empty for a fresh start). Checks the options against the
    /// schema; does no I/O until opened.
    pub fn new(
        config: KinesisSourceConfig,
        schema: SchemaRef,
        metadata: Vec<MetadataColumn>,
        bad: Arc<BadRecords>,
        positions: BTreeMap<String, ShardPosition>,
    ) -> crate::error::Result<Self> {
        // Validate the metadata columns now, so that `laketide check` reports them.
        KinesisDecoder::new(
            &config.stream,
            schema.clone(),
            &metadata,
            config.format.clone(),
            bad.clone(),
            MAX_BATCH_ROWS,
            config.event_time_bound.clone(),
        )?;
        Ok(KinesisSource {
            tracker: ShardTracker::new(config.start_position, positions),
            config,
            schema,
            metadata,
            bad,
            status: Arc::new(ServiceStatus::default()),
            settings: None,
            sender: None,
            events: None,
            readers: JoinSet::new(),
            pending: VecDeque::new(),
            next_discovery: Instant::now(),
            caught_up: CaughtUpSplits::new(),
        })
    }

    /// The position after the last row delivered, per shard: what a checkpoint saves.
    pub fn positions(&self) -> &BTreeMap<String, ShardPosition> {
        self.tracker.positions()
    }

    async fn discover(&mut self) -> Result<()> {
        let settings = self
            .settings
            .clone()
            .ok_or_else(|| EngineError::Internal("kinesis source polled before open".into()))?;
        let listing = settings.client.list_shards().await?;
        let now = chrono::Utc::now().timestamp_millis();
        self.tracker.update(&listing, now);
        self.start_ready()?;
        self.next_discovery = Instant::now() + self.config.shard_discovery_interval;
        Ok(())
    }

    fn start_ready(&mut self) -> Result<()> {
        let (Some(settings), Some(sender)) = (&self.settings, &self.sender) else {
            return Err(EngineError::Internal(
                "kinesis source polled before open".into(),
            ));
        };
        for (shard, position) in self.tracker.take_ready() {
            tracing::debug!(%shard, ?position, stream = %self.config.stream, "reading shard");
            self.pending
                .push_back(SourcePoll::SplitStarted(shard.clone()));
            self.readers.spawn(read_shard(
                settings.clone(),
                shard,
                position,
                sender.clone(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Source for KinesisSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn open(&mut self) -> Result<()> {
        let client = StreamClient::connect(
            &self.config.stream,
            &self.config.aws,
            self.config.retry_timeout,
            self.status.clone(),
        )
        .await?;
        let decoder = KinesisDecoder::new(
            &self.config.stream,
            self.schema.clone(),
            &self.metadata,
            self.config.format.clone(),
            self.bad.clone(),
            MAX_BATCH_ROWS,
            self.config.event_time_bound.clone(),
        )?;
        self.settings = Some(Arc::new(ReaderSettings {
            client,
            decoder,
            max_records_per_request: self.config.max_records_per_request,
            poll_interval: self.config.poll_interval,
            caught_up: self.caught_up.clone(),
        }));
        // Two batches in flight per shard keep every reader busy without buffering much.
        let (tx, rx) = channel(16);
        self.sender = Some(tx);
        self.events = Some(rx);
        // Fails here, at start, if the stream does not exist or cannot be reached.
        self.discover().await
    }

    async fn poll_next(&mut self) -> Result<SourcePoll> {
        loop {
            if let Some(p) = self.pending.pop_front() {
                return Ok(p);
            }
            if Instant::now() >= self.next_discovery {
                self.discover().await?;
                continue;
            }
            if let Some(Err(e)) = self.readers.try_join_next()
                && e.is_panic()
            {
                return Err(EngineError::Internal(format!(
                    "a Kinesis shard reader of `{}` panicked: {e}",
                    self.config.stream
                )));
            }
            let events = self
                .events
                .as_mut()
                .ok_or_else(|| EngineError::Internal("kinesis source polled before open".into()))?;
            let wait = self
                .next_discovery
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(500));
            let event = match tokio::time::timeout(wait, events.recv()).await {
                Err(_) => return Ok(SourcePoll::Idle),
                Ok(None) => {
                    return Err(EngineError::Internal(
                        "the Kinesis shard readers stopped unexpectedly".into(),
                    ));
                }
                Ok(Some(event)) => event,
            };
            match event {
                ShardEvent::Records {
                    shard,
                    batch,
                    position,
                } => {
                    self.tracker.delivered(&shard, position);
                    self.caught_up.delivered(&shard, Instant::now());
                    if let Some(batch) = batch {
                        return Ok(SourcePoll::Batch {
                            split: shard,
                            batch,
                        });
                    }
                }
                ShardEvent::Finished(shard) => {
                    tracing::debug!(%shard, stream = %self.config.stream, "shard read to its end");
                    self.tracker.finished(&shard);
                    self.caught_up.remove(&shard);
                    // Its children may be listed already; if not, the next poll lists the
                    // shards again to find them.
                    self.start_ready()?;
                    self.next_discovery = Instant::now();
                    return Ok(SourcePoll::SplitFinished(shard));
                }
                ShardEvent::Failed(e) => return Err(e),
            }
        }
    }

    fn status(&self) -> Option<Arc<ServiceStatus>> {
        Some(self.status.clone())
    }

    /// Shards whose reader got no records at the shard's tip (MillisBehindLatest 0) and has
    /// nothing waiting for delivery.
    fn caught_up_splits(&self) -> Vec<(SplitId, Instant)> {
        self.caught_up.snapshot()
    }

    /// The delivered position of every shard (sequence and sub-sequence number), as
    /// `positions()` says.
    fn snapshot(&mut self) -> Result<NodeState> {
        NodeState::json(self.tracker.positions())
    }

    fn restore(&mut self, state: NodeState) -> Result<()> {
        let positions: BTreeMap<String, ShardPosition> = state.to_json()?.unwrap_or_default();
        self.tracker = ShardTracker::new(self.config.start_position, positions);
        Ok(())
    }
}
