//! Lookup joins against DynamoDB (the local DynamoDB server that `scripts/test.sh` starts):
//! generated clicks enriched with customers read by key, through a proxy that throttles and
//! leaves keys unprocessed, must equal the same JOIN as a DataFusion batch query; and the
//! cache must read every key once.

use crate::common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::dynamodb::laketide;
use common::proxy::{Action, FaultProxy, Rule};
use common::{assert_same_rows, clicks_schema, delta_context, query_rows, register_json_files};
use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use laketide::datagen::{ClickstreamSpec, write_clickstream};
use laketide::pipeline::run_sql;
use laketide_connectors::Options;
use laketide_connectors::dynamodb::{DynamoDbSink, DynamoDbSinkConfig};
use laketide_engine::{RunOptions, Sink};

const USERS: u32 = 700;
const SEGMENTS: [&str; 4] = ["gold", "silver", "bronze", "trial"];

fn dynamodb_server() -> Option<String> {
    common::emulator(
        "DynamoDB",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "http://127.0.0.1:8000",
    )
}

fn customers_schema() -> Schema {
    Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("segment", DataType::Utf8, true),
        Field::new("country", DataType::Utf8, true),
    ])
}

/// Customers of two users in three (every third user has none), with a NULL country now
/// and then; written to DynamoDB table `table` and, for the oracle, to `dir/customers.json`.
async fn write_customers(endpoint: &str, table: &str, dir: &std::path::Path) {
    let users: Vec<u32> = (0..USERS).filter(|n| n % 3 != 0).collect();
    let ids: Vec<String> = users.iter().map(|n| format!("u{n}")).collect();
    let segments: Vec<&str> = users.iter().map(|n| SEGMENTS[*n as usize % 4]).collect();
    let countries: Vec<Option<String>> = (users.iter())
        .map(|n| (n % 5 != 0).then(|| format!("C{}", n % 7)))
        .collect();
    let batch = RecordBatch::try_new(
        Arc::new(customers_schema()),
        vec![
            Arc::new(StringArray::from(ids.clone())),
            Arc::new(StringArray::from(segments.clone())),
            Arc::new(StringArray::from(countries.clone())),
        ],
    )
    .unwrap();
    let options = Options::new(
        [
            ("table", table),
            ("endpoint", endpoint),
            ("region", "us-east-1"),
            ("primary_key", "user_id"),
            ("create_if_missing", "true"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .unwrap();
    let mut sink = DynamoDbSink::new(
        "customers",
        DynamoDbSinkConfig::from_options(options).unwrap(),
    );
    sink.open(batch.schema()).await.unwrap();
    sink.write_batch(batch).await.unwrap();
    sink.close().await.unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let mut file = std::fs::File::create(dir.join("customers.json")).unwrap();
    for ((id, segment), country) in ids.iter().zip(&segments).zip(&countries) {
        let line = serde_json::json!({"user_id": id, "segment": segment, "country": country});
        writeln!(file, "{line}").unwrap();
    }
}

/// A proxy rule that throttles every fourth BatchGetItem and answers only half of the keys of
/// the others (the rest come back as UnprocessedKeys); counts the keys it lets through.
fn flaky_reads(table: String) -> (Rule, Arc<AtomicU64>) {
    let keys_read = Arc::new(AtomicU64::new(0));
    let calls = AtomicU64::new(0);
    let read = keys_read.clone();
    let rule: Rule = Arc::new(move |target: &str, body: &[u8]| {
        if !target.ends_with(".BatchGetItem") {
            return Action::Forward;
        }
        if calls.fetch_add(1, Ordering::Relaxed) % 4 == 1 {
            return Action::Reply {
                status: 400,
                body: r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"Rate exceeded"}"#.into(),
            };
        }
        let mut request: serde_json::Value = serde_json::from_slice(body).unwrap();
        let keys = request["RequestItems"][&table]["Keys"]
            .as_array()
            .unwrap()
            .clone();
        if keys.len() < 2 {
            read.fetch_add(keys.len() as u64, Ordering::Relaxed);
            return Action::Forward;
        }
        let half = keys.len() / 2;
        read.fetch_add(half as u64, Ordering::Relaxed);
        request["RequestItems"][&table]["Keys"] = serde_json::Value::Array(keys[..half].to_vec());
        let rest = keys[half..].to_vec();
        let table = table.clone();
        Action::Rewrite {
            body: serde_json::to_vec(&request).unwrap(),
            response: Box::new(move |answer| {
                let mut answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
                answer["UnprocessedKeys"] = serde_json::json!({ table: { "Keys": rest } });
                serde_json::to_vec(&answer).unwrap()
            }),
        }
    });
    (rule, keys_read)
}

const REVENUE: &str =
    "SELECT window_start, window_end, c.segment, count(*) AS clicks, sum(k.amount) AS revenue
     FROM TUMBLE(clicks, ts, INTERVAL '2' SECOND) k
     JOIN customers FOR SYSTEM_TIME AS OF k.proc_time AS c ON k.user_id = c.user_id
     GROUP BY window_start, window_end, c.segment";

const REVENUE_BATCH: &str =
    "SELECT date_bin(INTERVAL '2 seconds', k.ts, TIMESTAMP '1970-01-01T00:00:00') AS window_start,
            c.segment, count(*) AS clicks, sum(k.amount) AS revenue
     FROM clicks k JOIN customers c ON k.user_id = c.user_id
     GROUP BY 1, c.segment";

const ENRICHED: &str = "SELECT k.event_id, c.segment, c.country
     FROM clicks k LEFT JOIN customers FOR SYSTEM_TIME AS OF PROCTIME() AS c
       ON k.user_id = c.user_id AND c.segment <> 'trial'";

const ENRICHED_BATCH: &str = "SELECT k.event_id, c.segment, c.country
     FROM clicks k LEFT JOIN customers c ON k.user_id = c.user_id AND c.segment <> 'trial'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_lookups_enrich_clicks_as_the_batch_join_says_reading_each_key_once() {
    let Some(endpoint) = dynamodb_server() else {
        return;
    };
    let table = common::unique("customers");
    let dir = tempfile::tempdir().unwrap();
    let clicks = dir.path().join("clicks");
    let spec = ClickstreamSpec {
        events: 20_000,
        files: 2,
        users: USERS,
        seed: 23,
        ..Default::default()
    };
    write_clickstream(&clicks, &spec).unwrap();
    write_customers(&endpoint, &table, &dir.path().join("customers")).await;
    let (rule, keys_read) = flaky_reads(table.clone());
    let proxy = FaultProxy::start(&endpoint, rule).await;

    let lake = dir.path().join("lake");
    let pipeline = format!(
        "CREATE TABLE clicks (
           event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP,
           proc_time AS PROCTIME(),
           WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
         ) WITH (connector = 'file', path = '{}', format = 'json', mode = 'once', batch_size = 700);
         CREATE TABLE customers (user_id TEXT, segment TEXT, country TEXT, PRIMARY KEY (user_id) NOT ENFORCED)
           WITH (connector = 'dynamodb', table = '{table}', endpoint = '{}', region = 'us-east-1',
                 lookup.cache.ttl = '10m', max_in_flight = 3);
         CREATE TABLE revenue WITH (connector = 'delta', path = '{}');
         CREATE TABLE enriched WITH (connector = 'delta', path = '{}');
         INSERT INTO revenue {REVENUE};
         INSERT INTO enriched {ENRICHED};",
        clicks.display(),
        proxy.endpoint,
        lake.join("revenue").display(),
        lake.join("enriched").display(),
    );
    let summary = run_sql(&pipeline, RunOptions::default()).await.unwrap();
    assert_eq!(summary.totals.records_in, 20_000);
    assert!(
        summary.totals.throttles > 0,
        "the lookups' throttles and unprocessed keys are in the run's metrics"
    );

    let oracle = SessionContext::new();
    register_json_files(&oracle, "clicks", &clicks, &clicks_schema()).await;
    register_json_files(
        &oracle,
        "customers",
        &dir.path().join("customers"),
        &customers_schema(),
    )
    .await;
    let canonical = "SELECT CAST(window_start AS VARCHAR), segment, CAST(clicks AS VARCHAR), CAST(round(revenue, 2) AS VARCHAR) FROM r ORDER BY 1, 2";
    oracle
        .sql(&format!("CREATE VIEW r AS {REVENUE_BATCH}"))
        .await
        .unwrap();
    let expected = query_rows(&oracle, canonical).await;
    assert!(
        expected.len() > 16,
        "windows of every segment: {expected:?}"
    );
    let actual = query_rows(&delta_context("r", &lake.join("revenue")).await, canonical).await;
    assert_same_rows("revenue by segment (INNER lookup)", &actual, &expected);

    let canonical = "SELECT CAST(event_id AS VARCHAR), segment, country FROM e ORDER BY 1";
    oracle
        .sql(&format!("CREATE VIEW e AS {ENRICHED_BATCH}"))
        .await
        .unwrap();
    let expected = query_rows(&oracle, canonical).await;
    assert_eq!(expected.len(), 20_000);
    let unmatched = expected.iter().filter(|r| r.ends_with("NULL|NULL")).count();
    assert!(unmatched > 1_000 && unmatched < 15_000, "{unmatched}");
    let actual = query_rows(&delta_context("e", &lake.join("enriched")).await, canonical).await;
    assert_same_rows("enriched clicks (LEFT lookup)", &actual, &expected);

    // Each of the two lookup joins read every user once: misses are cached too, and the
    // unprocessed keys were read again until answered.
    let distinct = query_rows(&oracle, "SELECT count(DISTINCT user_id) FROM clicks").await;
    let distinct: u64 = distinct[0].parse().unwrap();
    assert_eq!(keys_read.load(Ordering::Relaxed), 2 * distinct);
    assert!(
        proxy.injected.load(Ordering::Relaxed) > 0,
        "throttles were injected"
    );
}

#[tokio::test]
async fn the_lookup_example_loads_customers_then_enriches_clicks_as_documented() {
    let Some(endpoint) = dynamodb_server() else {
        return;
    };
    let table = common::unique("example-customers");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let (clicks, customers) = (
        repo.join("examples/data/clicks"),
        repo.join("examples/data/customers"),
    );
    let lookup_options = "connector = 'dynamodb', table = 'customers', lookup.cache.ttl = '60s'";
    let enrich = std::fs::read_to_string(repo.join("examples/enrich_from_dynamodb.sql")).unwrap();
    assert!(
        enrich.contains(lookup_options),
        "the example's lookup table is as tested"
    );
    for name in ["load_customers.sql", "enrich_from_dynamodb.sql"] {
        let sql = std::fs::read_to_string(repo.join("examples").join(name))
            .unwrap()
            .replace("table = 'customers'", &format!("table = '{table}'"))
            .replace(
                "'examples/data/",
                &format!("'{}/examples/data/", repo.display()),
            );
        std::fs::write(dir.path().join(name), sql).unwrap();
        let run = laketide(dir.path(), &["run", name, "--quiet"], &endpoint);
        assert!(
            run.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    // The batch oracle: the same files read with the example's own decoding rules (its clicks
    // mix epoch milliseconds and ISO-8601 times) by `laketide query`, the customers from
    // their file instead of DynamoDB, and the result from the lake.
    let oracle = enrich
        .replace(
            lookup_options,
            &format!(
                "connector = 'file', path = '{}', format = 'json'",
                customers.display()
            ),
        )
        .replace(
            "'examples/data/clicks/'",
            &format!("'{}'", clicks.display()),
        );
    std::fs::write(dir.path().join("oracle.sql"), oracle).unwrap();
    let query = |sql: &str| {
        let out = laketide(
            dir.path(),
            &["query", "-f", "oracle.sql", "--format", "csv", sql],
            &endpoint,
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text.lines().map(str::to_string).collect::<Vec<_>>()
    };
    let expected = query(
        "SELECT date_bin(INTERVAL '1 minute', k.ts, TIMESTAMP '1970-01-01T00:00:00') AS window_start,
                c.segment, count(*) AS clicks, round(sum(k.amount), 2) AS revenue
         FROM clicks k JOIN customers c ON k.user_id = c.user_id
         GROUP BY 1, 2 ORDER BY 1, 2",
    );
    assert!(expected.len() > 4, "{expected:?}");
    let actual = query(
        "SELECT window_start, segment, clicks, round(revenue, 2) AS revenue
         FROM revenue_by_segment ORDER BY 1, 2",
    );
    assert_same_rows("the example's revenue by segment", &actual, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_table_written_by_one_pipeline_enriches_the_clicks_of_another() {
    let dir = tempfile::tempdir().unwrap();
    let clicks = dir.path().join("clicks");
    let spec = ClickstreamSpec {
        events: 8_000,
        files: 2,
        users: USERS,
        seed: 29,
        ..Default::default()
    };
    write_clickstream(&clicks, &spec).unwrap();
    // The customers, as JSON lines for the first pipeline and the oracle.
    let customers = dir.path().join("customers");
    std::fs::create_dir_all(&customers).unwrap();
    let lines: String = (0..USERS)
        .filter(|n| n % 3 != 0)
        .map(|n| {
            format!(
                "{}\n",
                serde_json::json!({"user_id": format!("u{n}"), "segment": SEGMENTS[n as usize % 4], "country": format!("C{}", n % 7)})
            )
        })
        .collect();
    std::fs::write(customers.join("customers.json"), lines).unwrap();
    let lake = dir.path().join("lake");
    let load = format!(
        "CREATE TABLE profiles (user_id TEXT, segment TEXT, country TEXT)
           WITH (connector = 'file', path = '{}', format = 'json', mode = 'once');
         CREATE TABLE customers (PRIMARY KEY (user_id)) WITH (connector = 'delta', path = '{}');
         INSERT INTO customers SELECT user_id, segment, country FROM profiles;",
        customers.display(),
        lake.join("customers").display()
    );
    run_sql(&load, RunOptions::default()).await.unwrap();
    let enrich = format!(
        "CREATE TABLE clicks (
           event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP,
           WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
         ) WITH (connector = 'file', path = '{}', format = 'json', mode = 'once', batch_size = 500);
         CREATE TABLE customers (user_id TEXT, segment TEXT, country TEXT)
           WITH (connector = 'delta', path = '{}', lookup.reload_interval = '1m');
         CREATE TABLE enriched WITH (connector = 'delta', path = '{}');
         INSERT INTO enriched {ENRICHED};",
        clicks.display(),
        lake.join("customers").display(),
        lake.join("enriched").display(),
    );
    run_sql(&enrich, RunOptions::default()).await.unwrap();
    let oracle = SessionContext::new();
    register_json_files(&oracle, "clicks", &clicks, &clicks_schema()).await;
    register_json_files(&oracle, "customers", &customers, &customers_schema()).await;
    oracle
        .sql(&format!("CREATE VIEW e AS {ENRICHED_BATCH}"))
        .await
        .unwrap();
    let canonical = "SELECT CAST(event_id AS VARCHAR), segment, country FROM e ORDER BY 1";
    let expected = query_rows(&oracle, canonical).await;
    assert_eq!(expected.len(), 8_000);
    let actual = query_rows(&delta_context("e", &lake.join("enriched")).await, canonical).await;
    assert_same_rows("clicks enriched from Delta", &actual, &expected);
}

#[tokio::test]
async fn a_lookup_in_a_missing_dynamodb_table_fails_with_a_clear_error() {
    let Some(endpoint) = dynamodb_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let clicks = dir.path().join("clicks");
    let spec = ClickstreamSpec {
        events: 100,
        files: 1,
        ..Default::default()
    };
    write_clickstream(&clicks, &spec).unwrap();
    let table = common::unique("never-created");
    let sql = format!(
        "CREATE TABLE clicks (event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP)
           WITH (connector = 'file', path = '{}', mode = 'once');
         CREATE TABLE customers (user_id TEXT, segment TEXT, PRIMARY KEY (user_id))
           WITH (connector = 'dynamodb', table = '{table}', endpoint = '{endpoint}', region = 'us-east-1');
         CREATE TABLE out WITH (connector = 'blackhole');
         INSERT INTO out SELECT k.event_id, c.segment
         FROM clicks k LEFT JOIN customers FOR SYSTEM_TIME AS OF PROCTIME() AS c ON k.user_id = c.user_id;",
        clicks.display()
    );
    let err = run_sql(&sql, RunOptions::default()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&table) && text.contains("does not exist"),
        "{text}"
    );
}
