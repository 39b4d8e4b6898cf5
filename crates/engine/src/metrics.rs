//! Counters of a running pipeline, read by the progress display and the run summary.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

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
        }
    }

    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
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

/// Every node's counters, plus the sources' bad-record counters.
#[derive(Debug, Default, Clone)]
pub struct PipelineMetrics {
    nodes: Vec<(NodeRole, Arc<NodeMetrics>)>,
    bad_records: Vec<Arc<crate::BadRecords>>,
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

    /// Every node's counters, in registration order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeRole, &Arc<NodeMetrics>)> {
        self.nodes.iter().map(|(r, m)| (*r, m))
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
                }
            }
        }
        s.bad_records = self.bad_records.iter().map(|b| b.count()).sum();
        s
    }
}
