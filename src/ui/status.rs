//! What the dashboard shows, as JSON: the pipeline's graph (fixed when the run starts) and its
//! live status (counters, lags, watermarks, checkpoint, latest results).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use laketide_engine::checkpoint::CheckpointInfo;
use laketide_engine::{Dataflow, EventTime, PipelineMetrics};
use serde::Serialize;

use super::results::{LatestResults, SinkRows};

/// One node of the graph.
#[derive(Debug, Clone, Serialize)]
pub struct GraphNode {
    /// The node's id: its position in the dataflow.
    pub id: usize,
    /// Its name (table name or operator kind).
    pub name: String,
    /// `source`, `operator` or `sink`.
    pub role: &'static str,
    /// The line `explain` shows (connectors redact secrets in it).
    pub description: String,
    /// Upstream node ids.
    pub inputs: Vec<usize>,
}

/// The pipeline's graph.
#[derive(Debug, Clone, Serialize)]
pub struct Graph {
    /// The pipeline file's name.
    pub pipeline: String,
    /// Nodes in id order (inputs before the nodes they feed).
    pub nodes: Vec<GraphNode>,
}

impl Graph {
    /// The graph of `dataflow`, before it runs.
    pub fn of(pipeline: &str, dataflow: &Dataflow) -> Self {
        let nodes = dataflow
            .nodes()
            .iter()
            .enumerate()
            .map(|(id, n)| GraphNode {
                id,
                name: n.name.clone(),
                role: n.kind.role().name(),
                description: n.description.clone(),
                inputs: n.inputs.clone(),
            })
            .collect();
        Graph {
            pipeline: pipeline.to_string(),
            nodes,
        }
    }
}

/// One node's counters.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub id: usize,
    pub name: String,
    pub rows_in: u64,
    pub rows_out: u64,
    pub late_rows: u64,
    pub windows_emitted: u64,
    /// Event time in epoch milliseconds, if the node has a watermark yet.
    pub watermark_ms: Option<i64>,
}

/// A connector's gauges (sources and sinks that talk to a service or read files).
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorStatus {
    pub name: String,
    pub role: &'static str,
    pub bytes: u64,
    pub retries: u64,
    pub throttles: u64,
    /// Milliseconds behind the newest data, per split (Kinesis shard).
    pub lag_ms: BTreeMap<String, i64>,
}

/// Where the run stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum RunState {
    /// Still running.
    #[default]
    Running,
    /// Ended without error.
    Finished,
    /// Ended with this error.
    Failed { error: String },
}

/// One update for the page.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Wall-clock time of this update, epoch milliseconds.
    pub now_ms: i64,
    pub run: RunState,
    pub nodes: Vec<NodeStatus>,
    pub connectors: Vec<ConnectorStatus>,
    /// Bad records per source.
    pub bad_records: BTreeMap<String, u64>,
    /// Late rows per source (attributed to every source upstream of the operator).
    pub late_by_source: BTreeMap<String, u64>,
    /// Sources whose watermark is ahead of the wall clock, by how many milliseconds.
    pub ahead_of_clock_ms: BTreeMap<String, i64>,
    /// The last stored checkpoint (or the one the run resumed from).
    pub checkpoint: Option<CheckpointInfo>,
    /// Latest rows of the sinks whose rows changed since the versions the caller has seen.
    pub results: BTreeMap<String, SinkRows>,
}

/// Reads the status now. `seen` holds the result versions the caller already has; it is
/// updated to the versions included.
pub fn read(
    metrics: &PipelineMetrics,
    results: &LatestResults,
    run: RunState,
    seen: &mut BTreeMap<String, u64>,
) -> Status {
    let nodes = metrics
        .nodes()
        .enumerate()
        .map(|(id, (_, m))| {
            let w = m.watermark.load(Ordering::Relaxed);
            NodeStatus {
                id,
                name: m.name.clone(),
                rows_in: m.rows_in.load(Ordering::Relaxed),
                rows_out: m.rows_out.load(Ordering::Relaxed),
                late_rows: m.late_rows.load(Ordering::Relaxed),
                windows_emitted: m.windows_emitted.load(Ordering::Relaxed),
                watermark_ms: (w != EventTime::MIN && w != EventTime::MAX).then_some(w / 1_000_000),
            }
        })
        .collect();
    let connectors = metrics
        .services()
        .map(|(role, name, s)| ConnectorStatus {
            name: name.to_string(),
            role: role.name(),
            bytes: s.bytes(),
            retries: s.retries(),
            throttles: s.throttles(),
            lag_ms: s.lags(),
        })
        .collect();
    let mut changed = BTreeMap::new();
    for (sink, version) in results.versions() {
        if seen.get(&sink) == Some(&version) {
            continue;
        }
        match results.get(&sink) {
            Some(Ok(rows)) => {
                seen.insert(sink.clone(), rows.version);
                changed.insert(sink, rows);
            }
            // The page keeps what it has (once per version); the sink itself is unaffected.
            Some(Err(e)) => {
                tracing::warn!(sink = %sink, error = %e, "could not show rows on the dashboard");
                seen.insert(sink, version);
            }
            None => {}
        }
    }
    Status {
        now_ms: chrono::Utc::now().timestamp_millis(),
        run,
        nodes,
        connectors,
        bad_records: metrics
            .bad_records()
            .map(|b| (b.source().to_string(), b.count()))
            .collect(),
        late_by_source: metrics
            .late_rows()
            .map(|l| (l.source().to_string(), l.count()))
            .collect(),
        ahead_of_clock_ms: metrics
            .sources_ahead_of_clock(laketide_engine::time::now())
            .into_iter()
            .collect(),
        checkpoint: Some(metrics.checkpoint_status())
            .filter(|c| c.id > 0 || c.restored_from.is_some() || c.failed > 0),
        results: changed,
    }
}
