use datafusion::arrow::datatypes::{DataType, Schema, TimeUnit};

use crate::error::{ConnectorError, Result};

/// Delta stores timestamps in microseconds: other units are written as microseconds.
fn normalized(t: &DataType) -> DataType {
    match t {
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        other => other.clone(),
    }
}

/// Checks that rows of `incoming` can be appended to a table of schema `table`: the same column
/// names in the same order, with the same types (up to timestamp precision and string
/// encodings). Fails with a message listing each difference.
pub fn check_table_schema(table_name: &str, table: &Schema, incoming: &Schema) -> Result<()> {
    let mut problems = Vec::new();
    let names = |s: &Schema| {
        s.fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>()
    };
    if names(table) != names(incoming) {
        problems.push(format!(
            "the table has columns ({}) but the query produces ({})",
            names(table).join(", "),
            names(incoming).join(", ")
        ));
    } else {
        for (t, i) in table.fields().iter().zip(incoming.fields()) {
            if normalized(t.data_type()) != normalized(i.data_type()) {
                problems.push(format!(
                    "column `{}` is {} in the table but {} in the query",
                    t.name(),
                    t.data_type(),
                    i.data_type()
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConnectorError::InvalidOption(format!(
            "the existing Delta table `{table_name}` does not fit the query: {}",
            problems.join("; ")
        )))
    }
}
