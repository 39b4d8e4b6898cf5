//! Opens the checkpoint store of a pipeline: a local directory or an `s3://bucket/prefix`,
//! configured by the standard AWS environment like every other S3 path.

use std::sync::Arc;

use laketide_engine::checkpoint::CheckpointStore;

use crate::error::{ConnectorError, Result};
use crate::file::is_remote;
use crate::storage::StorageConfig;

/// The checkpoint store at `location`: a directory (created if absent) or an object-store URL.
pub fn open_checkpoint_store(location: &str) -> Result<CheckpointStore> {
    if !is_remote(location) {
        return Ok(CheckpointStore::local(std::path::Path::new(location))?);
    }
    let failed = |e: deltalake::DeltaTableError| {
        ConnectorError::delta(format!("opening the state store {location}"), e)
    };
    let url = deltalake::ensure_table_uri(location).map_err(failed)?;
    let store = deltalake::DeltaTableBuilder::from_url(url)
        .map_err(failed)?
        .with_storage_options(StorageConfig::default().storage_options())
        .build_storage()
        .map_err(failed)?
        .object_store(None);
    Ok(CheckpointStore::new(
        Arc::clone(&store),
        deltalake::Path::default(),
        location,
    ))
}
