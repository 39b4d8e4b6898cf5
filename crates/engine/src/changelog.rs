//! Changelog streams: what an updating edge carries and how modes are declared.
//!
//! A batch on an *updating* edge has one extra, last column, [`CHANGE_COLUMN`] (`Int8`, never
//! null), holding each row's [`ChangeKind`]. An update is a [`ChangeKind::UpdateBefore`] row
//! followed by its [`ChangeKind::UpdateAfter`] row in the same batch. Append-only edges carry
//! no such column. See `docs/design.md` §1.

use std::sync::Arc;

use datafusion::arrow::array::{Array, Int8Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema};
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{EngineError, Result};

/// The name of the last column of an updating stream's batches.
pub const CHANGE_COLUMN: &str = "_change";

/// What a row of an updating stream does to the current result (Flink's `RowKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i8)]
pub enum ChangeKind {
    /// `+I`: a new row.
    Insert = 0,
    /// `-U`: the previous version of a row that changes; its `+U` follows in the same batch.
    UpdateBefore = 1,
    /// `+U`: the new version of a row that changed.
    UpdateAfter = 2,
    /// `-D`: the row is gone.
    Delete = 3,
}

impl ChangeKind {
    /// Every kind, in code order.
    pub const ALL: [ChangeKind; 4] = [
        ChangeKind::Insert,
        ChangeKind::UpdateBefore,
        ChangeKind::UpdateAfter,
        ChangeKind::Delete,
    ];

    /// The kind stored as `code` in [`CHANGE_COLUMN`].
    pub fn from_code(code: i8) -> Option<ChangeKind> {
        ChangeKind::ALL.get(usize::try_from(code).ok()?).copied()
    }

    /// The code stored in [`CHANGE_COLUMN`].
    pub fn code(self) -> i8 {
        self as i8
    }

    /// Whether the row takes a row out of the result (`-U`, `-D`).
    pub fn is_retraction(self) -> bool {
        matches!(self, ChangeKind::UpdateBefore | ChangeKind::Delete)
    }

    /// Flink's short form: `+I`, `-U`, `+U`, `-D`.
    pub fn short_name(self) -> &'static str {
        match self {
            ChangeKind::Insert => "+I",
            ChangeKind::UpdateBefore => "-U",
            ChangeKind::UpdateAfter => "+U",
            ChangeKind::Delete => "-D",
        }
    }

    /// The name sinks write in their `op` column: `insert`, `update_before`, `update_after`,
    /// `delete`.
    pub fn op_name(self) -> &'static str {
        match self {
            ChangeKind::Insert => "insert",
            ChangeKind::UpdateBefore => "update_before",
            ChangeKind::UpdateAfter => "update_after",
            ChangeKind::Delete => "delete",
        }
    }
}

/// What a node emits: final rows, or rows that later change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StreamMode {
    /// Every row is an insert and final; batches carry no change column.
    #[default]
    AppendOnly,
    /// Rows carry [`CHANGE_COLUMN`] last. `key` holds the column indices that are unique among
    /// the current rows (the GROUP BY keys of an aggregate), or is empty when no key is known.
    Updating {
        /// Indices of the key columns among the batch's columns.
        key: Vec<usize>,
    },
}

impl StreamMode {
    /// Whether rows carry a change column.
    pub fn is_updating(&self) -> bool {
        matches!(self, StreamMode::Updating { .. })
    }

    /// The key columns of an updating stream (empty for append-only streams).
    pub fn key(&self) -> &[usize] {
        match self {
            StreamMode::AppendOnly => &[],
            StreamMode::Updating { key } => key,
        }
    }
}

/// The change column's field.
pub fn change_field() -> FieldRef {
    Arc::new(Field::new(CHANGE_COLUMN, DataType::Int8, false))
}

/// `fields` followed by the change column.
pub fn schema_with_change(fields: &Schema) -> Arc<Schema> {
    let mut all: Vec<FieldRef> = fields.fields().iter().cloned().collect();
    all.push(change_field());
    Arc::new(Schema::new_with_metadata(all, fields.metadata().clone()))
}

/// Whether `schema` ends with the change column.
pub fn has_change_column(schema: &Schema) -> bool {
    schema
        .fields()
        .last()
        .is_some_and(|f| f.name() == CHANGE_COLUMN && f.data_type() == &DataType::Int8)
}

/// The change column of an updating stream's batch (its last column).
pub fn change_kinds(batch: &RecordBatch) -> Result<&Int8Array> {
    if !has_change_column(batch.schema_ref()) {
        return Err(EngineError::Internal(format!(
            "a batch of an updating stream has no `{CHANGE_COLUMN}` column last"
        )));
    }
    let column = batch
        .column(batch.num_columns() - 1)
        .as_any()
        .downcast_ref::<Int8Array>()
        .expect("checked to be Int8");
    if column.null_count() > 0 {
        return Err(EngineError::Internal(format!(
            "`{CHANGE_COLUMN}` holds nulls"
        )));
    }
    Ok(column)
}

/// The kind of row `row` of a change column, checked.
pub fn kind_at(kinds: &Int8Array, row: usize) -> Result<ChangeKind> {
    let code = kinds.value(row);
    ChangeKind::from_code(code).ok_or_else(|| {
        EngineError::Internal(format!("`{CHANGE_COLUMN}` holds the unknown code {code}"))
    })
}

/// A change column of `kinds`.
pub fn change_array(kinds: impl IntoIterator<Item = ChangeKind>) -> Int8Array {
    Int8Array::from_iter_values(kinds.into_iter().map(ChangeKind::code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_refused() {
        for kind in ChangeKind::ALL {
            assert_eq!(ChangeKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(ChangeKind::from_code(4), None);
        assert_eq!(ChangeKind::from_code(-1), None);
        let kinds = Int8Array::from(vec![0, 7]);
        assert!(kind_at(&kinds, 1).is_err());
    }

    #[test]
    fn a_batch_without_the_change_column_is_refused() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int8, false)]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int8Array::from(vec![1]))]).unwrap();
        assert!(change_kinds(&batch).is_err());
        let with = schema_with_change(&schema);
        let batch = RecordBatch::try_new(
            with,
            vec![
                Arc::new(Int8Array::from(vec![1])),
                Arc::new(change_array([ChangeKind::Delete])),
            ],
        )
        .unwrap();
        assert_eq!(
            kind_at(change_kinds(&batch).unwrap(), 0).unwrap(),
            ChangeKind::Delete
        );
    }
}
