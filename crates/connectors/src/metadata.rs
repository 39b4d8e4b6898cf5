//! Metadata columns: source columns filled from where a record came from (its Kinesis shard,
//! sequence number, arrival time …) rather than from its payload. Declared in SQL as
//! `col TYPE METADATA FROM 'key'`.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::{ConnectorError, Result};

/// A column filled from record metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataColumn {
    /// The column's name in the table.
    pub column: String,
    /// The metadata key, e.g. `shard_id`.
    pub key: String,
}

/// A metadata key a connector offers, with the types its column may have.
#[derive(Debug, Clone, Copy)]
pub struct MetadataKey {
    /// The key as written in `METADATA FROM '…'`.
    pub name: &'static str,
    /// What it holds, for error messages.
    pub description: &'static str,
    /// Whether a column of this type can hold it.
    pub accepts: fn(&DataType) -> bool,
}

/// Whether a column type holds text.
pub fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Whether a column type is a timestamp.
pub fn is_timestamp(t: &DataType) -> bool {
    matches!(t, DataType::Timestamp(_, _))
}

/// Splits a table schema into the payload schema (columns decoded from records) and the
/// metadata columns with their keys, checking every key and type against what `connector`
/// offers.
pub fn split_schema(
    connector: &str,
    schema: &SchemaRef,
    metadata: &[MetadataColumn],
    offered: &[MetadataKey],
) -> Result<(SchemaRef, Vec<(usize, MetadataKey)>)> {
    let mut payload: Vec<Field> = Vec::new();
    let mut columns = Vec::new();
    for (i, field) in schema.fields().iter().enumerate() {
        let Some(m) = metadata.iter().find(|m| &m.column == field.name()) else {
            payload.push(field.as_ref().clone());
            continue;
        };
        let Some(key) = offered.iter().find(|k| k.name == m.key) else {
            return Err(ConnectorError::InvalidOption(if offered.is_empty() {
                format!(
                    "column `{}`: the {connector} connector has no metadata columns",
                    m.column
                )
            } else {
                format!(
                    "column `{}`: unknown metadata key '{}' for the {connector} connector; keys are: {}",
                    m.column,
                    m.key,
                    offered
                        .iter()
                        .map(|k| k.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }));
        };
        if !(key.accepts)(field.data_type()) {
            return Err(ConnectorError::InvalidOption(format!(
                "column `{}` is {} but metadata '{}' is {}",
                m.column,
                field.data_type(),
                key.name,
                key.description
            )));
        }
        columns.push((i, *key));
    }
    for m in metadata {
        if schema.field_with_name(&m.column).is_err() {
            return Err(ConnectorError::InvalidOption(format!(
                "metadata column `{}` is not a column of the table",
                m.column
            )));
        }
    }
    Ok((Arc::new(Schema::new(payload)), columns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::TimeUnit;

    const KEYS: &[MetadataKey] = &[
        MetadataKey {
            name: "shard_id",
            description: "TEXT",
            accepts: is_text,
        },
        MetadataKey {
            name: "arrival_time",
            description: "a TIMESTAMP",
            accepts: is_timestamp,
        },
    ];

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("shard", DataType::Utf8, true),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]))
    }

    fn m(column: &str, key: &str) -> MetadataColumn {
        MetadataColumn {
            column: column.into(),
            key: key.into(),
        }
    }

    #[test]
    fn payload_and_metadata_columns_are_separated() {
        let (payload, cols) = split_schema(
            "kinesis",
            &schema(),
            &[m("shard", "shard_id"), m("at", "arrival_time")],
            KEYS,
        )
        .unwrap();
        assert_eq!(payload.fields().len(), 1);
        assert_eq!(cols.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn unknown_keys_wrong_types_and_unsupported_connectors_are_errors() {
        let e = split_schema("kinesis", &schema(), &[m("shard", "nope")], KEYS).unwrap_err();
        assert!(
            e.to_string().contains("keys are: shard_id, arrival_time"),
            "{e}"
        );
        let e = split_schema("kinesis", &schema(), &[m("a", "shard_id")], KEYS).unwrap_err();
        assert!(e.to_string().contains("column `a` is Int64"), "{e}");
        let e = split_schema("file", &schema(), &[m("a", "x")], &[]).unwrap_err();
        assert!(e.to_string().contains("has no metadata columns"), "{e}");
    }
}
