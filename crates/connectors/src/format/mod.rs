//! Record formats shared by sources: JSON lines and CSV records decoded into Arrow batches,
//! with bad records handled by the source's `on_error` policy.

mod decoder;
mod encoder;
mod event_time;
mod timestamps;

pub use decoder::RecordDecoder;
pub use encoder::RowEncoder;
pub use event_time::{DEFAULT_MAX_FUTURE, EventTimeBound};

use crate::error::{ConnectorError, Result};
use crate::options::Options;

/// A record format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line; nested objects map to STRUCT columns.
    Json,
    /// One delimited record per line.
    Csv {
        /// Whether files start with a header line (skipped).
        header: bool,
        /// Field delimiter.
        delimiter: u8,
    },
    /// Apache Parquet files (file sources only).
    Parquet,
}

impl Format {
    /// Reads `format`, `csv.header` and `csv.delimiter`; `parquet_allowed` says whether the
    /// connector can read whole Parquet files.
    pub fn from_options(options: &mut Options, parquet_allowed: bool) -> Result<Self> {
        let allowed: &[&str] = if parquet_allowed {
            &["json", "csv", "parquet"]
        } else {
            &["json", "csv"]
        };
        let name = options
            .take_choice("format", allowed)?
            .unwrap_or_else(|| "json".into());
        let header = options.take_bool("csv.header")?;
        let delimiter = options.take("csv.delimiter");
        if name != "csv" && (header.is_some() || delimiter.is_some()) {
            return Err(ConnectorError::InvalidOption(
                "options `csv.header` and `csv.delimiter` need format = 'csv'".into(),
            ));
        }
        Ok(match name.as_str() {
            "csv" => {
                let delimiter = match delimiter.as_deref() {
                    None => b',',
                    Some("\\t") | Some("tab") => b'\t',
                    Some(d) if d.len() == 1 => d.as_bytes()[0],
                    Some(d) => {
                        return Err(ConnectorError::InvalidOption(format!(
                            "option `csv.delimiter` must be one character, not '{d}'"
                        )));
                    }
                };
                Format::Csv {
                    header: header.unwrap_or(true),
                    delimiter,
                }
            }
            "parquet" => Format::Parquet,
            _ => Format::Json,
        })
    }

    /// Short name for descriptions.
    pub fn name(&self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv { .. } => "csv",
            Format::Parquet => "parquet",
        }
    }
}

/// The option keys [`Format::from_options`] reads.
pub const FORMAT_OPTIONS: &[&str] = &["format", "csv.header", "csv.delimiter"];
