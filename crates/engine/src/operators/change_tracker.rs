//! Which keys of a keyed operator changed since each snapshot that may still become the base
//! of an incremental one, and whether the next snapshot should be a delta or full.
//!
//! Every change stamps the key with the current epoch; every snapshot records the epoch it
//! saw (its mark) and starts a new one. The keys changed since snapshot `b` are those stamped
//! later than `b`'s mark. A barrier names the newest *stored* checkpoint as its base, so a
//! checkpoint that failed to be stored is simply never a base: its changes are in the next
//! delta too. Marks older than the base are dropped, as are removals it already covers.
//!
//! Policy: a delta while the chain it extends stays short (at most [`MAX_PARTS`] parts) and
//! the deltas in it (with this one) hold at most half as many rows as the table; otherwise a
//! full table. So a checkpoint costs about what changed (amortized: the full rewrites are
//! paid for by the deltas before them), and a restore reads at most about 1.5 tables.

use std::collections::BTreeMap;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::Result;
use crate::message::CheckpointBarrier;
use crate::state::{KeyedTable, TableChanges};

/// Parts in a chain (the full table and its deltas) before a full table is written again.
pub(crate) const MAX_PARTS: usize = 16;

/// What a snapshot at one checkpoint knew about its chain.
#[derive(Debug, Clone, Copy)]
struct Mark {
    epoch: u64,
    /// Parts of the chain this snapshot ended (1 for a full table).
    parts: usize,
    /// Rows in the chain's deltas.
    delta_rows: usize,
}

/// A stored checkpoint that a snapshot may be a delta against.
#[derive(Debug, Clone, Copy)]
struct DeltaBase {
    /// Its number.
    base: u64,
    /// Changes stamped later than this epoch are not in it.
    since: u64,
    delta_rows: usize,
}

/// Change stamps per key id, snapshot marks and removed keys of one keyed table.
#[derive(Debug)]
pub(crate) struct ChangeTracker {
    epoch: u64,
    /// Per key id, the epoch of its last change (0: not changed since the start or restore).
    stamps: Vec<u64>,
    /// Key columns of removed keys, with the epoch of the removal.
    removed: Vec<(u64, RecordBatch)>,
    removed_rows: usize,
    /// Removals up to this epoch were forgotten (too many to be worth a delta, or no
    /// checkpoints to take them): a base older than it gets a full table.
    forgotten: u64,
    /// Per checkpoint whose snapshot may still become a base.
    marks: BTreeMap<u64, Mark>,
}

impl Default for ChangeTracker {
    fn default() -> Self {
        ChangeTracker {
            epoch: 1,
            stamps: Vec::new(),
            removed: Vec::new(),
            removed_rows: 0,
            forgotten: 0,
            marks: BTreeMap::new(),
        }
    }
}

impl ChangeTracker {
    /// Records that keys `ids` changed (new, or a new current row).
    pub(crate) fn changed(&mut self, ids: &[usize]) {
        for &id in ids {
            if id >= self.stamps.len() {
                self.stamps.resize(id + 1, 0);
            }
            self.stamps[id] = self.epoch;
        }
    }

    /// Records that the keys with these key columns were removed (their ids may be reused),
    /// from a table that now has `live` rows. Once the removals kept are more than half the
    /// table, no delta could hold them: they are forgotten and the next snapshot is full, so
    /// that memory stays bounded also when no checkpoints are taken.
    pub(crate) fn removed(&mut self, keys: RecordBatch, live: usize) {
        if keys.num_rows() == 0 {
            return;
        }
        self.removed_rows += keys.num_rows();
        self.removed.push((self.epoch, keys));
        if 2 * self.removed_rows > live.max(1024) {
            self.removed.clear();
            self.removed_rows = 0;
            self.forgotten = self.epoch;
        }
    }

    /// Moves the stamps to new key ids: key `old[i]` is now `new[i]`; keys not in `old` are
    /// gone (and were recorded as removed).
    pub(crate) fn renumber(&mut self, old: &[usize], new: &[usize]) {
        let mut stamps = Vec::new();
        for (o, n) in old.iter().zip(new) {
            if *n >= stamps.len() {
                stamps.resize(n + 1, 0);
            }
            stamps[*n] = self.stamps.get(*o).copied().unwrap_or(0);
        }
        self.stamps = stamps;
    }

    /// The epoch that changes are stamped with now, for operators that keep their own
    /// stamps (beside their values) instead of [`Self::changed`]'s per key id.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The base a snapshot at `barrier` may be a delta against, or `None` when it must be
    /// full (no base, a base this operator has no snapshot of, a long chain, or forgotten
    /// removals). Drops the marks and removals that the base covers.
    fn delta_base(&mut self, barrier: &CheckpointBarrier) -> Option<DeltaBase> {
        let base = barrier.base?;
        let mark = *self.marks.get(&base)?;
        self.marks.retain(|id, _| *id >= base);
        self.removed.retain(|(epoch, _)| *epoch > mark.epoch);
        self.removed_rows = self.removed.iter().map(|(_, k)| k.num_rows()).sum();
        (mark.parts < MAX_PARTS && mark.epoch >= self.forgotten).then_some(DeltaBase {
            base,
            since: mark.epoch,
            delta_rows: mark.delta_rows,
        })
    }

    /// Whether a delta of `rows` rows (changed and removed) on `base` is worth writing for a
    /// table of `live` rows, rather than the full table.
    fn worth_a_delta(&self, base: &DeltaBase, rows: usize, live: usize) -> bool {
        2 * (base.delta_rows + rows) <= live
    }

    /// The key ids stamped ([`Self::changed`]) after epoch `since` that `is_live` still
    /// has, ascending.
    pub(crate) fn changed_ids(&self, since: u64, is_live: impl Fn(usize) -> bool) -> Vec<usize> {
        (0..self.stamps.len())
            .filter(|id| self.stamps[*id] > since && is_live(*id))
            .collect()
    }

    /// The keyed table of the snapshot at `barrier` of a table of `live` rows, and records
    /// the snapshot. `changed(self, since)` finds what changed after epoch `since` and how
    /// many rows it saves to; `rows_of` builds those rows; `full` builds every row (`None`
    /// when the table is empty). A delta, with the removals since the base, when it is worth
    /// it (see the module's policy); otherwise the full table.
    pub(crate) fn snapshot<C>(
        &mut self,
        barrier: &CheckpointBarrier,
        live: usize,
        changed: impl FnOnce(&Self, u64) -> (C, usize),
        rows_of: impl FnOnce(C) -> Result<RecordBatch>,
        full: impl FnOnce() -> Result<Option<RecordBatch>>,
    ) -> Result<Option<KeyedTable>> {
        let delta = self.delta_base(barrier).and_then(|base| {
            let (what, rows) = changed(self, base.since);
            let rows = rows + self.removed_rows;
            self.worth_a_delta(&base, rows, live)
                .then_some((base.base, what, rows))
        });
        let Some((base, what, rows)) = delta else {
            let table = full()?.map(KeyedTable::Full);
            self.taken(barrier.id, None, 0);
            return Ok(table);
        };
        let removed = match self.removed.first() {
            Some((_, first)) => {
                let batches: Vec<RecordBatch> =
                    self.removed.iter().map(|(_, k)| k.clone()).collect();
                Some(concat_batches(&first.schema(), &batches)?)
            }
            None => None,
        };
        let changes = TableChanges {
            rows: rows_of(what)?,
            removed,
        };
        self.taken(barrier.id, Some(base), rows);
        Ok(Some(KeyedTable::Delta { base, changes }))
    }

    /// Records the snapshot at checkpoint `id`: full (`base` `None`) or a delta on `base` of
    /// `rows` rows (changed and removed); starts a new epoch.
    fn taken(&mut self, id: u64, base: Option<u64>, rows: usize) {
        let mark = match base {
            None => Mark {
                epoch: self.epoch,
                parts: 1,
                delta_rows: 0,
            },
            Some(base) => {
                let before = self.marks[&base];
                Mark {
                    epoch: self.epoch,
                    parts: before.parts + 1,
                    delta_rows: before.delta_rows + rows,
                }
            }
        };
        self.marks.insert(id, mark);
        self.epoch += 1;
    }

    /// Records what a restored keyed table (`state.keyed_table(..)`) was: when it came from a
    /// checkpoint's chain, the next snapshot may extend that chain.
    pub(crate) fn restored_from(&mut self, table: Option<&KeyedTable>) {
        if let Some(KeyedTable::Restored { checkpoint, parts }) = table {
            let delta_rows = parts[1..]
                .iter()
                .map(|p| p.rows.num_rows() + p.removed.as_ref().map_or(0, |r| r.num_rows()))
                .sum();
            self.restored(*checkpoint, parts.len(), delta_rows);
        }
    }

    /// Records that the table was restored from checkpoint `id`, whose chain had `parts`
    /// parts with `delta_rows` rows in its deltas: the next snapshot may extend it.
    fn restored(&mut self, id: u64, parts: usize, delta_rows: usize) {
        self.marks.insert(
            id,
            Mark {
                epoch: self.epoch,
                parts,
                delta_rows,
            },
        );
        self.epoch += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::Int64Type;
    use std::sync::Arc;

    fn barrier(id: u64, base: Option<u64>) -> CheckpointBarrier {
        CheckpointBarrier {
            id,
            started_at_ms: 0,
            base,
        }
    }

    fn keys(values: &[i64]) -> RecordBatch {
        RecordBatch::try_from_iter([(
            "k",
            Arc::new(Int64Array::from(values.to_vec())) as datafusion::arrow::array::ArrayRef,
        )])
        .unwrap()
    }

    /// The snapshot at checkpoint `id` on `base` of a table of key ids: for a delta, its
    /// base, the changed ids and how many keys it removes; `None` for a full table.
    fn snap(
        t: &mut ChangeTracker,
        id: u64,
        base: Option<u64>,
        live: usize,
        is_live: impl Fn(usize) -> bool,
    ) -> Option<(u64, Vec<usize>, usize)> {
        let table = t
            .snapshot(
                &barrier(id, base),
                live,
                |t, since| {
                    let ids = t.changed_ids(since, &is_live);
                    let n = ids.len();
                    (ids, n)
                },
                |ids| Ok(keys(&ids.iter().map(|i| *i as i64).collect::<Vec<_>>())),
                || Ok(Some(keys(&[]))),
            )
            .unwrap();
        match table {
            Some(KeyedTable::Delta { base, changes }) => {
                let ids = changes.rows.column(0).as_primitive::<Int64Type>();
                let ids = ids.values().iter().map(|i| *i as usize).collect();
                Some((base, ids, changes.removed.map_or(0, |r| r.num_rows())))
            }
            _ => None,
        }
    }

    #[test]
    fn a_delta_holds_the_changes_since_the_stored_base_even_after_a_failed_checkpoint() {
        let mut t = ChangeTracker::default();
        t.changed(&(0..100).collect::<Vec<_>>());
        assert_eq!(snap(&mut t, 1, None, 100, |_| true), None);

        t.changed(&[3, 5]);
        assert_eq!(
            snap(&mut t, 2, Some(1), 100, |_| true),
            Some((1, vec![3, 5], 0))
        );

        // Checkpoint 2 was not stored: checkpoint 3 is based on 1 and holds 3, 5 and 7.
        t.changed(&[7]);
        t.removed(keys(&[42]), 99);
        assert_eq!(
            snap(&mut t, 3, Some(1), 100, |id| id != 5),
            Some((1, vec![3, 7], 1)),
            "5 is gone, 42 removed"
        );

        // Stored: 4 is based on 3 and holds only what changed since.
        t.changed(&[9]);
        assert_eq!(
            snap(&mut t, 4, Some(3), 100, |_| true),
            Some((3, vec![9], 0))
        );
        assert!(
            !t.marks.contains_key(&1),
            "marks older than the base are dropped"
        );
    }

    #[test]
    fn a_full_table_is_written_when_the_deltas_grow_or_the_chain_is_long() {
        let mut t = ChangeTracker::default();
        assert_eq!(snap(&mut t, 1, None, 10, |_| true), None);
        t.changed(&[0, 1, 2]);
        let delta = snap(&mut t, 2, Some(1), 10, |_| true);
        assert_eq!(delta.map(|d| d.1.len()), Some(3));
        // 3 + 3 changed rows are more than half of 10.
        t.changed(&[4, 5, 6]);
        assert_eq!(snap(&mut t, 3, Some(2), 10, |_| true), None);

        let mut long = ChangeTracker::default();
        long.restored(10, MAX_PARTS, 0);
        assert_eq!(snap(&mut long, 11, Some(10), 1000, |_| true), None);
        // A base this tracker has no snapshot of (the run did not restore it): full.
        assert_eq!(snap(&mut t, 12, Some(11), 10, |_| true), None);
    }

    #[test]
    fn removals_too_many_for_a_delta_are_forgotten_and_the_next_snapshot_is_full() {
        let mut t = ChangeTracker::default();
        t.restored(1, 1, 0);
        let many: Vec<i64> = (0..600).collect();
        t.removed(keys(&many), 100);
        assert!(t.removed.is_empty(), "more than half of max(live, 1024)");
        assert_eq!(snap(&mut t, 2, Some(1), 100, |_| true), None);
        t.changed(&[1]);
        assert_eq!(
            snap(&mut t, 3, Some(2), 100, |_| true).map(|d| d.1),
            Some(vec![1])
        );
    }

    #[test]
    fn renumbered_keys_keep_their_stamps() {
        let mut t = ChangeTracker::default();
        t.restored(1, 1, 0);
        t.changed(&[4]);
        t.renumber(&[2, 4], &[0, 1]);
        assert_eq!(
            snap(&mut t, 2, Some(1), 100, |_| true).map(|d| d.1),
            Some(vec![1])
        );
    }
}
