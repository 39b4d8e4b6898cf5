//! The operator trait: synchronous, vectorized transformations between a source and a sink.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::changelog::StreamMode;
use crate::error::Result;
use crate::message::{Message, Watermark};
use crate::state::NodeState;

/// Where an operator puts what it produces. The runner sends it downstream in order.
#[derive(Debug, Default)]
pub struct Output {
    messages: Vec<Message>,
    late: Vec<(RecordBatch, String)>,
    late_rows: u64,
    windows_emitted: u64,
}

impl Output {
    /// Emits a batch of rows with the operator's output schema. Empty batches are dropped.
    pub fn batch(&mut self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.messages.push(Message::Batch(batch));
        }
    }

    /// Emits a watermark.
    pub fn watermark(&mut self, watermark: Watermark) {
        self.messages.push(Message::Watermark(watermark));
    }

    /// Takes everything emitted so far.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Message> {
        self.messages.drain(..)
    }

    /// Drops `rows` (in the operator's input schema) as late: they arrived after their window
    /// or session closed, or have no event time. `reason` says which (naming the watermark).
    /// The runner counts them and hands them to the late-row handlers of the sources upstream.
    pub fn late(&mut self, rows: RecordBatch, reason: impl Into<String>) {
        if rows.num_rows() > 0 {
            self.late_rows += rows.num_rows() as u64;
            self.late.push((rows, reason.into()));
        }
    }

    /// Takes the late rows dropped since the last call, with their reasons.
    pub fn take_late(&mut self) -> Vec<(RecordBatch, String)> {
        std::mem::take(&mut self.late)
    }

    /// Counts window results (one per group of a closed window).
    pub fn count_windows(&mut self, windows: u64) {
        self.windows_emitted += windows;
    }

    /// Takes the late-row and window counters accumulated since the last call.
    pub fn take_counters(&mut self) -> (u64, u64) {
        (
            std::mem::take(&mut self.late_rows),
            std::mem::take(&mut self.windows_emitted),
        )
    }
}

/// Rows an operator reads from outside the stream for one batch (see [`Operator::fetch`]).
pub type Fetch = futures::future::BoxFuture<'static, Result<RecordBatch>>;

/// How often [`Operator::on_tick`] is called, at the most.
pub const TICK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// A streaming operator (projection, filter, window assignment, window aggregation, union …).
///
/// Contract:
/// - The runner calls the methods of one operator from one task, never concurrently, in the
///   order in which messages arrive. Batches from input `i` arrive in the order they were sent.
/// - `process_watermark` receives the *combined* watermark of all inputs (the minimum over
///   inputs that are not idle); it is called only when that combined watermark advances, or
///   with [`Watermark::Idle`] when every input is idle. `process_input_watermark` receives
///   each input's own watermark first, whenever it changes.
/// - Barriers: while a checkpoint barrier has come on some inputs and not others, the inputs
///   that delivered it are not read (their upstream waits: backpressure, not buffering), so
///   no message from after the barrier reaches the operator before its snapshot. An operator that holds rows back
///   (windows) emits what the watermark completes and then forwards a watermark; operators
///   that hold nothing use the default, which forwards it.
/// - `finish` is called once, after every input has ended; the operator emits everything it
///   still holds. No method is called after it.
/// - Checkpoints: `snapshot_at` is called when a checkpoint barrier has arrived on every
///   input, between two messages; it returns everything the operator holds (open windows,
///   sessions, its watermark), or for keyed tables what changed since the barrier's base, and
///   leaves the operator able to go on. `restore` is called once, before the first message,
///   when the run recovers from a checkpoint.
/// - `on_tick` is called about every [`TICK_INTERVAL`] of wall time between messages, also
///   when none arrive, for work an operator deferred (emitting closed sessions in batches).
///   What it emits follows the rules above; it must not depend on being called at any given
///   moment for correctness, only for latency.
/// - Modes: `output_mode` is called once, when the operator is added to a dataflow, with the
///   modes of its inputs (see [`StreamMode`]); it says what the operator emits, or refuses an
///   input it cannot process. An operator emitting an updating stream puts the change column
///   last in its output schema.
/// - Errors stop the pipeline; the operator is dropped without further calls. Operators do no
///   I/O and never block, so cancellation is simply being dropped; the one exception is the
///   reading an operator asks the runner to await for it ([`Operator::fetch`]).
pub trait Operator: Send + 'static {
    /// The schema of every batch this operator emits.
    fn output_schema(&self) -> SchemaRef;

    /// What the operator emits given its inputs' modes, or why it cannot take them (a sentence
    /// the planner shows at the query's location). The default takes append-only inputs only
    /// and emits an append-only stream.
    fn output_mode(&self, inputs: &[StreamMode]) -> std::result::Result<StreamMode, String> {
        if inputs.iter().any(StreamMode::is_updating) {
            Err(
                "this operator takes only append-only input, and its input is an updating result"
                    .into(),
            )
        } else {
            Ok(StreamMode::AppendOnly)
        }
    }

    /// Processes one batch that arrived on input `input`.
    fn process_batch(&mut self, input: usize, batch: RecordBatch, out: &mut Output) -> Result<()>;

    /// The reading an operator needs from outside the stream before it can process `batch`
    /// (a lookup join's keys, looked up in its table), or `None` (the default: the batch goes
    /// to `process_batch`). The runner awaits the returned future (the operator's inputs wait
    /// meanwhile, so batches, watermarks and barriers keep their order) and then calls
    /// `process_fetched` with its rows. The future is dropped if the pipeline stops; its error
    /// stops the pipeline as an error of the operator would.
    fn fetch(&mut self, _input: usize, _batch: &RecordBatch) -> Option<Fetch> {
        None
    }

    /// Processes `batch` of input `input` with the rows its `fetch` returned.
    fn process_fetched(
        &mut self,
        _input: usize,
        _batch: RecordBatch,
        _fetched: RecordBatch,
        _out: &mut Output,
    ) -> Result<()> {
        Err(crate::EngineError::Internal(
            "rows were fetched for an operator that does not fetch".into(),
        ))
    }

    /// Reacts to the progress of one input's own watermark: called when input `input`'s
    /// watermark advances, goes idle, or ends ([`Watermark::END`]), before the combined
    /// watermark (if that advanced too) reaches `process_watermark`. An operator with two
    /// inputs (a join) expires one side's rows by the other side's watermark here. It must
    /// not forward watermarks (that is `process_watermark`'s job). The default does nothing.
    fn process_input_watermark(
        &mut self,
        _input: usize,
        _watermark: Watermark,
        _out: &mut Output,
    ) -> Result<()> {
        Ok(())
    }

    /// Reacts to event-time progress.
    fn process_watermark(&mut self, watermark: Watermark, out: &mut Output) -> Result<()> {
        out.watermark(watermark);
        Ok(())
    }

    /// Deferred work, about every [`TICK_INTERVAL`] between messages. The default does nothing.
    fn on_tick(&mut self, _out: &mut Output) -> Result<()> {
        Ok(())
    }

    /// The live gauges of the service the operator reads (a lookup join's DynamoDB table:
    /// throttles, retries, bytes), registered with the pipeline's metrics when the operator
    /// is added; `None` (the default) for operators that call no service.
    fn status(&self) -> Option<std::sync::Arc<crate::metrics::ServiceStatus>> {
        None
    }

    /// How many windows, sessions or groups the operator holds open (0 for stateless ones),
    /// for the run summary's peak open state.
    fn open_state(&self) -> u64 {
        0
    }

    /// Flushes everything held; called once at the end of all inputs.
    fn finish(&mut self, _out: &mut Output) -> Result<()> {
        Ok(())
    }

    /// Everything the operator holds, for a checkpoint. Stateless operators keep the default.
    fn snapshot(&mut self) -> Result<NodeState> {
        Ok(NodeState::empty())
    }

    /// The state for checkpoint `barrier.id`. An operator with large keyed state may return,
    /// for a keyed table, only what changed since its snapshot for `barrier.base` (a
    /// [`crate::KeyedTable::Delta`] naming that base); it must then keep track of changes
    /// since every snapshot that may still become a base (a checkpoint can fail to be
    /// stored, and the next barrier then names an older base). The default is `snapshot`.
    fn snapshot_at(&mut self, barrier: &crate::CheckpointBarrier) -> Result<NodeState> {
        let _ = barrier;
        self.snapshot()
    }

    /// Takes back what `snapshot` saved; called before the first message on recovery.
    fn restore(&mut self, state: NodeState) -> Result<()> {
        state.expect_empty("a stateless operator")
    }
}
