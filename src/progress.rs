//! Live progress of a running pipeline and its final summary.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use laketide_engine::checkpoint::CheckpointInfo;
use laketide_engine::{
    MetricsSnapshot, NodeRole, PipelineMetrics, RunSummary, time::format_event_time,
};
use tokio_util::sync::CancellationToken;

fn watermark(metrics: &PipelineMetrics) -> Option<i64> {
    metrics
        .nodes()
        .filter(|(role, _)| *role == NodeRole::Sink)
        .map(|(_, m)| m.watermark.load(std::sync::atomic::Ordering::Relaxed))
        .min()
        .filter(|w| *w != i64::MIN)
}

fn line(s: &MetricsSnapshot, rate: f64, metrics: &PipelineMetrics, per_split: bool) -> String {
    let wm = watermark(metrics)
        .map(format_event_time)
        .unwrap_or_else(|| "none".into());
    let mut text = format!(
        "records in {} ({}/s) | windows emitted {} | rows written {} | late {} | bad {} | watermark {wm}",
        s.records_in,
        human_rate(rate),
        s.windows_emitted,
        s.rows_written,
        s.late_rows,
        s.bad_records
    );
    if let Some(max) = s.max_lag_millis {
        text.push_str(&format!(" | lag {}", human_millis(max)));
    }
    if s.throttles > 0 {
        text.push_str(&format!(" | throttled {}", s.throttles));
    }
    if let Some(c) = &s.checkpoint {
        text.push_str(&format!(" | {}", checkpoint_text(c)));
    }
    for (source, ms) in &s.ahead_of_clock {
        text.push_str(&format!(
            " | WARNING: {source}'s watermark is {} ahead of the clock",
            human_millis(*ms)
        ));
    }
    if per_split {
        for (source, status) in metrics.source_status() {
            let lags = status.lags();
            if lags.is_empty() {
                continue;
            }
            let shards: Vec<String> = lags
                .iter()
                .map(|(split, ms)| format!("{split} {}", human_millis(*ms)))
                .collect();
            text.push_str(&format!(
                "\n  {source} lag per shard: {}",
                shards.join(", ")
            ));
        }
    }
    text
}

/// Describes the last checkpoint: `checkpoint 12 at 21:40:03 (14.2KiB in 35ms)`.
pub fn checkpoint_text(c: &CheckpointInfo) -> String {
    let mut text = if c.id == 0 {
        "no checkpoint yet".to_string()
    } else {
        let at = chrono::DateTime::from_timestamp_millis(c.completed_at_ms)
            .map(|t| t.format("%H:%M:%S").to_string())
            .unwrap_or_default();
        format!(
            "checkpoint {} at {at} ({} in {}ms)",
            c.id,
            human_bytes(c.bytes),
            c.duration_ms
        )
    };
    if let Some(r) = c.restored_from {
        text.push_str(&format!(", resumed from {r}"));
    }
    if c.failed > 0 {
        text.push_str(&format!(", {} failed", c.failed));
    }
    text
}

/// Formats a size as `512B`, `14.2KiB` or `3.1MiB`.
pub fn human_bytes(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes}B")
    } else if bytes < 1 << 20 {
        format!("{:.1}KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1}MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// Formats milliseconds behind as `850ms`, `12.3s` or `4m05s`.
pub fn human_millis(ms: i64) -> String {
    const DAY: i64 = 86_400_000;
    if ms >= 365 * DAY {
        format!("{:.1} years", ms as f64 / (365.25 * DAY as f64))
    } else if ms >= DAY {
        format!("{}d{:02}h", ms / DAY, (ms % DAY) / 3_600_000)
    } else if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1e3)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1_000)
    }
}

/// Formats a rate such as 1.5M or 12.3k.
pub fn human_rate(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2}M", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1}k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

/// Shows progress until `done` is cancelled: a spinner line on a terminal, or a log line every
/// ten seconds otherwise.
pub async fn show(metrics: PipelineMetrics, done: CancellationToken) {
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        let b = ProgressBar::new_spinner();
        b.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .expect("valid template"),
        );
        Some(b)
    } else {
        None
    };
    let period = if tty {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(10)
    };
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::select! {
            _ = done.cancelled() => break,
            _ = tokio::time::sleep(period) => {}
        }
        let s = metrics.snapshot();
        let now = Instant::now();
        let rate =
            (s.records_in - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
        last = (now, s.records_in);
        match &bar {
            Some(b) => {
                b.set_message(line(&s, rate, &metrics, false));
                b.tick();
            }
            None => eprintln!("{}", line(&s, rate, &metrics, true)),
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}

/// The run summary printed when a pipeline ends.
pub fn summary(s: &RunSummary) -> String {
    let t = &s.totals;
    let secs = s.elapsed.as_secs_f64();
    let mut out = format!(
        "finished in {secs:.2}s: {} records in ({}/s), {} windows emitted, {} rows written, {} late rows dropped, {} bad records",
        t.records_in,
        human_rate(t.records_in as f64 / secs.max(1e-6)),
        t.windows_emitted,
        t.rows_written,
        t.late_rows,
        t.bad_records
    );
    if t.throttles > 0 {
        out.push_str(&format!(
            "; throttled {} times by the service (retried)",
            t.throttles
        ));
    }
    if let Some(c) = &t.checkpoint {
        out.push_str(&format!("; {}", checkpoint_text(c)));
    }
    if !t.peak_open_state.is_empty() {
        let peaks: Vec<String> = t
            .peak_open_state
            .iter()
            .map(|(op, n)| format!("{op} {n}"))
            .collect();
        out.push_str(&format!(
            "\n  peak open state (windows × groups, or sessions): {}",
            peaks.join(", ")
        ));
    }
    for late in t.late_by_source.iter().filter(|l| l.rows > 0) {
        out.push_str(&format!("\n  {}: {} late rows", late.source, late.rows));
        if let Some(file) = &late.kept_in {
            out.push_str(&format!(" (kept in {file})"));
        }
    }
    for (source, ms) in &t.ahead_of_clock {
        out.push_str(&format!(
            "\n  WARNING: {source}'s watermark is {} ahead of the clock: records with future event times moved it (see max_future)",
            human_millis(*ms)
        ));
    }
    for (name, sink) in &s.sinks {
        out.push_str(&format!(
            "\n  {name}: {} rows in {} commit{}",
            sink.rows_written,
            sink.commits,
            if sink.commits == 1 { "" } else { "s" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use laketide_engine::ServiceStatus;

    #[test]
    fn status_lines_show_shard_lag_and_throttles() {
        let mut metrics = PipelineMetrics::default();
        let status = Arc::new(ServiceStatus::default());
        status.set_lag("shardId-000000000000", 1_500);
        status.set_lag("shardId-000000000001", 20);
        status.count_throttle();
        metrics.register_service_status(NodeRole::Source, "clicks", status);
        let s = metrics.snapshot();
        assert_eq!(s.max_lag_millis, Some(1_500));
        let short = line(&s, 0.0, &metrics, false);
        assert!(short.contains("| lag 1.5s | throttled 1"), "{short}");
        assert!(!short.contains("per shard"), "{short}");
        let long = line(&s, 0.0, &metrics, true);
        assert!(
            long.contains(
                "clicks lag per shard: shardId-000000000000 1.5s, shardId-000000000001 20ms"
            ),
            "{long}"
        );
        assert_eq!(human_millis(245_000), "4m05s");
        let mut ahead = metrics.snapshot();
        ahead.ahead_of_clock = vec![("clicks".into(), 90_000)];
        assert!(
            line(&ahead, 0.0, &metrics, false)
                .contains("WARNING: clicks's watermark is 1m30s ahead of the clock"),
            "{}",
            line(&ahead, 0.0, &metrics, false)
        );
        assert_eq!(human_millis(90_000_000), "1d01h");
        assert_eq!(human_millis(900 * 31_557_600_000), "900.0 years");
    }

    #[test]
    fn the_summary_names_late_rows_per_source_peak_state_and_a_watermark_ahead() {
        let totals = MetricsSnapshot {
            late_rows: 6,
            late_by_source: vec![
                laketide_engine::SourceLateRows {
                    source: "clicks".into(),
                    rows: 6,
                    kept_in: Some("late/clicks.jsonl".into()),
                },
                laketide_engine::SourceLateRows {
                    source: "quiet".into(),
                    rows: 0,
                    kept_in: None,
                },
            ],
            ahead_of_clock: vec![("clicks".into(), 900 * 31_557_600_000)],
            peak_open_state: vec![("session_aggregate".into(), 1234)],
            ..Default::default()
        };
        let text = summary(&RunSummary {
            totals,
            sinks: Vec::new(),
            elapsed: std::time::Duration::from_secs(1),
        });
        assert!(text.contains("6 late rows dropped"), "{text}");
        assert!(
            text.contains("\n  clicks: 6 late rows (kept in late/clicks.jsonl)"),
            "{text}"
        );
        assert!(!text.contains("quiet:"), "{text}");
        assert!(text.contains("session_aggregate 1234"), "{text}");
        assert!(
            text.contains("WARNING: clicks's watermark is 900.0 years ahead of the clock"),
            "{text}"
        );
    }
}
