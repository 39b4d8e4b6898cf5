//! Crash recovery: a pipeline killed with SIGKILL at random moments while its input keeps
//! arriving, and restarted each time, ends with exactly the output of an uninterrupted run
//! (the batch oracle) in its Delta tables (appended windows and sessions, and an updating
//! query kept by MERGE) and in DynamoDB; a graceful stop resumes where it
//! stopped; damaged checkpoints and changed pipelines are handled as documented.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::prelude::SessionContext;

use crate::common;

fn laketide(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_laketide"));
    c.args(args)
        .current_dir(dir)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "testtest");
    c
}

fn output(dir: &Path, args: &[&str]) -> Output {
    laketide(dir, args).output().unwrap()
}

fn start(dir: &Path, args: &[&str]) -> Child {
    laketide(dir, args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    err
}

/// Sends SIGTERM and waits for a clean exit; returns stderr.
fn stop(mut child: Child) -> String {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "laketide did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = stderr_of(&mut child);
    assert!(status.success(), "a graceful stop exits 0: {err}");
    err
}

/// The rows a `laketide query` command prints as CSV (header dropped), sorted.
fn query_rows(mut query: Command) -> Vec<String> {
    let out = query.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rows: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect();
    rows.sort();
    rows
}

/// Rows of a query over the local lake (`./lake`).
fn lake_rows(dir: &Path, sql: &str) -> Vec<String> {
    query_rows(laketide(
        dir,
        &["query", "--lake", "lake", "--format", "csv", sql],
    ))
}

/// A tiny deterministic generator (the seed is printed so a failure can be replayed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

const EVENTS_PER_FILE: u64 = 200;

/// Writes file `n` of the input: events 10 ms apart in event time, keys k0..k6. Written under a
/// hidden name and renamed, as a well-behaved producer does.
fn write_input(dir: &Path, n: u64) {
    let mut text = String::new();
    for j in 0..EVENTS_PER_FILE {
        let i = n * EVENTS_PER_FILE + j;
        let ms = i * 10;
        text.push_str(&format!(
            "{{\"id\":{i},\"k\":\"k{}\",\"v\":{},\"ts\":\"2024-01-01T00:{:02}:{:02}.{:03}Z\"}}\n",
            i % 7,
            i % 100,
            ms / 60_000,
            (ms / 1000) % 60,
            ms % 1000
        ));
    }
    let temp = dir.join(format!(".f{n:04}.json.tmp"));
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(temp, dir.join(format!("f{n:04}.json"))).unwrap();
}

/// One event an hour later: it closes every window of the input before it.
fn write_closer(dir: &Path) {
    std::fs::write(
        dir.join("zz-closer.json"),
        "{\"id\":-1,\"k\":\"closer\",\"v\":0,\"ts\":\"2024-01-01T01:00:00Z\"}\n",
    )
    .unwrap();
}

/// The rows of `sql` in `ctx` as the CSV of `laketide query` prints them, sorted.
async fn sorted_csv_rows(ctx: &SessionContext, sql: &str) -> Vec<String> {
    let mut rows: Vec<String> = common::query_rows(ctx, sql)
        .await
        .into_iter()
        .map(|r| r.replace('|', ","))
        .collect();
    rows.sort();
    rows
}

/// A DataFusion session with the input files registered as `e`: the batch oracle.
async fn input_context(input: &Path) -> SessionContext {
    let ctx = SessionContext::new();
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("k", DataType::Utf8, true),
        Field::new("v", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
    ]);
    common::register_json_files(&ctx, "e", input, &schema).await;
    ctx
}

async fn oracle(input: &Path, time_format: &str) -> Vec<String> {
    let ctx = input_context(input).await;
    let sql = format!(
        "SELECT k, to_char(date_bin(INTERVAL '2 seconds', ts), '{time_format}') AS ws,
                count(*) AS n, sum(v) AS total
         FROM e WHERE k <> 'closer' GROUP BY k, date_bin(INTERVAL '2 seconds', ts)"
    );
    sorted_csv_rows(&ctx, &sql).await
}

/// Sessions per `v` (events 1 s apart per value, so each value's session spans the whole
/// run and lives through every kill), as a batch query.
async fn session_oracle(input: &Path) -> Vec<String> {
    let ctx = input_context(input).await;
    ctx.sql(&format!(
        "CREATE VIEW s AS {}",
        laketide::oracle::sessions(
            "(SELECT * FROM e WHERE k <> 'closer')",
            "v",
            1500,
            "count(*) AS n, sum(id) AS ids"
        )
    ))
    .await
    .unwrap();
    sorted_csv_rows(&ctx, &session_rows("s")).await
}

/// The compared session columns of `table` (the oracle view or the Delta table).
fn session_rows(table: &str) -> String {
    format!(
        "SELECT v, CAST(window_start AS VARCHAR), CAST(window_end AS VARCHAR), n, ids FROM {table}"
    )
}

async fn dynamodb_rows(client: &Client, table: &str) -> Vec<String> {
    let items = common::dynamodb::scan_by(client, table).await;
    let text = |v: &AttributeValue| match v {
        AttributeValue::S(s) => s.clone(),
        AttributeValue::N(n) => n.clone(),
        other => format!("{other:?}"),
    };
    let mut rows: Vec<String> = items
        .iter()
        .filter(|i| text(&i["k"]) != "closer")
        .map(|i| {
            format!(
                "{},{},{},{}",
                text(&i["k"]),
                text(&i["window_start"]),
                text(&i["n"]),
                text(&i["total"])
            )
        })
        .collect();
    rows.sort();
    rows
}

fn pipeline(dynamodb_table: &str, dynamodb: &str) -> String {
    format!(
        "CREATE TABLE e (id BIGINT, k TEXT, v BIGINT, ts TIMESTAMP,
           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
         WITH (connector = 'file', path = 'in', poll_interval = '50ms');
         CREATE TABLE stats WITH (connector = 'delta', path = 'lake/stats');
         CREATE TABLE serving WITH (connector = 'dynamodb', table = '{dynamodb_table}',
           primary_key = 'k, window_start', create_if_missing = 'true',
           endpoint = '{dynamodb}', region = 'us-east-1');
         INSERT INTO stats
         SELECT k, window_start, count(*) AS n, sum(v) AS total
         FROM TUMBLE(e, ts, INTERVAL '2' SECOND) GROUP BY k, window_start, window_end;
         INSERT INTO serving
         SELECT k, window_start, count(*) AS n, sum(v) AS total
         FROM TUMBLE(e, ts, INTERVAL '2' SECOND) GROUP BY k, window_start, window_end;
         CREATE TABLE sessions WITH (connector = 'delta', path = 'lake/sessions');
         INSERT INTO sessions
         SELECT v, window_start, window_end, count(*) AS n, sum(id) AS ids
         FROM SESSION(e, ts, INTERVAL '1500' MILLISECOND) GROUP BY v, window_start, window_end;
         CREATE TABLE totals WITH (connector = 'delta', path = 'lake/totals', primary_key = 'k');
         INSERT INTO totals SELECT k, count(*) AS n, sum(v) AS total, max(id) AS last FROM e GROUP BY k;
         CREATE TABLE pairs WITH (connector = 'delta', path = 'lake/pairs');
         INSERT INTO pairs {PAIRS};
         CREATE TABLE wjoin WITH (connector = 'delta', path = 'lake/wjoin');
         INSERT INTO wjoin {WINDOW_JOIN};
         CREATE TABLE ujoin WITH (connector = 'filesystem', path = 'lake/ujoin', format = 'json');
         INSERT INTO ujoin {UPDATING_JOIN};
         CREATE TABLE dims (k TEXT, name TEXT)
           WITH (connector = 'file', path = 'dims', format = 'csv', csv.header = 'false');
         CREATE TABLE named WITH (connector = 'delta', path = 'lake/named');
         INSERT INTO named {LOOKUP_JOIN};
         CREATE TABLE later WITH (connector = 'delta', path = 'lake/later');
         INSERT INTO later {REGULAR_JOIN};"
    )
}

/// A lookup join with a file side input (`dims`, one name per key but k6's).
const LOOKUP_JOIN: &str = "SELECT e.id, d.name FROM e
  JOIN dims FOR SYSTEM_TIME AS OF PROCTIME() AS d ON e.k = d.k";

/// The side input of [`LOOKUP_JOIN`].
fn write_dims(dir: &Path) {
    std::fs::create_dir_all(dir.join("dims")).unwrap();
    let lines: String = (0..6).map(|k| format!("k{k},name-{k}\n")).collect();
    std::fs::write(dir.join("dims/dims.csv"), lines).unwrap();
}

/// A regular (no time bound) inner self-join: each event with the one 700 events later (the
/// same key and value).
const REGULAR_JOIN: &str = "SELECT a.id AS a_id, b.id AS b_id FROM e a JOIN e b
  ON a.k = b.k AND a.v = b.v AND b.id - a.id = 700";

/// A window join of two TUMBLE aggregates of the input: the same rows as `stats`.
const WINDOW_JOIN: &str = "SELECT a.k, a.window_start, a.n, b.total
  FROM (SELECT k, window_start, window_end, count(*) AS n
        FROM TUMBLE(e, ts, INTERVAL '2' SECOND) GROUP BY k, window_start, window_end) a
  JOIN (SELECT k, window_start, window_end, sum(v) AS total
        FROM TUMBLE(e, ts, INTERVAL '2' SECOND) GROUP BY k, window_start, window_end) b
    ON a.k = b.k AND a.window_end = b.window_end";

/// A LEFT join of two updating aggregates (an updating result, written as a changelog): each
/// key's count beside its largest value of 50 or more (the closer has none: padded).
const UPDATING_JOIN: &str = "SELECT t.k, t.n, m.top
  FROM (SELECT k, count(*) AS n FROM e GROUP BY k) t
  LEFT JOIN (SELECT k, max(v) AS top FROM e WHERE v >= 50 GROUP BY k) m ON t.k = m.k";

/// The rows the committed changelog files of `lake/ujoin` leave (`k,n,top`), sorted: inserts
/// add a row, deletes take out an equal one, which must be there.
fn ujoin_rows(dir: &Path) -> Vec<String> {
    let mut files = crate::updating::walk_files(&dir.join("lake/ujoin"));
    files.retain(|f| f.extension().is_some_and(|x| x == "json"));
    files.sort();
    let mut rows: Vec<String> = Vec::new();
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = |k: &str| match &v[k] {
                serde_json::Value::Null => "NULL".to_string(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let row = format!("{},{},{}", text("k"), text("n"), text("top"));
            match v["op"].as_str().unwrap() {
                "insert" => rows.push(row),
                "delete" => {
                    let at = rows.iter().position(|r| *r == row);
                    rows.swap_remove(
                        at.unwrap_or_else(|| panic!("{line} retracts a row not there")),
                    );
                }
                other => panic!("unexpected op {other} in {line}"),
            }
        }
    }
    rows.sort();
    rows
}

/// An interval self-join, outer: each event with the earlier events of its key in the 100 ms
/// before it (with keys 70 ms apart, one; the first event of each key has none, and goes out
/// padded once the watermark passes it). Not the closer: nothing passes it while the pipeline
/// runs.
const PAIRS: &str = "SELECT a.id AS a_id, b.id AS b_id FROM e a LEFT JOIN e b
  ON a.k = b.k AND b.ts BETWEEN a.ts - INTERVAL '100' MILLISECOND AND a.ts - INTERVAL '1' MILLISECOND
  WHERE a.k <> 'closer'";

/// The interval join over all of the input, as a batch query.
async fn pairs_oracle(input: &Path) -> Vec<String> {
    let ctx = input_context(input).await;
    let sql = format!("SELECT a_id, coalesce(b_id, -1) FROM ({PAIRS})");
    sorted_csv_rows(&ctx, &sql).await
}

/// The running totals per key (an updating query) over all of the input, as a batch query.
async fn totals_oracle(input: &Path) -> Vec<String> {
    let ctx = input_context(input).await;
    sorted_csv_rows(
        &ctx,
        "SELECT k, count(*), sum(v), max(id) FROM e GROUP BY k",
    )
    .await
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_loses_and_repeats_nothing() {
    let Some(dynamodb) = common::emulator(
        "DynamoDB",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "http://127.0.0.1:8000",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let table = common::unique("crash-serving");
    std::fs::write(dir.path().join("p.sql"), pipeline(&table, &dynamodb)).unwrap();
    write_dims(dir.path());
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash test seed {seed}");
    let mut random = Lcg(seed);

    // Input keeps arriving on its own thread for the whole time of the kills.
    const FILES: u64 = 60;
    let writer = {
        let input = input.clone();
        std::thread::spawn(move || {
            for n in 0..FILES {
                write_input(&input, n);
                std::thread::sleep(Duration::from_millis(150));
            }
        })
    };
    let args = ["run", "p.sql", "--quiet", "--checkpoint-interval", "250ms"];
    let mut kills = 0;
    while kills < 20 || !writer.is_finished() {
        let mut child = start(dir.path(), &args);
        std::thread::sleep(Duration::from_millis(200 + random.next(1300)));
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the pipeline ended by itself ({status}): {}",
                stderr_of(&mut child)
            );
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    writer.join().unwrap();
    write_closer(&input);

    // A last run without kills: it ends when every window before the closer is committed.
    let expected_lake = oracle(&input, "%Y-%m-%dT%H:%M:%S").await;
    let expected_sessions = session_oracle(&input).await;
    let expected_totals = totals_oracle(&input).await;
    let expected_pairs = pairs_oracle(&input).await;
    let expected_ujoin = sorted_csv_rows(&input_context(&input).await, UPDATING_JOIN).await;
    let expected_named = {
        let ctx = input_context(&input).await;
        ctx.sql("CREATE VIEW dims AS SELECT * FROM (VALUES ('k0', 'name-0'), ('k1', 'name-1'), ('k2', 'name-2'), ('k3', 'name-3'), ('k4', 'name-4'), ('k5', 'name-5')) AS d(k, name)")
            .await
            .unwrap();
        sorted_csv_rows(&ctx, "SELECT e.id, d.name FROM e JOIN dims d ON e.k = d.k").await
    };
    let expected_later = sorted_csv_rows(&input_context(&input).await, REGULAR_JOIN).await;
    let child = start(dir.path(), &args);
    let deadline = Instant::now() + Duration::from_secs(120);
    let windows = expected_lake.len();
    let count = |table: &str| {
        lake_rows(dir.path(), &format!("SELECT count(*) FROM {table}"))
            .first()
            .and_then(|n| n.parse::<usize>().ok())
    };
    loop {
        let done = dir.path().join("lake/stats/_delta_log").is_dir()
            && dir.path().join("lake/sessions/_delta_log").is_dir()
            && count("stats").is_some_and(|n| n >= windows)
            && count("sessions").is_some_and(|n| n >= expected_sessions.len())
            && dir.path().join("lake/totals/_delta_log").is_dir()
            && lake_rows(dir.path(), "SELECT n FROM totals WHERE k = 'closer'") == ["1"]
            && dir.path().join("lake/pairs/_delta_log").is_dir()
            && count("pairs").is_some_and(|n| n >= expected_pairs.len())
            && dir.path().join("lake/wjoin/_delta_log").is_dir()
            && count("wjoin").is_some_and(|n| n >= windows)
            && ujoin_rows(dir.path()).contains(&"closer,1,NULL".to_string())
            && dir.path().join("lake/named/_delta_log").is_dir()
            && count("named").is_some_and(|n| n >= expected_named.len())
            && dir.path().join("lake/later/_delta_log").is_dir()
            && count("later").is_some_and(|n| n >= expected_later.len());
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the windows were not all committed: {:?} of {windows} windows, {:?} of {} sessions, {:?} of {} pairs",
            count("stats"),
            count("sessions"),
            expected_sessions.len(),
            count("pairs"),
            expected_pairs.len()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let err = stop(child);
    assert!(err.contains("resumed from"), "{err}");
    eprintln!("{kills} kills; last run: {err}");

    let stored = lake_rows(
        dir.path(),
        "SELECT k, window_start, n, total FROM stats WHERE k <> 'closer'",
    );
    common::assert_same_rows("Delta table after 20+ SIGKILLs", &stored, &expected_lake);
    let mut sessions = lake_rows(dir.path(), &session_rows("sessions"));
    sessions.sort();
    assert_eq!(expected_sessions.len(), 100, "one session per value of v");
    common::assert_same_rows(
        "sessions open through 20+ SIGKILLs",
        &sessions,
        &expected_sessions,
    );
    // The updating query: the last checkpoint's MERGE (after the closer) holds every row.
    let mut totals = lake_rows(dir.path(), "SELECT k, n, total, last FROM totals");
    totals.sort();
    common::assert_same_rows(
        "running totals (Delta MERGE) after 20+ SIGKILLs",
        &totals,
        &expected_totals,
    );
    // The interval join: every match once, and the unmatched rows padded, once.
    let mut pairs = lake_rows(dir.path(), "SELECT a_id, coalesce(b_id, -1) FROM pairs");
    pairs.sort();
    common::assert_same_rows("interval join after 20+ SIGKILLs", &pairs, &expected_pairs);
    let wjoin = lake_rows(
        dir.path(),
        "SELECT k, window_start, n, total FROM wjoin WHERE k <> 'closer'",
    );
    common::assert_same_rows("window join after 20+ SIGKILLs", &wjoin, &expected_lake);
    common::assert_same_rows(
        "updating join (changelog) after 20+ SIGKILLs",
        &ujoin_rows(dir.path()),
        &expected_ujoin,
    );
    let named = lake_rows(dir.path(), "SELECT id, name FROM named");
    common::assert_same_rows("lookup join after 20+ SIGKILLs", &named, &expected_named);
    let later = lake_rows(dir.path(), "SELECT a_id, b_id FROM later");
    common::assert_same_rows("regular join after 20+ SIGKILLs", &later, &expected_later);
    let expected_items = oracle(&input, "%Y-%m-%dT%H:%M:%SZ").await;
    let items = dynamodb_rows(&common::dynamodb::client(&dynamodb), &table).await;
    common::assert_same_rows("DynamoDB items after 20+ SIGKILLs", &items, &expected_items);
}

/// Writes events `first..first + count` one second apart (event time = id seconds).
fn write_seconds(dir: &Path, name: &str, first: u64, count: u64) {
    let text: String = (first..first + count)
        .map(|s| {
            format!(
                "{{\"id\":{s},\"ts\":\"2024-01-01T00:{:02}:{:02}Z\"}}\n",
                s / 60,
                s % 60
            )
        })
        .collect();
    let temp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(temp, dir.join(name)).unwrap();
}

fn committed_events(dir: &Path) -> u64 {
    if !dir.join("lake/counts/_delta_log").is_dir() {
        return 0;
    }
    lake_rows(dir, "SELECT coalesce(sum(n), 0) FROM counts")
        .first()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn wait_for_events(dir: &Path, events: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed_events(dir) < events {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {events} committed events"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(unix)]
#[test]
fn graceful_stops_keep_open_windows_across_an_added_statement_and_refuse_a_changed_query() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    write_seconds(&input, "a.json", 0, 30);
    let sql = |size: u32| {
        format!(
            "CREATE TABLE e (id BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
               WITH (connector = 'file', path = 'in', poll_interval = '100ms');
             CREATE TABLE counts WITH (connector = 'delta', path = 'lake/counts');
             INSERT INTO counts SELECT window_start, count(*) AS n
             FROM TUMBLE(e, ts, INTERVAL '{size}' SECOND) GROUP BY window_start, window_end;"
        )
    };
    std::fs::write(dir.path().join("p.sql"), sql(10)).unwrap();
    let args = ["run", "p.sql", "--quiet", "--checkpoint-interval", "200ms"];

    // Windows [0,10) and [10,20) close (watermark 28 s); [20,30) stays open.
    let child = start(dir.path(), &args);
    wait_for_events(dir.path(), 20);
    let err = stop(child);
    assert!(err.contains("taking a last checkpoint"), "{err}");
    assert!(err.contains("checkpoint "), "{err}");
    // The open window was not flushed: it is in the last checkpoint.
    assert_eq!(committed_events(dir.path()), 20);
    let state = dir.path().join("lake/_laketide_state/p");
    assert!(state.is_dir(), "state beside the lake tables");

    // The next run resumes: the open window gets the events of the new file.
    write_seconds(&input, "b.json", 30, 30);
    let child = start(dir.path(), &args);
    wait_for_events(dir.path(), 50);
    let err = stop(child);
    assert!(err.contains("resumed from"), "{err}");
    assert_eq!(
        lake_rows(dir.path(), "SELECT window_start, n FROM counts")
            .iter()
            .map(|r| r.split(',').nth(1).unwrap().to_string())
            .collect::<Vec<_>>(),
        vec!["10"; 5],
        "five windows of ten events, none twice"
    );

    // A statement added before the others: the first query's nodes keep their stable ids,
    // so its open window is restored; the new query reads only what is new.
    let added = "CREATE TABLE all_events WITH (connector = 'delta', path = 'lake/all_events');
                 INSERT INTO all_events SELECT id, ts FROM e;";
    let with_added = sql(10).replacen(
        "INSERT INTO counts",
        &format!("{added}\nINSERT INTO counts"),
        1,
    );
    std::fs::write(dir.path().join("p.sql"), with_added).unwrap();
    write_seconds(&input, "b2.json", 60, 10);
    let child = start(dir.path(), &args);
    wait_for_events(dir.path(), 60);
    let err = stop(child);
    assert!(err.contains("resumed from"), "{err}");
    assert_eq!(
        committed_events(dir.path()),
        60,
        "[50,60) closed with its 10 events"
    );
    assert_eq!(
        lake_rows(dir.path(), "SELECT count(*) FROM all_events"),
        vec!["10"]
    );

    // A changed query cannot take the old windows: refused, with the ways out.
    std::fs::write(dir.path().join("p.sql"), sql(5)).unwrap();
    let refused = output(dir.path(), &args);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("pipeline has changed")
            && err.contains("--from-scratch")
            && err.contains("--keep-positions"),
        "{err}"
    );
    // Keeping the positions only: nothing already read is read again.
    write_seconds(&input, "c.json", 70, 30);
    let child = start(
        dir.path(),
        &[
            "run",
            "p.sql",
            "--quiet",
            "--keep-positions",
            "--checkpoint-interval",
            "200ms",
        ],
    );
    // c.json closes the 5-second windows up to 98 s: [70,75) .. [90,95) (25 events).
    wait_for_events(dir.path(), 85);
    stop(child);
    assert_eq!(committed_events(dir.path()), 85);
}

/// Rows of a query over the lake on S3 (through the real server).
fn s3_lake_rows(dir: &Path, s3: &str, lake: &str, sql: &str) -> Vec<String> {
    let mut query = laketide(dir, &["query", "--lake", lake, "--format", "csv", sql]);
    query
        .env("AWS_ENDPOINT_URL_S3", s3)
        .env("AWS_ALLOW_HTTP", "true");
    query_rows(query)
}

/// Puts events `from..to` (ten per second of event time, keys k0..k2) into `stream`.
async fn put_events(client: &aws_sdk_kinesis::Client, stream: &str, from: u64, to: u64) {
    let records = (from..to)
        .map(|i| {
            let data = format!(
                "{{\"k\":\"k{}\",\"n\":{i},\"ts\":\"2024-01-01T00:{:02}:{:02}.{}Z\"}}",
                i % 3,
                i / 600,
                (i / 10) % 60,
                i % 10
            );
            (format!("k{}", i % 3), data)
        })
        .collect();
    common::kinesis::put_records(client, stream, records).await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn losing_the_s3_and_kinesis_servers_for_a_while_loses_nothing() {
    use common::proxy::{Action, FaultProxy};
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    let Some(kinesis) = common::kinesis::kinesis_server() else {
        return;
    };
    let Some(s3) = common::emulator("S3", "AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000") else {
        return;
    };
    let bucket = common::unique("laketide-outage");
    let made = Command::new("curl")
        .args([
            "-sS",
            "-f",
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
            "--user",
            "test:testtest",
            "-H",
            "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "-X",
            "PUT",
            &format!("{s3}/{bucket}"),
        ])
        .status()
        .unwrap();
    assert!(made.success());
    let client = common::kinesis::client(&kinesis);
    let stream = common::kinesis::create_stream(&client, "outage", 1).await;
    put_events(&client, &stream, 0, 300).await;

    // Both servers sit behind proxies that drop every connection while `down` is set.
    let down = Arc::new(AtomicBool::new(false));
    let rule = |down: Arc<AtomicBool>| -> common::proxy::Rule {
        Arc::new(move |_, _| {
            if down.load(std::sync::atomic::Ordering::SeqCst) {
                Action::Drop
            } else {
                Action::Forward
            }
        })
    };
    let kinesis_proxy = FaultProxy::start(&kinesis, rule(down.clone())).await;
    let s3_proxy = FaultProxy::start(&s3, rule(down.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.sql"),
        format!(
            "CREATE TABLE e (k TEXT, n BIGINT, ts TIMESTAMP,
               WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
             WITH (connector = 'kinesis', stream = '{stream}', format = 'json',
               start_position = 'trim_horizon', endpoint = '{}', retry_timeout = '2m');
             CREATE TABLE counts WITH (connector = 'delta', path = 's3://{bucket}/lake/counts');
             INSERT INTO counts SELECT k, window_start, count(*) AS c, sum(n) AS total
             FROM TUMBLE(e, ts, INTERVAL '5' SECOND) GROUP BY k, window_start, window_end;",
            kinesis_proxy.endpoint
        ),
    )
    .unwrap();
    // The Delta table and the checkpoints (beside it on S3) go through the S3 proxy.
    let start_run = || {
        laketide(
            dir.path(),
            &["run", "p.sql", "--quiet", "--checkpoint-interval", "500ms"],
        )
        .env("AWS_ENDPOINT_URL_S3", &s3_proxy.endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let lake = format!("s3://{bucket}/lake");
    // Rows committed so far (0 while the table does not exist yet).
    let committed = || -> usize {
        let out = laketide(
            dir.path(),
            &[
                "query",
                "--lake",
                &lake,
                "--format",
                "csv",
                "SELECT count(*) FROM counts",
            ],
        )
        .env("AWS_ENDPOINT_URL_S3", &s3)
        .env("AWS_ALLOW_HTTP", "true")
        .output()
        .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    let wait_for = |child: &mut Child, rows: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while committed() < rows {
            if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                panic!("timed out waiting for {what}: {}", stderr_of(child));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    // Ten events a second, keys k0..k2: the closed 5-second windows, 3 rows each.
    let expected = |windows: u64| -> Vec<String> {
        let mut rows: Vec<String> = Vec::new();
        for w in 0..windows {
            for k in 0..3u64 {
                let ns: Vec<u64> = (w * 50..(w + 1) * 50).filter(|i| i % 3 == k).collect();
                rows.push(format!(
                    "k{k},2024-01-01T00:{:02}:{:02},{},{}",
                    (w * 5) / 60,
                    (w * 5) % 60,
                    ns.len(),
                    ns.iter().sum::<u64>()
                ));
            }
        }
        rows.sort();
        rows
    };
    let stored = || {
        s3_lake_rows(
            dir.path(),
            &s3,
            &lake,
            "SELECT k, window_start, c, total FROM counts",
        )
    };
    let mut child = start_run();
    // 30 s of events: windows up to [25,30) minus the open one; 5 windows x 3 keys closed.
    wait_for(&mut child, 15, "the first windows");

    // The servers are gone for six seconds while events keep arriving.
    down.store(true, std::sync::atomic::Ordering::SeqCst);
    put_events(&client, &stream, 300, 600).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    down.store(false, std::sync::atomic::Ordering::SeqCst);
    put_events(&client, &stream, 600, 900).await;
    // 90 s of events: windows [0,5) .. [80,85) are closed.
    wait_for(&mut child, 51, "the windows after the outage");
    let err = stop(child);
    let injected = |p: &FaultProxy| p.injected.load(std::sync::atomic::Ordering::SeqCst);
    assert!(injected(&kinesis_proxy) > 0 && injected(&s3_proxy) > 0);
    common::assert_same_rows(
        &format!("windows after an S3 and Kinesis outage ({err})"),
        &stored(),
        &expected(17),
    );

    // A restart resumes the shard after the last checkpoint's sequence number, with the open
    // window [85,90) from its state: no event twice, none lost.
    put_events(&client, &stream, 900, 1200).await;
    let mut child = start_run();
    wait_for(&mut child, 69, "the windows after the restart");
    let err = stop(child);
    assert!(err.contains("resumed from"), "{err}");
    common::assert_same_rows(
        &format!("windows after a restart from Kinesis positions ({err})"),
        &stored(),
        &expected(23),
    );
}

#[test]
fn the_checkpoint_interval_is_set_in_the_pipeline_file_or_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    write_seconds(&input, "a.json", 0, 10);
    let pipeline = |set: &str| {
        format!(
            "{set}
             CREATE TABLE e (id BIGINT, ts TIMESTAMP) WITH (connector = 'file', path = 'in', mode = 'once');
             CREATE TABLE out WITH (connector = 'filesystem', path = 'out', format = 'csv');
             INSERT INTO out SELECT id FROM e;"
        )
    };
    std::fs::write(
        dir.path().join("p.sql"),
        pipeline("SET checkpoint_interval = '300ms';"),
    )
    .unwrap();
    let run = output(dir.path(), &["run", "p.sql", "--quiet"]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    assert!(err.contains("checkpoints every 300ms"), "{err}");
    // The filesystem sink published its file at the last checkpoint: visible, and nothing
    // left pending.
    let names: Vec<String> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    let visible: Vec<&String> = names.iter().filter(|n| !n.starts_with('.')).collect();
    assert_eq!(visible.len(), 1, "{names:?}");
    assert!(!names.iter().any(|n| n.ends_with(".pending")), "{names:?}");
    let text = std::fs::read_to_string(dir.path().join("out").join(visible[0])).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.parse::<u64>().is_ok()).count(),
        10,
        "{text}"
    );
    let run = output(
        dir.path(),
        &["run", "p.sql", "--quiet", "--checkpoint-interval", "2s"],
    );
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("checkpoints every 2s"), "{err}");

    for (set, message) in [
        (
            "SET checkpoint_intervall = '5s';",
            "p.sql:1:1: unknown setting `checkpoint_intervall`; settings are: checkpoint_interval",
        ),
        (
            "SET checkpoint_interval = 'soon';",
            "checkpoint_interval must be a duration such as '10s' or '500ms', not 'soon'",
        ),
    ] {
        std::fs::write(dir.path().join("p.sql"), pipeline(set)).unwrap();
        let check = output(dir.path(), &["check", "p.sql"]);
        let err = String::from_utf8_lossy(&check.stderr);
        assert!(!check.status.success() && err.contains(message), "{err}");
    }
}
