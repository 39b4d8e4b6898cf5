//! Row plumbing the two join operators share (`interval_join`, `updating_join`): join keys in
//! Arrow's row format, kept rows back to columns, NULL padding, and the change column.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, new_null_array};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::physical_expr::PhysicalExpr;

use crate::changelog::{ChangeKind, change_array};
use crate::error::{EngineError, Result};

/// The row converter of a join's keys, checking that both sides' keys (over `inputs`) are
/// equal in number and type.
pub(super) fn key_converter(
    keys: &[Vec<Arc<dyn PhysicalExpr>>; 2],
    inputs: &[SchemaRef; 2],
) -> Result<RowConverter> {
    let types = |side: usize| -> Result<Vec<DataType>> {
        (keys[side].iter())
            .map(|k| Ok(k.data_type(&inputs[side])?))
            .collect()
    };
    let (left, right) = (types(0)?, types(1)?);
    if left != right || left.is_empty() {
        return Err(EngineError::Internal(format!(
            "join keys must be equal in number and type: {left:?} and {right:?}"
        )));
    }
    Ok(RowConverter::new(
        left.into_iter().map(SortField::new).collect(),
    )?)
}

/// The join keys of every row of `batch` (row format), and which rows have one (no NULL
/// part: a NULL key matches nothing).
pub(super) fn key_rows(
    keys: &[Arc<dyn PhysicalExpr>],
    converter: &RowConverter,
    batch: &RecordBatch,
) -> Result<(Rows, Vec<bool>)> {
    let arrays: Vec<ArrayRef> = (keys.iter())
        .map(|k| k.evaluate(batch)?.into_array(batch.num_rows()))
        .collect::<std::result::Result<_, _>>()?;
    let mut valid = vec![true; batch.num_rows()];
    for a in arrays.iter().filter(|a| a.null_count() > 0) {
        for (i, v) in valid.iter_mut().enumerate() {
            *v &= a.is_valid(i);
        }
    }
    Ok((converter.convert_columns(&arrays)?, valid))
}

/// Rows kept in `converter`'s row format, as columns.
pub(super) fn rows_to_columns<'a>(
    converter: &RowConverter,
    rows: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<ArrayRef>> {
    let parser = converter.parser();
    Ok(converter.convert_rows(rows.into_iter().map(|r| parser.parse(r)))?)
}

/// Rows of one side (`columns`; `side` 0 left, 1 right) with NULLs for `other`'s columns, as
/// rows of `output`; with `left_only` (a semi or anti join) the rows as they are.
pub(super) fn padded(
    output: &SchemaRef,
    other: &Schema,
    side: usize,
    left_only: bool,
    columns: Vec<ArrayRef>,
) -> Result<RecordBatch> {
    if left_only {
        return Ok(RecordBatch::try_new(output.clone(), columns)?);
    }
    let n = columns.first().map_or(0, |c| c.len());
    let nulls: Vec<ArrayRef> = (other.fields().iter())
        .map(|f| new_null_array(f.data_type(), n))
        .collect();
    let columns = match side {
        0 => [columns, nulls].concat(),
        _ => [nulls, columns].concat(),
    };
    Ok(RecordBatch::try_new(output.clone(), columns)?)
}

/// `rows` with the change column appended, every row `kind`, as rows of `output`.
pub(super) fn with_change(
    output: &SchemaRef,
    rows: RecordBatch,
    kind: ChangeKind,
) -> Result<RecordBatch> {
    let n = rows.num_rows();
    let mut columns = rows.columns().to_vec();
    columns.push(Arc::new(change_array(std::iter::repeat_n(kind, n))));
    Ok(RecordBatch::try_new(output.clone(), columns)?)
}
