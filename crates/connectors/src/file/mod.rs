//! The `file` connector: a source over a local directory or glob of JSON-lines, CSV or Parquet
//! files, bounded (`mode = 'once'`) or continuous (watches for new files).

mod compression;
mod config;
mod decode_pool;
mod listing;
mod lookup;
mod reader;
mod source;
mod store;

pub use compression::Compression;
pub use config::{FileMode, FileSourceConfig};
pub use listing::list_files;
pub use lookup::FileLookup;
pub use source::FileSource;
pub use store::is_remote;
