//! Counters of a running pipeline, read by the progress display and the run summary.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::message::EventTime;

/// Counters of one dataflow node. Updated by the node's task, read by anyone.
#[derive(Debug)]
pub struct NodeMetrics {
    /// The node's name as shown by `explain`.
    pub name: String,
    /// Rows received (for sources: rows read).
    pub rows_in: AtomicU64,
    /// Rows emitted (for sinks: rows written).
    pub rows_out: AtomicU64,
    /// Rows dropped because their window had already closed.
    pub late_rows: AtomicU64,
    /// Windows (groups of a window) emitted.
    pub windows_emitted: AtomicU64,
    /// The node's current watermark (`i64::MIN` before the first one).
    pub watermark: AtomicI64,
    /// The largest watermark other than the end of input (`i64::MIN` before the first one):
    /// how far event time really got.
    pub watermark_before_end: AtomicI64,
    /// Windows, sessions or groups an operator holds open now ([`crate::Operator::open_state`]).
    pub open_state: AtomicU64,
    /// The most it has held open at once.
    pub peak_open_state: AtomicU64,
}

impl NodeMetrics {
    fn new(name: String) -> Self {
        NodeMetrics {
            name,
            rows_in: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            late_rows: AtomicU64::new(0),
            windows_emitted: AtomicU64::new(0),
            watermark: AtomicI64::new(EventTime::MIN),
            watermark_before_end: AtomicI64::new(EventTime::MIN),
            open_state: AtomicU64::new(0),
            peak_open_state: AtomicU64::new(0),
        }
    }

    /// Records how much an operator holds open now.
    pub fn set_open_state(&self, n: u64) {
        self.open_state.store(n, Ordering::Relaxed);
        self.peak_open_state.fetch_max(n, Ordering::Relaxed);
    }

    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Live gauges a connector keeps about its data and its calls to a remote service: how far
/// each split of a source is behind the newest data (a Kinesis shard's MillisBehindLatest), how
/// often the service throttled it or a call had to be retried, and how many bytes it read or
/// sent. Updated by the connector's tasks, read by anyone; thread-safe.
#[derive(Debug, Default)]
pub struct ServiceStatus {
    lag_millis: Mutex<BTreeMap<String, i64>>,
    throttles: AtomicU64,
    retries: AtomicU64,
    bytes: AtomicU64,
}

impl ServiceStatus {
    /// Records how far `split` is behind the newest data, in milliseconds.
    pub fn set_lag(&self, split: &str, millis: i64) {
        let mut lags = self.lag_millis.lock().unwrap_or_else(|e| e.into_inner());
        match lags.get_mut(split) {
            Some(v) => *v = millis,
            None => {
                lags.insert(split.to_string(), millis);
            }
        }
    }

    /// Forgets a split that has finished.
    pub fn remove_split(&self, split: &str) {
        self.lag_millis
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(split);
    }

    /// Every split's lag, by split.
    pub fn lags(&self) -> BTreeMap<String, i64> {
        self.lag_millis
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts a throttled call.
    pub fn count_throttle(&self) {
        self.throttles.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a call retried after a failure other than throttling.
    pub fn count_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Throttled calls so far.
    pub fn throttles(&self) -> u64 {
        self.throttles.load(Ordering::Relaxed)
    }

    /// Retried calls so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Counts bytes read (a source: encoded records; a lookup table: items) or sent (a sink:
    /// request bodies, files).
    pub fn count_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes read or sent so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// The kind of a node, for aggregating counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// Reads records.
    Source,
    /// Transforms records.
    Operator,
    /// Writes records.
    Sink,
}

impl NodeRole {
    /// `source`, `operator` or `sink`, as `explain`, the dashboard and metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            NodeRole::Source => "source",
            NodeRole::Operator => "operator",
            NodeRole::Sink => "sink",
        }
    }
}

/// Every node's counters, plus the sources' bad-record counters.
#[derive(Debug, Default, Clone)]
pub struct PipelineMetrics {
    nodes: Vec<(NodeRole, Arc<NodeMetrics>)>,
    bad_records: Vec<Arc<crate::BadRecords>>,
    late_rows: Vec<Arc<crate::LateRows>>,
    services: Vec<(NodeRole, String, Arc<ServiceStatus>)>,
    checkpoint: Arc<Mutex<crate::checkpoint::CheckpointInfo>>,
}

/// A point-in-time summary of a pipeline's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Rows read by all sources.
    pub records_in: u64,
    /// Rows written by all sinks.
    pub rows_written: u64,
    /// Window results emitted by all window operators.
    pub windows_emitted: u64,
    /// Late rows dropped by all window operators.
    pub late_rows: u64,
    /// Bad records skipped or dead-lettered by all sources.
    pub bad_records: u64,
    /// Late rows per source (attributed to every source upstream of the operator that
    /// dropped them), with the file they are kept in, in registration order.
    pub late_by_source: Vec<SourceLateRows>,
    /// Sources whose watermark is ahead of the wall clock, with how far (milliseconds).
    pub ahead_of_clock: Vec<(String, i64)>,
    /// Operators that held state, with the most windows, sessions or groups each held open
    /// at once.
    pub peak_open_state: Vec<(String, u64)>,
    /// The largest lag of any split of any source, in milliseconds, if a source reports lag.
    pub max_lag_millis: Option<i64>,
    /// Calls to remote services that were throttled, over all sources, sinks and operators
    /// that call one (lookup joins).
    pub throttles: u64,
    /// The last stored checkpoint, when the run takes checkpoints and one was stored or
    /// restored.
    pub checkpoint: Option<crate::checkpoint::CheckpointInfo>,
}

/// The late rows attributed to one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLateRows {
    /// The source table.
    pub source: String,
    /// Late rows so far.
    pub rows: u64,
    /// Where they are kept (`late_dead_letter_path`), if anywhere.
    pub kept_in: Option<String>,
}

impl PipelineMetrics {
    /// Registers a node and returns its counters.
    pub fn register(&mut self, role: NodeRole, name: impl Into<String>) -> Arc<NodeMetrics> {
        let m = Arc::new(NodeMetrics::new(name.into()));
        self.nodes.push((role, m.clone()));
        m
    }

    /// Registers a source's bad-record handler so its count shows in summaries.
    pub fn register_bad_records(&mut self, handler: Arc<crate::BadRecords>) {
        self.bad_records.push(handler);
    }

    /// Registers a source's late-row handler so its count shows per source.
    pub fn register_late_rows(&mut self, handler: Arc<crate::LateRows>) {
        self.late_rows.push(handler);
    }

    /// Every source's late-row handler (its name, count and file), in registration order.
    pub fn late_rows(&self) -> impl Iterator<Item = &Arc<crate::LateRows>> {
        self.late_rows.iter()
    }

    /// Registers a source's or a sink's live gauges.
    pub fn register_service_status(
        &mut self,
        role: NodeRole,
        node: impl Into<String>,
        status: Arc<ServiceStatus>,
    ) {
        self.services.push((role, node.into(), status));
    }

    /// The checkpoint status shared with the coordinator.
    pub(crate) fn checkpoint_cell(&self) -> Arc<Mutex<crate::checkpoint::CheckpointInfo>> {
        self.checkpoint.clone()
    }

    /// The last stored checkpoint (id 0 before the first).
    pub fn checkpoint_status(&self) -> crate::checkpoint::CheckpointInfo {
        self.checkpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every source's gauges, by source name.
    pub fn source_status(&self) -> impl Iterator<Item = (&str, &Arc<ServiceStatus>)> {
        self.service_status(NodeRole::Source)
    }

    /// The gauges of every node of `role` that keeps them, by node name.
    pub fn service_status(
        &self,
        role: NodeRole,
    ) -> impl Iterator<Item = (&str, &Arc<ServiceStatus>)> {
        self.services()
            .filter(move |(r, _, _)| *r == role)
            .map(|(_, n, s)| (n, s))
    }

    /// The gauges of every node that keeps them, with its role and name, in registration
    /// order.
    pub fn services(&self) -> impl Iterator<Item = (NodeRole, &str, &Arc<ServiceStatus>)> {
        self.services.iter().map(|(r, n, s)| (*r, n.as_str(), s))
    }

    /// Every source's bad-record handler (its name and count).
    pub fn bad_records(&self) -> impl Iterator<Item = &Arc<crate::BadRecords>> {
        self.bad_records.iter()
    }

    /// Every node's counters, in registration order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeRole, &Arc<NodeMetrics>)> {
        self.nodes.iter().map(|(r, m)| (*r, m))
    }

    /// Sources whose watermark is (or, after the end of input, was) ahead of `now` (event
    /// time), with how far in milliseconds.
    /// A watermark ahead of the clock means some records carry future times: later records
    /// with correct times may be late.
    pub fn sources_ahead_of_clock(&self, now: EventTime) -> Vec<(String, i64)> {
        self.nodes
            .iter()
            .filter(|(role, _)| *role == NodeRole::Source)
            .filter_map(|(_, m)| {
                let w = m.watermark_before_end.load(Ordering::Relaxed);
                (w > now).then(|| (m.name.clone(), (w - now) / 1_000_000))
            })
            .collect()
    }

    /// Sums the counters.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut s = MetricsSnapshot::default();
        for (role, m) in &self.nodes {
            match role {
                NodeRole::Source => s.records_in += m.rows_in.load(Ordering::Relaxed),
                NodeRole::Sink => s.rows_written += m.rows_out.load(Ordering::Relaxed),
                NodeRole::Operator => {
                    s.windows_emitted += m.windows_emitted.load(Ordering::Relaxed);
                    s.late_rows += m.late_rows.load(Ordering::Relaxed);
                    let peak = m.peak_open_state.load(Ordering::Relaxed);
                    if peak > 0 {
                        s.peak_open_state.push((m.name.clone(), peak));
                    }
                }
            }
        }
        s.bad_records = self.bad_records.iter().map(|b| b.count()).sum();
        s.late_by_source = self
            .late_rows
            .iter()
            .map(|l| SourceLateRows {
                source: l.source().to_string(),
                rows: l.count(),
                kept_in: l.path().map(|p| p.display().to_string()),
            })
            .collect();
        s.ahead_of_clock = self.sources_ahead_of_clock(crate::time::now());
        let checkpoint = self.checkpoint_status();
        if checkpoint.id > 0 || checkpoint.restored_from.is_some() {
            s.checkpoint = Some(checkpoint);
        }
        for (_, _, status) in &self.services {
            s.throttles += status.throttles();
            if let Some(max) = status.lags().values().max() {
                s.max_lag_millis = Some(s.max_lag_millis.map_or(*max, |m| m.max(*max)));
            }
        }
        s
    }
}
