//! A deterministic clickstream generator for demos, tests and benchmarks.
//!
//! Events advance in event time by a fixed step and are then shifted back by a random delay
//! of at most `max_delay_ms`, so the stream is out of order by at most that much: a watermark
//! `ts - INTERVAL 'max_delay_ms' MILLISECOND` (or larger) declares no event late.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::error::{CliError, Result};

/// The columns of a generated event, as a pipeline or a batch query declares them.
pub fn clickstream_fields() -> Vec<Field> {
    vec![
        Field::new("event_id", DataType::Int64, true),
        Field::new("user_id", DataType::Utf8, true),
        Field::new("page", DataType::Utf8, true),
        Field::new("action", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
    ]
}

/// How timestamps are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TimeFormat {
    /// RFC 3339 strings such as `2024-05-01T12:00:00.123Z`.
    Rfc3339,
    /// Epoch milliseconds.
    Millis,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct ClickstreamSpec {
    /// Number of events.
    pub events: u64,
    /// Number of files the events are spread over (in order: file 0 holds the first events).
    pub files: usize,
    /// Event time of the first event, epoch milliseconds.
    pub start_ms: i64,
    /// Event-time distance between consecutive events before the random delay, in microseconds.
    pub step_us: i64,
    /// Largest random delay of an event (bounded out-of-orderness), in milliseconds.
    pub max_delay_ms: i64,
    /// Number of distinct users.
    pub users: u32,
    /// Random seed.
    pub seed: u64,
    /// Timestamp encoding.
    pub time_format: TimeFormat,
}

impl Default for ClickstreamSpec {
    fn default() -> Self {
        ClickstreamSpec {
            events: 100_000,
            files: 4,
            start_ms: 1_714_564_800_000, // 2024-05-01T12:00:00Z
            step_us: 1_000,
            max_delay_ms: 1_500,
            users: 1_000,
            seed: 42,
            time_format: TimeFormat::Rfc3339,
        }
    }
}

const PAGES: &[&str] = &[
    "/home",
    "/search",
    "/product/1",
    "/product/2",
    "/product/3",
    "/cart",
    "/checkout",
    "/help",
];
const ACTIONS: &[(&str, u32)] = &[
    ("view", 60),
    ("click", 25),
    ("add_to_cart", 10),
    ("purchase", 5),
];

/// The events of `spec` as JSON lines (without the newline), in event-id order.
pub struct ClickstreamEvents {
    spec: ClickstreamSpec,
    rng: SmallRng,
    next_id: u64,
    total_weight: u32,
}

impl ClickstreamEvents {
    /// The generator for `spec` (the same seed gives the same events).
    pub fn new(spec: &ClickstreamSpec) -> Self {
        ClickstreamEvents {
            rng: SmallRng::seed_from_u64(spec.seed),
            spec: spec.clone(),
            next_id: 0,
            total_weight: ACTIONS.iter().map(|(_, w)| w).sum(),
        }
    }

    /// Writes the next event into `line` (cleared first); `false` when all were generated.
    pub fn next_into(&mut self, line: &mut String) -> bool {
        use std::fmt::Write as _;
        let spec = &self.spec;
        let id = self.next_id;
        if id >= spec.events {
            return false;
        }
        self.next_id += 1;
        let rng = &mut self.rng;
        let delay_us = if spec.max_delay_ms > 0 {
            rng.random_range(0..spec.max_delay_ms * 1000)
        } else {
            0
        };
        let ts_us = spec.start_ms * 1000 + id as i64 * spec.step_us - delay_us;
        let ts_ms = ts_us.div_euclid(1000);
        let user = rng.random_range(0..spec.users.max(1));
        let page = PAGES[rng.random_range(0..PAGES.len())];
        let mut pick = rng.random_range(0..self.total_weight);
        let action = ACTIONS
            .iter()
            .find(|(_, w)| {
                if pick < *w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .map(|(a, _)| *a)
            .unwrap_or("view");
        let amount = if action == "purchase" {
            rng.random_range(100..50_000) as f64 / 100.0
        } else {
            0.0
        };
        line.clear();
        let _ = write!(
            line,
            "{{\"event_id\":{id},\"user_id\":\"u{user}\",\"page\":\"{page}\",\"action\":\"{action}\",\"amount\":{amount},\"ts\":"
        );
        match spec.time_format {
            TimeFormat::Millis => {
                let _ = write!(line, "{ts_ms}}}");
            }
            TimeFormat::Rfc3339 => {
                let t = chrono::DateTime::from_timestamp_millis(ts_ms).unwrap_or_default();
                let _ = write!(line, "\"{}\"}}", t.format("%Y-%m-%dT%H:%M:%S%.3fZ"));
            }
        }
        true
    }
}

/// Writes the events as JSON lines into `dir/clicks-NNNN.json`; returns the files written.
pub fn write_clickstream(dir: &Path, spec: &ClickstreamSpec) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::io(format!("creating {}", dir.display()), e))?;
    let mut events = ClickstreamEvents::new(spec);
    let files = spec.files.max(1);
    let per_file = spec.events.div_ceil(files as u64);
    let mut paths = Vec::with_capacity(files);
    let mut line = String::with_capacity(256);
    for f in 0..files {
        let first = f as u64 * per_file;
        let last = (first + per_file).min(spec.events);
        if first >= last {
            break;
        }
        let path = dir.join(format!("clicks-{f:04}.json"));
        let io = |e: std::io::Error| CliError::io(format!("writing {}", path.display()), e);
        // Written under a hidden name and renamed, so a watching source never reads half a file.
        let temp = dir.join(format!(".clicks-{f:04}.json.tmp"));
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&temp).map_err(io)?);
        for _ in first..last {
            events.next_into(&mut line);
            line.push('\n');
            out.write_all(line.as_bytes()).map_err(io)?;
        }
        out.flush().map_err(io)?;
        drop(out);
        std::fs::rename(&temp, &path).map_err(io)?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_bounded_out_of_order_events_deterministically() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ClickstreamSpec {
            events: 1000,
            files: 3,
            ..Default::default()
        };
        let files = write_clickstream(dir.path(), &spec).unwrap();
        assert_eq!(files.len(), 3);
        let text: String = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        assert_eq!(text.lines().count(), 1000);
        let again = tempfile::tempdir().unwrap();
        let files2 = write_clickstream(again.path(), &spec).unwrap();
        let text2: String = files2
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        assert_eq!(text, text2, "same seed, same events");
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["event_id"], 0);
    }
}
