//! The DynamoDB part of `laketide bench --dynamodb`: items per second the DynamoDB sink sustains
//! against the server the AWS environment points at (the local DynamoDB server in development),
//! with 1, 4 and 16 requests in flight.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use laketide_connectors::Options;
use laketide_connectors::dynamodb::{DynamoDbSink, DynamoDbSinkConfig};
use laketide_engine::Sink;

use crate::error::Result;
use crate::progress::human_rate;

/// Writes `items` items into a fresh table per setting and prints items/s.
pub async fn bench_dynamodb(items: usize) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("page", DataType::Utf8, false),
        Field::new("window", DataType::Int64, false),
        Field::new("views", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(
                (0..items).map(|i| format!("/page/{}", i % 100)),
            )),
            Arc::new(Int64Array::from_iter_values(
                (0..items as i64).map(|i| i / 100),
            )),
            Arc::new(Int64Array::from_iter_values(
                (0..items as i64).map(|i| i * 7 % 1000),
            )),
        ],
    )?;
    for in_flight in [1, 4, 16] {
        let table = format!(
            "laketide-bench-{}-{}-{in_flight}",
            std::process::id(),
            chrono::Utc::now().timestamp()
        );
        let options = Options::new([
            ("table".to_string(), table.clone()),
            ("primary_key".to_string(), "page, window".to_string()),
            ("create_if_missing".to_string(), "true".to_string()),
            ("max_in_flight".to_string(), in_flight.to_string()),
        ])?;
        let mut sink = DynamoDbSink::new("bench", DynamoDbSinkConfig::from_options(options)?);
        sink.open(schema.clone()).await?;
        let started = Instant::now();
        for chunk in 0..batch.num_rows().div_ceil(8192) {
            let offset = chunk * 8192;
            let len = 8192.min(batch.num_rows() - offset);
            sink.write_batch(batch.slice(offset, len)).await?;
        }
        let summary = sink.close().await?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "bench dynamodb sink ({in_flight} requests in flight): {} items in {secs:.2}s = {} items/s ({} BatchWriteItem calls, {} throttled) into table {table}",
            summary.rows_written,
            human_rate(summary.rows_written as f64 / secs.max(1e-9)),
            summary.commits,
            sink.status().throttles()
        );
    }
    Ok(())
}
