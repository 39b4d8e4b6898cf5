//! The Delta sink with `primary_key`: the table holds one current row per key, kept by MERGE.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use serde::{Deserialize, Serialize};

use laketide_engine::{
    EngineError, NodeState, Result, ServiceStatus, Sink, SinkSummary, StreamMode, has_change_column,
};

use super::config::DeltaSinkConfig;
use super::merge::{changes_schema, merge, net_changes, to_changes};
use super::staging::ChangeFiles;
use super::table::{delta_error, open_table};
use crate::changelog::check_primary_key;

/// How often a MERGE is attempted when other writers take the next table version.
const MERGE_ATTEMPTS: usize = 50;

/// Keeps a Delta table at one row per `primary_key`, applying each commit's changes as one
/// MERGE: a key's last change in the commit deletes its row (`-U`/`-D` not followed by a
/// put), replaces it, or inserts it. Append-only input is applied the same way (each row is
/// the key's new value). Without checkpoints, changes are merged every `commit_interval`,
/// when `max_buffer_size` is reached, and at close. With checkpoints, `prepare_commit` writes
/// the checkpoint's net changes to a Parquet file under the table's `_laketide_changes/`
/// folder (durable, not visible) and `commit` merges them with a `txn` action (the pipeline's
/// id, version = the checkpoint), so a recovered run merges a prepared checkpoint at most once.
pub struct DeltaUpsertSink {
    name: String,
    config: DeltaSinkConfig,
    table: Option<DeltaTable>,
    /// Changes received since the last merge or prepare, with their delete flags.
    changes: Vec<RecordBatch>,
    changes_schema: Option<SchemaRef>,
    buffered_bytes: usize,
    buffered_rows: u64,
    last_commit: Instant,
    summary: SinkSummary,
    checkpoints: Option<Checkpointed>,
    status: Arc<ServiceStatus>,
}

/// The sink's state when it commits on checkpoints.
struct Checkpointed {
    app_id: String,
    files: Option<ChangeFiles>,
    /// Prepared and not yet merged, oldest first.
    prepared: Vec<PreparedMerge>,
}

/// The changes of one checkpoint, staged in a file of the table's storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PreparedMerge {
    checkpoint: u64,
    rows: u64,
    /// The staged file, relative to the table's root.
    file: String,
}

impl DeltaUpsertSink {
    /// A sink for table `name` keyed by `config.primary_key`; does no I/O until opened.
    pub fn new(name: impl Into<String>, config: DeltaSinkConfig) -> Self {
        DeltaUpsertSink {
            name: name.into(),
            config,
            table: None,
            changes: Vec::new(),
            changes_schema: None,
            buffered_bytes: 0,
            buffered_rows: 0,
            last_commit: Instant::now(),
            summary: SinkSummary::default(),
            checkpoints: None,
            status: Arc::new(ServiceStatus::default()),
        }
    }

    fn error(&self, what: &str, e: deltalake::DeltaTableError) -> EngineError {
        delta_error(&self.name, &self.config, what, e)
    }

    fn schema(&self) -> Result<SchemaRef> {
        self.changes_schema
            .clone()
            .ok_or_else(|| EngineError::Internal("Delta sink used before open".into()))
    }

    /// The net change per key of everything received since the last call.
    fn take_net_changes(&mut self) -> Result<RecordBatch> {
        let changes = std::mem::take(&mut self.changes);
        self.buffered_bytes = 0;
        net_changes(&self.schema()?, &changes, &self.config.primary_key)
    }

    /// Merges `net` into the table, with `txn` set when the merge is a checkpoint's.
    async fn merge_into_table(
        &mut self,
        net: RecordBatch,
        txn: Option<(String, u64)>,
    ) -> Result<()> {
        if net.num_rows() == 0 {
            return Ok(());
        }
        let mut properties = CommitProperties::default().with_max_retries(MERGE_ATTEMPTS);
        if let Some((app_id, version)) = txn {
            properties =
                properties.with_application_transaction(Transaction::new(&app_id, version as i64));
        }
        let table = self
            .table
            .take()
            .ok_or_else(|| EngineError::Internal("Delta sink merged before open".into()))?;
        let rows = net.num_rows() as u64;
        match merge(table.clone(), net, &self.config.primary_key, properties).await {
            Ok(merged) => self.table = Some(merged),
            Err(e) => {
                self.table = Some(table);
                return Err(self.error("merging changes into", e));
            }
        }
        self.summary.rows_written += rows;
        self.summary.commits += 1;
        Ok(())
    }

    /// Without checkpoints: merges what was received.
    async fn merge_buffered(&mut self) -> Result<()> {
        let net = self.take_net_changes()?;
        self.buffered_rows = 0;
        self.last_commit = Instant::now();
        self.merge_into_table(net, None).await
    }

    /// Merges the prepared checkpoints `ready` (oldest first) as one MERGE whose `txn` version
    /// is `checkpoint`, then deletes their staged files.
    async fn merge_prepared(&mut self, checkpoint: u64, ready: Vec<PreparedMerge>) -> Result<()> {
        if ready.is_empty() {
            return Ok(());
        }
        let cp = self.checkpoints.as_ref().ok_or_else(|| {
            EngineError::Internal("a checkpoint merge without checkpoints".into())
        })?;
        let files = cp
            .files
            .as_ref()
            .ok_or_else(|| EngineError::Internal("Delta sink merged before open".into()))?;
        let mut staged = Vec::with_capacity(ready.len());
        for p in &ready {
            staged.extend(files.read(&p.file).await?);
        }
        let app_id = cp.app_id.clone();
        let net = net_changes(&self.schema()?, &staged, &self.config.primary_key)?;
        self.merge_into_table(net, Some((app_id, checkpoint)))
            .await?;
        let files = self.checkpoints.as_ref().and_then(|c| c.files.as_ref());
        for p in &ready {
            if let Some(files) = files {
                files.delete(&p.file).await;
            }
        }
        tracing::debug!(sink = %self.name, checkpoint, "merged on checkpoint");
        Ok(())
    }
}

#[async_trait]
impl Sink for DeltaUpsertSink {
    /// Takes an updating result keyed by exactly the `primary_key` columns, or append-only rows
    /// (each the new row of its key).
    fn accepts(&self, schema: &Schema, mode: &StreamMode) -> std::result::Result<(), String> {
        check_primary_key(schema, mode, &self.config.primary_key, "one table row")
    }

    fn status(&self) -> Option<Arc<ServiceStatus>> {
        Some(self.status.clone())
    }

    async fn open(&mut self, schema: SchemaRef) -> Result<()> {
        let data = if has_change_column(&schema) {
            let columns: Vec<usize> = (0..schema.fields().len() - 1).collect();
            Arc::new(schema.project(&columns)?)
        } else {
            schema
        };
        let table = open_table(&self.name, &mut self.config, &data).await?;
        if let Some(cp) = self.checkpoints.as_mut() {
            cp.files = Some(ChangeFiles::new(&table, &cp.app_id, self.status.clone()));
        }
        self.table = Some(table);
        self.changes_schema = Some(changes_schema(&data));
        self.last_commit = Instant::now();
        Ok(())
    }

    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
        let changes = to_changes(&batch)?;
        self.buffered_rows += changes.num_rows() as u64;
        self.buffered_bytes += changes.get_array_memory_size();
        self.changes.push(changes);
        if self.checkpoints.is_none() && self.buffered_bytes as u64 >= self.config.max_buffer_bytes
        {
            self.merge_buffered().await?;
        }
        Ok(())
    }

    async fn maintain(&mut self) -> Result<()> {
        if self.checkpoints.is_none() && self.last_commit.elapsed() >= self.config.commit_interval {
            self.merge_buffered().await?;
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<SinkSummary> {
        if self.checkpoints.is_none() {
            self.merge_buffered().await?;
        }
        Ok(self.summary.clone())
    }

    fn enable_checkpoints(&mut self, pipeline: &str) {
        self.checkpoints = Some(Checkpointed {
            app_id: format!("laketide:{pipeline}:{}", self.name),
            files: None,
            prepared: Vec::new(),
        });
    }

    /// Stages the net changes since the last checkpoint in one file; the state lists every
    /// checkpoint staged and not yet merged.
    async fn prepare_commit(&mut self, checkpoint: u64) -> Result<NodeState> {
        let rows = std::mem::take(&mut self.buffered_rows);
        let net = self.take_net_changes()?;
        let cp = self
            .checkpoints
            .as_mut()
            .ok_or_else(|| EngineError::Internal("prepare without checkpoints".into()))?;
        if net.num_rows() > 0 {
            let files = cp
                .files
                .as_ref()
                .ok_or_else(|| EngineError::Internal("Delta sink prepared before open".into()))?;
            let file = files.write(checkpoint, &net).await?;
            cp.prepared.push(PreparedMerge {
                checkpoint,
                rows,
                file,
            });
        }
        NodeState::json(&cp.prepared)
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<()> {
        let Some(cp) = self.checkpoints.as_mut() else {
            return Ok(());
        };
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut cp.prepared)
            .into_iter()
            .partition(|p| p.checkpoint <= checkpoint);
        cp.prepared = later;
        self.merge_prepared(checkpoint, ready).await
    }

    /// Merges the checkpoints staged up to `checkpoint` that the table's `txn` version for
    /// this pipeline and sink does not cover yet (the crash came before their merge).
    async fn recover(&mut self, checkpoint: u64, state: NodeState) -> Result<()> {
        let prepared: Vec<PreparedMerge> = state.to_json()?.unwrap_or_default();
        if prepared.is_empty() {
            return Ok(());
        }
        let app_id = self
            .checkpoints
            .as_ref()
            .map(|c| c.app_id.clone())
            .ok_or_else(|| EngineError::Internal("recovery without checkpoints".into()))?;
        let table = self
            .table
            .as_ref()
            .ok_or_else(|| EngineError::Internal("Delta sink recovered before open".into()))?;
        let done = table
            .snapshot()
            .map_err(|e| self.error("reading", e))?
            .transaction_version(table.log_store().as_ref(), &app_id)
            .await
            .map_err(|e| self.error("reading", e))?
            .unwrap_or(-1);
        let missing: Vec<PreparedMerge> = prepared
            .into_iter()
            .filter(|p| p.checkpoint as i64 > done)
            .collect();
        if !missing.is_empty() {
            tracing::info!(sink = %self.name, checkpoint, "merging the changes of the recovered checkpoint");
            self.merge_prepared(checkpoint, missing).await?;
        }
        // Everything the recovered checkpoint staged is merged now; other files were staged
        // for checkpoints that were never stored.
        if let Some(files) = self.checkpoints.as_ref().and_then(|c| c.files.as_ref()) {
            files.delete_all().await;
        }
        Ok(())
    }
}
