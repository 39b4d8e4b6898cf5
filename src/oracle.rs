//! Batch queries that compute what the window table functions compute, over a table `clicks`
//! with a `ts` column: the oracle the benchmark and the end-to-end tests compare streaming
//! results with. Plain DataFusion SQL, independent of laketide's window operators.

/// `window_start, window_end` of the TUMBLE window of size `interval` (an SQL interval such
/// as `1 minute`) holding `ts`, aligned to the epoch.
pub fn tumble_bounds(interval: &str) -> String {
    let start = format!("date_bin(INTERVAL '{interval}', ts, TIMESTAMP '1970-01-01T00:00:00')");
    format!("{start} AS window_start, {start} + INTERVAL '{interval}' AS window_end")
}

/// `FROM clicks` rows repeated once per HOP window of `size` sliding by one minute (`size`
/// is a whole number of minutes), with that window's `window_start, window_end` in front of
/// `columns`.
pub fn hop_rows(size_minutes: u32, columns: &str) -> String {
    let start = "date_bin(INTERVAL '1 minute', ts, TIMESTAMP '1970-01-01T00:00:00') - k";
    let offsets: Vec<String> = (0..size_minutes)
        .map(|m| format!("(INTERVAL '{m} minutes')"))
        .collect();
    format!(
        "(SELECT {start} AS window_start, {start} + INTERVAL '{size_minutes} minutes' AS window_end, {columns}
          FROM clicks CROSS JOIN (VALUES {}) AS o(k))",
        offsets.join(", ")
    )
}

/// SESSION windows of `table` per `key` with a gap of `gap_millis`: one row per session with
/// `key, window_start, window_end` and `aggregates` (over the table's columns; e.g.
/// `count(*) AS events, sum(amount) AS spent`). A new session starts after a gap of
/// `gap_millis` or more; it ends its last row's time plus the gap. `ts` is a microsecond
/// TIMESTAMP.
pub fn sessions(table: &str, key: &str, gap_millis: u64, aggregates: &str) -> String {
    let gap_micros = gap_millis * 1_000;
    format!(
        "WITH marked AS (
           SELECT *, CASE WHEN CAST(ts AS BIGINT) - lag(CAST(ts AS BIGINT)) OVER (PARTITION BY {key} ORDER BY ts) < {gap_micros}
                          THEN 0 ELSE 1 END AS new_session
           FROM {table}),
         numbered AS (
           SELECT *, sum(new_session) OVER (PARTITION BY {key} ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS session
           FROM marked)
         SELECT {key}, min(ts) AS window_start, max(ts) + INTERVAL '{gap_millis} milliseconds' AS window_end, {aggregates}
         FROM numbered GROUP BY {key}, session"
    )
}
