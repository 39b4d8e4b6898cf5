//! When a keyed operator looks for keys idle past the state TTL, for operators that keep a
//! last-change time beside each key and scan them (rather than keeping a time-ordered queue,
//! which would cost memory per change): a sweep every quarter of the TTL, at least every
//! second and at most every minute, so a key lives at most about 1.25 TTLs.

use std::time::Duration;

/// The sweep schedule of one operator's TTL.
#[derive(Debug, Clone)]
pub(crate) struct IdleSweep {
    ttl_ms: u64,
    every_ms: u64,
    next_ms: u64,
}

impl IdleSweep {
    pub(crate) fn new(ttl: Duration) -> Self {
        let ttl_ms = ttl.as_millis() as u64;
        IdleSweep {
            ttl_ms,
            every_ms: (ttl_ms / 4).clamp(1_000, 60_000),
            next_ms: 0,
        }
    }

    /// At processing time `now` (ms), whether a sweep is due: then the cut-off, before which
    /// a key's last change makes it idle.
    pub(crate) fn due(&mut self, now: u64) -> Option<u64> {
        if now < self.next_ms {
            return None;
        }
        self.next_ms = now + self.every_ms;
        Some(now.saturating_sub(self.ttl_ms))
    }
}

/// Processing time: milliseconds since the epoch.
pub(crate) fn processing_time_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_come_every_quarter_ttl_within_bounds() {
        let mut s = IdleSweep::new(Duration::from_secs(40));
        assert_eq!(s.due(100_000), Some(60_000));
        assert_eq!(s.due(109_999), None);
        assert_eq!(s.due(110_000), Some(70_000));
        let mut short = IdleSweep::new(Duration::from_millis(100));
        assert_eq!(short.due(5_000), Some(4_900));
        assert_eq!(short.due(5_999), None, "at most every second");
        let mut long = IdleSweep::new(Duration::from_secs(86_400));
        long.due(0);
        assert_eq!(long.due(60_000), Some(0), "at least every minute");
    }
}
