//! Which splits of a source have nothing left to deliver: the only evidence of idleness.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::source::SplitId;

/// Tracks, per split, whether its reader has anything left to hand over. Shared (cheap clone)
/// between a source, which delivers batches in `poll_next`, and the readers that fetch them
/// (tasks or threads), which queue batches for it.
///
/// A split is *caught up* when no batch of it is queued for delivery and its reader's latest
/// look at the split found nothing new. Time spent waiting on a full channel, on a slow
/// downstream, or on other splits never counts: a batch is queued until the source delivers
/// it, so a split with data waiting is never caught up.
///
/// Contract for readers: call [`CaughtUpSplits::queued`] *before* handing a batch over (so the
/// source never sees a caught-up split whose data is in flight), and
/// [`CaughtUpSplits::found_nothing`] only when the split has nothing more right now (a read
/// returned no records and the service says the reader is at the split's end).
#[derive(Debug, Clone, Default)]
pub struct CaughtUpSplits {
    inner: Arc<Mutex<HashMap<SplitId, Progress>>>,
}

#[derive(Debug, Default)]
struct Progress {
    /// Batches handed over by the reader and not yet delivered by the source.
    queued: usize,
    /// When the reader first found nothing new since it last had data.
    found_nothing_at: Option<Instant>,
    /// When the source last delivered a batch of this split.
    delivered_at: Option<Instant>,
}

impl CaughtUpSplits {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SplitId, Progress>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reader is about to hand over a batch of `split`.
    pub fn queued(&self, split: &str) {
        let mut map = self.lock();
        let p = map.entry(split.to_string()).or_default();
        p.queued += 1;
        p.found_nothing_at = None;
    }

    /// The source delivered one queued batch of `split` at `now`.
    pub fn delivered(&self, split: &str, now: Instant) {
        let mut map = self.lock();
        let p = map.entry(split.to_string()).or_default();
        p.queued = p.queued.saturating_sub(1);
        p.delivered_at = Some(now);
    }

    /// The reader of `split` looked at `now` and found nothing new: a caught-up period starts,
    /// unless one is already running.
    pub fn found_nothing(&self, split: &str, now: Instant) {
        let mut map = self.lock();
        let p = map.entry(split.to_string()).or_default();
        if p.found_nothing_at.is_none() {
            p.found_nothing_at = Some(now);
        }
    }

    /// The reader of `split` looked and there is more to read (for example the service reports
    /// it behind the split's end although this read returned nothing).
    pub fn behind(&self, split: &str) {
        if let Some(p) = self.lock().get_mut(split) {
            p.found_nothing_at = None;
        }
    }

    /// `split` is finished or no longer read by this source.
    pub fn remove(&self, split: &str) {
        self.lock().remove(split);
    }

    /// The caught-up splits, each with the instant since which it has had nothing to deliver
    /// (the later of its reader's first empty look and its last delivery).
    pub fn snapshot(&self) -> Vec<(SplitId, Instant)> {
        self.lock()
            .iter()
            .filter(|(_, p)| p.queued == 0)
            .filter_map(|(split, p)| {
                let found = p.found_nothing_at?;
                let since = p.delivered_at.map_or(found, |d| d.max(found));
                Some((split.clone(), since))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_split_with_a_queued_batch_is_never_caught_up() {
        let t0 = Instant::now();
        let c = CaughtUpSplits::new();
        c.queued("a");
        // The reader already looked again and found nothing, but its batch waits for delivery
        // (a slow downstream): the split still has data.
        c.found_nothing("a", t0);
        assert!(c.snapshot().is_empty());
        let t1 = t0 + Duration::from_secs(40);
        c.delivered("a", t1);
        assert_eq!(c.snapshot(), vec![("a".to_string(), t1)]);
    }

    #[test]
    fn new_data_ends_a_caught_up_period_and_the_first_empty_look_starts_it() {
        let t0 = Instant::now();
        let c = CaughtUpSplits::new();
        c.found_nothing("a", t0);
        c.found_nothing("a", t0 + Duration::from_secs(5));
        assert_eq!(c.snapshot(), vec![("a".to_string(), t0)]);
        c.queued("a");
        assert!(c.snapshot().is_empty());
        c.delivered("a", t0 + Duration::from_secs(6));
        assert!(c.snapshot().is_empty(), "the reader has not looked again");
        c.found_nothing("a", t0 + Duration::from_secs(7));
        c.behind("a");
        assert!(c.snapshot().is_empty(), "more to read");
        c.remove("a");
        assert!(c.snapshot().is_empty());
    }
}
