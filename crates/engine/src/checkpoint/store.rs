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
//!
//! A keyed table ([`KeyedTable`]) is saved as a chain of parts: a full table, then the
//! changes of later checkpoints. A checkpoint whose snapshot is a delta writes only its
//! changes and lists the earlier parts of its base's chain, which stay in their folders:
//!
//! ```text
//! chk-…43/0003-results.arrow          the changed rows of checkpoint 43
//! chk-…43/0003-results.removed.arrow  the keys it removed
//! chk-…43/_manifest.json              results = [chk-…40 full, chk-…42 changes, chk-…43 changes]
//! ```
//!
//! Clean-up keeps every folder that a retained manifest refers to.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::state::{KeyedTable, NodeState, TableChanges, decode_ipc, encode_ipc};

/// Version of the checkpoint layout written; checkpoints of this and earlier versions (1:
/// without keyed tables) are loaded, others are refused.
pub const FORMAT_VERSION: u32 = 2;
const MANIFEST: &str = "_manifest.json";
const FOLDER_PREFIX: &str = "chk-";

/// Identifies a node's state inside a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeKey {
    /// The node's stable id (see `stable_ids.rs`: `source:clicks`, `totals[0]/aggregate`).
    /// In a checkpoint of format 1, `#<position>`: such state is restored by position.
    pub id: String,
    /// The node's name, for messages.
    pub name: String,
    /// What the node and its inputs compute: state is restored only into a node with the
    /// same (empty in a checkpoint of format 1).
    pub fingerprint: String,
}

/// A complete checkpoint: the state of every node at one consistent cut.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Checkpoint number, increasing over the life of a pipeline's state directory.
    pub id: u64,
    /// Fingerprint of the pipeline that wrote it.
    pub pipeline: String,
    /// Its layout version ([`FORMAT_VERSION`] when written by this laketide).
    pub format: u32,
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
    id: ManifestNodeId,
    name: String,
    #[serde(default)]
    fingerprint: String,
    tables: Vec<ManifestTable>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    keyed: Vec<ManifestChain>,
}

/// A node's stable id (format 2), or its position in the graph (format 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum ManifestNodeId {
    Stable(String),
    Position(usize),
}

impl ManifestNodeId {
    fn key_id(&self) -> String {
        match self {
            ManifestNodeId::Stable(id) => id.clone(),
            ManifestNodeId::Position(p) => format!("#{p}"),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ManifestTable {
    name: String,
    #[serde(flatten)]
    data: ManifestFile,
}

/// One file: its name inside the folder of the checkpoint that wrote it, size and CRC-32.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ManifestFile {
    file: String,
    bytes: u64,
    crc32: u32,
}

/// A keyed table: its parts, oldest (the full table) first.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ManifestChain {
    name: String,
    parts: Vec<ManifestPart>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ManifestPart {
    /// The checkpoint whose folder holds the files.
    checkpoint: u64,
    rows: ManifestFile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    removed: Option<ManifestFile>,
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

    /// Writes a checkpoint: every table, then the manifest. Returns the bytes written. A
    /// keyed table that is a delta extends the chain of the same node's table in its base
    /// checkpoint, which must be stored here.
    pub async fn write(&self, checkpoint: &Checkpoint) -> Result<u64> {
        let mut files = FileWriter {
            store: self,
            folder: self.folder(checkpoint.id),
            checkpoint: checkpoint.id,
            bytes: 0,
        };
        let mut bases: BTreeMap<u64, Manifest> = BTreeMap::new();
        let mut nodes = Vec::with_capacity(checkpoint.nodes.len());
        for (number, (key, state)) in checkpoint.nodes.iter().enumerate() {
            let mut tables = Vec::new();
            for (name, batch) in state.tables() {
                let data = files
                    .put(&format!("{number:04}-{}", sanitize(name)), batch)
                    .await?;
                tables.push(ManifestTable {
                    name: name.clone(),
                    data,
                });
            }
            let mut keyed = Vec::new();
            for (name, table) in state.keyed_tables() {
                if state.table(name).is_some() {
                    return Err(EngineError::Internal(format!(
                        "{} saved a table and a keyed table both called {name}",
                        key.name
                    )));
                }
                let stem = format!("{number:04}-{}", sanitize(name));
                let (mut parts, changes) = match table {
                    KeyedTable::Full(rows) => (
                        Vec::new(),
                        TableChanges {
                            rows: rows.clone(),
                            removed: None,
                        },
                    ),
                    KeyedTable::Delta { base, changes } => {
                        if !bases.contains_key(base) {
                            bases.insert(*base, self.manifest_of_base(*base, checkpoint.id).await?);
                        }
                        (base_chain(&bases[base], key, name)?, changes.clone())
                    }
                    KeyedTable::Restored { .. } => {
                        return Err(EngineError::Internal(format!(
                            "{} snapshotted a restored table {name}",
                            key.name
                        )));
                    }
                };
                let rows = files.put(&stem, &changes.rows).await?;
                let removed = match &changes.removed {
                    Some(r) => Some(files.put(&format!("{stem}.removed"), r).await?),
                    None => None,
                };
                parts.push(ManifestPart {
                    checkpoint: checkpoint.id,
                    rows,
                    removed,
                });
                keyed.push(ManifestChain {
                    name: name.clone(),
                    parts,
                });
            }
            nodes.push(ManifestNode {
                id: ManifestNodeId::Stable(key.id.clone()),
                name: key.name.clone(),
                fingerprint: key.fingerprint.clone(),
                tables,
                keyed,
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
        let total = files.bytes + text.len() as u64;
        self.store
            .put(&files.folder.clone().join(MANIFEST), PutPayload::from(text))
            .await
            .map_err(|e| self.failed(format!("writing checkpoint {}", checkpoint.id), e))?;
        Ok(total)
    }

    /// The manifest of `base`, which checkpoint `id` extends.
    async fn manifest_of_base(&self, base: u64, id: u64) -> Result<Manifest> {
        self.manifest(base).await?.ok_or_else(|| {
            EngineError::Internal(format!(
                "checkpoint {id} extends checkpoint {base}, which is not stored in {}",
                self.location
            ))
        })
    }

    /// Reads the manifest of checkpoint `id`: `None` when it has none (incomplete).
    async fn manifest(&self, id: u64) -> Result<Option<Manifest>> {
        let path = self.folder(id).join(MANIFEST);
        let bytes = match self.store.get(&path).await {
            Ok(r) => r
                .bytes()
                .await
                .map_err(|e| self.failed(format!("reading checkpoint {id}"), e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.failed(format!("reading checkpoint {id}"), e)),
        };
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
            EngineError::User(format!(
                "checkpoint {id} in {} has an unreadable manifest: {e}",
                self.location
            ))
        })?;
        if manifest.format == 0 || manifest.format > FORMAT_VERSION {
            return Err(EngineError::User(format!(
                "checkpoint {id} in {} has format {} but this laketide reads formats up to {FORMAT_VERSION}",
                self.location, manifest.format
            )));
        }
        Ok(Some(manifest))
    }

    /// Reads one file a manifest lists, checking its size and CRC-32.
    async fn read_file(
        &self,
        checkpoint: u64,
        id: u64,
        file: &ManifestFile,
    ) -> Result<RecordBatch> {
        let path = self.folder(checkpoint).join(file.file.as_str());
        let bytes = self
            .store
            .get(&path)
            .await
            .map_err(|e| self.failed(format!("reading {path}"), e))?
            .bytes()
            .await
            .map_err(|e| self.failed(format!("reading {path}"), e))?;
        if bytes.len() as u64 != file.bytes || crc32fast::hash(&bytes) != file.crc32 {
            return Err(EngineError::User(format!(
                "checkpoint {id} in {}: {path} is damaged (size or CRC-32 differs from the manifest)",
                self.location
            )));
        }
        decode_ipc(bytes.to_vec())
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

    /// Loads checkpoint `id`: `None` without a manifest, an error when damaged (also when a
    /// part of a keyed table in an earlier folder is missing or damaged).
    pub async fn load(&self, id: u64) -> Result<Option<Checkpoint>> {
        let Some(manifest) = self.manifest(id).await? else {
            return Ok(None);
        };
        let mut nodes = BTreeMap::new();
        for node in manifest.nodes {
            let mut state = NodeState::empty();
            for table in node.tables {
                let batch = self.read_file(id, id, &table.data).await?;
                state = state.with_table(table.name, batch);
            }
            for chain in node.keyed {
                let mut parts = Vec::with_capacity(chain.parts.len());
                for part in &chain.parts {
                    let rows = self.read_file(part.checkpoint, id, &part.rows).await?;
                    let removed = match &part.removed {
                        Some(f) => Some(self.read_file(part.checkpoint, id, f).await?),
                        None => None,
                    };
                    parts.push(TableChanges { rows, removed });
                }
                state = state.with_keyed_table(
                    chain.name,
                    KeyedTable::Restored {
                        checkpoint: id,
                        parts,
                    },
                );
            }
            nodes.insert(
                NodeKey {
                    id: node.id.key_id(),
                    name: node.name,
                    fingerprint: node.fingerprint,
                },
                state,
            );
        }
        Ok(Some(Checkpoint {
            id,
            pipeline: manifest.pipeline,
            format: manifest.format,
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
        // Newest first: keep `latest` and the `keep - 1` folders before it, and the folders
        // their keyed tables refer to.
        let candidates: Vec<u64> = ids.into_iter().filter(|id| *id <= latest).collect();
        let mut referenced = std::collections::BTreeSet::new();
        for id in candidates.iter().take(self.keep) {
            match self.manifest(*id).await {
                Ok(Some(m)) => referenced.extend(referenced_folders(&m)),
                Ok(None) => {}
                Err(e) => {
                    // Without knowing what it refers to, nothing older may go.
                    tracing::warn!(checkpoint = id, "reading a kept checkpoint's manifest: {e}");
                    return;
                }
            }
        }
        let older = candidates
            .into_iter()
            .skip(self.keep)
            .filter(|id| !referenced.contains(id));
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

/// Writes the files of one checkpoint into its folder, counting the bytes.
struct FileWriter<'a> {
    store: &'a CheckpointStore,
    folder: Path,
    checkpoint: u64,
    bytes: u64,
}

impl FileWriter<'_> {
    /// Writes `batch` as `<stem>.arrow`.
    async fn put(&mut self, stem: &str, batch: &RecordBatch) -> Result<ManifestFile> {
        let bytes = encode_ipc(batch)?;
        let file = format!("{stem}.arrow");
        let crc32 = crc32fast::hash(&bytes);
        let len = bytes.len() as u64;
        self.store
            .store
            .put(
                &self.folder.clone().join(file.as_str()),
                PutPayload::from(bytes),
            )
            .await
            .map_err(|e| {
                self.store
                    .failed(format!("writing checkpoint {}", self.checkpoint), e)
            })?;
        self.bytes += len;
        Ok(ManifestFile {
            file,
            bytes: len,
            crc32,
        })
    }
}

/// The parts of `node`'s keyed table `name` in the manifest of a base checkpoint.
fn base_chain(base: &Manifest, node: &NodeKey, name: &str) -> Result<Vec<ManifestPart>> {
    base.nodes
        .iter()
        .find(|n| n.id.key_id() == node.id && n.fingerprint == node.fingerprint)
        .and_then(|n| n.keyed.iter().find(|c| c.name == name))
        .map(|c| c.parts.clone())
        .ok_or_else(|| {
            EngineError::Internal(format!(
                "{} saved a delta of {name} against checkpoint {}, which has no such table",
                node.name, base.checkpoint
            ))
        })
}

/// The checkpoint folders a manifest's keyed tables read from.
fn referenced_folders(manifest: &Manifest) -> impl Iterator<Item = u64> + '_ {
    manifest
        .nodes
        .iter()
        .flat_map(|n| &n.keyed)
        .flat_map(|c| &c.parts)
        .map(|p| p.checkpoint)
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
                id: "source:src".into(),
                name: "src".into(),
                fingerprint: "f0".into(),
            },
            NodeState::json(&value).unwrap(),
        );
        nodes.insert(
            NodeKey {
                id: "sink[0]".into(),
                name: "sink".into(),
                fingerprint: "f1".into(),
            },
            NodeState::empty(),
        );
        Checkpoint {
            id,
            pipeline: "p".into(),
            format: FORMAT_VERSION,
            started_at_ms: 0,
            completed_at_ms: 1,
            nodes,
        }
    }

    fn value(c: &Checkpoint) -> u64 {
        c.nodes[&NodeKey {
            id: "source:src".into(),
            name: "src".into(),
            fingerprint: "f0".into(),
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
        let file = folder(dir.path(), 3).join("0001-json.arrow");
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

    fn int_batch(values: &[i64]) -> RecordBatch {
        use datafusion::arrow::array::{ArrayRef, Int64Array};
        RecordBatch::try_from_iter([("k", Arc::new(Int64Array::from(values.to_vec())) as ArrayRef)])
            .unwrap()
    }

    fn keyed(id: u64, table: KeyedTable) -> Checkpoint {
        let mut c = checkpoint(id, id);
        let key = NodeKey {
            id: "sink[0]".into(),
            name: "sink".into(),
            fingerprint: "f1".into(),
        };
        c.nodes
            .insert(key, NodeState::empty().with_keyed_table("rows", table));
        c
    }

    fn folders_with_files(dir: &std::path::Path) -> Vec<u64> {
        let mut ids: Vec<u64> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| std::fs::read_dir(p).unwrap().next().is_some())
            .map(|p| {
                p.file_name().unwrap().to_str().unwrap()[4..]
                    .parse()
                    .unwrap()
            })
            .collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn a_keyed_table_is_a_chain_of_a_full_table_and_deltas_kept_while_referenced() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::local(dir.path()).unwrap().keeping(1);
        let delta = |base: u64, rows: &[i64], removed: Option<&[i64]>| KeyedTable::Delta {
            base,
            changes: TableChanges {
                rows: int_batch(rows),
                removed: removed.map(int_batch),
            },
        };
        let everything: Vec<i64> = (0..100_000).collect();
        let full = store
            .write(&keyed(1, KeyedTable::Full(int_batch(&everything))))
            .await
            .unwrap();
        store.clean_up(1).await;
        let small = store
            .write(&keyed(2, delta(1, &[4], Some(&[2]))))
            .await
            .unwrap();
        store.clean_up(2).await;
        store.write(&keyed(3, delta(2, &[5], None))).await.unwrap();
        store.clean_up(3).await;
        assert_eq!(
            folders_with_files(dir.path()),
            vec![1, 2, 3],
            "3 refers to 1 and 2"
        );

        let latest = store.latest().await.unwrap().unwrap();
        let state = &latest.nodes[&NodeKey {
            id: "sink[0]".into(),
            name: "sink".into(),
            fingerprint: "f1".into(),
        }];
        let Some(KeyedTable::Restored { checkpoint, parts }) = state.keyed_table("rows") else {
            panic!("a restored keyed table");
        };
        assert_eq!(*checkpoint, 3);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].rows, int_batch(&everything));
        assert_eq!(parts[1].rows, int_batch(&[4]));
        assert_eq!(parts[1].removed, Some(int_batch(&[2])));
        assert_eq!(
            (parts[2].rows.clone(), parts[2].removed.clone()),
            (int_batch(&[5]), None)
        );
        assert!(
            small * 50 < full,
            "a delta writes only its changes ({small} bytes, the full table {full})"
        );

        // A damaged part in an earlier folder makes the checkpoint unusable.
        let file = folder(dir.path(), 1).join("0000-rows.arrow");
        let good = std::fs::read(&file).unwrap();
        std::fs::write(&file, &good[..good.len() - 3]).unwrap();
        assert!(store.load(3).await.is_err());
        std::fs::write(&file, &good).unwrap();

        // A delta against a checkpoint that is not stored is refused.
        assert!(store.write(&keyed(4, delta(9, &[6], None))).await.is_err());
        // A full table ends the chain: the old folders go.
        store
            .write(&keyed(5, KeyedTable::Full(int_batch(&[7]))))
            .await
            .unwrap();
        store.clean_up(5).await;
        assert_eq!(folders_with_files(dir.path()), vec![5]);
    }

    #[tokio::test]
    async fn a_checkpoint_of_format_1_is_read_with_its_nodes_by_position() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::local(dir.path()).unwrap();
        store.write(&checkpoint(7, 70)).await.unwrap();
        // Rewrite the manifest as format 1 wrote it: nodes by position, no fingerprints.
        let path = folder(dir.path(), 7).join(MANIFEST);
        let mut manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        manifest["format"] = 1.into();
        for (position, node) in manifest["nodes"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .enumerate()
        {
            node["id"] = position.into();
            node.as_object_mut().unwrap().remove("fingerprint");
        }
        std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
        let loaded = store.latest().await.unwrap().unwrap();
        assert_eq!(loaded.format, 1);
        let keys: Vec<(String, String, String)> = loaded
            .nodes
            .keys()
            .map(|k| (k.id.clone(), k.name.clone(), k.fingerprint.clone()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("#0".into(), "sink".into(), String::new()),
                ("#1".into(), "src".into(), String::new()),
            ]
        );
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
