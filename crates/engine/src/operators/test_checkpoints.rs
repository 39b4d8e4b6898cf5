//! For operators' tests of incremental checkpoints: a real checkpoint store in a temporary
//! directory, barriers based on the newest stored checkpoint, checkpoints that fail to be
//! stored, and the state loaded back as a restarted run would get it.

use crate::checkpoint::{Checkpoint, CheckpointStore, FORMAT_VERSION, NodeKey};
use crate::message::CheckpointBarrier;
use crate::state::{KeyedTable, NodeState};

pub(crate) struct StoreHarness {
    _dir: tempfile::TempDir,
    store: CheckpointStore,
    key: NodeKey,
    base: Option<u64>,
    /// Snapshots whose `table` was a delta, and the keys those deltas removed.
    pub(crate) deltas: usize,
    pub(crate) removals: usize,
}

impl StoreHarness {
    /// A store keeping two checkpoints, for the state of node `name`.
    pub(crate) fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::local(dir.path()).unwrap().keeping(2);
        StoreHarness {
            _dir: dir,
            store,
            key: NodeKey {
                id: format!("out[0]/{name}"),
                name: name.into(),
                fingerprint: "f".into(),
            },
            base: None,
            deltas: 0,
            removals: 0,
        }
    }

    /// The barrier of checkpoint `id`, based on the newest stored checkpoint.
    pub(crate) fn barrier(&self, id: u64) -> CheckpointBarrier {
        CheckpointBarrier {
            id,
            started_at_ms: 0,
            base: self.base,
        }
    }

    /// Counts whether keyed table `table` of `state` is a delta; then, if `stored`, stores
    /// the state as checkpoint `id` and returns what the store loads back as the newest
    /// checkpoint. Unstored, the next barrier's base stays the older one.
    pub(crate) async fn store(
        &mut self,
        id: u64,
        state: NodeState,
        table: &str,
        stored: bool,
    ) -> Option<NodeState> {
        if let Some(KeyedTable::Delta { changes, .. }) = state.keyed_table(table) {
            self.deltas += 1;
            self.removals += changes.removed.as_ref().map_or(0, |r| r.num_rows());
        }
        if !stored {
            return None;
        }
        let checkpoint = Checkpoint {
            id,
            pipeline: "p".into(),
            format: FORMAT_VERSION,
            started_at_ms: 0,
            completed_at_ms: 0,
            nodes: [(self.key.clone(), state)].into_iter().collect(),
        };
        self.store.write(&checkpoint).await.unwrap();
        self.store.clean_up(id).await;
        self.base = Some(id);
        let mut loaded = self.store.latest().await.unwrap().unwrap();
        loaded.nodes.remove(&self.key)
    }
}
