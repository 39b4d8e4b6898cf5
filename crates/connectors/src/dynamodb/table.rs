//! The DynamoDB table behind a sink: its key schema checked against the rows' key columns, or
//! created on demand.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use datafusion::arrow::datatypes::{DataType, Schema};

use super::config::{DynamoDbSinkConfig, TimeEncoding};
use crate::aws::{RetryPolicy, call_with_retries};
use crate::error::{ConnectorError, Result, column_list};

/// A key attribute: its name, its DynamoDB type, and whether it is the sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAttribute {
    /// The attribute (and column) name.
    pub name: String,
    /// `S`, `N` or `B`.
    pub kind: ScalarAttributeType,
    /// HASH or RANGE.
    pub key_type: KeyType,
}

/// The DynamoDB type a key column's values take.
fn key_kind(data_type: &DataType, encoding: TimeEncoding) -> Option<ScalarAttributeType> {
    use DataType::*;
    Some(match data_type {
        Utf8 | LargeUtf8 | Utf8View => ScalarAttributeType::S,
        Int8
        | Int16
        | Int32
        | Int64
        | UInt8
        | UInt16
        | UInt32
        | UInt64
        | Float32
        | Float64
        | Decimal128(_, _)
        | Decimal256(_, _) => ScalarAttributeType::N,
        Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => ScalarAttributeType::B,
        Timestamp(_, _) | Date32 | Date64 => match encoding {
            TimeEncoding::Iso8601 => ScalarAttributeType::S,
            _ => ScalarAttributeType::N,
        },
        _ => return None,
    })
}

/// The key attributes the sink's rows will have; fails if a key column is missing or of a
/// type DynamoDB keys cannot have.
pub fn key_attributes(config: &DynamoDbSinkConfig, schema: &Schema) -> Result<Vec<KeyAttribute>> {
    config
        .primary_key
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let field = schema.field_with_name(column).map_err(|_| {
                ConnectorError::InvalidOption(format!(
                    "primary key column `{column}` is not a column of the query ({})",
                    column_list(schema)
                ))
            })?;
            let kind = key_kind(field.data_type(), config.time_encoding).ok_or_else(|| {
                ConnectorError::InvalidOption(format!(
                    "primary key column `{column}` is {}; DynamoDB keys are strings, numbers or binary",
                    field.data_type()
                ))
            })?;
            Ok(KeyAttribute {
                name: column.clone(),
                kind,
                key_type: if i == 0 { KeyType::Hash } else { KeyType::Range },
            })
        })
        .collect()
}

fn describe_keys(keys: &[KeyAttribute]) -> String {
    keys.iter()
        .map(|k| format!("{} {} ({})", k.name, k.kind.as_str(), k.key_type.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that `table` exists with exactly `keys` as its key schema, or creates it (on-demand
/// billing) when `create` is set. Waits until the table is active.
pub async fn ensure_table(
    client: &Client,
    policy: &RetryPolicy,
    table: &str,
    keys: &[KeyAttribute],
    create: bool,
) -> Result<()> {
    let described = call_with_retries(policy, "DescribeTable", || {
        client.describe_table().table_name(table).send()
    })
    .await;
    match described {
        Ok(out) => {
            let Some(description) = out.table() else {
                return Err(ConnectorError::service(
                    format!("DescribeTable {table}"),
                    "the answer describes no table",
                ));
            };
            let actual: Vec<KeyAttribute> = description
                .key_schema()
                .iter()
                .map(|k| KeyAttribute {
                    name: k.attribute_name().to_string(),
                    kind: description
                        .attribute_definitions()
                        .iter()
                        .find(|d| d.attribute_name() == k.attribute_name())
                        .map(|d| d.attribute_type().clone())
                        .unwrap_or(ScalarAttributeType::S),
                    key_type: k.key_type().clone(),
                })
                .collect();
            let mut expected = keys.to_vec();
            let mut found = actual.clone();
            expected.sort_by(|a, b| a.key_type.as_str().cmp(b.key_type.as_str()));
            found.sort_by(|a, b| a.key_type.as_str().cmp(b.key_type.as_str()));
            if expected != found {
                return Err(ConnectorError::InvalidOption(format!(
                    "DynamoDB table `{table}` has the key {}, but the sink's primary_key gives {}; change primary_key (or timestamp_format for time keys) or write to another table",
                    describe_keys(&found),
                    describe_keys(&expected)
                )));
            }
            if description.table_status() == Some(&TableStatus::Active) {
                return Ok(());
            }
        }
        Err(f) if f.code() == Some("ResourceNotFoundException") => {
            if !create {
                return Err(ConnectorError::InvalidOption(format!(
                    "DynamoDB table `{table}` does not exist; create it with the key {} or set create_if_missing = 'true'",
                    describe_keys(keys)
                )));
            }
            let mut request = client
                .create_table()
                .table_name(table)
                .billing_mode(BillingMode::PayPerRequest);
            for k in keys {
                request = request
                    .key_schema(
                        KeySchemaElement::builder()
                            .attribute_name(&k.name)
                            .key_type(k.key_type.clone())
                            .build()
                            .map_err(|e| ConnectorError::service("CreateTable", e.to_string()))?,
                    )
                    .attribute_definitions(
                        AttributeDefinition::builder()
                            .attribute_name(&k.name)
                            .attribute_type(k.kind.clone())
                            .build()
                            .map_err(|e| ConnectorError::service("CreateTable", e.to_string()))?,
                    );
            }
            match request.send().await {
                Ok(_) => tracing::info!(table, "created DynamoDB table"),
                // Created by someone else in the meantime: check it like an existing one.
                Err(e) if crate::aws::error_code(&e) == Some("ResourceInUseException") => {}
                Err(e) => {
                    return Err(ConnectorError::service(
                        format!("CreateTable {table}"),
                        crate::aws::describe(&e),
                    ));
                }
            }
        }
        Err(f) => return Err(f.into_error(format!("DescribeTable {table}"))),
    }
    wait_active(client, policy, table).await
}

async fn wait_active(client: &Client, policy: &RetryPolicy, table: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = call_with_retries(policy, "DescribeTable", || {
            client.describe_table().table_name(table).send()
        })
        .await
        .map_err(|f| f.into_error(format!("DescribeTable {table}")))?;
        if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(ConnectorError::service(
                format!("DynamoDB table `{table}`"),
                "not active after 120 s",
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
