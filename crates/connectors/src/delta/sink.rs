use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use serde::{Deserialize, Serialize};

use laketide_engine::{
    EngineError, NodeState, Result, ServiceStatus, Sink, SinkSummary, StreamMode,
};

use super::config::DeltaSinkConfig;
use super::table::{delta_error, open_table};
use crate::error::ConnectorError;

/// How often a commit is attempted when other writers keep taking the next table version. An
/// append never conflicts with another append, so each attempt only has to rebase; delta-rs's
/// default of 15 gave up with two busy streaming writers on one table.
const COMMIT_ATTEMPTS: usize = 200;

/// Appends rows to a Delta table. Without checkpoints, rows are buffered and committed as one
/// Delta commit when the buffer reaches `max_buffer_size`, every `commit_interval`, and at
/// close: readers never see part of a commit. With checkpoints (two-phase commit), data files
/// are written as rows arrive but enter the table only in the commit of a stored checkpoint,
/// which carries a Delta `txn` action (application id of the pipeline and sink, version = the
/// checkpoint number); on recovery that version tells whether the commit already happened.
pub struct DeltaSink {
    name: String,
    config: DeltaSinkConfig,
    table: Option<DeltaTable>,
    buffer: Vec<RecordBatch>,
    buffered_bytes: usize,
    buffered_rows: u64,
    last_commit: Instant,
    summary: SinkSummary,
    two_phase: Option<TwoPhase>,
    /// Bytes of data files written (counted when files are written ahead of their commit,
    /// that is with checkpoints).
    status: Arc<ServiceStatus>,
}

/// The sink's state when it commits on checkpoints.
struct TwoPhase {
    /// The Delta `txn` application id: stable across restarts of the pipeline.
    app_id: String,
    writer: Option<RecordBatchWriter>,
    /// Files written since the last prepare, and their rows.
    written: Vec<Add>,
    written_rows: u64,
    unflushed_rows: u64,
    /// Prepared and not yet committed, oldest first.
    prepared: Vec<PreparedCommit>,
}

/// Files prepared at a checkpoint: written, not yet in the table's log.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PreparedCommit {
    checkpoint: u64,
    rows: u64,
    adds: Vec<Add>,
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
            two_phase: None,
            status: Arc::new(ServiceStatus::default()),
        }
    }

    fn table(&self) -> Result<&DeltaTable> {
        self.table
            .as_ref()
            .ok_or_else(|| EngineError::Internal("Delta sink used before open".into()))
    }

    /// Writes the buffered rows of the two-phase writer to data files (not yet committed).
    async fn flush_files(&mut self) -> Result<()> {
        let Some(tp) = self.two_phase.as_mut() else {
            return Ok(());
        };
        let Some(writer) = tp.writer.as_mut() else {
            return Ok(());
        };
        let adds = writer.flush().await.map_err(|e| {
            ConnectorError::delta(
                format!(
                    "writing data files of Delta table `{}` at {}",
                    self.name, self.config.path
                ),
                e,
            )
        })?;
        let bytes: i64 = adds.iter().map(|a| a.size).sum();
        self.status.count_bytes(bytes.max(0) as u64);
        tp.written.extend(adds);
        tp.written_rows += std::mem::take(&mut tp.unflushed_rows);
        Ok(())
    }

    /// Commits prepared files up to `checkpoint` in one Delta commit whose `txn` version is
    /// `checkpoint`.
    async fn commit_prepared(
        &mut self,
        checkpoint: u64,
        commits: Vec<PreparedCommit>,
    ) -> Result<()> {
        let rows: u64 = commits.iter().map(|c| c.rows).sum();
        let actions: Vec<Action> = commits
            .into_iter()
            .flat_map(|c| c.adds)
            .map(Action::Add)
            .collect();
        if actions.is_empty() {
            return Ok(());
        }
        let app_id = self
            .two_phase
            .as_ref()
            .map(|tp| tp.app_id.clone())
            .ok_or_else(|| EngineError::Internal("two-phase commit without checkpoints".into()))?;
        let mut table = self
            .table
            .take()
            .ok_or_else(|| EngineError::Internal("Delta sink committed before open".into()))?;
        let partitions = self.config.partition_by.clone();
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: (!partitions.is_empty()).then_some(partitions),
            predicate: None,
        };
        let properties = CommitProperties::default()
            .with_max_retries(COMMIT_ATTEMPTS)
            .with_application_transaction(Transaction::new(&app_id, checkpoint as i64));
        let result = {
            let snapshot = table
                .snapshot()
                .map_err(|e| self.delta_error("reading", e))?;
            CommitBuilder::from(properties)
                .with_actions(actions)
                .build(Some(snapshot), table.log_store(), operation)
                .await
                .map(|done| done.snapshot())
        };
        match result {
            Ok(state) => table.state = Some(state),
            Err(e) => {
                self.table = Some(table);
                return Err(self.delta_error("committing to", e));
            }
        }
        let table = self.compact_if_due(table).await?;
        self.table = Some(table);
        self.summary.rows_written += rows;
        self.summary.commits += 1;
        tracing::debug!(sink = %self.name, checkpoint, rows, "committed on checkpoint");
        Ok(())
    }

    fn delta_error(&self, what: &str, e: deltalake::DeltaTableError) -> EngineError {
        delta_error(&self.name, &self.config, what, e)
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

    async fn commit_buffered(&mut self) -> Result<()> {
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
    fn accepts(
        &self,
        _schema: &datafusion::arrow::datatypes::Schema,
        mode: &StreamMode,
    ) -> std::result::Result<(), String> {
        match mode {
            StreamMode::AppendOnly => Ok(()),
            StreamMode::Updating { .. } => Err(
                "without a `primary_key` it appends rows; give it `primary_key` = the query's GROUP BY columns to keep one current row per key".into(),
            ),
        }
    }

    fn status(&self) -> Option<Arc<ServiceStatus>> {
        Some(self.status.clone())
    }

    async fn open(&mut self, schema: SchemaRef) -> Result<()> {
        let table = open_table(&self.name, &mut self.config, &schema).await?;
        self.table = Some(table);
        self.last_commit = Instant::now();
        Ok(())
    }

    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
        if self.two_phase.is_some() {
            return self.write_two_phase(batch).await;
        }
        self.buffered_rows += batch.num_rows() as u64;
        self.buffered_bytes += batch.get_array_memory_size();
        self.buffer.push(batch);
        if self.buffered_bytes as u64 >= self.config.max_buffer_bytes {
            self.commit_buffered().await?;
        }
        Ok(())
    }

    async fn maintain(&mut self) -> Result<()> {
        if self.two_phase.is_some() {
            // Commits happen on checkpoints only.
            return Ok(());
        }
        if self.last_commit.elapsed() >= self.config.commit_interval {
            self.commit_buffered().await?;
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<SinkSummary> {
        if self.two_phase.is_none() {
            self.commit_buffered().await?;
        }
        Ok(self.summary.clone())
    }

    fn enable_checkpoints(&mut self, pipeline: &str) {
        self.two_phase = Some(TwoPhase {
            app_id: format!("laketide:{pipeline}:{}", self.name),
            writer: None,
            written: Vec::new(),
            written_rows: 0,
            unflushed_rows: 0,
            prepared: Vec::new(),
        });
    }

    /// Writes the remaining rows to data files; the state lists every file prepared and not
    /// yet committed (older checkpoints whose commit has not happened are included).
    async fn prepare_commit(&mut self, checkpoint: u64) -> Result<NodeState> {
        self.flush_files().await?;
        let tp = self
            .two_phase
            .as_mut()
            .ok_or_else(|| EngineError::Internal("prepare without checkpoints".into()))?;
        let adds = std::mem::take(&mut tp.written);
        let rows = std::mem::take(&mut tp.written_rows);
        if !adds.is_empty() {
            tp.prepared.push(PreparedCommit {
                checkpoint,
                rows,
                adds,
            });
        }
        NodeState::json(&tp.prepared)
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<()> {
        let Some(tp) = self.two_phase.as_mut() else {
            return Ok(());
        };
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut tp.prepared)
            .into_iter()
            .partition(|c| c.checkpoint <= checkpoint);
        tp.prepared = later;
        self.commit_prepared(checkpoint, ready).await
    }

    /// Commits the files prepared up to `checkpoint` that the table's `txn` version for this
    /// pipeline and sink does not cover yet (the crash came before their commit).
    async fn recover(&mut self, checkpoint: u64, state: NodeState) -> Result<()> {
        let prepared: Vec<PreparedCommit> = state.to_json()?.unwrap_or_default();
        if prepared.is_empty() {
            return Ok(());
        }
        let app_id = self
            .two_phase
            .as_ref()
            .map(|tp| tp.app_id.clone())
            .ok_or_else(|| EngineError::Internal("recovery without checkpoints".into()))?;
        let table = self.table()?;
        let committed = table
            .snapshot()
            .map_err(|e| self.delta_error("reading", e))?
            .transaction_version(table.log_store().as_ref(), &app_id)
            .await
            .map_err(|e| self.delta_error("reading", e))?;
        // Each commit covers every prepared checkpoint up to its version, so the entries up to
        // the table's version for this sink are in the table already.
        let done = committed.unwrap_or(-1);
        let missing: Vec<PreparedCommit> = prepared
            .into_iter()
            .filter(|c| c.checkpoint as i64 > done)
            .collect();
        if missing.is_empty() {
            tracing::info!(sink = %self.name, checkpoint, "the recovered checkpoint's files are committed already");
            return Ok(());
        }
        tracing::info!(sink = %self.name, checkpoint, "completing the commit of the recovered checkpoint");
        self.commit_prepared(checkpoint, missing).await
    }
}

impl DeltaSink {
    async fn write_two_phase(&mut self, batch: RecordBatch) -> Result<()> {
        let table = self
            .table
            .as_ref()
            .ok_or_else(|| EngineError::Internal("Delta sink written before open".into()))?;
        let tp = self.two_phase.as_mut().expect("checked by the caller");
        if tp.writer.is_none() {
            let mut writer = RecordBatchWriter::for_table(table).map_err(|e| {
                ConnectorError::delta(format!("writing to Delta table `{}`", self.name), e)
            })?;
            if let Some(size) = self.config.target_file_size {
                writer = writer.with_target_file_size(size);
            }
            tp.writer = Some(writer);
        }
        let writer = tp.writer.as_mut().expect("created above");
        let batch = conform(&batch, &writer.arrow_schema())?;
        tp.unflushed_rows += batch.num_rows() as u64;
        writer.write(batch).await.map_err(|e| {
            ConnectorError::delta(
                format!(
                    "writing data files of Delta table `{}` at {}",
                    self.name, self.config.path
                ),
                e,
            )
        })?;
        if writer.buffer_len() as u64 >= self.config.max_buffer_bytes {
            self.flush_files().await?;
        }
        Ok(())
    }
}

/// The batch with the table's schema (same columns; types cast where they differ only in
/// representation, nullability taken from the table).
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema_ref() == schema {
        return Ok(batch.clone());
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                datafusion::arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

impl std::fmt::Debug for DeltaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaSink")
            .field("name", &self.name)
            .field("path", &self.config.path)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Options;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]))
    }

    fn batch(ids: std::ops::Range<i64>) -> RecordBatch {
        RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from_iter_values(ids))]).unwrap()
    }

    async fn sink(path: &str) -> DeltaSink {
        let config = DeltaSinkConfig::from_options(
            Options::new([("path".to_string(), path.to_string())]).unwrap(),
        )
        .unwrap();
        let mut sink = DeltaSink::new("t", config);
        sink.enable_checkpoints("test-pipeline");
        sink.open(schema()).await.unwrap();
        sink
    }

    /// Rows of the table's current version, counted from its data files.
    async fn committed_rows(path: &str) -> usize {
        let url = deltalake::ensure_table_uri(path).unwrap();
        let table = deltalake::open_table(url).await.unwrap();
        let mut rows = 0;
        for uri in table.get_file_uris().unwrap() {
            let file = std::fs::File::open(uri.trim_start_matches("file://")).unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap();
            rows += reader.map(|b| b.unwrap().num_rows()).sum::<usize>();
        }
        rows
    }

    #[tokio::test]
    async fn files_enter_the_table_only_on_commit_and_recovery_commits_them_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t").display().to_string();
        let mut first = sink(&path).await;
        first.write_batch(batch(0..10)).await.unwrap();
        first.prepare_commit(1).await.unwrap();
        assert_eq!(
            committed_rows(&path).await,
            0,
            "prepared files are not visible"
        );
        first.commit(1).await.unwrap();
        assert_eq!(committed_rows(&path).await, 10);
        first.write_batch(batch(10..25)).await.unwrap();
        let prepared = first.prepare_commit(2).await.unwrap();
        // The process dies after checkpoint 2 is stored, before its commit.
        drop(first);
        assert_eq!(committed_rows(&path).await, 10);

        let mut recovered = sink(&path).await;
        recovered.recover(2, prepared.clone()).await.unwrap();
        assert_eq!(committed_rows(&path).await, 25);
        // It dies again right after that commit and recovers from checkpoint 2 once more: the
        // table's `txn` version says the commit is in, so nothing is added twice.
        drop(recovered);
        let mut again = sink(&path).await;
        again.recover(2, prepared).await.unwrap();
        assert_eq!(committed_rows(&path).await, 25);
        // Later checkpoints go on from there.
        again.write_batch(batch(25..30)).await.unwrap();
        again.prepare_commit(3).await.unwrap();
        again.commit(3).await.unwrap();
        assert_eq!(committed_rows(&path).await, 30);
    }
}
