//! Which shards to read, from where, and when: children of a split or merge are read only
//! after all their parents were read to the end, so records of one partition key stay in
//! order across resharding.

use std::collections::BTreeMap;

use super::config::StartPosition;
use super::position::ShardPosition;

/// A shard as listed by ListShards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// The shard id.
    pub id: String,
    /// `ParentShardId` and `AdjacentParentShardId`, when present.
    pub parents: Vec<String>,
    /// Whether the shard has an ending sequence number (it was split or merged).
    pub closed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Known, waiting for its parents.
    Waiting,
    /// Handed to a reader.
    Reading,
    /// Read to its end (or never to be read).
    Finished,
}

#[derive(Debug)]
struct Tracked {
    parents: Vec<String>,
    status: Status,
    /// Read from `LATEST` (its saved position is the time it started, for restarts).
    latest: bool,
}

/// The source's view of a stream's shards: their status and delivered positions.
#[derive(Debug)]
pub struct ShardTracker {
    start: StartPosition,
    shards: BTreeMap<String, Tracked>,
    positions: BTreeMap<String, ShardPosition>,
    listed_once: bool,
}

impl ShardTracker {
    /// A tracker that starts new shards at `start`, or resumes `saved` positions.
    pub fn new(start: StartPosition, saved: BTreeMap<String, ShardPosition>) -> Self {
        ShardTracker {
            start,
            shards: BTreeMap::new(),
            positions: saved,
            listed_once: false,
        }
    }

    /// Takes in a shard listing and decides the start position of shards seen for the first
    /// time. At the first listing, with `latest`, closed shards are skipped (nothing will be
    /// written to them) and open ones start at `LATEST`, recorded as the current time so that a
    /// restart before any record arrived does not skip records; shards that appear later are
    /// children of shards being read and start at `TRIM_HORIZON`. A saved position always wins.
    pub fn update(&mut self, listing: &[ShardInfo], now_millis: i64) {
        let first = !self.listed_once;
        let resuming = first && !self.positions.is_empty();
        self.listed_once = true;
        for shard in listing {
            if self.shards.contains_key(&shard.id) {
                continue;
            }
            let position = match self.positions.get(&shard.id) {
                Some(saved) => saved.clone(),
                None if !first || resuming => ShardPosition::Initial(StartPosition::TrimHorizon),
                None => match self.start {
                    StartPosition::Latest if shard.closed => ShardPosition::Finished,
                    StartPosition::Latest => {
                        ShardPosition::Initial(StartPosition::AtTimestamp(now_millis))
                    }
                    other => ShardPosition::Initial(other),
                },
            };
            let latest = first
                && !resuming
                && self.start == StartPosition::Latest
                && !self.positions.contains_key(&shard.id)
                && !shard.closed;
            let status = if position == ShardPosition::Finished {
                Status::Finished
            } else {
                Status::Waiting
            };
            self.positions.insert(shard.id.clone(), position);
            self.shards.insert(
                shard.id.clone(),
                Tracked {
                    parents: shard.parents.clone(),
                    status,
                    latest,
                },
            );
        }
        // Positions of shards that no longer exist (past the retention period) are dropped.
        self.positions.retain(|id, _| self.shards.contains_key(id));
    }

    /// Shards whose parents are all finished (or gone), marked as being read, with the position
    /// to read from. At the first listing with `latest`, open shards start at `LATEST` itself.
    pub fn take_ready(&mut self) -> Vec<(String, ShardPosition)> {
        let finished = |id: &String, shards: &BTreeMap<String, Tracked>| {
            shards.get(id).is_none_or(|t| t.status == Status::Finished)
        };
        let ready: Vec<String> = self
            .shards
            .iter()
            .filter(|(_, t)| t.status == Status::Waiting)
            .filter(|(_, t)| t.parents.iter().all(|p| finished(p, &self.shards)))
            .map(|(id, _)| id.clone())
            .collect();
        ready
            .into_iter()
            .map(|id| {
                let saved = self
                    .positions
                    .get(&id)
                    .cloned()
                    .unwrap_or(ShardPosition::Initial(StartPosition::TrimHorizon));
                let position = match self.shards.get_mut(&id) {
                    Some(t) => {
                        t.status = Status::Reading;
                        let untouched = matches!(saved, ShardPosition::Initial(_));
                        if t.latest && untouched {
                            ShardPosition::Initial(StartPosition::Latest)
                        } else {
                            saved
                        }
                    }
                    None => saved,
                };
                (id, position)
            })
            .collect()
    }

    /// Records that everything up to `position` of `shard` was delivered downstream.
    pub fn delivered(&mut self, shard: &str, position: ShardPosition) {
        self.positions.insert(shard.to_string(), position);
    }

    /// Records that `shard` was read to its end.
    pub fn finished(&mut self, shard: &str) {
        if let Some(t) = self.shards.get_mut(shard) {
            t.status = Status::Finished;
        }
        self.positions
            .insert(shard.to_string(), ShardPosition::Finished);
    }

    /// Every known shard's position: what a checkpoint saves.
    pub fn positions(&self) -> &BTreeMap<String, ShardPosition> {
        &self.positions
    }

    /// Shards being read.
    pub fn reading(&self) -> usize {
        self.shards
            .values()
            .filter(|t| t.status == Status::Reading)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parents: &[&str], closed: bool) -> ShardInfo {
        ShardInfo {
            id: id.into(),
            parents: parents.iter().map(|p| p.to_string()).collect(),
            closed,
        }
    }

    fn ids(ready: &[(String, ShardPosition)]) -> Vec<&str> {
        ready.iter().map(|(id, _)| id.as_str()).collect()
    }

    #[test]
    fn children_wait_for_every_parent() {
        let mut t = ShardTracker::new(StartPosition::TrimHorizon, BTreeMap::new());
        // s0 and s1 merged into s2; s2 split into s3 and s4.
        t.update(
            &[
                shard("s0", &[], true),
                shard("s1", &[], true),
                shard("s2", &["s0", "s1"], true),
                shard("s3", &["s2"], false),
                shard("s4", &["s2"], false),
            ],
            0,
        );
        assert_eq!(ids(&t.take_ready()), vec!["s0", "s1"]);
        t.finished("s0");
        assert!(t.take_ready().is_empty(), "s2 still waits for s1");
        t.finished("s1");
        let ready = t.take_ready();
        assert_eq!(ids(&ready), vec!["s2"]);
        assert_eq!(
            ready[0].1,
            ShardPosition::Initial(StartPosition::TrimHorizon)
        );
        t.finished("s2");
        assert_eq!(ids(&t.take_ready()), vec!["s3", "s4"]);
        assert_eq!(t.reading(), 2);
    }

    #[test]
    fn latest_skips_closed_shards_and_reads_later_children_from_their_start() {
        let mut t = ShardTracker::new(StartPosition::Latest, BTreeMap::new());
        t.update(
            &[shard("old", &[], true), shard("a", &["old"], false)],
            1000,
        );
        let ready = t.take_ready();
        assert_eq!(ids(&ready), vec!["a"]);
        assert_eq!(ready[0].1, ShardPosition::Initial(StartPosition::Latest));
        assert_eq!(
            t.positions()["a"],
            ShardPosition::Initial(StartPosition::AtTimestamp(1000)),
            "a restart before any record reads from the start time"
        );
        assert_eq!(t.positions()["old"], ShardPosition::Finished);
        // `a` is split while running.
        t.update(
            &[
                shard("old", &[], true),
                shard("a", &["old"], true),
                shard("b", &["a"], false),
            ],
            2000,
        );
        assert!(t.take_ready().is_empty());
        t.finished("a");
        let ready = t.take_ready();
        assert_eq!(
            ready[0].1,
            ShardPosition::Initial(StartPosition::TrimHorizon)
        );
    }

    #[test]
    fn saved_positions_win_and_vanished_shards_are_forgotten() {
        let saved = BTreeMap::from([
            (
                "a".to_string(),
                ShardPosition::After {
                    sequence: "7".into(),
                    sub_sequence: Some(2),
                },
            ),
            ("gone".to_string(), ShardPosition::Finished),
        ]);
        let mut t = ShardTracker::new(StartPosition::Latest, saved);
        t.update(&[shard("a", &[], false), shard("new", &[], false)], 0);
        let ready = t.take_ready();
        assert_eq!(
            ready,
            vec![
                (
                    "a".to_string(),
                    ShardPosition::After {
                        sequence: "7".into(),
                        sub_sequence: Some(2)
                    }
                ),
                (
                    "new".to_string(),
                    ShardPosition::Initial(StartPosition::TrimHorizon)
                ),
            ]
        );
        assert!(!t.positions().contains_key("gone"));
        t.delivered(
            "a",
            ShardPosition::After {
                sequence: "9".into(),
                sub_sequence: None,
            },
        );
        assert_eq!(
            t.positions()["a"],
            ShardPosition::After {
                sequence: "9".into(),
                sub_sequence: None
            }
        );
    }
}
