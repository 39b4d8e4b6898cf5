//! The correctness oracle: TUMBLE, HOP and SESSION pipelines over a few hundred thousand
//! out-of-order events, run by the streaming engine into Delta tables, must equal the same
//! aggregations computed by DataFusion batch queries over the same files.

use crate::common;

use common::{assert_same_rows, delta_context, oracle_context, query_rows};
use laketide::datagen::{ClickstreamSpec, write_clickstream};
use laketide::oracle;
use laketide::pipeline::run_sql;
use laketide_engine::RunOptions;

const EVENTS: u64 = 300_000;

fn pipeline(data: &std::path::Path, lake: &std::path::Path, watermark_delay: &str) -> String {
    format!(
        "CREATE TABLE clicks (
           event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP,
           WATERMARK FOR ts AS ts - INTERVAL '{watermark_delay}' MILLISECOND
         ) WITH (connector = 'file', path = '{data}', format = 'json', mode = 'once', batch_size = 4096);
         CREATE TABLE tumbling WITH (connector = 'delta', path = '{lake}/tumbling');
         CREATE TABLE hopping WITH (connector = 'delta', path = '{lake}/hopping', partition_by = 'page');
         CREATE TABLE sessions WITH (connector = 'delta', path = '{lake}/sessions');

         INSERT INTO tumbling
         SELECT window_start, window_end, action, count(*) AS events, sum(amount) AS revenue, max(amount) AS biggest
         FROM TUMBLE(clicks, ts, INTERVAL '1' MINUTE)
         GROUP BY window_start, window_end, action;

         INSERT INTO hopping
         SELECT window_start, window_end, page, count(*) AS views, count(DISTINCT user_id) AS users
         FROM HOP(clicks, ts, INTERVAL '1' MINUTE, INTERVAL '3' MINUTE)
         GROUP BY window_start, window_end, page;

         INSERT INTO sessions
         SELECT user_id, window_start, window_end, count(*) AS events, sum(amount) AS spent
         FROM SESSION(clicks, ts, INTERVAL '3' SECOND)
         GROUP BY user_id, window_start, window_end;",
        data = data.display(),
        lake = lake.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_windows_equal_batch_queries() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("clicks");
    let lake = dir.path().join("lake");
    let spec = ClickstreamSpec {
        events: EVENTS,
        files: 6,
        step_us: 2_000,
        max_delay_ms: 1_500,
        users: 300,
        ..Default::default()
    };
    write_clickstream(&data, &spec).unwrap();

    let summary = run_sql(&pipeline(&data, &lake, "2000"), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(summary.totals.records_in, EVENTS);
    assert_eq!(
        summary.totals.late_rows, 0,
        "the watermark allows for all disorder"
    );
    assert_eq!(summary.totals.bad_records, 0);

    let oracle = oracle_context(&data).await;

    // TUMBLE: one window per row.
    let canonical = "SELECT CAST(window_start AS VARCHAR), CAST(window_end AS VARCHAR), action, events, round(revenue, 2), biggest FROM t ORDER BY 1, 3";
    oracle
        .sql(
            &format!(
                "CREATE VIEW t AS SELECT {}, action, count(*) AS events, sum(amount) AS revenue, max(amount) AS biggest
                 FROM clicks GROUP BY 1, 2, 3",
                oracle::tumble_bounds("1 minute")
            ),
        )
        .await
        .unwrap();
    let expected = query_rows(&oracle, canonical).await;
    let actual = query_rows(&delta_context("t", &lake.join("tumbling")).await, canonical).await;
    assert!(
        expected.len() > 20,
        "a meaningful number of windows: {}",
        expected.len()
    );
    assert_same_rows("TUMBLE", &actual, &expected);

    // HOP: every row in size/slide = 3 windows.
    let canonical = "SELECT CAST(window_start AS VARCHAR), CAST(window_end AS VARCHAR), page, views, users FROM h ORDER BY 1, 3";
    oracle
        .sql(
            &format!(
                "CREATE VIEW h AS SELECT window_start, window_end, page, count(*) AS views, count(DISTINCT user_id) AS users
                 FROM {} GROUP BY 1, 2, 3",
                oracle::hop_rows(3, "page, user_id")
            ),
        )
        .await
        .unwrap();
    let expected = query_rows(&oracle, canonical).await;
    let actual = query_rows(&delta_context("h", &lake.join("hopping")).await, canonical).await;
    assert_same_rows("HOP", &actual, &expected);

    // SESSION: per user, a new session after a gap of 3 s or more.
    let canonical = "SELECT user_id, CAST(window_start AS VARCHAR), CAST(window_end AS VARCHAR), events, round(spent, 2) FROM s ORDER BY 1, 2";
    oracle
        .sql(&format!(
            "CREATE VIEW s AS {}",
            oracle::sessions(
                "clicks",
                "user_id",
                3000,
                "count(*) AS events, sum(amount) AS spent"
            )
        ))
        .await
        .unwrap();
    let expected = query_rows(&oracle, canonical).await;
    let actual = query_rows(&delta_context("s", &lake.join("sessions")).await, canonical).await;
    assert!(expected.len() > 1000, "many sessions: {}", expected.len());
    assert_same_rows("SESSION", &actual, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_rows_are_dropped_and_counted_never_lost_silently() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("clicks");
    let lake = dir.path().join("lake");
    let spec = ClickstreamSpec {
        events: 50_000,
        files: 2,
        step_us: 20_000,
        max_delay_ms: 5_000,
        ..Default::default()
    };
    write_clickstream(&data, &spec).unwrap();
    // No allowed delay, one reader (a deterministic order) and small batches: rows that are
    // out of order across a minute boundary arrive after their window closed.
    let sql = format!(
        "CREATE TABLE clicks (
           event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP,
           WATERMARK FOR ts AS ts
         ) WITH (connector = 'file', path = '{}', mode = 'once', batch_size = 64, reader_threads = 1);
         CREATE TABLE tumbling WITH (connector = 'delta', path = '{}/tumbling');
         INSERT INTO tumbling SELECT window_start, count(*) AS events
         FROM TUMBLE(clicks, ts, INTERVAL '1' MINUTE) GROUP BY window_start, window_end;",
        data.display(),
        lake.display()
    );
    let summary = run_sql(&sql, RunOptions::default()).await.unwrap();
    let late = summary.totals.late_rows;
    assert!(late > 0, "some rows must be late");
    let ctx = delta_context("t", &lake.join("tumbling")).await;
    let counted = query_rows(&ctx, "SELECT sum(events) FROM t").await;
    let aggregated: u64 = counted[0].parse().unwrap();
    assert_eq!(
        aggregated + late,
        50_000,
        "every row is aggregated or counted late, once"
    );
}
