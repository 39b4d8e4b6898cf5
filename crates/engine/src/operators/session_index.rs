//! The open sessions of a session-window aggregate: per key, its open sessions as intervals,
//! a timer heap of session ends, and which sessions were merged into which (until the
//! aggregate re-keys its groups). Adding a row costs one hash lookup and a look at the key's
//! open sessions (rarely more than one); a key with no open session is forgotten, so the
//! index is bounded by the open sessions.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use datafusion::common::HashMap;
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

/// A closed session: its id and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed {
    pub(crate) id: u64,
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) generation: u64,
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

    /// The session a row of `key` at time `t` belongs to, and that session's generation: an
    /// open one it extends (merging the sessions it bridges into the one of the newest
    /// generation, so that merged groups never sit in a newer generation than their
    /// session), or a new one in generation `current`.
    pub(crate) fn assign(&mut self, key: &[u8], t: i64, current: u64) -> (u64, u64) {
        let gap = self.gap;
        let SessionIndex {
            by_key,
            sessions,
            next_id,
            timers,
            merged,
            ..
        } = self;
        let list = match by_key.get_mut(key) {
            Some(list) => list,
            None => by_key.entry(Key::from(key)).or_default(),
        };
        let overlapping: OpenIds = list
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
                let shared = by_key
                    .get_key_value(key)
                    .map(|(k, _)| k.clone())
                    .expect("inserted above");
                sessions.insert(
                    id,
                    Session {
                        key: shared,
                        start: t,
                        end: t,
                        generation: current,
                    },
                );
                by_key.get_mut(key).expect("inserted above").push(id);
                id
            }
            [one] => *one,
            several => {
                // The row bridges sessions: they join the one of the newest generation.
                let into = *several
                    .iter()
                    .max_by_key(|id| (sessions[*id].generation, Reverse(**id)))
                    .expect("several");
                for gone_id in several.iter().copied().filter(|id| *id != into) {
                    let gone = sessions.remove(&gone_id).expect("listed sessions are open");
                    merged.insert(gone_id, (into, gone.generation));
                    let s = sessions.get_mut(&into).expect("target is open");
                    s.start = s.start.min(gone.start);
                    s.end = s.end.max(gone.end);
                }
                list.retain(|id| *id == into || !several.contains(id));
                into
            }
        };
        let s = sessions.get_mut(&id).expect("assigned above");
        s.start = s.start.min(t);
        let new = s.end == t;
        s.end = s.end.max(t + gap);
        // One timer per session: an extended session's timer is moved when it comes up.
        if new {
            timers.push(Reverse((s.end, id)));
        }
        (id, s.generation)
    }

    /// The generation of open session `id`.
    pub(crate) fn generation(&self, id: u64) -> Option<u64> {
        self.sessions.get(&id).map(|s| s.generation)
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
            match self.sessions.get(&id).map(|s| s.end) {
                None => continue, // merged into another session
                Some(current) if current > end => {
                    // Extended since: its timer moves to the new end.
                    self.timers.push(Reverse((current, id)));
                    continue;
                }
                Some(_) => {}
            }
            let s = self.sessions.remove(&id).expect("checked above");
            if let Some(list) = self.by_key.get_mut(&s.key) {
                list.retain(|x| *x != id);
                if list.is_empty() {
                    self.by_key.remove(&s.key);
                }
            }
            closed.push(Closed {
                id,
                start: s.start,
                end: s.end,
                generation: s.generation,
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
        let a = index.assign(b"u1", 100, 0).0;
        assert_eq!(index.assign(b"u1", 105, 0).0, a, "within the gap");
        let b = index.assign(b"u1", 122, 0).0;
        assert_ne!(a, b, "more than the gap after 105");
        let other = index.assign(b"u2", 101, 0).0;
        assert_ne!(other, a, "another key");
        // 113 is within 10 of both 100..115 and 122..132: the two sessions merge.
        let c = index.assign(b"u1", 113, 0).0;
        assert_eq!(c, a);
        assert_eq!(index.root(b), a);
        assert_eq!(index.len(), 2);
        // Out of order, before the session: it extends it backwards.
        assert_eq!(index.assign(b"u1", 92, 0).0, a);
        let closed = index.close_until(Some(131));
        assert_eq!(
            closed,
            vec![Closed {
                id: other,
                start: 101,
                end: 111,
                generation: 0
            }]
        );
        let closed = index.close_until(Some(132));
        assert_eq!(
            closed,
            vec![Closed {
                id: a,
                start: 92,
                end: 132,
                generation: 0
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
        index.assign(b"k", 10, 0).0;
        index.assign(b"k", 12, 0).0;
        index.assign(b"j", 30, 0).0;
        let open: Vec<(u64, Session)> = index
            .open_sessions()
            .map(|(id, s)| (id, s.clone()))
            .collect();
        let mut restored = SessionIndex::restore(5, index.next_id(), open);
        assert_eq!(restored.close_until(None), index.close_until(None));
        assert_ne!(
            restored.assign(b"x", 1, 0).0,
            0,
            "new ids follow the saved ones"
        );
    }
}
