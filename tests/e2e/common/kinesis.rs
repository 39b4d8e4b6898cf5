//! Helpers of the Kinesis tests: the local server, streams of numbered records, a source
//! over them and what it delivered, and `laketide` runs against the server.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{ShardIteratorType, StreamStatus};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use laketide_connectors::kinesis::{KinesisSource, KinesisSourceConfig, ShardPosition};
use laketide_connectors::{MetadataColumn, Options};
use laketide_engine::{BadRecords, OnError, Source, SourcePoll};

pub fn kinesis_server() -> Option<String> {
    super::emulator(
        "Kinesis",
        "AWS_ENDPOINT_URL_KINESIS",
        "http://127.0.0.1:4568",
    )
}

pub fn client(endpoint: &str) -> Client {
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "testtest", None, None, "tests"))
        .build();
    Client::from_conf(config)
}

pub async fn wait_active(client: &Client, stream: &str) {
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

pub async fn create_stream(client: &Client, prefix: &str, shards: i32) -> String {
    let stream = super::unique(prefix);
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

/// Writes `{"key":K,"n":N}` records with partition key K.
pub async fn put_numbered(client: &Client, stream: &str, keys: usize, from: u64, to: u64) {
    let mut records = Vec::new();
    for n in from..to {
        for k in 0..keys {
            let key = format!("k{k}");
            records.push((key.clone(), format!("{{\"key\":\"{key}\",\"n\":{n}}}")));
        }
    }
    put_records(client, stream, records).await;
}

/// Writes `(partition key, data)` records with PutRecords, 500 at a time; every one must be
/// accepted.
pub async fn put_records(client: &Client, stream: &str, records: Vec<(String, String)>) {
    let entries: Vec<_> = records
        .into_iter()
        .map(|(key, data)| {
            aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                .partition_key(key)
                .data(Blob::new(data))
                .build()
                .unwrap()
        })
        .collect();
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

pub fn numbered_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
        Field::new("shard", DataType::Utf8, true),
        Field::new("pk", DataType::Utf8, true),
    ]))
}

pub fn metadata() -> Vec<MetadataColumn> {
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

pub fn source(
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
pub struct Delivered {
    pub rows: Vec<(String, i64, String, String)>,
    /// `started:<shard>`, `rows:<shard>`, `finished:<shard>` in the order they happened.
    pub events: Vec<String>,
}

impl Delivered {
    pub fn add(&mut self, split: &str, batch: &RecordBatch) {
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
    pub fn per_key(&self) -> HashMap<String, Vec<i64>> {
        let mut m: HashMap<String, Vec<i64>> = HashMap::new();
        for (k, n, _, _) in &self.rows {
            m.entry(k.clone()).or_default().push(*n);
        }
        m
    }
}

/// Polls until `rows` rows arrived in all.
pub async fn poll_rows(source: &mut KinesisSource, delivered: &mut Delivered, rows: usize) {
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
pub async fn expect_no_more_rows(source: &mut KinesisSource, delivered: &mut Delivered) {
    let before = delivered.rows.len();
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        if let SourcePoll::Batch { split, batch } = source.poll_next().await.unwrap() {
            delivered.add(&split, &batch);
        }
    }
    assert_eq!(delivered.rows.len(), before, "unexpected extra rows");
}

pub fn laketide(dir: &Path, args: &[&str], endpoint: &str) -> std::process::Output {
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
pub struct Running {
    child: std::process::Child,
}

impl Running {
    pub fn start(dir: &Path, file: &str, endpoint: &str) -> Running {
        Self::start_with(dir, file, endpoint, &[])
    }

    /// As [`Running::start`], with more arguments for `run`.
    pub fn start_with(dir: &Path, file: &str, endpoint: &str, args: &[&str]) -> Running {
        let child = Command::new(env!("CARGO_BIN_EXE_laketide"))
            .args(["run", file, "--quiet"])
            .args(args)
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

    pub fn stderr(&mut self) -> String {
        let mut err = String::new();
        std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut err).unwrap();
        err
    }

    /// Waits until `done` holds; fails if the run ends first or after two minutes.
    pub async fn wait_for<F, Fut>(&mut self, what: &str, mut done: F)
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
    pub fn stop(mut self) {
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

/// Every record of a stream, oldest first per shard.
pub async fn read_all(kinesis: &Client, stream: &str) -> Vec<serde_json::Value> {
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
