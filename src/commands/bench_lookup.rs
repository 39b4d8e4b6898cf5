//! The lookup part of `laketide bench --dynamodb`: generated clicks enriched by a lookup join
//! with a DynamoDB table of customers (every user but every third has one), with the cache on
//! and off, into a blackhole sink: events/s end to end, and the joined rows checked against a
//! DataFusion batch count over the same clicks.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{AsArray, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::{JsonReadOptions, SessionContext};
use laketide_connectors::Options;
use laketide_connectors::dynamodb::{DynamoDbSink, DynamoDbSinkConfig};
use laketide_engine::{RunOptions, Sink};

use crate::datagen::{ClickstreamSpec, write_clickstream};
use crate::error::{CliError, Result};
use crate::progress::human_rate;

/// Users in the generated clicks; two in three have a customer item.
const USERS: u32 = 10_000;

/// Writes the customers (`u<n>` for every `n` not divisible by 3) into a new table.
async fn write_customers(table: &str) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("segment", DataType::Utf8, false),
    ]));
    let users: Vec<u32> = (0..USERS).filter(|n| n % 3 != 0).collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(
                users.iter().map(|n| format!("u{n}")),
            )),
            Arc::new(StringArray::from_iter_values(
                users
                    .iter()
                    .map(|n| ["gold", "silver", "bronze"][*n as usize % 3]),
            )),
        ],
    )?;
    let options = Options::new([
        ("table".to_string(), table.to_string()),
        ("primary_key".to_string(), "user_id".to_string()),
        ("create_if_missing".to_string(), "true".to_string()),
        ("max_in_flight".to_string(), "16".to_string()),
    ])?;
    let mut sink = DynamoDbSink::new("customers", DynamoDbSinkConfig::from_options(options)?);
    sink.open(schema).await?;
    sink.write_batch(batch).await?;
    sink.close().await?;
    Ok(())
}

/// The pipeline: the clicks under `data` joined with DynamoDB table `table` (cache of
/// `cache_rows` keys) into a blackhole.
fn pipeline(data: &Path, table: &str, cache_rows: u64) -> String {
    format!(
        "CREATE TABLE clicks (event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE,
           ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
         WITH (connector = 'file', path = '{}', mode = 'once');
         CREATE TABLE customers (user_id TEXT, segment TEXT, PRIMARY KEY (user_id))
         WITH (connector = 'dynamodb', table = '{table}', lookup.cache.max_rows = '{cache_rows}',
               lookup.cache.ttl = '1h', max_in_flight = '16');
         CREATE TABLE enriched WITH (connector = 'blackhole');
         INSERT INTO enriched
         SELECT k.event_id, k.user_id, c.segment
         FROM clicks k JOIN customers FOR SYSTEM_TIME AS OF PROCTIME() AS c ON k.user_id = c.user_id;",
        data.display()
    )
}

/// Runs the lookup join over `events` generated clicks with the cache on and off and prints
/// events/s for each; fails if a run's joined rows differ from the batch count.
pub async fn bench_lookup(events: u64, dir: &Path) -> Result<()> {
    let data = dir.join("lookup_clicks");
    let _ = std::fs::remove_dir_all(&data);
    let spec = ClickstreamSpec {
        events,
        files: 1,
        users: USERS,
        ..Default::default()
    };
    write_clickstream(&data, &spec)?;
    let table = format!(
        "laketide-bench-customers-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp()
    );
    write_customers(&table).await?;
    let ctx = SessionContext::new();
    let schema = Schema::new(crate::datagen::clickstream_fields());
    let options = JsonReadOptions {
        schema: Some(&schema),
        file_extension: ".json",
        ..Default::default()
    };
    ctx.register_json("clicks", &data.display().to_string(), options)
        .await?;
    let expected = ctx
        .sql("SELECT count(*) FROM clicks WHERE CAST(substr(user_id, 2) AS BIGINT) % 3 <> 0")
        .await?
        .collect()
        .await?;
    let expected = expected[0].column(0).as_primitive::<Int64Type>().value(0) as u64;
    for (what, cache_rows) in [("cache on", 100_000), ("cache off", 0)] {
        let started = Instant::now();
        let summary =
            crate::pipeline::run_sql(&pipeline(&data, &table, cache_rows), RunOptions::default())
                .await?;
        let seconds = started.elapsed().as_secs_f64();
        let joined = summary
            .sinks
            .iter()
            .map(|(_, s)| s.rows_written)
            .sum::<u64>();
        if joined != expected {
            return Err(CliError::Usage(format!(
                "bench dynamodb lookup ({what}): {joined} joined rows, but the batch count is {expected}"
            )));
        }
        println!(
            "bench dynamodb lookup join ({what}, {USERS} users): {} events in {seconds:.2}s = {} events/s; {joined} joined rows, equal to the batch count",
            summary.totals.records_in,
            human_rate(summary.totals.records_in as f64 / seconds.max(1e-9)),
        );
    }
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}
