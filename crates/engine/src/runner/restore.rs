//! Choosing the checkpoint a run recovers from.

use std::collections::BTreeMap;

use crate::checkpoint::{CheckpointSettings, NodeKey, Recovery};
use crate::error::{EngineError, Result};
use crate::state::NodeState;

/// The state to restore, per node, and the checkpoint it comes from.
pub(super) struct Restored {
    pub(super) id: u64,
    pub(super) nodes: BTreeMap<NodeKey, NodeState>,
}

/// Finds the checkpoint to recover from, as `settings.recovery` says. `nodes` lists the
/// dataflow's nodes with whether each is a source.
pub(super) async fn find_restore(
    settings: &CheckpointSettings,
    nodes: &[(NodeKey, bool)],
) -> Result<Option<Restored>> {
    if settings.recovery == Recovery::FromScratch {
        return Ok(None);
    }
    let Some(checkpoint) = settings.store.latest().await? else {
        return Ok(None);
    };
    let mut states = checkpoint.nodes;
    let is_source = |k: &NodeKey| nodes.iter().any(|(n, source)| n == k && *source);
    let changed = checkpoint.pipeline != settings.fingerprint;
    if changed && settings.recovery != Recovery::KeepSourcePositions {
        return Err(EngineError::User(format!(
            "the pipeline has changed since checkpoint {} in {} was taken, so its state does not fit; run with --from-scratch to start over, or --keep-positions to keep only the source read positions",
            checkpoint.id,
            settings.store.location()
        )));
    }
    if changed {
        tracing::warn!(
            checkpoint = checkpoint.id,
            "the pipeline changed: keeping only the source positions of the checkpoint"
        );
    }
    if settings.recovery == Recovery::KeepSourcePositions {
        states.retain(|k, _| is_source(k));
    }
    for key in states.keys() {
        if !nodes.iter().any(|(n, _)| n == key) {
            return Err(EngineError::User(format!(
                "checkpoint {} in {} holds state of node [{}] {} which this pipeline does not have; run with --from-scratch to start over",
                checkpoint.id,
                settings.store.location(),
                key.id,
                key.name
            )));
        }
    }
    Ok(Some(Restored {
        id: checkpoint.id,
        nodes: states,
    }))
}
