//! The runner with scripted sources: watermarks combine as a minimum across inputs, idle
//! inputs stop holding them back, bounded runs flush, and errors stop the pipeline.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::{Int64Array, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_expr::expressions::Column;
use laketide_engine::operators::UnionOperator;
use laketide_engine::{
    Dataflow, EngineError, Operator, Output, Result, RunOptions, Sink, SinkSummary, Source,
    SourcePoll, SplitId, Watermark, WatermarkStrategy,
};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
    ]))
}

fn batch(times_ms: &[i64]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..times_ms.len() as i64)),
            Arc::new(TimestampMillisecondArray::from(times_ms.to_vec())),
        ],
    )
    .unwrap()
}

enum Step {
    Batch(&'static str, Vec<i64>),
    /// Returns `Idle` this many times, 10 ms apart.
    Idle(usize),
    Fail,
}

struct ScriptedSource {
    steps: VecDeque<Step>,
    idles_left: usize,
    /// Splits delivered so far: while the script idles they have nothing more to deliver.
    splits: Vec<String>,
    /// When the current run of idle polls began.
    idle_since: Option<Instant>,
}

impl ScriptedSource {
    fn new(steps: Vec<Step>) -> Box<Self> {
        Box::new(ScriptedSource {
            steps: steps.into(),
            idles_left: 0,
            splits: Vec::new(),
            idle_since: None,
        })
    }
}

#[async_trait]
impl Source for ScriptedSource {
    fn schema(&self) -> SchemaRef {
        schema()
    }

    async fn open(&mut self) -> Result<()> {
        Ok(())
    }

    fn caught_up_splits(&self) -> Vec<(SplitId, Instant)> {
        match self.idle_since {
            Some(since) => self.splits.iter().map(|s| (s.clone(), since)).collect(),
            None => Vec::new(),
        }
    }

    async fn poll_next(&mut self) -> Result<SourcePoll> {
        if self.idles_left > 0 {
            self.idles_left -= 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            return Ok(SourcePoll::Idle);
        }
        match self.steps.pop_front() {
            None => Ok(SourcePoll::Finished),
            Some(Step::Batch(split, times)) => {
                self.idle_since = None;
                if !self.splits.iter().any(|s| s == split) {
                    self.splits.push(split.to_string());
                }
                Ok(SourcePoll::Batch {
                    split: split.to_string(),
                    batch: batch(&times),
                })
            }
            Some(Step::Idle(n)) => {
                self.idles_left = n;
                self.idle_since.get_or_insert_with(Instant::now);
                Ok(SourcePoll::Idle)
            }
            Some(Step::Fail) => Err(EngineError::User("scripted failure".into())),
        }
    }
}

#[derive(Default, Clone)]
struct Recorder {
    rows: Arc<Mutex<u64>>,
    watermarks: Arc<Mutex<Vec<Watermark>>>,
}

#[async_trait]
impl Sink for Recorder {
    async fn open(&mut self, _schema: SchemaRef) -> Result<()> {
        Ok(())
    }
    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
        *self.rows.lock().unwrap() += batch.num_rows() as u64;
        Ok(())
    }
    async fn on_watermark(&mut self, watermark: Watermark) -> Result<()> {
        self.watermarks.lock().unwrap().push(watermark);
        Ok(())
    }
    async fn close(&mut self) -> Result<SinkSummary> {
        Ok(SinkSummary {
            rows_written: *self.rows.lock().unwrap(),
            commits: 1,
        })
    }
}

fn event_time(idle_timeout_ms: u64) -> WatermarkStrategy {
    WatermarkStrategy::EventTime {
        expr: Arc::new(Column::new("ts", 1)),
        idle_timeout: Duration::from_millis(idle_timeout_ms),
    }
}

fn union_pipeline(
    a: Box<ScriptedSource>,
    b: Box<ScriptedSource>,
    strategy: WatermarkStrategy,
) -> (Dataflow, Recorder) {
    let mut flow = Dataflow::new();
    let sa = flow.add_source("a", "scripted", a, strategy.clone(), None);
    let sb = flow.add_source("b", "scripted", b, strategy, None);
    let u = flow
        .add_operator(
            "union",
            "a + b",
            Box::new(UnionOperator::new(schema())),
            vec![sa, sb],
        )
        .unwrap();
    let recorder = Recorder::default();
    flow.add_sink("out", "recorder", Box::new(recorder.clone()), u)
        .unwrap();
    (flow, recorder)
}

fn event_times(watermarks: &[Watermark]) -> Vec<i64> {
    watermarks
        .iter()
        .filter_map(|w| match w {
            Watermark::EventTime(t) if *t != i64::MAX => Some(t / 1_000_000),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn watermarks_are_the_minimum_over_inputs_and_idle_inputs_are_skipped() {
    // b sends one early batch and then goes quiet for far longer than the idle timeout, while
    // a keeps advancing: after the timeout the union follows a alone.
    let a = ScriptedSource::new(vec![
        Step::Batch("a", vec![100]),
        Step::Idle(3),
        Step::Batch("a", vec![200]),
        Step::Idle(20),
        Step::Batch("a", vec![300]),
        Step::Idle(20),
    ]);
    let b = ScriptedSource::new(vec![Step::Batch("b", vec![50]), Step::Idle(60)]);
    let (flow, recorder) = union_pipeline(a, b, event_time(100));
    let summary = laketide_engine::run(flow, RunOptions::default())
        .await
        .unwrap();
    assert_eq!(summary.totals.records_in, 4);
    let seen = event_times(&recorder.watermarks.lock().unwrap());
    assert_eq!(
        seen.first(),
        Some(&50),
        "the minimum of 100 and 50 first: {seen:?}"
    );
    assert!(
        seen.contains(&300),
        "after b idles, a's 300 passes: {seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "monotonic: {seen:?}");
    assert_eq!(
        recorder.watermarks.lock().unwrap().last(),
        Some(&Watermark::END)
    );
}

#[tokio::test]
async fn without_an_idle_timeout_a_quiet_input_holds_the_watermark() {
    let a = ScriptedSource::new(vec![
        Step::Batch("a", vec![100]),
        Step::Idle(5),
        Step::Batch("a", vec![300]),
    ]);
    let b = ScriptedSource::new(vec![Step::Batch("b", vec![50]), Step::Idle(10)]);
    let (flow, recorder) = union_pipeline(a, b, event_time(60_000));
    laketide_engine::run(flow, RunOptions::default())
        .await
        .unwrap();
    let seen = event_times(&recorder.watermarks.lock().unwrap());
    assert_eq!(
        seen,
        vec![50],
        "only b's watermark, until the end: {seen:?}"
    );
}

#[tokio::test]
async fn processing_time_follows_the_wall_clock() {
    let a = ScriptedSource::new(vec![Step::Batch("a", vec![1]), Step::Idle(3)]);
    let b = ScriptedSource::new(vec![Step::Batch("b", vec![2])]);
    let (flow, recorder) = union_pipeline(a, b, WatermarkStrategy::ProcessingTime);
    let before = chrono::Utc::now().timestamp_millis();
    laketide_engine::run(flow, RunOptions::default())
        .await
        .unwrap();
    let seen = event_times(&recorder.watermarks.lock().unwrap());
    assert!(
        !seen.is_empty() && seen.iter().all(|t| *t >= before - 1000),
        "wall-clock watermarks: {seen:?}"
    );
}

#[tokio::test]
async fn a_failing_source_fails_the_run_with_its_error() {
    let a = ScriptedSource::new(vec![Step::Batch("a", vec![1]), Step::Fail]);
    let b = ScriptedSource::new(vec![Step::Idle(100)]);
    let (flow, _) = union_pipeline(a, b, event_time(1000));
    let err = laketide_engine::run(flow, RunOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("scripted failure"), "{err}");
}

#[tokio::test]
async fn stopping_drains_and_closes_the_sinks() {
    let a = ScriptedSource::new(vec![Step::Batch("a", vec![1, 2, 3]), Step::Idle(100_000)]);
    let b = ScriptedSource::new(vec![Step::Idle(100_000)]);
    let (flow, recorder) = union_pipeline(a, b, event_time(1000));
    let options = RunOptions::default();
    let stop = options.stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.cancel();
    });
    let summary = laketide_engine::run(flow, options).await.unwrap();
    assert_eq!(summary.sinks[0].1.rows_written, 3);
    assert_eq!(*recorder.rows.lock().unwrap(), 3);
}

/// A union that also records each input's own watermarks, as a join would see them.
struct InputMarks {
    union: UnionOperator,
    seen: Arc<Mutex<Vec<(usize, Watermark)>>>,
}

impl Operator for InputMarks {
    fn output_schema(&self) -> SchemaRef {
        self.union.output_schema()
    }
    fn process_batch(&mut self, input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        self.union.process_batch(input, batch, out)
    }
    fn process_input_watermark(
        &mut self,
        input: usize,
        watermark: Watermark,
        _out: &mut Output,
    ) -> Result<()> {
        self.seen.lock().unwrap().push((input, watermark));
        Ok(())
    }
}

#[tokio::test]
async fn a_two_input_operator_sees_each_inputs_own_watermark() {
    // b stays behind a: the combined watermark follows b, but the operator sees a's too.
    let a = ScriptedSource::new(vec![
        Step::Batch("a", vec![100]),
        Step::Idle(2),
        Step::Batch("a", vec![200]),
        Step::Idle(2),
    ]);
    // b ends after a, so the combined watermark never follows a alone.
    let b = ScriptedSource::new(vec![Step::Batch("b", vec![50]), Step::Idle(10)]);
    let mut flow = Dataflow::new();
    let strategy = event_time(60_000);
    let sa = flow.add_source("a", "scripted", a, strategy.clone(), None);
    let sb = flow.add_source("b", "scripted", b, strategy, None);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let marks = InputMarks {
        union: UnionOperator::new(schema()),
        seen: seen.clone(),
    };
    let op = flow
        .add_operator("marks", "a + b", Box::new(marks), vec![sa, sb])
        .unwrap();
    let recorder = Recorder::default();
    flow.add_sink("out", "recorder", Box::new(recorder.clone()), op)
        .unwrap();
    laketide_engine::run(flow, RunOptions::default())
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    let of = |input: usize| -> Vec<i64> {
        let marks: Vec<Watermark> = (seen.iter())
            .filter(|(i, _)| *i == input)
            .map(|(_, w)| *w)
            .collect();
        assert_eq!(marks.last(), Some(&Watermark::END), "input {input} ends");
        event_times(&marks)
    };
    assert_eq!(of(0), vec![100, 200], "a's own watermarks: {seen:?}");
    assert_eq!(of(1), vec![50], "b's own watermark: {seen:?}");
    let combined = event_times(&recorder.watermarks.lock().unwrap());
    assert_eq!(combined, vec![50], "the combined one waits for b");
}
