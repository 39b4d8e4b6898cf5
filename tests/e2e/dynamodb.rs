//! Emulator-backed tests of the DynamoDB sink against the local DynamoDB server started by
//! `scripts/test.sh` (DynamoDB Local). Without a server they are skipped, except under CI or
//! with `LAKETIDE_EMULATORS=1`, where a missing server fails.

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use common::dynamodb::{client, laketide, scan_by};
use common::proxy::{Action, FaultProxy, Rule};
use datafusion::arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array,
    ListArray, StringArray, StructArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use laketide_connectors::Options;
use laketide_connectors::dynamodb::{DynamoDbSink, DynamoDbSinkConfig};
use laketide_engine::Sink;

fn dynamodb_server() -> Option<String> {
    common::emulator(
        "DynamoDB",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "http://127.0.0.1:8000",
    )
}

fn sink(endpoint: &str, table: &str, extra: &[(&str, &str)]) -> DynamoDbSink {
    let mut pairs = vec![
        ("table".to_string(), table.to_string()),
        ("endpoint".to_string(), endpoint.to_string()),
        ("region".to_string(), "us-east-1".to_string()),
    ];
    pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = DynamoDbSinkConfig::from_options(Options::new(pairs).unwrap()).unwrap();
    DynamoDbSink::new("serving", config)
}

/// Every item of a table, by the text of its `id` attribute.
async fn scan(client: &Client, table: &str) -> BTreeMap<String, HashMap<String, AttributeValue>> {
    scan_by(client, table)
        .await
        .into_iter()
        .map(|item| {
            let id = match &item["id"] {
                AttributeValue::S(s) => s.clone(),
                AttributeValue::N(n) => n.clone(),
                other => format!("{other:?}"),
            };
            (id, item)
        })
        .collect()
}

fn ids_batch(ids: Vec<i64>, values: Vec<i64>) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("value", DataType::Int64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(Int64Array::from(values)),
        ],
    )
    .unwrap()
}

#[tokio::test]
async fn batches_above_25_rows_with_duplicate_keys_keep_the_last_row_per_key() {
    let Some(endpoint) = dynamodb_server() else {
        return;
    };
    let table = common::unique("batching");
    let mut s = sink(
        &endpoint,
        &table,
        &[("primary_key", "id"), ("create_if_missing", "true")],
    );
    let batch = ids_batch((0..100).map(|i| i % 70).collect(), (0..100).collect());
    s.open(batch.schema()).await.unwrap();
    s.write_batch(batch).await.unwrap();
    let summary = s.close().await.unwrap();
    assert_eq!(summary.rows_written, 70, "one write per key");
    assert!(
        summary.commits >= 3,
        "70 items need 3 requests: {summary:?}"
    );
    let items = scan(&client(&endpoint), &table).await;
    assert_eq!(items.len(), 70);
    // Keys 0..30 appeared twice: the later row (value 70..100) won.
    assert_eq!(items["5"]["value"], AttributeValue::N("75".into()));
    assert_eq!(items["50"]["value"], AttributeValue::N("50".into()));
}

#[tokio::test]
async fn every_arrow_type_maps_to_its_dynamodb_type() {
    let Some(endpoint) = dynamodb_server() else {
        return;
    };
    let table = common::unique("types");
    let mut s = sink(
        &endpoint,
        &table,
        &[
            ("primary_key", "id, at"),
            ("create_if_missing", "true"),
            ("ttl_column", "at"),
            ("ttl", "1d"),
        ],
    );
    let list =
        ListArray::from_iter_primitive::<Int64Type, _, _>(vec![Some(vec![Some(1), Some(2)])]);
    let strukt = StructArray::from(vec![(
        Arc::new(Field::new("country", DataType::Utf8, true)),
        Arc::new(StringArray::from(vec!["NL"])) as ArrayRef,
    )]);
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(StringArray::from(vec!["a"]))),
        (
            "at",
            Arc::new(TimestampMicrosecondArray::from(vec![1_714_564_800_000_000])),
        ),
        ("n", Arc::new(Int64Array::from(vec![42]))),
        ("f", Arc::new(Float64Array::from(vec![2.5]))),
        (
            "d",
            Arc::new(
                Decimal128Array::from(vec![12345])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
        ),
        ("b", Arc::new(BooleanArray::from(vec![true]))),
        ("bin", Arc::new(BinaryArray::from(vec![&b"\x00\x01"[..]]))),
        ("day", Arc::new(Date32Array::from(vec![19_844]))),
        ("nothing", Arc::new(StringArray::from(vec![None::<&str>]))),
        ("list", Arc::new(list)),
        ("geo", Arc::new(strukt)),
    ];
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap();
    s.open(schema).await.unwrap();
    s.write_batch(batch).await.unwrap();
    s.close().await.unwrap();
    let item = scan(&client(&endpoint), &table).await.remove("a").unwrap();
    use AttributeValue as V;
    assert_eq!(item["at"], V::S("2024-05-01T12:00:00Z".into()));
    assert_eq!(item["n"], V::N("42".into()));
    assert_eq!(item["f"], V::N("2.5".into()));
    assert_eq!(item["d"], V::N("123.45".into()));
    assert_eq!(item["b"], V::Bool(true));
    assert_eq!(
        item["bin"],
        V::B(aws_sdk_dynamodb::primitives::Blob::new(vec![0, 1]))
    );
    assert_eq!(item["day"], V::S("2024-05-01".into()));
    assert_eq!(item["nothing"], V::Null(true));
    assert_eq!(item["list"], V::L(vec![V::N("1".into()), V::N("2".into())]));
    assert_eq!(
        item["geo"],
        V::M(HashMap::from([("country".to_string(), V::S("NL".into()))]))
    );
    assert_eq!(item["ttl"], V::N((1_714_564_800i64 + 86_400).to_string()));
}

#[tokio::test]
async fn a_table_whose_key_does_not_match_is_refused_at_start() {
    let Some(endpoint) = dynamodb_server() else {
        return;
    };
    let db = client(&endpoint);
    let table = common::unique("mismatch");
    db.create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    // The rows' id is a number, the table's a string.
    let mut s = sink(&endpoint, &table, &[("primary_key", "id")]);
    let e = s
        .open(ids_batch(vec![], vec![]).schema())
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("has the key id S (HASH), but the sink's primary_key gives id N (HASH)"),
        "{e}"
    );
    let mut s = sink(
        &endpoint,
        &common::unique("absent"),
        &[("primary_key", "id")],
    );
    let e = s
        .open(ids_batch(vec![], vec![]).schema())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert!(e.to_string().contains("create_if_missing"), "{e}");
}

#[tokio::test]
async fn null_keys_follow_on_error() {
    let Some(endpoint) = dynamodb_server() else {
        return;
    };
    let table = common::unique("nullkeys");
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("value", DataType::Int64, true),
        ])),
        vec![
            Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
            Arc::new(Int64Array::from(vec![1, 2, 3])),
        ],
    )
    .unwrap();
    let mut s = sink(
        &endpoint,
        &table,
        &[
            ("primary_key", "id"),
            ("create_if_missing", "true"),
            ("on_error", "skip"),
        ],
    );
    s.open(batch.schema()).await.unwrap();
    s.write_batch(batch.clone()).await.unwrap();
    assert_eq!(s.bad_rows(), 1);
    assert_eq!(scan(&client(&endpoint), &table).await.len(), 2);
    let mut s = sink(&endpoint, &table, &[("primary_key", "id")]);
    s.open(batch.schema()).await.unwrap();
    let e = s.write_batch(batch).await.unwrap_err();
    assert!(e.to_string().contains("the key column `id` is NULL"), "{e}");
}

#[tokio::test]
async fn versions_only_move_forward_and_update_mode_writes_only_its_columns() {
    let Some(endpoint) = dynamodb_server() else {
        return;
    };
    let table = common::unique("versions");
    let mut s = sink(
        &endpoint,
        &table,
        &[
            ("primary_key", "id"),
            ("create_if_missing", "true"),
            ("version_column", "value"),
        ],
    );
    s.open(ids_batch(vec![], vec![]).schema()).await.unwrap();
    s.write_batch(ids_batch(vec![1, 2], vec![10, 10]))
        .await
        .unwrap();
    // An older version of 1 is ignored; a newer version of 2 wins.
    s.write_batch(ids_batch(vec![1, 2], vec![5, 20]))
        .await
        .unwrap();
    assert_eq!(s.stale_rows(), 1);
    let items = scan(&client(&endpoint), &table).await;
    assert_eq!(items["1"]["value"], AttributeValue::N("10".into()));
    assert_eq!(items["2"]["value"], AttributeValue::N("20".into()));

    // Update mode: `extra` stays, `value` changes.
    client(&endpoint)
        .update_item()
        .table_name(&table)
        .key("id", AttributeValue::N("1".into()))
        .update_expression("SET extra = :e")
        .expression_attribute_values(":e", AttributeValue::S("kept".into()))
        .send()
        .await
        .unwrap();
    let mut s = sink(
        &endpoint,
        &table,
        &[
            ("primary_key", "id"),
            ("mode", "update"),
            ("update_columns", "value"),
        ],
    );
    s.open(ids_batch(vec![], vec![]).schema()).await.unwrap();
    s.write_batch(ids_batch(vec![1], vec![99])).await.unwrap();
    let items = scan(&client(&endpoint), &table).await;
    assert_eq!(items["1"]["value"], AttributeValue::N("99".into()));
    assert_eq!(items["1"]["extra"], AttributeValue::S("kept".into()));
}

/// Throttles every third BatchWriteItem; of the others, forwards only the first half of the
/// items and reports the rest as unprocessed.
fn flaky_rule(table: String) -> (Rule, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let seen = calls.clone();
    let rule: Rule = Arc::new(move |target: &str, body: &[u8]| {
        if !target.ends_with(".BatchWriteItem") {
            return Action::Forward;
        }
        if seen.fetch_add(1, Ordering::Relaxed).is_multiple_of(3) {
            return Action::Reply {
                status: 400,
                body: r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"Rate exceeded"}"#.into(),
            };
        }
        let mut request: serde_json::Value = serde_json::from_slice(body).unwrap();
        let items = request["RequestItems"][&table].as_array().unwrap().clone();
        if items.len() < 2 {
            return Action::Forward;
        }
        let half = items.len() / 2;
        request["RequestItems"][&table] = serde_json::Value::Array(items[..half].to_vec());
        let rest = items[half..].to_vec();
        let table = table.clone();
        Action::Rewrite {
            body: serde_json::to_vec(&request).unwrap(),
            response: Box::new(move |answer| {
                let mut answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
                answer["UnprocessedItems"] = serde_json::json!({ table: rest });
                serde_json::to_vec(&answer).unwrap()
            }),
        }
    });
    (rule, calls)
}

#[tokio::test]
async fn unprocessed_items_and_throttling_are_retried_until_everything_is_written() {
    let Some(endpoint) = dynamodb_server() else {
        return;
    };
    let table = common::unique("flaky");
    let (rule, calls) = flaky_rule(table.clone());
    let proxy = FaultProxy::start(&endpoint, rule).await;
    let mut s = sink(
        &proxy.endpoint,
        &table,
        &[
            ("primary_key", "id"),
            ("create_if_missing", "true"),
            ("max_in_flight", "3"),
        ],
    );
    s.open(ids_batch(vec![], vec![]).schema()).await.unwrap();
    s.write_batch(ids_batch((0..200).collect(), (0..200).collect()))
        .await
        .unwrap();
    s.close().await.unwrap();
    let items = scan(&client(&endpoint), &table).await;
    assert_eq!(items.len(), 200, "nothing lost");
    assert!(s.status().throttles() > 0);
    assert!(
        calls.load(Ordering::Relaxed) > 8 + 8,
        "unprocessed items were re-sent"
    );
    assert!(proxy.injected.load(Ordering::Relaxed) > 0);
}

#[tokio::test]
async fn retries_end_in_a_clear_error_not_a_silent_drop() {
    let Some(endpoint) = dynamodb_server() else {
        return;
    };
    let table = common::unique("never");
    // Create the table directly, then put a proxy in front that never processes anything.
    let mut s = sink(
        &endpoint,
        &table,
        &[("primary_key", "id"), ("create_if_missing", "true")],
    );
    s.open(ids_batch(vec![], vec![]).schema()).await.unwrap();
    let t = table.clone();
    let rule: Rule = Arc::new(move |target: &str, body: &[u8]| {
        if !target.ends_with(".BatchWriteItem") {
            return Action::Forward;
        }
        let request: serde_json::Value = serde_json::from_slice(body).unwrap();
        let items = request["RequestItems"][&t].clone();
        Action::Reply {
            status: 200,
            body: serde_json::json!({ "UnprocessedItems": { t.clone(): items } }).to_string(),
        }
    });
    let proxy = FaultProxy::start(&endpoint, rule).await;
    let mut s = sink(
        &proxy.endpoint,
        &table,
        &[("primary_key", "id"), ("retry_timeout", "1s")],
    );
    s.open(ids_batch(vec![], vec![]).schema()).await.unwrap();
    let e = s
        .write_batch(ids_batch((0..30).collect(), (0..30).collect()))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("still unprocessed after retrying"),
        "{e}"
    );
}

#[tokio::test]
async fn file_to_hop_to_dynamodb_equals_the_batch_oracle() {
    let Some(endpoint) = dynamodb_server() else {
        return;
    };
    let table = common::unique("page-stats");
    let dir = tempfile::tempdir().unwrap();
    let generated = laketide(
        dir.path(),
        &[
            "generate", "--out", "data", "--events", "5000", "--files", "2",
        ],
        &endpoint,
    );
    assert!(generated.status.success());
    std::fs::write(
        dir.path().join("p.sql"),
        format!(
            "CREATE TABLE clicks (event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP,
               WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
             WITH (connector = 'file', path = 'data', mode = 'once');
             CREATE TABLE page_stats WITH (connector = 'dynamodb', table = '{table}',
               primary_key = 'page, window_start', create_if_missing = 'true');
             INSERT INTO page_stats
             SELECT page, window_start, window_end, count(*) AS views
             FROM HOP(clicks, ts, INTERVAL '1' SECOND, INTERVAL '2' SECOND)
             GROUP BY page, window_start, window_end;"
        ),
    )
    .unwrap();
    let run = laketide(dir.path(), &["run", "p.sql", "--quiet"], &endpoint);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let ctx = common::oracle_context(&dir.path().join("data")).await;
    let mut oracle = common::query_rows(
        &ctx,
        "WITH w AS (
           SELECT page, date_bin(INTERVAL '1 second', ts) AS t FROM clicks
         ), hops AS (
           SELECT page, t AS window_start FROM w
           UNION ALL SELECT page, t - INTERVAL '1 second' AS window_start FROM w
         )
         SELECT page, to_char(window_start, '%Y-%m-%dT%H:%M:%SZ') AS ws, count(*) AS views
         FROM hops GROUP BY page, window_start",
    )
    .await;
    oracle.sort();

    let text = |v: &AttributeValue| match v {
        AttributeValue::S(s) => s.clone(),
        AttributeValue::N(n) => n.clone(),
        other => format!("{other:?}"),
    };
    let mut stored: Vec<String> = scan_by(&client(&endpoint), &table)
        .await
        .iter()
        .map(|i| {
            format!(
                "{}|{}|{}",
                text(&i["page"]),
                text(&i["window_start"]),
                text(&i["views"])
            )
        })
        .collect();
    stored.sort();
    common::assert_same_rows("file -> HOP -> DynamoDB", &stored, &oracle);
}

/// Every item of `table` as `attr1|attr2|…` for `attributes`, sorted.
async fn stored_rows(endpoint: &str, table: &str, attributes: &[&str]) -> Vec<String> {
    let text = |v: Option<&AttributeValue>| match v {
        Some(AttributeValue::S(s)) => s.clone(),
        Some(AttributeValue::N(n)) => n.clone(),
        Some(other) => format!("{other:?}"),
        None => "MISSING".to_string(),
    };
    let mut stored: Vec<String> = scan_by(&client(endpoint), table)
        .await
        .iter()
        .map(|i| {
            attributes
                .iter()
                .map(|a| text(i.get(*a)))
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    stored.sort();
    stored
}

#[tokio::test]
async fn group_by_without_a_window_upserts_and_deletes_items_as_the_batch_oracle_says() {
    let Some(endpoint) = dynamodb_server() else {
        return;
    };
    let (all, few) = (common::unique("user-stats"), common::unique("rare-users"));
    let dir = tempfile::tempdir().unwrap();
    let generated = laketide(
        dir.path(),
        &[
            "generate", "--out", "data", "--events", "6000", "--files", "2", "--users", "2500",
        ],
        &endpoint,
    );
    assert!(generated.status.success());
    // Small batches and no update interval: every key is updated many times, and the HAVING
    // query deletes every user that reaches three events.
    std::fs::write(
        dir.path().join("p.sql"),
        format!(
            "SET update_interval = '0s';
             CREATE TABLE clicks (event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP)
             WITH (connector = 'file', path = 'data', mode = 'once', batch_size = '97');
             CREATE TABLE user_stats WITH (connector = 'dynamodb', table = '{all}',
               primary_key = 'user_id', create_if_missing = 'true');
             CREATE TABLE rare_users WITH (connector = 'dynamodb', table = '{few}',
               primary_key = 'user_id', create_if_missing = 'true');
             INSERT INTO user_stats
             SELECT user_id, count(*) AS events, count(DISTINCT page) AS pages, max(event_id) AS last_event,
                    count(*) FILTER (WHERE action = 'purchase') AS purchases
             FROM clicks GROUP BY user_id;
             INSERT INTO rare_users
             SELECT user_id, count(*) AS events FROM clicks GROUP BY user_id HAVING count(*) < 3;"
        ),
    )
    .unwrap();
    let run = laketide(dir.path(), &["run", "p.sql", "--quiet"], &endpoint);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let ctx = common::oracle_context(&dir.path().join("data")).await;
    let mut oracle = common::query_rows(
        &ctx,
        "SELECT user_id, count(*), count(DISTINCT page), max(event_id),
                count(*) FILTER (WHERE action = 'purchase')
         FROM clicks GROUP BY user_id",
    )
    .await;
    oracle.sort();
    let stored = stored_rows(
        &endpoint,
        &all,
        &["user_id", "events", "pages", "last_event", "purchases"],
    )
    .await;
    common::assert_same_rows("GROUP BY user_id -> DynamoDB", &stored, &oracle);

    let mut oracle = common::query_rows(
        &ctx,
        "SELECT user_id, count(*) FROM clicks GROUP BY user_id HAVING count(*) < 3",
    )
    .await;
    oracle.sort();
    let frequent = common::query_rows(
        &ctx,
        "SELECT count(*) FROM (SELECT user_id FROM clicks GROUP BY user_id HAVING count(*) >= 3)",
    )
    .await;
    assert_ne!(
        frequent,
        vec!["0".to_string()],
        "some users must be deleted"
    );
    let stored = stored_rows(&endpoint, &few, &["user_id", "events"]).await;
    common::assert_same_rows("HAVING -> DynamoDB deletes", &stored, &oracle);
}

#[tokio::test]
async fn the_benchmark_reports_dynamodb_items_per_second_by_requests_in_flight() {
    let Some(endpoint) = dynamodb_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = laketide(
        dir.path(),
        &[
            "bench",
            "--events",
            "20000",
            "--dir",
            "bench",
            "--dynamodb",
            "600",
        ],
        &endpoint,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for in_flight in [1, 4, 16] {
        assert!(
            text.contains(&format!(
                "bench dynamodb sink ({in_flight} requests in flight): 600 items in"
            )),
            "{text}"
        );
    }
    assert!(
        text.contains("bench kinesis decode (plain JSON records): 20000 records"),
        "{text}"
    );
}

#[tokio::test]
async fn the_customer_live_stats_example_serves_current_rows_per_customer_and_day() {
    let Some(endpoint) = dynamodb_server() else {
        return;
    };
    let table = common::unique("example-customer-stats");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let data = repo.join("examples/data/clicks");
    let sql = std::fs::read_to_string(repo.join("examples/customer_live_stats.sql"))
        .unwrap()
        .replace("table = 'customer_stats'", &format!("table = '{table}'"))
        .replace("'examples/data/clicks/'", &format!("'{}'", data.display()));
    std::fs::write(dir.path().join("example.sql"), sql).unwrap();
    let run = laketide(dir.path(), &["run", "example.sql"], &endpoint);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let ctx = common::oracle_context(&data).await;
    let mut oracle = common::query_rows(
        &ctx,
        "SELECT user_id, count(*), count(DISTINCT page), count(*) FILTER (WHERE action = 'purchase')
         FROM clicks GROUP BY user_id",
    )
    .await;
    oracle.sort();
    let stored = stored_rows(
        &endpoint,
        &table,
        &["user_id", "events", "pages", "purchases"],
    )
    .await;
    common::assert_same_rows("customer_stats in DynamoDB", &stored, &oracle);

    // The example's own decoding rules read its mixed time formats (`laketide query -f`).
    let query = |sql: &str| {
        let out = laketide(
            dir.path(),
            &["query", "-f", "example.sql", "--format", "csv", sql],
            &endpoint,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let stored = query("SELECT day, action, events FROM daily_actions ORDER BY day, action");
    let expected = query(
        "SELECT to_char(ts, '%Y-%m-%d') AS day, action, count(*) AS events FROM clicks GROUP BY 1, 2 ORDER BY 1, 2",
    );
    assert!(expected.len() > 2, "{expected:?}");
    common::assert_same_rows("daily_actions in Delta", &stored, &expected);
}

#[tokio::test]
async fn the_dynamodb_example_runs_as_documented() {
    let Some(endpoint) = dynamodb_server() else {
        return;
    };
    let table = common::unique("example-page-stats");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let sql = std::fs::read_to_string(repo.join("examples/clicks_to_dynamodb.sql"))
        .unwrap()
        .replace("table = 'page_stats'", &format!("table = '{table}'"))
        .replace(
            "'examples/data/clicks/'",
            &format!("'{}'", repo.join("examples/data/clicks").display()),
        );
    std::fs::write(dir.path().join("example.sql"), sql).unwrap();
    let run = laketide(dir.path(), &["run", "example.sql"], &endpoint);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    let written: usize = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("page_stats: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no sink line in {err}"));
    let items = scan_by(&client(&endpoint), &table).await;
    assert_eq!(items.len(), written);
    assert!(written > 0);
    assert!(
        items
            .iter()
            .all(|i| matches!(i.get("ttl"), Some(AttributeValue::N(_))))
    );
}
