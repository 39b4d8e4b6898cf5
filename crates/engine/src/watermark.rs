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
    last_data: Instant,
    idle: bool,
}

/// Tracks per-split watermarks of one source and combines them: the minimum over splits that
/// are neither idle nor finished. When every split has finished, nothing holds the source back
/// any more: its watermark reaches the largest one a finished split reached (as a source
/// without splits would: the maximum over all rows seen). The combined watermark never goes
/// backwards.
#[derive(Debug)]
pub struct SplitWatermarks {
    splits: HashMap<SplitId, SplitState>,
    emitted: Option<EventTime>,
    idle_emitted: bool,
    /// Last time any split had data or was started (the source's own activity).
    last_activity: Instant,
    /// No split is active and the source has been quiet for its idle timeout.
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
            last_activity: Instant::now(),
            quiet: false,
            last_active: None,
            finished: None,
        }
    }

    /// Registers a split that is about to deliver data; until its first batch it holds the
    /// watermark where it is.
    pub fn start_split(&mut self, split: &str, now: Instant) {
        self.observe(split, None, now);
    }

    /// Records data on `split` with watermark candidate `candidate`.
    pub fn observe(&mut self, split: &str, candidate: Option<EventTime>, now: Instant) {
        let state = self.splits.entry(split.to_string()).or_insert(SplitState {
            watermark: EventTime::MIN,
            last_data: now,
            idle: false,
        });
        state.last_data = now;
        state.idle = false;
        if let Some(c) = candidate {
            state.watermark = state.watermark.max(c);
        }
        self.last_activity = now;
        self.quiet = false;
        // Data ends an "all idle" episode: what it would have reached no longer applies.
        self.last_active = None;
    }

    /// Removes a finished split from the minimum.
    pub fn finish_split(&mut self, split: &str) {
        if let Some(state) = self.splits.remove(split) {
            self.finished = self.finished.max(Some(state.watermark));
        }
    }

    /// Marks splits idle that had no data for `timeout`, and the whole source when it has no
    /// split and no activity for `timeout`.
    ///
    /// Splits that go idle in the same check are taken in the order their data stopped, as if
    /// each had gone idle on its own: when all active splits go idle at once, the source first
    /// reaches the watermark of the split whose data came last (the minimum over the splits
    /// still active just before it went idle), so its windows close.
    pub fn mark_idle(&mut self, timeout: Duration, now: Instant) {
        let mut last: Option<(Instant, EventTime)> = None;
        let mut any_left = false;
        for state in self.splits.values_mut() {
            if state.idle {
                continue;
            }
            if now.duration_since(state.last_data) >= timeout {
                state.idle = true;
                if last.is_none_or(|(t, _)| state.last_data >= t) {
                    last = Some((state.last_data, state.watermark));
                }
            } else {
                any_left = true;
            }
        }
        if !any_left && let Some((_, w)) = last {
            self.last_active = Some(w);
        }
        if self.splits.is_empty() && now.duration_since(self.last_activity) >= timeout {
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

    #[test]
    fn split_minimum_excludes_idle_and_finished_splits() {
        let t0 = Instant::now();
        let mut w = SplitWatermarks::new();
        w.observe("a", Some(100), t0);
        w.observe("b", Some(50), t0);
        assert_eq!(w.advance(), Some(Watermark::EventTime(50)));
        w.observe("a", Some(300), t0 + Duration::from_secs(10));
        w.mark_idle(Duration::from_secs(5), t0 + Duration::from_secs(10));
        assert_eq!(w.advance(), Some(Watermark::EventTime(300)));
        // b comes back with an older value: the combined watermark never regresses.
        w.observe("b", Some(60), t0 + Duration::from_secs(11));
        assert_eq!(w.advance(), None);
        w.finish_split("b");
        w.observe("a", Some(400), t0 + Duration::from_secs(12));
        assert_eq!(w.advance(), Some(Watermark::EventTime(400)));
        w.mark_idle(Duration::from_secs(5), t0 + Duration::from_secs(30));
        assert_eq!(w.advance(), Some(Watermark::Idle));
        assert_eq!(w.advance(), None);
    }

    #[test]
    fn when_every_split_has_finished_the_source_reaches_the_largest_watermark() {
        let t0 = Instant::now();
        let mut w = SplitWatermarks::new();
        w.observe("early", Some(100), t0);
        w.observe("late", Some(900), t0);
        assert_eq!(w.advance(), Some(Watermark::EventTime(100)));
        // The split that is further ahead finishes first: the other still holds the minimum.
        w.finish_split("late");
        w.observe("early", Some(200), t0);
        assert_eq!(w.advance(), Some(Watermark::EventTime(200)));
        // Nothing is open any more: the rows of "late" no longer wait for anyone.
        w.finish_split("early");
        assert_eq!(w.advance(), Some(Watermark::EventTime(900)));
        assert_eq!(w.advance(), None);
        // A new split starts from there; an older finished one does not pull it back.
        w.observe("next", Some(950), t0);
        w.finish_split("next");
        assert_eq!(w.advance(), Some(Watermark::EventTime(950)));
    }

    #[test]
    fn splits_going_idle_together_first_reach_the_latest_ones_watermark() {
        let mut w = SplitWatermarks::new();
        let t0 = Instant::now();
        w.observe("a", Some(10), t0);
        w.observe("b", Some(50), t0 + Duration::from_secs(1));
        assert_eq!(w.advance(), Some(Watermark::EventTime(10)));
        // Both are quiet for longer than the timeout by the next check.
        w.mark_idle(Duration::from_secs(5), t0 + Duration::from_secs(30));
        assert_eq!(w.advance(), Some(Watermark::EventTime(50)));
        assert_eq!(w.advance(), Some(Watermark::Idle));
        assert_eq!(w.advance(), None);
        // New data makes a split active again, from where it was.
        w.observe("a", Some(60), t0 + Duration::from_secs(31));
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
    fn a_source_without_splits_goes_idle_after_its_timeout() {
        let t0 = Instant::now();
        let mut w = SplitWatermarks::new();
        w.start_split("f1", t0);
        assert_eq!(w.advance(), None, "a started split holds the watermark");
        w.observe("f1", Some(100), t0);
        assert_eq!(w.advance(), Some(Watermark::EventTime(100)));
        w.finish_split("f1");
        w.mark_idle(Duration::from_secs(5), t0 + Duration::from_secs(1));
        assert_eq!(w.advance(), None);
        w.mark_idle(Duration::from_secs(5), t0 + Duration::from_secs(6));
        assert_eq!(w.advance(), Some(Watermark::Idle));
    }
}
