//! The dashboard of `laketide run --ui`: driven in headless Chromium (graph, counters and a
//! chart updating as events arrive; the query page), `/metrics` scraped and parsed by an
//! independent Prometheus parser and checked against the input, the token rule, and secrets
//! kept out of every page, log and plan.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `laketide run --ui` in the background, with its stderr collected.
struct Running {
    child: Child,
    url: String,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    /// Starts `laketide run FILE --ui ADDR EXTRA…` in `dir` and waits for the dashboard line.
    fn start(dir: &Path, file: &str, addr: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_laketide"));
        command
            .args(["run", file, "--ui", addr])
            .args(extra)
            .current_dir(dir)
            .env_remove("LAKETIDE_UI_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = BufReader::new(child.stderr.take().unwrap());
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("dashboard at ") {
                    let _ = tx.send(rest.split(' ').next().unwrap_or_default().to_string());
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "laketide printed no dashboard address:\n{}",
                    stderr.lock().unwrap()
                )
            });
        Running { child, url, stderr }
    }

    /// The server's base address (`http://IP:PORT`), whatever address was printed.
    fn base(&self) -> String {
        let rest = self.url.trim_start_matches("http://");
        let port = rest.split('/').next().unwrap().rsplit(':').next().unwrap();
        format!("http://127.0.0.1:{port}")
    }

    /// SIGTERM, then the exit status and everything printed on stderr.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let stderr = self.stderr.lock().unwrap().clone();
        (status, stderr)
    }
}

/// An HTTP answer: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: String,
    body: String,
}

/// A GET (or a POST with `body`) through curl, with extra headers.
fn http(url: &str, headers: &[&str], body: Option<&str>) -> Answer {
    let mut command = Command::new("curl");
    command.args(["-s", "--max-time", "20", "-D", "-", url]);
    for h in headers {
        command.args(["-H", h]);
    }
    if let Some(b) = body {
        command.args([
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data",
            b,
        ]);
    }
    let out = command.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        headers: head.to_lowercase(),
        body: body.to_string(),
    }
}

/// Writes clickstream files into `dir` (one per `period`, `events` each, 25 ms of event time
/// apart, continuing where the last file stopped) until `stop` is set. Returns the number of
/// files written.
fn feed(dir: PathBuf, first: usize, period: Duration, stop: Arc<AtomicBool>) -> usize {
    let mut n = first;
    while !stop.load(Ordering::Relaxed) {
        write_events(&dir, n, 200);
        n += 1;
        std::thread::sleep(period);
    }
    n
}

/// File `n` of the feed: events `n*events ..`, event time from 2024-06-01T12:00:00Z on.
fn write_events(dir: &Path, n: usize, events: usize) {
    const PAGES: [&str; 5] = ["/home", "/home", "/products", "/cart", "/checkout"];
    let start_ms = 1_717_243_200_000i64;
    let mut text = String::new();
    for i in 0..events {
        let id = n * events + i;
        text.push_str(&format!(
            "{{\"event_id\":{id},\"user_id\":\"u{}\",\"page\":\"{}\",\"action\":\"view\",\"amount\":0.0,\"ts\":{}}}\n",
            id % 17,
            PAGES[(id * 7) % PAGES.len()],
            start_ms + id as i64 * 25
        ));
    }
    let tmp = dir.join(format!(".f{n:05}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(format!("f{n:05}.json"))).unwrap();
}

const PIPELINE: &str = "
CREATE TABLE page_views (
  event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (connector = 'file', path = 'in/', format = 'json', mode = 'continuous',
        poll_interval = '100ms', on_error = 'skip');
CREATE TABLE views WITH (connector = 'delta', path = 'lake/views');
INSERT INTO views
SELECT page, window_start, window_end, count(*) AS views
FROM TUMBLE(page_views, ts, INTERVAL '2' SECOND)
GROUP BY page, window_start, window_end;
";

fn pipeline_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("p.sql"), PIPELINE).unwrap();
    dir
}

/// Chromium and playwright-core, if installed. Under CI or `LAKETIDE_EMULATORS=1` (set by
/// `scripts/test.sh`, which installs both) their absence is a failure; otherwise the test
/// skips.
fn browser() -> Option<(String, PathBuf)> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ui_tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let playwright = ui_tests.join("node_modules/playwright-core");
    if Path::new(&chromium).exists() && playwright.exists() {
        return Some((chromium, ui_tests));
    }
    let required =
        std::env::var_os("CI").is_some() || std::env::var_os("LAKETIDE_EMULATORS").is_some();
    assert!(
        !required,
        "no Chromium at {chromium} or no {}: run the tests with scripts/test.sh",
        playwright.display()
    );
    eprintln!("skipped: no Chromium or playwright-core (scripts/test.sh installs them)");
    None
}

#[test]
fn the_dashboard_in_chromium_shows_the_graph_and_updates_counters_and_a_chart() {
    let Some((chromium, ui_tests)) = browser() else {
        return;
    };
    let dir = pipeline_dir();
    write_events(&dir.path().join("in"), 0, 200);
    let run = Running::start(
        dir.path(),
        "p.sql",
        "127.0.0.1:0",
        &["--checkpoint-interval", "500ms"],
        &[],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (in_dir, stop) = (dir.path().join("in"), stop.clone());
        std::thread::spawn(move || feed(in_dir, 1, Duration::from_millis(300), stop))
    };
    let browsed = Command::new("node")
        .arg(ui_tests.join("dashboard.mjs"))
        .arg(&run.url)
        .arg(dir.path())
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let files = feeder.join().unwrap();
    let (status, stderr) = run.stop();
    let seen = String::from_utf8_lossy(&browsed.stdout).to_string();
    assert!(
        browsed.status.success(),
        "the browser check failed:\n{}\n{seen}\nlaketide:\n{stderr}",
        String::from_utf8_lossy(&browsed.stderr)
    );
    assert!(status.success(), "{stderr}");
    let seen: serde_json::Value = serde_json::from_str(seen.trim()).unwrap();
    // source, tumble, project, window aggregate, project, sink: as `explain` lists them.
    assert_eq!(seen["nodes"], 6, "{seen}");
    assert_eq!(seen["edges"], 5, "{seen}");
    let (first, later) = (&seen["first"], &seen["later"]);
    for counter in ["records_in", "rows_written", "chart_points", "updates"] {
        assert!(
            later[counter].as_u64() > first[counter].as_u64(),
            "{counter} did not grow: {seen}"
        );
    }
    assert!(
        later["records_in"].as_u64().unwrap() <= files as u64 * 200,
        "{seen}"
    );
    // One series per page.
    assert_eq!(later["chart_series"], 4, "{seen}");
    assert!(!seen["query"]["rows"].as_array().unwrap().is_empty());
    assert!(dir.path().join("dashboard.png").exists());
}

/// The first sample of `name` whose labels include all of `labels`.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

fn scrape(base: &str) -> (String, prometheus_parse::Scrape) {
    let answer = http(&format!("{base}/metrics"), &[], None);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer
            .headers
            .contains("content-type: application/openmetrics-text"),
        "{}",
        answer.headers
    );
    let lines = answer.body.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).unwrap();
    (answer.body, parsed)
}

#[test]
fn metrics_scrape_parses_and_counts_what_the_files_hold() {
    let dir = pipeline_dir();
    let input = dir.path().join("in");
    // 300 events (event time 0 s .. 7.5 s) and two malformed lines.
    write_events(&input, 0, 300);
    let first = input.join("f00000.json");
    let mut text = std::fs::read_to_string(&first).unwrap();
    text.push_str("{\"event_id\": oops\nnot json at all\n");
    std::fs::write(&first, &text).unwrap();
    let run = Running::start(
        dir.path(),
        "p.sql",
        "127.0.0.1:0",
        &["--checkpoint-interval", "300ms"],
        &[],
    );
    let base = run.base();
    let wait_for = |what: &str, check: &dyn Fn(&prometheus_parse::Scrape) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (text, parsed) = scrape(&base);
            if check(&parsed) {
                return (text, parsed);
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let source = [("node", "page_views"), ("role", "source")];
    wait_for("the first file", &|s| {
        sample(s, "laketide_records_in_total", &source) == Some(300.0)
            && sample(s, "laketide_checkpoint_last_id", &[]).is_some_and(|id| id >= 1.0)
    });
    // Three events far behind the watermark (6.5 s): their 2-second window closed long ago.
    let late: String = (0..3)
        .map(|i| {
            format!(
                "{{\"event_id\":{},\"user_id\":\"late\",\"page\":\"/home\",\"action\":\"view\",\"amount\":0.0,\"ts\":{}}}\n",
                9_000 + i,
                1_717_243_200_000i64 + i
            )
        })
        .collect();
    std::fs::write(input.join(".f00001.tmp"), &late).unwrap();
    std::fs::rename(input.join(".f00001.tmp"), input.join("f00001.json")).unwrap();
    let (text, parsed) = wait_for("the late events", &|s| {
        sample(s, "laketide_records_in_total", &source) == Some(303.0)
            // Dropped whole by the window assignment, before the aggregate sees them.
            && sample(s, "laketide_late_records_total", &[("node", "tumble")]) == Some(3.0)
            && sample(s, "laketide_source_late_records_total", &source) == Some(3.0)
            // The Delta sink's data files, written at a checkpoint after the windows closed.
            && sample(s, "laketide_connector_bytes_total", &[("node", "views")])
                .is_some_and(|b| b > 0.0)
    });
    assert_eq!(
        sample(&parsed, "laketide_source_watermark_ahead_seconds", &source),
        Some(0.0),
        "events from 2024 keep the watermark behind the clock"
    );
    let (status, stderr) = run.stop();
    assert!(status.success(), "{stderr}");

    // Every family is described, and no two samples share a name and label set.
    let mut series = std::collections::HashSet::new();
    for s in &parsed.samples {
        let family = s.metric.trim_end_matches("_total");
        assert!(
            text.contains(&format!("# HELP {family} "))
                && text.contains(&format!("# TYPE {family} ")),
            "no HELP/TYPE for {}",
            s.metric
        );
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        assert!(
            series.insert((s.metric.clone(), labels)),
            "duplicate series {}",
            s.metric
        );
    }
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    let bytes = std::fs::metadata(&first).unwrap().len() + late.len() as u64;
    assert_eq!(
        sample(&parsed, "laketide_connector_bytes_total", &source),
        Some(bytes as f64)
    );
    assert_eq!(
        sample(&parsed, "laketide_bad_records_total", &source),
        Some(2.0)
    );
    assert_eq!(
        sample(&parsed, "laketide_records_out_total", &source),
        Some(303.0)
    );
    // The watermark: the largest event time (299 × 25 ms) minus the 1-second delay.
    let watermark = 1_717_243_200.0 + 299.0 * 0.025 - 1.0;
    let seen = sample(&parsed, "laketide_watermark_timestamp_seconds", &source).unwrap();
    assert!((seen - watermark).abs() < 1e-6, "{seen} vs {watermark}");
    let delay = sample(&parsed, "laketide_watermark_delay_seconds", &source).unwrap();
    assert!(delay > 0.0);
    // Windows closed by that watermark: [0,2), [2,4), [4,6) per page seen in them.
    let emitted = sample(
        &parsed,
        "laketide_windows_emitted_total",
        &[("node", "window_aggregate")],
    )
    .unwrap();
    let sink = [("node", "views"), ("role", "sink")];
    assert_eq!(
        sample(&parsed, "laketide_records_in_total", &sink),
        Some(emitted)
    );
    assert_eq!(emitted, 12.0, "{text}");
    assert!(sample(&parsed, "laketide_checkpoint_last_duration_seconds", &[]).unwrap() >= 0.0);
    assert!(sample(&parsed, "laketide_checkpoint_last_size_bytes", &[]).unwrap() > 0.0);
    assert_eq!(
        sample(&parsed, "laketide_connector_retries_total", &sink),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_on_a_public_address_needs_its_token_and_shows_no_secret() {
    const TOKEN: &str = "ui-token-4f1e9c";
    const URL_SECRET: &str = "url-secret-77a1";
    const SIGNING_SECRET: &str = "signing-secret-9b2c";
    // The first request is throttled (429), the second fails (503): both are retried.
    let (hook, received) = crate::webhook::server(|n| match n {
        0 => 429,
        1 => 503,
        _ => 200,
    })
    .await;
    let dir = pipeline_dir();
    write_events(&dir.path().join("in"), 0, 400);
    std::fs::write(
        dir.path().join("p.sql"),
        format!(
            "{PIPELINE}
             CREATE TABLE alerts WITH (connector = 'webhook', url = '{hook}/hook?key={URL_SECRET}',
               secret_env = 'HOOK_SECRET');
             INSERT INTO alerts SELECT page, count(*) AS n FROM TUMBLE(page_views, ts, INTERVAL '2' SECOND)
             GROUP BY page, window_start, window_end;"
        ),
    )
    .unwrap();
    let path = dir.path().to_path_buf();
    let (run, base) = tokio::task::spawn_blocking(move || {
        let run = Running::start(
            &path,
            "p.sql",
            "0.0.0.0:0",
            &["--log", "debug", "--checkpoint-interval", "300ms"],
            &[
                ("LAKETIDE_UI_TOKEN", TOKEN),
                ("HOOK_SECRET", SIGNING_SECRET),
            ],
        );
        let base = run.base();
        (run, base)
    })
    .await
    .unwrap();
    // A token the user chose is never printed.
    assert!(!run.url.contains("token"), "{}", run.url);
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "no alert was posted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bearer = format!("authorization: Bearer {TOKEN}");
    let checks = tokio::task::spawn_blocking(move || {
        let mut pages = String::new();
        for path in ["/", "/query", "/metrics", "/api/pipeline", "/api/status"] {
            let denied = http(&format!("{base}{path}"), &[], None);
            assert_eq!(denied.status, 401, "{path} without a token");
            let wrong = http(
                &format!("{base}{path}"),
                &["authorization: Bearer nope"],
                None,
            );
            assert_eq!(wrong.status, 401, "{path} with a wrong token");
            let allowed = http(&format!("{base}{path}"), &[&bearer], None);
            assert_eq!(allowed.status, 200, "{path} with the token");
            pages.push_str(&allowed.body);
        }
        // In a browser: the token once in the address becomes an HTTP-only cookie, named
        // after the port so that two dashboards on one host keep their own.
        let port = base.rsplit(':').next().unwrap().to_string();
        let visit = http(&format!("{base}/?token={TOKEN}"), &[], None);
        assert_eq!(visit.status, 303);
        assert!(
            visit.headers.contains(&format!(
                "set-cookie: laketide_token_{port}={}; httponly",
                TOKEN.to_lowercase()
            )),
            "{}",
            visit.headers
        );
        assert!(
            visit.headers.contains("location: /\r\n"),
            "{}",
            visit.headers
        );
        // The redirect stays on this server.
        let sneaky = http(&format!("{base}//evil.example/?token={TOKEN}"), &[], None);
        assert!(
            sneaky.headers.contains("location: /evil.example/\r\n"),
            "{}",
            sneaky.headers
        );
        let with_cookie = http(
            &format!("{base}/"),
            &[&format!("cookie: laketide_token_{port}={TOKEN}")],
            None,
        );
        assert_eq!(with_cookie.status, 200);
        let other_port = http(
            &format!("{base}/"),
            &[&format!("cookie: laketide_token_1={TOKEN}")],
            None,
        );
        assert_eq!(other_port.status, 401);
        // The event stream, read for a moment.
        let events = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "2",
                "-H",
                &bearer,
                &format!("{base}/api/events"),
            ])
            .output()
            .unwrap();
        let events = String::from_utf8_lossy(&events.stdout).to_string();
        assert!(events.contains("event: status"), "{events}");
        pages.push_str(&events);
        // Only queries: no statement that could read or write other files.
        let written = std::env::temp_dir().join(common::unique("copy-to"));
        for sql in [
            format!("COPY (SELECT 1) TO '{}'", written.display()),
            "CREATE EXTERNAL TABLE creds STORED AS CSV LOCATION '/etc/hostname'".to_string(),
            "SET datafusion.execution.batch_size = 1".to_string(),
        ] {
            let body = serde_json::json!({ "sql": sql }).to_string();
            let refused = http(&format!("{base}/api/query"), &[&bearer], Some(&body));
            assert_eq!(refused.status, 400, "{sql}: {}", refused.body);
        }
        assert!(!written.exists());
        let metrics = http(&format!("{base}/metrics"), &[&bearer], None).body;
        let parsed =
            prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_string()))).unwrap();
        let alerts = [("node", "alerts"), ("role", "sink")];
        assert_eq!(
            sample(&parsed, "laketide_connector_throttles_total", &alerts),
            Some(1.0),
            "{metrics}"
        );
        assert_eq!(
            sample(&parsed, "laketide_connector_retries_total", &alerts),
            Some(1.0),
            "{metrics}"
        );
        let query = http(
            &format!("{base}/api/query"),
            &[&bearer],
            Some(r#"{"sql": "SELECT count(*) AS n FROM views"}"#),
        );
        assert_eq!(query.status, 200, "{}", query.body);
        pages.push_str(&query.body);
        let bad_query = http(
            &format!("{base}/api/query"),
            &[&bearer],
            Some(r#"{"sql": "SELECT nope FROM views"}"#),
        );
        assert_eq!(bad_query.status, 400);
        assert!(bad_query.body.contains("nope"), "{}", bad_query.body);
        pages
    })
    .await
    .unwrap();
    let path = dir.path().to_path_buf();
    let (stopped, explain) = tokio::task::spawn_blocking(move || {
        let stopped = run.stop();
        let explain = Command::new(env!("CARGO_BIN_EXE_laketide"))
            .args(["explain", "p.sql"])
            .current_dir(&path)
            .output()
            .unwrap();
        (stopped, explain)
    })
    .await
    .unwrap();
    let (status, stderr) = stopped;
    assert!(status.success(), "{stderr}");
    assert!(
        checks.contains("webhook POST"),
        "the pipeline page lists the webhook"
    );
    let explain = String::from_utf8_lossy(&explain.stdout).to_string();
    for (what, text) in [
        ("pages", &checks),
        ("debug log", &stderr),
        ("explain", &explain),
    ] {
        for secret in [TOKEN, URL_SECRET, SIGNING_SECRET] {
            assert!(
                !text.contains(secret),
                "{secret} appears in the {what}:\n{text}"
            );
        }
    }
}

#[test]
fn a_public_dashboard_without_a_token_generates_one_and_prints_it_once() {
    let dir = pipeline_dir();
    write_events(&dir.path().join("in"), 0, 10);
    let run = Running::start(dir.path(), "p.sql", "0.0.0.0:0", &[], &[]);
    let token = run
        .url
        .split_once("?token=")
        .map(|(_, t)| t.to_string())
        .unwrap_or_else(|| panic!("no token in {}", run.url));
    assert_eq!(token.len(), 32, "{token}");
    let base = run.base();
    assert_eq!(http(&format!("{base}/api/status"), &[], None).status, 401);
    let answer = http(
        &format!("{base}/api/status"),
        &[&format!("authorization: Bearer {token}")],
        None,
    );
    assert_eq!(answer.status, 200);
    let (status, stderr) = run.stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(stderr.matches(&token).count(), 1, "{stderr}");
}

#[test]
fn a_loopback_dashboard_refuses_other_host_names() {
    let dir = pipeline_dir();
    write_events(&dir.path().join("in"), 0, 10);
    let run = Running::start(dir.path(), "p.sql", "127.0.0.1:0", &[], &[]);
    let base = run.base();
    assert_eq!(http(&format!("{base}/"), &[], None).status, 200);
    // DNS rebinding: a page on another site resolving its name to 127.0.0.1.
    assert_eq!(
        http(
            &format!("{base}/api/status"),
            &["host: attacker.example"],
            None
        )
        .status,
        421
    );
    let (status, stderr) = run.stop();
    assert!(status.success(), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_lag_per_shard_and_bytes_show_on_the_dashboard_and_in_metrics() {
    use crate::common::kinesis;
    let Some(endpoint) = kinesis::kinesis_server() else {
        return;
    };
    let client = kinesis::client(&endpoint);
    let stream = kinesis::create_stream(&client, "ui-lag", 2).await;
    // 4 keys × 50 records, spread over both shards.
    kinesis::put_numbered(&client, &stream, 4, 0, 50).await;
    let bytes: usize = (0..50u64)
        .flat_map(|n| (0..4).map(move |k| format!("{{\"key\":\"k{k}\",\"n\":{n}}}").len()))
        .sum();
    let dir = pipeline_dir();
    std::fs::write(
        dir.path().join("p.sql"),
        format!(
            "CREATE TABLE numbers (key TEXT, n BIGINT)
             WITH (connector = 'kinesis', stream = '{stream}', start_position = 'trim_horizon',
                   endpoint = '{endpoint}', poll_interval = '200ms');
             CREATE TABLE copied WITH (connector = 'filesystem', path = 'out', format = 'json');
             INSERT INTO copied SELECT key, n FROM numbers;"
        ),
    )
    .unwrap();
    let path = dir.path().to_path_buf();
    let run = tokio::task::spawn_blocking(move || {
        Running::start(
            &path,
            "p.sql",
            "127.0.0.1:0",
            &["--checkpoint-interval", "500ms"],
            &[],
        )
    })
    .await
    .unwrap();
    let base = run.base();
    let (metrics, status) = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let (text, parsed) = scrape(&base);
            let source = [("node", "numbers"), ("role", "source")];
            let shards = parsed
                .samples
                .iter()
                .filter(|s| s.metric == "laketide_source_lag_seconds")
                .count();
            let sink_bytes = sample(
                &parsed,
                "laketide_connector_bytes_total",
                &[("node", "copied")],
            );
            if sample(&parsed, "laketide_records_in_total", &source) == Some(200.0)
                && shards == 2
                && sink_bytes.is_some_and(|b| b > 0.0)
            {
                let status = http(&format!("{base}/api/status"), &[], None).body;
                return (parsed, status);
            }
            assert!(Instant::now() < deadline, "timed out:\n{text}");
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .unwrap();
    let source = [("node", "numbers"), ("role", "source")];
    assert_eq!(
        sample(&metrics, "laketide_connector_bytes_total", &source),
        Some(bytes as f64)
    );
    for s in metrics
        .samples
        .iter()
        .filter(|s| s.metric == "laketide_source_lag_seconds")
    {
        assert!(
            s.labels.get("split").unwrap().starts_with("shardId-"),
            "{s:?}"
        );
    }
    // The page gets the same lag per shard.
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let numbers = status["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "numbers")
        .unwrap()
        .clone();
    assert_eq!(numbers["lag_ms"].as_object().unwrap().len(), 2, "{numbers}");
    let (exit, stderr) = tokio::task::spawn_blocking(move || run.stop())
        .await
        .unwrap();
    assert!(exit.success(), "{stderr}");
}

#[test]
fn the_token_variable_is_ignored_without_ui_and_checked_with_it() {
    let dir = pipeline_dir();
    write_events(&dir.path().join("in"), 0, 10);
    std::fs::write(
        dir.path().join("once.sql"),
        PIPELINE.replace("'continuous'", "'once'"),
    )
    .unwrap();
    let run = |args: &[&str], token: &str| {
        Command::new(env!("CARGO_BIN_EXE_laketide"))
            .args(args)
            .current_dir(dir.path())
            .env("LAKETIDE_UI_TOKEN", token)
            .output()
            .unwrap()
    };
    let plain = run(&["run", "once.sql", "--quiet"], "exported-for-another-run");
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let refused = run(
        &["run", "once.sql", "--quiet", "--ui", "0.0.0.0:0"],
        "two words",
    );
    let stderr = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(!refused.status.success());
    assert!(stderr.contains("the dashboard token must be"), "{stderr}");
    assert!(!stderr.contains("two words"), "{stderr}");
}

#[test]
fn an_updating_sink_shows_its_current_rows_by_key_in_the_served_status() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("in")).unwrap();
    std::fs::write(
        dir.path().join("p.sql"),
        "SET update_interval = '0s';
         CREATE TABLE page_views (
           event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP)
         WITH (connector = 'file', path = 'in/', format = 'json', mode = 'continuous',
               poll_interval = '100ms', batch_size = '10');
         CREATE TABLE per_page WITH (connector = 'console');
         INSERT INTO per_page SELECT page, count(*) AS views FROM page_views GROUP BY page;",
    )
    .unwrap();
    // 200 events over 4 pages: every page's count changes many times.
    write_events(&dir.path().join("in"), 0, 200);
    let run = Running::start(dir.path(), "p.sql", "127.0.0.1:0", &[], &[]);
    let base = run.base();
    let deadline = Instant::now() + Duration::from_secs(60);
    let rows = loop {
        let body = http(&format!("{base}/api/status"), &[], None).body;
        let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let sink = &status["results"]["per_page"];
        let total: u64 = sink["rows"]
            .as_array()
            .map(|rows| rows.iter().map(|r| r[1].as_u64().unwrap_or(0)).sum())
            .unwrap_or(0);
        if total == 200 {
            assert_eq!(sink["current"], true, "{sink}");
            assert_eq!(
                sink["columns"].as_array().unwrap().len(),
                2,
                "no change column: {sink}"
            );
            break sink["rows"].as_array().unwrap().clone();
        }
        assert!(
            Instant::now() < deadline,
            "the current rows never added up: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // One row per page (not a tail of changes), their counts those of the input.
    let mut pages: Vec<String> = rows
        .iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect();
    pages.sort();
    assert_eq!(pages, ["/cart", "/checkout", "/home", "/products"]);
    let (_, err) = run.stop();
    assert!(err.contains("finished"), "{err}");
}
