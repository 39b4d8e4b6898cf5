//! A slow stage must never make a split idle: with a webhook sink that takes longer per
//! request than the idle timeout beside a window, files and Kinesis shards that still have
//! data keep holding the watermark, no row is late, and the windows equal the batch oracle.
//! Also a scaled version of the 8-file SESSION backfill with the default idle timeout.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::kinesis::{client, create_stream, kinesis_server, put_records};
use common::proxy::{read_message, render};
use common::{assert_same_rows, delta_context, oracle_context, query_rows};
use laketide::datagen::{ClickstreamEvents, ClickstreamSpec, write_clickstream};
use laketide::oracle;
use laketide::pipeline::run_sql;
use laketide_engine::RunOptions;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// What the slow endpoint received: requests and rows (objects in the JSON array bodies).
#[derive(Default)]
struct Received {
    requests: AtomicUsize,
    rows: AtomicUsize,
}

/// A webhook endpoint that waits `delay` before answering each request.
async fn slow_server(delay: Duration) -> (String, Arc<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let received = Arc::new(Received::default());
    let count = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Ok(Some(request)) = read_message(&mut stream, &mut buf, false).await {
                    tokio::time::sleep(delay).await;
                    let rows = serde_json::from_slice::<Vec<serde_json::Value>>(&request.body)
                        .map_or(0, |rows| rows.len());
                    count.rows.fetch_add(rows, Ordering::SeqCst);
                    count.requests.fetch_add(1, Ordering::SeqCst);
                    let reply = render(&["HTTP/1.1 200 OK".to_string()], b"{}", &[]);
                    if stream.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, received)
}

/// A 1-second TUMBLE into Delta, and every row to the slow webhook (one request per batch).
fn pipeline_sql(source: &str, lake: &Path, hook: &str) -> String {
    format!(
        "CREATE TABLE clicks (
           event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP,
           WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
         ) WITH ({source}, idle_timeout = '100ms');
         CREATE TABLE per_second WITH (connector = 'delta', path = '{lake}/per_second');
         CREATE TABLE slow WITH (connector = 'webhook', url = '{hook}', rows_per_request = '100000',
           timeout = '10s');
         INSERT INTO per_second
         SELECT window_start, window_end, action, count(*) AS events, sum(amount) AS revenue
         FROM TUMBLE(clicks, ts, INTERVAL '1' SECOND)
         GROUP BY window_start, window_end, action;
         INSERT INTO slow SELECT event_id FROM clicks;",
        lake = lake.display()
    )
}

/// The streaming windows against the same aggregation as a batch query over `data`.
async fn assert_windows_match_the_oracle(data: &Path, lake: &Path) {
    let oracle = oracle_context(data).await;
    oracle
        .sql(&format!(
            "CREATE VIEW t AS SELECT {}, action, count(*) AS events, sum(amount) AS revenue
                 FROM clicks GROUP BY 1, 2, 3",
            oracle::tumble_bounds("1 second")
        ))
        .await
        .unwrap();
    let canonical = "SELECT CAST(window_start AS VARCHAR), CAST(window_end AS VARCHAR), action, events, round(revenue, 2) FROM t ORDER BY 1, 3";
    let expected = query_rows(&oracle, canonical).await;
    let actual = query_rows(
        &delta_context("t", &lake.join("per_second")).await,
        canonical,
    )
    .await;
    assert!(expected.len() > 40, "windows: {}", expected.len());
    assert_same_rows("TUMBLE beside a slow sink", &actual, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sink_never_makes_a_file_idle() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("clicks");
    let lake = dir.path().join("lake");
    // Four files of consecutive time ranges, read two at a time: while the webhook takes
    // 300 ms per batch, the source waits on backpressure for longer than the 100 ms idle
    // timeout, and files still being read (or waiting for a reader) must keep their hold.
    let spec = ClickstreamSpec {
        events: 16_000,
        files: 4,
        step_us: 5_000,
        ..Default::default()
    };
    write_clickstream(&data, &spec).unwrap();
    let (hook, received) = slow_server(Duration::from_millis(300)).await;
    let source = format!(
        "connector = 'file', path = '{}', mode = 'once', batch_size = 500, reader_threads = 2",
        data.display()
    );
    let summary = run_sql(&pipeline_sql(&source, &lake, &hook), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(summary.totals.records_in, 16_000);
    assert!(
        received.requests.load(Ordering::SeqCst) >= 32,
        "one slow request per batch"
    );
    assert_eq!(
        summary.totals.late_rows, 0,
        "no row can be late in this data"
    );
    assert_windows_match_the_oracle(&data, &lake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sink_never_makes_a_kinesis_shard_idle() {
    let Some(endpoint) = kinesis_server() else {
        return;
    };
    let kinesis = client(&endpoint);
    let stream = create_stream(&kinesis, "slow-sink", 4).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("clicks");
    let lake = dir.path().join("lake");
    std::fs::create_dir_all(&data).unwrap();
    // The same events in the stream (random partition keys over 4 shards) and in one file
    // for the oracle.
    let spec = ClickstreamSpec {
        events: 6_000,
        files: 1,
        step_us: 5_000,
        ..Default::default()
    };
    let mut events = ClickstreamEvents::new(&spec);
    let mut lines = Vec::new();
    let mut line = String::new();
    while events.next_into(&mut line) {
        lines.push(line.clone());
    }
    std::fs::write(data.join("events.json"), lines.join("\n") + "\n").unwrap();
    for chunk in lines.chunks(500) {
        let records = chunk
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("key-{i}"), l.clone()))
            .collect();
        put_records(&kinesis, &stream, records).await;
    }

    let (hook, received) = slow_server(Duration::from_millis(300)).await;
    let source = format!(
        "connector = 'kinesis', stream = '{stream}', endpoint = '{endpoint}', region = 'us-east-1',
         start_position = 'trim_horizon', max_records_per_request = '200'"
    );
    let options = RunOptions::default();
    let stop = options.stop.clone();
    let sql = pipeline_sql(&source, &lake, &hook);
    let run = tokio::spawn(async move { run_sql(&sql, options).await });
    // Every row reaches the webhook (one slow request per batch); stop once all were
    // posted. Stopping flushes the open windows.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while received.rows.load(Ordering::SeqCst) < 6_000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} rows posted",
            received.rows.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        received.requests.load(Ordering::SeqCst) >= 20,
        "many slow requests"
    );
    stop.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.totals.records_in, 6_000);
    assert_eq!(
        summary.totals.late_rows, 0,
        "no row can be late in this data"
    );
    assert_windows_match_the_oracle(&data, &lake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_backfill_over_eight_files_drops_no_row_with_the_default_idle_timeout() {
    // The 4 M-event case of the issue, scaled: consecutive time ranges in 8 files, 2 s of
    // disorder, 30 s sessions per user, the default idle timeout.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("clicks");
    let lake = dir.path().join("lake");
    let spec = ClickstreamSpec {
        events: 160_000,
        files: 8,
        step_us: 20_000,
        max_delay_ms: 2_000,
        users: 20_000,
        ..Default::default()
    };
    write_clickstream(&data, &spec).unwrap();
    let sql = format!(
        "CREATE TABLE clicks (
           event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP,
           WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
         ) WITH (connector = 'file', path = '{}', mode = 'once');
         CREATE TABLE sessions WITH (connector = 'delta', path = '{}/sessions');
         INSERT INTO sessions
         SELECT user_id, window_start, window_end, count(*) AS events, sum(amount) AS spent
         FROM SESSION(clicks, ts, INTERVAL '30' SECOND)
         GROUP BY user_id, window_start, window_end;",
        data.display(),
        lake.display()
    );
    let summary = run_sql(&sql, RunOptions::default()).await.unwrap();
    assert_eq!(summary.totals.records_in, 160_000);
    assert_eq!(summary.totals.late_rows, 0);
    let oracle = oracle_context(&data).await;
    oracle
        .sql(&format!(
            "CREATE VIEW s AS {}",
            oracle::sessions(
                "clicks",
                "user_id",
                30000,
                "count(*) AS events, sum(amount) AS spent"
            )
        ))
        .await
        .unwrap();
    let canonical = "SELECT user_id, CAST(window_start AS VARCHAR), CAST(window_end AS VARCHAR), events, round(spent, 2) FROM s ORDER BY 1, 2";
    let expected = query_rows(&oracle, canonical).await;
    let actual = query_rows(&delta_context("s", &lake.join("sessions")).await, canonical).await;
    assert!(expected.len() > 10_000, "many sessions: {}", expected.len());
    assert_same_rows("SESSION", &actual, &expected);
}
