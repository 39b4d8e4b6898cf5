//! `/metrics`: the pipeline's counters in the Prometheus (OpenMetrics) text format, read from
//! the live counters at every scrape.
//!
//! Names follow Prometheus conventions: a `laketide_` prefix, base units (seconds, bytes),
//! `_total` on counters. Labels: `node` (table or operator name), `node_id` (its position in
//! `laketide explain`, since operator names repeat), `role`, and `split` (a Kinesis shard).
//! Source and sink names are unique: one node per table.

use std::sync::atomic::Ordering;

use laketide_engine::{EventTime, NodeRole, PipelineMetrics};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of one sample.
type Labels = Vec<(&'static str, String)>;

/// Samples of one metric family, written on demand.
enum Samples {
    Counter(Vec<(Labels, u64)>),
    Gauge(Vec<(Labels, f64)>),
    /// A pipeline-wide value, without labels.
    SingleCounter(u64),
    SingleGauge(f64),
}

#[derive(Debug)]
struct PipelineCollector {
    metrics: PipelineMetrics,
    /// Whether the run takes checkpoints: their families are then exported from the start.
    checkpoints: bool,
}

impl PipelineCollector {
    /// Every family: name, help, samples.
    fn families(&self) -> Vec<(&'static str, &'static str, Samples)> {
        let m = &self.metrics;
        let now_ns = chrono::Utc::now()
            .timestamp_nanos_opt()
            .unwrap_or(EventTime::MAX);
        let node = |role: NodeRole, name: &str| -> Labels {
            vec![("node", name.to_string()), ("role", role.name().into())]
        };
        let node_with_id = |id: usize, role: NodeRole, name: &str| -> Labels {
            let mut labels = node(role, name);
            labels.insert(1, ("node_id", id.to_string()));
            labels
        };
        let counter = |read: &dyn Fn(&laketide_engine::NodeMetrics) -> u64, roles: &[NodeRole]| {
            Samples::Counter(
                m.nodes()
                    .enumerate()
                    .filter(|(_, (r, _))| roles.contains(r))
                    .map(|(id, (r, n))| (node_with_id(id, r, &n.name), read(n)))
                    .collect(),
            )
        };
        let all = [NodeRole::Source, NodeRole::Operator, NodeRole::Sink];
        let watermarks: Vec<(Labels, i64)> = m
            .nodes()
            .enumerate()
            .map(|(id, (r, n))| {
                (
                    node_with_id(id, r, &n.name),
                    n.watermark.load(Ordering::Relaxed),
                )
            })
            .filter(|(_, w)| *w != EventTime::MIN && *w != EventTime::MAX)
            .collect();
        let service_counter = |read: &dyn Fn(&laketide_engine::ServiceStatus) -> u64| {
            Samples::Counter(
                m.services()
                    .map(|(role, name, s)| (node(role, name), read(s)))
                    .collect(),
            )
        };
        let checkpoint = m.checkpoint_status();
        let mut families = vec![
            (
                "laketide_records_in",
                "Records received by a node (for sources: records read).",
                counter(&|n| n.rows_in.load(Ordering::Relaxed), &all),
            ),
            (
                "laketide_records_out",
                "Records emitted by a node (for sinks: records written).",
                counter(&|n| n.rows_out.load(Ordering::Relaxed), &all),
            ),
            (
                "laketide_late_records",
                "Records dropped by a window operator because their window had closed.",
                counter(
                    &|n| n.late_rows.load(Ordering::Relaxed),
                    &[NodeRole::Operator],
                ),
            ),
            (
                "laketide_windows_emitted",
                "Window results (one per group and window) emitted by a window operator.",
                counter(
                    &|n| n.windows_emitted.load(Ordering::Relaxed),
                    &[NodeRole::Operator],
                ),
            ),
            (
                "laketide_bad_records",
                "Malformed records skipped or dead-lettered by a source.",
                Samples::Counter(
                    m.bad_records()
                        .map(|b| (node(NodeRole::Source, b.source()), b.count()))
                        .collect(),
                ),
            ),
            (
                "laketide_connector_bytes",
                "Bytes a source read (decompressed file lines, Kinesis record data) or a sink sent (request bodies, records, items, files).",
                service_counter(&|s| s.bytes()),
            ),
            (
                "laketide_connector_retries",
                "Calls to a service retried after a failure other than throttling.",
                service_counter(&|s| s.retries()),
            ),
            (
                "laketide_connector_throttles",
                "Calls to a service that it throttled (and that were retried).",
                service_counter(&|s| s.throttles()),
            ),
            (
                "laketide_watermark_timestamp_seconds",
                "A node's event-time watermark, as Unix time.",
                Samples::Gauge(
                    watermarks
                        .iter()
                        .map(|(labels, w)| (labels.clone(), *w as f64 / 1e9))
                        .collect(),
                ),
            ),
            (
                "laketide_watermark_delay_seconds",
                "How far a node's watermark is behind the wall clock.",
                Samples::Gauge(
                    watermarks
                        .iter()
                        .map(|(labels, w)| (labels.clone(), (now_ns - w) as f64 / 1e9))
                        .collect(),
                ),
            ),
            (
                "laketide_source_late_records",
                "Late records attributed to a source: dropped by an operator downstream of it because their window or session had closed (or their event time is NULL).",
                Samples::Counter(
                    m.late_rows()
                        .map(|l| (node(NodeRole::Source, l.source()), l.count()))
                        .collect(),
                ),
            ),
            (
                "laketide_source_watermark_ahead_seconds",
                "How far a source's watermark is ahead of the wall clock (0 when it is not): records with future event times moved it.",
                Samples::Gauge(
                    m.nodes()
                        .filter(|(r, _)| *r == NodeRole::Source)
                        .filter_map(|(_, n)| {
                            let w = n.watermark.load(Ordering::Relaxed);
                            (w != EventTime::MIN && w != EventTime::MAX).then(|| {
                                let ahead = (w - now_ns).max(0);
                                (node(NodeRole::Source, &n.name), ahead as f64 / 1e9)
                            })
                        })
                        .collect(),
                ),
            ),
            (
                "laketide_source_lag_seconds",
                "How far a source split (Kinesis shard) is behind the newest data (MillisBehindLatest).",
                Samples::Gauge(
                    m.service_status(NodeRole::Source)
                        .flat_map(|(name, s)| {
                            s.lags().into_iter().map(move |(split, ms)| {
                                let mut labels = node(NodeRole::Source, name);
                                labels.push(("split", split));
                                (labels, ms as f64 / 1e3)
                            })
                        })
                        .collect(),
                ),
            ),
        ];
        if self.checkpoints || checkpoint.id > 0 || checkpoint.failed > 0 {
            families.extend([
                (
                    "laketide_checkpoint_last_id",
                    "The number of the last stored checkpoint.",
                    Samples::SingleGauge(checkpoint.id as f64),
                ),
                (
                    "laketide_checkpoint_last_duration_seconds",
                    "How long the last stored checkpoint took, from its trigger to its manifest.",
                    Samples::SingleGauge(checkpoint.duration_ms as f64 / 1e3),
                ),
                (
                    "laketide_checkpoint_last_size_bytes",
                    "Bytes the last stored checkpoint wrote.",
                    Samples::SingleGauge(checkpoint.bytes as f64),
                ),
                (
                    "laketide_checkpoint_last_completed_timestamp_seconds",
                    "When the last checkpoint was stored, as Unix time.",
                    Samples::SingleGauge(checkpoint.completed_at_ms as f64 / 1e3),
                ),
                (
                    "laketide_checkpoints_failed",
                    "Checkpoints that could not be stored.",
                    Samples::SingleCounter(checkpoint.failed),
                ),
            ]);
        }
        families
    }
}

impl Collector for PipelineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, samples) in self.families() {
            match samples {
                Samples::Counter(samples) => encode_labelled(
                    &mut encoder,
                    (name, help, MetricType::Counter),
                    samples.into_iter().map(|(l, v)| (l, ConstCounter::new(v))),
                )?,
                Samples::Gauge(samples) => encode_labelled(
                    &mut encoder,
                    (name, help, MetricType::Gauge),
                    samples.into_iter().map(|(l, v)| (l, ConstGauge::new(v))),
                )?,
                Samples::SingleCounter(value) => ConstCounter::new(value)
                    .encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)?,
                Samples::SingleGauge(value) => ConstGauge::new(value)
                    .encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?,
            }
        }
        Ok(())
    }
}

/// Writes one family (name, help, type) with a sample per label set.
fn encode_labelled<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    (name, help, kind): (&str, &str, MetricType),
    samples: impl Iterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in samples {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The text of a scrape of `metrics`, of a run that takes checkpoints or not.
pub fn render(metrics: &PipelineMetrics, checkpoints: bool) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(PipelineCollector {
        metrics: metrics.clone(),
        checkpoints,
    }));
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}
