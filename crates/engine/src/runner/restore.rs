//! Choosing the checkpoint a run recovers from, and which node each saved state goes to.
//!
//! State is matched by stable node id (see `stable_ids.rs`). A node whose id and fingerprint
//! both match gets its state; a saved node this pipeline no longer has is dropped with a
//! warning (its statement was removed); a node whose id matches but whose fingerprint differs
//! computes something else now, and the run is refused unless told what to do
//! (`--from-scratch`, `--keep-positions`). Checkpoints of format 1 know nodes only by
//! position: they are restored only into the same pipeline (same fingerprint).

use std::collections::BTreeMap;

use crate::checkpoint::{Checkpoint, CheckpointSettings, NodeKey, Recovery};
use crate::error::{EngineError, Result};
use crate::state::NodeState;

/// The state to restore, per node (keyed as the running pipeline keys its nodes), and the
/// checkpoint it comes from.
pub(super) struct Restored {
    pub(super) id: u64,
    pub(super) nodes: BTreeMap<NodeKey, NodeState>,
}

/// Finds the checkpoint to recover from, as `settings.recovery` says. `nodes` lists the
/// dataflow's node keys, in node order, with whether each is a source.
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
    let id = checkpoint.id;
    let states = if checkpoint.format == 1 {
        by_position(settings, nodes, checkpoint)?
    } else {
        by_stable_id(settings, nodes, checkpoint)?
    };
    Ok(Some(Restored { id, nodes: states }))
}

/// The way out offered when state does not fit.
const WAYS_OUT: &str = "run with --from-scratch to start over, or --keep-positions to keep only the source read positions";

/// Format 2: every saved node's state goes to the node with its id, if its fingerprint
/// matches.
fn by_stable_id(
    settings: &CheckpointSettings,
    nodes: &[(NodeKey, bool)],
    checkpoint: Checkpoint,
) -> Result<BTreeMap<NodeKey, NodeState>> {
    let keep_positions = settings.recovery == Recovery::KeepSourcePositions;
    let mut restored = BTreeMap::new();
    let mut changed = Vec::new();
    for (saved, state) in checkpoint.nodes {
        let Some((key, is_source)) = nodes.iter().find(|(k, _)| k.id == saved.id) else {
            tracing::warn!(
                checkpoint = checkpoint.id,
                node = %saved.id,
                "the checkpoint holds state of a node this pipeline no longer has (its statement was removed): not restored"
            );
            continue;
        };
        if keep_positions {
            // Positions stay valid for a source whose options changed; nothing else is kept.
            if *is_source {
                restored.insert(key.clone(), state);
            }
        } else if key.fingerprint == saved.fingerprint {
            restored.insert(key.clone(), state);
        } else {
            changed.push(saved.id);
        }
    }
    if !changed.is_empty() {
        return Err(EngineError::User(format!(
            "the pipeline has changed since checkpoint {} in {} was taken: the state of {} does not fit what the pipeline computes now; {WAYS_OUT}",
            checkpoint.id,
            settings.store.location(),
            changed.join(", ")
        )));
    }
    Ok(restored)
}

/// Format 1: nodes by position, restored only into the same pipeline.
fn by_position(
    settings: &CheckpointSettings,
    nodes: &[(NodeKey, bool)],
    checkpoint: Checkpoint,
) -> Result<BTreeMap<NodeKey, NodeState>> {
    let changed = checkpoint.pipeline != settings.fingerprint;
    if changed && settings.recovery != Recovery::KeepSourcePositions {
        return Err(EngineError::User(format!(
            "the pipeline has changed since checkpoint {} in {} was taken, so its state does not fit; {WAYS_OUT}",
            checkpoint.id,
            settings.store.location(),
        )));
    }
    if changed {
        tracing::warn!(
            checkpoint = checkpoint.id,
            "the pipeline changed: keeping only the source positions of the checkpoint"
        );
    }
    let mut restored = BTreeMap::new();
    for (saved, state) in checkpoint.nodes {
        let position: Option<usize> = saved.id.strip_prefix('#').and_then(|p| p.parse().ok());
        let Some((key, is_source)) = position
            .and_then(|p| nodes.get(p))
            .filter(|(k, _)| k.name == saved.name)
        else {
            if settings.recovery == Recovery::KeepSourcePositions {
                continue;
            }
            return Err(EngineError::User(format!(
                "checkpoint {} in {} holds state of node {} {} which this pipeline does not have; {WAYS_OUT}",
                checkpoint.id,
                settings.store.location(),
                saved.id,
                saved.name
            )));
        };
        if settings.recovery != Recovery::KeepSourcePositions || *is_source {
            restored.insert(key.clone(), state);
        }
    }
    Ok(restored)
}
