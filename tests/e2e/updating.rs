//! Updating queries (GROUP BY without a window) through the binary: the plan-time check of
//! sinks that cannot apply updates, the console changelog, `--update-interval`, and Delta
//! tables kept at one row per key by MERGE against the batch oracle.

use std::path::Path;
use std::process::{Command, Output};

use crate::common;

fn laketide(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_laketide"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("laketide runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

const CLICKS: &str = "CREATE TABLE clicks (event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP)
  WITH (connector = 'file', path = 'data', mode = 'once', batch_size = '1');\n";

fn write_data(dir: &Path) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let rows = [
        ("u1", "/home", 1.0),
        ("u2", "/home", 2.0),
        ("u1", "/cart", 3.0),
    ];
    let lines: Vec<String> = rows
        .iter()
        .enumerate()
        .map(|(i, (u, p, a))| {
            format!(
                r#"{{"event_id":{i},"user_id":"{u}","page":"{p}","action":"view","amount":{a},"ts":"2024-01-01T00:00:0{i}Z"}}"#
            )
        })
        .collect();
    std::fs::write(dir.join("data/clicks.json"), lines.join("\n") + "\n").unwrap();
}

#[test]
fn an_updating_query_into_an_append_only_sink_is_refused_at_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.sql"),
        format!(
            "{CLICKS}CREATE TABLE stats WITH (connector = 'delta', path = 'lake/stats');\n\n  INSERT INTO stats SELECT user_id, count(*) FROM clicks GROUP BY user_id;\n"
        ),
    )
    .unwrap();
    let out = laketide(dir.path(), &["check", "p.sql"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    for part in [
        "p.sql:5:3:",
        "the query into `stats` produces an updating result",
        "the delta sink cannot take it: without a `primary_key` it appends rows",
        "Ways out: aggregate over a window",
        "delta or dynamodb with `primary_key`",
    ] {
        assert!(err.contains(part), "missing `{part}` in: {err}");
    }
}

#[test]
fn a_dynamodb_key_that_is_not_the_group_by_key_is_refused_at_plan_time() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.sql"),
        format!(
            "{CLICKS}CREATE TABLE stats WITH (connector = 'dynamodb', table = 'stats', primary_key = 'page');\nINSERT INTO stats SELECT user_id, page, count(*) FROM clicks GROUP BY user_id, page;\n"
        ),
    )
    .unwrap();
    let out = laketide(dir.path(), &["check", "p.sql"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("p.sql:4:1:")
            && err.contains("its `primary_key` (page) must be the query's key, the GROUP BY columns (page, user_id)"),
        "{err}"
    );
}

#[test]
fn the_console_prints_the_changelog_and_the_interval_flag_reaches_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    std::fs::write(
        dir.path().join("p.sql"),
        format!(
            "{CLICKS}CREATE TABLE out WITH (connector = 'console');\nINSERT INTO out SELECT user_id, count(*) AS n, sum(amount) AS spend FROM clicks GROUP BY user_id;\n"
        ),
    )
    .unwrap();
    let explain = laketide(dir.path(), &["explain", "p.sql"]);
    let plan = text(&explain.stdout);
    assert!(
        plan.contains("updating every 1s") && plan.contains("updating, key: [user_id]"),
        "{plan}"
    );

    let run = laketide(
        dir.path(),
        &["run", "p.sql", "--quiet", "--update-interval", "0s"],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    let printed = text(&run.stdout);
    // One row per batch, emitted at once: u1 is inserted, then updated from 1 to 2 rows.
    let changes: Vec<String> = printed
        .lines()
        .filter(|l| l.starts_with("| +") || l.starts_with("| -"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        changes,
        vec![
            "| +I | u1 | 1 | 1.0 |",
            "| +I | u2 | 1 | 2.0 |",
            "| -U | u1 | 1 | 1.0 |",
            "| +U | u1 | 2 | 4.0 |",
        ],
        "{printed}"
    );
    assert!(printed.contains("| op |"), "{printed}");

    let bad = laketide(dir.path(), &["run", "p.sql", "--update-interval", "soon"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("not a duration"),
        "{}",
        text(&bad.stderr)
    );
}

/// Runs `laketide generate` into `dir/data`.
fn generate(dir: &Path, events: &str, users: &str) {
    let out = laketide(
        dir,
        &[
            "generate", "--out", "data", "--events", events, "--files", "3", "--users", users,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_with_a_primary_key_holds_the_current_row_per_key_as_the_batch_oracle_says() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), "40000", "12000");
    // Small batches, no update interval and frequent checkpoints: keys change across many
    // MERGE commits; `rare` deletes every user that reaches three events; `kinds` has a NULL
    // key (purchases).
    std::fs::write(
        dir.path().join("p.sql"),
        "SET update_interval = '0s';
         CREATE TABLE clicks (event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP)
           WITH (connector = 'file', path = 'data', mode = 'once', batch_size = '101');
         CREATE TABLE users WITH (connector = 'delta', path = 'lake/users', primary_key = 'user_id');
         CREATE TABLE rare WITH (connector = 'delta', path = 'lake/rare', primary_key = 'user_id');
         CREATE TABLE kinds WITH (connector = 'delta', path = 'lake/kinds', primary_key = 'kind');
         CREATE TABLE buckets WITH (connector = 'delta', path = 'lake/buckets', primary_key = 'events');
         INSERT INTO buckets SELECT events, count(*) AS users, max(last_event) AS latest
           FROM (SELECT user_id, count(*) AS events, max(event_id) AS last_event FROM clicks GROUP BY user_id)
           GROUP BY events;
         INSERT INTO users SELECT user_id, count(*) AS events, count(DISTINCT page) AS pages,
           max(event_id) AS last_event FROM clicks GROUP BY user_id;
         INSERT INTO rare SELECT user_id, count(*) AS events FROM clicks GROUP BY user_id HAVING count(*) < 3;
         INSERT INTO kinds SELECT CASE WHEN action = 'purchase' THEN NULL ELSE action END AS kind, count(*) AS n
           FROM clicks GROUP BY CASE WHEN action = 'purchase' THEN NULL ELSE action END;",
    )
    .unwrap();
    let run = laketide(
        dir.path(),
        &["run", "p.sql", "--quiet", "--checkpoint-interval", "100ms"],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));

    let oracle = common::oracle_context(&dir.path().join("data")).await;
    for (table, streaming, batch) in [
        (
            "users",
            "SELECT user_id, events, pages, last_event FROM users ORDER BY user_id",
            "SELECT user_id, count(*), count(DISTINCT page), max(event_id) FROM clicks GROUP BY user_id ORDER BY user_id",
        ),
        (
            "rare",
            "SELECT user_id, events FROM rare ORDER BY user_id",
            "SELECT user_id, count(*) FROM clicks GROUP BY user_id HAVING count(*) < 3 ORDER BY user_id",
        ),
        (
            "buckets",
            "SELECT events, users, latest FROM buckets ORDER BY events",
            "SELECT events, count(*), max(last_event) FROM (
               SELECT user_id, count(*) AS events, max(event_id) AS last_event FROM clicks GROUP BY user_id)
             GROUP BY events ORDER BY events",
        ),
        (
            "kinds",
            "SELECT kind, n FROM kinds ORDER BY kind",
            "SELECT CASE WHEN action = 'purchase' THEN NULL ELSE action END AS kind, count(*)
             FROM clicks GROUP BY 1 ORDER BY kind",
        ),
    ] {
        let ctx = common::delta_context(table, &dir.path().join("lake").join(table)).await;
        let stored = common::query_rows(&ctx, streaming).await;
        let expected = common::query_rows(&oracle, batch).await;
        assert!(!expected.is_empty());
        common::assert_same_rows(&format!("{table} (Delta MERGE)"), &stored, &expected);
    }
    // The table's creation and at least two MERGE commits (a checkpoint every 100 ms); the
    // staged files of merged checkpoints are gone.
    let log = std::fs::read_dir(dir.path().join("lake/users/_delta_log"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert!(log > 3, "only {log} commits");
    let staged = walk_files(&dir.path().join("lake/users/_laketide_changes"));
    assert!(staged.is_empty(), "left behind: {staged:?}");
}

pub(crate) fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flat_map(|e| {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk_files(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

#[test]
fn the_nexmark_benchmark_checks_every_query_against_the_batch_query() {
    let dir = tempfile::tempdir().unwrap();
    let out = laketide(
        dir.path(),
        &["bench", "--suite", "nexmark", "--events", "60000"],
    );
    let printed = text(&out.stdout);
    assert!(out.status.success(), "{printed}{}", text(&out.stderr));
    for q in [
        "q0",
        "q1",
        "q2",
        "q3",
        "q4",
        "q5",
        "q7",
        "q8",
        "q9",
        "q13",
        "q20",
        "q15",
        "q16",
        "q17",
        "q18",
        "q19",
        "auction totals",
    ] {
        assert!(
            printed.contains(&format!("bench nexmark {q} (")) && printed.contains("% of q0"),
            "{printed}"
        );
    }
    assert_eq!(
        printed
            .matches("the result equals the DataFusion batch query")
            .count(),
        17,
        "{printed}"
    );
    for kind in ["an incremental", "a full"] {
        assert!(
            printed.contains(&format!("with {kind} checkpoint every second")),
            "{printed}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filesystem_sink_writes_the_changelog_whose_replay_is_the_batch_result() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), "5000", "700");
    std::fs::write(
        dir.path().join("p.sql"),
        "SET update_interval = '0s';
         CREATE TABLE clicks (event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP)
           WITH (connector = 'file', path = 'data', mode = 'once', batch_size = '250');
         CREATE TABLE changes WITH (connector = 'filesystem', path = 'out', format = 'json');
         INSERT INTO changes SELECT user_id, count(*) AS events FROM clicks GROUP BY user_id;",
    )
    .unwrap();
    let run = laketide(dir.path(), &["run", "p.sql", "--quiet"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    // Replay the changelog in file and line order: the last `insert`/`update_after` of a key
    // is its row; `update_before` always precedes its key's `update_after`.
    let mut files = walk_files(&dir.path().join("out"));
    files.retain(|f| f.extension().is_some_and(|x| x == "json"));
    files.sort();
    let mut table = std::collections::BTreeMap::new();
    let mut ops = std::collections::BTreeMap::<String, usize>::new();
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let op = v["op"].as_str().unwrap().to_string();
            let key = v["user_id"].as_str().unwrap().to_string();
            *ops.entry(op.clone()).or_default() += 1;
            match op.as_str() {
                "insert" | "update_after" => {
                    table.insert(key.clone(), format!("{key}|{}", v["events"]));
                }
                "update_before" => {
                    assert!(table.remove(&key).is_some(), "{line}");
                }
                other => panic!("unexpected op {other}"),
            }
        }
    }
    assert!(
        ops["update_before"] > 0 && ops["update_before"] == ops["update_after"],
        "{ops:?}"
    );
    let stored: Vec<String> = table.into_values().collect();
    let oracle = common::oracle_context(&dir.path().join("data")).await;
    let expected = common::query_rows(
        &oracle,
        "SELECT user_id, count(*) FROM clicks GROUP BY user_id ORDER BY user_id",
    )
    .await;
    common::assert_same_rows("the replayed changelog", &stored, &expected);
}

#[test]
fn state_ttl_reaches_the_plans_of_aggregates_ranks_and_deduplication_and_a_bad_value_is_located() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = |ttl: &str| {
        format!(
            "SET state_ttl = '{ttl}';\n{CLICKS}CREATE TABLE out WITH (connector = 'console');\nINSERT INTO out SELECT user_id, count(*) FROM clicks GROUP BY user_id;\n"
        )
    };
    // Top-N and deduplication take the TTL too (`ROW_NUMBER` over the source rows).
    let ranked = |ttl: &str| {
        format!(
            "SET state_ttl = '{ttl}';\n{}CREATE TABLE top WITH (connector = 'console');
             CREATE TABLE firsts WITH (connector = 'console');
             INSERT INTO top SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY page ORDER BY amount DESC) AS rn FROM clicks) WHERE rn <= 3;
             INSERT INTO firsts SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY ts) AS rn FROM clicks) WHERE rn = 1;\n",
            CLICKS.replace("ts TIMESTAMP)", "ts TIMESTAMP, WATERMARK FOR ts AS ts)")
        )
    };
    std::fs::write(dir.path().join("p.sql"), pipeline("12h")).unwrap();
    let explain = laketide(dir.path(), &["explain", "p.sql"]);
    let plan = text(&explain.stdout);
    assert!(plan.contains("keys idle for 43200s dropped"), "{plan}");
    std::fs::write(dir.path().join("r.sql"), ranked("1h")).unwrap();
    let explain = laketide(dir.path(), &["explain", "r.sql"]);
    let plan = text(&explain.stdout);
    assert!(
        plan.contains("partitions idle for 3600s dropped")
            && plan.contains("keys emitted 3600s ago forgotten"),
        "{plan}{}",
        text(&explain.stderr)
    );
    std::fs::write(dir.path().join("bad.sql"), pipeline("forever")).unwrap();
    let bad = laketide(dir.path(), &["check", "bad.sql"]);
    assert!(!bad.status.success());
    let err = text(&bad.stderr);
    assert!(
        err.contains("bad.sql:1:1:") && err.contains("state_ttl must be a duration"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_n_and_deduplication_into_delta_equal_the_batch_row_numbers() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), "20000", "3000");
    // Ties broken by event_id so that the batch ROW_NUMBER picks the same rows.
    let top = "SELECT page, event_id, amount, rn FROM (
                 SELECT *, ROW_NUMBER() OVER (PARTITION BY page ORDER BY amount DESC, event_id) AS rn
                 FROM clicks) WHERE rn <= 3";
    let last = "SELECT user_id, event_id, ts FROM (
                  SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY ts DESC, event_id DESC) AS rn
                  FROM clicks) WHERE rn = 1";
    std::fs::write(
        dir.path().join("p.sql"),
        format!(
            "CREATE TABLE clicks (event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP,
               WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
               WITH (connector = 'file', path = 'data', mode = 'once', batch_size = '150');
             CREATE TABLE top WITH (connector = 'delta', path = 'lake/top', primary_key = 'page, rn');
             CREATE TABLE last_click WITH (connector = 'delta', path = 'lake/last_click', primary_key = 'user_id');
             CREATE TABLE top_pages WITH (connector = 'delta', path = 'lake/top_pages');
             CREATE TABLE first_click WITH (connector = 'delta', path = 'lake/first_click');
             INSERT INTO first_click SELECT user_id, event_id, ts FROM (
               SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY ts) AS rn FROM clicks)
             WHERE rn = 1;
             INSERT INTO top {top};
             INSERT INTO last_click {last};
             INSERT INTO top_pages SELECT window_start, page, views, rn FROM (
               SELECT window_start, window_end, page, views,
                      ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY views DESC, page) AS rn
               FROM (SELECT window_start, window_end, page, count(*) AS views
                     FROM TUMBLE(clicks, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end, page))
             WHERE rn <= 2;"
        ),
    )
    .unwrap();
    let run = laketide(
        dir.path(),
        &["run", "p.sql", "--quiet", "--checkpoint-interval", "100ms"],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    let explain = text(&laketide(dir.path(), &["explain", "p.sql"]).stdout);
    assert!(
        explain.contains("deduplicate: keep the first row of each partition by clicks.ts"),
        "keep-first by event time is append-only: {explain}"
    );

    let oracle = common::oracle_context(&dir.path().join("data")).await;
    let windowed = format!(
        "SELECT window_start, page, views, rn FROM (
           SELECT window_start, page, views,
                  ROW_NUMBER() OVER (PARTITION BY window_start ORDER BY views DESC, page) AS rn
           FROM (SELECT {} AS window_start, page, count(*) AS views FROM clicks GROUP BY 1, 2))
         WHERE rn <= 2",
        "date_bin(INTERVAL '10 seconds', ts)"
    );
    for (table, columns, batch) in [
        ("top", "page, event_id, amount, rn", top.to_string()),
        ("last_click", "user_id, event_id, ts", last.to_string()),
        ("top_pages", "window_start, page, views, rn", windowed),
        (
            "first_click",
            "user_id, event_id, ts",
            // Ties on ts go to the first row read, which is the one with the smaller id.
            "SELECT user_id, event_id, ts FROM (
               SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY ts, event_id) AS rn
               FROM clicks) WHERE rn = 1"
                .to_string(),
        ),
    ] {
        let ctx = common::delta_context(table, &dir.path().join("lake").join(table)).await;
        let mut stored = common::query_rows(&ctx, &format!("SELECT {columns} FROM {table}")).await;
        let mut expected = common::query_rows(&oracle, &batch).await;
        stored.sort();
        expected.sort();
        assert!(expected.len() > 3, "{table}: {expected:?}");
        common::assert_same_rows(&format!("{table} (ROW_NUMBER)"), &stored, &expected);
    }
}

#[test]
fn query_reads_a_nexmark_table_as_every_event_it_generates() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nx.sql"),
        "CREATE TABLE bid (auction BIGINT, price BIGINT, date_time TIMESTAMP(3))
           WITH (connector = 'nexmark', table = 'bid', events = '1000');
         CREATE TABLE out WITH (connector = 'blackhole');
         INSERT INTO out SELECT auction, count(*) FROM bid GROUP BY auction;",
    )
    .unwrap();
    let out = laketide(
        dir.path(),
        &[
            "query",
            "-f",
            "nx.sql",
            "--format",
            "csv",
            "SELECT count(*), count(DISTINCT auction) > 1 FROM bid",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("920,true"),
        "46 of every 50 events are bids: {}",
        text(&out.stdout)
    );
    let run = laketide(dir.path(), &["run", "nx.sql", "--quiet"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(
        text(&run.stderr).contains("920 records in"),
        "{}",
        text(&run.stderr)
    );
}

#[test]
fn a_new_update_interval_or_state_ttl_keeps_the_state_and_a_changed_aggregate_does_not() {
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    let pipeline = |ttl: &str, aggregate: &str| {
        format!(
            "SET state_ttl = '{ttl}';\n{CLICKS}CREATE TABLE out WITH (connector = 'console');\nINSERT INTO out SELECT user_id, {aggregate} AS v FROM clicks GROUP BY user_id;\n"
        )
    };
    let run = |args: &[&str]| {
        let out = laketide(dir.path(), args);
        (out.status.success(), text(&out.stderr))
    };
    std::fs::write(dir.path().join("p.sql"), pipeline("1h", "count(*)")).unwrap();
    let (ok, err) = run(&["run", "p.sql"]);
    assert!(ok, "{err}");
    // Emitting more often and keeping keys longer do not change what the state means.
    std::fs::write(dir.path().join("p.sql"), pipeline("2h", "count(*)")).unwrap();
    let (ok, err) = run(&["run", "p.sql", "--update-interval", "250ms"]);
    assert!(ok && err.contains("resumed from"), "{err}");
    // Another aggregate cannot take the old state: refused, naming the node.
    std::fs::write(dir.path().join("p.sql"), pipeline("2h", "sum(amount)")).unwrap();
    let (ok, err) = run(&["run", "p.sql"]);
    assert!(
        !ok && err.contains("pipeline has changed") && err.contains("out[0]/"),
        "{err}"
    );
}
