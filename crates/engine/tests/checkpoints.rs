//! Checkpoints through the runner: barriers aligned across a union, operator and source state
//! restored after a failure, and a two-phase sink that ends with every row committed once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use laketide_engine::checkpoint::{CheckpointSettings, CheckpointStore, Recovery};
use laketide_engine::operators::UnionOperator;
use laketide_engine::{
    Dataflow, EngineError, NodeState, Operator, Output, Result, RunOptions, Sink, SinkSummary,
    Source, SourcePoll, WatermarkStrategy,
};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]))
}

/// Emits ids `base + 0 .. base + count` in batches of 7, pausing between batches; fails once
/// after `fail_after` ids when the shared switch says so. Its position is the next offset.
struct Numbers {
    base: i64,
    count: i64,
    next: i64,
    fail_after: Option<i64>,
    failed: Arc<AtomicBool>,
}

#[async_trait]
impl Source for Numbers {
    fn schema(&self) -> SchemaRef {
        schema()
    }
    async fn open(&mut self) -> Result<()> {
        Ok(())
    }
    async fn poll_next(&mut self) -> Result<SourcePoll> {
        if let Some(limit) = self.fail_after
            && self.next >= limit
            && !self.failed.swap(true, Ordering::SeqCst)
        {
            return Err(EngineError::External {
                context: "numbers".into(),
                source: "injected failure".into(),
            });
        }
        if self.next >= self.count {
            return Ok(SourcePoll::Finished);
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
        let end = (self.next + 7).min(self.count);
        let ids: Vec<i64> = (self.next..end).map(|i| self.base + i).collect();
        self.next = end;
        Ok(SourcePoll::Batch {
            split: "all".into(),
            batch: RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(ids))])?,
        })
    }
    fn snapshot(&mut self) -> Result<NodeState> {
        NodeState::json(&self.next)
    }
    fn restore(&mut self, state: NodeState) -> Result<()> {
        self.next = state.to_json()?.unwrap_or(0);
        Ok(())
    }
}

/// Passes rows through and keeps a running row count as its state; at the end it emits the
/// count as one row with id -count.
struct RunningCount {
    count: i64,
}

impl Operator for RunningCount {
    fn output_schema(&self) -> SchemaRef {
        schema()
    }
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        self.count += batch.num_rows() as i64;
        out.batch(batch);
        Ok(())
    }
    fn finish(&mut self, out: &mut Output) -> Result<()> {
        out.batch(RecordBatch::try_new(
            schema(),
            vec![Arc::new(Int64Array::from(vec![-self.count]))],
        )?);
        Ok(())
    }
    fn snapshot(&mut self) -> Result<NodeState> {
        NodeState::json(&self.count)
    }
    fn restore(&mut self, state: NodeState) -> Result<()> {
        self.count = state.to_json()?.unwrap_or(0);
        Ok(())
    }
}

/// The durable side of the test sink: ids committed, per checkpoint.
#[derive(Default, Clone)]
struct Table {
    commits: Arc<Mutex<BTreeMap<u64, Vec<i64>>>>,
}

impl Table {
    fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .commits
            .lock()
            .unwrap()
            .values()
            .flatten()
            .copied()
            .collect();
        ids.sort();
        ids
    }
}

/// A two-phase sink: rows wait in `pending`, are prepared per checkpoint and committed into
/// the table; recovery commits what the table does not have yet.
struct TwoPhaseSink {
    table: Table,
    pending: Vec<i64>,
    prepared: Vec<(u64, Vec<i64>)>,
    enabled: bool,
}

#[async_trait]
impl Sink for TwoPhaseSink {
    async fn open(&mut self, _schema: SchemaRef) -> Result<()> {
        Ok(())
    }
    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
        let ids = batch.column(0).as_primitive::<Int64Type>();
        self.pending.extend((0..ids.len()).map(|i| ids.value(i)));
        Ok(())
    }
    fn enable_checkpoints(&mut self, _pipeline: &str) {
        self.enabled = true;
    }
    async fn prepare_commit(&mut self, checkpoint: u64) -> Result<NodeState> {
        let rows = std::mem::take(&mut self.pending);
        self.prepared.push((checkpoint, rows));
        NodeState::json(&self.prepared)
    }
    async fn commit(&mut self, checkpoint: u64) -> Result<()> {
        let mut table = self.table.commits.lock().unwrap();
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.prepared)
            .into_iter()
            .partition(|(id, _)| *id <= checkpoint);
        self.prepared = later;
        for (id, rows) in ready {
            assert!(
                table.insert(id, rows).is_none(),
                "checkpoint {id} committed twice"
            );
        }
        Ok(())
    }
    async fn recover(&mut self, _checkpoint: u64, state: NodeState) -> Result<()> {
        let prepared: Vec<(u64, Vec<i64>)> = state.to_json()?.unwrap_or_default();
        let mut table = self.table.commits.lock().unwrap();
        for (id, rows) in prepared {
            table.entry(id).or_insert(rows);
        }
        Ok(())
    }
    async fn close(&mut self) -> Result<SinkSummary> {
        assert!(
            !self.enabled || self.pending.is_empty(),
            "with checkpoints every row arrives before the last barrier"
        );
        Ok(SinkSummary::default())
    }
}

fn pipeline(table: &Table, failed: &Arc<AtomicBool>, fail_after: Option<i64>) -> Dataflow {
    let mut flow = Dataflow::new();
    let a = flow.add_source(
        "a",
        "numbers",
        Box::new(Numbers {
            base: 0,
            count: 700,
            next: 0,
            fail_after,
            failed: failed.clone(),
        }),
        WatermarkStrategy::ProcessingTime,
        None,
    );
    let b = flow.add_source(
        "b",
        "numbers",
        Box::new(Numbers {
            base: 10_000,
            count: 500,
            next: 0,
            fail_after: None,
            failed: failed.clone(),
        }),
        WatermarkStrategy::ProcessingTime,
        None,
    );
    let u = flow
        .add_operator(
            "union",
            "a + b",
            Box::new(UnionOperator::new(schema())),
            vec![a, b],
        )
        .unwrap();
    let c = flow
        .add_operator(
            "count",
            "running count",
            Box::new(RunningCount { count: 0 }),
            vec![u],
        )
        .unwrap();
    flow.add_sink(
        "out",
        "two-phase",
        Box::new(TwoPhaseSink {
            table: table.clone(),
            pending: Vec::new(),
            prepared: Vec::new(),
            enabled: false,
        }),
        c,
    )
    .unwrap();
    flow
}

fn options(store: &CheckpointStore, recovery: Recovery) -> RunOptions {
    RunOptions {
        checkpoints: Some(CheckpointSettings {
            store: store.clone(),
            interval: Duration::from_millis(30),
            pipeline_name: "test".into(),
            fingerprint: "shape-1".into(),
            recovery,
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_failed_run_resumes_from_its_last_checkpoint_and_commits_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::local(dir.path()).unwrap();
    let table = Table::default();
    let failed = Arc::new(AtomicBool::new(false));

    let first = laketide_engine::run(
        pipeline(&table, &failed, Some(400)),
        options(&store, Recovery::Resume),
    )
    .await;
    assert!(first.is_err(), "the injected failure stops the run");
    let stored = store
        .latest()
        .await
        .unwrap()
        .expect("checkpoints were taken");
    assert!(
        !table.ids().is_empty(),
        "checkpoints were committed before the failure"
    );

    let second = laketide_engine::run(
        pipeline(&table, &failed, Some(400)),
        options(&store, Recovery::Resume),
    )
    .await
    .unwrap();
    assert_eq!(
        second
            .totals
            .checkpoint
            .as_ref()
            .and_then(|c| c.restored_from),
        Some(stored.id)
    );
    let mut expected: Vec<i64> = (0..700).chain(10_000..10_500).collect();
    // The running count survived the failure: it counts every row once.
    expected.push(-1200);
    expected.sort();
    assert_eq!(table.ids(), expected);

    // A changed pipeline is refused unless told what to do with the state.
    let mut changed = options(&store, Recovery::Resume);
    changed.checkpoints.as_mut().unwrap().fingerprint = "shape-2".into();
    let refused = laketide_engine::run(pipeline(&Table::default(), &failed, None), changed)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("--from-scratch"), "{refused}");
    // Keeping positions only: every source is at its end, the count starts empty.
    let mut keep = options(&store, Recovery::KeepSourcePositions);
    keep.checkpoints.as_mut().unwrap().fingerprint = "shape-2".into();
    let kept = Table::default();
    laketide_engine::run(pipeline(&kept, &failed, None), keep)
        .await
        .unwrap();
    assert_eq!(kept.ids(), vec![0]);
    // From scratch: everything again, with checkpoint numbers still increasing.
    let fresh = Table::default();
    let before = store.latest().await.unwrap().unwrap().id;
    laketide_engine::run(
        pipeline(&fresh, &failed, None),
        options(&store, Recovery::FromScratch),
    )
    .await
    .unwrap();
    assert_eq!(fresh.ids(), expected);
    assert!(store.latest().await.unwrap().unwrap().id > before);
}
