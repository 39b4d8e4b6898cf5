//! The `kinesis` connector: a source over the shards of a Kinesis data stream and a sink that
//! writes rows as records, through the AWS SDK (standard AWS environment, or the `endpoint` and
//! `region` options).

mod client;
mod config;
mod decode;
pub mod kpl;
mod position;
mod reader;
mod shards;
mod sink;
mod source;
mod writer;

pub use client::StreamClient;
pub use config::{KinesisSinkConfig, KinesisSourceConfig, StartPosition};
pub use decode::{KINESIS_METADATA, KinesisDecoder};
pub use position::ShardPosition;
pub use shards::{ShardInfo, ShardTracker};
pub use sink::KinesisSink;
pub use source::KinesisSource;
pub use writer::{OutgoingRecord, RecordWriter};
