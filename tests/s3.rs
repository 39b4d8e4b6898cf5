//! Emulator-backed tests of the lake on S3-compatible storage (the local S3 server started by
//! `scripts/test.sh`). Without a server they are skipped, except under CI or with
//! `LAKETIDE_EMULATORS=1`, where a missing server is a failure.

mod common;

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

fn laketide_with_secret(dir: &Path, endpoint: &str, secret: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_laketide"))
        .args(args)
        .current_dir(dir)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL_S3", endpoint)
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ALLOW_HTTP")
        .output()
        .unwrap()
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

    // A second run appends to the same table on S3.
    let again = laketide(dir.path(), &endpoint, &["run", "p.sql", "--quiet"]);
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
    assert!(
        err.contains(&format!("s3://{bucket}/lake/revenue")),
        "{err}"
    );
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
    assert!(
        err.contains(&format!("s3://{bucket}/lake/revenue")),
        "{err}"
    );
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
}
