//! Checkpoints through the runner: barriers aligned across a union, operator and source state
//! restored after a failure, and a two-phase sink that ends with every row committed once;
//! an updating aggregate's incremental checkpoints restored after a failure.

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
    Dataflow, EngineError, KeyedTable, NodeState, Operator, Output, Result, RunOptions, Sink,
    SinkSummary, Source, SourcePoll, StreamMode, WatermarkStrategy, change_kinds, kind_at,
    schema_with_change,
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
    pipeline_with(table, failed, fail_after, None, "running count")
}

/// The union pipeline, with `count` describing its running count, and with `extra`, another
/// statement first: a running count of source `a` into its own sink.
fn pipeline_with(
    table: &Table,
    failed: &Arc<AtomicBool>,
    fail_after: Option<i64>,
    extra: Option<&Table>,
    count: &str,
) -> Dataflow {
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
    if let Some(extra) = extra {
        let c = flow
            .add_operator(
                "count",
                "running count of a",
                Box::new(RunningCount { count: 0 }),
                vec![a],
            )
            .unwrap();
        flow.add_sink("extra", "two-phase", Box::new(two_phase(extra)), c)
            .unwrap();
    }
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
        .add_operator("count", count, Box::new(RunningCount { count: 0 }), vec![u])
        .unwrap();
    flow.add_sink("out", "two-phase", Box::new(two_phase(table)), c)
        .unwrap();
    flow
}

fn two_phase(table: &Table) -> TwoPhaseSink {
    TwoPhaseSink {
        table: table.clone(),
        pending: Vec::new(),
        prepared: Vec::new(),
        enabled: false,
    }
}

fn options(store: &CheckpointStore, recovery: Recovery) -> RunOptions {
    RunOptions {
        checkpoints: Some(CheckpointSettings {
            store: store.clone(),
            interval: Duration::from_millis(30),
            pipeline_name: "test".into(),
            fingerprint: "shape-1".into(),
            recovery,
            incremental: true,
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

    // Another statement was added before the others: the nodes of the first keep their
    // stable ids and fingerprints, so their state is restored although their positions moved.
    let extra = Table::default();
    let second = laketide_engine::run(
        pipeline_with(&table, &failed, Some(400), Some(&extra), "running count"),
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
    // The new statement started empty and read source `a` from where it was.
    let seen = extra.ids();
    let rows = seen.iter().filter(|id| **id >= 0).count() as i64;
    assert!(rows < 700, "only the rows after the checkpoint: {rows}");
    assert!(seen.contains(&-rows), "its own count: {seen:?}");

    // A changed query is refused unless told what to do with its state, naming the node.
    let changed = pipeline_with(&Table::default(), &failed, None, None, "running count v2");
    let refused = laketide_engine::run(changed, options(&store, Recovery::Resume))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("--from-scratch") && refused.contains("out[0]/count"),
        "{refused}"
    );
    // Keeping positions only: every source is at its end, the count starts empty.
    let kept = Table::default();
    let changed = pipeline_with(&kept, &failed, None, None, "running count v2");
    laketide_engine::run(changed, options(&store, Recovery::KeepSourcePositions))
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

/// The durable side of the changelog sink: the checkpoints applied, and the current rows
/// (key → total, count).
#[derive(Default, Clone)]
struct Totals {
    applied: Arc<Mutex<(std::collections::BTreeSet<u64>, BTreeMap<i64, (i64, i64)>)>>,
}

impl Totals {
    /// Applies checkpoint `id`'s changes unless it was applied before.
    fn apply(&self, id: u64, batches: &[RecordBatch]) {
        let mut guard = self.applied.lock().unwrap();
        let (applied, table) = &mut *guard;
        if !applied.insert(id) {
            return;
        }
        for b in batches {
            let kinds = change_kinds(b).unwrap();
            let key = b.column(0).as_primitive::<Int64Type>();
            let sum = b.column(1).as_primitive::<Int64Type>();
            let n = b.column(2).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                if kind_at(kinds, i).unwrap().is_retraction() {
                    table.remove(&key.value(i));
                } else {
                    table.insert(key.value(i), (sum.value(i), n.value(i)));
                }
            }
        }
    }

    fn rows(&self) -> BTreeMap<i64, (i64, i64)> {
        self.applied.lock().unwrap().1.clone()
    }
}

/// A two-phase sink of an updating result keyed by its first column: changes wait per
/// checkpoint (and are saved with it) and are applied when it commits, or on recovery.
struct ChangelogSink {
    totals: Totals,
    pending: Vec<RecordBatch>,
    prepared: Vec<(u64, Vec<RecordBatch>)>,
}

#[async_trait]
impl Sink for ChangelogSink {
    fn accepts(&self, _schema: &Schema, _mode: &StreamMode) -> std::result::Result<(), String> {
        Ok(())
    }
    async fn open(&mut self, _schema: SchemaRef) -> Result<()> {
        Ok(())
    }
    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
        self.pending.push(batch);
        Ok(())
    }
    async fn prepare_commit(&mut self, checkpoint: u64) -> Result<NodeState> {
        let batches = std::mem::take(&mut self.pending);
        self.prepared.push((checkpoint, batches));
        let mut state = NodeState::empty();
        for (id, batches) in &self.prepared {
            for (i, b) in batches.iter().enumerate() {
                state = state.with_table(format!("{id:08}-{i:06}"), b.clone());
            }
        }
        Ok(state)
    }
    async fn commit(&mut self, checkpoint: u64) -> Result<()> {
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.prepared)
            .into_iter()
            .partition(|(id, _)| *id <= checkpoint);
        self.prepared = later;
        for (id, batches) in ready {
            self.totals.apply(id, &batches);
        }
        Ok(())
    }
    async fn recover(&mut self, checkpoint: u64, state: NodeState) -> Result<()> {
        let mut prepared: BTreeMap<u64, Vec<RecordBatch>> = BTreeMap::new();
        for (name, batch) in state.tables() {
            let id: u64 = name[..8].parse().unwrap();
            prepared.entry(id).or_default().push(batch.clone());
        }
        for (id, batches) in prepared.range(..=checkpoint) {
            self.totals.apply(*id, batches);
        }
        Ok(())
    }
    async fn close(&mut self) -> Result<SinkSummary> {
        Ok(SinkSummary::default())
    }
}

/// `SELECT id % 2000, sum(id), count(*) FROM numbers GROUP BY id % 2000` into a changelog
/// sink.
fn totals_pipeline(totals: &Totals, failed: &Arc<AtomicBool>, fail_after: Option<i64>) -> Dataflow {
    use datafusion::functions_aggregate::{count::count_udaf, sum::sum_udaf};
    use datafusion::logical_expr::Operator as Op;
    use datafusion::physical_expr::PhysicalExpr;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
    use laketide_engine::operators::{AggregateSpec, UpdatingAggregate};
    let mut flow = Dataflow::new();
    let source = flow.add_source(
        "numbers",
        "numbers",
        Box::new(Numbers {
            base: 0,
            count: 3000,
            next: 0,
            fail_after,
            failed: failed.clone(),
        }),
        WatermarkStrategy::ProcessingTime,
        None,
    );
    let id: Arc<dyn PhysicalExpr> = Arc::new(Column::new("id", 0));
    let key: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
        id.clone(),
        Op::Modulo,
        Arc::new(Literal::new(2000i64.into())),
    ));
    let spec = |f, alias: &str| AggregateSpec {
        function: Arc::new(
            AggregateExprBuilder::new(f, vec![id.clone()])
                .schema(schema())
                .alias(alias)
                .build()
                .unwrap(),
        ),
        filter: None,
    };
    let output = schema_with_change(&Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("total", DataType::Int64, true),
        Field::new("n", DataType::Int64, true),
    ]));
    let aggregate = UpdatingAggregate::new(
        &schema(),
        vec![key],
        vec![spec(sum_udaf(), "total"), spec(count_udaf(), "n")],
        output,
        Duration::ZERO,
    )
    .unwrap();
    let node = flow
        .add_operator(
            "totals",
            "totals by id % 2000",
            Box::new(aggregate),
            vec![source],
        )
        .unwrap();
    flow.add_sink(
        "out",
        "changelog",
        Box::new(ChangelogSink {
            totals: totals.clone(),
            pending: Vec::new(),
            prepared: Vec::new(),
        }),
        node,
    )
    .unwrap();
    flow
}

/// The parts of the aggregate's keyed table in the newest stored checkpoint.
async fn parts_in_latest(store: &CheckpointStore) -> usize {
    let latest = store
        .latest()
        .await
        .unwrap()
        .expect("checkpoints were taken");
    let (_, state) = latest
        .nodes
        .iter()
        .find(|(k, _)| k.name == "totals")
        .expect("the aggregate's state");
    match state.keyed_table("results") {
        Some(KeyedTable::Restored { parts, .. }) => parts.len(),
        _ => 0,
    }
}

#[tokio::test]
async fn an_updating_aggregate_recovers_from_incremental_checkpoints_exactly_once() {
    let mut expected = BTreeMap::new();
    for id in 0..3000i64 {
        let e = expected.entry(id % 2000).or_insert((0, 0));
        e.0 += id;
        e.1 += 1;
    }
    // Checkpoint timing varies: run until the failure left a chain (a full table and deltas)
    // as the newest checkpoint, so that the restore reads one.
    let mut restored_chains = 0;
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::local(dir.path()).unwrap();
        let totals = Totals::default();
        let failed = Arc::new(AtomicBool::new(false));
        let first = laketide_engine::run(
            totals_pipeline(&totals, &failed, Some(2000)),
            options(&store, Recovery::Resume),
        )
        .await;
        assert!(first.is_err(), "the injected failure stops the run");
        let chained = parts_in_latest(&store).await > 1;
        laketide_engine::run(
            totals_pipeline(&totals, &failed, Some(2000)),
            options(&store, Recovery::Resume),
        )
        .await
        .unwrap();
        assert_eq!(totals.rows(), expected);
        if chained {
            restored_chains += 1;
            break;
        }
    }
    assert_eq!(restored_chains, 1, "no run restored a chain of deltas");
}
