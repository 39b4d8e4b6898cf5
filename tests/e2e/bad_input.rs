//! Bad input never loses the rest of a stream: records with event times far in the future
//! are bad records (`max_future`) and never move the watermark; far-past records are late,
//! counted per source and kept in `late_dead_letter_path`; and randomly mutated JSON and CSV
//! lines never crash a run, with every line accounted for as good, bad or late.

use crate::common;

use std::collections::HashSet;
use std::path::Path;

use common::{assert_same_rows, delta_context, query_rows, register_json_files};
use datafusion::prelude::SessionContext;
use laketide::datagen::{ClickstreamEvents, ClickstreamSpec};
use laketide::oracle;
use laketide::pipeline::run_sql;
use laketide_engine::{RunOptions, RunSummary};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const EVENTS: usize = 50_000;

/// Clean events from two hours ago over 34 minutes, with 14 far-future times (years 2926 and
/// 2099) and 6 at the epoch replacing the times of 20 events past the first 5,000. Returns the
/// lines and the ids of the future and the epoch events.
fn corrupted_events() -> (Vec<String>, HashSet<i64>, HashSet<i64>) {
    let start_ms = chrono::Utc::now().timestamp_millis() - 2 * 3_600_000;
    let spec = ClickstreamSpec {
        events: EVENTS as u64,
        files: 1,
        start_ms,
        step_us: 34 * 60_000_000 / EVENTS as i64,
        max_delay_ms: 1_500,
        ..Default::default()
    };
    let mut events = ClickstreamEvents::new(&spec);
    let mut lines = Vec::with_capacity(EVENTS);
    let mut line = String::new();
    while events.next_into(&mut line) {
        lines.push(line.clone());
    }
    let mut rng = SmallRng::seed_from_u64(7);
    let (mut future, mut epoch) = (HashSet::new(), HashSet::new());
    while future.len() + epoch.len() < 20 {
        let i = rng.random_range(5_000..EVENTS);
        if future.contains(&(i as i64)) || epoch.contains(&(i as i64)) {
            continue;
        }
        let ts = if future.len() < 14 {
            future.insert(i as i64);
            if future.len() % 2 == 0 {
                "2926-03-01T10:00:00.000Z"
            } else {
                "2099-12-31T23:59:59.000Z"
            }
        } else {
            epoch.insert(i as i64);
            "1970-01-01T00:00:00.000Z"
        };
        let cut = lines[i].rfind("\"ts\":").unwrap();
        lines[i] = format!("{}\"ts\":\"{ts}\"}}", &lines[i][..cut]);
    }
    (lines, future, epoch)
}

fn tumble_sql(data: &Path, lake: &Path, max_future: &str) -> String {
    format!(
        "CREATE TABLE clicks (
           event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP,
           WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
         ) WITH (connector = 'file', path = '{data}', mode = 'once', batch_size = 1000,
                 on_error = 'dead_letter', dead_letter_path = '{lake}/bad.jsonl',
                 late_dead_letter_path = '{lake}/late.jsonl'{max_future});
         CREATE TABLE per_minute WITH (connector = 'delta', path = '{lake}/per_minute');
         INSERT INTO per_minute
         SELECT window_start, window_end, action, count(*) AS events, sum(amount) AS revenue
         FROM TUMBLE(clicks, ts, INTERVAL '1' MINUTE)
         GROUP BY window_start, window_end, action;",
        data = data.display(),
        lake = lake.display(),
    )
}

fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_corrupt_timestamp_does_not_drop_the_rest_of_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("clicks");
    let lake = dir.path().join("lake");
    std::fs::create_dir_all(&data).unwrap();
    let (lines, future, epoch) = corrupted_events();
    std::fs::write(data.join("clicks.json"), lines.join("\n") + "\n").unwrap();

    let summary = run_sql(&tumble_sql(&data, &lake, ""), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(summary.totals.bad_records, 14, "the future records");
    assert_eq!(summary.totals.records_in, (EVENTS - 14) as u64);
    assert_eq!(summary.totals.late_rows, 6, "the epoch records, late");
    assert_eq!(summary.totals.late_by_source.len(), 1);
    assert_eq!(summary.totals.late_by_source[0].source, "clicks");
    assert_eq!(summary.totals.late_by_source[0].rows, 6);

    // The future records are dead letters, raw, with a reason naming the column, the value
    // and the bound.
    let bad = json_lines(&lake.join("bad.jsonl"));
    let ids: HashSet<i64> = bad
        .iter()
        .map(|b| {
            let reason = b["reason"].as_str().unwrap();
            assert!(reason.contains("column `ts`"), "{reason}");
            assert!(reason.contains("max_future = '1h'"), "{reason}");
            assert!(
                reason.contains("2926-") || reason.contains("2099-"),
                "{reason}"
            );
            let raw: serde_json::Value = serde_json::from_str(b["raw"].as_str().unwrap()).unwrap();
            raw["event_id"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(ids, future);
    // The epoch records are kept as late rows, with why.
    let late = json_lines(&lake.join("late.jsonl"));
    let late_ids: HashSet<i64> = late
        .iter()
        .map(|l| {
            assert!(
                l["reason"].as_str().unwrap().contains("window had closed"),
                "{l}"
            );
            assert_eq!(l["source"], "clicks");
            l["row"]["event_id"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(late_ids, epoch);

    // Every clean window equals the batch answer over the clean events.
    let clean: Vec<&String> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| !future.contains(&(*i as i64)) && !epoch.contains(&(*i as i64)))
        .map(|(_, l)| l)
        .collect();
    let oracle_dir = dir.path().join("clean");
    std::fs::create_dir_all(&oracle_dir).unwrap();
    let text: String = clean.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(oracle_dir.join("clean.json"), text).unwrap();
    let oracle = SessionContext::new();
    register_json_files(&oracle, "clicks", &oracle_dir, &common::clicks_schema()).await;
    oracle
        .sql(&format!(
            "CREATE VIEW t AS SELECT {}, action, count(*) AS events, sum(amount) AS revenue
                 FROM clicks GROUP BY 1, 2, 3",
            oracle::tumble_bounds("1 minute")
        ))
        .await
        .unwrap();
    let canonical = "SELECT CAST(window_start AS VARCHAR), CAST(window_end AS VARCHAR), action, events, round(revenue, 2) FROM t ORDER BY 1, 3";
    let expected = query_rows(&oracle, canonical).await;
    let actual = query_rows(
        &delta_context("t", &lake.join("per_minute")).await,
        canonical,
    )
    .await;
    assert!(expected.len() > 100, "windows: {}", expected.len());
    assert_same_rows("TUMBLE over clean events", &actual, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_bound_one_future_timestamp_makes_the_rest_late() {
    // The same data with max_future = 'off': the first far-future record moves the watermark
    // centuries ahead and the clean events after it are late (counted, not lost silently).
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("clicks");
    let lake = dir.path().join("lake");
    std::fs::create_dir_all(&data).unwrap();
    let (lines, _, _) = corrupted_events();
    std::fs::write(data.join("clicks.json"), lines.join("\n") + "\n").unwrap();
    let summary = run_sql(
        &tumble_sql(&data, &lake, ", max_future = 'off'"),
        RunOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(summary.totals.bad_records, 0);
    assert!(
        summary.totals.late_rows > 1_000,
        "late: {}",
        summary.totals.late_rows
    );
    assert!(
        summary
            .totals
            .ahead_of_clock
            .iter()
            .any(|(s, ms)| s == "clicks" && *ms > 365 * 86_400_000),
        "{:?}",
        summary.totals.ahead_of_clock
    );
}

/// One random mutation of a record: flipped bytes, truncation, type confusion, deep nesting,
/// a huge field, or an event time shifted far into the future or the past.
fn mutate(line: &str, rng: &mut SmallRng, csv: bool) -> String {
    let mut bytes = line.as_bytes().to_vec();
    match rng.random_range(0..7) {
        0 => {
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..bytes.len());
                bytes[i] = rng.random_range(0x20..0x7f);
            }
        }
        1 => bytes.truncate(rng.random_range(0..bytes.len())),
        2 if csv => return line.replacen(',', ",true,", 1),
        2 => {
            let keys = ["event_id", "amount", "ts", "user_id"];
            let key = keys[rng.random_range(0..keys.len())];
            let values = ["\"abc\"", "true", "[1,2]", "{\"x\":1}", "null", "1e999"];
            let value = values[rng.random_range(0..values.len())];
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let mut map = v.as_object().unwrap().clone();
            map.insert(key.into(), serde_json::from_str(value).unwrap_or_default());
            return serde_json::Value::Object(map).to_string();
        }
        3 => {
            let depth = rng.random_range(100..5_000);
            let nested = "[".repeat(depth) + &"]".repeat(depth);
            return if csv {
                format!("{line},{nested}")
            } else {
                line.replacen("\"page\":", &format!("\"page\":{nested},\"p2\":"), 1)
            };
        }
        4 => {
            let huge = "x".repeat(rng.random_range(100_000..2_000_000));
            return if csv {
                line.replacen(",/", &format!(",/{huge}"), 1)
            } else {
                line.replacen("\"page\":\"", &format!("\"page\":\"{huge}"), 1)
            };
        }
        5 => return line.replacen("20", "29", 1),
        _ => return line.replacen("\"20", "\"19", 1),
    }
    String::from_utf8_lossy(&bytes).replace('\n', " ")
}

/// The clickstream event as a CSV line: event_id,user_id,page,action,amount,ts.
fn as_csv(json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    format!(
        "{},{},{},{},{},{}",
        v["event_id"],
        v["user_id"].as_str().unwrap(),
        v["page"].as_str().unwrap(),
        v["action"].as_str().unwrap(),
        v["amount"],
        v["ts"].as_str().unwrap()
    )
}

/// Runs a TUMBLE count over `lines` (mutated at random) and checks that every line is
/// accounted for: records in = lines - bad, and aggregated + late = records in.
async fn fuzz(format: &str, seed: u64) {
    let csv = format == "csv";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("in");
    let lake = dir.path().join("lake");
    std::fs::create_dir_all(&data).unwrap();
    let mut rng = SmallRng::seed_from_u64(seed);
    let spec = ClickstreamSpec {
        events: 20_000,
        files: 1,
        start_ms: chrono::Utc::now().timestamp_millis() - 3_600_000,
        step_us: 10_000,
        seed,
        ..Default::default()
    };
    let mut events = ClickstreamEvents::new(&spec);
    let mut line = String::new();
    let mut text = String::new();
    while events.next_into(&mut line) {
        let clean = if csv { as_csv(&line) } else { line.clone() };
        let record = if rng.random_bool(0.05) {
            mutate(&clean, &mut rng, csv)
        } else {
            clean
        };
        text.push_str(&record);
        text.push('\n');
    }
    std::fs::write(data.join(format!("in.{format}")), &text).unwrap();
    let records = text.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    let header = if csv { ", csv.header = 'false'" } else { "" };
    let sql = format!(
        "CREATE TABLE clicks (
           event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP,
           WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
         ) WITH (connector = 'file', path = '{data}', format = '{format}'{header}, mode = 'once',
                 batch_size = 500, on_error = 'skip');
         CREATE TABLE counts WITH (connector = 'delta', path = '{lake}/counts');
         INSERT INTO counts SELECT window_start, count(*) AS n
         FROM TUMBLE(clicks, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end;",
        data = data.display(),
        lake = lake.display(),
    );
    let summary: RunSummary = run_sql(&sql, RunOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{format} fuzz run with seed {seed} failed: {e}"));
    let t = &summary.totals;
    assert_eq!(
        t.records_in + t.bad_records,
        records,
        "{format} seed {seed}: every line is a record read or a bad record"
    );
    assert!(
        t.bad_records > 100,
        "{format} seed {seed}: mutations make bad records"
    );
    let aggregated: u64 = query_rows(
        &delta_context("c", &lake.join("counts")).await,
        "SELECT CAST(coalesce(sum(n), 0) AS BIGINT) FROM c",
    )
    .await[0]
        .parse()
        .unwrap();
    assert_eq!(
        aggregated + t.late_rows,
        t.records_in,
        "{format} seed {seed}: every record read is aggregated or late"
    );
}

fn fuzz_seed() -> u64 {
    let seed = std::env::var("LAKETIDE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| chrono::Utc::now().timestamp_micros() as u64);
    eprintln!("fuzz seed {seed} (set LAKETIDE_FUZZ_SEED={seed} to reproduce)");
    seed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_json_lines_never_crash_and_every_line_is_accounted_for() {
    fuzz("json", fuzz_seed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_csv_lines_never_crash_and_every_line_is_accounted_for() {
    fuzz("csv", fuzz_seed()).await;
}
