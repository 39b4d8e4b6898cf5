//! Where a shard is read from: its start position or the last record delivered.

use serde::{Deserialize, Serialize};

use super::config::StartPosition;

/// The read position of one shard, as saved in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardPosition {
    /// Nothing delivered yet: start here.
    Initial(StartPosition),
    /// Resume after this record. `sub_sequence` is set when only the user records `0..=n` of a
    /// KPL aggregated record were delivered: reading resumes at the record and skips those.
    After {
        /// The Kinesis sequence number.
        sequence: String,
        /// The last delivered user record inside an aggregated record, if not all were.
        sub_sequence: Option<u64>,
    },
    /// The shard is closed and was read to its end.
    Finished,
}

/// How to ask Kinesis for an iterator at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IteratorStart {
    /// `LATEST`.
    Latest,
    /// `TRIM_HORIZON`.
    TrimHorizon,
    /// `AT_TIMESTAMP` (epoch milliseconds).
    AtTimestamp(i64),
    /// `AFTER_SEQUENCE_NUMBER`.
    After(String),
    /// `AT_SEQUENCE_NUMBER`, skipping the user records up to `skip_through` of that record.
    AtSkipping {
        /// The aggregated record to read again.
        sequence: String,
        /// Its last user record already delivered.
        skip_through: u64,
    },
}

impl ShardPosition {
    /// The iterator that continues from this position; `None` for a finished shard.
    pub fn iterator_start(&self) -> Option<IteratorStart> {
        Some(match self {
            ShardPosition::Initial(StartPosition::Latest) => IteratorStart::Latest,
            ShardPosition::Initial(StartPosition::TrimHorizon) => IteratorStart::TrimHorizon,
            ShardPosition::Initial(StartPosition::AtTimestamp(t)) => IteratorStart::AtTimestamp(*t),
            ShardPosition::After {
                sequence,
                sub_sequence: None,
            } => IteratorStart::After(sequence.clone()),
            ShardPosition::After {
                sequence,
                sub_sequence: Some(n),
            } => IteratorStart::AtSkipping {
                sequence: sequence.clone(),
                skip_through: *n,
            },
            ShardPosition::Finished => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_map_to_iterators() {
        let after = ShardPosition::After {
            sequence: "49".into(),
            sub_sequence: None,
        };
        assert_eq!(
            after.iterator_start(),
            Some(IteratorStart::After("49".into()))
        );
        let inside = ShardPosition::After {
            sequence: "49".into(),
            sub_sequence: Some(3),
        };
        assert_eq!(
            inside.iterator_start(),
            Some(IteratorStart::AtSkipping {
                sequence: "49".into(),
                skip_through: 3
            })
        );
        assert_eq!(ShardPosition::Finished.iterator_start(), None);
        let json = serde_json::to_string(&inside).unwrap();
        assert_eq!(
            serde_json::from_str::<ShardPosition>(&json).unwrap(),
            inside
        );
    }
}
