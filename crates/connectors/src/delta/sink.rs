use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use deltalake::DeltaTable;
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;

use laketide_engine::{EngineError, Result, Sink, SinkSummary};

use super::config::DeltaSinkConfig;
use super::schema::check_table_schema;
use crate::error::ConnectorError;

/// How often a commit is attempted when other writers keep taking the next table version. An
/// append never conflicts with another append, so each attempt only has to rebase; delta-rs's
/// default of 15 gave up with two busy streaming writers on one table.
const COMMIT_ATTEMPTS: usize = 200;

/// Appends rows to a Delta table. Rows are buffered and committed as one Delta commit when the
/// buffer reaches `max_buffer_size`, every `commit_interval`, and at close: readers never see
/// part of a commit.
pub struct DeltaSink {
    name: String,
    config: DeltaSinkConfig,
    table: Option<DeltaTable>,
    buffer: Vec<RecordBatch>,
    buffered_bytes: usize,
    buffered_rows: u64,
    last_commit: Instant,
    summary: SinkSummary,
}

impl DeltaSink {
    /// A sink for table `name`; does no I/O until opened.
    pub fn new(name: impl Into<String>, config: DeltaSinkConfig) -> Self {
        DeltaSink {
            name: name.into(),
            config,
            table: None,
            buffer: Vec::new(),
            buffered_bytes: 0,
            buffered_rows: 0,
            last_commit: Instant::now(),
            summary: SinkSummary::default(),
        }
    }

    fn delta_error(&self, what: &str, e: deltalake::DeltaTableError) -> EngineError {
        ConnectorError::delta(
            format!("{what} Delta table `{}` at {}", self.name, self.config.path),
            e,
        )
        .into()
    }

    /// Runs Delta OPTIMIZE when the table has reached `compact_file_count` data files, so that a
    /// long-running stream of small commits does not leave readers with thousands of files.
    async fn compact_if_due(&mut self, table: DeltaTable) -> Result<DeltaTable> {
        let Some(limit) = self.config.compact_file_count else {
            return Ok(table);
        };
        let files = table
            .snapshot()
            .map_err(|e| self.delta_error("reading", e))?
            .log_data()
            .num_files() as u64;
        if files < limit {
            return Ok(table);
        }
        let mut optimize = table.optimize();
        if let Some(size) = self
            .config
            .target_file_size
            .and_then(std::num::NonZeroU64::new)
        {
            optimize = optimize.with_target_size(size);
        }
        let (table, metrics) = optimize
            .await
            .map_err(|e| self.delta_error("compacting", e))?;
        tracing::info!(
            sink = %self.name,
            files_removed = metrics.num_files_removed,
            files_added = metrics.num_files_added,
            "compacted the Delta table"
        );
        Ok(table)
    }

    async fn commit(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            // Nothing to commit: the next rows wait a full interval, not just the next tick.
            self.last_commit = Instant::now();
            return Ok(());
        }
        let table = self
            .table
            .take()
            .ok_or_else(|| EngineError::Internal("Delta sink written before open".into()))?;
        let batches = std::mem::take(&mut self.buffer);
        let mut write = table
            .write(batches)
            .with_commit_properties(CommitProperties::default().with_max_retries(COMMIT_ATTEMPTS))
            .with_save_mode(SaveMode::Append)
            .with_partition_columns(self.config.partition_by.clone());
        if let Some(size) = self
            .config
            .target_file_size
            .and_then(std::num::NonZeroU64::new)
        {
            write = write.with_target_file_size(Some(size));
        }
        let table = write
            .await
            .map_err(|e| self.delta_error("appending to", e))?;
        let table = self.compact_if_due(table).await?;
        self.table = Some(table);
        self.summary.rows_written += self.buffered_rows;
        self.summary.commits += 1;
        self.buffered_rows = 0;
        self.buffered_bytes = 0;
        self.last_commit = Instant::now();
        Ok(())
    }
}

#[async_trait]
impl Sink for DeltaSink {
    async fn open(&mut self, schema: SchemaRef) -> Result<()> {
        for p in &self.config.partition_by {
            if schema.field_with_name(p).is_err() {
                return Err(EngineError::User(format!(
                    "partition_by column `{p}` is not a column of the query feeding `{}`",
                    self.name
                )));
            }
        }
        let url = deltalake::ensure_table_uri(&self.config.path)
            .map_err(|e| self.delta_error("locating", e))?;
        let table = DeltaTable::try_from_url_with_storage_options(
            url,
            self.config.storage.storage_options(),
        )
        .await
        .map_err(|e| self.delta_error("opening", e))?;
        let table = if table.version().is_none() {
            let kernel_schema: StructType = schema.as_ref().try_into_kernel().map_err(|e| {
                // The kernel's message carries a backtrace after its first line.
                let text = e.to_string();
                let first = text.lines().next().unwrap_or_default().trim().to_string();
                EngineError::User(format!(
                    "the query's schema cannot be stored in Delta: {first} (cast such columns in the SELECT, e.g. an INTERVAL to BIGINT seconds)"
                ))
            })?;
            table
                .create()
                .with_columns(kernel_schema.fields().cloned())
                .with_partition_columns(self.config.partition_by.clone())
                .with_table_name(self.name.clone())
                .with_save_mode(SaveMode::Ignore)
                .await
                .map_err(|e| self.delta_error("creating", e))?
        } else {
            let snapshot = table
                .snapshot()
                .map_err(|e| self.delta_error("reading", e))?;
            let existing: Schema = snapshot
                .schema()
                .as_ref()
                .try_into_arrow()
                .map_err(|e| EngineError::external("reading the Delta table's schema", e))?;
            check_table_schema(&self.name, &existing, &schema).map_err(EngineError::from)?;
            let partitions = snapshot.metadata().partition_columns().to_vec();
            if !self.config.partition_by.is_empty() && partitions != self.config.partition_by {
                return Err(EngineError::User(format!(
                    "Delta table `{}` is partitioned by ({}) but partition_by says ({})",
                    self.name,
                    partitions.join(", "),
                    self.config.partition_by.join(", ")
                )));
            }
            self.config.partition_by = partitions;
            table
        };
        self.table = Some(table);
        self.last_commit = Instant::now();
        Ok(())
    }

    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
        self.buffered_rows += batch.num_rows() as u64;
        self.buffered_bytes += batch.get_array_memory_size();
        self.buffer.push(batch);
        if self.buffered_bytes as u64 >= self.config.max_buffer_bytes {
            self.commit().await?;
        }
        Ok(())
    }

    async fn maintain(&mut self) -> Result<()> {
        if self.last_commit.elapsed() >= self.config.commit_interval {
            self.commit().await?;
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<SinkSummary> {
        self.commit().await?;
        Ok(self.summary.clone())
    }
}

impl std::fmt::Debug for DeltaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaSink")
            .field("name", &self.name)
            .field("path", &self.config.path)
            .finish()
    }
}
