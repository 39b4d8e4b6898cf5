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
struct Received {
    body: String,
    signature: Option<String>,
    status: u16,
}

/// Serves on a free port; answers the request numbered `n` (from 0) with `status(n)`.
async fn server(status: fn(usize) -> u16) -> (String, Arc<Mutex<Vec<Received>>>) {
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
