//! Applying changes to a Delta table keyed by `primary_key`: the net change per key of a
//! sequence of changes, and one MERGE that applies it.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{Column, HashMap};
use datafusion::logical_expr::{Expr, Operator, binary_expr, col, not};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitProperties;

use laketide_engine::{EngineError, Result, change_kinds, has_change_column, kind_at};

/// The column of a change batch that says the key's row is deleted.
pub(crate) const DELETE_COLUMN: &str = "__laketide_delete";

/// Rows of an append-only or updating stream as changes: the data columns and, last, whether
/// each row deletes its key (`-U` and `-D` do; `+I`, `+U` and append-only rows put it).
pub(crate) fn to_changes(batch: &RecordBatch) -> Result<RecordBatch> {
    let (data, deletes): (Vec<usize>, BooleanArray) = if has_change_column(batch.schema_ref()) {
        let kinds = change_kinds(batch)?;
        let deletes = (0..batch.num_rows())
            .map(|i| kind_at(kinds, i).map(|k| Some(k.is_retraction())))
            .collect::<Result<BooleanArray>>()?;
        ((0..batch.num_columns() - 1).collect(), deletes)
    } else {
        (
            (0..batch.num_columns()).collect(),
            BooleanArray::from(vec![false; batch.num_rows()]),
        )
    };
    let data = batch.project(&data)?;
    let schema = changes_schema(data.schema_ref());
    let mut columns = data.columns().to_vec();
    columns.push(Arc::new(deletes));
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The schema of change batches for rows of `data`.
pub(crate) fn changes_schema(data: &Schema) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = data.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(
        DELETE_COLUMN,
        DataType::Boolean,
        false,
    )));
    Arc::new(Schema::new(fields))
}

/// The last change of every key among `changes` (in order), one row per key.
pub(crate) fn net_changes(
    schema: &SchemaRef,
    changes: &[RecordBatch],
    key: &[String],
) -> Result<RecordBatch> {
    let all = concat_batches(schema, changes)?;
    if all.num_rows() == 0 {
        return Ok(all);
    }
    let key_columns: Vec<ArrayRef> = key
        .iter()
        .map(|k| {
            all.column_by_name(k).cloned().ok_or_else(|| {
                EngineError::Internal(format!("the key column `{k}` is not in the changes"))
            })
        })
        .collect::<Result<_>>()?;
    let converter = RowConverter::new(
        key_columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )?;
    let rows = converter.convert_columns(&key_columns)?;
    let mut last: HashMap<&[u8], u32> = HashMap::with_capacity(all.num_rows());
    for (i, row) in rows.iter().enumerate() {
        last.insert(row.data(), i as u32);
    }
    let mut keep: Vec<u32> = last.into_values().collect();
    keep.sort_unstable();
    let indices = UInt32Array::from(keep);
    let columns = all
        .columns()
        .iter()
        .map(|c| take(c.as_ref(), &indices, None))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(all.schema(), columns)?)
}

fn source(name: &str) -> Expr {
    Expr::Column(Column::new(Some("source"), name))
}

fn target(name: &str) -> Expr {
    Expr::Column(Column::new(Some("target"), name))
}

/// Applies `net` (the output of [`net_changes`]) to `table` in one MERGE committed with
/// `properties`: a key's row is deleted, replaced or inserted. Keys match with
/// `IS NOT DISTINCT FROM`, so a NULL key is a key like any other.
pub(crate) async fn merge(
    table: DeltaTable,
    net: RecordBatch,
    key: &[String],
    properties: CommitProperties,
) -> std::result::Result<DeltaTable, deltalake::DeltaTableError> {
    let data: Vec<String> = net
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| n != DELETE_COLUMN)
        .collect();
    let values: Vec<String> = data.iter().filter(|c| !key.contains(c)).cloned().collect();
    let predicate = key
        .iter()
        .map(|k| binary_expr(target(k), Operator::IsNotDistinctFrom, source(k)))
        .reduce(Expr::and)
        .expect("a primary key has columns");
    let ctx = SessionContext::new();
    let frame = ctx.read_batch(net)?;
    let deleted = || col(Column::new(Some("source"), DELETE_COLUMN));
    let mut builder = table
        .merge(frame, predicate)
        .with_source_alias("source")
        .with_target_alias("target")
        .with_commit_properties(properties)
        .when_matched_delete(|d| d.predicate(deleted()))?;
    if !values.is_empty() {
        builder = builder.when_matched_update(|u| {
            values.iter().fold(u.predicate(not(deleted())), |u, c| {
                u.update(Column::new_unqualified(c), source(c))
            })
        })?;
    }
    let builder = builder.when_not_matched_insert(|i| {
        data.iter().fold(i.predicate(not(deleted())), |i, c| {
            i.set(Column::new_unqualified(c), source(c))
        })
    })?;
    let (table, _metrics) = builder.await?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::Int64Type;
    use laketide_engine::{ChangeKind, change_array, schema_with_change};

    #[test]
    fn the_last_change_of_each_key_wins_across_batches() {
        let schema = schema_with_change(&Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let batch = |keys: Vec<Option<&str>>, values: Vec<i64>, kinds: Vec<ChangeKind>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(keys)),
                    Arc::new(Int64Array::from(values)),
                    Arc::new(change_array(kinds)),
                ],
            )
            .unwrap()
        };
        use ChangeKind::*;
        let changes = vec![
            to_changes(&batch(
                vec![Some("a"), None, Some("b")],
                vec![1, 2, 3],
                vec![Insert, Insert, Insert],
            ))
            .unwrap(),
            to_changes(&batch(
                vec![Some("a"), Some("a"), Some("b")],
                vec![1, 5, 3],
                vec![UpdateBefore, UpdateAfter, Delete],
            ))
            .unwrap(),
            to_changes(&batch(
                vec![None, None],
                vec![2, 7],
                vec![UpdateBefore, UpdateAfter],
            ))
            .unwrap(),
        ];
        let net = net_changes(&changes[0].schema(), &changes, &["k".to_string()]).unwrap();
        let keys: Vec<Option<&str>> = net.column(0).as_string::<i32>().iter().collect();
        let values: Vec<i64> = net.column(1).as_primitive::<Int64Type>().values().to_vec();
        let deletes: Vec<bool> = net
            .column(2)
            .as_boolean()
            .iter()
            .map(Option::unwrap)
            .collect();
        assert_eq!(keys, vec![Some("a"), Some("b"), None]);
        assert_eq!(values, vec![5, 3, 7]);
        assert_eq!(deletes, vec![false, true, false]);
    }
}
