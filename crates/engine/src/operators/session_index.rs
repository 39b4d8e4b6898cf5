//! The open sessions of a session-window aggregate: per key, its open sessions as intervals,
//! a timer heap of session ends, and which sessions were merged into which (until the
//! aggregate re-keys its groups). Adding a row costs one hash lookup and a look at the key's
//! open sessions (rarely more than one); a key with no open session is forgotten, so the
//! index is bounded by the open sessions.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use datafusion::common::HashMap;
use datafusion::common::hash_map::{Entry, EntryRef};
use smallvec::SmallVec;

/// A session key (the key columns in Arrow's row format), shared by the index and its
/// sessions: one allocation per key.
pub(crate) type Key = Arc<[u8]>;

/// The open sessions of one key: almost always one, kept inline.
type OpenIds = SmallVec<[u64; 2]>;

/// One open session: `[start, end)` where `end` is its last row's time plus the gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    pub(crate) key: Key,
    pub(crate) start: i64,
    pub(crate) end: i64,
    /// The generation its groups are in (see `session_generations`).
    pub(crate) generation: u64,
}

/// A closed session: its id, bounds and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Closed {
    pub(crate) id: u64,
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) generation: u64,
    pub(crate) key: Key,
}

#[derive(Debug, Default)]
pub(crate) struct SessionIndex {
    gap: i64,
    /// Open session ids per key.
    by_key: HashMap<Key, OpenIds>,
    sessions: HashMap<u64, Session>,
    next_id: u64,
    /// (end, id), earliest first, one per open session: an entry whose session was extended
    /// moves to the new end when it comes up; one of a merged session is dropped.
    timers: BinaryHeap<Reverse<(i64, u64)>>,
    /// Sessions merged into another one, with the generation their groups are in, until that
    /// generation's groups are re-keyed.
    merged: HashMap<u64, (u64, u64)>,
}

impl SessionIndex {
    pub(crate) fn new(gap: i64) -> Self {
        SessionIndex {
            gap,
            ..Default::default()
        }
    }

    /// Open sessions.
    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }

    /// The session a row of `key` at time `t` belongs to: an open one it extends (merging
    /// the sessions it bridges), or a new one. Either way the session is now in generation
    /// `current`, where the row's group goes: a session's groups are never in a newer
    /// generation than the session (those of sessions merged into it included), and a
    /// session's generation follows its last row, which is when its end was last set.
    pub(crate) fn assign(&mut self, key: &[u8], t: i64, current: u64) -> u64 {
        let gap = self.gap;
        let SessionIndex {
            by_key,
            sessions,
            next_id,
            timers,
            merged,
            ..
        } = self;
        // One hash of the key, whether it is new or not.
        let mut entry = match by_key.entry_ref(key) {
            EntryRef::Occupied(o) => o,
            EntryRef::Vacant(v) => v.insert_entry_with_key(Key::from(key), OpenIds::new()),
        };
        let overlapping: OpenIds = entry
            .get()
            .iter()
            .copied()
            .filter(|id| {
                let s = &sessions[id];
                t < s.end && t + gap > s.start
            })
            .collect();
        let id = match overlapping.as_slice() {
            [] => {
                let id = *next_id;
                *next_id += 1;
                let session = Session {
                    key: entry.key().clone(),
                    start: t,
                    end: t + gap,
                    generation: current,
                };
                sessions.insert(id, session);
                entry.get_mut().push(id);
                // One timer per session: an extended session's timer is moved when it
                // comes up.
                timers.push(Reverse((t + gap, id)));
                return id;
            }
            [one] => *one,
            several => {
                // The row bridges sessions: they join the earliest.
                let into = *several.iter().min().expect("several");
                for gone_id in several.iter().copied().filter(|id| *id != into) {
                    let gone = sessions.remove(&gone_id).expect("listed sessions are open");
                    merged.insert(gone_id, (into, gone.generation));
                    let s = sessions.get_mut(&into).expect("target is open");
                    s.start = s.start.min(gone.start);
                    s.end = s.end.max(gone.end);
                }
                entry
                    .get_mut()
                    .retain(|id| *id == into || !several.contains(id));
                into
            }
        };
        let s = sessions.get_mut(&id).expect("assigned above");
        s.start = s.start.min(t);
        s.end = s.end.max(t + gap);
        s.generation = current;
        id
    }

    /// The generation of open session `id`.
    pub(crate) fn generation(&self, id: u64) -> Option<u64> {
        self.sessions.get(&id).map(|s| s.generation)
    }

    /// The key of open session `id`.
    pub(crate) fn key(&self, id: u64) -> Option<&Key> {
        self.sessions.get(&id).map(|s| &s.key)
    }

    /// Moves open session `id` to generation `to`.
    pub(crate) fn move_to(&mut self, id: u64, to: u64) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.generation = to;
        }
    }

    /// Removes and returns the sessions that end at or before `watermark` (all for `None`).
    pub(crate) fn close_until(&mut self, watermark: Option<i64>) -> Vec<Closed> {
        let mut closed = Vec::new();
        while let Some(Reverse((end, id))) = self.timers.peek().copied() {
            if watermark.is_some_and(|w| end > w) {
                break;
            }
            self.timers.pop();
            let Entry::Occupied(open) = self.sessions.entry(id) else {
                continue; // merged into another session
            };
            let current = open.get().end;
            if current > end {
                // Extended since: its timer moves to the new end.
                self.timers.push(Reverse((current, id)));
                continue;
            }
            let s = open.remove();
            if let EntryRef::Occupied(mut list) = self.by_key.entry_ref(&*s.key) {
                list.get_mut().retain(|x| *x != id);
                if list.get().is_empty() {
                    list.remove();
                }
            }
            closed.push(Closed {
                id,
                start: s.start,
                end: s.end,
                generation: s.generation,
                key: s.key,
            });
        }
        closed
    }

    /// The session `id` now belongs to (itself, unless it was merged).
    pub(crate) fn root(&self, mut id: u64) -> u64 {
        while let Some((next, _)) = self.merged.get(&id) {
            id = *next;
        }
        id
    }

    /// Whether some session was merged into another since the merges were last forgotten.
    pub(crate) fn has_merges(&self) -> bool {
        !self.merged.is_empty()
    }

    /// Forgets the merges of sessions whose groups were in generations before `oldest`: call
    /// after those generations' groups were re-keyed by [`SessionIndex::root`].
    pub(crate) fn forget_merges_before(&mut self, oldest: u64) {
        if !self.merged.is_empty() {
            self.merged
                .retain(|_, (_, generation)| *generation >= oldest);
        }
    }

    /// Every open session with its id, for a checkpoint.
    pub(crate) fn open_sessions(&self) -> impl Iterator<Item = (u64, &Session)> {
        self.sessions.iter().map(|(id, s)| (*id, s))
    }

    /// The id the next new session gets.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Rebuilds the index from a checkpoint's open sessions (no merges pending).
    pub(crate) fn restore(gap: i64, next_id: u64, open: Vec<(u64, Session)>) -> Self {
        let mut index = SessionIndex::new(gap);
        index.next_id = next_id;
        for (id, s) in open {
            index.by_key.entry(s.key.clone()).or_default().push(id);
            index.timers.push(Reverse((s.end, id)));
            index.next_id = index.next_id.max(id + 1);
            index.sessions.insert(id, s);
        }
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_join_extend_and_merge_sessions_per_key() {
        let mut index = SessionIndex::new(10);
        let a = index.assign(b"u1", 100, 0);
        assert_eq!(index.assign(b"u1", 105, 0), a, "within the gap");
        let b = index.assign(b"u1", 122, 0);
        assert_ne!(a, b, "more than the gap after 105");
        let other = index.assign(b"u2", 101, 0);
        assert_ne!(other, a, "another key");
        // 113 is within 10 of both 100..115 and 122..132: the two sessions merge.
        let c = index.assign(b"u1", 113, 0);
        assert_eq!(c, a);
        assert_eq!(index.root(b), a);
        assert_eq!(index.len(), 2);
        // Out of order, before the session: it extends it backwards.
        assert_eq!(index.assign(b"u1", 92, 0), a);
        let closed = index.close_until(Some(131));
        assert_eq!(
            closed,
            vec![Closed {
                id: other,
                start: 101,
                end: 111,
                generation: 0,
                key: Key::from(&b"u2"[..]),
            }]
        );
        let closed = index.close_until(Some(132));
        assert_eq!(
            closed,
            vec![Closed {
                id: a,
                start: 92,
                end: 132,
                generation: 0,
                key: Key::from(&b"u1"[..]),
            }]
        );
        assert_eq!(index.len(), 0);
        assert!(
            index.by_key.is_empty(),
            "keys without sessions are forgotten"
        );
    }

    #[test]
    fn a_restored_index_closes_like_the_original() {
        let mut index = SessionIndex::new(5);
        index.assign(b"k", 10, 0);
        index.assign(b"k", 12, 0);
        index.assign(b"j", 30, 0);
        let open: Vec<(u64, Session)> = index
            .open_sessions()
            .map(|(id, s)| (id, s.clone()))
            .collect();
        let mut restored = SessionIndex::restore(5, index.next_id(), open);
        assert_eq!(restored.close_until(None), index.close_until(None));
        assert_ne!(
            restored.assign(b"x", 1, 0),
            0,
            "new ids follow the saved ones"
        );
    }
}
