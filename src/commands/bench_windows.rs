//! `laketide bench`, the window suite: TUMBLE, HOP and SESSION over the same generated
//! clickstream, each into a Delta table, measured (events/s end to end, peak memory, peak
//! open state) and checked against the same aggregation as a DataFusion batch query.

use std::collections::HashMap;
use std::path::Path;

use datafusion::prelude::{JsonReadOptions, SessionContext};
use laketide_engine::RunOptions;

use crate::error::{CliError, Result};
use crate::oracle;
use crate::pipeline::run_sql;
use crate::progress::human_rate;

/// One benchmarked query: its pipeline's INSERT body and the batch query that must agree.
struct WindowQuery {
    name: &'static str,
    /// `SELECT … FROM <window>(clicks, …) GROUP BY …` producing `columns`.
    streaming: &'static str,
    /// The same over the table `clicks` with plain SQL.
    batch: String,
    /// The compared columns, as text (sums rounded to cents).
    columns: &'static str,
}

fn queries() -> Vec<WindowQuery> {
    vec![
        WindowQuery {
            name: "tumble-1min",
            streaming: "SELECT window_start, window_end, action, count(*) AS events, sum(amount) AS revenue, max(amount) AS biggest
                        FROM TUMBLE(clicks, ts, INTERVAL '1' MINUTE) GROUP BY window_start, window_end, action",
            batch: format!(
                "SELECT {}, action, count(*) AS events, sum(amount) AS revenue, max(amount) AS biggest FROM clicks GROUP BY 1, 2, 3",
                oracle::tumble_bounds("1 minute")
            ),
            columns: "CAST(window_start AS VARCHAR), CAST(window_end AS VARCHAR), action, events, CAST(round(revenue, 2) AS VARCHAR), CAST(biggest AS VARCHAR)",
        },
        WindowQuery {
            name: "hop-5min-by-1min",
            streaming: "SELECT window_start, window_end, page, count(*) AS views
                        FROM HOP(clicks, ts, INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) GROUP BY window_start, window_end, page",
            batch: format!(
                "SELECT window_start, window_end, page, count(*) AS views FROM {} GROUP BY 1, 2, 3",
                oracle::hop_rows(5, "page")
            ),
            columns: "CAST(window_start AS VARCHAR), CAST(window_end AS VARCHAR), page, views",
        },
        WindowQuery {
            name: "session-30s",
            streaming: "SELECT user_id, window_start, window_end, count(*) AS events, sum(amount) AS spent
                        FROM SESSION(clicks, ts, INTERVAL '30' SECOND) GROUP BY user_id, window_start, window_end",
            batch: oracle::sessions("clicks", "user_id", 30000, "count(*) AS events, sum(amount) AS spent"),
            columns: "user_id, CAST(window_start AS VARCHAR), CAST(window_end AS VARCHAR), events, CAST(round(spent, 2) AS VARCHAR)",
        },
    ]
}

fn pipeline(data: &Path, table: &Path, query: &WindowQuery) -> String {
    format!(
        "CREATE TABLE clicks (
           event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP,
           WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
         ) WITH (connector = 'file', path = '{}', format = 'json', mode = 'once');
         CREATE TABLE results WITH (connector = 'delta', path = '{}');
         INSERT INTO results {};",
        data.display(),
        table.display(),
        query.streaming
    )
}

/// Rows in one result and not the other (counting duplicates), each way.
async fn differences(data: &Path, table: &Path, query: &WindowQuery) -> Result<(u64, u64)> {
    let ctx = SessionContext::new();
    let schema = datafusion::arrow::datatypes::Schema::new(crate::datagen::clickstream_fields());
    ctx.register_json(
        "clicks",
        &data.display().to_string(),
        JsonReadOptions {
            schema: Some(&schema),
            file_extension: ".json",
            ..Default::default()
        },
    )
    .await?;
    let root = table.parent().unwrap_or(table);
    crate::lake::register_lake(&ctx, root, &HashMap::new()).await?;
    let name = table
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    ctx.sql(&format!("CREATE VIEW oracle AS {}", query.batch))
        .await?;
    let count = |sql: String| {
        let ctx = ctx.clone();
        async move {
            let batches = ctx.sql(&sql).await?.collect().await?;
            let n = batches
                .first()
                .and_then(|b| {
                    b.column(0)
                        .as_any()
                        .downcast_ref::<datafusion::arrow::array::Int64Array>()
                        .map(|a| a.value(0))
                })
                .unwrap_or(0);
            Ok::<u64, datafusion::error::DataFusionError>(n as u64)
        }
    };
    let c = query.columns;
    let missing = count(format!(
        "SELECT count(*) FROM (SELECT {c} FROM oracle EXCEPT ALL SELECT {c} FROM \"{name}\")"
    ))
    .await?;
    let extra = count(format!(
        "SELECT count(*) FROM (SELECT {c} FROM \"{name}\" EXCEPT ALL SELECT {c} FROM oracle)"
    ))
    .await?;
    Ok((missing, extra))
}

/// Runs every window query over the events in `data` (writing tables under `lake`), prints
/// one line each, then checks each result against its batch query (after all runs, so that
/// the oracles' memory does not count in the runs' peaks), and fails if one differs.
pub async fn bench_windows(data: &Path, lake: &Path) -> Result<()> {
    let mut measured = Vec::new();
    for query in &queries() {
        let table = lake.join(query.name.replace('-', "_"));
        let _ = std::fs::remove_dir_all(&table);
        super::bench::reset_peak_memory();
        let summary = run_sql(&pipeline(data, &table, query), RunOptions::default()).await?;
        let peak = super::bench::peak_memory_bytes().unwrap_or(0);
        let secs = summary.elapsed.as_secs_f64();
        let rate = summary.totals.records_in as f64 / secs.max(1e-9);
        let open: u64 = summary
            .totals
            .peak_open_state
            .iter()
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0);
        println!(
            "bench {}: {} events in {secs:.2}s = {} events/s end to end; peak memory {} MB; peak open state {open}; {} results",
            query.name,
            summary.totals.records_in,
            human_rate(rate),
            peak / (1 << 20),
            summary.totals.windows_emitted,
        );
        measured.push((table, summary.totals.late_rows));
    }
    for (query, (table, late)) in queries().iter().zip(measured) {
        let (missing, extra) = differences(data, &table, query).await?;
        if missing != 0 || extra != 0 || late != 0 {
            return Err(CliError::Usage(format!(
                "bench {}: the streaming result differs from the batch query: {missing} rows missing, {extra} extra, {late} late",
                query.name
            )));
        }
        println!(
            "bench {}: the result equals the DataFusion batch query",
            query.name
        );
    }
    Ok(())
}
