//! How sinks that write rows rather than apply them encode an updating stream: the change
//! column becomes an `op` text column.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;

use laketide_engine::{ChangeKind, Result, change_kinds, kind_at};

/// The name of the column that carries each row's change kind in written output.
pub const OP_COLUMN: &str = "op";

/// `batch` (of an updating stream) with its change column replaced by an `op` column in
/// front, holding Flink's short kinds (`+I`, `-U`, `+U`, `-D`) when `short`, else the long
/// names (`insert`, `update_before`, `update_after`, `delete`).
pub fn with_op_column(batch: &RecordBatch, short: bool) -> Result<RecordBatch> {
    let kinds = change_kinds(batch)?;
    let names = (0..batch.num_rows())
        .map(|i| {
            kind_at(kinds, i).map(|k: ChangeKind| if short { k.short_name() } else { k.op_name() })
        })
        .collect::<Result<Vec<_>>>()?;
    let data = batch.num_columns() - 1;
    let mut fields = vec![Arc::new(Field::new(OP_COLUMN, DataType::Utf8, false))];
    fields.extend(batch.schema().fields()[..data].iter().cloned());
    let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(names))];
    columns.extend(batch.columns()[..data].iter().cloned());
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}
