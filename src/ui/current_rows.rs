//! The current rows of an updating sink, for the dashboard: its changelog applied by key,
//! the most recently changed rows kept.

use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::record_batch::RecordBatch;
use laketide_engine::{change_kinds, kind_at};
use serde_json::Value;

use super::rows::json_rows;

/// Rows by key, in the order they last changed; at most `capacity`, the least recently
/// changed dropped first.
#[derive(Debug)]
pub struct CurrentRows {
    /// The key's column indices (all data columns when the result has no known key).
    key: Vec<usize>,
    capacity: usize,
    /// Change number -> (key, row).
    rows: BTreeMap<u64, (String, Vec<Value>)>,
    /// Key -> its change number.
    by_key: HashMap<String, u64>,
    changes: u64,
}

impl CurrentRows {
    /// Rows keyed by the columns at `key` (empty: the whole row), at most `capacity`.
    pub fn new(key: Vec<usize>, capacity: usize) -> Self {
        CurrentRows {
            key,
            capacity,
            rows: BTreeMap::new(),
            by_key: HashMap::new(),
            changes: 0,
        }
    }

    /// Applies a batch of changes (its last column the change column): a retraction removes
    /// its key's row, an insert or update replaces it.
    pub fn apply(&mut self, batch: &RecordBatch) -> datafusion::arrow::error::Result<()> {
        let kinds = change_kinds(batch).map_err(|e| {
            datafusion::arrow::error::ArrowError::InvalidArgumentError(e.to_string())
        })?;
        let data: Vec<usize> = (0..batch.num_columns() - 1).collect();
        let rows = json_rows(&batch.project(&data)?)?;
        for (i, row) in rows.into_iter().enumerate() {
            let key = if self.key.is_empty() {
                Value::Array(row.clone()).to_string()
            } else {
                Value::Array(self.key.iter().map(|k| row[*k].clone()).collect()).to_string()
            };
            if let Some(old) = self.by_key.remove(&key) {
                self.rows.remove(&old);
            }
            let retract = kind_at(kinds, i)
                .map_err(|e| {
                    datafusion::arrow::error::ArrowError::InvalidArgumentError(e.to_string())
                })?
                .is_retraction();
            if !retract {
                self.changes += 1;
                self.by_key.insert(key.clone(), self.changes);
                self.rows.insert(self.changes, (key, row));
            }
        }
        while self.rows.len() > self.capacity {
            if let Some((_, (key, _))) = self.rows.pop_first() {
                self.by_key.remove(&key);
            }
        }
        Ok(())
    }

    /// The rows, least recently changed first.
    pub fn rows(&self) -> impl Iterator<Item = &Vec<Value>> {
        self.rows.values().map(|(_, r)| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use laketide_engine::{ChangeKind, change_array, schema_with_change};
    use std::sync::Arc;

    fn changes(keys: &[&str], values: &[i64], kinds: &[ChangeKind]) -> RecordBatch {
        let schema = schema_with_change(&Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(keys.to_vec())),
                Arc::new(Int64Array::from(values.to_vec())),
                Arc::new(change_array(kinds.iter().copied())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn a_changelog_leaves_the_current_row_per_key_most_recent_last() {
        use ChangeKind::*;
        let mut current = CurrentRows::new(vec![0], 2);
        current
            .apply(&changes(
                &["a", "b", "c"],
                &[1, 2, 3],
                &[Insert, Insert, Insert],
            ))
            .unwrap();
        current
            .apply(&changes(
                &["a", "a", "c"],
                &[1, 5, 3],
                &[UpdateBefore, UpdateAfter, Delete],
            ))
            .unwrap();
        let rows: Vec<String> = current
            .rows()
            .map(|r| Value::Array(r.clone()).to_string())
            .collect();
        assert_eq!(rows, vec![r#"["b",2]"#, r#"["a",5]"#]);
        current.apply(&changes(&["d"], &[9], &[Insert])).unwrap();
        let rows: Vec<String> = current
            .rows()
            .map(|r| Value::Array(r.clone()).to_string())
            .collect();
        assert_eq!(
            rows,
            vec![r#"["a",5]"#, r#"["d",9]"#],
            "b, the least recent, is dropped"
        );
    }
}
