//! The webhook sink against a local HTTP server: bodies, HMAC signatures (checked with Python's
//! hmac module, independently of laketide's code), retries, and secrets kept out of output.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use common::proxy::{header, read_message, render};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const SECRET: &str = "s3cr3t-for-tests";

/// A request the server answered, and how.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    body: String,
    signature: Option<String>,
    status: u16,
}

/// Serves on a free port; answers the request numbered `n` (from 0) with `status(n)`.
pub(crate) async fn server(status: fn(usize) -> u16) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Ok(Some(request)) = read_message(&mut stream, &mut buf, false).await {
                    let n = log.lock().unwrap().len();
                    let code = status(n);
                    log.lock().unwrap().push(Received {
                        body: String::from_utf8_lossy(&request.body).to_string(),
                        signature: header(&request.head, "x-laketide-signature")
                            .map(str::to_string),
                        status: code,
                    });
                    let head = vec![format!("HTTP/1.1 {code} Test")];
                    let reply = render(&head, b"{\"ok\":true}", &[]);
                    if stream.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, received)
}

fn laketide(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_laketide"))
        .args(args)
        .current_dir(dir)
        .env("LAKETIDE_WEBHOOK_SECRET", SECRET)
        .output()
        .unwrap()
}

/// HMAC-SHA256 of `body` with the test secret, computed by Python.
fn python_signature(body: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import hmac, hashlib, sys; print('sha256=' + hmac.new(sys.argv[1].encode(), sys.stdin.buffer.read(), hashlib.sha256).hexdigest())",
            SECRET,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(body.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn pipeline(dir: &Path, url: &str) {
    let generated = laketide(
        dir,
        &[
            "generate", "--out", "data", "--events", "6000", "--files", "1",
        ],
    );
    assert!(generated.status.success());
    std::fs::write(
        dir.join("alerts.sql"),
        format!(
            "CREATE TABLE clicks (event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP,
               WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
             WITH (connector = 'file', path = 'data', mode = 'once');
             CREATE TABLE alerts WITH (connector = 'webhook', url = '{url}/alerts?token=hidden-token',
               secret_env = 'LAKETIDE_WEBHOOK_SECRET', timeout = '2s', retry_timeout = '20s');
             INSERT INTO alerts
             SELECT page, window_start, count(*) AS views
             FROM TUMBLE(clicks, ts, INTERVAL '1' SECOND)
             GROUP BY page, window_start, window_end
             HAVING count(*) > 130;"
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_posted_signed_and_retried_and_match_the_batch_oracle() {
    // The first two requests fail with 503: the sink retries them.
    let (url, received) = server(|n| if n < 2 { 503 } else { 200 }).await;
    let dir = tempfile::tempdir().unwrap();
    pipeline(dir.path(), &url);
    let path = dir.path().to_path_buf();
    let run = tokio::task::spawn_blocking(move || {
        laketide(&path, &["run", "alerts.sql", "--log", "debug"])
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr).to_string();
    assert!(run.status.success(), "{stderr}");
    assert!(!stderr.contains(SECRET), "the secret leaked into the log");
    assert!(
        !stderr.contains("hidden-token"),
        "the URL's token leaked into the log"
    );

    let received = received.lock().unwrap().clone();
    assert!(received.iter().any(|r| r.status == 503), "{received:?}");
    let accepted: Vec<&Received> = received.iter().filter(|r| r.status == 200).collect();
    for r in &received {
        let expected = python_signature(&r.body);
        assert_eq!(
            r.signature.as_deref(),
            Some(expected.as_str()),
            "{}",
            r.body
        );
    }
    let mut posted: Vec<String> = accepted
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            format!(
                "{}|{}|{}",
                v["page"].as_str().unwrap(),
                v["window_start"].as_str().unwrap(),
                v["views"].as_i64().unwrap()
            )
        })
        .collect();
    posted.sort();

    let ctx = common::oracle_context(&dir.path().join("data")).await;
    let mut oracle = common::query_rows(
        &ctx,
        "SELECT page, to_char(date_bin(INTERVAL '1 second', ts), '%Y-%m-%dT%H:%M:%S') AS ws, count(*) AS views
         FROM clicks GROUP BY page, ws HAVING count(*) > 130",
    )
    .await;
    oracle.sort();
    assert!(
        !oracle.is_empty(),
        "the rule must fire for the test to mean something"
    );
    common::assert_same_rows("alerts posted", &posted, &oracle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_request_fails_the_run_with_the_status_and_no_secret() {
    let (url, _) = server(|_| 403).await;
    let dir = tempfile::tempdir().unwrap();
    pipeline(dir.path(), &url);
    let path = dir.path().to_path_buf();
    let (run, explain) = tokio::task::spawn_blocking(move || {
        (
            laketide(&path, &["run", "alerts.sql", "--quiet"]),
            laketide(&path, &["explain", "alerts.sql"]),
        )
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr).to_string();
    assert!(!run.status.success());
    assert!(stderr.contains("403"), "{stderr}");
    assert!(stderr.contains(&format!("{url}/alerts")), "{stderr}");
    assert!(
        !stderr.contains("hidden-token") && !stderr.contains(SECRET),
        "{stderr}"
    );
    let plan = String::from_utf8_lossy(&explain.stdout).to_string();
    assert!(
        plan.contains(&format!(
            "webhook POST {url}/alerts (1 row per request, signed)"
        )),
        "{plan}"
    );
    assert!(!plan.contains("hidden-token"), "{plan}");
}

/// Copies `examples/anomaly_alerts.sql` and its data into `dir`, keeping the layout it expects.
fn copy_anomaly_example(dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let data = dir.join("examples/data/page_traffic");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(
        root.join("anomaly_alerts.sql"),
        dir.join("examples/anomaly_alerts.sql"),
    )
    .unwrap();
    for file in std::fs::read_dir(root.join("data/page_traffic")).unwrap() {
        let file = file.unwrap();
        std::fs::copy(file.path(), data.join(file.file_name())).unwrap();
    }
}

/// The anomaly rule of the example as a batch query: every 5-minute window sliding by 10
/// seconds is spelled out (the 30 windows that hold each event), then aggregated.
const ANOMALY_ORACLE: &str = "
WITH assigned AS (
  SELECT page, ts,
         to_timestamp_seconds(CAST(date_part('epoch', date_bin(INTERVAL '10 seconds', ts)) AS BIGINT) - k * 10) AS window_start
  FROM page_views CROSS JOIN (SELECT unnest(range(0, 30)) AS k) AS slides
),
rates AS (
  SELECT page, window_start + INTERVAL '5 minutes' AS window_end,
         sum(CASE WHEN ts >= window_start + INTERVAL '290 seconds' THEN 1 ELSE 0 END) AS last_10s,
         CAST(sum(CASE WHEN ts < window_start + INTERVAL '290 seconds' THEN 1 ELSE 0 END) AS DOUBLE)
           / greatest(count(DISTINCT CASE WHEN ts < window_start + INTERVAL '290 seconds'
                                          THEN date_bin(INTERVAL '10 seconds', ts) END), 1) AS avg_10s
  FROM assigned GROUP BY page, window_start
)
SELECT page, to_char(window_end, '%Y-%m-%dT%H:%M:%S') AS detected_at, last_10s,
       round(avg_10s, 2) AS avg_10s, round(last_10s / greatest(avg_10s, 1.0), 1) AS ratio
FROM rates WHERE last_10s >= 20 AND last_10s > 4 * avg_10s";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anomaly_example_alerts_on_the_burst_like_the_batch_oracle() {
    let (url, received) = server(|_| 200).await;
    let dir = tempfile::tempdir().unwrap();
    copy_anomaly_example(dir.path());
    let path = dir.path().to_path_buf();
    let hook = format!("{url}/alerts");
    let run = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_laketide"))
            .args(["run", "examples/anomaly_alerts.sql", "--log", "debug"])
            .current_dir(&path)
            .env("ALERT_WEBHOOK_URL", &hook)
            .env("ALERT_WEBHOOK_SECRET", SECRET)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr).to_string();
    assert!(run.status.success(), "{stderr}");
    assert!(
        !stderr.contains(SECRET) && !stderr.contains("/alerts"),
        "the URL or the secret leaked into the log:\n{stderr}"
    );

    let received = received.lock().unwrap().clone();
    let mut posted: Vec<String> = received
        .iter()
        .map(|r| {
            assert_eq!(
                r.signature.as_deref(),
                Some(python_signature(&r.body).as_str())
            );
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            format!(
                "{}|{}|{}|{}|{}",
                v["page"].as_str().unwrap(),
                v["detected_at"].as_str().unwrap(),
                v["last_10s"],
                v["avg_10s"],
                v["ratio"]
            )
        })
        .collect();
    posted.sort();

    let ctx = datafusion::prelude::SessionContext::new();
    common::register_json_files(
        &ctx,
        "page_views",
        &dir.path().join("examples/data/page_traffic"),
        &common::clicks_schema(),
    )
    .await;
    let mut oracle = common::query_rows(&ctx, ANOMALY_ORACLE).await;
    oracle.sort();
    assert!(
        oracle
            .iter()
            .any(|r| r.starts_with("/cart|2024-06-01T12:06:10|")),
        "the burst on /cart must raise an alert: {oracle:?}"
    );
    common::assert_same_rows("alerts posted", &posted, &oracle);

    // The same alerts are kept in the lake.
    let lake = common::delta_context("page_alerts", &dir.path().join("lake/page_alerts")).await;
    let mut logged = common::query_rows(
        &lake,
        "SELECT page, to_char(detected_at, '%Y-%m-%dT%H:%M:%S'), last_10s, avg_10s, ratio FROM page_alerts",
    )
    .await;
    logged.sort();
    common::assert_same_rows("alerts in the lake", &logged, &oracle);
}
