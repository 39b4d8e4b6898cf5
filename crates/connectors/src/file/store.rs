//! Where a file source's files live: the local file system, or an object store prefix
//! (`s3://bucket/prefix`). The reader threads are plain threads, so object-store calls run on
//! the runtime the source was opened in (`Handle::block_on`), and objects are streamed in
//! chunks rather than loaded whole.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use deltalake::ObjectStore;
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::logstore::object_store::path::Path as ObjectPath;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use tokio::runtime::Handle;

use super::listing::{list_files, visible_name};
use crate::error::{ConnectorError, Result};
use crate::storage::StorageConfig;

/// The files of a source.
#[derive(Clone)]
pub(crate) enum FileStore {
    /// Local paths (a directory, a file or a glob).
    Local,
    /// Objects under `root` (`s3://bucket/prefix`, no trailing slash); `store` is rooted there.
    Remote {
        root: String,
        store: Arc<dyn ObjectStore>,
        runtime: Handle,
    },
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileStore::Local => write!(f, "Local"),
            FileStore::Remote { root, .. } => write!(f, "Remote({root})"),
        }
    }
}

/// Whether a source path names an object store location.
pub fn is_remote(path: &str) -> bool {
    path.contains("://")
}

impl FileStore {
    /// The store for `path`; for a remote path, connects to it (no request yet). Must run
    /// inside the tokio runtime that will serve the reads.
    pub fn for_path(path: &str, storage: &StorageConfig) -> Result<FileStore> {
        if !is_remote(path) {
            return Ok(FileStore::Local);
        }
        if path.contains(['*', '?', '[']) {
            return Err(ConnectorError::InvalidOption(format!(
                "`{path}`: globs are not supported in object store paths; give a prefix"
            )));
        }
        let root = path.trim_end_matches('/').to_string();
        let failed =
            |e: deltalake::DeltaTableError| ConnectorError::delta(format!("opening {root}"), e);
        let url = deltalake::ensure_table_uri(&root).map_err(failed)?;
        let store = deltalake::DeltaTableBuilder::from_url(url)
            .map_err(failed)?
            .with_storage_options(storage.storage_options())
            .build_storage()
            .map_err(failed)?
            .object_store(None);
        let runtime = Handle::try_current().map_err(|_| {
            ConnectorError::InvalidOption(
                "the file source must be opened inside the runtime".into(),
            )
        })?;
        Ok(FileStore::Remote {
            root,
            store,
            runtime,
        })
    }

    /// Every visible file, sorted (see [`list_files`] for what is skipped).
    pub fn list(&self, path: &str) -> Result<Vec<PathBuf>> {
        match self {
            FileStore::Local => list_files(path),
            FileStore::Remote {
                root,
                store,
                runtime,
            } => {
                let objects: Vec<_> =
                    runtime
                        .block_on(store.list(None).try_collect())
                        .map_err(|e| {
                            ConnectorError::service(format!("listing {root}"), e.to_string())
                        })?;
                let mut files: Vec<PathBuf> = objects
                    .into_iter()
                    .filter(|o| o.location.parts().all(|part| visible_name(part.as_ref())))
                    .map(|o| PathBuf::from(format!("{root}/{}", o.location)))
                    .collect();
                files.sort();
                Ok(files)
            }
        }
    }

    fn relative(root: &str, file: &Path) -> ObjectPath {
        let text = file.to_string_lossy();
        ObjectPath::from(
            text.strip_prefix(root)
                .unwrap_or(&text)
                .trim_start_matches('/'),
        )
    }

    /// A buffered reader over a file's bytes, streamed in chunks for objects.
    pub fn open(&self, file: &Path) -> std::io::Result<Box<dyn BufRead + Send>> {
        match self {
            FileStore::Local => Ok(Box::new(BufReader::with_capacity(
                1 << 20,
                std::fs::File::open(file)?,
            ))),
            FileStore::Remote {
                root,
                store,
                runtime,
            } => {
                let location = Self::relative(root, file);
                let stream = runtime
                    .block_on(store.get(&location))
                    .map_err(std::io::Error::other)?
                    .into_stream();
                Ok(Box::new(BufReader::with_capacity(
                    1 << 20,
                    ObjectReader {
                        stream,
                        current: Bytes::new(),
                        runtime: runtime.clone(),
                    },
                )))
            }
        }
    }

    /// A whole file's bytes (Parquet needs random access; its footer is at the end).
    pub fn read_all(&self, file: &Path) -> std::io::Result<Bytes> {
        match self {
            FileStore::Local => std::fs::read(file).map(Bytes::from),
            FileStore::Remote {
                root,
                store,
                runtime,
            } => {
                let location = Self::relative(root, file);
                runtime
                    .block_on(async { store.get(&location).await?.bytes().await })
                    .map_err(std::io::Error::other)
            }
        }
    }
}

/// Reads an object's byte stream as `std::io::Read`, one chunk at a time.
struct ObjectReader {
    stream: BoxStream<'static, deltalake::logstore::object_store::Result<Bytes>>,
    current: Bytes,
    runtime: Handle,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.runtime.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}
