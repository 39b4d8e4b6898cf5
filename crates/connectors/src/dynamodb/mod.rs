//! The `dynamodb` connector: a sink that serves results from a DynamoDB table, and a lookup
//! table that joins streams with one, through the AWS
//! SDK (standard AWS environment, or the `endpoint` and `region` options).

mod config;
pub mod item;
mod lookup;
mod lookup_config;
mod sink;
mod table;

pub use config::{DynamoDbSinkConfig, TimeEncoding, Ttl, WriteMode};
pub use lookup::{DynamoDbLookup, MAX_GET_KEYS};
pub use lookup_config::{DYNAMODB_LOOKUP_OPTIONS, DynamoDbLookupConfig};
pub use sink::DynamoDbSink;
