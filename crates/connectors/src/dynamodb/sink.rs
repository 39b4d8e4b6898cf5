//! The DynamoDB sink: rows become items keyed by `primary_key`, written in batches of at most
//! 25 items and 16 MB with several requests in flight, unprocessed items and throttling
//! retried with backoff until `retry_timeout`, then a clear failure. An updating result is
//! applied: inserts and updates (`+I`, `+U`) put the item, retractions (`-U`, `-D`) delete
//! it, and within a batch the last change of a key wins (a `-U` followed by its `+U` is one
//! put).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use futures::stream::{self, StreamExt, TryStreamExt};
use laketide_engine::{
    BadRecords, EngineError, Result, ServiceStatus, Sink, SinkSummary, StreamMode, change_kinds,
    has_change_column, kind_at,
};

use super::config::{DynamoDbSinkConfig, WriteMode};
use super::item::{Item, MAX_ITEM_BYTES, batch_items, item_size};
use super::table::{ensure_table, key_attributes};
use crate::aws::{Backoff, RetryPolicy, call_with_retries};
use crate::changelog::check_primary_key;
use crate::error::ConnectorError;
use crate::format::RowEncoder;

/// BatchWriteItem takes at most 25 items …
pub const MAX_BATCH_ITEMS: usize = 25;
/// … and at most 16 MB.
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// Writes rows to a DynamoDB table; see [`DynamoDbSinkConfig`].
pub struct DynamoDbSink {
    name: String,
    config: DynamoDbSinkConfig,
    client: Option<Client>,
    policy: RetryPolicy,
    bad: Arc<BadRecords>,
    rows_written: u64,
    requests: Arc<std::sync::atomic::AtomicU64>,
    stale: Arc<std::sync::atomic::AtomicU64>,
}

impl DynamoDbSink {
    /// A sink for table `name`. Does no I/O until opened.
    pub fn new(name: &str, config: DynamoDbSinkConfig) -> Self {
        DynamoDbSink {
            name: name.to_string(),
            bad: Arc::new(BadRecords::new(name, config.on_error.clone())),
            policy: RetryPolicy {
                retry_timeout: config.retry_timeout,
                status: Arc::new(ServiceStatus::default()),
            },
            config,
            client: None,
            rows_written: 0,
            requests: Default::default(),
            stale: Default::default(),
        }
    }

    /// Throttles and retries so far.
    pub fn status(&self) -> Arc<ServiceStatus> {
        self.policy.status.clone()
    }

    /// Rows with a NULL key or a value DynamoDB cannot store, skipped or dead-lettered.
    pub fn bad_rows(&self) -> u64 {
        self.bad.count()
    }

    /// Rows not written because the stored item had a newer `version_column`.
    pub fn stale_rows(&self) -> u64 {
        self.stale.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn key_of(&self, item: &Item) -> String {
        self.config
            .primary_key
            .iter()
            .map(|k| format!("{:?}", item.get(k)))
            .collect::<Vec<_>>()
            .join("\u{1f}")
    }

    /// Items for the rows of `batch`, last row per key only, each with its size in bytes and
    /// whether it is deleted; bad rows go to the policy.
    fn items(&self, batch: &RecordBatch) -> Result<Vec<SizedItem>> {
        // An updating stream's rows: the data columns, and per row whether it is a retraction.
        let (batch, deletes) = if has_change_column(batch.schema_ref()) {
            let kinds = change_kinds(batch)?;
            let deletes = (0..batch.num_rows())
                .map(|i| kind_at(kinds, i).map(|k| k.is_retraction()))
                .collect::<Result<Vec<bool>>>()?;
            let data: Vec<usize> = (0..batch.num_columns() - 1).collect();
            (batch.project(&data)?, deletes)
        } else {
            (batch.clone(), vec![false; batch.num_rows()])
        };
        let batch = &batch;
        let (mut items, errors) = batch_items(batch, self.config.time_encoding);
        let encoder = RowEncoder::new(crate::format::Format::Json);
        let raw = |row: usize| {
            encoder
                .encode(&batch.slice(row, 1))
                .ok()
                .and_then(|mut r| r.pop())
                .unwrap_or_default()
        };
        let location = |row: usize| format!("sink `{}` row {row} of a batch", self.name);
        for e in errors {
            self.bad.report(&location(e.row), &raw(e.row), &e.reason)?;
        }
        if let Some(ttl) = &self.config.ttl {
            let column = batch.column_by_name(&ttl.column).ok_or_else(|| {
                EngineError::User(format!(
                    "sink `{}`: ttl_column `{}` is not a column of the query",
                    self.name, ttl.column
                ))
            })?;
            let seconds =
                super::item::column_values(column, super::config::TimeEncoding::EpochSeconds)
                    .map_err(|e| {
                        EngineError::User(format!("sink `{}`: ttl_column: {}", self.name, e.reason))
                    })?;
            for (item, value) in items.iter_mut().zip(seconds) {
                if let (Some(item), AttributeValue::N(s)) = (item.as_mut(), value) {
                    let expiry = s.parse::<i64>().unwrap_or(0) + ttl.after.as_secs() as i64;
                    item.insert(ttl.attribute.clone(), AttributeValue::N(expiry.to_string()));
                }
            }
        }
        let mut last: HashMap<String, usize> = HashMap::new();
        let mut kept: Vec<Option<SizedItem>> = Vec::with_capacity(items.len());
        for (row, item) in items.into_iter().enumerate() {
            let Some(mut item) = item else {
                kept.push(None);
                continue;
            };
            if let Some(k) = self
                .config
                .primary_key
                .iter()
                .find(|k| matches!(item.get(*k), None | Some(AttributeValue::Null(_))))
            {
                self.bad.report(
                    &location(row),
                    &raw(row),
                    &format!("the key column `{k}` is NULL"),
                )?;
                kept.push(None);
                continue;
            }
            let delete = deletes[row];
            if delete {
                item.retain(|k, _| self.config.primary_key.contains(k));
            }
            let size = item_size(&item);
            if size > MAX_ITEM_BYTES {
                self.bad.report(
                    &location(row),
                    &raw(row),
                    &format!("the item is {size} bytes; DynamoDB items hold at most {MAX_ITEM_BYTES} bytes (400 KB)"),
                )?;
                kept.push(None);
                continue;
            }
            // A later row with the same key replaces an earlier one: DynamoDB rejects two
            // writes of one key in a batch, and the last value is the one that must win.
            if let Some(earlier) = last.insert(self.key_of(&item), row) {
                kept[earlier] = None;
            }
            kept.push(Some(SizedItem { item, size, delete }));
        }
        Ok(kept.into_iter().flatten().collect())
    }

    fn client(&self) -> Result<Client> {
        self.client
            .clone()
            .ok_or_else(|| EngineError::Internal("dynamodb sink written before open".into()))
    }
}

/// An item, its size in bytes (as DynamoDB counts it), and whether it is deleted (then the
/// item holds only its key).
#[derive(Debug)]
struct SizedItem {
    item: Item,
    size: usize,
    delete: bool,
}

/// Groups items into BatchWriteItem requests (puts and deletes) of at most 25 items and 16 MB.
fn requests(items: Vec<SizedItem>) -> Vec<Vec<WriteRequest>> {
    let mut out = Vec::new();
    let mut current: Vec<WriteRequest> = Vec::new();
    let mut bytes = 0;
    for SizedItem { item, size, delete } in items {
        if current.len() == MAX_BATCH_ITEMS || bytes + size > MAX_BATCH_BYTES {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        let request = if delete {
            let delete = DeleteRequest::builder()
                .set_key(Some(item))
                .build()
                .expect("a key is set");
            WriteRequest::builder().delete_request(delete).build()
        } else {
            let put = PutRequest::builder()
                .set_item(Some(item))
                .build()
                .expect("an item is set");
            WriteRequest::builder().put_request(put).build()
        };
        current.push(request);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Sends one BatchWriteItem request and re-sends its unprocessed items until none are left or
/// the retry timeout passes.
async fn batch_write(
    client: &Client,
    policy: &RetryPolicy,
    table: &str,
    mut pending: Vec<WriteRequest>,
) -> std::result::Result<u64, ConnectorError> {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    let started = Instant::now();
    let mut calls = 0;
    loop {
        calls += 1;
        let out = call_with_retries(policy, "BatchWriteItem", || {
            client
                .batch_write_item()
                .request_items(table, pending.clone())
                .send()
        })
        .await
        .map_err(|f| f.into_error(format!("BatchWriteItem into DynamoDB table `{table}`")))?;
        let unprocessed = out
            .unprocessed_items()
            .and_then(|m| m.get(table))
            .cloned()
            .unwrap_or_default();
        if unprocessed.is_empty() {
            return Ok(calls);
        }
        policy.status.count_throttle();
        if started.elapsed() >= policy.retry_timeout {
            return Err(ConnectorError::service(
                format!("BatchWriteItem into DynamoDB table `{table}`"),
                format!(
                    "{} items were still unprocessed after retrying for {:?} (retry_timeout); the table's capacity is too low for this rate",
                    unprocessed.len(),
                    policy.retry_timeout
                ),
            ));
        }
        pending = unprocessed;
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Writes one item with PutItem or UpdateItem, under the version condition if any. Returns
/// whether the item was written (false: the stored item is newer).
async fn write_one(
    client: &Client,
    policy: &RetryPolicy,
    config: &DynamoDbSinkConfig,
    mut item: Item,
) -> std::result::Result<bool, ConnectorError> {
    let table = config.table.as_str();
    let mut names = HashMap::new();
    let mut values = HashMap::new();
    let condition = config.version_column.as_ref().map(|v| {
        names.insert("#version".to_string(), v.clone());
        values.insert(
            ":version".to_string(),
            item.get(v).cloned().unwrap_or(AttributeValue::Null(true)),
        );
        "attribute_not_exists(#version) OR #version < :version".to_string()
    });
    let result = match &config.mode {
        WriteMode::Upsert => call_with_retries(policy, "PutItem", || {
            client
                .put_item()
                .table_name(table)
                .set_item(Some(item.clone()))
                .set_condition_expression(condition.clone())
                .set_expression_attribute_names((!names.is_empty()).then(|| names.clone()))
                .set_expression_attribute_values((!values.is_empty()).then(|| values.clone()))
                .send()
        })
        .await
        .map(|_| ())
        .map_err(|f| {
            (
                f.code().map(str::to_string),
                f.into_error(format!("PutItem into DynamoDB table `{table}`")),
            )
        }),
        WriteMode::Update { columns } => {
            let key: Item = config
                .primary_key
                .iter()
                .filter_map(|k| item.remove_entry(k))
                .collect();
            let all: Vec<String> = if columns.is_empty() {
                item.keys().cloned().collect()
            } else {
                columns.clone()
            };
            let mut sets = Vec::new();
            for (i, column) in all.iter().enumerate() {
                let Some(value) = item.get(column) else {
                    continue;
                };
                names.insert(format!("#a{i}"), column.clone());
                values.insert(format!(":a{i}"), value.clone());
                sets.push(format!("#a{i} = :a{i}"));
            }
            if sets.is_empty() {
                return Ok(true);
            }
            let expression = format!("SET {}", sets.join(", "));
            call_with_retries(policy, "UpdateItem", || {
                client
                    .update_item()
                    .table_name(table)
                    .set_key(Some(key.clone()))
                    .update_expression(expression.clone())
                    .set_condition_expression(condition.clone())
                    .set_expression_attribute_names(Some(names.clone()))
                    .set_expression_attribute_values(Some(values.clone()))
                    .send()
            })
            .await
            .map(|_| ())
            .map_err(|f| {
                (
                    f.code().map(str::to_string),
                    f.into_error(format!("UpdateItem in DynamoDB table `{table}`")),
                )
            })
        }
    };
    match result {
        Ok(()) => Ok(true),
        Err((Some(code), _)) if code == "ConditionalCheckFailedException" => Ok(false),
        Err((_, e)) => Err(e),
    }
}

#[async_trait]
impl Sink for DynamoDbSink {
    /// Takes an updating result keyed by exactly the `primary_key` columns, written as whole
    /// items (not with `mode = 'update'` or `version_column`).
    fn accepts(&self, schema: &Schema, mode: &StreamMode) -> std::result::Result<(), String> {
        check_primary_key(schema, mode, &self.config.primary_key, "one item")?;
        if !mode.is_updating() {
            return Ok(());
        }
        if self.config.mode != WriteMode::Upsert || self.config.version_column.is_some() {
            return Err("`mode = 'update'` and `version_column` apply to append-only results; an updating result replaces and deletes whole items".into());
        }
        Ok(())
    }

    fn status(&self) -> Option<Arc<ServiceStatus>> {
        Some(self.policy.status.clone())
    }

    async fn open(&mut self, schema: SchemaRef) -> Result<()> {
        let keys = key_attributes(&self.config, &schema)?;
        let columns: Vec<&String> = self
            .config
            .version_column
            .iter()
            .chain(self.config.ttl.iter().map(|t| &t.column))
            .chain(match &self.config.mode {
                WriteMode::Update { columns } => columns.iter().collect::<Vec<_>>(),
                WriteMode::Upsert => vec![],
            })
            .collect();
        for c in columns {
            if schema.field_with_name(c).is_err() {
                return Err(EngineError::User(format!(
                    "sink `{}`: column `{c}` (named in the options) is not a column of the query",
                    self.name
                )));
            }
        }
        let config = self.config.aws.load("DynamoDB").await?;
        let client = Client::new(&config);
        ensure_table(
            &client,
            &self.policy,
            &self.config.table,
            &keys,
            self.config.create_if_missing,
        )
        .await?;
        self.client = Some(client);
        Ok(())
    }

    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
        let items = self.items(&batch)?;
        if items.is_empty() {
            return Ok(());
        }
        let count = items.len() as u64;
        let bytes: usize = items.iter().map(|i| i.size).sum();
        self.policy.status.count_bytes(bytes as u64);
        let client = self.client()?;
        let in_flight = self.config.max_in_flight;
        let conditional =
            self.config.version_column.is_some() || self.config.mode != WriteMode::Upsert;
        if conditional {
            let (policy, config, stale, requests) = (
                &self.policy,
                &self.config,
                self.stale.clone(),
                self.requests.clone(),
            );
            stream::iter(items)
                .map(|SizedItem { item, .. }| {
                    let (client, stale, requests) =
                        (client.clone(), stale.clone(), requests.clone());
                    async move {
                        requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if !write_one(&client, policy, config, item).await? {
                            stale.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok::<_, ConnectorError>(())
                    }
                })
                .buffer_unordered(in_flight)
                .try_collect::<Vec<()>>()
                .await?;
        } else {
            let (policy, table) = (&self.policy, self.config.table.as_str());
            let calls: Vec<u64> = stream::iter(requests(items))
                .map(|request| {
                    let client = client.clone();
                    async move { batch_write(&client, policy, table, request).await }
                })
                .buffer_unordered(in_flight)
                .try_collect()
                .await?;
            self.requests.fetch_add(
                calls.iter().sum::<u64>(),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        self.rows_written += count;
        Ok(())
    }

    async fn close(&mut self) -> Result<SinkSummary> {
        let status = &self.policy.status;
        if status.throttles() > 0 || status.retries() > 0 || self.stale_rows() > 0 {
            tracing::info!(
                sink = %self.name,
                throttles = status.throttles(),
                retries = status.retries(),
                stale = self.stale_rows(),
                "DynamoDB sink finished"
            );
        }
        Ok(SinkSummary {
            rows_written: self.rows_written,
            commits: self.requests.load(std::sync::atomic::Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_items_and_null_keys_are_bad_rows_and_duplicates_collapse() {
        use datafusion::arrow::array::{Int64Array, StringArray};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let options = crate::Options::new([
            ("table".to_string(), "t".to_string()),
            ("primary_key".to_string(), "id".to_string()),
            ("on_error".to_string(), "skip".to_string()),
        ])
        .unwrap();
        let sink = DynamoDbSink::new("s", DynamoDbSinkConfig::from_options(options).unwrap());
        let big = "x".repeat(MAX_ITEM_BYTES + 1);
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, true),
                Field::new("text", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None, Some(2), Some(1)])),
                Arc::new(StringArray::from(vec!["a", "b", big.as_str(), "d"])),
            ],
        )
        .unwrap();
        let items = sink.items(&batch).unwrap();
        assert_eq!(sink.bad_rows(), 2, "the NULL key and the 400 KB item");
        assert_eq!(items.len(), 1);
        assert_eq!(
            items[0].item["text"],
            AttributeValue::S("d".into()),
            "the last row of key 1"
        );
    }

    fn sink(primary_key: &str) -> DynamoDbSink {
        let options = crate::Options::new([
            ("table".to_string(), "t".to_string()),
            ("primary_key".to_string(), primary_key.to_string()),
        ])
        .unwrap();
        DynamoDbSink::new("s", DynamoDbSinkConfig::from_options(options).unwrap())
    }

    #[test]
    fn a_changelog_becomes_puts_and_deletes_with_the_last_change_of_a_key_winning() {
        use datafusion::arrow::array::{Int64Array, StringArray};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        use laketide_engine::{ChangeKind, change_array, schema_with_change};
        let schema = schema_with_change(&Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("text", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 1, 2, 3, 3])),
                Arc::new(StringArray::from(vec!["old", "new", "gone", "x", "y"])),
                Arc::new(change_array([
                    ChangeKind::UpdateBefore,
                    ChangeKind::UpdateAfter,
                    ChangeKind::Delete,
                    ChangeKind::Insert,
                    ChangeKind::UpdateBefore,
                ])),
            ],
        )
        .unwrap();
        let sink = sink("id");
        let items = sink.items(&batch).unwrap();
        let summary: Vec<(String, bool, usize)> = items
            .iter()
            .map(|i| (format!("{:?}", i.item["id"]), i.delete, i.item.len()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("N(\"1\")".to_string(), false, 2),
                ("N(\"2\")".to_string(), true, 1),
                ("N(\"3\")".to_string(), true, 1),
            ],
            "key 1 is put with its new value, keys 2 and 3 deleted by their key alone"
        );
        assert!(!items[0].item.contains_key(laketide_engine::CHANGE_COLUMN));
        let r = requests(items);
        assert!(r[0][1].delete_request().is_some() && r[0][0].put_request().is_some());
        // The key check.
        let key_id = StreamMode::Updating { key: vec![0] };
        assert!(sink.accepts(&schema, &key_id).is_ok());
        assert!(
            sink.accepts(&schema, &StreamMode::Updating { key: vec![1] })
                .unwrap_err()
                .contains("must be the query's key")
        );
        assert!(
            sink.accepts(&schema, &StreamMode::Updating { key: vec![] })
                .is_err()
        );
    }

    #[test]
    fn requests_hold_at_most_25_items() {
        let items: Vec<SizedItem> = (0..60)
            .map(|i| {
                let item = HashMap::from([("id".to_string(), AttributeValue::N(i.to_string()))]);
                let size = item_size(&item);
                SizedItem {
                    item,
                    size,
                    delete: false,
                }
            })
            .collect();
        let r = requests(items);
        assert_eq!(r.iter().map(Vec::len).collect::<Vec<_>>(), vec![25, 25, 10]);
    }
}
