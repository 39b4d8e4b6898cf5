//! When each key of a keyed operator was last changed (processing time), and which keys have
//! been idle longer than the state TTL: a queue in time order, so a sweep costs the keys it
//! looks at, not all keys.

use std::collections::VecDeque;

/// Last-change times per key id (milliseconds since the epoch; 0: never), and the TTL sweep.
#[derive(Debug, Default)]
pub(crate) struct KeyExpiry {
    /// Keys idle this long are dropped; `None`: kept for ever (times are still recorded, so
    /// that they are in checkpoints).
    ttl_ms: Option<u64>,
    last: Vec<u64>,
    /// (time, id) in time order; an entry whose key changed again later is stale.
    queue: VecDeque<(u64, usize)>,
}

impl KeyExpiry {
    pub(crate) fn new(ttl_ms: Option<u64>) -> Self {
        KeyExpiry {
            ttl_ms,
            ..Default::default()
        }
    }

    /// Records that `ids` changed at `now` (not earlier than any previous call's `now`).
    pub(crate) fn touch(&mut self, ids: &[usize], now: u64) {
        for &id in ids {
            if id >= self.last.len() {
                self.last.resize(id + 1, 0);
            }
            self.last[id] = now;
            if self.ttl_ms.is_some() {
                self.queue.push_back((now, id));
            }
        }
    }

    /// When `id` last changed (0: never).
    pub(crate) fn last_changed(&self, id: usize) -> u64 {
        self.last.get(id).copied().unwrap_or(0)
    }

    /// The keys idle for longer than the TTL at `now`, forgotten here.
    pub(crate) fn expire(&mut self, now: u64) -> Vec<usize> {
        let Some(ttl) = self.ttl_ms else {
            return Vec::new();
        };
        let cutoff = now.saturating_sub(ttl);
        let mut gone = Vec::new();
        while let Some(&(time, id)) = self.queue.front() {
            if time >= cutoff {
                break;
            }
            self.queue.pop_front();
            if self.last[id] == time {
                self.last[id] = 0;
                gone.push(id);
            }
        }
        gone
    }

    /// Starts over with `ids` last changed at `times` (a restore, or new ids after keys were
    /// re-interned).
    pub(crate) fn reset(&mut self, ids: &[usize], times: &[u64]) {
        self.last.clear();
        self.queue.clear();
        let mut order: Vec<(u64, usize)> = times.iter().copied().zip(ids.iter().copied()).collect();
        order.sort_unstable();
        for (time, id) in order {
            self.touch(&[id], time);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_idle_past_the_ttl_expire_and_a_later_change_keeps_a_key() {
        let mut e = KeyExpiry::new(Some(100));
        e.touch(&[0, 1, 2], 1000);
        e.touch(&[1], 1050);
        assert!(e.expire(1100).is_empty(), "idle exactly the TTL");
        assert_eq!(e.expire(1101), vec![0, 2]);
        assert_eq!(e.last_changed(0), 0);
        assert_eq!(e.last_changed(1), 1050);
        assert_eq!(e.expire(1151), vec![1]);
        let mut kept = KeyExpiry::new(None);
        kept.touch(&[0], 5);
        assert!(kept.expire(u64::MAX).is_empty());
        assert_eq!(kept.last_changed(0), 5);
        e.reset(&[7, 3], &[20, 10]);
        assert_eq!(e.expire(115), vec![3]);
        assert_eq!(e.expire(121), vec![7]);
    }
}
