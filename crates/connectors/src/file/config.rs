use std::time::Duration;

use laketide_engine::OnError;

use crate::error::{ConnectorError, Result};
use crate::format::{EventTimeBound, Format};
use crate::options::Options;
use crate::storage::StorageConfig;

use super::compression::Compression;

/// Whether a file source ends after what is there, or keeps watching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileMode {
    /// Read the files present at start, then finish (flushing every window).
    Once,
    /// Read the files present, then keep listing for new ones every `poll_interval`.
    Continuous,
}

/// Configuration of a file source (`connector = 'file'`).
#[derive(Debug, Clone, PartialEq)]
pub struct FileSourceConfig {
    /// A directory (all visible files in it), a single file, a glob such as `data/*.json`, or
    /// an object store prefix such as `s3://bucket/incoming` (every object under it).
    pub path: String,
    /// Record format.
    pub format: Format,
    /// Bounded or continuous.
    pub mode: FileMode,
    /// How often a continuous source lists the path again.
    pub poll_interval: Duration,
    /// Rows per batch.
    pub batch_size: usize,
    /// What to do with malformed records.
    pub on_error: OnError,
    /// Threads decoding chunks of lines (JSON, CSV) in parallel.
    pub reader_threads: usize,
    /// Files read at the same time (each is a split that holds the watermark back).
    pub open_files: usize,
    /// Endpoint, region and plain-HTTP settings for `s3://` paths.
    pub storage: StorageConfig,
    /// How JSON-lines and CSV files are compressed.
    pub compression: Compression,
    /// Records whose event time is too far ahead of the wall clock are bad records. Set by
    /// the planner from the table's `WATERMARK FOR` column and `max_future`; `None` here.
    pub event_time_bound: Option<EventTimeBound>,
}

/// The option keys of the file source.
pub const FILE_SOURCE_OPTIONS: &[&str] = &[
    "path",
    "format",
    "csv.header",
    "csv.delimiter",
    "mode",
    "poll_interval",
    "batch_size",
    "on_error",
    "dead_letter_path",
    "reader_threads",
    "open_files",
    "idle_timeout",
    "max_future",
    "late_dead_letter_path",
    "compression",
    "endpoint",
    "region",
    "allow_http",
];

impl FileSourceConfig {
    /// Reads and validates the options; unknown keys are errors.
    pub fn from_options(mut options: Options) -> Result<Self> {
        let path = options.take_required("path", "file")?;
        let format = Format::from_options(&mut options, true)?;
        let mode = match options
            .take_choice("mode", &["once", "continuous"])?
            .as_deref()
        {
            Some("once") => FileMode::Once,
            _ => FileMode::Continuous,
        };
        let poll_interval = options
            .take_duration("poll_interval")?
            .unwrap_or(Duration::from_secs(1));
        let batch_size = options.take_u64("batch_size")?.unwrap_or(8192) as usize;
        if batch_size == 0 {
            return Err(ConnectorError::InvalidOption(
                "option `batch_size` must be at least 1".into(),
            ));
        }
        let on_error = options.take("on_error").unwrap_or_else(|| "fail".into());
        let dead_letter_path = options.take("dead_letter_path");
        let on_error = OnError::parse(&on_error, dead_letter_path.as_deref())?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let reader_threads = take_count(&mut options, "reader_threads", cores)?;
        let open_files = take_count(&mut options, "open_files", 1)?;
        let storage = StorageConfig::from_options(&mut options)?;
        let compression = Compression::parse(options.take("compression").as_deref())?;
        if format == Format::Parquet && compression != Compression::Auto {
            return Err(ConnectorError::InvalidOption(
                "option `compression` applies to JSON and CSV files; Parquet files carry their own"
                    .into(),
            ));
        }
        options.finish("file", FILE_SOURCE_OPTIONS)?;
        Ok(FileSourceConfig {
            path,
            format,
            mode,
            poll_interval,
            batch_size,
            on_error,
            reader_threads,
            open_files,
            storage,
            compression,
            event_time_bound: None,
        })
    }
}

/// A positive count option, `default` when not given.
fn take_count(options: &mut Options, key: &str, default: usize) -> Result<usize> {
    match options.take_u64(key)? {
        Some(0) => Err(ConnectorError::InvalidOption(format!(
            "option `{key}` must be at least 1"
        ))),
        Some(n) => Ok(n as usize),
        None => Ok(default),
    }
}
