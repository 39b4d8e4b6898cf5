//! How sinks that write rows rather than apply them encode an updating stream: the change
//! column becomes an `op` text column.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use laketide_engine::{
    ChangeKind, NodeState, Result, ServiceStatus, Sink, SinkSummary, StreamMode, Watermark,
    change_kinds, has_change_column, kind_at,
};

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

/// For sinks keyed by `primary_key` (DynamoDB, Delta with `primary_key`): an updating result
/// must be keyed by exactly those columns, so that each key's row is `one` (an item, a table
/// row). Append-only rows are always accepted.
pub fn check_primary_key(
    schema: &Schema,
    mode: &StreamMode,
    primary_key: &[String],
    one: &str,
) -> std::result::Result<(), String> {
    let StreamMode::Updating { key } = mode else {
        return Ok(());
    };
    let mut names: Vec<&str> = key
        .iter()
        .map(|k| schema.field(*k).name().as_str())
        .collect();
    let mut primary: Vec<&str> = primary_key.iter().map(String::as_str).collect();
    names.sort_unstable();
    primary.sort_unstable();
    if names.is_empty() {
        return Err(
            "the query's result has no key that identifies its rows (select the GROUP BY columns)"
                .into(),
        );
    }
    if names != primary {
        return Err(format!(
            "its `primary_key` ({}) must be the query's key, the GROUP BY columns ({}), so that each key's row is {one}",
            primary.join(", "),
            names.join(", ")
        ));
    }
    Ok(())
}

/// The schema [`with_op_column`] gives batches of `schema` (an updating stream's).
pub fn op_schema(schema: &Schema) -> SchemaRef {
    let data = schema.fields().len().saturating_sub(1);
    let mut fields = vec![Arc::new(Field::new(OP_COLUMN, DataType::Utf8, false))];
    fields.extend(schema.fields()[..data].iter().cloned());
    Arc::new(Schema::new(fields))
}

/// Makes a sink that writes rows (files, Kinesis records, webhook bodies) take an updating
/// result too, as its changelog: each change is a row with an `op` column in front
/// (`insert`, `update_before`, `update_after`, `delete`). Append-only rows pass unchanged.
pub struct ChangelogAsRows {
    inner: Box<dyn Sink>,
}

impl ChangelogAsRows {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Sink>) -> Self {
        ChangelogAsRows { inner }
    }
}

#[async_trait]
impl Sink for ChangelogAsRows {
    fn accepts(&self, schema: &Schema, mode: &StreamMode) -> std::result::Result<(), String> {
        match mode {
            StreamMode::AppendOnly => self.inner.accepts(schema, mode),
            StreamMode::Updating { .. } => Ok(()),
        }
    }

    fn status(&self) -> Option<Arc<ServiceStatus>> {
        self.inner.status()
    }

    async fn open(&mut self, schema: SchemaRef) -> Result<()> {
        let schema = if has_change_column(&schema) {
            op_schema(&schema)
        } else {
            schema
        };
        self.inner.open(schema).await
    }

    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
        if has_change_column(batch.schema_ref()) {
            self.inner.write_batch(with_op_column(&batch, false)?).await
        } else {
            self.inner.write_batch(batch).await
        }
    }

    async fn on_watermark(&mut self, watermark: Watermark) -> Result<()> {
        self.inner.on_watermark(watermark).await
    }

    async fn maintain(&mut self) -> Result<()> {
        self.inner.maintain().await
    }

    fn enable_checkpoints(&mut self, pipeline: &str) {
        self.inner.enable_checkpoints(pipeline)
    }

    async fn prepare_commit(&mut self, checkpoint: u64) -> Result<NodeState> {
        self.inner.prepare_commit(checkpoint).await
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<()> {
        self.inner.commit(checkpoint).await
    }

    async fn recover(&mut self, checkpoint: u64, state: NodeState) -> Result<()> {
        self.inner.recover(checkpoint, state).await
    }

    async fn close(&mut self) -> Result<SinkSummary> {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array};
    use laketide_engine::{change_array, schema_with_change};

    #[test]
    fn the_change_column_becomes_a_leading_op_column() {
        let schema =
            schema_with_change(&Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(change_array([
                    ChangeKind::UpdateBefore,
                    ChangeKind::UpdateAfter,
                ])),
            ],
        )
        .unwrap();
        let rows = with_op_column(&batch, false).unwrap();
        assert_eq!(rows.schema(), op_schema(&schema));
        let ops: Vec<&str> = rows.column(0).as_string::<i32>().iter().flatten().collect();
        assert_eq!(ops, vec!["update_before", "update_after"]);
        let short = with_op_column(&batch, true).unwrap();
        let ops: Vec<&str> = short
            .column(0)
            .as_string::<i32>()
            .iter()
            .flatten()
            .collect();
        assert_eq!(ops, vec!["-U", "+U"]);
    }
}
