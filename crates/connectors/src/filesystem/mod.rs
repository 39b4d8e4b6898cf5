//! The `filesystem` connector: a sink writing Parquet, JSON-lines or CSV files into a
//! directory, rolled by size and time.

mod config;
mod sink;
mod writer;

pub use config::{FileFormat, FilesystemSinkConfig};
pub use sink::FilesystemSink;
