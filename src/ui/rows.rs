//! Result rows as JSON for the browser: column names with a kind the page can chart by, and
//! each row as an array of JSON values in column order.

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::json::writer::JsonArray;
use datafusion::arrow::record_batch::RecordBatch;
use serde::Serialize;
use serde_json::Value;

use datafusion::arrow::error::{ArrowError, Result};

/// What the page may do with a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    /// A timestamp or date: a chart's x axis.
    Time,
    /// A number: a chart's y values.
    Number,
    /// Anything else (text, booleans, nested values): a series name.
    Text,
}

/// A column as the page sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Column {
    /// The column's name.
    pub name: String,
    /// Its Arrow type, as text.
    pub data_type: String,
    /// How the page treats it.
    pub kind: ColumnKind,
}

/// The columns of `schema`.
pub fn columns(schema: &Schema) -> Vec<Column> {
    schema
        .fields()
        .iter()
        .map(|f| Column {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            kind: kind_of(f.data_type()),
        })
        .collect()
}

fn kind_of(t: &DataType) -> ColumnKind {
    match t {
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => ColumnKind::Time,
        t if t.is_numeric() => ColumnKind::Number,
        DataType::Dictionary(_, value) => kind_of(value),
        _ => ColumnKind::Text,
    }
}

/// The rows of `batch` as arrays of JSON values (NULL as `null`; timestamps as ISO text).
pub fn json_rows(batch: &RecordBatch) -> Result<Vec<Vec<Value>>> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    // Positional names, so that duplicate column names (`SELECT 1, 1`) keep both values.
    let width = batch.num_columns();
    let fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| Field::new(format!("c{i}"), f.data_type().clone(), true))
        .collect();
    let renamed = RecordBatch::try_new(
        SchemaRef::new(Schema::new(fields)),
        batch.columns().to_vec(),
    )?;
    let mut buf = Vec::new();
    {
        let mut writer = datafusion::arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, JsonArray>(&mut buf);
        writer.write(&renamed)?;
        writer.finish()?;
    }
    let objects: Vec<serde_json::Map<String, Value>> = serde_json::from_slice(&buf)
        .map_err(|e| ArrowError::JsonError(format!("reading back rows encoded as JSON: {e}")))?;
    Ok(objects
        .into_iter()
        .map(|mut o| {
            (0..width)
                .map(|i| o.remove(&format!("c{i}")).unwrap_or(Value::Null))
                .collect()
        })
        .collect())
}

/// The last `n` rows of `batch` (all of them when it has fewer).
pub fn tail(batch: &RecordBatch, n: usize) -> RecordBatch {
    let rows = batch.num_rows();
    if rows <= n {
        batch.clone()
    } else {
        batch.slice(rows - n, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use std::sync::Arc;

    fn schema_of(fields: Vec<Field>) -> SchemaRef {
        Arc::new(Schema::new(fields))
    }

    #[test]
    fn rows_keep_column_order_nulls_and_duplicate_names() {
        let schema = schema_of(vec![
            Field::new(
                "window_end",
                DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None),
                false,
            ),
            Field::new("page", DataType::Utf8, true),
            Field::new("page", DataType::Int64, true),
        ]);
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(TimestampMicrosecondArray::from(vec![0, 1_000_000])),
                Arc::new(StringArray::from(vec![Some("/a"), None])),
                Arc::new(Int64Array::from(vec![Some(3), Some(4)])),
            ],
        )
        .unwrap();
        let rows = json_rows(&batch).unwrap();
        assert_eq!(
            rows,
            vec![
                vec![
                    Value::from("1970-01-01T00:00:00"),
                    Value::from("/a"),
                    Value::from(3)
                ],
                vec![
                    Value::from("1970-01-01T00:00:01"),
                    Value::Null,
                    Value::from(4)
                ],
            ]
        );
        let kinds: Vec<ColumnKind> = columns(&schema).iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            vec![ColumnKind::Time, ColumnKind::Text, ColumnKind::Number]
        );
        assert_eq!(json_rows(&tail(&batch, 1)).unwrap().len(), 1);
    }
}
