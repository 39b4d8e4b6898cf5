//! Emulator-backed tests of the Kinesis connector against the local Kinesis server started by
//! `scripts/test.sh` (kinesis-local, the kinesis-mock engine). Without a server they are
//! skipped, except under CI or with `LAKETIDE_EMULATORS=1`, where a missing server fails.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{ShardIteratorType, StreamStatus};
use common::proxy::{Action, FaultProxy, Rule};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use laketide_connectors::kinesis::{
    KinesisSink, KinesisSinkConfig, KinesisSource, KinesisSourceConfig, ShardPosition, kpl,
};
use laketide_connectors::{MetadataColumn, Options};
use laketide_engine::{BadRecords, OnError, Sink, Source, SourcePoll};

fn kinesis_server() -> Option<String> {
    common::emulator(
        "Kinesis",
        "AWS_ENDPOINT_URL_KINESIS",
        "http://127.0.0.1:4568",
    )
}

fn client(endpoint: &str) -> Client {
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "testtest", None, None, "tests"))
        .build();
    Client::from_conf(config)
}

async fn wait_active(client: &Client, stream: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .unwrap();
        if out.stream_description_summary().unwrap().stream_status() == &StreamStatus::Active {
            return;
        }
        assert!(Instant::now() < deadline, "stream {stream} not active");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create_stream(client: &Client, prefix: &str, shards: i32) -> String {
    let stream = common::unique(prefix);
    client
        .create_stream()
        .stream_name(&stream)
        .shard_count(shards)
        .send()
        .await
        .unwrap();
    wait_active(client, &stream).await;
    stream
}

/// Writes `{"key":K,"n":N}` records with partition key K; returns their sequence numbers.
async fn put_numbered(client: &Client, stream: &str, keys: usize, from: u64, to: u64) {
    let mut entries = Vec::new();
    for n in from..to {
        for k in 0..keys {
            let key = format!("k{k}");
            entries.push(
                aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                    .partition_key(&key)
                    .data(Blob::new(format!("{{\"key\":\"{key}\",\"n\":{n}}}")))
                    .build()
                    .unwrap(),
            );
        }
    }
    for chunk in entries.chunks(500) {
        let out = client
            .put_records()
            .stream_name(stream)
            .set_records(Some(chunk.to_vec()))
            .send()
            .await
            .unwrap();
        assert_eq!(out.failed_record_count(), Some(0));
    }
}

fn numbered_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
        Field::new("shard", DataType::Utf8, true),
        Field::new("pk", DataType::Utf8, true),
    ]))
}

fn metadata() -> Vec<MetadataColumn> {
    vec![
        MetadataColumn {
            column: "shard".into(),
            key: "shard_id".into(),
        },
        MetadataColumn {
            column: "pk".into(),
            key: "partition_key".into(),
        },
    ]
}

fn source(
    endpoint: &str,
    stream: &str,
    extra: &[(&str, &str)],
    positions: BTreeMap<String, ShardPosition>,
) -> KinesisSource {
    let mut pairs = vec![
        ("stream".to_string(), stream.to_string()),
        ("endpoint".to_string(), endpoint.to_string()),
        ("region".to_string(), "us-east-1".to_string()),
        ("shard_discovery_interval".to_string(), "300ms".to_string()),
        ("poll_interval".to_string(), "300ms".to_string()),
    ];
    pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = KinesisSourceConfig::from_options(Options::new(pairs).unwrap()).unwrap();
    let bad = Arc::new(BadRecords::new("numbers", OnError::Fail));
    KinesisSource::new(config, numbered_schema(), metadata(), bad, positions).unwrap()
}

/// What a source delivered, in order.
#[derive(Debug, Default)]
struct Delivered {
    rows: Vec<(String, i64, String, String)>,
    /// `started:<shard>`, `rows:<shard>`, `finished:<shard>` in the order they happened.
    events: Vec<String>,
}

impl Delivered {
    fn add(&mut self, split: &str, batch: &RecordBatch) {
        let key = batch.column(0).as_string::<i32>();
        let n = batch.column(1).as_primitive::<Int64Type>();
        let shard = batch.column(2).as_string::<i32>();
        let pk = batch.column(3).as_string::<i32>();
        for i in 0..batch.num_rows() {
            assert_eq!(shard.value(i), split, "the shard_id column names the split");
            self.rows.push((
                key.value(i).to_string(),
                n.value(i),
                shard.value(i).to_string(),
                pk.value(i).to_string(),
            ));
        }
        self.events.push(format!("rows:{split}"));
    }

    /// Every key's numbers in delivery order.
    fn per_key(&self) -> HashMap<String, Vec<i64>> {
        let mut m: HashMap<String, Vec<i64>> = HashMap::new();
        for (k, n, _, _) in &self.rows {
            m.entry(k.clone()).or_default().push(*n);
        }
        m
    }
}

/// Polls until `rows` rows arrived in all.
async fn poll_rows(source: &mut KinesisSource, delivered: &mut Delivered, rows: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while delivered.rows.len() < rows {
        assert!(
            Instant::now() < deadline,
            "timed out with {} of {rows} rows; events {:?}",
            delivered.rows.len(),
            delivered.events
        );
        match source.poll_next().await.unwrap() {
            SourcePoll::Batch { split, batch } => delivered.add(&split, &batch),
            SourcePoll::SplitStarted(s) => delivered.events.push(format!("started:{s}")),
            SourcePoll::SplitFinished(s) => delivered.events.push(format!("finished:{s}")),
            SourcePoll::Idle => {}
            SourcePoll::Finished => panic!("a Kinesis source never finishes"),
        }
    }
}

/// Polls for a while and fails if any row arrives.
async fn expect_no_more_rows(source: &mut KinesisSource, delivered: &mut Delivered) {
    let before = delivered.rows.len();
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        if let SourcePoll::Batch { split, batch } = source.poll_next().await.unwrap() {
            delivered.add(&split, &batch);
        }
    }
    assert_eq!(delivered.rows.len(), before, "unexpected extra rows");
}

#[tokio::test]
async fn multi_shard_streams_are_read_once_in_per_key_order_with_metadata() {
    let Some(endpoint) = kinesis_server() else {
        return;
    };
    let kinesis = client(&endpoint);
    let stream = create_stream(&kinesis, "multi", 4).await;
    put_numbered(&kinesis, &stream, 16, 0, 25).await;
    let mut s = source(
        &endpoint,
        &stream,
        &[("start_position", "trim_horizon")],
        BTreeMap::new(),
    );
    s.open().await.unwrap();
    let mut d = Delivered::default();
    poll_rows(&mut s, &mut d, 400).await;
    expect_no_more_rows(&mut s, &mut d).await;
    let shards: HashSet<&str> = d.rows.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(shards.len(), 4, "16 keys spread over all 4 shards");
    for (key, numbers) in d.per_key() {
        assert_eq!(
            numbers,
            (0..25).collect::<Vec<_>>(),
            "key {key}: in order, once"
        );
    }
    for (key, _, _, pk) in &d.rows {
        assert_eq!(key, pk, "partition_key metadata");
    }
    // Every shard was announced before its first rows.
    for shard in shards {
        let started = d
            .events
            .iter()
            .position(|e| *e == format!("started:{shard}"));
        let rows = d.events.iter().position(|e| *e == format!("rows:{shard}"));
        assert!(started < rows, "{:?}", d.events);
    }
    // Positions name every shard.
    assert_eq!(s.positions().len(), 4);
    assert!(
        s.positions()
            .values()
            .all(|p| matches!(p, ShardPosition::After { .. }))
    );
}

#[tokio::test]
async fn a_split_during_the_run_reads_parents_before_children() {
    let Some(endpoint) = kinesis_server() else {
        return;
    };
    let kinesis = client(&endpoint);
    let stream = create_stream(&kinesis, "split", 1).await;
    put_numbered(&kinesis, &stream, 8, 0, 10).await;
    let mut s = source(
        &endpoint,
        &stream,
        &[("start_position", "trim_horizon")],
        BTreeMap::new(),
    );
    s.open().await.unwrap();
    let mut d = Delivered::default();
    poll_rows(&mut s, &mut d, 80).await;

    let shards = kinesis
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .unwrap();
    let parent = shards.shards()[0].shard_id().to_string();
    // Split at the middle of the hash key range.
    kinesis
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(&parent)
        .new_starting_hash_key("170141183460469231731687303715884105728")
        .send()
        .await
        .unwrap();
    wait_active(&kinesis, &stream).await;
    put_numbered(&kinesis, &stream, 8, 10, 20).await;
    poll_rows(&mut s, &mut d, 160).await;
    expect_no_more_rows(&mut s, &mut d).await;

    for (key, numbers) in d.per_key() {
        assert_eq!(
            numbers,
            (0..20).collect::<Vec<_>>(),
            "key {key}: order holds across the split"
        );
    }
    let finished = d
        .events
        .iter()
        .position(|e| *e == format!("finished:{parent}"))
        .unwrap_or_else(|| panic!("the parent finished: {:?}", d.events));
    let children: HashSet<&str> = d
        .rows
        .iter()
        .map(|r| r.2.as_str())
        .filter(|s| *s != parent)
        .collect();
    assert_eq!(children.len(), 2, "both children were read");
    for child in children {
        let started = d
            .events
            .iter()
            .position(|e| *e == format!("started:{child}"))
            .unwrap();
        assert!(
            finished < started,
            "child {child} started after the parent finished: {:?}",
            d.events
        );
    }
    assert_eq!(s.positions()[&parent], ShardPosition::Finished);
}

#[tokio::test]
async fn a_restart_resumes_after_the_saved_positions_with_no_duplicate_and_no_gap() {
    let Some(endpoint) = kinesis_server() else {
        return;
    };
    let kinesis = client(&endpoint);
    let stream = create_stream(&kinesis, "resume", 2).await;
    put_numbered(&kinesis, &stream, 6, 0, 10).await;
    let mut s = source(
        &endpoint,
        &stream,
        &[("start_position", "trim_horizon")],
        BTreeMap::new(),
    );
    s.open().await.unwrap();
    let mut first = Delivered::default();
    poll_rows(&mut s, &mut first, 60).await;
    let saved = s.positions().clone();
    let json = serde_json::to_string(&saved).unwrap();
    drop(s);

    // More records arrive while the pipeline is down, among them a KPL aggregate.
    put_numbered(&kinesis, &stream, 6, 10, 15).await;
    let users: Vec<String> = (15..25)
        .map(|n| format!("{{\"key\":\"agg\",\"n\":{n}}}"))
        .collect();
    let pairs: Vec<(&str, &[u8])> = users.iter().map(|u| ("agg", u.as_bytes())).collect();
    let put = kinesis
        .put_record()
        .stream_name(&stream)
        .partition_key("agg")
        .data(Blob::new(kpl::aggregate(&pairs)))
        .send()
        .await
        .unwrap();

    // `latest` is ignored for shards with a saved position.
    let restored: BTreeMap<String, ShardPosition> = serde_json::from_str(&json).unwrap();
    let mut s = source(
        &endpoint,
        &stream,
        &[("start_position", "latest")],
        restored,
    );
    s.open().await.unwrap();
    let mut second = Delivered::default();
    poll_rows(&mut s, &mut second, 40).await;
    expect_no_more_rows(&mut s, &mut second).await;
    let per_key = second.per_key();
    for k in 0..6 {
        assert_eq!(per_key[&format!("k{k}")], (10..15).collect::<Vec<_>>());
    }
    assert_eq!(per_key["agg"], (15..25).collect::<Vec<_>>());
    assert!(
        second
            .rows
            .iter()
            .filter(|r| r.0 == "agg")
            .all(|r| r.3 == "agg")
    );

    // A restart inside the aggregate: user records 0..=3 were delivered before the crash.
    let shard = put.shard_id().to_string();
    let inside = BTreeMap::from([
        (
            shard.clone(),
            ShardPosition::After {
                sequence: put.sequence_number().to_string(),
                sub_sequence: Some(3),
            },
        ),
        // The other shard was read to its end.
        (
            saved.keys().find(|k| **k != shard).unwrap().clone(),
            second_position(&s, &shard),
        ),
    ]);
    drop(s);
    let mut s = source(&endpoint, &stream, &[], inside);
    s.open().await.unwrap();
    let mut third = Delivered::default();
    poll_rows(&mut s, &mut third, 6).await;
    expect_no_more_rows(&mut s, &mut third).await;
    assert_eq!(third.per_key()["agg"], (19..25).collect::<Vec<_>>());
}

/// The position of the shard other than `shard`.
fn second_position(s: &KinesisSource, shard: &str) -> ShardPosition {
    s.positions()
        .iter()
        .find(|(k, _)| k.as_str() != shard)
        .map(|(_, p)| p.clone())
        .unwrap()
}

fn laketide(dir: &Path, args: &[&str], endpoint: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_laketide"))
        .args(args)
        .current_dir(dir)
        .env("AWS_ENDPOINT_URL_KINESIS", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "testtest")
        .output()
        .unwrap()
}

/// A `laketide run FILE --quiet` in the background, against the Kinesis server.
struct Running {
    child: std::process::Child,
}

impl Running {
    fn start(dir: &Path, file: &str, endpoint: &str) -> Running {
        let child = Command::new(env!("CARGO_BIN_EXE_laketide"))
            .args(["run", file, "--quiet"])
            .current_dir(dir)
            .env("AWS_ENDPOINT_URL_KINESIS", endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "testtest")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Running { child }
    }

    fn stderr(&mut self) -> String {
        let mut err = String::new();
        std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut err).unwrap();
        err
    }

    /// Waits until `done` holds; fails if the run ends first or after two minutes.
    async fn wait_for<F, Fut>(&mut self, what: &str, mut done: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !done().await {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("laketide exited early ({status}): {}", self.stderr());
            }
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Sends SIGINT (which flushes every window) and checks the run ends cleanly.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        let err = self.stderr();
        assert!(exit.success(), "{err}");
    }
}

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

/// Throttles every other GetRecords (and says the iterator expired once), and fails the
/// odd-numbered records of every first PutRecords attempt (forwarding only the others).
fn flaky_rule() -> (Rule, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let seen = calls.clone();
    let rule: Rule = Arc::new(move |target: &str, body: &[u8]| {
        if target.ends_with(".GetRecords") {
            let call = seen.fetch_add(1, Ordering::Relaxed);
            if call == 3 {
                return Action::Reply {
                    status: 400,
                    body: r#"{"__type":"ExpiredIteratorException","message":"Iterator expired"}"#
                        .into(),
                };
            }
            if call % 2 == 0 {
                return Action::Reply {
                    status: 400,
                    body: r#"{"__type":"ProvisionedThroughputExceededException","message":"Rate exceeded for shard"}"#.into(),
                };
            }
            return Action::Forward;
        }
        if target.ends_with(".PutRecords") {
            let mut request: serde_json::Value = serde_json::from_slice(body).unwrap();
            let records = request["Records"].as_array().unwrap().clone();
            if records.len() < 2 {
                return Action::Forward;
            }
            let kept: Vec<serde_json::Value> = records.iter().step_by(2).cloned().collect();
            request["Records"] = serde_json::Value::Array(kept);
            let total = records.len();
            return Action::Rewrite {
                body: serde_json::to_vec(&request).unwrap(),
                response: Box::new(move |answer| {
                    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
                    let results = answer["Records"].as_array().unwrap();
                    let mut merged = Vec::new();
                    for i in 0..total {
                        merged.push(if i % 2 == 0 {
                            results[i / 2].clone()
                        } else {
                            serde_json::json!({
                                "ErrorCode": "ProvisionedThroughputExceededException",
                                "ErrorMessage": "Rate exceeded for shard"
                            })
                        });
                    }
                    serde_json::to_vec(&serde_json::json!({
                        "FailedRecordCount": total / 2,
                        "Records": merged
                    }))
                    .unwrap()
                }),
            };
        }
        Action::Forward
    });
    (rule, calls)
}

#[tokio::test]
async fn throttled_reads_and_partly_failed_writes_are_retried_without_loss() {
    let Some(endpoint) = kinesis_server() else {
        return;
    };
    let kinesis = client(&endpoint);
    let stream = create_stream(&kinesis, "throttle", 2).await;
    let (rule, get_calls) = flaky_rule();
    let proxy = FaultProxy::start(&endpoint, rule).await;

    // The sink writes 300 rows through the proxy: half of every first attempt fails.
    let sink_config = KinesisSinkConfig::from_options(
        Options::new([
            ("stream".to_string(), stream.clone()),
            ("endpoint".to_string(), proxy.endpoint.clone()),
            ("region".to_string(), "us-east-1".to_string()),
            ("partition_key".to_string(), "key".to_string()),
            ("max_records_per_request".to_string(), "100".to_string()),
        ])
        .unwrap(),
    )
    .unwrap();
    let mut sink = KinesisSink::new("out", sink_config);
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
    ]));
    sink.open(schema.clone()).await.unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("k{}", i % 5)).collect();
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(datafusion::arrow::array::StringArray::from(keys)),
            Arc::new(datafusion::arrow::array::Int64Array::from_iter_values(
                (0..300).map(|i| i / 5),
            )),
        ],
    )
    .unwrap();
    sink.write_batch(batch).await.unwrap();
    let summary = sink.close().await.unwrap();
    assert_eq!(summary.rows_written, 300);
    assert!(
        summary.commits > 3,
        "failed records needed more calls: {summary:?}"
    );
    assert!(proxy.injected.load(Ordering::Relaxed) >= 3);

    // The source reads them back through the proxy, throttled on every other call.
    let mut s = source(
        &proxy.endpoint,
        &stream,
        &[("start_position", "trim_horizon")],
        BTreeMap::new(),
    );
    let status = s.status().unwrap();
    s.open().await.unwrap();
    let mut d = Delivered::default();
    poll_rows(&mut s, &mut d, 300).await;
    expect_no_more_rows(&mut s, &mut d).await;
    for k in 0..5 {
        let mut numbers = d.per_key()[&format!("k{k}")].clone();
        numbers.sort();
        assert_eq!(numbers, (0..60).collect::<Vec<_>>(), "every record once");
    }
    assert!(status.throttles() > 0, "throttles were counted");
    assert!(get_calls.load(Ordering::Relaxed) > 2);
}

#[tokio::test]
async fn a_missing_stream_is_a_clear_error_at_start() {
    let Some(endpoint) = kinesis_server() else {
        return;
    };
    let mut s = source(&endpoint, &common::unique("missing"), &[], BTreeMap::new());
    let e = s.open().await.err().expect("no such stream");
    let text = e.to_string();
    assert!(
        text.contains("ListShards") && text.contains("ResourceNotFoundException"),
        "{text}"
    );
}

/// Every record of a stream, oldest first per shard.
async fn read_all(kinesis: &Client, stream: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for shard in kinesis
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap()
        .shards()
    {
        let mut iterator = kinesis
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator()
            .map(str::to_string);
        while let Some(it) = iterator {
            let page = kinesis
                .get_records()
                .shard_iterator(it)
                .send()
                .await
                .unwrap();
            for r in page.records() {
                out.push(serde_json::from_slice(r.data().as_ref()).unwrap());
            }
            if page.records().is_empty() && page.millis_behind_latest().unwrap_or(0) == 0 {
                break;
            }
            iterator = page.next_shard_iterator().map(str::to_string);
        }
    }
    out
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

    let mut run = Running::start(dir.path(), "p.sql", &endpoint);
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
    // Stopping flushed the window of the later events too; every row has an arrival time.
    assert_eq!(
        query_csv(
            dir.path(),
            "SELECT sum(views) AS v, count(last_arrival) = count(*) AS delays FROM page_stats"
        ),
        "v,delays\n2020,true"
    );
}

#[tokio::test]
async fn an_expired_iterator_at_latest_does_not_skip_what_arrived_meanwhile() {
    let Some(endpoint) = kinesis_server() else {
        return;
    };
    let kinesis = client(&endpoint);
    let stream = create_stream(&kinesis, "expired-latest", 1).await;
    // Counts GetRecords calls; once `expire` is set, the next call says the iterator expired.
    let calls = Arc::new(AtomicU64::new(0));
    let expire = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (seen, flag) = (calls.clone(), expire.clone());
    let rule: Rule = Arc::new(move |target: &str, _body: &[u8]| {
        if target.ends_with(".GetRecords") {
            seen.fetch_add(1, Ordering::Relaxed);
            if flag.swap(false, Ordering::Relaxed) {
                return Action::Reply {
                    status: 400,
                    body: r#"{"__type":"ExpiredIteratorException","message":"Iterator expired"}"#
                        .into(),
                };
            }
        }
        Action::Forward
    });
    let proxy = FaultProxy::start(&endpoint, rule).await;
    let mut s = source(
        &proxy.endpoint,
        &stream,
        &[("start_position", "latest")],
        BTreeMap::new(),
    );
    s.open().await.unwrap();
    let mut d = Delivered::default();
    // The reader holds a LATEST iterator once it has made a call.
    let deadline = Instant::now() + Duration::from_secs(30);
    while calls.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "no GetRecords call");
        let _ = s.poll_next().await.unwrap();
    }
    put_numbered(&kinesis, &stream, 3, 0, 4).await;
    expire.store(true, Ordering::Relaxed);
    poll_rows(&mut s, &mut d, 12).await;
    expect_no_more_rows(&mut s, &mut d).await;
    assert!(!expire.load(Ordering::Relaxed), "the expiry was injected");
    for (key, numbers) in d.per_key() {
        assert_eq!(numbers, (0..4).collect::<Vec<_>>(), "key {key}");
    }
}

#[tokio::test]
async fn at_timestamp_starts_at_the_records_that_arrived_from_then_on() {
    let Some(endpoint) = kinesis_server() else {
        return;
    };
    let kinesis = client(&endpoint);
    let stream = create_stream(&kinesis, "at-timestamp", 1).await;
    put_numbered(&kinesis, &stream, 2, 0, 5).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let from = chrono::Utc::now().to_rfc3339();
    tokio::time::sleep(Duration::from_millis(500)).await;
    put_numbered(&kinesis, &stream, 2, 5, 10).await;
    let mut s = source(
        &endpoint,
        &stream,
        &[
            ("start_position", "at_timestamp"),
            ("start_timestamp", &from),
        ],
        BTreeMap::new(),
    );
    s.open().await.unwrap();
    let mut d = Delivered::default();
    poll_rows(&mut s, &mut d, 10).await;
    expect_no_more_rows(&mut s, &mut d).await;
    for (key, numbers) in d.per_key() {
        assert_eq!(numbers, (5..10).collect::<Vec<_>>(), "key {key}");
    }
}
