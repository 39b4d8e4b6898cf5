//! The `console` connector: prints result rows to standard output as aligned tables. An
//! updating result is printed as its changelog, with an `op` column in front (`+I`, `-U`,
//! `+U`, `-D`), as Flink's SQL client does.

use std::io::Write;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;

use laketide_engine::{EngineError, Result, Sink, SinkSummary, StreamMode, has_change_column};

use crate::changelog::with_op_column;

use crate::error::Result as ConnectorResult;
use crate::options::Options;

/// The option keys of the console sink (none).
pub const CONSOLE_SINK_OPTIONS: &[&str] = &[];

/// Prints each batch as a table, headed by the sink's name.
#[derive(Debug)]
pub struct ConsoleSink {
    name: String,
    summary: SinkSummary,
}

impl ConsoleSink {
    /// Validates the (empty) options.
    pub fn from_options(name: impl Into<String>, options: Options) -> ConnectorResult<Self> {
        options.finish("console", CONSOLE_SINK_OPTIONS)?;
        Ok(ConsoleSink {
            name: name.into(),
            summary: SinkSummary::default(),
        })
    }
}

#[async_trait]
impl Sink for ConsoleSink {
    fn accepts(&self, _schema: &Schema, _mode: &StreamMode) -> std::result::Result<(), String> {
        Ok(())
    }

    async fn open(&mut self, _schema: SchemaRef) -> Result<()> {
        Ok(())
    }

    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
        let batch = if has_change_column(batch.schema_ref()) {
            with_op_column(&batch, true)?
        } else {
            batch
        };
        let table = pretty_format_batches(std::slice::from_ref(&batch))?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}:\n{table}", self.name)
            .and_then(|_| out.flush())
            .map_err(|e| EngineError::external("writing to standard output", e))?;
        self.summary.rows_written += batch.num_rows() as u64;
        self.summary.commits += 1;
        Ok(())
    }

    async fn close(&mut self) -> Result<SinkSummary> {
        Ok(self.summary.clone())
    }
}
