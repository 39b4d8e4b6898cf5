//! Emulator-backed end-to-end tests of Kinesis pipelines: `laketide produce`, a Kinesis ->
//! window -> Kinesis run against the batch oracle, and the Kinesis example as documented. The
//! local Kinesis server is started by `scripts/test.sh`; under CI or with
//! `LAKETIDE_EMULATORS=1` a missing server fails.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::ShardIteratorType;
use common::kinesis::*;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use laketide_connectors::kinesis::{KinesisSource, KinesisSourceConfig};
use laketide_connectors::{MetadataColumn, Options};
use laketide_engine::{BadRecords, OnError, Source, SourcePoll};

#[tokio::test]
async fn produce_writes_kpl_aggregates_that_the_source_deaggregates() {
    let Some(endpoint) = kinesis_server() else {
        return;
    };
    let stream = common::unique("produce");
    let dir = tempfile::tempdir().unwrap();
    let out = laketide(
        dir.path(),
        &[
            "produce",
            "--stream",
            &stream,
            "--create",
            "2",
            "--events",
            "1000",
            "--aggregate",
            "25",
            "--partition-key",
            "user_id",
        ],
        &endpoint,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wrote 1000 records"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 1000 user records in 40 Kinesis records.
    let kinesis = client(&endpoint);
    let mut stored = 0;
    for shard in kinesis
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .unwrap()
        .shards()
    {
        let it = kinesis
            .get_shard_iterator()
            .stream_name(&stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap();
        let records = kinesis
            .get_records()
            .shard_iterator(it.shard_iterator().unwrap())
            .send()
            .await
            .unwrap();
        stored += records.records().len();
    }
    assert_eq!(stored, 40);

    let config = KinesisSourceConfig::from_options(
        Options::new([
            ("stream".to_string(), stream.clone()),
            ("endpoint".to_string(), endpoint.clone()),
            ("region".to_string(), "us-east-1".to_string()),
            ("start_position".to_string(), "trim_horizon".to_string()),
        ])
        .unwrap(),
    )
    .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Int64, true),
        Field::new("user_id", DataType::Utf8, true),
        Field::new("pk", DataType::Utf8, true),
    ]));
    let meta = vec![MetadataColumn {
        column: "pk".into(),
        key: "partition_key".into(),
    }];
    let bad = Arc::new(BadRecords::new("clicks", OnError::Fail));
    let mut s = KinesisSource::new(config, schema, meta, bad, BTreeMap::new()).unwrap();
    s.open().await.unwrap();
    let mut ids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ids.len() < 1000 {
        assert!(Instant::now() < deadline, "only {} rows", ids.len());
        if let SourcePoll::Batch { batch, .. } = s.poll_next().await.unwrap() {
            let id = batch.column(0).as_primitive::<Int64Type>();
            let user = batch.column(1).as_string::<i32>();
            let pk = batch.column(2).as_string::<i32>();
            for i in 0..batch.num_rows() {
                assert_eq!(user.value(i), pk.value(i), "each user record keeps its key");
                ids.push(id.value(i));
            }
        }
    }
    ids.sort();
    assert_eq!(ids, (0..1000).collect::<Vec<_>>());
}

/// `page|window_start|views|revenue (2 decimals)` for comparing with the oracle.
fn result_row(v: &serde_json::Value) -> String {
    format!(
        "{}|{}|{}|{:.2}",
        v["page"].as_str().unwrap(),
        v["window_start"].as_str().unwrap(),
        v["views"].as_i64().unwrap(),
        v["revenue"].as_f64().unwrap_or(0.0)
    )
}

#[tokio::test]
async fn kinesis_to_window_to_kinesis_matches_the_batch_oracle() {
    let Some(endpoint) = kinesis_server() else {
        return;
    };
    let kinesis = client(&endpoint);
    let input = create_stream(&kinesis, "clicks-in", 2).await;
    let output = create_stream(&kinesis, "stats-out", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let generated = laketide(
        dir.path(),
        &[
            "generate", "--out", "data", "--events", "3000", "--files", "1",
        ],
        &endpoint,
    );
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let produced = laketide(
        dir.path(),
        &[
            "produce",
            "--stream",
            &input,
            "--file",
            "data",
            "--partition-key",
            "user_id",
        ],
        &endpoint,
    );
    assert!(
        produced.status.success(),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );

    std::fs::write(
        dir.path().join("p.sql"),
        format!(
            "CREATE TABLE clicks (event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP,
               WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
             WITH (connector = 'kinesis', stream = '{input}', start_position = 'trim_horizon', poll_interval = '300ms');
             CREATE TABLE page_stats WITH (connector = 'kinesis', stream = '{output}', partition_key = 'page');
             INSERT INTO page_stats
             SELECT page, window_start, window_end, count(*) AS views, sum(amount) AS revenue
             FROM TUMBLE(clicks, ts, INTERVAL '1' SECOND) GROUP BY page, window_start, window_end;"
        ),
    )
    .unwrap();
    let ctx = common::oracle_context(&dir.path().join("data")).await;
    let mut oracle = common::query_rows(
        &ctx,
        "SELECT page, date_bin(INTERVAL '1 second', ts) AS ws, count(*) AS views, sum(amount) AS revenue
         FROM clicks GROUP BY page, ws ORDER BY page, ws",
    )
    .await;
    oracle = oracle
        .iter()
        .map(|r| {
            let f: Vec<&str> = r.split('|').collect();
            format!(
                "{}|{}|{}|{:.2}",
                f[0],
                f[1],
                f[2],
                f[3].parse::<f64>().unwrap()
            )
        })
        .collect();
    // Windows ending at least 2 s before the last event close while running; the rest when
    // the run is stopped.
    let max_ts =
        common::query_rows(&ctx, "SELECT max(ts) - INTERVAL '2 seconds' FROM clicks").await;
    let closed_before_stop = common::query_rows(
        &ctx,
        &format!(
            "SELECT count(*) FROM (SELECT page, date_bin(INTERVAL '1 second', ts) AS ws FROM clicks GROUP BY page, ws)
             WHERE ws + INTERVAL '1 second' <= TIMESTAMP '{}'",
            max_ts[0]
        ),
    )
    .await[0]
        .parse::<usize>()
        .unwrap();

    // Without checkpoints, stopping flushes the open windows, so every window is compared.
    let mut run = Running::start_with(dir.path(), "p.sql", &endpoint, &["--no-checkpoints"]);
    let (k, out) = (&kinesis, output.as_str());
    run.wait_for("the windows closed while running", || async move {
        read_all(k, out).await.len() >= closed_before_stop
    })
    .await;
    run.stop();

    let mut streamed: Vec<String> = read_all(&kinesis, &output)
        .await
        .iter()
        .map(result_row)
        .collect();
    streamed.sort();
    oracle.sort();
    common::assert_same_rows("kinesis -> TUMBLE -> kinesis", &streamed, &oracle);
}

fn query_csv(dir: &Path, sql: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_laketide"))
        .args(["query", "--lake", "lake", "--format", "csv", sql])
        .current_dir(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn the_kinesis_example_runs_as_documented() {
    let Some(endpoint) = kinesis_server() else {
        return;
    };
    let stream = common::unique("example-clicks");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let sql = std::fs::read_to_string(repo.join("examples/kinesis_to_lake.sql"))
        .unwrap()
        .replace("stream = 'clicks'", &format!("stream = '{stream}'"));
    std::fs::write(dir.path().join("example.sql"), sql).unwrap();
    // As in the example's header, with fewer events.
    let produced = laketide(
        dir.path(),
        &[
            "produce",
            "--stream",
            &stream,
            "--create",
            "2",
            "--events",
            "2000",
            "--partition-key",
            "user_id",
        ],
        &endpoint,
    );
    assert!(
        produced.status.success(),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );
    // Events ten minutes later on every shard (20 random keys) move the watermark past every
    // window of the first 2000.
    let later = chrono::Utc::now() + chrono::Duration::minutes(10);
    let lines: String = (0..20)
        .map(|i| {
            format!(
                "{{\"event_id\":{},\"user_id\":\"u{i}\",\"page\":\"/home\",\"action\":\"view\",\"amount\":0,\"ts\":\"{}\"}}\n",
                2000 + i,
                later.format("%Y-%m-%dT%H:%M:%S%.3fZ")
            )
        })
        .collect();
    std::fs::write(dir.path().join("later.json"), lines).unwrap();
    let produced = laketide(
        dir.path(),
        &["produce", "--stream", &stream, "--file", "later.json"],
        &endpoint,
    );
    assert!(
        produced.status.success(),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );

    let mut run = Running::start(dir.path(), "example.sql", &endpoint);
    let path = dir.path();
    run.wait_for("the closed windows were committed", || async move {
        query_csv(path, "SELECT sum(views) AS v FROM page_stats") == "v\n2000"
    })
    .await;
    run.stop();
    // Stopping took a last checkpoint: the window of the later events is still open in it and
    // not written; every written row has an arrival time.
    assert_eq!(
        query_csv(
            dir.path(),
            "SELECT sum(views) AS v, count(last_arrival) = count(*) AS delays FROM page_stats"
        ),
        "v,delays\n2000,true"
    );
}
