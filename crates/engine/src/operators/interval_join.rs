//! The interval join: two append-only streams joined on equal keys where the left row's
//! event time minus the right row's lies within fixed bounds
//! (`l.ts BETWEEN r.ts - INTERVAL '10' SECOND AND r.ts`). Each side keeps its rows until the
//! *other* side's watermark makes a match impossible; outer joins emit a row that never
//! matched, padded with NULLs, at that moment.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, UInt32Array};
use datafusion::arrow::array::{Int64Array, UInt64Array};
use datafusion::arrow::compute::{filter_record_batch, take};
use datafusion::arrow::datatypes::{Int64Type, SchemaRef, UInt64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::HashMap;
use datafusion::physical_expr::PhysicalExpr;
use serde::{Deserialize, Serialize};

use super::idle_sweep::processing_time_ms;
use super::join_rows::{key_converter, key_rows, padded, rows_to_columns, with_change};
use super::window_aggregate::generic_batch;
use crate::changelog::{ChangeKind, StreamMode, schema_with_change};
use crate::error::{EngineError, Result};
use crate::message::{EventTime, Watermark};
use crate::operator::{Operator, Output};
use crate::state::NodeState;
use crate::time::{format_event_time, nanos_per_unit, timestamp_unit, timestamp_values};

/// Which unmatched rows a join emits besides the matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// Matches only.
    Inner,
    /// And left rows that never matched, with NULL right columns.
    Left,
    /// And right rows that never matched, with NULL left columns.
    Right,
    /// Both.
    Full,
    /// Left rows that match at least once, each once, with the left columns only (`EXISTS`,
    /// `IN`): emitted at their first match.
    LeftSemi,
    /// Left rows that never match, with the left columns only (`NOT EXISTS`): emitted when
    /// they can no longer match (or, without a time bound, at once, retracted at a match).
    LeftAnti,
}

impl JoinKind {
    /// Whether unmatched rows of side `side` (0 left, 1 right) are emitted.
    pub(super) fn keeps_unmatched(self, side: usize) -> bool {
        matches!(
            (self, side),
            (JoinKind::Left | JoinKind::Full | JoinKind::LeftAnti, 0)
                | (JoinKind::Right | JoinKind::Full, 1)
        )
    }

    /// Whether the output is the left columns only (a semi or anti join).
    pub(super) fn left_only(self) -> bool {
        matches!(self, JoinKind::LeftSemi | JoinKind::LeftAnti)
    }
}

/// What an interval join computes.
#[derive(Debug, Clone)]
pub struct IntervalJoinSpec {
    /// The rows of each input: `[left, right]`.
    pub inputs: [SchemaRef; 2],
    /// The equi-join keys of each input (equal in number and type).
    pub keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    /// The event-time column of each input (the column its watermark is on); `None` for a
    /// join without a time bound (a *regular* join: rows are kept until the state TTL, and
    /// the output has no event time).
    pub time_columns: Option<[usize; 2]>,
    /// `left time - right time` must be at least this (nanoseconds)...
    pub lower: i64,
    /// ... and at most this (nanoseconds; both bounds inclusive). A regular join has
    /// `i64::MIN` and `i64::MAX`.
    pub upper: i64,
    /// Other conditions on a joined row (over the left columns, then the right ones).
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// Which unmatched rows are emitted.
    pub kind: JoinKind,
    /// The left columns, then the right ones (nullable on an outer join's padded side); for
    /// a semi or anti join, the left columns only.
    pub output: SchemaRef,
}

/// One kept row of a side.
#[derive(Debug, Clone)]
struct Kept {
    /// Event time in nanoseconds.
    time: i64,
    /// Arrival number within the side (a checkpoint saves the rows in this order).
    seq: u64,
    /// The row in the side's row format (all its columns).
    row: Box<[u8]>,
    /// Whether it joined a row of the other side (that passed the filter).
    matched: bool,
}

/// The rows one side keeps, by key, with the times they expire at.
struct Side {
    /// All columns of the side, to keep rows compactly and rebuild them as columns.
    rows: RowConverter,
    per_unit: i64,
    by_key: HashMap<Box<[u8]>, Vec<Kept>>,
    /// (time, seq, key) of every kept row, earliest first; empty when rows never expire (a
    /// regular join without a state TTL).
    expiry: BinaryHeap<Reverse<(i64, u64, Box<[u8]>)>>,
    /// Whether kept rows expire (a time bound, or a state TTL).
    expires: bool,
    next_seq: u64,
    /// This side's own watermark (nanoseconds).
    watermark: Option<EventTime>,
    /// Whether this side's input is idle.
    idle: bool,
    kept: usize,
}

impl Side {
    fn new(schema: &SchemaRef, time_column: Option<usize>) -> Result<Self> {
        let per_unit = match time_column {
            Some(c) => {
                let time = schema.field(c);
                nanos_per_unit(timestamp_unit(time.data_type(), time.name())?)
            }
            None => 1,
        };
        let fields = (schema.fields().iter())
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(Side {
            rows: RowConverter::new(fields)?,
            per_unit,
            by_key: HashMap::default(),
            expiry: BinaryHeap::new(),
            expires: true,
            next_seq: 0,
            watermark: None,
            idle: false,
            kept: 0,
        })
    }

    fn keep(&mut self, key: &[u8], time: i64, row: Box<[u8]>, matched: bool) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let rows = match self.by_key.get_mut(key) {
            Some(rows) => rows,
            None => self.by_key.entry(Box::from(key)).or_default(),
        };
        rows.push(Kept {
            time,
            seq,
            row,
            matched,
        });
        if self.expires {
            self.expiry.push(Reverse((time, seq, key.into())));
        }
        self.kept += 1;
    }

    /// Removes the rows with a time at or before `until`; returns those that never matched.
    /// Each key whose rows expire is gone through once.
    fn expire(&mut self, until: i64) -> Vec<Box<[u8]>> {
        let mut keys: Vec<Box<[u8]>> = Vec::new();
        while let Some(Reverse((time, _, _))) = self.expiry.peek() {
            if *time > until {
                break;
            }
            let Reverse((_, _, key)) = self.expiry.pop().expect("peeked");
            keys.push(key);
        }
        keys.sort_unstable();
        keys.dedup();
        let mut unmatched = Vec::new();
        for key in keys {
            let Some(rows) = self.by_key.get_mut(&key) else {
                continue;
            };
            let before = rows.len();
            rows.retain_mut(|r| {
                if r.time > until {
                    return true;
                }
                if !r.matched {
                    unmatched.push(std::mem::take(&mut r.row));
                }
                false
            });
            self.kept -= before - rows.len();
            if rows.is_empty() {
                self.by_key.remove(&key);
            }
        }
        unmatched
    }

    /// The columns of rows in this side's row format.
    fn columns<'a>(&self, rows: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<ArrayRef>> {
        rows_to_columns(&self.rows, rows)
    }
}

/// Whether each joined row passes a join's other conditions (all do without any; NULL is
/// false).
pub(super) fn passing_rows(
    filter: Option<&Arc<dyn PhysicalExpr>>,
    joined: &RecordBatch,
) -> Result<Vec<bool>> {
    let Some(filter) = filter else {
        return Ok(vec![true; joined.num_rows()]);
    };
    let result = filter.evaluate(joined)?.into_array(joined.num_rows())?;
    let result = result
        .as_boolean_opt()
        .ok_or_else(|| EngineError::Internal("the join condition is not a boolean".into()))?;
    Ok((0..result.len())
        .map(|i| result.is_valid(i) && result.value(i))
        .collect())
}

/// A row of the arriving batch joined with a kept row of the other side.
struct Pair {
    arriving: u32,
    key: usize,
    at: usize,
}

/// Joins two append-only streams on equal keys within a time interval (see the module
/// documentation). Output: matches as they are found (each once), unmatched rows of an outer
/// side when the other side's watermark passes the last time they could match. The
/// watermark sent downstream is held back so that no output row is behind it:
/// `min(left, right, right + lower, left - upper)` of the inputs' own watermarks.
/// State: each side's rows that can still match, keyed; at most the rows of one interval
/// (plus the watermark delay) per side.
pub struct IntervalJoin {
    spec: IntervalJoinSpec,
    /// An outer regular join's result updates: a row padded with NULLs goes out when it
    /// arrives unmatched and is retracted (`-D`) when its first match comes.
    updating: bool,
    /// `spec.output`, with the change column when the result updates.
    output: SchemaRef,
    /// A joined pair: the left columns, then the right ones (what the filter sees).
    pairs: SchemaRef,
    keys: RowConverter,
    sides: [Side; 2],
    forwarded: Option<EventTime>,
    /// A regular join's state TTL.
    ttl: Option<std::time::Duration>,
}

impl std::fmt::Debug for IntervalJoin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntervalJoin")
            .field("left_rows", &self.sides[0].kept)
            .field("right_rows", &self.sides[1].kept)
            .finish()
    }
}

impl IntervalJoin {
    /// Checks the spec and builds the operator.
    pub fn new(spec: IntervalJoinSpec) -> Result<Self> {
        if spec.lower > spec.upper {
            return Err(EngineError::User(format!(
                "the join's time bounds are empty: the left time minus the right must be at least {}s and at most {}s",
                spec.lower as f64 / 1e9,
                spec.upper as f64 / 1e9
            )));
        }
        let keys = key_converter(&spec.keys, &spec.inputs)?;
        let both: Vec<_> = (spec.inputs.iter())
            .flat_map(|s| {
                s.fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
            })
            .collect();
        let width = match spec.kind.left_only() {
            true => spec.inputs[0].fields().len(),
            false => both.len(),
        };
        if spec.output.fields().len() != width {
            return Err(EngineError::Internal(
                "interval join output must be the left columns, then the right ones".into(),
            ));
        }
        let pairs = match spec.kind.left_only() {
            true => Arc::new(datafusion::arrow::datatypes::Schema::new(both)),
            false => spec.output.clone(),
        };
        let updating = spec.time_columns.is_none()
            && !matches!(spec.kind, JoinKind::Inner | JoinKind::LeftSemi);
        let output = match updating {
            true => schema_with_change(&spec.output),
            false => spec.output.clone(),
        };
        let mut sides = [
            Side::new(&spec.inputs[0], spec.time_columns.map(|t| t[0]))?,
            Side::new(&spec.inputs[1], spec.time_columns.map(|t| t[1]))?,
        ];
        // Without a time bound, rows expire only under a state TTL (set later, if any).
        let expires = spec.time_columns.is_some();
        sides.iter_mut().for_each(|s| s.expires = expires);
        Ok(IntervalJoin {
            spec,
            updating,
            output,
            pairs,
            keys,
            sides,
            forwarded: None,
            ttl: None,
        })
    }

    /// A regular join keeps a row for `ttl` of processing time after it arrived (`None`:
    /// forever). Joins with a time bound expire rows by the watermarks instead.
    pub fn with_state_ttl(mut self, ttl: Option<std::time::Duration>) -> Self {
        self.ttl = ttl;
        let expires = self.rows_expire();
        self.sides.iter_mut().for_each(|s| s.expires = expires);
        self
    }

    /// Whether kept rows ever expire: by the watermarks (a time bound) or the state TTL.
    fn rows_expire(&self) -> bool {
        self.spec.time_columns.is_some() || self.ttl.is_some()
    }

    /// Each row's time in nanoseconds: its event time, or for a regular join the processing
    /// time it arrived at.
    fn times(&self, side: usize, batch: &RecordBatch) -> Result<Vec<i64>> {
        let Some(columns) = self.spec.time_columns else {
            let now = processing_time_ms() as i64 * 1_000_000;
            return Ok(vec![now; batch.num_rows()]);
        };
        let per_unit = self.sides[side].per_unit;
        let times = timestamp_values(batch.column(columns[side]))?;
        Ok(times
            .values()
            .iter()
            .map(|t| t.saturating_mul(per_unit))
            .collect())
    }

    /// Rows kept on each side (left, right).
    pub fn kept_rows(&self) -> (usize, usize) {
        (self.sides[0].kept, self.sides[1].kept)
    }

    /// The bounds of `arriving time - kept time` for a row arriving on `side`.
    fn bounds(&self, side: usize) -> (i64, i64) {
        match side {
            0 => (self.spec.lower, self.spec.upper),
            _ => (
                self.spec.upper.saturating_neg(),
                self.spec.lower.saturating_neg(),
            ),
        }
    }

    /// The latest time of a row of `side` that no future row of the other side can match,
    /// given the other side's watermark `w`.
    fn expired_until(&self, side: usize, w: EventTime) -> i64 {
        match side {
            0 => w.saturating_add(self.spec.lower),
            _ => w.saturating_sub(self.spec.upper),
        }
    }

    /// Drops rows at or before the side's own watermark (and without a time) as late;
    /// returns the rest.
    fn drop_late(&self, side: usize, batch: RecordBatch, out: &mut Output) -> Result<RecordBatch> {
        let Some(columns) = self.spec.time_columns else {
            return Ok(batch);
        };
        let s = &self.sides[side];
        let times = timestamp_values(batch.column(columns[side]))?;
        let keep: BooleanArray = match s.watermark {
            None if times.null_count() == 0 => return Ok(batch),
            w => (times.iter())
                .map(|t| {
                    Some(t.is_some_and(|t| w.is_none_or(|w| t.saturating_mul(s.per_unit) > w)))
                })
                .collect(),
        };
        if keep.true_count() < batch.num_rows() {
            let late = datafusion::arrow::compute::not(&keep)?;
            let reason = match s.watermark {
                Some(w) => format!(
                    "its event time is at or before its input's watermark {} (or NULL)",
                    format_event_time(w)
                ),
                None => "its event time is NULL".to_string(),
            };
            out.late(filter_record_batch(&batch, &late)?, reason);
            return Ok(filter_record_batch(&batch, &keep)?);
        }
        Ok(batch)
    }

    /// The arriving rows' keys (row format), or `None` for a row with a NULL key (which
    /// matches nothing).
    fn key_rows(&self, side: usize, batch: &RecordBatch) -> Result<(Rows, Vec<bool>)> {
        key_rows(&self.spec.keys[side], &self.keys, batch)
    }

    /// Joins a batch of `side` with the other side's kept rows, emits the matches, and keeps
    /// the batch's rows that can still match a later row of the other side.
    fn join_batch(&mut self, side: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let batch = self.drop_late(side, batch, out)?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let other = 1 - side;
        let times = self.times(side, &batch)?;
        let (keys, valid) = self.key_rows(side, &batch)?;
        let (low, high) = self.bounds(side);
        let mut pairs = Vec::new();
        let mut probe_keys: Vec<&[u8]> = Vec::new();
        for (i, t) in times.iter().enumerate() {
            if !valid[i] {
                continue;
            }
            let key = keys.row(i);
            let Some(kept) = self.sides[other].by_key.get(key.as_ref()) else {
                continue;
            };
            for (at, k) in kept.iter().enumerate() {
                let d = t.saturating_sub(k.time);
                if d >= low && d <= high {
                    pairs.push(Pair {
                        arriving: i as u32,
                        key: probe_keys.len(),
                        at,
                    });
                }
            }
            probe_keys.push(key.data());
        }
        let matched = self.emit_pairs(side, &batch, &pairs, &probe_keys, out)?;
        // Mark the kept rows that matched (their outer padding is then never emitted).
        for (p, ok) in pairs.iter().zip(&matched.pairs) {
            if *ok && let Some(kept) = self.sides[other].by_key.get_mut(probe_keys[p.key]) {
                kept[p.at].matched = true;
            }
        }
        self.keep_batch(
            side,
            &batch,
            &times,
            (&keys, &valid),
            &matched.arriving,
            out,
        )
    }

    /// Emits the joined rows of `pairs` that pass the filter; says which pairs passed and
    /// which arriving rows matched at least once.
    fn emit_pairs(
        &self,
        side: usize,
        batch: &RecordBatch,
        pairs: &[Pair],
        probe_keys: &[&[u8]],
        out: &mut Output,
    ) -> Result<Matched> {
        let mut arriving = vec![false; batch.num_rows()];
        if pairs.is_empty() {
            return Ok(Matched {
                pairs: Vec::new(),
                arriving,
            });
        }
        let other = &self.sides[1 - side];
        let indices: UInt32Array = pairs.iter().map(|p| p.arriving).collect();
        let these: Vec<ArrayRef> = (batch.columns().iter())
            .map(|c| take(c.as_ref(), &indices, None))
            .collect::<std::result::Result<_, _>>()?;
        let kept_rows = pairs.iter().map(|p| {
            let kept = &other.by_key[probe_keys[p.key]];
            &kept[p.at].row[..]
        });
        let those = other.columns(kept_rows)?;
        let columns = match side {
            0 => [these, those].concat(),
            _ => [those, these].concat(),
        };
        let joined = RecordBatch::try_new(self.pairs.clone(), columns)?;
        let passed = self.passes_filter(&joined)?;
        for (p, ok) in pairs.iter().zip(&passed) {
            arriving[p.arriving as usize] |= *ok;
        }
        let kind = self.spec.kind;
        if kind == JoinKind::LeftSemi {
            // Left rows go out at their first match: arriving ones now, kept ones once.
            match side {
                0 => self.emit_rows(batch, &arriving, out)?,
                _ => {
                    self.first_matches(side, pairs, &passed, probe_keys, ChangeKind::Insert, out)?
                }
            }
        } else if self.updating && kind.keeps_unmatched(1 - side) {
            self.first_matches(side, pairs, &passed, probe_keys, ChangeKind::Delete, out)?;
        }
        if !kind.left_only() {
            let mask = BooleanArray::from(passed.clone());
            self.emit(
                filter_record_batch(&joined, &mask)?,
                ChangeKind::Insert,
                out,
            )?;
        }
        Ok(Matched {
            pairs: passed,
            arriving,
        })
    }

    /// The rows of `batch` that `selected` marks, as output rows (a semi join's matches).
    fn emit_rows(&self, batch: &RecordBatch, selected: &[bool], out: &mut Output) -> Result<()> {
        let mask = BooleanArray::from(selected.to_vec());
        self.emit(filter_record_batch(batch, &mask)?, ChangeKind::Insert, out)
    }

    /// Emits, as `kind`, the (padded) output rows of the kept rows of the other side that
    /// match for the first time: an updating outer or anti join retracts (`-D`) what it
    /// emitted for them before their matches go out; a semi join emits them (`+I`).
    fn first_matches(
        &self,
        side: usize,
        pairs: &[Pair],
        passed: &[bool],
        probe_keys: &[&[u8]],
        kind: ChangeKind,
        out: &mut Output,
    ) -> Result<()> {
        let other = 1 - side;
        // A kept row by its key and place (several arriving rows may match it).
        let mut first: Vec<(&[u8], usize)> = (pairs.iter().zip(passed))
            .filter(|(p, ok)| **ok && !self.sides[other].by_key[probe_keys[p.key]][p.at].matched)
            .map(|(p, _)| (probe_keys[p.key], p.at))
            .collect();
        first.sort_unstable();
        first.dedup();
        if first.is_empty() {
            return Ok(());
        }
        let kept = &self.sides[other];
        let rows = first
            .iter()
            .map(|(key, at)| &kept.by_key[*key][*at].row[..]);
        let columns = kept.columns(rows)?;
        self.emit(self.padded(other, columns)?, kind, out)
    }

    /// Sends `batch` (of the logical output schema) downstream, with the change column
    /// (every row `kind`) when the result updates.
    fn emit(&self, batch: RecordBatch, kind: ChangeKind, out: &mut Output) -> Result<()> {
        match self.updating {
            true => out.batch(with_change(&self.output, batch, kind)?),
            false => out.batch(batch),
        }
        Ok(())
    }

    /// Whether each joined row passes the join's other conditions.
    fn passes_filter(&self, joined: &RecordBatch) -> Result<Vec<bool>> {
        passing_rows(self.spec.filter.as_ref(), joined)
    }

    /// Keeps the arriving rows that a later row of the other side can still match; an outer
    /// side's rows that cannot (NULL keys, or already expired) and never matched go out
    /// padded now.
    fn keep_batch(
        &mut self,
        side: usize,
        batch: &RecordBatch,
        times: &[i64],
        (keys, valid): (&Rows, &[bool]),
        matched: &[bool],
        out: &mut Output,
    ) -> Result<()> {
        let other_watermark = self.sides[1 - side].watermark;
        let expired_until = (other_watermark)
            .filter(|_| self.spec.time_columns.is_some())
            .map(|w| self.expired_until(side, w));
        let rows = self.sides[side].rows.convert_columns(batch.columns())?;
        let mut unmatched = Vec::new();
        for (i, &t) in times.iter().enumerate() {
            let can_match = valid[i] && expired_until.is_none_or(|e| t > e);
            if can_match {
                let row = Box::from(rows.row(i).data());
                self.sides[side].keep(keys.row(i).data(), t, row, matched[i]);
            }
            // An updating join pads an unmatched row at once (and retracts it on its first
            // match); an append-only one when it can no longer match.
            if !matched[i] && (self.updating || !can_match) {
                unmatched.push(i as u32);
            }
        }
        if self.spec.kind.keeps_unmatched(side) && !unmatched.is_empty() {
            let indices = UInt32Array::from(unmatched);
            let columns: Vec<ArrayRef> = (batch.columns().iter())
                .map(|c| take(c.as_ref(), &indices, None))
                .collect::<std::result::Result<_, _>>()?;
            self.emit(self.padded(side, columns)?, ChangeKind::Insert, out)?;
        }
        Ok(())
    }

    /// Rows of `side` with NULLs for the other side's columns (a semi or anti join's left
    /// rows as they are).
    fn padded(&self, side: usize, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
        let other = &self.spec.inputs[1 - side];
        padded(
            &self.spec.output,
            other,
            side,
            self.spec.kind.left_only(),
            columns,
        )
    }

    /// The watermark downstream may see: no output row is behind it. A left time in the
    /// output is after the left watermark (an arriving row) or after the right watermark
    /// plus `lower` (a kept row); a right time after the right watermark or the left one
    /// minus `upper`. An idle input's terms are left out (its rows may be late when it comes
    /// back, as for any idle input); `None` until both inputs sent one, or both are idle.
    fn held_watermark(&self) -> Option<EventTime> {
        let mut held: Option<EventTime> = None;
        for side in 0..2 {
            let s = &self.sides[side];
            if s.idle {
                continue;
            }
            let w = s.watermark?;
            let shifted = match (w, side) {
                (EventTime::MAX, _) => w,
                (_, 0) => w.saturating_sub(self.spec.upper),
                _ => w.saturating_add(self.spec.lower),
            };
            let term = w.min(shifted);
            held = Some(held.map_or(term, |h| h.min(term)));
        }
        held
    }
}

/// Which joined pairs passed the filter, and which arriving rows matched.
struct Matched {
    pairs: Vec<bool>,
    arriving: Vec<bool>,
}

/// The join's checkpoint besides its tables.
#[derive(Debug, Serialize, Deserialize)]
struct SavedJoin {
    watermarks: [Option<EventTime>; 2],
    forwarded: Option<EventTime>,
}

const SIDE_TABLES: [&str; 2] = ["left", "right"];

impl Operator for IntervalJoin {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    /// Append-only inputs; the result is append-only, or updating (with no key known) for
    /// an outer join without a time bound.
    fn output_mode(&self, inputs: &[StreamMode]) -> std::result::Result<StreamMode, String> {
        if inputs.iter().any(StreamMode::is_updating) {
            return Err("joins of updating results are not supported yet".into());
        }
        Ok(match self.updating {
            true => StreamMode::Updating { key: Vec::new() },
            false => StreamMode::AppendOnly,
        })
    }

    fn open_state(&self) -> u64 {
        (self.sides[0].kept + self.sides[1].kept) as u64
    }

    fn process_batch(&mut self, input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        if input > 1 {
            return Err(EngineError::Internal(format!(
                "a join has no input {input}"
            )));
        }
        self.join_batch(input, batch, out)
    }

    fn process_input_watermark(
        &mut self,
        input: usize,
        watermark: Watermark,
        out: &mut Output,
    ) -> Result<()> {
        let Watermark::EventTime(w) = watermark else {
            self.sides[input].idle = true;
            return Ok(());
        };
        self.sides[input].idle = false;
        let own = &mut self.sides[input].watermark;
        *own = Some(own.map_or(w, |o| o.max(w)));
        if self.spec.time_columns.is_none() {
            return Ok(()); // a regular join's rows go by the state TTL
        }
        // The other side's rows that no later row of this side can match.
        let side = 1 - input;
        let until = self.expired_until(side, w);
        let unmatched = self.sides[side].expire(until);
        if self.spec.kind.keeps_unmatched(side) && !unmatched.is_empty() {
            let columns = self.sides[side].columns(unmatched.iter().map(|r| &r[..]))?;
            self.emit(self.padded(side, columns)?, ChangeKind::Insert, out)?;
        }
        Ok(())
    }

    fn process_watermark(&mut self, watermark: Watermark, out: &mut Output) -> Result<()> {
        if watermark == Watermark::Idle {
            out.watermark(watermark);
            return Ok(());
        }
        if self.spec.time_columns.is_none() {
            // A regular join's rows can be of any age: its output has no event time.
            return Ok(());
        }
        if let Some(w) = self.held_watermark()
            && self.forwarded.is_none_or(|f| w > f)
        {
            self.forwarded = Some(w);
            out.watermark(Watermark::EventTime(w));
        }
        Ok(())
    }

    fn on_tick(&mut self, _out: &mut Output) -> Result<()> {
        if let (Some(ttl), None) = (self.ttl, self.spec.time_columns) {
            let now = processing_time_ms() as i64 * 1_000_000;
            let until = now - ttl.as_nanos() as i64;
            for side in &mut self.sides {
                side.expire(until);
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Output) -> Result<()> {
        for input in 0..2 {
            self.process_input_watermark(input, Watermark::END, out)?;
        }
        Ok(())
    }

    /// Saves each side's kept rows (their columns, then whether they matched, their arrival
    /// number and their time in nanoseconds) and the watermarks.
    fn snapshot(&mut self) -> Result<NodeState> {
        let saved = SavedJoin {
            watermarks: [self.sides[0].watermark, self.sides[1].watermark],
            forwarded: self.forwarded,
        };
        let mut state = NodeState::json(&saved)?;
        for (side, name) in SIDE_TABLES.iter().enumerate() {
            let s = &self.sides[side];
            if s.kept == 0 {
                continue;
            }
            let mut rows: Vec<&Kept> = s.by_key.values().flatten().collect();
            rows.sort_by_key(|k| k.seq);
            let mut columns = s.columns(rows.iter().map(|k| &k.row[..]))?;
            let matched: BooleanArray = rows.iter().map(|k| Some(k.matched)).collect();
            let seqs: UInt64Array = rows.iter().map(|k| k.seq).collect();
            let times: Int64Array = rows.iter().map(|k| k.time).collect();
            columns.push(Arc::new(matched));
            columns.push(Arc::new(seqs));
            columns.push(Arc::new(times));
            state = state.with_table(*name, generic_batch(columns)?);
        }
        Ok(state)
    }

    fn restore(&mut self, state: NodeState) -> Result<()> {
        let saved: Option<SavedJoin> = state.to_json()?;
        let Some(saved) = saved else {
            return Ok(());
        };
        self.forwarded = saved.forwarded;
        for (side, name) in SIDE_TABLES.iter().enumerate() {
            let time_column = self.spec.time_columns.map(|t| t[side]);
            self.sides[side] = Side::new(&self.spec.inputs[side], time_column)?;
            self.sides[side].expires = self.rows_expire();
            self.sides[side].watermark = saved.watermarks[side];
            if let Some(t) = state.table(name) {
                self.restore_side(side, t)?;
            }
        }
        Ok(())
    }
}

impl IntervalJoin {
    fn restore_side(&mut self, side: usize, table: &RecordBatch) -> Result<()> {
        let (batch, extra) = saved_side(&self.spec.inputs[side], table, 3)?;
        let matched = extra[0].as_boolean_opt().ok_or_else(state_changed)?;
        let seqs = (extra[1].as_primitive_opt::<UInt64Type>()).ok_or_else(state_changed)?;
        let times = (extra[2].as_primitive_opt::<Int64Type>()).ok_or_else(state_changed)?;
        let (keys, _) = self.key_rows(side, &batch)?;
        let rows = self.sides[side].rows.convert_columns(batch.columns())?;
        let s = &mut self.sides[side];
        for i in 0..batch.num_rows() {
            s.next_seq = seqs.value(i);
            let (key, row) = (keys.row(i), Box::from(rows.row(i).data()));
            s.keep(key.data(), times.value(i), row, matched.value(i));
        }
        Ok(())
    }
}

/// The error for a saved join state that does not fit the query.
pub(super) fn state_changed() -> EngineError {
    EngineError::User(
        "the saved join state does not match this query; the pipeline changed (start with --from-scratch)".into(),
    )
}

/// A side's saved rows: its columns (as a batch of `schema`), then `extra` columns of
/// bookkeeping, which are returned apart.
pub(super) fn saved_side(
    schema: &SchemaRef,
    table: &RecordBatch,
    extra: usize,
) -> Result<(RecordBatch, Vec<ArrayRef>)> {
    let width = schema.fields().len();
    if table.num_columns() != width + extra {
        return Err(state_changed());
    }
    let batch = RecordBatch::try_new(schema.clone(), table.columns()[..width].to_vec())
        .map_err(|_| state_changed())?;
    Ok((batch, table.columns()[width..].to_vec()))
}

#[cfg(test)]
#[path = "interval_join_tests.rs"]
mod tests;
