//! The latest rows that reached each sink, for the dashboard's charts and tables. An
//! updating sink's rows are its current rows by key ([`CurrentRows`]), not a tail of changes.
//!
//! [`RecordingSink`] wraps a pipeline's sink: it keeps a copy of the last rows it receives in
//! [`LatestResults`] and passes everything on unchanged. The rows are those handed to the sink,
//! which with checkpoints become visible in the sink's target at the next commit. The copy is
//! kept as Arrow slices (cheap: shared buffers) and encoded as JSON only when a page asks.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use laketide_engine::{NodeState, Result, ServiceStatus, Sink, SinkSummary, StreamMode, Watermark};
use serde::Serialize;
use serde_json::Value;

use super::current_rows::CurrentRows;
use super::rows::{Column, columns, json_rows, tail};

/// The rows kept per sink: enough for a chart of recent windows.
pub const ROWS_KEPT: usize = 1_000;

/// The latest rows of one sink.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkRows {
    /// Changes whenever rows arrive, so that watchers send only what changed.
    pub version: u64,
    /// Rows received in all.
    pub total: u64,
    /// The sink's columns.
    pub columns: Vec<Column>,
    /// The last rows received, oldest first, at most [`ROWS_KEPT`]; for an updating result,
    /// its current rows, least recently changed first.
    pub rows: VecDeque<Vec<Value>>,
    /// Whether `rows` are an updating result's current rows by key.
    pub current: bool,
}

/// What is kept of one sink's rows: the tails of its last batches, holding at least
/// [`ROWS_KEPT`] rows when that many arrived.
#[derive(Debug, Default)]
struct SinkTail {
    version: u64,
    total: u64,
    columns: Vec<Column>,
    batches: VecDeque<RecordBatch>,
    rows: usize,
    /// An updating sink's current rows (then `batches` stays empty).
    current: Option<CurrentRows>,
}

/// The latest rows of every sink, shared by the recording sinks and the web server.
#[derive(Debug, Clone, Default)]
pub struct LatestResults {
    sinks: Arc<Mutex<BTreeMap<String, SinkTail>>>,
}

impl LatestResults {
    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, SinkTail>) -> T) -> T {
        f(&mut self.sinks.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn set_columns(&self, sink: &str, schema: &SchemaRef, mode: &StreamMode) {
        self.with(|sinks| {
            let entry = sinks.entry(sink.to_string()).or_default();
            entry.columns = columns(schema);
            if let StreamMode::Updating { key } = mode {
                entry.columns.pop();
                entry.current = Some(CurrentRows::new(key.clone(), ROWS_KEPT));
            }
        });
    }

    fn record(&self, sink: &str, batch: &RecordBatch) {
        if batch.num_rows() == 0 {
            return;
        }
        let applied = self.with(|sinks| {
            let entry = sinks.get_mut(sink)?;
            let current = entry.current.as_mut()?;
            entry.version += 1;
            entry.total += batch.num_rows() as u64;
            Some(current.apply(batch))
        });
        match applied {
            Some(Err(e)) => {
                tracing::warn!(sink, error = %e, "could not show rows on the dashboard");
                return;
            }
            Some(Ok(())) => return,
            None => {}
        }
        let kept = tail(batch, ROWS_KEPT);
        self.with(|sinks| {
            let entry = sinks.entry(sink.to_string()).or_default();
            entry.version += 1;
            entry.total += batch.num_rows() as u64;
            entry.rows += kept.num_rows();
            entry.batches.push_back(kept);
            while let Some(oldest) = entry.batches.front() {
                if entry.rows - oldest.num_rows() < ROWS_KEPT {
                    break;
                }
                entry.rows -= oldest.num_rows();
                entry.batches.pop_front();
            }
        });
    }

    /// The version of every sink's rows.
    pub fn versions(&self) -> BTreeMap<String, u64> {
        self.with(|sinks| sinks.iter().map(|(k, v)| (k.clone(), v.version)).collect())
    }

    /// One sink's latest rows, encoded for the page.
    pub fn get(&self, sink: &str) -> Option<datafusion::arrow::error::Result<SinkRows>> {
        let (version, total, columns, batches, current) = self.with(|sinks| {
            sinks.get(sink).map(|t| {
                (
                    t.version,
                    t.total,
                    t.columns.clone(),
                    t.batches.iter().cloned().collect::<Vec<_>>(),
                    t.current
                        .as_ref()
                        .map(|c| c.rows().cloned().collect::<VecDeque<_>>()),
                )
            })
        })?;
        if let Some(rows) = current {
            return Some(Ok(SinkRows {
                version,
                total,
                columns,
                rows,
                current: true,
            }));
        }
        let encode = || {
            let mut rows = VecDeque::new();
            for batch in &batches {
                rows.extend(json_rows(batch)?);
            }
            let excess = rows.len().saturating_sub(ROWS_KEPT);
            rows.drain(..excess);
            Ok(SinkRows {
                version,
                total,
                columns,
                rows,
                current: false,
            })
        };
        Some(encode())
    }
}

/// A sink that records the rows it receives in [`LatestResults`] and forwards everything to
/// the sink it wraps: same contract, same errors, same checkpoint behaviour.
pub struct RecordingSink {
    name: String,
    inner: Box<dyn Sink>,
    results: LatestResults,
    mode: StreamMode,
}

impl RecordingSink {
    /// Wraps `inner`, the sink named `name`, which receives rows in `mode`.
    pub fn new(
        name: &str,
        mode: &StreamMode,
        inner: Box<dyn Sink>,
        results: LatestResults,
    ) -> Self {
        RecordingSink {
            name: name.to_string(),
            inner,
            results,
            mode: mode.clone(),
        }
    }
}

#[async_trait]
impl Sink for RecordingSink {
    fn accepts(
        &self,
        schema: &datafusion::arrow::datatypes::Schema,
        mode: &laketide_engine::StreamMode,
    ) -> std::result::Result<(), String> {
        self.inner.accepts(schema, mode)
    }

    fn status(&self) -> Option<Arc<ServiceStatus>> {
        self.inner.status()
    }

    async fn open(&mut self, schema: SchemaRef) -> Result<()> {
        self.results.set_columns(&self.name, &schema, &self.mode);
        self.inner.open(schema).await
    }

    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
        self.results.record(&self.name, &batch);
        self.inner.write_batch(batch).await
    }

    async fn on_watermark(&mut self, watermark: Watermark) -> Result<()> {
        self.inner.on_watermark(watermark).await
    }

    async fn maintain(&mut self) -> Result<()> {
        self.inner.maintain().await
    }

    fn enable_checkpoints(&mut self, pipeline: &str) {
        self.inner.enable_checkpoints(pipeline)
    }

    async fn prepare_commit(&mut self, checkpoint: u64) -> Result<NodeState> {
        self.inner.prepare_commit(checkpoint).await
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<()> {
        self.inner.commit(checkpoint).await
    }

    async fn recover(&mut self, checkpoint: u64, state: NodeState) -> Result<()> {
        self.inner.recover(checkpoint, state).await
    }

    async fn close(&mut self) -> Result<SinkSummary> {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    /// A sink that logs every call it gets.
    struct Logging(Arc<Mutex<Vec<String>>>, Arc<ServiceStatus>);

    impl Logging {
        fn log(&self, call: String) {
            self.0.lock().unwrap().push(call);
        }
    }

    #[async_trait]
    impl Sink for Logging {
        fn status(&self) -> Option<Arc<ServiceStatus>> {
            Some(self.1.clone())
        }
        async fn open(&mut self, _schema: SchemaRef) -> Result<()> {
            self.log("open".into());
            Ok(())
        }
        async fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
            self.log(format!("write {}", batch.num_rows()));
            Ok(())
        }
        async fn on_watermark(&mut self, watermark: Watermark) -> Result<()> {
            self.log(format!("watermark {watermark:?}"));
            Ok(())
        }
        async fn maintain(&mut self) -> Result<()> {
            self.log("maintain".into());
            Ok(())
        }
        fn enable_checkpoints(&mut self, pipeline: &str) {
            self.log(format!("enable {pipeline}"));
        }
        async fn prepare_commit(&mut self, checkpoint: u64) -> Result<NodeState> {
            self.log(format!("prepare {checkpoint}"));
            Ok(NodeState::empty())
        }
        async fn commit(&mut self, checkpoint: u64) -> Result<()> {
            self.log(format!("commit {checkpoint}"));
            Ok(())
        }
        async fn recover(&mut self, checkpoint: u64, _state: NodeState) -> Result<()> {
            self.log(format!("recover {checkpoint}"));
            Ok(())
        }
        async fn close(&mut self) -> Result<SinkSummary> {
            self.log("close".into());
            Ok(SinkSummary {
                rows_written: 7,
                commits: 1,
            })
        }
    }

    #[tokio::test]
    async fn keeps_the_last_rows_and_forwards_every_call() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let results = LatestResults::default();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(ServiceStatus::default());
        let inner = Logging(calls.clone(), status.clone());
        let mut sink = RecordingSink::new(
            "out",
            &StreamMode::AppendOnly,
            Box::new(inner),
            results.clone(),
        );
        assert!(Arc::ptr_eq(&sink.status().unwrap(), &status));
        sink.enable_checkpoints("p");
        sink.open(schema.clone()).await.unwrap();
        sink.recover(3, NodeState::empty()).await.unwrap();
        for start in [0i64, 600] {
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from_iter_values(start..start + 600))],
            )
            .unwrap();
            sink.write_batch(batch).await.unwrap();
        }
        sink.on_watermark(Watermark::EventTime(5)).await.unwrap();
        sink.maintain().await.unwrap();
        sink.prepare_commit(4).await.unwrap();
        sink.commit(4).await.unwrap();
        assert_eq!(sink.close().await.unwrap().rows_written, 7);
        assert_eq!(
            *calls.lock().unwrap(),
            vec![
                "enable p",
                "open",
                "recover 3",
                "write 600",
                "write 600",
                "watermark EventTime(5)",
                "maintain",
                "prepare 4",
                "commit 4",
                "close"
            ]
        );
        let rows = results.get("out").unwrap().unwrap();
        assert_eq!((rows.version, rows.total), (2, 1_200));
        assert_eq!(rows.rows.len(), ROWS_KEPT);
        assert_eq!(rows.rows.front().unwrap()[0], Value::from(200));
        assert_eq!(rows.rows.back().unwrap()[0], Value::from(1_199));
        assert_eq!(rows.columns[0].name, "n");
    }

    #[tokio::test]
    async fn an_updating_sink_shows_its_current_rows_by_key() {
        use laketide_engine::{ChangeKind, change_array, schema_with_change};
        let schema = schema_with_change(&Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let results = LatestResults::default();
        let inner = Logging(Arc::default(), Arc::default());
        let mode = StreamMode::Updating { key: vec![0] };
        let mut sink = RecordingSink::new("live", &mode, Box::new(inner), results.clone());
        sink.open(schema.clone()).await.unwrap();
        let batch = |k: Vec<i64>, n: Vec<i64>, kinds: Vec<ChangeKind>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(k)),
                    Arc::new(Int64Array::from(n)),
                    Arc::new(change_array(kinds)),
                ],
            )
            .unwrap()
        };
        use ChangeKind::*;
        sink.write_batch(batch(vec![1, 2], vec![1, 1], vec![Insert, Insert]))
            .await
            .unwrap();
        sink.write_batch(batch(
            vec![1, 1],
            vec![1, 2],
            vec![UpdateBefore, UpdateAfter],
        ))
        .await
        .unwrap();
        let rows = results.get("live").unwrap().unwrap();
        assert!(rows.current);
        assert_eq!(rows.columns.len(), 2, "no change column");
        assert_eq!(rows.total, 4);
        let shown: Vec<String> = rows
            .rows
            .iter()
            .map(|r| Value::Array(r.clone()).to_string())
            .collect();
        assert_eq!(shown, vec!["[2,1]", "[1,2]"]);
    }
}
