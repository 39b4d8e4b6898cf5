//! Options of the Kinesis source and sink.

use std::time::Duration;

use laketide_engine::OnError;
use serde::{Deserialize, Serialize};

use crate::aws::AwsOptions;
use crate::error::{ConnectorError, Result};
use crate::format::{EventTimeBound, Format};
use crate::options::Options;

/// Where a shard is read from when there is no saved position for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartPosition {
    /// Records written after the source started (the shards open at start); shards that appear
    /// later (children of a split or merge) are read from their beginning.
    Latest,
    /// The oldest record still retained.
    TrimHorizon,
    /// Records that arrived at or after this time (milliseconds since the epoch).
    AtTimestamp(i64),
}

/// Configuration of a Kinesis source (`connector = 'kinesis'`).
#[derive(Debug, Clone, PartialEq)]
pub struct KinesisSourceConfig {
    /// Stream name or ARN.
    pub stream: String,
    /// Record format: one JSON object or one CSV line (no header) per record.
    pub format: Format,
    /// Where to start reading.
    pub start_position: StartPosition,
    /// Region and endpoint overrides.
    pub aws: AwsOptions,
    /// What to do with malformed records.
    pub on_error: OnError,
    /// Records asked for per GetRecords call (at most 10000).
    pub max_records_per_request: i32,
    /// The longest wait between GetRecords calls on a shard with nothing new.
    pub poll_interval: Duration,
    /// How often the shard list is refreshed to find new shards.
    pub shard_discovery_interval: Duration,
    /// How long network failures and server errors are retried before the source fails.
    /// Throttling is retried without limit.
    pub retry_timeout: Duration,
    /// Records whose event time is too far ahead of the wall clock are bad records. Set by
    /// the planner from the table's `WATERMARK FOR` column and `max_future`; `None` here.
    pub event_time_bound: Option<EventTimeBound>,
}

/// The option keys of the Kinesis source.
pub const KINESIS_SOURCE_OPTIONS: &[&str] = &[
    "stream",
    "format",
    "csv.delimiter",
    "start_position",
    "start_timestamp",
    "endpoint",
    "region",
    "on_error",
    "dead_letter_path",
    "max_records_per_request",
    "poll_interval",
    "shard_discovery_interval",
    "retry_timeout",
    "idle_timeout",
    "max_future",
    "late_dead_letter_path",
];

/// GetRecords returns at most this many records.
pub const GET_RECORDS_LIMIT: u64 = 10_000;
/// Kinesis allows five GetRecords calls per second per shard.
pub const MIN_GET_RECORDS_INTERVAL: Duration = Duration::from_millis(200);

fn reject_csv_header(options: &Options, connector_role: &str) -> Result<()> {
    if options.contains("csv.header") {
        return Err(ConnectorError::InvalidOption(format!(
            "option `csv.header` does not apply to a Kinesis {connector_role}: every record is one CSV line without a header"
        )));
    }
    Ok(())
}

fn record_format(options: &mut Options, role: &str) -> Result<Format> {
    reject_csv_header(options, role)?;
    Ok(match Format::from_options(options, false)? {
        Format::Csv { delimiter, .. } => Format::Csv {
            header: false,
            delimiter,
        },
        other => other,
    })
}

/// Parses a point in time: RFC 3339 or epoch milliseconds.
fn parse_instant(key: &str, text: &str) -> Result<i64> {
    if let Ok(millis) = text.trim().parse::<i64>() {
        return Ok(millis);
    }
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            ConnectorError::InvalidOption(format!(
                "option `{key}` must be an RFC 3339 time such as '2024-05-01T12:00:00Z' or epoch milliseconds, not '{text}'"
            ))
        })
}

impl KinesisSourceConfig {
    /// Reads and validates the options; unknown keys are errors.
    pub fn from_options(mut options: Options) -> Result<Self> {
        let stream = options.take_required("stream", "kinesis")?;
        let format = record_format(&mut options, "source")?;
        let start_timestamp = options.take("start_timestamp");
        let start_position = match options
            .take_choice(
                "start_position",
                &["latest", "trim_horizon", "at_timestamp"],
            )?
            .as_deref()
        {
            Some("trim_horizon") => StartPosition::TrimHorizon,
            Some("at_timestamp") => {
                let Some(t) = &start_timestamp else {
                    return Err(ConnectorError::InvalidOption(
                        "start_position = 'at_timestamp' needs the option start_timestamp = '<RFC 3339 time or epoch millis>'".into(),
                    ));
                };
                StartPosition::AtTimestamp(parse_instant("start_timestamp", t)?)
            }
            _ => StartPosition::Latest,
        };
        if start_timestamp.is_some() && !matches!(start_position, StartPosition::AtTimestamp(_)) {
            return Err(ConnectorError::InvalidOption(
                "option `start_timestamp` needs start_position = 'at_timestamp'".into(),
            ));
        }
        let aws = AwsOptions::from_options(&mut options)?;
        let on_error = options.take("on_error").unwrap_or_else(|| "fail".into());
        let dead_letter_path = options.take("dead_letter_path");
        let on_error = OnError::parse(&on_error, dead_letter_path.as_deref())?;
        let max_records = options
            .take_u64("max_records_per_request")?
            .unwrap_or(GET_RECORDS_LIMIT);
        if !(1..=GET_RECORDS_LIMIT).contains(&max_records) {
            return Err(ConnectorError::InvalidOption(format!(
                "option `max_records_per_request` must be between 1 and {GET_RECORDS_LIMIT}"
            )));
        }
        let poll_interval = options
            .take_duration("poll_interval")?
            .unwrap_or(Duration::from_secs(1))
            .max(MIN_GET_RECORDS_INTERVAL);
        let shard_discovery_interval = options
            .take_duration("shard_discovery_interval")?
            .unwrap_or(Duration::from_secs(10))
            .max(Duration::from_millis(100));
        let retry_timeout = options
            .take_duration("retry_timeout")?
            .unwrap_or(Duration::from_secs(300));
        options.finish("kinesis", KINESIS_SOURCE_OPTIONS)?;
        Ok(KinesisSourceConfig {
            stream,
            format,
            start_position,
            aws,
            on_error,
            max_records_per_request: max_records as i32,
            poll_interval,
            shard_discovery_interval,
            retry_timeout,
            event_time_bound: None,
        })
    }
}

/// Configuration of a Kinesis sink (`connector = 'kinesis'`).
#[derive(Debug, Clone, PartialEq)]
pub struct KinesisSinkConfig {
    /// Stream name or ARN.
    pub stream: String,
    /// Record format: each row becomes one JSON object or one CSV line.
    pub format: Format,
    /// A SQL expression over the sink's columns giving each record's partition key (often just
    /// a column name); without it, keys are random so that records spread over all shards.
    pub partition_key: Option<String>,
    /// Region and endpoint overrides.
    pub aws: AwsOptions,
    /// Records per PutRecords call (at most 500).
    pub max_records_per_request: usize,
    /// How long failed records are retried before the sink fails.
    pub retry_timeout: Duration,
}

/// The option keys of the Kinesis sink.
pub const KINESIS_SINK_OPTIONS: &[&str] = &[
    "stream",
    "format",
    "csv.delimiter",
    "partition_key",
    "endpoint",
    "region",
    "max_records_per_request",
    "retry_timeout",
];

/// PutRecords accepts at most this many records.
pub const PUT_RECORDS_LIMIT: u64 = 500;

impl KinesisSinkConfig {
    /// Reads and validates the options; unknown keys are errors.
    pub fn from_options(mut options: Options) -> Result<Self> {
        let stream = options.take_required("stream", "kinesis")?;
        let format = record_format(&mut options, "sink")?;
        let partition_key = options.take("partition_key");
        let aws = AwsOptions::from_options(&mut options)?;
        let max = options
            .take_u64("max_records_per_request")?
            .unwrap_or(PUT_RECORDS_LIMIT);
        if !(1..=PUT_RECORDS_LIMIT).contains(&max) {
            return Err(ConnectorError::InvalidOption(format!(
                "option `max_records_per_request` must be between 1 and {PUT_RECORDS_LIMIT}"
            )));
        }
        let retry_timeout = options
            .take_duration("retry_timeout")?
            .unwrap_or(Duration::from_secs(300));
        options.finish("kinesis", KINESIS_SINK_OPTIONS)?;
        Ok(KinesisSinkConfig {
            stream,
            format,
            partition_key,
            aws,
            max_records_per_request: max as usize,
            retry_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Options {
        Options::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    #[test]
    fn source_defaults_and_positions() {
        let c = KinesisSourceConfig::from_options(opts(&[("stream", "s")])).unwrap();
        assert_eq!(c.start_position, StartPosition::Latest);
        assert_eq!(c.max_records_per_request, 10_000);
        let c = KinesisSourceConfig::from_options(opts(&[
            ("stream", "s"),
            ("start_position", "AT_TIMESTAMP"),
            ("start_timestamp", "2024-01-01T00:00:01Z"),
        ]))
        .unwrap();
        assert_eq!(
            c.start_position,
            StartPosition::AtTimestamp(1_704_067_201_000)
        );
    }

    #[test]
    fn source_option_errors() {
        for (pairs, message) in [
            (
                vec![("stream", "s"), ("start_position", "at_timestamp")],
                "needs the option start_timestamp",
            ),
            (
                vec![("stream", "s"), ("start_timestamp", "0")],
                "needs start_position",
            ),
            (
                vec![("stream", "s"), ("format", "csv"), ("csv.header", "true")],
                "without a header",
            ),
            (
                vec![("stream", "s"), ("format", "parquet")],
                "must be one of",
            ),
            (
                vec![("stream", "s"), ("shards", "2")],
                "unknown option `shards`",
            ),
            (
                vec![("stream", "s"), ("max_records_per_request", "20000")],
                "between 1 and 10000",
            ),
        ] {
            let e = KinesisSourceConfig::from_options(opts(&pairs)).unwrap_err();
            assert!(e.to_string().contains(message), "{e}");
        }
    }

    #[test]
    fn sink_options() {
        let c = KinesisSinkConfig::from_options(opts(&[
            ("stream", "out"),
            ("partition_key", "user_id"),
        ]))
        .unwrap();
        assert_eq!(c.partition_key.as_deref(), Some("user_id"));
        assert_eq!(c.max_records_per_request, 500);
        let e = KinesisSinkConfig::from_options(opts(&[
            ("stream", "out"),
            ("max_records_per_request", "501"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("between 1 and 500"), "{e}");
    }
}
