//! Options of a DynamoDB table read by a lookup join.

use std::time::Duration;

use laketide_engine::OnError;

use super::config::{Requests, TimeEncoding, key_columns, requests, time_encoding};
use crate::aws::AwsOptions;
use crate::error::Result;
use crate::options::Options;

/// Configuration of a DynamoDB lookup table (`connector = 'dynamodb'` read with
/// `FOR SYSTEM_TIME AS OF`).
#[derive(Debug, Clone, PartialEq)]
pub struct DynamoDbLookupConfig {
    /// The DynamoDB table.
    pub table: String,
    /// The partition key column and, optionally, the sort key column: a lookup gives both.
    pub primary_key: Vec<String>,
    /// Keys (found or not) kept in the cache at most; 0 turns the cache off.
    pub cache_max_rows: usize,
    /// How long a cached answer is used before the item is read again.
    pub cache_ttl: Duration,
    /// BatchGetItem requests sent at the same time.
    pub max_in_flight: usize,
    /// How long throttling, unprocessed keys and network failures are retried before the
    /// pipeline fails.
    pub retry_timeout: Duration,
    /// How TIMESTAMP and DATE attributes are stored (as the sink writes them).
    pub time_encoding: TimeEncoding,
    /// Items whose attributes do not fit the declared columns: fail, skip, or dead-letter.
    pub on_error: OnError,
    /// Region and endpoint overrides.
    pub aws: AwsOptions,
}

/// The option keys of a DynamoDB lookup table.
pub const DYNAMODB_LOOKUP_OPTIONS: &[&str] = &[
    "table",
    "primary_key",
    "lookup.cache.max_rows",
    "lookup.cache.ttl",
    "max_in_flight",
    "retry_timeout",
    "timestamp_format",
    "on_error",
    "dead_letter_path",
    "endpoint",
    "region",
];

impl DynamoDbLookupConfig {
    /// Reads and validates the options; unknown keys are errors.
    pub fn from_options(mut options: Options) -> Result<Self> {
        let table = options.take_required("table", "dynamodb")?;
        let primary_key = key_columns(&options.take_required("primary_key", "dynamodb")?)?;
        let cache_max_rows = options
            .take_u64("lookup.cache.max_rows")?
            .unwrap_or(100_000);
        let cache_ttl =
            (options.take_duration("lookup.cache.ttl")?).unwrap_or(Duration::from_secs(60));
        let time_encoding = time_encoding(&mut options)?;
        let Requests {
            max_in_flight,
            retry_timeout,
            on_error,
            aws,
        } = requests(&mut options)?;
        options.finish("dynamodb lookup", DYNAMODB_LOOKUP_OPTIONS)?;
        Ok(DynamoDbLookupConfig {
            table,
            primary_key,
            cache_max_rows: cache_max_rows as usize,
            cache_ttl,
            max_in_flight,
            retry_timeout,
            time_encoding,
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
    fn reads_cache_options_with_defaults() {
        let c = DynamoDbLookupConfig::from_options(opts(&[
            ("table", "customers"),
            ("primary_key", "user_id"),
            ("lookup.cache.ttl", "10s"),
        ]))
        .unwrap();
        assert_eq!(c.primary_key, vec!["user_id"]);
        assert_eq!(c.cache_ttl, Duration::from_secs(10));
        assert_eq!(c.cache_max_rows, 100_000);
        let err = DynamoDbLookupConfig::from_options(opts(&[
            ("table", "customers"),
            ("primary_key", "user_id"),
            ("mode", "update"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("mode"), "{err}");
        let err = DynamoDbLookupConfig::from_options(opts(&[("table", "customers")])).unwrap_err();
        assert!(err.to_string().contains("primary_key"), "{err}");
    }
}
