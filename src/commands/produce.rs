//! `laketide produce`: write generated clickstream events, or the lines of files, into a
//! Kinesis stream at a given rate, for demos and load tests.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use laketide_connectors::aws::AwsOptions;
use laketide_connectors::file::list_files;
use laketide_connectors::kinesis::{OutgoingRecord, RecordWriter, StreamClient, kpl};
use laketide_engine::ServiceStatus;

use crate::datagen::{ClickstreamEvents, ClickstreamSpec};
use crate::error::{CliError, Result};
use crate::progress::human_rate;

/// What `laketide produce` writes and how.
#[derive(Debug, Clone)]
pub struct ProduceSpec {
    /// The stream (name or ARN).
    pub stream: String,
    /// Lines of these files (a file, directory or glob); generated events when `None`.
    pub file: Option<String>,
    /// Generated events (ignored with `file`).
    pub events: u64,
    /// Records per second at most; 0 for as fast as the stream takes them.
    pub rate: f64,
    /// JSON field whose value is the partition key; random keys when `None`.
    pub partition_key: Option<String>,
    /// Pack this many user records into one KPL aggregated record (1 = no aggregation).
    pub aggregate: usize,
    /// Create the stream with this many shards if it does not exist.
    pub create_shards: Option<i32>,
    /// Endpoint and region overrides.
    pub aws: AwsOptions,
}

/// Records sent per PutRecords call (and per pacing step).
const CHUNK: usize = 500;

/// Where the lines come from.
enum Lines {
    Generated(ClickstreamEvents),
    Files(
        std::vec::IntoIter<PathBuf>,
        Option<std::io::Lines<BufReader<std::fs::File>>>,
    ),
}

impl Lines {
    fn next_line(&mut self) -> Result<Option<String>> {
        match self {
            Lines::Generated(events) => {
                let mut line = String::new();
                Ok(events.next_into(&mut line).then_some(line))
            }
            Lines::Files(files, current) => loop {
                if let Some(lines) = current {
                    match lines.next() {
                        Some(Ok(line)) if line.trim().is_empty() => continue,
                        Some(Ok(line)) => return Ok(Some(line)),
                        Some(Err(e)) => return Err(CliError::io("reading the input file", e)),
                        None => *current = None,
                    }
                }
                let Some(path) = files.next() else {
                    return Ok(None);
                };
                let file = std::fs::File::open(&path)
                    .map_err(|e| CliError::io(format!("opening {}", path.display()), e))?;
                *current = Some(BufReader::new(file).lines());
            },
        }
    }
}

fn partition_key(line: &str, field: Option<&str>, number: u64) -> Result<String> {
    let Some(field) = field else {
        return Ok(uuid::Uuid::new_v4().simple().to_string());
    };
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
        CliError::Usage(format!(
            "record {number} is not JSON, so --partition-key {field} cannot be read from it: {e}"
        ))
    })?;
    match value.get(field) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(v) if !v.is_null() && !v.is_string() => Ok(v.to_string()),
        _ => Err(CliError::Usage(format!(
            "record {number} has no value for the partition key field `{field}`"
        ))),
    }
}

/// Packs consecutive records into KPL aggregates of `per_record` user records each, keyed by
/// the first record's partition key.
fn aggregate(records: Vec<OutgoingRecord>, per_record: usize) -> Vec<OutgoingRecord> {
    if per_record <= 1 {
        return records;
    }
    records
        .chunks(per_record)
        .map(|group| {
            let pairs: Vec<(&str, &[u8])> = group
                .iter()
                .map(|r| (r.partition_key.as_str(), r.data.as_slice()))
                .collect();
            OutgoingRecord {
                partition_key: group[0].partition_key.clone(),
                data: kpl::aggregate(&pairs),
            }
        })
        .collect()
}

/// Writes the records and reports how many went out.
pub async fn produce(spec: &ProduceSpec) -> Result<()> {
    let client = StreamClient::connect(
        &spec.stream,
        &spec.aws,
        Duration::from_secs(60),
        Arc::new(ServiceStatus::default()),
    )
    .await?;
    if let Some(shards) = spec.create_shards
        && client.create_if_missing(shards).await?
    {
        eprintln!("created stream {} with {shards} shards", spec.stream);
    }
    let writer = RecordWriter::new(client, CHUNK, Duration::from_secs(60));
    let mut lines = match &spec.file {
        Some(path) => {
            let files = list_files(path)?;
            if files.is_empty() {
                return Err(CliError::Usage(format!("no files at {path}")));
            }
            Lines::Files(files.into_iter(), None)
        }
        None => {
            let now = chrono::Utc::now().timestamp_millis();
            let step_us = if spec.rate > 0.0 {
                (1e6 / spec.rate) as i64
            } else {
                1_000
            };
            Lines::Generated(ClickstreamEvents::new(&ClickstreamSpec {
                events: spec.events,
                start_ms: now,
                step_us: step_us.max(1),
                seed: now as u64,
                ..Default::default()
            }))
        }
    };
    let started = Instant::now();
    let mut sent = 0u64;
    loop {
        let mut chunk = Vec::with_capacity(CHUNK);
        while chunk.len() < CHUNK * spec.aggregate.max(1) {
            let Some(line) = lines.next_line()? else {
                break;
            };
            let key = partition_key(
                &line,
                spec.partition_key.as_deref(),
                sent + chunk.len() as u64 + 1,
            )?;
            chunk.push(OutgoingRecord {
                partition_key: key,
                data: line.into_bytes(),
            });
        }
        if chunk.is_empty() {
            break;
        }
        let users = chunk.len() as u64;
        writer.put_all(aggregate(chunk, spec.aggregate)).await?;
        sent += users;
        if spec.rate > 0.0 {
            let due = Duration::from_secs_f64(sent as f64 / spec.rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "wrote {sent} records to {} in {secs:.2}s ({}/s)",
        spec.stream,
        human_rate(sent as f64 / secs.max(1e-6))
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_keys_come_from_a_json_field() {
        assert_eq!(
            partition_key(r#"{"user_id":"u7","n":3}"#, Some("user_id"), 1).unwrap(),
            "u7"
        );
        assert_eq!(partition_key(r#"{"n":3}"#, Some("n"), 1).unwrap(), "3");
        let e = partition_key(r#"{"n":3}"#, Some("user_id"), 5).unwrap_err();
        assert!(e.to_string().contains("record 5"), "{e}");
        assert_eq!(partition_key("x", None, 1).unwrap().len(), 32);
    }

    #[test]
    fn aggregates_group_consecutive_records() {
        let records: Vec<OutgoingRecord> = (0..5)
            .map(|i| OutgoingRecord {
                partition_key: format!("k{i}"),
                data: format!("{{\"i\":{i}}}").into_bytes(),
            })
            .collect();
        let packed = aggregate(records, 2);
        assert_eq!(packed.len(), 3);
        assert_eq!(packed[0].partition_key, "k0");
        let users = kpl::deaggregate(&packed[2].data).unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].partition_key, "k4");
    }
}
