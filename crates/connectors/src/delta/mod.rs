//! The `delta` connector: a sink that appends to a Delta Lake table, creating it from the
//! query's schema when it is absent.

mod config;
mod schema;
mod sink;

pub use config::DeltaSinkConfig;
pub use schema::check_table_schema;
pub use sink::DeltaSink;
