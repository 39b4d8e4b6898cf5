//! The Kinesis sink: each row becomes one record (JSON or CSV), keyed by the `partition_key`
//! expression. At-least-once: a retried PutRecords can write a record twice.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::prelude::SessionContext;
use laketide_engine::{EngineError, Result, ServiceStatus, Sink, SinkSummary};

use super::client::StreamClient;
use super::config::KinesisSinkConfig;
use super::writer::{OutgoingRecord, RecordWriter};
use crate::error::column_list;
use crate::format::RowEncoder;

/// Writes rows to a Kinesis stream; see [`KinesisSinkConfig`].
pub struct KinesisSink {
    table: String,
    config: KinesisSinkConfig,
    encoder: RowEncoder,
    writer: Option<RecordWriter>,
    partition_key: Option<Arc<dyn PhysicalExpr>>,
    rows_written: u64,
    calls: u64,
    status: Arc<ServiceStatus>,
}

impl KinesisSink {
    /// A sink for table `table`. Does no I/O until opened.
    pub fn new(table: &str, config: KinesisSinkConfig) -> Self {
        KinesisSink {
            table: table.to_string(),
            encoder: RowEncoder::new(config.format.clone()),
            config,
            writer: None,
            partition_key: None,
            rows_written: 0,
            calls: 0,
            status: Arc::new(ServiceStatus::default()),
        }
    }

    fn partition_keys(&self, batch: &RecordBatch) -> Result<Vec<String>> {
        let Some(expr) = &self.partition_key else {
            // Random keys spread records evenly over the shards.
            return Ok((0..batch.num_rows())
                .map(|_| uuid::Uuid::new_v4().simple().to_string())
                .collect());
        };
        let values = expr
            .evaluate(batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(|e| EngineError::compute("evaluating the partition key", e))?;
        let text = cast(&values, &DataType::Utf8)
            .map_err(|e| EngineError::compute("casting the partition key to text", e))?;
        let text = text.as_string::<i32>();
        (0..text.len())
            .map(|row| {
                if text.is_null(row) {
                    Err(EngineError::User(format!(
                        "sink `{}`: the partition key `{}` is NULL for a row; Kinesis needs a key for every record",
                        self.table,
                        self.config.partition_key.as_deref().unwrap_or_default()
                    )))
                } else {
                    Ok(text.value(row).to_string())
                }
            })
            .collect()
    }
}

#[async_trait]
impl Sink for KinesisSink {
    fn status(&self) -> Option<Arc<ServiceStatus>> {
        Some(self.status.clone())
    }

    async fn open(&mut self, schema: SchemaRef) -> Result<()> {
        if let Some(sql) = &self.config.partition_key {
            let df_schema = DFSchema::try_from(schema.as_ref().clone())
                .map_err(|e| EngineError::compute("the sink's schema", e))?;
            let ctx = SessionContext::new();
            let expr = ctx.parse_sql_expr(sql, &df_schema).map_err(|e| {
                EngineError::User(format!(
                    "sink `{}`: option `partition_key` = '{sql}' is not an expression over the columns ({}): {e}",
                    self.table,
                    column_list(&schema)
                ))
            })?;
            let physical = ctx.create_physical_expr(expr, &df_schema).map_err(|e| {
                EngineError::User(format!(
                    "sink `{}`: option `partition_key` = '{sql}': {e}",
                    self.table
                ))
            })?;
            self.partition_key = Some(physical);
        }
        let client = StreamClient::connect(
            &self.config.stream,
            &self.config.aws,
            self.config.retry_timeout,
            self.status.clone(),
        )
        .await?;
        // Fails at start if the stream is missing or unreachable.
        client.list_shards().await?;
        self.writer = Some(RecordWriter::new(
            client,
            self.config.max_records_per_request,
            self.config.retry_timeout,
        ));
        Ok(())
    }

    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let data = self.encoder.encode(&batch)?;
        let keys = self.partition_keys(&batch)?;
        let bytes: usize = data.iter().map(Vec::len).sum();
        self.status.count_bytes(bytes as u64);
        let records = keys
            .into_iter()
            .zip(data)
            .map(|(partition_key, data)| OutgoingRecord {
                partition_key,
                data,
            })
            .collect();
        let writer = self
            .writer
            .as_ref()
            .ok_or_else(|| EngineError::Internal("kinesis sink written before open".into()))?;
        self.calls += writer.put_all(records).await?;
        self.rows_written += batch.num_rows() as u64;
        Ok(())
    }

    async fn close(&mut self) -> Result<SinkSummary> {
        Ok(SinkSummary {
            rows_written: self.rows_written,
            commits: self.calls,
        })
    }
}
