use std::time::Duration;

use crate::error::Result;
use crate::options::Options;
use crate::storage::StorageConfig;

/// File format of the filesystem sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Apache Parquet.
    Parquet,
    /// One JSON object per line.
    Json,
    /// CSV with a header line.
    Csv,
}

impl FileFormat {
    /// The file name extension.
    pub fn extension(&self) -> &'static str {
        match self {
            FileFormat::Parquet => "parquet",
            FileFormat::Json => "json",
            FileFormat::Csv => "csv",
        }
    }
}

/// Configuration of a filesystem sink (`connector = 'filesystem'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesystemSinkConfig {
    /// Output directory (created if absent) or `s3://bucket/prefix`.
    pub path: String,
    /// Object-storage settings for `s3://` paths.
    pub storage: StorageConfig,
    /// File format.
    pub format: FileFormat,
    /// A file is closed when it reaches this size.
    pub rollover_size: u64,
    /// A file is closed when it has been open this long.
    pub rollover_interval: Duration,
}

/// The option keys of the filesystem sink.
pub const FILESYSTEM_SINK_OPTIONS: &[&str] = &[
    "path",
    "format",
    "rollover_size",
    "rollover_interval",
    "endpoint",
    "region",
    "allow_http",
];

impl FilesystemSinkConfig {
    /// Reads and validates the options; unknown keys are errors.
    pub fn from_options(mut options: Options) -> Result<Self> {
        let path = options.take_required("path", "filesystem")?;
        let format = match options
            .take_choice("format", &["parquet", "json", "csv"])?
            .as_deref()
        {
            Some("json") => FileFormat::Json,
            Some("csv") => FileFormat::Csv,
            _ => FileFormat::Parquet,
        };
        let rollover_size = options.take_bytes("rollover_size")?.unwrap_or(128 << 20);
        let rollover_interval = options
            .take_duration("rollover_interval")?
            .unwrap_or(Duration::from_secs(60));
        let storage = StorageConfig::from_options(&mut options)?;
        options.finish("filesystem", FILESYSTEM_SINK_OPTIONS)?;
        Ok(FilesystemSinkConfig {
            path,
            storage,
            format,
            rollover_size,
            rollover_interval,
        })
    }
}
