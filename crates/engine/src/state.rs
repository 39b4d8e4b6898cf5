//! Snapshots of node state: what a source, operator or sink saves in a checkpoint and gets back
//! on recovery. State is a set of named Arrow record batches, so that it is written as Arrow
//! IPC and can be inspected with any Arrow reader.

use std::sync::Arc;

use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::record_batch::RecordBatch;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{EngineError, Result};

/// The saved state of one node: named tables, written whole, and named keyed tables, which
/// may be written incrementally. An empty state means "nothing to restore".
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    tables: Vec<(String, RecordBatch)>,
    keyed: Vec<(String, KeyedTable)>,
}

/// What changed in a keyed table (one current row per key): the current rows of the keys
/// that changed, and the keys that were removed. Applying changes means removing the
/// `removed` keys, then putting the `rows` (a key both removed and changed again is in both).
#[derive(Debug, Clone)]
pub struct TableChanges {
    /// Current rows of the changed keys: the key columns first, then the operator's values.
    pub rows: RecordBatch,
    /// The key columns of the removed keys, if any were removed.
    pub removed: Option<RecordBatch>,
}

/// A keyed table in a snapshot or as restored. Large keyed state is saved incrementally: a
/// checkpoint writes the keys changed since the checkpoint its snapshot was based on
/// ([`crate::CheckpointBarrier::base`]), and its manifest refers to that checkpoint's files
/// for the rest, so the cost of a checkpoint follows what changed, not what is kept.
#[derive(Debug, Clone)]
pub enum KeyedTable {
    /// Every current row.
    Full(RecordBatch),
    /// What changed since the stored checkpoint `base` (which must be the barrier's base):
    /// the table of this checkpoint is `base`'s table with these changes applied.
    Delta {
        /// The checkpoint whose table this extends.
        base: u64,
        /// The changes since it.
        changes: TableChanges,
    },
    /// As restored from checkpoint `checkpoint`: the full table as the first part (with no
    /// removals), then the changes of later checkpoints, oldest first. Applying them in order
    /// gives the saved table. The next snapshot may be a delta against `checkpoint`.
    Restored {
        /// The checkpoint restored from.
        checkpoint: u64,
        /// The parts, oldest first.
        parts: Vec<TableChanges>,
    },
}

impl KeyedTable {
    /// The parts to apply in order, for a restore: a full table or a delta is one part.
    pub fn parts(&self) -> Vec<TableChanges> {
        match self {
            KeyedTable::Restored { parts, .. } => parts.clone(),
            KeyedTable::Delta { changes, .. } => vec![changes.clone()],
            KeyedTable::Full(rows) => vec![TableChanges {
                rows: rows.clone(),
                removed: None,
            }],
        }
    }
}

/// Name of the table that [`NodeState::json`] writes.
const JSON_TABLE: &str = "json";

impl NodeState {
    /// A state with no tables.
    pub fn empty() -> Self {
        Self::default()
    }

    /// True when the node saved nothing.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.keyed.is_empty()
    }

    /// Adds a keyed table. Names are unique within a node's keyed tables; adding a name twice
    /// replaces it.
    pub fn with_keyed_table(mut self, name: impl Into<String>, table: KeyedTable) -> Self {
        let name = name.into();
        self.keyed.retain(|(n, _)| *n != name);
        self.keyed.push((name, table));
        self
    }

    /// The keyed table called `name`, if saved.
    pub fn keyed_table(&self, name: &str) -> Option<&KeyedTable> {
        self.keyed.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// All keyed tables, in the order they were added.
    pub fn keyed_tables(&self) -> &[(String, KeyedTable)] {
        &self.keyed
    }

    /// Adds a table. Names are unique within a node; adding a name twice replaces it.
    pub fn with_table(mut self, name: impl Into<String>, batch: RecordBatch) -> Self {
        let name = name.into();
        self.tables.retain(|(n, _)| *n != name);
        self.tables.push((name, batch));
        self
    }

    /// A state holding one serde value (source positions, sink commit lists), stored as a
    /// one-row table with a JSON text column.
    pub fn json(value: &impl Serialize) -> Result<Self> {
        let text = serde_json::to_string(value)
            .map_err(|e| EngineError::Internal(format!("serializing state: {e}")))?;
        let schema = Arc::new(Schema::new(vec![Field::new(
            "value",
            DataType::Utf8,
            false,
        )]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec![text]))])?;
        Ok(Self::empty().with_table(JSON_TABLE, batch))
    }

    /// Reads back a value saved with [`NodeState::json`]; `None` when the state is empty.
    pub fn to_json<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        let Some(batch) = self.table(JSON_TABLE) else {
            return Ok(None);
        };
        let column = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .filter(|c| c.len() == 1)
            .ok_or_else(|| EngineError::Internal("a JSON state table has one text row".into()))?;
        serde_json::from_str(column.value(0))
            .map(Some)
            .map_err(|e| EngineError::User(format!("the checkpoint's state cannot be read: {e}")))
    }

    /// Fails unless the state is empty: for nodes that keep no state and are given some.
    pub fn expect_empty(&self, node: &str) -> Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(EngineError::Internal(format!(
                "{node} keeps no state but was given some to restore"
            )))
        }
    }

    /// The table called `name`, if saved.
    pub fn table(&self, name: &str) -> Option<&RecordBatch> {
        self.tables.iter().find(|(n, _)| n == name).map(|(_, b)| b)
    }

    /// All tables, in the order they were added.
    pub fn tables(&self) -> &[(String, RecordBatch)] {
        &self.tables
    }
}

/// Encodes one table as an Arrow IPC file.
pub(crate) fn encode_ipc(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    {
        let mut writer = FileWriter::try_new(&mut bytes, batch.schema_ref())?;
        writer.write(batch)?;
        writer.finish()?;
    }
    Ok(bytes)
}

/// Decodes a table written by [`encode_ipc`].
pub(crate) fn decode_ipc(bytes: Vec<u8>) -> Result<RecordBatch> {
    let reader = FileReader::try_new(std::io::Cursor::new(bytes), None)?;
    let schema = reader.schema();
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(datafusion::arrow::compute::concat_batches(
        &schema, &batches,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;

    #[test]
    fn json_state_round_trips() {
        let state = NodeState::json(&vec![("a".to_string(), 3u64)]).unwrap();
        let back: Vec<(String, u64)> = state.to_json().unwrap().unwrap();
        assert_eq!(back, vec![("a".to_string(), 3)]);
        assert!(NodeState::empty().to_json::<u64>().unwrap().is_none());
    }

    #[test]
    fn ipc_round_trips_a_table() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![Some(1), None]))],
        )
        .unwrap();
        let back = decode_ipc(encode_ipc(&batch).unwrap()).unwrap();
        assert_eq!(back, batch);
    }
}
