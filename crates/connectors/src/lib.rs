//! laketide's connectors: one module per connector, each with a typed configuration read from
//! `WITH (…)` options (unknown keys are errors) and its source and/or sink.

pub mod aws;
pub mod blackhole;
pub mod changelog;
pub mod console;
pub mod delta;
pub mod dynamodb;
mod error;
pub mod file;
pub mod filesystem;
pub mod format;
pub mod kinesis;
pub mod memory;
mod metadata;
pub mod nexmark;
mod options;
mod registry;
pub mod state_store;
pub mod storage;
pub mod webhook;

pub use error::{ConnectorError, Result};
pub use format::{DEFAULT_MAX_FUTURE, EventTimeBound};
pub use metadata::MetadataColumn;
pub use options::{Options, parse_bytes, parse_duration};
pub use registry::{
    BuiltSink, BuiltSource, LOOKUP_CONNECTORS, SINK_CONNECTORS, SOURCE_CONNECTORS, build_lookup,
    build_sink, build_source, is_lookup_only, snapshot_source,
};
