//! Interval and window joins of two generated, out-of-order streams, run by the engine into a
//! Delta table, must equal the same JOIN as a DataFusion batch query over the same files.

use crate::common;

use common::{assert_same_rows, clicks_schema, delta_context, query_rows, register_json_files};
use datafusion::prelude::SessionContext;
use laketide::datagen::{ClickstreamSpec, write_clickstream};
use laketide::pipeline::run_sql;
use laketide_engine::RunOptions;

/// Searches (the left side) joined with the clicks of the same user from 2 s before to 1 s
/// after, outer on `kind`'s side(s), with an extra condition on the joined rows.
fn join_sql(kind: &str) -> String {
    format!(
        "SELECT s.event_id AS search, c.event_id AS click, c.amount - s.amount AS diff
         FROM searches s {kind} JOIN clicks c
           ON s.user_id = c.user_id
          AND c.ts BETWEEN s.ts - INTERVAL '2' SECOND AND s.ts + INTERVAL '1' SECOND
          AND c.page <> s.page"
    )
}

/// Searches and clicks of the same user in the same 2-second window (a window join), as the
/// stream runs it.
const WINDOW_JOIN: &str = "SELECT s.event_id AS search, c.event_id AS click, s.window_start AS ws
     FROM TUMBLE(searches, ts, INTERVAL '2' SECOND) s
     LEFT JOIN TUMBLE(clicks, ts, INTERVAL '2' SECOND) c
       ON s.user_id = c.user_id AND s.window_start = c.window_start AND s.window_end = c.window_end";

/// The same window join as a batch query (windows spelled out with `date_bin`).
const WINDOW_JOIN_BATCH: &str = "SELECT s.event_id AS search, c.event_id AS click, s.ws
     FROM (SELECT *, date_bin(INTERVAL '2 seconds', ts, TIMESTAMP '1970-01-01T00:00:00') AS ws FROM searches) s
     LEFT JOIN (SELECT *, date_bin(INTERVAL '2 seconds', ts, TIMESTAMP '1970-01-01T00:00:00') AS ws FROM clicks) c
       ON s.user_id = c.user_id AND s.ws = c.ws";

/// The streaming query of `kind` (a join type, or WINDOW).
fn streaming_sql(kind: &str) -> String {
    match kind {
        "WINDOW" => WINDOW_JOIN.to_string(),
        _ => join_sql(kind),
    }
}

fn pipeline(
    searches: &std::path::Path,
    clicks: &std::path::Path,
    lake: &std::path::Path,
    kind: &str,
) -> String {
    let table = |name: &str, path: &std::path::Path| {
        format!(
            "CREATE TABLE {name} (
               event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP,
               WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
             ) WITH (connector = 'file', path = '{}', format = 'json', mode = 'once', batch_size = 1024)",
            path.display()
        )
    };
    format!(
        "{};\n{};\nCREATE TABLE joined WITH (connector = 'delta', path = '{}');\nINSERT INTO joined {};",
        table("searches", searches),
        table("clicks", clicks),
        lake.display(),
        streaming_sql(kind)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_joins_equal_batch_joins() {
    let dir = tempfile::tempdir().unwrap();
    let (searches, clicks) = (dir.path().join("searches"), dir.path().join("clicks"));
    let spec = |events, seed, step_us| ClickstreamSpec {
        events,
        files: 3,
        step_us,
        max_delay_ms: 1_500,
        users: 200,
        seed,
        ..Default::default()
    };
    write_clickstream(&searches, &spec(20_000, 7, 5_000)).unwrap();
    write_clickstream(&clicks, &spec(50_000, 8, 2_000)).unwrap();
    let oracle = SessionContext::new();
    register_json_files(&oracle, "searches", &searches, &clicks_schema()).await;
    register_json_files(&oracle, "clicks", &clicks, &clicks_schema()).await;
    let canonical = "SELECT CAST(search AS VARCHAR), CAST(click AS VARCHAR), CAST(round(diff, 2) AS VARCHAR) FROM j ORDER BY 1, 2";
    let window_canonical = "SELECT CAST(search AS VARCHAR), CAST(click AS VARCHAR), CAST(ws AS VARCHAR) FROM j ORDER BY 1, 2";
    for kind in ["INNER", "LEFT", "RIGHT", "FULL OUTER", "WINDOW"] {
        let lake = dir.path().join(format!("lake_{}", kind.replace(' ', "_")));
        let summary = run_sql(
            &pipeline(&searches, &clicks, &lake, kind),
            RunOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(summary.totals.records_in, 70_000, "{kind}");
        assert_eq!(
            summary.totals.late_rows, 0,
            "{kind}: the watermarks allow for all disorder"
        );
        let _ = oracle.deregister_table("j");
        let (batch, canonical) = match kind {
            "WINDOW" => (WINDOW_JOIN_BATCH.to_string(), window_canonical),
            _ => (join_sql(kind), canonical),
        };
        oracle
            .sql(&format!("CREATE VIEW j AS {batch}"))
            .await
            .unwrap();
        let expected = query_rows(&oracle, canonical).await;
        let matched = expected.iter().filter(|r| !r.contains("NULL")).count();
        assert!(
            matched > 1_000,
            "{kind}: a meaningful number of matches: {matched}"
        );
        let actual = query_rows(&delta_context("j", &lake).await, canonical).await;
        assert_same_rows(&format!("{kind} JOIN"), &actual, &expected);
    }
}

/// Searches joined with the purchases of the same user on the same page, with no time bound:
/// a regular join, outer on `kind`'s side(s).
fn regular_join_sql(kind: &str) -> String {
    format!(
        "SELECT s.event_id AS search, c.event_id AS click
         FROM searches s {kind} JOIN clicks c
           ON s.user_id = c.user_id AND s.page = c.page AND c.action = 'purchase'"
    )
}

/// The rows an updating result's changelog (JSON lines with an `op` field) leaves: inserts
/// add a row, deletes take out an equal row, which must be there.
fn replay_changelog(dir: &std::path::Path, columns: &[&str]) -> (Vec<String>, usize) {
    let mut files = crate::updating::walk_files(dir);
    files.retain(|f| f.extension().is_some_and(|x| x == "json"));
    files.sort();
    let mut rows: Vec<String> = Vec::new();
    let (mut inserts, mut deletes) = (0, 0);
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = |k: &str| match &v[k] {
                serde_json::Value::Null => "NULL".to_string(),
                other => other.to_string(),
            };
            let row = (columns.iter().map(|c| text(c)))
                .collect::<Vec<_>>()
                .join("|");
            match v["op"].as_str().unwrap() {
                "insert" | "update_after" => {
                    inserts += 1;
                    rows.push(row);
                }
                "delete" | "update_before" => {
                    deletes += 1;
                    let at = rows.iter().position(|r| *r == row);
                    rows.swap_remove(
                        at.unwrap_or_else(|| panic!("{line} retracts a row not there")),
                    );
                }
                other => panic!("unexpected op {other} in {line}"),
            }
        }
    }
    assert!(inserts > deletes, "{inserts} inserts, {deletes} deletes");
    rows.sort();
    (rows, deletes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outer_joins_without_a_time_bound_update_to_the_batch_join() {
    let dir = tempfile::tempdir().unwrap();
    let (searches, clicks) = (dir.path().join("searches"), dir.path().join("clicks"));
    let spec = |events, seed| ClickstreamSpec {
        events,
        files: 2,
        users: 150,
        seed,
        ..Default::default()
    };
    write_clickstream(&searches, &spec(3_000, 31)).unwrap();
    write_clickstream(&clicks, &spec(6_000, 32)).unwrap();
    let oracle = SessionContext::new();
    register_json_files(&oracle, "searches", &searches, &clicks_schema()).await;
    register_json_files(&oracle, "clicks", &clicks, &clicks_schema()).await;
    for kind in ["LEFT", "RIGHT", "FULL OUTER"] {
        let out = dir.path().join(format!("out_{}", kind.replace(' ', "_")));
        let table = |name: &str, path: &std::path::Path| {
            format!(
                "CREATE TABLE {name} (event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP)
                 WITH (connector = 'file', path = '{}', format = 'json', mode = 'once', batch_size = 200)",
                path.display()
            )
        };
        let sql = format!(
            "{};\n{};\nCREATE TABLE joined WITH (connector = 'filesystem', path = '{}', format = 'json');\nINSERT INTO joined {};",
            table("searches", &searches),
            table("clicks", &clicks),
            out.display(),
            regular_join_sql(kind)
        );
        run_sql(&sql, RunOptions::default()).await.unwrap();
        let _ = oracle.deregister_table("j");
        oracle
            .sql(&format!("CREATE VIEW j AS {}", regular_join_sql(kind)))
            .await
            .unwrap();
        let expected = query_rows(
            &oracle,
            "SELECT CAST(search AS VARCHAR), CAST(click AS VARCHAR) FROM j ORDER BY 1, 2",
        )
        .await;
        let mut expected: Vec<String> = expected;
        expected.sort();
        assert!(
            expected.iter().filter(|r| r.contains("NULL")).count() > 100,
            "{kind}"
        );
        let (replayed, deletes) = replay_changelog(&out, &["search", "click"]);
        assert_same_rows(&format!("{kind} JOIN (updating)"), &replayed, &expected);
        // Whichever of two matching rows came first went out padded, and was retracted.
        if kind == "FULL OUTER" {
            assert!(deletes > 100, "{deletes} retractions");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_join_of_two_updating_aggregates_updates_to_the_batch_join() {
    let dir = tempfile::tempdir().unwrap();
    let (searches, clicks) = (dir.path().join("searches"), dir.path().join("clicks"));
    let spec = |events, seed| ClickstreamSpec {
        events,
        files: 2,
        users: 400,
        seed,
        ..Default::default()
    };
    write_clickstream(&searches, &spec(4_000, 41)).unwrap();
    write_clickstream(&clicks, &spec(6_000, 42)).unwrap();
    // Per user: searches on /cart, and purchases; users with only one of them are padded.
    let query = "SELECT s.user_id AS searcher, s.n AS searches, c.user_id AS buyer, c.n AS purchases
         FROM (SELECT user_id, count(*) AS n FROM searches WHERE page = '/cart' GROUP BY user_id) s
         FULL JOIN (SELECT user_id, count(*) AS n FROM clicks WHERE action = 'purchase' GROUP BY user_id) c
           ON s.user_id = c.user_id";
    let table = |name: &str, path: &std::path::Path| {
        format!(
            "CREATE TABLE {name} (event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP)
             WITH (connector = 'file', path = '{}', format = 'json', mode = 'once', batch_size = 100)",
            path.display()
        )
    };
    let out = dir.path().join("out");
    let sql = format!(
        "SET update_interval = '0s';\n{};\n{};\nCREATE TABLE joined WITH (connector = 'filesystem', path = '{}', format = 'json');\nINSERT INTO joined {query};",
        table("searches", &searches),
        table("clicks", &clicks),
        out.display(),
    );
    run_sql(&sql, RunOptions::default()).await.unwrap();
    let (replayed, retractions) =
        replay_changelog(&out, &["searcher", "searches", "buyer", "purchases"]);
    assert!(
        retractions > 100,
        "counts changed many times: {retractions}"
    );
    let oracle = SessionContext::new();
    register_json_files(&oracle, "searches", &searches, &clicks_schema()).await;
    register_json_files(&oracle, "clicks", &clicks, &clicks_schema()).await;
    oracle
        .sql(&format!("CREATE VIEW j AS {query}"))
        .await
        .unwrap();
    let mut expected = query_rows(
        &oracle,
        "SELECT CASE WHEN searcher IS NULL THEN 'NULL' ELSE '\"' || searcher || '\"' END,
                CAST(searches AS VARCHAR),
                CASE WHEN buyer IS NULL THEN 'NULL' ELSE '\"' || buyer || '\"' END,
                CAST(purchases AS VARCHAR) FROM j",
    )
    .await;
    expected.sort();
    assert!(
        expected.iter().any(|r| r.starts_with("NULL")),
        "padded buyers"
    );
    assert!(
        expected.iter().any(|r| r.contains("|NULL|")),
        "padded searchers"
    );
    assert_same_rows(
        "FULL JOIN of two GROUP BYs (updating)",
        &replayed,
        &expected,
    );
}
