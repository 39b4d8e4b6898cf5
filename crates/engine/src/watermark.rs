//! Watermark generation at sources and combination across splits and inputs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::{cast, max};
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampNanosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;

use crate::error::{EngineError, Result};
use crate::message::{EventTime, Watermark};
use crate::source::SplitId;

/// How a source's watermark is derived.
#[derive(Debug, Clone)]
pub enum WatermarkStrategy {
    /// `WATERMARK FOR col AS expr`: the watermark is the maximum of `expr` over all rows seen
    /// (per split). `expr` evaluates to a timestamp.
    EventTime {
        /// The compiled watermark expression.
        expr: Arc<dyn PhysicalExpr>,
        /// A split with no data for this long is idle and leaves the minimum.
        idle_timeout: Duration,
    },
    /// No watermark declared: event time follows the wall clock.
    ProcessingTime,
}

impl WatermarkStrategy {
    /// The largest watermark candidate in `batch`, or `None` if the batch has no non-null value.
    pub fn candidate(&self, batch: &RecordBatch) -> Result<Option<EventTime>> {
        match self {
            WatermarkStrategy::ProcessingTime => Ok(Some(crate::time::now())),
            WatermarkStrategy::EventTime { expr, .. } => {
                let value = expr
                    .evaluate(batch)
                    .map_err(|e| EngineError::compute("evaluating the WATERMARK expression", e))?
                    .into_array(batch.num_rows())?;
                let tz = match value.data_type() {
                    DataType::Timestamp(_, tz) => tz.clone(),
                    other => {
                        return Err(EngineError::User(format!(
                            "the WATERMARK expression has type {other}; it must be a TIMESTAMP"
                        )));
                    }
                };
                let nanos = cast(&value, &DataType::Timestamp(TimeUnit::Nanosecond, tz))?;
                Ok(max(nanos.as_primitive::<TimestampNanosecondType>()))
            }
        }
    }

    /// The idle timeout, if this strategy tracks event time.
    pub fn idle_timeout(&self) -> Option<Duration> {
        match self {
            WatermarkStrategy::EventTime { idle_timeout, .. } => Some(*idle_timeout),
            WatermarkStrategy::ProcessingTime => None,
        }
    }
}

#[derive(Debug)]
struct SplitState {
    watermark: EventTime,
    idle: bool,
}

/// Tracks per-split watermarks of one source and combines them: the minimum over splits that
/// are neither idle nor finished. When every split has finished, nothing holds the source back
/// any more: its watermark reaches the largest one a finished split reached (as a source
/// without splits would: the maximum over all rows seen). The combined watermark never goes
/// backwards.
///
/// Idleness comes only from the source's own evidence ([`crate::Source::caught_up_splits`]
/// and polls that found nothing), never from how long delivery took: a split whose rows wait
/// on a slow downstream keeps holding the watermark.
#[derive(Debug)]
pub struct SplitWatermarks {
    splits: HashMap<SplitId, SplitState>,
    emitted: Option<EventTime>,
    idle_emitted: bool,
    /// Since when every poll of the source found nothing (cleared by anything else).
    nothing_since: Option<Instant>,
    /// No split is open and the source has found nothing for its idle timeout.
    quiet: bool,
    /// When the last active splits went idle together: the watermark of the one with the most
    /// recent data, which the source reaches before it goes idle.
    last_active: Option<EventTime>,
    /// The largest watermark of the splits finished since the source last had none open.
    finished: Option<EventTime>,
}

impl Default for SplitWatermarks {
    fn default() -> Self {
        Self::new()
    }
}

impl SplitWatermarks {
    /// A tracker with no splits yet.
    pub fn new() -> Self {
        SplitWatermarks {
            splits: HashMap::new(),
            emitted: None,
            idle_emitted: false,
            nothing_since: None,
            quiet: false,
            last_active: None,
            finished: None,
        }
    }

    /// Registers a split that is about to deliver data; until its first batch it holds the
    /// watermark where it is.
    pub fn start_split(&mut self, split: &str) {
        self.observe(split, None);
    }

    /// Records data on `split` with watermark candidate `candidate`.
    pub fn observe(&mut self, split: &str, candidate: Option<EventTime>) {
        let state = self.splits.entry(split.to_string()).or_insert(SplitState {
            watermark: EventTime::MIN,
            idle: false,
        });
        state.idle = false;
        if let Some(c) = candidate {
            state.watermark = state.watermark.max(c);
        }
        self.nothing_since = None;
        self.quiet = false;
        // Data ends an "all idle" episode: what it would have reached no longer applies.
        self.last_active = None;
    }

    /// Removes a finished split from the minimum.
    pub fn finish_split(&mut self, split: &str) {
        self.nothing_since = None;
        if let Some(state) = self.splits.remove(split) {
            self.finished = self.finished.max(Some(state.watermark));
        }
    }

    /// A poll of the source at `now` found nothing to deliver.
    pub fn found_nothing(&mut self, now: Instant) {
        self.nothing_since.get_or_insert(now);
    }

    /// Marks idle the splits that `caught_up` (the source's [`crate::Source::caught_up_splits`])
    /// lists as having had nothing to deliver for `timeout`, and the whole source when it has
    /// no split and its polls found nothing for `timeout`.
    ///
    /// Splits that go idle in the same check are taken in the order their data stopped, as if
    /// each had gone idle on its own: when all active splits go idle at once, the source first
    /// reaches the watermark of the split whose data came last (the minimum over the splits
    /// still active just before it went idle), so its windows close.
    pub fn mark_idle(&mut self, timeout: Duration, caught_up: &[(SplitId, Instant)], now: Instant) {
        let mut last: Option<(Instant, EventTime)> = None;
        for (split, since) in caught_up {
            let Some(state) = self.splits.get_mut(split) else {
                continue;
            };
            if state.idle || now.saturating_duration_since(*since) < timeout {
                continue;
            }
            state.idle = true;
            if last.is_none_or(|(t, _)| *since >= t) {
                last = Some((*since, state.watermark));
            }
        }
        let any_left = self.splits.values().any(|s| !s.idle);
        if !any_left && let Some((_, w)) = last {
            self.last_active = Some(w);
        }
        if self.splits.is_empty()
            && self
                .nothing_since
                .is_some_and(|t| now.saturating_duration_since(t) >= timeout)
        {
            self.quiet = true;
        }
    }

    /// The watermark to send downstream, if it changed since the last call.
    pub fn advance(&mut self) -> Option<Watermark> {
        let active = self.splits.values().filter(|s| !s.idle);
        let mut min = active.map(|s| s.watermark).min();
        if self.splits.is_empty()
            && let Some(w) = self.finished.take()
            && w != EventTime::MIN
            && self.emitted.is_none_or(|e| w > e)
        {
            min = Some(w);
        }
        if min.is_none()
            && let Some(w) = self.last_active.take()
            && w != EventTime::MIN
            && self.emitted.is_none_or(|e| w > e)
        {
            min = Some(w);
        }
        match min {
            Some(w) if w != EventTime::MIN && self.emitted.is_none_or(|e| w > e) => {
                self.emitted = Some(w);
                self.idle_emitted = false;
                Some(Watermark::EventTime(w))
            }
            Some(_) => None,
            None if (!self.splits.is_empty() || self.quiet) && !self.idle_emitted => {
                self.idle_emitted = true;
                Some(Watermark::Idle)
            }
            None => None,
        }
    }
}

/// Combines the watermarks of an operator's inputs: the minimum over inputs that are not idle
/// and not ended. Monotonic.
#[derive(Debug)]
pub struct InputWatermarks {
    inputs: Vec<InputState>,
    current: Option<EventTime>,
    all_idle_sent: bool,
}

#[derive(Debug, Clone, Copy)]
enum InputState {
    Waiting,
    At(EventTime),
    Idle(Option<EventTime>),
    Ended,
}

impl InputWatermarks {
    /// A combiner for `n` inputs, none of which has sent a watermark yet.
    pub fn new(n: usize) -> Self {
        InputWatermarks {
            inputs: vec![InputState::Waiting; n],
            current: None,
            all_idle_sent: false,
        }
    }

    /// Updates input `i` and returns the combined watermark if it changed.
    pub fn update(&mut self, i: usize, watermark: Watermark) -> Option<Watermark> {
        let state = &mut self.inputs[i];
        *state = match (watermark, *state) {
            // The end of an input: it stops holding the minimum back, but it does not close
            // windows for the other inputs.
            (Watermark::EventTime(EventTime::MAX), _) => InputState::Ended,
            (Watermark::EventTime(w), InputState::At(prev)) => InputState::At(prev.max(w)),
            (Watermark::EventTime(w), InputState::Idle(Some(prev))) => InputState::At(prev.max(w)),
            (Watermark::EventTime(w), _) => InputState::At(w),
            (Watermark::Idle, InputState::At(prev)) => InputState::Idle(Some(prev)),
            (Watermark::Idle, InputState::Ended) => InputState::Ended,
            (Watermark::Idle, _) => InputState::Idle(None),
        };
        self.combine()
    }

    /// Input `i`'s own watermark: its event time (the end once it ended), or `Idle` while it
    /// is idle; `None` before it sent one.
    pub fn of_input(&self, i: usize) -> Option<Watermark> {
        match self.inputs[i] {
            InputState::Waiting => None,
            InputState::At(w) => Some(Watermark::EventTime(w)),
            InputState::Idle(_) => Some(Watermark::Idle),
            InputState::Ended => Some(Watermark::END),
        }
    }

    fn combine(&mut self) -> Option<Watermark> {
        if self.inputs.iter().any(|s| matches!(s, InputState::Waiting)) {
            return None;
        }
        let active: Vec<EventTime> = self
            .inputs
            .iter()
            .filter_map(|s| match s {
                InputState::At(w) => Some(*w),
                _ => None,
            })
            .collect();
        if let Some(min) = active.into_iter().min() {
            if self.current.is_none_or(|c| min > c) {
                self.current = Some(min);
                self.all_idle_sent = false;
                return Some(Watermark::EventTime(min));
            }
            return None;
        }
        let any_idle = self.inputs.iter().any(|s| matches!(s, InputState::Idle(_)));
        if any_idle && !self.all_idle_sent {
            self.all_idle_sent = true;
            return Some(Watermark::Idle);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caught_up(splits: &[(&str, Instant)]) -> Vec<(SplitId, Instant)> {
        splits.iter().map(|(s, t)| (s.to_string(), *t)).collect()
    }

    #[test]
    fn split_minimum_excludes_idle_and_finished_splits() {
        let t0 = Instant::now();
        let five = Duration::from_secs(5);
        let mut w = SplitWatermarks::new();
        w.observe("a", Some(100));
        w.observe("b", Some(50));
        assert_eq!(w.advance(), Some(Watermark::EventTime(50)));
        w.observe("a", Some(300));
        // b has had nothing to deliver since t0; a has more.
        w.mark_idle(five, &caught_up(&[("b", t0)]), t0 + Duration::from_secs(10));
        assert_eq!(w.advance(), Some(Watermark::EventTime(300)));
        // b comes back with an older value: the combined watermark never regresses.
        w.observe("b", Some(60));
        assert_eq!(w.advance(), None);
        w.finish_split("b");
        w.observe("a", Some(400));
        assert_eq!(w.advance(), Some(Watermark::EventTime(400)));
        w.mark_idle(
            five,
            &caught_up(&[("a", t0 + Duration::from_secs(12))]),
            t0 + Duration::from_secs(30),
        );
        assert_eq!(w.advance(), Some(Watermark::Idle));
        assert_eq!(w.advance(), None);
    }

    #[test]
    fn a_split_the_source_does_not_list_as_caught_up_never_goes_idle() {
        // However long the runner took to deliver (a slow downstream), a split with data
        // keeps holding the watermark: only the source's own evidence makes it idle.
        let t0 = Instant::now();
        let mut w = SplitWatermarks::new();
        w.observe("slow", Some(10));
        w.observe("fast", Some(500));
        assert_eq!(w.advance(), Some(Watermark::EventTime(10)));
        let hour = t0 + Duration::from_secs(3600);
        w.mark_idle(Duration::from_secs(1), &caught_up(&[]), hour);
        assert_eq!(w.advance(), None);
        // Caught up, but not for the whole timeout yet.
        w.mark_idle(
            Duration::from_secs(30),
            &caught_up(&[("slow", hour)]),
            hour + Duration::from_secs(29),
        );
        assert_eq!(w.advance(), None);
        w.mark_idle(
            Duration::from_secs(30),
            &caught_up(&[("slow", hour)]),
            hour + Duration::from_secs(30),
        );
        assert_eq!(w.advance(), Some(Watermark::EventTime(500)));
    }

    #[test]
    fn when_every_split_has_finished_the_source_reaches_the_largest_watermark() {
        let mut w = SplitWatermarks::new();
        w.observe("early", Some(100));
        w.observe("late", Some(900));
        assert_eq!(w.advance(), Some(Watermark::EventTime(100)));
        // The split that is further ahead finishes first: the other still holds the minimum.
        w.finish_split("late");
        w.observe("early", Some(200));
        assert_eq!(w.advance(), Some(Watermark::EventTime(200)));
        // Nothing is open any more: the rows of "late" no longer wait for anyone.
        w.finish_split("early");
        assert_eq!(w.advance(), Some(Watermark::EventTime(900)));
        assert_eq!(w.advance(), None);
        // A new split starts from there; an older finished one does not pull it back.
        w.observe("next", Some(950));
        w.finish_split("next");
        assert_eq!(w.advance(), Some(Watermark::EventTime(950)));
    }

    #[test]
    fn splits_going_idle_together_first_reach_the_latest_ones_watermark() {
        let mut w = SplitWatermarks::new();
        let t0 = Instant::now();
        w.observe("a", Some(10));
        w.observe("b", Some(50));
        assert_eq!(w.advance(), Some(Watermark::EventTime(10)));
        // Both are caught up for longer than the timeout by the next check; b's data came last.
        let both = caught_up(&[("b", t0 + Duration::from_secs(1)), ("a", t0)]);
        w.mark_idle(Duration::from_secs(5), &both, t0 + Duration::from_secs(30));
        assert_eq!(w.advance(), Some(Watermark::EventTime(50)));
        assert_eq!(w.advance(), Some(Watermark::Idle));
        assert_eq!(w.advance(), None);
        // New data makes a split active again, from where it was.
        w.observe("a", Some(60));
        assert_eq!(w.advance(), Some(Watermark::EventTime(60)));
    }

    #[test]
    fn inputs_combine_as_minimum_and_skip_idle() {
        let mut c = InputWatermarks::new(2);
        assert_eq!(
            c.update(0, Watermark::EventTime(10)),
            None,
            "input 1 not yet heard from"
        );
        assert_eq!(
            c.update(1, Watermark::EventTime(5)),
            Some(Watermark::EventTime(5))
        );
        assert_eq!(c.update(1, Watermark::Idle), Some(Watermark::EventTime(10)));
        assert_eq!(c.update(0, Watermark::Idle), Some(Watermark::Idle));
        assert_eq!(
            c.update(1, Watermark::EventTime(20)),
            Some(Watermark::EventTime(20))
        );
        assert_eq!(
            c.update(1, Watermark::END),
            Some(Watermark::Idle),
            "the only input left is idle"
        );
        assert_eq!(
            c.update(0, Watermark::EventTime(30)),
            Some(Watermark::EventTime(30))
        );
    }

    #[test]
    fn the_end_of_one_input_does_not_close_windows_of_an_idle_one() {
        let mut c = InputWatermarks::new(2);
        c.update(0, Watermark::EventTime(10));
        c.update(1, Watermark::Idle);
        assert_eq!(
            c.update(0, Watermark::END),
            Some(Watermark::Idle),
            "only the idle input is left"
        );
        assert_eq!(
            c.update(1, Watermark::EventTime(15)),
            Some(Watermark::EventTime(15))
        );
    }

    #[test]
    fn a_source_without_splits_goes_idle_after_its_polls_found_nothing_for_its_timeout() {
        let t0 = Instant::now();
        let five = Duration::from_secs(5);
        let mut w = SplitWatermarks::new();
        w.start_split("f1");
        assert_eq!(w.advance(), None, "a started split holds the watermark");
        w.observe("f1", Some(100));
        assert_eq!(w.advance(), Some(Watermark::EventTime(100)));
        w.finish_split("f1");
        // Time without polls (the runner was busy delivering) does not count.
        w.mark_idle(five, &[], t0 + Duration::from_secs(60));
        assert_eq!(w.advance(), None);
        w.found_nothing(t0 + Duration::from_secs(60));
        w.mark_idle(five, &[], t0 + Duration::from_secs(61));
        assert_eq!(w.advance(), None);
        w.found_nothing(t0 + Duration::from_secs(65));
        w.mark_idle(five, &[], t0 + Duration::from_secs(65));
        assert_eq!(w.advance(), Some(Watermark::Idle));
        // Anything else a poll returns starts the count again.
        w.start_split("f2");
        w.finish_split("f2");
        w.found_nothing(t0 + Duration::from_secs(66));
        w.mark_idle(five, &[], t0 + Duration::from_secs(67));
        assert_eq!(w.advance(), None);
    }
}
