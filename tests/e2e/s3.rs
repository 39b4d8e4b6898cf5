//! Emulator-backed tests of the lake on S3-compatible storage (the local S3 server started by
//! `scripts/test.sh`). Without a server they are skipped, except under CI or with
//! `LAKETIDE_EMULATORS=1`, where a missing server is a failure.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

const ACCESS_KEY: &str = "test";
const SECRET_KEY: &str = "testtest";

fn s3_server() -> Option<String> {
    common::emulator("S3", "AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
}

/// A signed S3 request with curl (`curl --aws-sigv4`); returns the response body.
fn s3_request(endpoint: &str, method: &str, path_and_query: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-f",
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
            "--user",
            &format!("{ACCESS_KEY}:{SECRET_KEY}"),
            // S3 wants the payload hash; this is the hash of the empty body.
            "-H",
            "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "-X",
            method,
            &format!("{endpoint}/{path_and_query}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{method} {path_and_query}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn create_bucket(endpoint: &str, bucket: &str) {
    s3_request(endpoint, "PUT", bucket);
}

fn laketide(dir: &Path, endpoint: &str, args: &[&str]) -> Output {
    laketide_with_secret(dir, endpoint, SECRET_KEY, args)
}

/// `laketide ARGS` in `dir`, with the local S3 server's endpoint and credentials (and none of
/// the caller's other endpoint settings).
fn command(dir: &Path, endpoint: &str, secret: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_laketide"));
    c.args(args)
        .current_dir(dir)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL_S3", endpoint)
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ALLOW_HTTP");
    c
}

fn laketide_with_secret(dir: &Path, endpoint: &str, secret: &str, args: &[&str]) -> Output {
    command(dir, endpoint, secret, args).output().unwrap()
}

/// Runs `laketide query … --format csv SQL` (after `query_args`) and returns its trimmed output.
fn query_csv(dir: &Path, endpoint: &str, query_args: &[&str], sql: &str) -> String {
    let mut args = vec!["query"];
    args.extend_from_slice(query_args);
    args.extend_from_slice(&["--format", "csv", sql]);
    let out = laketide(dir, endpoint, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn pipeline(dir: &Path, bucket: &str) {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/clicks");
    std::fs::write(
        dir.join("p.sql"),
        format!(
            "CREATE TABLE clicks (event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP,
               WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
               WITH (connector = 'file', path = '{}', mode = 'once');
             CREATE TABLE revenue WITH (connector = 'delta', path = 's3://{bucket}/lake/revenue', partition_by = 'action');
             INSERT INTO revenue
             SELECT window_start, window_end, action, count(*) AS events, sum(amount) AS revenue
             FROM TUMBLE(clicks, ts, INTERVAL '1' MINUTE) GROUP BY window_start, window_end, action;",
            data.display()
        ),
    )
    .unwrap();
}

#[test]
fn delta_sink_writes_a_partitioned_table_to_s3_that_queries_read_back() {
    let Some(endpoint) = s3_server() else { return };
    let bucket = common::unique("laketide-delta");
    create_bucket(&endpoint, &bucket);
    let dir = tempfile::tempdir().unwrap();
    pipeline(dir.path(), &bucket);

    let run = laketide(dir.path(), &endpoint, &["run", "p.sql", "--quiet"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    assert_eq!(
        query_csv(
            dir.path(),
            &endpoint,
            &["-f", "p.sql"],
            "SELECT count(*) AS windows, sum(events) AS events, count(DISTINCT action) AS actions FROM revenue"
        ),
        "windows,events,actions\n22,3000,4"
    );

    // A second run from scratch appends to the same table on S3 (without it, the run would
    // resume from the first run's checkpoint and add nothing).
    let again = laketide(
        dir.path(),
        &endpoint,
        &["run", "p.sql", "--quiet", "--from-scratch"],
    );
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        query_csv(
            dir.path(),
            &endpoint,
            &["-f", "p.sql"],
            "SELECT sum(events) AS e FROM revenue"
        ),
        "e\n6000"
    );

    // Maintenance on S3: two commits wrote one file per partition each; optimize compacts
    // each partition, vacuum deletes the replaced files, and the data reads the same.
    let location = format!("s3://{bucket}/lake/revenue");
    let optimize = laketide(dir.path(), &endpoint, &["lake", "optimize", &location]);
    let text = String::from_utf8_lossy(&optimize.stdout);
    assert!(
        text.contains("8 files compacted into 4 (4 partitions"),
        "{text}{}",
        String::from_utf8_lossy(&optimize.stderr)
    );
    let vacuum = laketide(
        dir.path(),
        &endpoint,
        &["lake", "vacuum", &location, "--retain", "0s"],
    );
    let text = String::from_utf8_lossy(&vacuum.stdout);
    assert!(
        text.contains("8 files deleted"),
        "{text}{}",
        String::from_utf8_lossy(&vacuum.stderr)
    );
    assert_eq!(
        query_csv(
            dir.path(),
            &endpoint,
            &["-f", "p.sql"],
            "SELECT sum(events) AS e FROM revenue"
        ),
        "e\n6000"
    );

    // The lake root on S3: every table under it is registered by name.
    let lake = format!("s3://{bucket}/lake");
    assert_eq!(
        query_csv(
            dir.path(),
            &endpoint,
            &["--lake", &lake],
            "SELECT sum(events) AS e FROM revenue"
        ),
        "e\n6000"
    );
}

#[test]
fn a_missing_bucket_is_a_clear_error() {
    let Some(endpoint) = s3_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bucket = common::unique("laketide-missing");
    pipeline(dir.path(), &bucket);
    let run = laketide(dir.path(), &endpoint, &["run", "p.sql", "--quiet"]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    // The first access to the bucket (the pipeline's state beside its tables) names the
    // location and the server's answer.
    assert!(err.contains(&format!("s3://{bucket}/lake/")), "{err}");
    assert!(err.contains("NoSuchBucket"), "{err}");
}

#[test]
fn bad_credentials_are_a_clear_error() {
    let Some(endpoint) = s3_server() else { return };
    let bucket = common::unique("laketide-creds");
    create_bucket(&endpoint, &bucket);
    let dir = tempfile::tempdir().unwrap();
    pipeline(dir.path(), &bucket);
    let run = laketide_with_secret(
        dir.path(),
        &endpoint,
        "not-the-secret",
        &["run", "p.sql", "--quiet"],
    );
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains(&format!("s3://{bucket}/lake/")), "{err}");
    assert!(
        err.contains("403") || err.contains("SignatureDoesNotMatch"),
        "{err}"
    );
}

#[test]
fn the_benchmark_has_an_s3_variant() {
    let Some(endpoint) = s3_server() else { return };
    let bucket = common::unique("laketide-bench");
    create_bucket(&endpoint, &bucket);
    let dir = tempfile::tempdir().unwrap();
    let lake = format!("s3://{bucket}/lake");
    let out = laketide(
        dir.path(),
        &endpoint,
        &[
            "bench",
            "--events",
            "20000",
            "--dir",
            &dir.path().display().to_string(),
            "--s3-lake",
            &lake,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(local disk): 20000 events"), "{text}");
    // The same pipeline with checkpoints every second, and the ratio of the two.
    assert!(
        text.contains("(local disk, checkpoint every 1s): 20000 events")
            && text.contains("checkpoints: ")
            && text.contains("bench throughput with checkpoints / without:"),
        "{text}"
    );
    assert!(
        text.contains(&format!("({lake}/bench-"))
            && text.contains("bench S3 / local-disk throughput:"),
        "{text}"
    );
}

#[test]
fn the_s3_example_runs_as_documented() {
    let Some(endpoint) = s3_server() else { return };
    let bucket = common::unique("laketide-example");
    create_bucket(&endpoint, &bucket);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let sql = std::fs::read_to_string(repo.join("examples/clickstream_s3.sql"))
        .unwrap()
        .replace("s3://laketide/", &format!("s3://{bucket}/"))
        .replace(
            "'examples/data/clicks/'",
            &format!("'{}'", repo.join("examples/data/clicks").display()),
        );
    std::fs::write(dir.path().join("example.sql"), sql).unwrap();
    let run = laketide(dir.path(), &endpoint, &["run", "example.sql", "--quiet"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let lake = format!("s3://{bucket}/lake");
    assert_eq!(
        query_csv(
            dir.path(),
            &endpoint,
            &["--lake", &lake],
            "SELECT count(*) AS windows, sum(events) AS events FROM revenue_per_minute"
        ),
        "windows,events\n22,3000"
    );
}

#[test]
fn filesystem_sink_uploads_complete_files_to_s3() {
    let Some(endpoint) = s3_server() else { return };
    let bucket = common::unique("laketide-files");
    create_bucket(&endpoint, &bucket);
    let dir = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/clicks");
    std::fs::write(
        dir.path().join("p.sql"),
        format!(
            "CREATE TABLE clicks (event_id BIGINT, user_id TEXT, ts TIMESTAMP)
               WITH (connector = 'file', path = '{}', mode = 'once');
             CREATE TABLE out WITH (connector = 'filesystem', path = 's3://{bucket}/out', format = 'json', rollover_size = '16KB');
             INSERT INTO out SELECT event_id, user_id FROM clicks;",
            data.display()
        ),
    )
    .unwrap();
    let run = laketide(dir.path(), &endpoint, &["run", "p.sql", "--quiet"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let listing = s3_request(
        &endpoint,
        "GET",
        &format!("{bucket}?list-type=2&prefix=out%2F"),
    );
    let keys: Vec<&str> = listing
        .split("<Key>")
        .skip(1)
        .filter_map(|k| k.split("</Key>").next())
        .collect();
    assert!(keys.len() > 1, "rolled into several files: {keys:?}");
    assert!(
        keys.iter()
            .all(|k| k.starts_with("out/part-") && k.ends_with(".json")),
        "{keys:?}"
    );
    let rows: usize = keys
        .iter()
        .map(|k| {
            s3_request(&endpoint, "GET", &format!("{bucket}/{k}"))
                .lines()
                .count()
        })
        .sum();
    assert_eq!(rows, 3000);
    // `query -f` reads the sink's files where they are.
    assert_eq!(
        query_csv(
            dir.path(),
            &endpoint,
            &["-f", "p.sql"],
            "SELECT count(*) AS n FROM out"
        ),
        "n\n3000"
    );
}

/// Writes an object through object_store (what any S3 client does).
fn put_object(endpoint: &str, bucket: &str, key: &str, body: Vec<u8>) {
    use deltalake::logstore::object_store::{ObjectStoreExt, PutPayload, path::Path as ObjectPath};
    let url = deltalake::ensure_table_uri(format!("s3://{bucket}")).unwrap();
    let options = std::collections::HashMap::from([
        ("AWS_ENDPOINT_URL".to_string(), endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID".to_string(), ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), SECRET_KEY.to_string()),
        ("AWS_REGION".to_string(), "us-east-1".to_string()),
        ("AWS_ALLOW_HTTP".to_string(), "true".to_string()),
    ]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = deltalake::DeltaTableBuilder::from_url(url)
            .unwrap()
            .with_storage_options(options)
            .build_storage()
            .unwrap()
            .object_store(None);
        store
            .put(&ObjectPath::from(key), PutPayload::from(body))
            .await
            .unwrap();
    });
}

fn event_lines(ids: std::ops::Range<u64>) -> Vec<u8> {
    ids.map(|i| {
        format!(
            "{{\"event_id\":{i},\"user_id\":\"u{}\",\"note\":\"{}\",\"ts\":{}}}\n",
            i % 7,
            "x".repeat(200),
            1_714_564_800_000 + i
        )
    })
    .collect::<String>()
    .into_bytes()
}

#[test]
fn the_file_source_reads_each_new_object_under_a_prefix_once_compressed_or_not() {
    let Some(endpoint) = s3_server() else { return };
    let bucket = common::unique("laketide-incoming");
    create_bucket(&endpoint, &bucket);
    // A 5 MB object, streamed in chunks; a hidden one that writers have not finished.
    put_object(&endpoint, &bucket, "in/2024/a.json", event_lines(0..20_000));
    put_object(
        &endpoint,
        &bucket,
        "in/2024/.b.json.inprogress",
        event_lines(90_000..90_010),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.sql"),
        format!(
            "CREATE TABLE clicks (event_id BIGINT, user_id TEXT, ts TIMESTAMP)
               WITH (connector = 'file', path = 's3://{bucket}/in', poll_interval = '200ms');
             CREATE TABLE copied WITH (connector = 'delta', path = 'lake/copied', commit_interval = '500ms');
             INSERT INTO copied SELECT event_id, user_id FROM clicks;"
        ),
    )
    .unwrap();
    let child = command(
        dir.path(),
        &endpoint,
        SECRET_KEY,
        &["run", "p.sql", "--quiet"],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let count = || {
        query_csv(
            dir.path(),
            &endpoint,
            &["--lake", "lake"],
            "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM copied",
        )
    };
    let wait_for = |expected: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let got = if dir.path().join("lake/copied/_delta_log").is_dir() {
                count()
            } else {
                String::new()
            };
            if got == expected {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "expected {expected:?}, last saw {got:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    };
    wait_for("n,d\n20000,20000");
    // Objects arriving while the pipeline runs are read once each.
    put_object(
        &endpoint,
        &bucket,
        "in/2024/c.json",
        event_lines(20_000..20_500),
    );
    put_object(
        &endpoint,
        &bucket,
        "in/2025/d.json",
        event_lines(20_500..21_000),
    );
    // Compressed JSON lines, by extension.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &event_lines(21_000..22_000)).unwrap();
    put_object(
        &endpoint,
        &bucket,
        "in/2025/e.json.gz",
        gz.finish().unwrap(),
    );
    let zst = zstd::stream::encode_all(&event_lines(22_000..23_000)[..], 3).unwrap();
    put_object(&endpoint, &bucket, "in/2025/f.json.zst", zst);
    wait_for("n,d\n23000,23000");
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        count(),
        "n,d\n23000,23000",
        "nothing read twice, the hidden object not at all"
    );
}

#[test]
fn two_pipelines_append_to_one_s3_table_at_once_without_losing_a_commit() {
    let Some(endpoint) = s3_server() else { return };
    let bucket = common::unique("laketide-concurrent");
    create_bucket(&endpoint, &bucket);
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/clicks");
    let dir = tempfile::tempdir().unwrap();
    // Small buffers: each writer commits about 30 times, so their commits race.
    for writer in ["a", "b"] {
        std::fs::write(
            dir.path().join(format!("{writer}.sql")),
            format!(
                "CREATE TABLE clicks (event_id BIGINT, ts TIMESTAMP)
                   WITH (connector = 'file', path = '{}', mode = 'once', batch_size = '100', reader_threads = 1);
                 CREATE TABLE shared WITH (connector = 'delta', path = 's3://{bucket}/lake/shared', max_buffer_size = '1KB');
                 INSERT INTO shared SELECT event_id, '{writer}' AS writer FROM clicks;",
                data.display()
            ),
        )
        .unwrap();
    }
    // The table exists before the race (creating it is a separate, first commit).
    let first = laketide(dir.path(), &endpoint, &["run", "a.sql", "--quiet"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // The racing writers go through a proxy that makes the local server's conditional put
    // atomic, as S3's is (see `FaultProxy::serializing`).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let proxy = runtime.block_on(common::proxy::FaultProxy::serializing(&endpoint));
    let spawn = |file: &str| {
        command(
            dir.path(),
            &proxy.endpoint,
            SECRET_KEY,
            &["run", file, "--quiet", "--no-checkpoints"],
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
    };
    let (a, b) = (spawn("a.sql"), spawn("b.sql"));
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let lake = format!("s3://{bucket}/lake");
    assert_eq!(
        query_csv(
            dir.path(),
            &endpoint,
            &["--lake", &lake],
            "SELECT writer, count(*) AS n, count(DISTINCT event_id) AS d FROM shared GROUP BY writer ORDER BY writer"
        ),
        "writer,n,d\na,6000,3000\nb,3000,3000"
    );
}

/// A Delta sink on S3 that commits on checkpoints, as `laketide run` uses it.
async fn checkpointed_delta_sink(
    endpoint: &str,
    path: &str,
) -> laketide_connectors::delta::DeltaSink {
    use laketide_engine::Sink;
    let options = laketide_connectors::Options::new([
        ("path".to_string(), path.to_string()),
        ("endpoint".to_string(), endpoint.to_string()),
    ])
    .unwrap();
    let config = laketide_connectors::delta::DeltaSinkConfig::from_options(options).unwrap();
    let mut sink = laketide_connectors::delta::DeltaSink::new("t", config);
    sink.enable_checkpoints("replay-test");
    sink.open(ids_schema()).await.unwrap();
    sink
}

fn ids_schema() -> datafusion::arrow::datatypes::SchemaRef {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    std::sync::Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]))
}

fn ids(range: std::ops::Range<i64>) -> datafusion::arrow::record_batch::RecordBatch {
    datafusion::arrow::record_batch::RecordBatch::try_new(
        ids_schema(),
        vec![std::sync::Arc::new(
            datafusion::arrow::array::Int64Array::from_iter_values(range),
        )],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_commit_on_s3_is_applied_once() {
    use laketide_engine::Sink;
    let Some(endpoint) = s3_server() else { return };
    let bucket = common::unique("laketide-replay");
    create_bucket(&endpoint, &bucket);
    let path = format!("s3://{bucket}/lake/t");
    let lake = format!("s3://{bucket}/lake");
    let dir = tempfile::tempdir().unwrap();
    let count = || {
        query_csv(
            dir.path(),
            &endpoint,
            &["--lake", &lake],
            "SELECT count(*) AS n, count(DISTINCT id) AS d FROM t",
        )
    };

    let mut sink = checkpointed_delta_sink(&endpoint, &path).await;
    sink.write_batch(ids(0..10)).await.unwrap();
    let first = sink.prepare_commit(1).await.unwrap();
    sink.commit(1).await.unwrap();
    sink.write_batch(ids(10..30)).await.unwrap();
    let second = sink.prepare_commit(2).await.unwrap();
    // The process dies between storing checkpoint 2 and committing it.
    drop(sink);
    assert_eq!(count(), "n,d\n10,10");

    // Recovery from checkpoint 2 commits its files; replaying that recovery (another crash
    // right after it) or an older checkpoint's commit adds nothing.
    checkpointed_delta_sink(&endpoint, &path)
        .await
        .recover(2, second.clone())
        .await
        .unwrap();
    assert_eq!(count(), "n,d\n30,30");
    checkpointed_delta_sink(&endpoint, &path)
        .await
        .recover(2, second)
        .await
        .unwrap();
    checkpointed_delta_sink(&endpoint, &path)
        .await
        .recover(1, first)
        .await
        .unwrap();
    assert_eq!(count(), "n,d\n30,30");
}
