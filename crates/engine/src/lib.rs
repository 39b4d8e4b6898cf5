//! laketide's streaming runtime.
//!
//! A pipeline is a [`Dataflow`]: [`Source`]s feed [`Operator`]s that feed [`Sink`]s, connected by
//! bounded channels that carry [`Message`]s (record batches, watermarks, checkpoint barriers,
//! end of stream). Event time advances by watermarks, derived per source split
//! ([`SplitWatermarks`]) and combined as a minimum at every operator with several inputs
//! ([`InputWatermarks`]). Window operators ([`operators`]) assign windows and aggregate with
//! DataFusion's vectorized group values and accumulators, emitting each window once when the
//! watermark passes its end. This crate knows nothing of SQL or of any storage service.

mod bad_records;
mod caught_up;
mod changelog;
pub mod checkpoint;
mod error;
mod graph;
mod jsonl_file;
mod late_rows;
mod lookup;
mod message;
mod metrics;
mod operator;
pub mod operators;
mod runner;
mod sink;
mod source;
mod stable_ids;
mod state;
pub mod time;
mod watermark;

pub use bad_records::{BadRecords, OnError};
pub use caught_up::CaughtUpSplits;
pub use changelog::{
    CHANGE_COLUMN, ChangeKind, StreamMode, change_array, change_field, change_kinds,
    has_change_column, kind_at, schema_with_change,
};
pub use error::{EngineError, ErrorKind, Result};
pub use graph::{Dataflow, Node, NodeId, NodeKind};
pub use late_rows::LateRows;
pub use lookup::{LookupTable, MemoryLookupTable};
pub use message::{CheckpointBarrier, EventTime, Message, Watermark};
pub use metrics::{
    MetricsSnapshot, NodeMetrics, NodeRole, PipelineMetrics, ServiceStatus, SourceLateRows,
};
pub use operator::{Fetch, Operator, Output};
pub use runner::{RunOptions, RunSummary, run};
pub use sink::{Sink, SinkSummary};
pub use source::{Source, SourcePoll, SplitId};
pub use state::{KeyedTable, NodeState, TableChanges};
pub use watermark::{InputWatermarks, SplitWatermarks, WatermarkStrategy};
