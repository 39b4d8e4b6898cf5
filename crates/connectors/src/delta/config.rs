use std::time::Duration;

use crate::error::{ConnectorError, Result};
use crate::options::Options;
use crate::storage::StorageConfig;

/// Configuration of a Delta sink (`connector = 'delta'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaSinkConfig {
    /// Table location: a local directory or an `s3://bucket/prefix` URL.
    pub path: String,
    /// Object-storage settings for `s3://` locations.
    pub storage: StorageConfig,
    /// Partition columns of a new table (must match an existing table's).
    pub partition_by: Vec<String>,
    /// Buffered rows are committed at least this often.
    pub commit_interval: Duration,
    /// Buffered rows are committed once they reach this size in memory.
    pub max_buffer_bytes: u64,
    /// Target size of the Parquet files written.
    pub target_file_size: Option<u64>,
    /// Compact the table (Delta OPTIMIZE) after a commit that leaves it with at least this
    /// many data files.
    pub compact_file_count: Option<u64>,
    /// Columns identifying a row: when set, every commit is a MERGE that keeps one current
    /// row per key (updates replace it, deletes remove it).
    pub primary_key: Vec<String>,
}

/// The option keys of the Delta sink.
pub const DELTA_SINK_OPTIONS: &[&str] = &[
    "path",
    "partition_by",
    "commit_interval",
    "max_buffer_size",
    "target_file_size",
    "compact_file_count",
    "primary_key",
    "endpoint",
    "region",
    "allow_http",
];

impl DeltaSinkConfig {
    /// Reads and validates the options; unknown keys are errors.
    pub fn from_options(mut options: Options) -> Result<Self> {
        let path = options.take_required("path", "delta")?;
        let partition_by = options
            .take("partition_by")
            .map(|v| split_list(&v))
            .unwrap_or_default();
        let commit_interval = options
            .take_duration("commit_interval")?
            .unwrap_or(Duration::from_secs(10));
        let max_buffer_bytes = options.take_bytes("max_buffer_size")?.unwrap_or(128 << 20);
        let target_file_size = options.take_bytes("target_file_size")?;
        if target_file_size == Some(0) {
            return Err(ConnectorError::InvalidOption(
                "option `target_file_size` must be positive".into(),
            ));
        }
        let compact_file_count = options.take_u64("compact_file_count")?;
        if compact_file_count.is_some_and(|n| n < 2) {
            return Err(ConnectorError::InvalidOption(
                "option `compact_file_count` must be at least 2".into(),
            ));
        }
        let primary_key = options
            .take("primary_key")
            .map(|v| split_list(&v))
            .unwrap_or_default();
        if !primary_key.is_empty() && (compact_file_count.is_some() || target_file_size.is_some()) {
            return Err(ConnectorError::InvalidOption(
                "options `compact_file_count` and `target_file_size` apply to appended tables, not to one kept by `primary_key` (MERGE writes its own files)".into(),
            ));
        }
        let storage = StorageConfig::from_options(&mut options)?;
        options.finish("delta", DELTA_SINK_OPTIONS)?;
        Ok(DeltaSinkConfig {
            path,
            storage,
            partition_by,
            commit_interval,
            max_buffer_bytes,
            target_file_size,
            compact_file_count,
            primary_key,
        })
    }
}

/// Splits `a, b ,c` into names.
pub(crate) fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<DeltaSinkConfig> {
        DeltaSinkConfig::from_options(Options::new(
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )?)
    }

    #[test]
    fn a_primary_key_is_a_list_and_excludes_the_append_only_file_options() {
        let c = config(&[("path", "t"), ("primary_key", "day, channel")]).unwrap();
        assert_eq!(c.primary_key, vec!["day", "channel"]);
        let err = config(&[
            ("path", "t"),
            ("primary_key", "k"),
            ("compact_file_count", "10"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("apply to appended tables"), "{err}");
    }
}
