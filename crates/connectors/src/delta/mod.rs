//! The `delta` connector: a sink that appends to a Delta Lake table, creating it from the
//! query's schema when it is absent, or with `primary_key` keeps one current row per key
//! by MERGE (the sink for updating results).

mod config;
mod merge;
mod schema;
mod sink;
mod staging;
mod table;
mod upsert_sink;

pub use config::DeltaSinkConfig;
pub use schema::check_table_schema;
pub use sink::DeltaSink;
pub use upsert_sink::DeltaUpsertSink;
