//! The regular join of streams of which at least one is an updating result (a GROUP BY
//! without a window, a Top-N): equal keys, no time bound. Each side keeps its current rows per
//! key, each with how many rows of the other side it joins now; an arriving insertion
//! (`+I`, `+U`) joins the other side's rows and emits the pairs (`+I`), a retraction (`-U`,
//! `-D`) removes the row and retracts its pairs (`-D`). An outer side's row with no partner
//! is emitted padded with NULLs, retracted when its first partner comes and emitted again
//! when its last partner goes; semi and anti joins (`EXISTS`, `NOT EXISTS`) emit a left row
//! when it gains its first partner (semi) or has none (anti), and retract it when that ends.
//! The result is updating, with no key known.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Int64Array, UInt32Array, UInt64Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{Int64Type, SchemaRef, UInt64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::HashMap;
use datafusion::physical_expr::PhysicalExpr;

use super::idle_sweep::processing_time_ms;
use super::interval_join::{JoinKind, passing_rows, saved_side, state_changed};
use super::join_rows::{key_converter, key_rows, padded, rows_to_columns, with_change};
use super::window_aggregate::generic_batch;
use crate::changelog::{ChangeKind, StreamMode, change_kinds, kind_at, schema_with_change};
use crate::error::{EngineError, Result};
use crate::operator::{Operator, Output};
use crate::state::NodeState;

/// What an updating join computes.
#[derive(Debug, Clone)]
pub struct UpdatingJoinSpec {
    /// The data columns of each input (`[left, right]`), without the change column.
    pub inputs: [SchemaRef; 2],
    /// Whether each input is an updating stream (its batches end with the change column).
    pub updating: [bool; 2],
    /// The equi-join keys of each input, over its data columns.
    pub keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    /// Other conditions on a joined row (over the left columns, then the right ones).
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// INNER, LEFT, RIGHT, FULL, or a semi or anti join.
    pub kind: JoinKind,
    /// The left columns, then the right ones (the left columns only for a semi or anti
    /// join); the change column is added after them.
    pub output: SchemaRef,
}

/// One current row of a side.
#[derive(Debug)]
struct Entry {
    /// The row in the side's row format (its data columns).
    row: Box<[u8]>,
    /// How many rows of the other side it joins now.
    partners: u64,
    /// When it arrived (milliseconds), for the state TTL.
    arrived: i64,
}

/// The current rows of one side, by key.
struct Side {
    rows: RowConverter,
    by_key: HashMap<Box<[u8]>, Vec<Entry>>,
    kept: usize,
}

impl Side {
    fn new(schema: &SchemaRef) -> Result<Self> {
        let fields = (schema.fields().iter())
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(Side {
            rows: RowConverter::new(fields)?,
            by_key: HashMap::default(),
            kept: 0,
        })
    }

    fn columns<'a>(&self, rows: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<ArrayRef>> {
        rows_to_columns(&self.rows, rows)
    }

    /// Removes one entry holding `row` under `key`; `None` if there is none.
    fn remove(&mut self, key: &[u8], row: &[u8]) -> Option<Entry> {
        let entries = self.by_key.get_mut(key)?;
        let at = entries.iter().position(|e| &e.row[..] == row)?;
        let entry = entries.swap_remove(at);
        if entries.is_empty() {
            self.by_key.remove(key);
        }
        self.kept -= 1;
        Some(entry)
    }
}

/// A row of the arriving run beside an entry of the other side: (arriving row, its key's
/// index among the probed keys, the entry's place under that key).
type Candidate = (u32, usize, usize);

/// Joins streams of which one or both update; see the module docs.
pub struct UpdatingJoin {
    spec: UpdatingJoinSpec,
    output: SchemaRef,
    pairs: SchemaRef,
    keys: RowConverter,
    sides: [Side; 2],
    ttl: Option<std::time::Duration>,
    swept_at: i64,
}

impl std::fmt::Debug for UpdatingJoin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdatingJoin")
            .field("left_rows", &self.sides[0].kept)
            .field("right_rows", &self.sides[1].kept)
            .finish()
    }
}

impl UpdatingJoin {
    /// Checks the spec and builds the operator.
    pub fn new(spec: UpdatingJoinSpec) -> Result<Self> {
        let keys = key_converter(&spec.keys, &spec.inputs)?;
        let width = match spec.kind.left_only() {
            true => spec.inputs[0].fields().len(),
            false => spec.inputs[0].fields().len() + spec.inputs[1].fields().len(),
        };
        if spec.output.fields().len() != width {
            return Err(EngineError::Internal(
                "join output must be the left columns, then the right ones".into(),
            ));
        }
        let pairs = Arc::new(datafusion::arrow::datatypes::Schema::new(
            (spec.inputs.iter())
                .flat_map(|s| {
                    s.fields()
                        .iter()
                        .map(|f| f.as_ref().clone().with_nullable(true))
                })
                .collect::<Vec<_>>(),
        ));
        Ok(UpdatingJoin {
            output: schema_with_change(&spec.output),
            pairs,
            keys,
            sides: [Side::new(&spec.inputs[0])?, Side::new(&spec.inputs[1])?],
            spec,
            ttl: None,
            swept_at: 0,
        })
    }

    /// Keeps a row for `ttl` of processing time after it arrived (`None`: forever); a row
    /// dropped leaves what was emitted for it as it is.
    pub fn with_state_ttl(mut self, ttl: Option<std::time::Duration>) -> Self {
        self.ttl = ttl;
        self
    }

    /// Rows kept on each side (left, right).
    pub fn kept_rows(&self) -> (usize, usize) {
        (self.sides[0].kept, self.sides[1].kept)
    }

    /// The data columns of a batch of `side`, and each row's change kind.
    fn split(&self, side: usize, batch: RecordBatch) -> Result<(RecordBatch, Vec<bool>)> {
        if !self.spec.updating[side] {
            let n = batch.num_rows();
            return Ok((batch, vec![false; n]));
        }
        let kinds = change_kinds(&batch)?;
        let retractions = (0..batch.num_rows())
            .map(|i| kind_at(kinds, i).map(ChangeKind::is_retraction))
            .collect::<Result<Vec<_>>>()?;
        let data: Vec<usize> = (0..batch.num_columns() - 1).collect();
        Ok((batch.project(&data)?, retractions))
    }

    /// The rows' keys (row format), and which rows have one (no NULL part).
    fn key_rows(&self, side: usize, batch: &RecordBatch) -> Result<(Rows, Vec<bool>)> {
        key_rows(&self.spec.keys[side], &self.keys, batch)
    }

    /// The entries of the other side that rows `run` of the arriving batch meet, and which of
    /// those pairs pass the filter, with the joined rows.
    fn candidates(
        &self,
        side: usize,
        data: &RecordBatch,
        run: &[u32],
        keys: &Rows,
        valid: &[bool],
    ) -> Result<(Vec<Candidate>, Vec<Box<[u8]>>, RecordBatch, Vec<bool>)> {
        let other = &self.sides[1 - side];
        let mut found = Vec::new();
        let mut probed: Vec<Box<[u8]>> = Vec::new();
        for &i in run {
            if !valid[i as usize] {
                continue;
            }
            let key = keys.row(i as usize);
            let Some(entries) = other.by_key.get(key.data()) else {
                continue;
            };
            for at in 0..entries.len() {
                found.push((i, probed.len(), at));
            }
            probed.push(Box::from(key.data()));
        }
        let indices: UInt32Array = found.iter().map(|c| c.0).collect();
        let these = (data.columns().iter())
            .map(|c| take(c.as_ref(), &indices, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let those = other
            .columns((found.iter()).map(|(_, k, at)| &other.by_key[&probed[*k]][*at].row[..]))?;
        let columns = match side {
            0 => [these, those].concat(),
            _ => [those, these].concat(),
        };
        let options =
            datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(found.len()));
        let joined = RecordBatch::try_new_with_options(self.pairs.clone(), columns, &options)?;
        let passed = passing_rows(self.spec.filter.as_ref(), &joined)?;
        Ok((found, probed, joined, passed))
    }

    /// Sends logical rows downstream as `kind`.
    fn emit(&self, rows: RecordBatch, kind: ChangeKind, out: &mut Output) -> Result<()> {
        if rows.num_rows() > 0 {
            out.batch(with_change(&self.output, rows, kind)?);
        }
        Ok(())
    }

    /// The joined rows of `passed` pairs, as output rows.
    fn passed_pairs(&self, joined: &RecordBatch, passed: &[bool]) -> Result<RecordBatch> {
        let mask = datafusion::arrow::array::BooleanArray::from(passed.to_vec());
        let kept = datafusion::arrow::compute::filter_record_batch(joined, &mask)?;
        Ok(RecordBatch::try_new(
            self.spec.output.clone(),
            kept.columns().to_vec(),
        )?)
    }

    /// Rows of `side` (its data columns) with NULLs for the other side's (a semi or anti
    /// join's left rows as they are).
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

    /// Rows `selected` of `data` (of `side`), padded.
    fn padded_rows(
        &self,
        side: usize,
        data: &RecordBatch,
        selected: &[u32],
    ) -> Result<RecordBatch> {
        let indices = UInt32Array::from(selected.to_vec());
        let columns = (data.columns().iter())
            .map(|c| take(c.as_ref(), &indices, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        self.padded(side, columns)
    }

    /// The other side's entries whose partner count crosses zero, padded (their row as it is
    /// stored), once each.
    fn padded_entries(&self, side: usize, entries: &[(Box<[u8]>, usize)]) -> Result<RecordBatch> {
        let kept = &self.sides[side];
        let columns = kept.columns(entries.iter().map(|(k, at)| &kept.by_key[k][*at].row[..]))?;
        self.padded(side, columns)
    }

    /// Insertions `run` of `side`: their pairs go out; partners counted; a row without one
    /// goes out padded on an outer side; the rows are kept.
    fn accumulate(
        &mut self,
        side: usize,
        batch: (&RecordBatch, &Rows, &[bool]),
        run: &[u32],
        out: &mut Output,
    ) -> Result<()> {
        let (data, keys, valid) = batch;
        let other = 1 - side;
        let (found, probed, joined, passed) = self.candidates(side, data, run, keys, valid)?;
        let mut partners = vec![0u64; data.num_rows()];
        let mut first: Vec<(Box<[u8]>, usize)> = Vec::new();
        for ((i, k, at), ok) in found.iter().zip(&passed) {
            if !*ok {
                continue;
            }
            partners[*i as usize] += 1;
            if self.sides[other].by_key[&probed[*k]][*at].partners == 0 {
                first.push((probed[*k].clone(), *at));
            }
        }
        first.sort_unstable();
        first.dedup();
        self.emit_crossings(other, &first, ChangeKind::Insert, out)?;
        if !self.spec.kind.left_only() {
            let pairs = self.passed_pairs(&joined, &passed)?;
            self.emit(pairs, ChangeKind::Insert, out)?;
        }
        for ((_, k, at), ok) in found.iter().zip(&passed) {
            if *ok && let Some(entries) = self.sides[other].by_key.get_mut(&probed[*k]) {
                entries[*at].partners += 1;
            }
        }
        self.emit_arrivals(side, data, run, &partners, ChangeKind::Insert, out)?;
        let rows = self.sides[side].rows.convert_columns(data.columns())?;
        let now = processing_time_ms() as i64;
        let s = &mut self.sides[side];
        for &i in run.iter().filter(|i| valid[**i as usize]) {
            let key = keys.row(i as usize).data();
            let entry = Entry {
                row: Box::from(rows.row(i as usize).data()),
                partners: partners[i as usize],
                arrived: now,
            };
            match s.by_key.get_mut(key) {
                Some(entries) => entries.push(entry),
                None => {
                    s.by_key.insert(Box::from(key), vec![entry]);
                }
            }
            s.kept += 1;
        }
        Ok(())
    }

    /// Retractions `run` of `side`: the rows leave the state and their pairs are retracted;
    /// a partner left without any goes out padded again on an outer side; a retracted row
    /// without partners is retracted padded. A retraction of a row the state does not hold
    /// (dropped by the state TTL, or never seen) retracts nothing.
    fn retract(
        &mut self,
        side: usize,
        batch: (&RecordBatch, &Rows, &[bool]),
        run: &[u32],
        out: &mut Output,
    ) -> Result<()> {
        let (data, keys, valid) = batch;
        let other = 1 - side;
        let rows = self.sides[side].rows.convert_columns(data.columns())?;
        let mut held = Vec::new();
        for &i in run {
            let row = rows.row(i as usize);
            let known = match valid[i as usize] {
                true => self.sides[side]
                    .remove(keys.row(i as usize).data(), row.data())
                    .is_some(),
                // A row with a NULL key was never kept: it was emitted padded on an outer side.
                false => true,
            };
            if known {
                held.push(i);
            }
        }
        let (found, probed, joined, passed) = self.candidates(side, data, &held, keys, valid)?;
        if !self.spec.kind.left_only() {
            let pairs = self.passed_pairs(&joined, &passed)?;
            self.emit(pairs, ChangeKind::Delete, out)?;
        }
        let mut partners = vec![0u64; data.num_rows()];
        let mut last: Vec<(Box<[u8]>, usize)> = Vec::new();
        for ((i, k, at), ok) in found.iter().zip(&passed) {
            if !*ok {
                continue;
            }
            partners[*i as usize] += 1;
            if let Some(entries) = self.sides[other].by_key.get_mut(&probed[*k]) {
                let e = &mut entries[*at];
                e.partners = e.partners.saturating_sub(1);
                if e.partners == 0 {
                    last.push((probed[*k].clone(), *at));
                }
            }
        }
        last.sort_unstable();
        last.dedup();
        self.emit_crossings(other, &last, ChangeKind::Delete, out)?;
        self.emit_arrivals(side, data, &held, &partners, ChangeKind::Delete, out)
    }

    /// Kept rows of `side` whose partner count crossed zero: up (`gained` = `+I`, their
    /// first partner) or down (`-D`, their last). An outer or anti side's padded row is
    /// retracted when it gains one and emitted again when it loses its last; a semi join's
    /// left row the other way round.
    fn emit_crossings(
        &self,
        side: usize,
        entries: &[(Box<[u8]>, usize)],
        gained: ChangeKind,
        out: &mut Output,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let kind = self.spec.kind;
        let change = match (kind, side) {
            (JoinKind::LeftSemi, 0) => gained,
            _ if kind.keeps_unmatched(side) => match gained {
                ChangeKind::Insert => ChangeKind::Delete,
                _ => ChangeKind::Insert,
            },
            _ => return Ok(()),
        };
        self.emit(self.padded_entries(side, entries)?, change, out)
    }

    /// Rows `run` of `side` arriving (`+I`) or leaving (`-D`) with `partners` each: an outer
    /// or anti side's rows without a partner go (padded), a semi join's left rows with one.
    fn emit_arrivals(
        &self,
        side: usize,
        data: &RecordBatch,
        run: &[u32],
        partners: &[u64],
        change: ChangeKind,
        out: &mut Output,
    ) -> Result<()> {
        let kind = self.spec.kind;
        let with_partner = match (kind, side) {
            (JoinKind::LeftSemi, 0) => true,
            _ if kind.keeps_unmatched(side) => false,
            _ => return Ok(()),
        };
        let selected: Vec<u32> = (run.iter().copied())
            .filter(|i| (partners[*i as usize] > 0) == with_partner)
            .collect();
        if selected.is_empty() {
            return Ok(());
        }
        self.emit(self.padded_rows(side, data, &selected)?, change, out)
    }
}

/// The runs of consecutive rows that are all insertions or all retractions, in order.
fn runs(retractions: &[bool]) -> Vec<(bool, Vec<u32>)> {
    let mut runs: Vec<(bool, Vec<u32>)> = Vec::new();
    for (i, r) in retractions.iter().enumerate() {
        match runs.last_mut() {
            Some((kind, rows)) if kind == r => rows.push(i as u32),
            _ => runs.push((*r, vec![i as u32])),
        }
    }
    runs
}

const SIDE_TABLES: [&str; 2] = ["left", "right"];

impl Operator for UpdatingJoin {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn output_mode(&self, inputs: &[StreamMode]) -> std::result::Result<StreamMode, String> {
        for (side, mode) in inputs.iter().enumerate() {
            if mode.is_updating() != self.spec.updating[side] {
                return Err(format!(
                    "the join was planned for a{} input {side}",
                    if self.spec.updating[side] {
                        "n updating"
                    } else {
                        "n append-only"
                    }
                ));
            }
        }
        Ok(StreamMode::Updating { key: Vec::new() })
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
        let (data, retractions) = self.split(input, batch)?;
        let (keys, valid) = self.key_rows(input, &data)?;
        for (retract, run) in runs(&retractions) {
            let batch = (&data, &keys, &valid[..]);
            match retract {
                true => self.retract(input, batch, &run, out)?,
                false => self.accumulate(input, batch, &run, out)?,
            }
        }
        Ok(())
    }

    fn process_watermark(&mut self, watermark: crate::Watermark, out: &mut Output) -> Result<()> {
        // The result has no event time; only idleness passes.
        if watermark == crate::Watermark::Idle {
            out.watermark(watermark);
        }
        Ok(())
    }

    fn on_tick(&mut self, _out: &mut Output) -> Result<()> {
        let Some(ttl) = self.ttl else { return Ok(()) };
        let now = processing_time_ms() as i64;
        let ttl = ttl.as_millis() as i64;
        if now - self.swept_at < (ttl / 4).max(100) {
            return Ok(());
        }
        self.swept_at = now;
        for side in &mut self.sides {
            let before = side.kept;
            side.by_key.retain(|_, entries| {
                entries.retain(|e| now - e.arrived < ttl);
                !entries.is_empty()
            });
            side.kept = side.by_key.values().map(Vec::len).sum();
            debug_assert!(side.kept <= before);
        }
        Ok(())
    }

    /// Each side's rows: their columns, then their partner counts and arrival times.
    fn snapshot(&mut self) -> Result<NodeState> {
        let mut state = NodeState::json(&())?;
        for (side, name) in SIDE_TABLES.iter().enumerate() {
            let s = &self.sides[side];
            if s.kept == 0 {
                continue;
            }
            let entries: Vec<&Entry> = s.by_key.values().flatten().collect();
            let mut columns = s.columns(entries.iter().map(|e| &e.row[..]))?;
            columns.push(Arc::new(
                entries.iter().map(|e| e.partners).collect::<UInt64Array>(),
            ));
            columns.push(Arc::new(
                entries.iter().map(|e| e.arrived).collect::<Int64Array>(),
            ));
            state = state.with_table(*name, generic_batch(columns)?);
        }
        Ok(state)
    }

    fn restore(&mut self, state: NodeState) -> Result<()> {
        for (side, name) in SIDE_TABLES.iter().enumerate() {
            self.sides[side] = Side::new(&self.spec.inputs[side])?;
            if let Some(table) = state.table(name) {
                self.restore_side(side, table)?;
            }
        }
        Ok(())
    }
}

impl UpdatingJoin {
    fn restore_side(&mut self, side: usize, table: &RecordBatch) -> Result<()> {
        let (data, extra) = saved_side(&self.spec.inputs[side], table, 2)?;
        let partners = (extra[0].as_primitive_opt::<UInt64Type>()).ok_or_else(state_changed)?;
        let arrived = (extra[1].as_primitive_opt::<Int64Type>()).ok_or_else(state_changed)?;
        let (keys, _) = self.key_rows(side, &data)?;
        let rows = self.sides[side].rows.convert_columns(data.columns())?;
        let s = &mut self.sides[side];
        for i in 0..data.num_rows() {
            let entry = Entry {
                row: Box::from(rows.row(i).data()),
                partners: partners.value(i),
                arrived: arrived.value(i),
            };
            s.by_key
                .entry(Box::from(keys.row(i).data()))
                .or_default()
                .push(entry);
            s.kept += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "updating_join_tests.rs"]
mod tests;
