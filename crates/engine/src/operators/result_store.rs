//! Columnar values per key id, for operators that keep one current row per key (an updating
//! aggregate's intermediate states and last emitted results).
//!
//! Rows are written a batch at a time as a new chunk (Arrow arrays are immutable), and each
//! key id points at its current row. Superseded rows are garbage: when they outnumber the
//! live ones the store is compacted into one chunk, and when chunks pile up the small ones are
//! merged, so reads gather from a bounded number of chunks and memory stays within about
//! twice the live rows. Reading and writing cost is per key touched, never per key stored.

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::compute::interleave;

use crate::error::{EngineError, Result};

/// Chunks kept before the small ones are merged.
const MAX_CHUNKS: usize = 32;

/// Where a key's current row is: (chunk, row).
type Slot = (u32, u32);

#[derive(Debug, Default)]
pub(crate) struct ResultStore {
    /// Every chunk has the same columns; a chunk with no live rows is dropped (`None`).
    chunks: Vec<Option<Vec<ArrayRef>>>,
    /// Live rows per chunk.
    live: Vec<usize>,
    /// Rows per chunk (a store may have no columns at all).
    sizes: Vec<usize>,
    /// The current row of each key id, if it has one.
    slots: Vec<Option<Slot>>,
    /// Rows in all chunks, live or not.
    stored: usize,
}

impl ResultStore {
    /// Keys with a current row.
    pub(crate) fn len(&self) -> usize {
        self.live.iter().sum()
    }

    /// Whether key `id` has a current row.
    pub(crate) fn contains(&self, id: usize) -> bool {
        self.slots.get(id).is_some_and(Option::is_some)
    }

    /// The current rows of `ids` (each must have one), as columns in `ids` order.
    pub(crate) fn get(&self, ids: &[usize]) -> Result<Vec<ArrayRef>> {
        let picks = ids
            .iter()
            .map(|id| {
                self.slots
                    .get(*id)
                    .copied()
                    .flatten()
                    .map(|(c, r)| (c as usize, r as usize))
                    .ok_or_else(|| EngineError::Internal(format!("key {id} has no stored row")))
            })
            .collect::<Result<Vec<_>>>()?;
        self.gather(&picks)
    }

    /// Gathers (chunk, row) picks into columns.
    fn gather(&self, picks: &[(usize, usize)]) -> Result<Vec<ArrayRef>> {
        let Some(width) = self.width() else {
            return Ok(Vec::new());
        };
        // `interleave` takes a list of arrays: number the chunks that are still there.
        let mut numbered = vec![usize::MAX; self.chunks.len()];
        let mut present = Vec::new();
        for (i, chunk) in self.chunks.iter().enumerate() {
            if let Some(c) = chunk {
                numbered[i] = present.len();
                present.push(c);
            }
        }
        let picks: Vec<(usize, usize)> = picks.iter().map(|(c, r)| (numbered[*c], *r)).collect();
        (0..width)
            .map(|col| {
                let arrays: Vec<&dyn Array> = present.iter().map(|c| c[col].as_ref()).collect();
                Ok(interleave(&arrays, &picks)?)
            })
            .collect()
    }

    fn width(&self) -> Option<usize> {
        self.chunks.iter().flatten().next().map(Vec::len)
    }

    /// Adds a chunk of `rows` rows.
    fn push_chunk(&mut self, columns: Vec<ArrayRef>, rows: usize) {
        self.chunks.push(Some(columns));
        self.live.push(rows);
        self.sizes.push(rows);
        self.stored += rows;
    }

    /// Drops chunk `chunk` (its rows are dead or moved).
    fn drop_chunk(&mut self, chunk: usize) {
        if self.chunks[chunk].take().is_some() {
            self.stored -= self.sizes[chunk];
            self.live[chunk] = 0;
        }
    }

    /// Makes row `i` of `columns` the current row of `ids[i]`; `ids` are distinct.
    pub(crate) fn put(&mut self, ids: &[usize], columns: Vec<ArrayRef>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        if let Some(w) = self.width()
            && w != columns.len()
        {
            return Err(EngineError::Internal(format!(
                "storing {} columns in a store of {w}",
                columns.len()
            )));
        }
        if columns.iter().any(|c| c.len() != ids.len()) {
            return Err(EngineError::Internal(
                "stored columns and keys differ in length".into(),
            ));
        }
        let chunk = self.chunks.len() as u32;
        for (row, id) in ids.iter().enumerate() {
            if *id >= self.slots.len() {
                self.slots.resize(id + 1, None);
            }
            if let Some((old, _)) = self.slots[*id].replace((chunk, row as u32)) {
                self.release(old as usize);
            }
        }
        self.push_chunk(columns, ids.len());
        self.maintain()
    }

    /// Forgets the current row of `id` (a key dropped by the state TTL).
    pub(crate) fn remove(&mut self, id: usize) {
        if let Some(Some((chunk, _))) = self.slots.get(id).copied() {
            self.slots[id] = None;
            self.release(chunk as usize);
        }
    }

    fn release(&mut self, chunk: usize) {
        self.live[chunk] -= 1;
        if self.live[chunk] == 0 {
            self.drop_chunk(chunk);
        }
    }

    /// Compacts when garbage outnumbers live rows; merges small chunks when there are many.
    fn maintain(&mut self) -> Result<()> {
        let live = self.len();
        let chunks = self.chunks.iter().flatten().count();
        if self.stored > 2 * live.max(1024) {
            self.rewrite(|_| true)
        } else if chunks > MAX_CHUNKS {
            let largest = (0..self.chunks.len())
                .filter(|c| self.chunks[*c].is_some())
                .max_by_key(|c| self.live[*c])
                .expect("there are chunks");
            self.rewrite(|c| c != largest)
        } else {
            Ok(())
        }
    }

    /// Moves the live rows of the chunks `pick` selects into one new chunk.
    fn rewrite(&mut self, pick: impl Fn(usize) -> bool) -> Result<()> {
        let moving: Vec<(usize, Slot)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(id, s)| s.map(|s| (id, s)))
            .filter(|(_, (c, _))| pick(*c as usize))
            .collect();
        if moving.is_empty() {
            return Ok(());
        }
        let picks: Vec<(usize, usize)> = moving
            .iter()
            .map(|(_, (c, r))| (*c as usize, *r as usize))
            .collect();
        let columns = self.gather(&picks)?;
        let ids: Vec<usize> = moving.iter().map(|(id, _)| *id).collect();
        // All live rows of the picked chunks move, so the chunks go.
        for c in 0..self.chunks.len() {
            if pick(c) {
                self.drop_chunk(c);
            }
        }
        let chunk = self.chunks.len() as u32;
        for (row, id) in ids.iter().enumerate() {
            self.slots[*id] = Some((chunk, row as u32));
        }
        self.push_chunk(columns, ids.len());
        self.renumber();
        Ok(())
    }

    /// Drops the dropped chunks from the lists, so that their number stays bounded.
    fn renumber(&mut self) {
        let mut new_index = vec![u32::MAX; self.chunks.len()];
        let mut chunks = Vec::new();
        let mut live = Vec::new();
        let mut sizes = Vec::new();
        for (i, c) in self.chunks.drain(..).enumerate() {
            if let Some(c) = c {
                new_index[i] = chunks.len() as u32;
                chunks.push(Some(c));
                live.push(self.live[i]);
                sizes.push(self.sizes[i]);
            }
        }
        for slot in self.slots.iter_mut().flatten() {
            slot.0 = new_index[slot.0 as usize];
        }
        self.chunks = chunks;
        self.live = live;
        self.sizes = sizes;
    }

    /// Every key id with a current row, ascending, and those rows.
    pub(crate) fn all(&self) -> Result<(Vec<usize>, Vec<ArrayRef>)> {
        let (ids, picks): (Vec<usize>, Vec<(usize, usize)>) = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(id, s)| s.map(|(c, r)| (id, (c as usize, r as usize))))
            .unzip();
        Ok((ids, self.gather(&picks)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::Int64Type;
    use std::collections::HashMap;
    use std::sync::Arc;

    fn values(columns: &[ArrayRef]) -> Vec<i64> {
        columns[0].as_primitive::<Int64Type>().values().to_vec()
    }

    #[test]
    fn current_rows_survive_many_small_writes_and_compactions() {
        let mut store = ResultStore::default();
        let mut expected: HashMap<usize, i64> = HashMap::new();
        // 3000 writes of a few keys each, over 5000 keys: many chunks, much garbage.
        for step in 0..3000usize {
            let ids: Vec<usize> = (0..7).map(|k| (step * 31 + k * 977) % 5000).collect();
            let mut unique = ids.clone();
            unique.sort();
            unique.dedup();
            let vals: Vec<i64> = unique
                .iter()
                .map(|id| (step * 10_000 + id) as i64)
                .collect();
            store
                .put(&unique, vec![Arc::new(Int64Array::from(vals.clone()))])
                .unwrap();
            for (id, v) in unique.iter().zip(vals) {
                expected.insert(*id, v);
            }
            assert!(store.chunks.len() <= MAX_CHUNKS + 1);
        }
        assert_eq!(store.len(), expected.len());
        assert!(store.stored <= 2 * expected.len().max(1024) + 7);
        let mut ids: Vec<usize> = expected.keys().copied().collect();
        ids.sort();
        let got = values(&store.get(&ids).unwrap());
        let want: Vec<i64> = ids.iter().map(|id| expected[id]).collect();
        assert_eq!(got, want);
        let (all_ids, all) = store.all().unwrap();
        assert_eq!(all_ids, ids);
        assert_eq!(values(&all), want);
        assert!(store.get(&[5000]).is_err(), "a key never stored");
        store.remove(ids[0]);
        assert!(!store.contains(ids[0]));
        assert_eq!(store.len(), expected.len() - 1);
        assert!(store.get(&ids[..1]).is_err());
    }
}
