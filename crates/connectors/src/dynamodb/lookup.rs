//! A DynamoDB table read by a lookup join: the keys of an input batch that the cache does not
//! answer are read with BatchGetItem (at most 100 keys a request, `max_in_flight` requests at
//! once, unprocessed keys and throttling retried with backoff until `retry_timeout`); every
//! answer, found or not, is cached for `lookup.cache.ttl` in an LRU cache of
//! `lookup.cache.max_rows` keys. Items become rows of the declared columns (attributes by
//! column name; missing attributes are NULL).

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use futures::stream::{self, StreamExt, TryStreamExt};
use laketide_engine::{BadRecords, EngineError, LookupTable, Result, ServiceStatus};
use lru::LruCache;
use serde_json::{Map, Number, Value};
use tokio::sync::OnceCell;

use super::config::TimeEncoding;
use super::item::{Item, column_values, item_size};
use super::lookup_config::DynamoDbLookupConfig;
use crate::aws::{Backoff, RetryPolicy, call_with_retries};
use crate::error::ConnectorError;
use crate::format::{Format, RecordDecoder};

/// BatchGetItem reads at most 100 keys.
pub const MAX_GET_KEYS: usize = 100;

/// One cached answer: the item, or that there is none, and when it was read.
#[derive(Debug, Clone)]
struct Cached {
    read_at: Instant,
    item: Option<Arc<Item>>,
}

/// A DynamoDB table looked up by its primary key; see the module docs.
pub struct DynamoDbLookup {
    name: String,
    config: DynamoDbLookupConfig,
    schema: SchemaRef,
    key_columns: Vec<usize>,
    client: OnceCell<Client>,
    policy: RetryPolicy,
    cache: Option<Mutex<LruCache<String, Cached>>>,
    decoder: RecordDecoder,
    requests: AtomicU64,
    hits: AtomicU64,
}

impl std::fmt::Debug for DynamoDbLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoDbLookup")
            .field("table", &self.config.table)
            .finish()
    }
}

impl DynamoDbLookup {
    /// The lookup table `name` with rows of `schema`, read by `key` (column names, which must
    /// be the table's primary key). Does no I/O.
    pub fn new(
        name: &str,
        config: DynamoDbLookupConfig,
        schema: SchemaRef,
        key: &[String],
    ) -> std::result::Result<Self, ConnectorError> {
        let mut wanted = key.to_vec();
        wanted.sort();
        let mut primary = config.primary_key.clone();
        primary.sort();
        if wanted != primary {
            return Err(ConnectorError::InvalidOption(format!(
                "a lookup in DynamoDB table `{}` reads items by their whole primary key: join on {} (the join gives {})",
                config.table,
                config.primary_key.join(" and "),
                if key.is_empty() {
                    "none".into()
                } else {
                    key.join(", ")
                }
            )));
        }
        let key_columns = (config.primary_key.iter())
            .map(|k| {
                schema.index_of(k).map_err(|_| {
                    ConnectorError::InvalidOption(format!(
                        "primary key column `{k}` is not a declared column"
                    ))
                })
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let bad = Arc::new(BadRecords::new(name, config.on_error.clone()));
        let cache = NonZeroUsize::new(config.cache_max_rows).map(|n| Mutex::new(LruCache::new(n)));
        Ok(DynamoDbLookup {
            name: name.to_string(),
            decoder: RecordDecoder::new(schema.clone(), Format::Json, bad),
            policy: RetryPolicy {
                retry_timeout: config.retry_timeout,
                status: Arc::new(ServiceStatus::default()),
            },
            config,
            schema,
            key_columns,
            client: OnceCell::new(),
            cache,
            requests: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        })
    }

    /// The key columns, in primary-key order (partition key first).
    pub fn primary_key(&self) -> &[String] {
        &self.config.primary_key
    }

    /// BatchGetItem requests sent and keys answered from the cache so far.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.hits.load(Ordering::Relaxed),
        )
    }

    async fn client(&self) -> Result<&Client> {
        self.client
            .get_or_try_init(|| async {
                let config = self.config.aws.load("DynamoDB").await?;
                Ok::<_, EngineError>(Client::new(&config))
            })
            .await
    }

    /// The key attributes of every row of `keys`.
    fn key_items(&self, keys: &[ArrayRef]) -> Result<Vec<Item>> {
        let n = keys.first().map_or(0, |k| k.len());
        let mut items: Vec<Item> = (0..n).map(|_| Item::new()).collect();
        for (name, array) in self.config.primary_key.iter().zip(keys) {
            let values = column_values(array, self.config.time_encoding).map_err(|e| {
                EngineError::User(format!(
                    "lookup in DynamoDB table `{}`: key `{name}` of row {}: {}",
                    self.config.table, e.row, e.reason
                ))
            })?;
            for (item, value) in items.iter_mut().zip(values) {
                item.insert(name.clone(), value);
            }
        }
        Ok(items)
    }

    /// The cache's text for an item's key.
    fn key_text(&self, item: &Item) -> String {
        (self.config.primary_key.iter())
            .map(|k| format!("{:?}", item.get(k)))
            .collect::<Vec<_>>()
            .join("\u{1f}")
    }

    /// The cached answers for `keys`, and the keys the cache does not answer.
    fn from_cache(&self, keys: Vec<Item>) -> (Vec<Arc<Item>>, Vec<(String, Item)>) {
        let mut found = Vec::new();
        let Some(cache) = &self.cache else {
            let misses = keys.into_iter().map(|k| (self.key_text(&k), k)).collect();
            return (found, misses);
        };
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut misses = Vec::new();
        for key in keys {
            let text = self.key_text(&key);
            match cache.get(&text) {
                Some(c) if c.read_at.elapsed() < self.config.cache_ttl => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    found.extend(c.item.clone());
                }
                _ => misses.push((text, key)),
            }
        }
        (found, misses)
    }

    /// Reads `keys` in requests of at most 100 keys, `max_in_flight` at once.
    async fn batch_get(&self, keys: Vec<Item>) -> Result<Vec<Item>> {
        let client = self.client().await?;
        let chunks: Vec<Vec<Item>> = keys.chunks(MAX_GET_KEYS).map(|c| c.to_vec()).collect();
        let read: Vec<Vec<Item>> = stream::iter(chunks)
            .map(|chunk| self.get_chunk(client, chunk))
            .buffer_unordered(self.config.max_in_flight)
            .try_collect()
            .await?;
        Ok(read.into_iter().flatten().collect())
    }

    /// One BatchGetItem request, re-sent with its unprocessed keys until none are left or the
    /// retry timeout passes.
    async fn get_chunk(&self, client: &Client, mut pending: Vec<Item>) -> Result<Vec<Item>> {
        let table = &self.config.table;
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        let started = Instant::now();
        let mut items = Vec::new();
        loop {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let request = KeysAndAttributes::builder()
                .set_keys(Some(pending.clone()))
                .build()
                .map_err(|e| EngineError::Internal(format!("BatchGetItem request: {e}")))?;
            let out = call_with_retries(&self.policy, "BatchGetItem", || {
                client
                    .batch_get_item()
                    .request_items(table, request.clone())
                    .send()
            })
            .await
            .map_err(|f| {
                let context = format!("BatchGetItem from DynamoDB table `{table}`");
                match f.code() {
                    Some("ResourceNotFoundException") => ConnectorError::service(
                        context,
                        "the table does not exist (at this endpoint and region): create it, or fix `table`, `endpoint` or `region`",
                    ),
                    _ => f.into_error(context),
                }
            })?;
            let answered = (out.responses().and_then(|r| r.get(table)))
                .into_iter()
                .flatten();
            for item in answered {
                self.policy.status.count_bytes(item_size(item) as u64);
                items.push(item.clone());
            }
            pending = (out.unprocessed_keys().and_then(|u| u.get(table)))
                .map(|k| k.keys().to_vec())
                .unwrap_or_default();
            if pending.is_empty() {
                return Ok(items);
            }
            self.policy.status.count_throttle();
            if started.elapsed() >= self.config.retry_timeout {
                return Err(ConnectorError::service(
                    format!("BatchGetItem from DynamoDB table `{table}`"),
                    format!(
                        "{} keys still unprocessed after retrying for {:?} (retry_timeout)",
                        pending.len(),
                        self.config.retry_timeout
                    ),
                )
                .into());
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// The items as rows of the table's columns.
    fn rows(&self, items: &[Arc<Item>]) -> Result<RecordBatch> {
        let mut buffer = Vec::new();
        let mut ranges = Vec::with_capacity(items.len());
        for item in items {
            let start = buffer.len();
            let json = Value::Object(self.json_item(item));
            serde_json::to_writer(&mut buffer, &json)
                .map_err(|e| EngineError::Internal(format!("an item as JSON: {e}")))?;
            ranges.push(start..buffer.len());
            buffer.push(b'\n');
        }
        let location = |i: usize| {
            format!(
                "DynamoDB table `{}` item with key {}",
                self.config.table,
                self.key_text(&items[i])
            )
        };
        let decoded = self.decoder.decode(&buffer, &ranges, &location)?;
        Ok(decoded.unwrap_or_else(|| RecordBatch::new_empty(self.schema.clone())))
    }

    /// The item's attributes that are columns, as JSON (epoch seconds made milliseconds).
    fn json_item(&self, item: &Item) -> Map<String, Value> {
        let mut object = Map::new();
        for field in self.schema.fields() {
            let Some(value) = item.get(field.name()) else {
                continue;
            };
            let mut json = json_value(value);
            let is_time = matches!(field.data_type(), DataType::Timestamp(_, _));
            if is_time
                && self.config.time_encoding == TimeEncoding::EpochSeconds
                && let Some(seconds) = json.as_i64()
            {
                json = Value::from(seconds.saturating_mul(1000));
            }
            object.insert(field.name().clone(), json);
        }
        object
    }
}

/// An attribute value as JSON: numbers as numbers, sets as arrays, binary as text.
fn json_value(value: &AttributeValue) -> Value {
    let number = |n: &String| {
        (n.parse::<Number>())
            .map(Value::Number)
            .unwrap_or_else(|_| Value::String(n.clone()))
    };
    match value {
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::N(n) => number(n),
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::M(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), json_value(v))).collect())
        }
        AttributeValue::L(l) => Value::Array(l.iter().map(json_value).collect()),
        AttributeValue::Ss(s) => Value::Array(s.iter().cloned().map(Value::String).collect()),
        AttributeValue::Ns(n) => Value::Array(n.iter().map(number).collect()),
        AttributeValue::B(b) => Value::String(String::from_utf8_lossy(b.as_ref()).into_owned()),
        _ => Value::Null,
    }
}

#[async_trait]
impl LookupTable for DynamoDbLookup {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn key_columns(&self) -> &[usize] {
        &self.key_columns
    }

    fn status(&self) -> Option<Arc<ServiceStatus>> {
        Some(self.policy.status.clone())
    }

    fn describe(&self) -> String {
        match &self.cache {
            Some(_) => format!(
                "dynamodb {} (cache {} keys for {:?})",
                self.config.table, self.config.cache_max_rows, self.config.cache_ttl
            ),
            None => format!("dynamodb {} (no cache)", self.config.table),
        }
    }

    async fn lookup(&self, keys: Vec<ArrayRef>) -> Result<RecordBatch> {
        let (mut found, misses) = self.from_cache(self.key_items(&keys)?);
        if !misses.is_empty() {
            let read_at = Instant::now();
            let read = self
                .batch_get(misses.iter().map(|(_, k)| k.clone()).collect())
                .await?;
            let mut by_key: std::collections::HashMap<String, Arc<Item>> = (read.into_iter())
                .map(|item| (self.key_text(&item), Arc::new(item)))
                .collect();
            let mut cache =
                (self.cache.as_ref()).map(|c| c.lock().unwrap_or_else(|e| e.into_inner()));
            for (text, _) in misses {
                let item = by_key.remove(&text);
                found.extend(item.clone());
                if let Some(cache) = cache.as_mut() {
                    cache.put(text, Cached { read_at, item });
                }
            }
        }
        tracing::trace!(table = %self.name, rows = found.len(), "lookup");
        self.rows(&found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Options;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{
        Field, Int64Type, Schema, TimeUnit, TimestampMillisecondType,
    };

    fn lookup(encoding: &str) -> DynamoDbLookup {
        let options = Options::new(
            [
                ("table", "customers"),
                ("primary_key", "id"),
                ("timestamp_format", encoding),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("visits", DataType::Int64, true),
            Field::new(
                "seen",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                true,
            ),
        ]));
        let config = DynamoDbLookupConfig::from_options(options).unwrap();
        DynamoDbLookup::new("customers", config, schema, &["id".to_string()]).unwrap()
    }

    fn item(pairs: Vec<(&str, AttributeValue)>) -> Arc<Item> {
        Arc::new(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    #[test]
    fn items_become_rows_of_the_declared_columns() {
        let l = lookup("epoch_seconds");
        let rows = l
            .rows(&[
                item(vec![
                    ("id", AttributeValue::S("a".into())),
                    ("visits", AttributeValue::N("42".into())),
                    ("seen", AttributeValue::N("1714564800".into())),
                    ("tags", AttributeValue::Ss(vec!["x".into(), "y".into()])),
                    ("other", AttributeValue::Bool(true)),
                ]),
                item(vec![("id", AttributeValue::S("b".into()))]),
            ])
            .unwrap();
        assert_eq!(rows.num_rows(), 2);
        let visits = rows.column(1).as_primitive::<Int64Type>();
        assert_eq!(visits.value(0), 42);
        assert!(visits.is_null(1), "a missing attribute is NULL");
        let seen = rows.column(2).as_primitive::<TimestampMillisecondType>();
        assert_eq!(
            seen.value(0),
            1_714_564_800_000,
            "epoch seconds read as seconds"
        );
        let tags = rows.column(3).as_list::<i32>();
        assert_eq!(tags.value(0).len(), 2);
        // ISO-8601 text (the sink's default) reads too.
        let rows = lookup("iso8601")
            .rows(&[item(vec![
                ("id", AttributeValue::S("c".into())),
                ("seen", AttributeValue::S("2024-05-01T12:00:00Z".into())),
            ])])
            .unwrap();
        let seen = rows.column(2).as_primitive::<TimestampMillisecondType>();
        assert_eq!(seen.value(0), 1_714_564_800_000);
    }

    #[test]
    fn an_item_that_does_not_fit_is_an_error_naming_its_key() {
        let err = lookup("iso8601")
            .rows(&[item(vec![
                ("id", AttributeValue::S("d".into())),
                ("visits", AttributeValue::S("many".into())),
            ])])
            .unwrap_err();
        assert!(err.to_string().contains("customers"), "{err}");
    }

    #[test]
    fn the_join_must_give_the_whole_primary_key() {
        let options = Options::new(
            [("table", "t"), ("primary_key", "a, b")].map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, false),
            Field::new("b", DataType::Utf8, false),
        ]));
        let config = DynamoDbLookupConfig::from_options(options).unwrap();
        let err =
            DynamoDbLookup::new("t", config.clone(), schema.clone(), &["a".into()]).unwrap_err();
        assert!(err.to_string().contains("whole primary key"), "{err}");
        let ok = DynamoDbLookup::new("t", config, schema, &["b".into(), "a".into()]).unwrap();
        assert_eq!(ok.key_columns(), &[0, 1], "in primary-key order");
    }
}
