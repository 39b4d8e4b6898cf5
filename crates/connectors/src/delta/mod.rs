//! The `delta` connector: a sink that appends to a Delta Lake table, creating it from the
//! query's schema when it is absent, or with `primary_key` keeps one current row per key
//! by MERGE (the sink for updating results); and a lookup table (a side input held in
//! memory, reloaded on a new version).

mod config;
mod lookup;
mod merge;
mod schema;
mod sink;
mod staging;
mod table;
mod upsert_sink;

pub use config::DeltaSinkConfig;
pub use lookup::{DEFAULT_RELOAD_INTERVAL, DELTA_LOOKUP_OPTIONS, DeltaLookup};
pub use schema::check_table_schema;
pub use sink::DeltaSink;
pub use upsert_sink::DeltaUpsertSink;
