//! Options of the DynamoDB sink.

use std::time::Duration;

use laketide_engine::OnError;

use crate::aws::AwsOptions;
use crate::error::{ConnectorError, Result};
use crate::options::Options;

/// How rows are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteMode {
    /// Each row replaces the whole item with its key (BatchWriteItem). Replays are idempotent.
    Upsert,
    /// Each row sets only `columns` on the item with its key, leaving its other attributes
    /// (UpdateItem with an update expression).
    Update {
        /// The attributes written (never the key columns).
        columns: Vec<String>,
    },
}

/// How TIMESTAMP and DATE values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeEncoding {
    /// ISO-8601 text (`2024-05-01T12:00:00Z`, `2024-05-01`): a string attribute.
    Iso8601,
    /// Milliseconds since the epoch: a number attribute.
    EpochMillis,
    /// Seconds since the epoch: a number attribute.
    EpochSeconds,
}

/// A TTL attribute computed from a time column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ttl {
    /// The TIMESTAMP or DATE column the expiry is computed from.
    pub column: String,
    /// How long after that time the item expires.
    pub after: Duration,
    /// The attribute that holds the expiry, in epoch seconds.
    pub attribute: String,
}

/// Configuration of a DynamoDB sink (`connector = 'dynamodb'`).
#[derive(Debug, Clone, PartialEq)]
pub struct DynamoDbSinkConfig {
    /// The DynamoDB table.
    pub table: String,
    /// The partition key column and, optionally, the sort key column.
    pub primary_key: Vec<String>,
    /// Create the table (on-demand billing) if it does not exist.
    pub create_if_missing: bool,
    /// Replace items or update some of their attributes.
    pub mode: WriteMode,
    /// Only write a row if the stored item has no value of this column or a smaller one.
    pub version_column: Option<String>,
    /// How times are stored.
    pub time_encoding: TimeEncoding,
    /// An expiry attribute, if any.
    pub ttl: Option<Ttl>,
    /// Requests sent at the same time.
    pub max_in_flight: usize,
    /// How long unprocessed items, throttling and network failures are retried before the
    /// pipeline fails.
    pub retry_timeout: Duration,
    /// Rows with a NULL key: fail, skip and count, or dead-letter.
    pub on_error: OnError,
    /// Region and endpoint overrides.
    pub aws: AwsOptions,
}

/// The option keys of the DynamoDB sink.
pub const DYNAMODB_SINK_OPTIONS: &[&str] = &[
    "table",
    "primary_key",
    "create_if_missing",
    "mode",
    "update_columns",
    "version_column",
    "timestamp_format",
    "ttl_column",
    "ttl",
    "ttl_attribute",
    "max_in_flight",
    "retry_timeout",
    "on_error",
    "dead_letter_path",
    "endpoint",
    "region",
];

fn columns(text: &str) -> Vec<String> {
    text.split(',')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

/// The `primary_key` option: the partition key column and optionally the sort key column.
pub(super) fn key_columns(text: &str) -> Result<Vec<String>> {
    let key = columns(text);
    if key.is_empty() || key.len() > 2 {
        return Err(ConnectorError::InvalidOption(
            "option `primary_key` names the partition key column and optionally the sort key column, e.g. 'page, window_start'".into(),
        ));
    }
    Ok(key)
}

/// How a table's requests are sent, for the sink and the lookup table alike.
pub(super) struct Requests {
    pub(super) max_in_flight: usize,
    pub(super) retry_timeout: Duration,
    pub(super) on_error: OnError,
    pub(super) aws: AwsOptions,
}

/// The `max_in_flight`, `retry_timeout`, `on_error`, `dead_letter_path`, `endpoint` and
/// `region` options.
pub(super) fn requests(options: &mut Options) -> Result<Requests> {
    let max_in_flight = options.take_u64("max_in_flight")?.unwrap_or(4);
    if max_in_flight == 0 {
        return Err(ConnectorError::InvalidOption(
            "option `max_in_flight` must be at least 1".into(),
        ));
    }
    let retry_timeout = options
        .take_duration("retry_timeout")?
        .unwrap_or(Duration::from_secs(300));
    let on_error = options.take("on_error").unwrap_or_else(|| "fail".into());
    let dead_letter_path = options.take("dead_letter_path");
    Ok(Requests {
        max_in_flight: max_in_flight as usize,
        retry_timeout,
        on_error: OnError::parse(&on_error, dead_letter_path.as_deref())?,
        aws: AwsOptions::from_options(options)?,
    })
}

/// The `timestamp_format` option.
pub(super) fn time_encoding(options: &mut Options) -> Result<TimeEncoding> {
    let choice = options.take_choice(
        "timestamp_format",
        &["iso8601", "epoch_millis", "epoch_seconds"],
    )?;
    Ok(match choice.as_deref() {
        Some("epoch_millis") => TimeEncoding::EpochMillis,
        Some("epoch_seconds") => TimeEncoding::EpochSeconds,
        _ => TimeEncoding::Iso8601,
    })
}

impl DynamoDbSinkConfig {
    /// Reads and validates the options; unknown keys are errors.
    pub fn from_options(mut options: Options) -> Result<Self> {
        let table = options.take_required("table", "dynamodb")?;
        let primary_key = key_columns(&options.take_required("primary_key", "dynamodb")?)?;
        let create_if_missing = options.take_bool("create_if_missing")?.unwrap_or(false);
        let update_columns = options.take("update_columns").map(|c| columns(&c));
        let mode = match options
            .take_choice("mode", &["upsert", "update"])?
            .as_deref()
        {
            Some("update") => WriteMode::Update {
                columns: update_columns.clone().unwrap_or_default(),
            },
            _ => {
                if update_columns.is_some() {
                    return Err(ConnectorError::InvalidOption(
                        "option `update_columns` needs mode = 'update'".into(),
                    ));
                }
                WriteMode::Upsert
            }
        };
        if let WriteMode::Update { columns } = &mode
            && let Some(k) = columns.iter().find(|c| primary_key.contains(c))
        {
            return Err(ConnectorError::InvalidOption(format!(
                "option `update_columns` lists the key column `{k}`; keys identify the item and are never updated"
            )));
        }
        let version_column = options.take("version_column");
        let time_encoding = time_encoding(&mut options)?;
        let ttl_column = options.take("ttl_column");
        let ttl_after = options.take_duration("ttl")?;
        let ttl_attribute = options.take("ttl_attribute");
        let ttl = match (ttl_column, ttl_after) {
            (Some(column), Some(after)) => Some(Ttl {
                column,
                after,
                attribute: ttl_attribute.unwrap_or_else(|| "ttl".into()),
            }),
            (None, None) if ttl_attribute.is_none() => None,
            _ => {
                return Err(ConnectorError::InvalidOption(
                    "a TTL needs both `ttl_column` (a TIMESTAMP column) and `ttl` (how long after it the item expires, e.g. '7d')".into(),
                ));
            }
        };
        let Requests {
            max_in_flight,
            retry_timeout,
            on_error,
            aws,
        } = requests(&mut options)?;
        options.finish("dynamodb", DYNAMODB_SINK_OPTIONS)?;
        Ok(DynamoDbSinkConfig {
            table,
            primary_key,
            create_if_missing,
            mode,
            version_column,
            time_encoding,
            ttl,
            max_in_flight,
            retry_timeout,
            on_error,
            aws,
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
    fn keys_modes_and_ttl() {
        let c = DynamoDbSinkConfig::from_options(opts(&[
            ("table", "t"),
            ("primary_key", "page, window_start"),
            ("ttl_column", "window_end"),
            ("ttl", "7d"),
        ]))
        .unwrap();
        assert_eq!(c.primary_key, vec!["page", "window_start"]);
        assert_eq!(c.mode, WriteMode::Upsert);
        assert_eq!(c.ttl.unwrap().attribute, "ttl");
        let c = DynamoDbSinkConfig::from_options(opts(&[
            ("table", "t"),
            ("primary_key", "id"),
            ("mode", "update"),
            ("update_columns", "views, revenue"),
        ]))
        .unwrap();
        assert_eq!(
            c.mode,
            WriteMode::Update {
                columns: vec!["views".into(), "revenue".into()]
            }
        );
    }

    #[test]
    fn option_errors() {
        for (pairs, message) in [
            (
                vec![("table", "t"), ("primary_key", "a,b,c")],
                "partition key column",
            ),
            (
                vec![
                    ("table", "t"),
                    ("primary_key", "a"),
                    ("update_columns", "b"),
                ],
                "needs mode",
            ),
            (
                vec![
                    ("table", "t"),
                    ("primary_key", "a"),
                    ("mode", "update"),
                    ("update_columns", "a"),
                ],
                "key column `a`",
            ),
            (
                vec![("table", "t"), ("primary_key", "a"), ("ttl", "1d")],
                "needs both",
            ),
            (
                vec![("table", "t"), ("primary_key", "a"), ("shards", "1")],
                "unknown option `shards`",
            ),
            (vec![("primary_key", "a")], "needs the option `table`"),
        ] {
            let e = DynamoDbSinkConfig::from_options(opts(&pairs)).unwrap_err();
            assert!(e.to_string().contains(message), "{e}");
        }
    }
}
