//! Where checkpoints live: a directory on local disk or a prefix in an object store.
//!
//! Layout under the prefix, one folder per checkpoint:
//!
//! ```text
//! chk-00000000000000000042/0003-windows.arrow   one Arrow IPC file per state table
//! chk-00000000000000000042/_manifest.json        written last: the checkpoint is complete
//! ```
//!
//! The manifest names every table file with its size and CRC-32, so a partly written or
//! damaged checkpoint is detected when it is loaded, and the previous one is used instead.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::state::{NodeState, decode_ipc, encode_ipc};

/// Version of the checkpoint layout; a checkpoint of another version is not loaded.
pub const FORMAT_VERSION: u32 = 1;
const MANIFEST: &str = "_manifest.json";
const FOLDER_PREFIX: &str = "chk-";

/// Identifies a node's state inside a checkpoint: its id in the dataflow and its name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeKey {
    /// The node's id in the dataflow.
    pub id: usize,
    /// The node's name.
    pub name: String,
}

/// A complete checkpoint: the state of every node at one consistent cut.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Checkpoint number, increasing over the life of a pipeline's state directory.
    pub id: u64,
    /// Fingerprint of the pipeline that wrote it.
    pub pipeline: String,
    /// When the checkpoint started and completed (ms since the epoch).
    pub started_at_ms: i64,
    /// When the manifest was written.
    pub completed_at_ms: i64,
    /// State per node.
    pub nodes: BTreeMap<NodeKey, NodeState>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    pipeline: String,
    checkpoint: u64,
    started_at_ms: i64,
    completed_at_ms: i64,
    nodes: Vec<ManifestNode>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ManifestNode {
    id: usize,
    name: String,
    tables: Vec<ManifestTable>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ManifestTable {
    name: String,
    file: String,
    bytes: u64,
    crc32: u32,
}

/// Reads and writes checkpoints under one prefix of an object store.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    location: String,
    keep: usize,
}

impl CheckpointStore {
    /// Checkpoints under `prefix` of `store`; `location` names it in messages (a path or URL).
    /// The newest three checkpoint folders are kept (see [`CheckpointStore::keeping`]).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path, location: impl Into<String>) -> Self {
        CheckpointStore {
            store,
            prefix,
            location: location.into(),
            keep: 3,
        }
    }

    /// Checkpoints in a local directory, created if absent.
    pub fn local(dir: &std::path::Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            EngineError::external(format!("creating the state directory {}", dir.display()), e)
        })?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| {
            EngineError::external(format!("opening the state directory {}", dir.display()), e)
        })?;
        Ok(Self::new(
            Arc::new(store),
            Path::default(),
            dir.display().to_string(),
        ))
    }

    /// Sets how many of the newest checkpoint folders clean-up keeps (at least one); the
    /// newest is always complete, since clean-up runs after a checkpoint is stored.
    pub fn keeping(mut self, keep: usize) -> Self {
        self.keep = keep.max(1);
        self
    }

    /// Where the checkpoints are, for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn folder(&self, id: u64) -> Path {
        self.prefix.clone().join(format!("{FOLDER_PREFIX}{id:020}"))
    }

    fn failed(&self, what: String, e: impl std::fmt::Display) -> EngineError {
        EngineError::external(format!("{what} in {}", self.location), e.to_string())
    }

    /// Writes a checkpoint: every table, then the manifest. Returns the bytes written.
    pub async fn write(&self, checkpoint: &Checkpoint) -> Result<u64> {
        let folder = self.folder(checkpoint.id);
        let mut nodes = Vec::with_capacity(checkpoint.nodes.len());
        let mut total = 0u64;
        for (key, state) in &checkpoint.nodes {
            let mut tables = Vec::new();
            for (name, batch) in state.tables() {
                let bytes = encode_ipc(batch)?;
                let file = format!("{:04}-{}.arrow", key.id, sanitize(name));
                let crc32 = crc32fast::hash(&bytes);
                let len = bytes.len() as u64;
                self.store
                    .put(&folder.clone().join(file.as_str()), PutPayload::from(bytes))
                    .await
                    .map_err(|e| self.failed(format!("writing checkpoint {}", checkpoint.id), e))?;
                total += len;
                tables.push(ManifestTable {
                    name: name.clone(),
                    file,
                    bytes: len,
                    crc32,
                });
            }
            nodes.push(ManifestNode {
                id: key.id,
                name: key.name.clone(),
                tables,
            });
        }
        let manifest = Manifest {
            format: FORMAT_VERSION,
            pipeline: checkpoint.pipeline.clone(),
            checkpoint: checkpoint.id,
            started_at_ms: checkpoint.started_at_ms,
            completed_at_ms: checkpoint.completed_at_ms,
            nodes,
        };
        let text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| EngineError::Internal(format!("serializing a manifest: {e}")))?;
        total += text.len() as u64;
        self.store
            .put(&folder.clone().join(MANIFEST), PutPayload::from(text))
            .await
            .map_err(|e| self.failed(format!("writing checkpoint {}", checkpoint.id), e))?;
        Ok(total)
    }

    /// Checkpoint folders found, newest first, with whether each has a manifest.
    async fn list(&self) -> Result<Vec<u64>> {
        let listing = self
            .store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map_err(|e| self.failed("listing checkpoints".into(), e))?;
        let mut ids: Vec<u64> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename()?.strip_prefix(FOLDER_PREFIX)?.parse().ok())
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        Ok(ids)
    }

    /// The highest checkpoint number ever started here (complete or not), or 0.
    pub async fn highest_id(&self) -> Result<u64> {
        Ok(self.list().await?.first().copied().unwrap_or(0))
    }

    /// The newest complete and intact checkpoint. Checkpoints that are partly written or
    /// damaged are skipped with a warning naming what is wrong.
    pub async fn latest(&self) -> Result<Option<Checkpoint>> {
        for id in self.list().await? {
            match self.load(id).await {
                Ok(Some(c)) => return Ok(Some(c)),
                Ok(None) => {
                    tracing::info!(
                        checkpoint = id,
                        "checkpoint has no manifest (incomplete): skipped"
                    )
                }
                Err(e) => tracing::warn!(
                    checkpoint = id,
                    "checkpoint is unusable, using an older one: {e}"
                ),
            }
        }
        Ok(None)
    }

    /// Loads checkpoint `id`: `None` without a manifest, an error when damaged.
    pub async fn load(&self, id: u64) -> Result<Option<Checkpoint>> {
        let folder = self.folder(id);
        let manifest = match self.store.get(&folder.clone().join(MANIFEST)).await {
            Ok(r) => r
                .bytes()
                .await
                .map_err(|e| self.failed(format!("reading checkpoint {id}"), e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.failed(format!("reading checkpoint {id}"), e)),
        };
        let manifest: Manifest = serde_json::from_slice(&manifest).map_err(|e| {
            EngineError::User(format!(
                "checkpoint {id} in {} has an unreadable manifest: {e}",
                self.location
            ))
        })?;
        if manifest.format != FORMAT_VERSION {
            return Err(EngineError::User(format!(
                "checkpoint {id} in {} has format {} but this laketide reads format {FORMAT_VERSION}",
                self.location, manifest.format
            )));
        }
        let mut nodes = BTreeMap::new();
        for node in manifest.nodes {
            let mut state = NodeState::empty();
            for table in node.tables {
                let path = folder.clone().join(table.file.as_str());
                let bytes = self
                    .store
                    .get(&path)
                    .await
                    .map_err(|e| self.failed(format!("reading {path}"), e))?
                    .bytes()
                    .await
                    .map_err(|e| self.failed(format!("reading {path}"), e))?;
                if bytes.len() as u64 != table.bytes || crc32fast::hash(&bytes) != table.crc32 {
                    return Err(EngineError::User(format!(
                        "checkpoint {id} in {}: {} is damaged (size or CRC-32 differs from the manifest)",
                        self.location, table.file
                    )));
                }
                state = state.with_table(table.name, decode_ipc(bytes.to_vec())?);
            }
            nodes.insert(
                NodeKey {
                    id: node.id,
                    name: node.name,
                },
                state,
            );
        }
        Ok(Some(Checkpoint {
            id,
            pipeline: manifest.pipeline,
            started_at_ms: manifest.started_at_ms,
            completed_at_ms: manifest.completed_at_ms,
            nodes,
        }))
    }

    /// Deletes the checkpoint folders older than the newest `keep` up to `latest` (complete
    /// or not). Failures are logged, not fatal: old state costs only space.
    pub async fn clean_up(&self, latest: u64) {
        let ids = match self.list().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!("cleaning up old checkpoints: {e}");
                return;
            }
        };
        // Newest first: keep `latest` and the `keep - 1` folders before it.
        let older = ids.into_iter().filter(|id| *id <= latest).skip(self.keep);
        for id in older {
            let folder = self.folder(id);
            let files: Vec<_> = match self.store.list(Some(&folder)).try_collect().await {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(checkpoint = id, "listing an old checkpoint: {e}");
                    continue;
                }
            };
            // The manifest goes first, so a half-deleted checkpoint is never taken as complete.
            let mut paths: Vec<Path> = files.into_iter().map(|m| m.location).collect();
            paths.sort_by_key(|p| p.filename() != Some(MANIFEST));
            for path in paths {
                if let Err(e) = self.store.delete(&path).await {
                    tracing::warn!(checkpoint = id, "deleting {path}: {e}");
                }
            }
        }
    }
}

/// Keeps file names portable.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(id: u64, value: u64) -> Checkpoint {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            NodeKey {
                id: 0,
                name: "src".into(),
            },
            NodeState::json(&value).unwrap(),
        );
        nodes.insert(
            NodeKey {
                id: 1,
                name: "sink".into(),
            },
            NodeState::empty(),
        );
        Checkpoint {
            id,
            pipeline: "p".into(),
            started_at_ms: 0,
            completed_at_ms: 1,
            nodes,
        }
    }

    fn value(c: &Checkpoint) -> u64 {
        c.nodes[&NodeKey {
            id: 0,
            name: "src".into(),
        }]
            .to_json()
            .unwrap()
            .unwrap()
    }

    fn folder(dir: &std::path::Path, id: u64) -> std::path::PathBuf {
        dir.join(format!("chk-{id:020}"))
    }

    #[tokio::test]
    async fn the_newest_intact_checkpoint_is_loaded_and_damaged_ones_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::local(dir.path()).unwrap();
        assert!(store.latest().await.unwrap().is_none());
        for id in 1..=3 {
            assert!(store.write(&checkpoint(id, id * 10)).await.unwrap() > 0);
        }
        let latest = store.latest().await.unwrap().unwrap();
        assert_eq!((latest.id, value(&latest)), (3, 30));
        assert_eq!(latest.nodes.len(), 2);

        // A flipped byte in a state file: its CRC differs, checkpoint 2 is used.
        let file = folder(dir.path(), 3).join("0000-json.arrow");
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 9;
        bytes[last] ^= 0xff;
        std::fs::write(&file, bytes).unwrap();
        let latest = store.latest().await.unwrap().unwrap();
        assert_eq!((latest.id, value(&latest)), (2, 20));
        assert!(store.load(3).await.is_err());

        // A checkpoint without its manifest (the crash came while writing it) is skipped too.
        std::fs::remove_file(folder(dir.path(), 2).join(MANIFEST)).unwrap();
        assert_eq!(store.latest().await.unwrap().unwrap().id, 1);
        // A truncated manifest is unreadable: skipped.
        store.write(&checkpoint(4, 40)).await.unwrap();
        std::fs::write(folder(dir.path(), 4).join(MANIFEST), b"{\"format\":1,").unwrap();
        assert_eq!(store.latest().await.unwrap().unwrap().id, 1);
        assert_eq!(store.highest_id().await.unwrap(), 4);
    }

    #[tokio::test]
    async fn clean_up_keeps_the_newest_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::local(dir.path()).unwrap().keeping(2);
        for id in 1..=5 {
            store.write(&checkpoint(id, id)).await.unwrap();
            store.clean_up(id).await;
        }
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| {
                // Empty folders may stay on a local disk; only folders with files count.
                std::fs::read_dir(dir.path().join(n))
                    .unwrap()
                    .next()
                    .is_some()
            })
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![format!("chk-{:020}", 4), format!("chk-{:020}", 5)]
        );
        assert_eq!(store.latest().await.unwrap().unwrap().id, 5);
    }
}
