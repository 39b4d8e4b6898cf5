//! The state of session windows: per key, the open sessions as time intervals with the rows
//! they hold, a timer queue of session ends, and the buffered batches those rows live in.
//! Adding a row costs a hash lookup and a look at the key's few open sessions; closing a
//! session gathers its rows with one `interleave` per column. Nothing is re-sorted.

use std::collections::{BTreeSet, HashMap};

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::compute::interleave;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::Rows;

use crate::error::Result;

/// A buffered row: (batch slot, row in that batch).
type RowRef = (u32, u32);

/// One session: `[start, end)` where `end` is the last row's time plus the gap.
#[derive(Debug)]
pub(crate) struct Session {
    key: u32,
    pub(crate) start: i64,
    pub(crate) end: i64,
    rows: Vec<RowRef>,
}

impl Session {
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Sessions {
    gap: i64,
    keys: HashMap<Box<[u8]>, u32>,
    /// Open session slots per key (a key rarely has more than one or two).
    open: HashMap<u32, Vec<usize>>,
    slots: Vec<Option<Session>>,
    free: Vec<usize>,
    timers: BTreeSet<(i64, usize)>,
    batches: Vec<Option<RecordBatch>>,
    live: Vec<u32>,
    live_rows: usize,
    stored_rows: usize,
}

impl Sessions {
    pub(crate) fn new(gap: i64) -> Self {
        Sessions {
            gap,
            ..Default::default()
        }
    }

    #[cfg(test)]
    pub(crate) fn stored_rows_for_test(&self) -> usize {
        self.stored_rows
    }

    /// Rows held by open sessions.
    pub(crate) fn buffered_rows(&self) -> usize {
        self.live_rows
    }

    /// Adds the rows of `batch` with their times and (optional) keys.
    pub(crate) fn add(&mut self, batch: RecordBatch, times: &[i64], keys: Option<&Rows>) {
        let slot = self.batches.len() as u32;
        let n = batch.num_rows();
        self.batches.push(Some(batch));
        self.live.push(n as u32);
        self.live_rows += n;
        self.stored_rows += n;
        for (row, t) in times.iter().enumerate() {
            let key = match keys {
                None => 0,
                Some(rows) => {
                    let bytes = rows.row(row);
                    match self.keys.get(bytes.as_ref()) {
                        Some(k) => *k,
                        None => {
                            let k = self.keys.len() as u32;
                            self.keys.insert(bytes.as_ref().into(), k);
                            k
                        }
                    }
                }
            };
            self.insert(key, *t, (slot, row as u32));
        }
    }

    fn insert(&mut self, key: u32, t: i64, row: RowRef) {
        let gap = self.gap;
        let Sessions {
            open,
            slots,
            free,
            timers,
            ..
        } = self;
        let list = open.entry(key).or_default();
        let mut target: Option<usize> = None;
        let mut i = 0;
        while i < list.len() {
            let slot = list[i];
            let s = slots[slot].as_ref().expect("open sessions have slots");
            if t < s.end && t + gap > s.start {
                match target {
                    None => {
                        target = Some(slot);
                        i += 1;
                    }
                    Some(into) => {
                        // The row bridges two sessions: merge this one into the first.
                        let merged = slots[slot].take().expect("checked above");
                        timers.remove(&(merged.end, slot));
                        free.push(slot);
                        list.swap_remove(i);
                        let s = slots[into].as_mut().expect("target is open");
                        timers.remove(&(s.end, into));
                        s.start = s.start.min(merged.start);
                        s.end = s.end.max(merged.end);
                        s.rows.extend(merged.rows);
                        timers.insert((s.end, into));
                    }
                }
            } else {
                i += 1;
            }
        }
        match target {
            Some(slot) => {
                let s = slots[slot].as_mut().expect("target is open");
                if t + gap > s.end {
                    timers.remove(&(s.end, slot));
                    s.end = t + gap;
                    timers.insert((s.end, slot));
                }
                s.start = s.start.min(t);
                s.rows.push(row);
            }
            None => {
                let session = Session {
                    key,
                    start: t,
                    end: t + gap,
                    rows: vec![row],
                };
                let slot = match free.pop() {
                    Some(s) => {
                        slots[s] = Some(session);
                        s
                    }
                    None => {
                        slots.push(Some(session));
                        slots.len() - 1
                    }
                };
                timers.insert((t + gap, slot));
                list.push(slot);
            }
        }
    }

    /// The earliest end of an open session.
    pub(crate) fn earliest_end(&self) -> Option<i64> {
        self.timers.first().map(|(end, _)| *end)
    }

    /// Removes and returns the sessions ending at or before `watermark` (all for `None`).
    pub(crate) fn close(&mut self, watermark: Option<i64>) -> Vec<Session> {
        let mut closed = Vec::new();
        while let Some(&(end, slot)) = self.timers.first() {
            if watermark.is_some_and(|w| end > w) {
                break;
            }
            self.timers.pop_first();
            let session = self.slots[slot]
                .take()
                .expect("timers point at open sessions");
            self.free.push(slot);
            if let Some(list) = self.open.get_mut(&session.key) {
                list.retain(|s| *s != slot);
                if list.is_empty() {
                    self.open.remove(&session.key);
                }
            }
            closed.push(session);
        }
        closed
    }

    /// The columns of the rows of `sessions`, in session order, releasing their storage.
    pub(crate) fn take_rows(&mut self, sessions: &[Session]) -> Result<Vec<ArrayRef>> {
        let order: Vec<RowRef> = sessions
            .iter()
            .flat_map(|s| s.rows.iter().copied())
            .collect();
        let columns = self.gather(&order)?;
        for (slot, _) in &order {
            let live = &mut self.live[*slot as usize];
            *live -= 1;
            if *live == 0
                && let Some(b) = self.batches[*slot as usize].take()
            {
                self.stored_rows -= b.num_rows();
            }
        }
        self.live_rows -= order.len();
        self.compact_if_sparse()?;
        Ok(columns)
    }

    /// The columns of every row held by an open session (for a checkpoint); `None` when no
    /// row is held. The state is left as it is.
    pub(crate) fn held_rows(&self) -> Result<Option<Vec<ArrayRef>>> {
        let rows: Vec<RowRef> = self
            .slots
            .iter()
            .flatten()
            .flat_map(|s| s.rows.iter().copied())
            .collect();
        if rows.is_empty() {
            return Ok(None);
        }
        self.gather(&rows).map(Some)
    }

    fn gather(&self, rows: &[RowRef]) -> Result<Vec<ArrayRef>> {
        let mut positions: HashMap<u32, usize> = HashMap::new();
        let mut used: Vec<&RecordBatch> = Vec::new();
        let indices: Vec<(usize, usize)> = rows
            .iter()
            .map(|(slot, row)| {
                let p = *positions.entry(*slot).or_insert_with(|| {
                    used.push(
                        self.batches[*slot as usize]
                            .as_ref()
                            .expect("live rows keep their batch"),
                    );
                    used.len() - 1
                });
                (p, *row as usize)
            })
            .collect();
        let width = used.first().map_or(0, |b| b.num_columns());
        (0..width)
            .map(|c| {
                let arrays: Vec<&dyn Array> = used.iter().map(|b| b.column(c).as_ref()).collect();
                Ok(interleave(&arrays, &indices)?)
            })
            .collect()
    }

    /// Rewrites the live rows into one batch when most stored rows are already emitted, so
    /// that a long session cannot pin many mostly-emitted batches.
    fn compact_if_sparse(&mut self) -> Result<()> {
        if self.stored_rows <= 2 * self.live_rows + 8192 || self.live_rows == 0 {
            return Ok(());
        }
        let schema = match self.batches.iter().flatten().next() {
            Some(b) => b.schema(),
            None => return Ok(()),
        };
        let mut order: Vec<RowRef> = Vec::with_capacity(self.live_rows);
        for session in self.slots.iter_mut().flatten() {
            for row in session.rows.iter_mut() {
                order.push(*row);
                *row = (0, (order.len() - 1) as u32);
            }
        }
        let columns = self.gather(&order)?;
        let batch = RecordBatch::try_new(schema, columns)?;
        self.stored_rows = batch.num_rows();
        self.live = vec![batch.num_rows() as u32];
        self.batches = vec![Some(batch)];
        Ok(())
    }
}
