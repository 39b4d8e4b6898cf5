//! The `dynamodb` connector: a sink that serves results from a DynamoDB table, through the AWS
//! SDK (standard AWS environment, or the `endpoint` and `region` options).

mod config;
pub mod item;
mod sink;
mod table;

pub use config::{DynamoDbSinkConfig, TimeEncoding, Ttl, WriteMode};
pub use sink::DynamoDbSink;
