//! The groups of a session aggregate, in generations: rows are folded into the current
//! generation, and the session they extend moves there, so a session is in the generation
//! of its last row (or where it last moved) and its groups in that one or older ones.
//! Sessions close roughly in the order of their last rows, so emitting closed sessions takes
//! out only the oldest generations, not every open group; the groups of sessions still open
//! there go back to a newer one. Each generation is one [`GroupedState`].

use std::collections::VecDeque;

use datafusion::arrow::array::{ArrayRef, UInt32Array};
use datafusion::arrow::compute::concat;
use datafusion::arrow::datatypes::SchemaRef;

use super::grouped_state::{GroupRows, GroupedState};
use super::window_aggregate::AggregateSpec;
use crate::error::Result;

/// A new generation starts once the current one holds this many groups.
pub(crate) const GENERATION_GROUPS: usize = 8192;

/// One generation of groups.
struct Generation {
    number: u64,
    state: GroupedState,
}

/// Generations of groups, oldest first; the last one is current.
pub(crate) struct Generations {
    /// Groups a generation takes before the next one starts.
    size: usize,
    key_schema: SchemaRef,
    aggregates: Vec<AggregateSpec>,
    live: VecDeque<Generation>,
    /// Groups taken out so far (emitted or put back), to check the work per emission.
    taken: u64,
}

impl Generations {
    /// One empty generation, numbered `first`.
    pub(crate) fn new(
        key_schema: SchemaRef,
        aggregates: Vec<AggregateSpec>,
        first: u64,
    ) -> Result<Self> {
        let state = GroupedState::new(key_schema.clone(), aggregates.clone())?;
        Ok(Generations {
            size: GENERATION_GROUPS,
            key_schema,
            aggregates,
            taken: 0,
            live: VecDeque::from([Generation {
                number: first,
                state,
            }]),
        })
    }

    /// Empty generations like these, the first numbered 0.
    pub(crate) fn fresh(&self) -> Result<Self> {
        let mut fresh = Self::new(self.key_schema.clone(), self.aggregates.clone(), 0)?;
        fresh.size = self.size;
        Ok(fresh)
    }

    /// Sets how many groups a generation takes (tests use tiny ones).
    #[cfg(test)]
    pub(crate) fn set_size(&mut self, size: usize) {
        self.size = size.max(1);
    }

    /// The generation new sessions join; it is rolled over first when it is full.
    pub(crate) fn current(&mut self) -> Result<u64> {
        let full = self.live.back().is_none_or(|g| g.state.len() >= self.size);
        if full {
            self.push_new()?;
        }
        Ok(self.newest())
    }

    fn newest(&self) -> u64 {
        self.live.back().map_or(0, |g| g.number)
    }

    fn push_new(&mut self) -> Result<u64> {
        let number = self.live.back().map_or(0, |g| g.number + 1);
        self.live.push_back(Generation {
            number,
            state: GroupedState::new(self.key_schema.clone(), self.aggregates.clone())?,
        });
        Ok(number)
    }

    /// Groups a generation takes before the next one starts.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Starts generations until the newest is numbered at least `number`.
    pub(crate) fn extend_to(&mut self, number: u64) -> Result<()> {
        while self.newest() < number {
            self.push_new()?;
        }
        Ok(())
    }

    /// Every group of every generation, leaving each generation as it was (for a checkpoint:
    /// taking a generation's states out empties it, so they are merged back).
    pub(crate) fn copy_all(&mut self) -> Result<GroupRows> {
        let mut all = Vec::with_capacity(self.live.len());
        for g in self.live.iter_mut() {
            let rows = g.state.take()?;
            g.state.merge(&rows)?;
            all.push(rows);
        }
        concat_rows(&all)
    }

    /// The oldest live generation's number.
    pub(crate) fn oldest(&self) -> u64 {
        self.live.front().map_or(self.newest(), |g| g.number)
    }

    /// Groups in all generations.
    pub(crate) fn len(&self) -> usize {
        self.live.iter().map(|g| g.state.len()).sum()
    }

    fn position(&self, number: u64) -> Option<usize> {
        let first = self.live.front()?.number;
        let i = number.checked_sub(first)? as usize;
        (i < self.live.len()).then_some(i)
    }

    /// Folds rows into generation `number`.
    pub(crate) fn update(
        &mut self,
        number: u64,
        keys: &[ArrayRef],
        args: &[Vec<ArrayRef>],
        filters: &[Option<ArrayRef>],
    ) -> Result<()> {
        let i = self.position(number).ok_or_else(|| missing(number))?;
        self.live[i].state.update(keys, args, filters)?;
        Ok(())
    }

    /// Takes out every generation numbered `through` or older, as one set of groups. If that
    /// includes the current one, a new current generation starts.
    pub(crate) fn take_through(&mut self, through: u64) -> Result<GroupRows> {
        let count = self.live.iter().take_while(|g| g.number <= through).count();
        let mut taken = Vec::with_capacity(count);
        for _ in 0..count {
            let mut g = self.live.pop_front().expect("counted");
            taken.push(g.state.take()?);
            if self.live.is_empty() {
                self.live.push_back(Generation {
                    number: g.number + 1,
                    state: g.state,
                });
            }
        }
        let rows = concat_rows(&taken)?;
        self.taken += rows.len() as u64;
        Ok(rows)
    }

    /// Groups taken out by [`Generations::take_through`] so far.
    #[cfg(test)]
    pub(crate) fn taken(&self) -> u64 {
        self.taken
    }

    /// Merges groups back: `generation[i]` is the live generation group `i` goes to.
    pub(crate) fn merge(&mut self, generation: &[u64], rows: &GroupRows) -> Result<()> {
        for (number, picked) in by_generation(generation) {
            let i = self.position(number).ok_or_else(|| missing(number))?;
            match picked {
                None => self.live[i].state.merge(rows)?,
                Some(picked) => self.live[i].state.merge(&rows.take(&picked)?)?,
            }
        }
        Ok(())
    }

    /// An empty table of groups like the generations', for emitting.
    pub(crate) fn empty_state(&self) -> Result<GroupedState> {
        GroupedState::new(self.key_schema.clone(), self.aggregates.clone())
    }

    /// The widths of each aggregate's intermediate state, for checkpoints.
    pub(crate) fn state_widths(&self) -> Result<Vec<usize>> {
        self.empty_state()?.state_widths()
    }
}

fn missing(number: u64) -> crate::error::EngineError {
    crate::error::EngineError::Internal(format!("session generation {number} is not live"))
}

/// The rows of each generation: `None` when every row is in it (the common case).
fn by_generation(generation: &[u64]) -> Vec<(u64, Option<UInt32Array>)> {
    let Some(&first) = generation.first() else {
        return Vec::new();
    };
    if generation.iter().all(|g| *g == first) {
        return vec![(first, None)];
    }
    let mut rows: Vec<(u64, Vec<u32>)> = Vec::new();
    for (i, g) in generation.iter().enumerate() {
        match rows.iter_mut().find(|(n, _)| n == g) {
            Some((_, r)) => r.push(i as u32),
            None => rows.push((*g, vec![i as u32])),
        }
    }
    rows.into_iter()
        .map(|(n, r)| (n, Some(UInt32Array::from(r))))
        .collect()
}

/// Several sets of groups as one.
fn concat_rows(parts: &[GroupRows]) -> Result<GroupRows> {
    let parts: Vec<&GroupRows> = parts.iter().filter(|p| p.len() > 0).collect();
    match parts.as_slice() {
        [] => Ok(GroupRows {
            keys: Vec::new(),
            states: Vec::new(),
        }),
        [one] => Ok((*one).clone()),
        _ => {
            let column = |get: &dyn Fn(&GroupRows) -> &ArrayRef| -> Result<ArrayRef> {
                let arrays: Vec<&dyn datafusion::arrow::array::Array> =
                    parts.iter().map(|p| get(p).as_ref()).collect();
                Ok(concat(&arrays)?)
            };
            let first = parts[0];
            let keys = (0..first.keys.len())
                .map(|k| column(&|p| &p.keys[k]))
                .collect::<Result<_>>()?;
            let states = (0..first.states.len())
                .map(|a| {
                    (0..first.states[a].len())
                        .map(|c| column(&|p| &p.states[a][c]))
                        .collect::<Result<Vec<_>>>()
                })
                .collect::<Result<_>>()?;
            Ok(GroupRows { keys, states })
        }
    }
}
