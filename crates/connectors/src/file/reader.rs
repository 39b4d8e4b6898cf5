//! The file source's threads: a lister finds new files, file readers read them (`open_files`
//! at once, in path order) and cut JSON and CSV files into chunks of lines that the decoder
//! threads (`reader_threads`) decode in parallel; each file reader hands its chunks' batches
//! over a bounded channel in file order, so decoding runs beside the pipeline, a slow
//! pipeline slows reading, and the watermark follows the files being read.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{ArrayRef, new_null_array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio::sync::mpsc::Sender;

use laketide_engine::{BadRecords, EngineError, ServiceStatus};

use super::config::{FileMode, FileSourceConfig};
use super::decode_pool::{Chunk, DecodePool, Decoded};
use super::store::FileStore;
use crate::format::{Format, RecordDecoder};

/// What the reader threads report.
#[derive(Debug)]
pub(crate) enum ReaderEvent {
    /// A file reader has taken a file and is about to read it; sent before any of its
    /// batches, so that the file holds the watermark back from the start. Files waiting for
    /// a reader are not started: they do not hold the watermark.
    FileStarted(PathBuf),
    /// Decoded rows of one file, with the file's position after them: lines consumed (JSON,
    /// CSV) or rows (Parquet). A restart resumes a file after that position.
    Batch(PathBuf, RecordBatch, u64),
    /// A file was read to its end.
    FileDone(PathBuf),
    /// Reading failed; the source fails with this error.
    Failed(EngineError),
}

/// Stops a thread when the receiving source is gone.
struct Gone;

/// Starts the lister thread, `config.open_files` file reader threads and
/// `config.reader_threads` decoder threads. The lister sends every file not in `seen` (in
/// path order) to the file readers; each reads whole files and delivers a file's batches in
/// order. In `once` mode the event channel closes when every file is read. Files in `resume`
/// are read from their saved position on.
#[allow(clippy::too_many_arguments)]
pub(crate) fn start_readers(
    store: FileStore,
    config: FileSourceConfig,
    schema: SchemaRef,
    bad: Arc<BadRecords>,
    seen: HashSet<PathBuf>,
    resume: HashMap<PathBuf, u64>,
    events: Sender<ReaderEvent>,
    status: Arc<ServiceStatus>,
) -> std::io::Result<()> {
    let open_files = config.open_files.max(1);
    let decoders = config.reader_threads.max(1);
    let decoder = RecordDecoder::new(schema.clone(), config.format.clone(), bad.clone())
        .with_event_time_bound(config.event_time_bound.clone());
    let pool = DecodePool::start(decoders, Arc::new(decoder))?;
    let (work_tx, work_rx) = std::sync::mpsc::sync_channel::<PathBuf>(0);
    let work_rx = Arc::new(Mutex::new(work_rx));
    let resume = Arc::new(resume);
    for i in 0..open_files {
        let reader = Reader {
            store: store.clone(),
            pool: pool.clone(),
            in_flight: 2 * decoders,
            bad: bad.clone(),
            config: config.clone(),
            schema: schema.clone(),
            tx: events.clone(),
            resume: resume.clone(),
            status: status.clone(),
        };
        let work = work_rx.clone();
        std::thread::Builder::new()
            .name(format!("laketide-file-reader-{i}"))
            .spawn(move || reader.work(&work))?;
    }
    drop(pool);
    let lister = Lister {
        store,
        config,
        tx: events,
        work: work_tx,
    };
    std::thread::Builder::new()
        .name("laketide-file-lister".into())
        .spawn(move || {
            let mut seen = seen;
            let _ = lister.run(&mut seen);
        })?;
    Ok(())
}

struct Lister {
    store: FileStore,
    config: FileSourceConfig,
    tx: Sender<ReaderEvent>,
    work: std::sync::mpsc::SyncSender<PathBuf>,
}

impl Lister {
    fn run(&self, seen: &mut HashSet<PathBuf>) -> Result<(), Gone> {
        let mut first_listing = true;
        loop {
            match self.store.list(&self.config.path) {
                Ok(files) => {
                    for file in files {
                        if seen.insert(file.clone()) {
                            self.work.send(file).map_err(|_| Gone)?;
                        }
                    }
                }
                Err(e) if first_listing || self.config.mode == FileMode::Once => {
                    return self
                        .tx
                        .blocking_send(ReaderEvent::Failed(e.into()))
                        .map_err(|_| Gone);
                }
                Err(e) => {
                    tracing::warn!(path = %self.config.path, error = %e, "listing failed; retrying")
                }
            }
            first_listing = false;
            if self.config.mode == FileMode::Once {
                return Ok(());
            }
            // Sleep in short steps so that a dropped source ends the thread promptly.
            let deadline = std::time::Instant::now() + self.config.poll_interval;
            while std::time::Instant::now() < deadline {
                if self.tx.is_closed() {
                    return Err(Gone);
                }
                std::thread::sleep(
                    std::time::Duration::from_millis(50).min(self.config.poll_interval),
                );
            }
        }
    }
}

/// Reads one file at a time: Parquet itself, JSON and CSV through the decoder threads.
struct Reader {
    store: FileStore,
    config: FileSourceConfig,
    schema: SchemaRef,
    pool: DecodePool,
    /// Chunks of a file decoded ahead of delivery, at most.
    in_flight: usize,
    /// The source's bad-record policy, for Parquet rows beyond `max_future`.
    bad: Arc<BadRecords>,
    tx: Sender<ReaderEvent>,
    resume: Arc<HashMap<PathBuf, u64>>,
    /// Counts the bytes read (after decompression).
    status: Arc<ServiceStatus>,
}

impl Reader {
    /// Reads files from `work` until the lister is done (or the source is gone).
    fn work(self, work: &Mutex<Receiver<PathBuf>>) {
        loop {
            let next = match work.lock() {
                Ok(rx) => rx.recv(),
                Err(_) => return,
            };
            let Ok(file) = next else { return };
            if self.send(ReaderEvent::FileStarted(file.clone())).is_err() {
                return;
            }
            // A panic while decoding must fail the run, not silently lose the file.
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.read_file(&file)))
                    .unwrap_or_else(|_| {
                        Err(ReadError::Failed(EngineError::Internal(format!(
                            "reading {} panicked",
                            file.display()
                        ))))
                    });
            match result {
                Ok(()) => {
                    if self.send(ReaderEvent::FileDone(file)).is_err() {
                        return;
                    }
                }
                Err(ReadError::Gone) => return,
                Err(ReadError::Failed(e)) => {
                    let _ = self.send(ReaderEvent::Failed(e));
                    return;
                }
            }
        }
    }

    fn send(&self, event: ReaderEvent) -> Result<(), Gone> {
        self.tx.blocking_send(event).map_err(|_| Gone)
    }

    fn read_file(&self, path: &Path) -> Result<(), ReadError> {
        match self.config.format {
            Format::Parquet => self.read_parquet(path),
            Format::Csv { header, .. } => self.read_lines(path, header),
            Format::Json => self.read_lines(path, false),
        }
    }

    fn read_lines(&self, path: &Path, skip_header: bool) -> Result<(), ReadError> {
        let io = |e: std::io::Error| {
            ReadError::Failed(EngineError::external(
                format!("reading {}", path.display()),
                e,
            ))
        };
        let raw = self.store.open(path).map_err(io)?;
        let mut reader = self.config.compression.reader(path, raw).map_err(io)?;
        let batch_size = self.config.batch_size;
        let shared: Arc<Path> = Arc::from(path);
        // Lines already delivered before a restart are skipped, not decoded again.
        let resume_after = self.resume.get(path).copied().unwrap_or(0);
        let mut chunk = self.new_chunk(&shared);
        let mut pending: VecDeque<(Receiver<Decoded>, u64)> = VecDeque::new();
        let mut line = 0u64;
        // Bytes read since the last chunk: counted once per chunk, not per line.
        let mut unreported = 0u64;
        loop {
            let buffer = &mut chunk.buffer;
            let start = buffer.len();
            let n = reader.read_until(b'\n', buffer).map_err(io)?;
            if n == 0 {
                break;
            }
            unreported += n as u64;
            line += 1;
            let mut end = buffer.len();
            while end > start && matches!(buffer[end - 1], b'\n' | b'\r') {
                end -= 1;
            }
            let blank = buffer[start..end].iter().all(|b| b.is_ascii_whitespace());
            if blank || (skip_header && line == 1) || line <= resume_after {
                buffer.truncate(start);
                continue;
            }
            chunk.records.push(start..end);
            chunk.lines.push(line);
            if chunk.records.len() >= batch_size {
                self.status.count_bytes(std::mem::take(&mut unreported));
                let full = std::mem::replace(&mut chunk, self.new_chunk(&shared));
                self.submit(full, line, &mut pending)?;
                while pending.len() >= self.in_flight {
                    self.deliver_oldest(path, &mut pending)?;
                }
            }
        }
        self.status.count_bytes(unreported);
        if !chunk.records.is_empty() {
            self.submit(chunk, line, &mut pending)?;
        }
        while !pending.is_empty() {
            self.deliver_oldest(path, &mut pending)?;
        }
        Ok(())
    }

    fn new_chunk(&self, path: &Arc<Path>) -> Chunk {
        let n = self.config.batch_size;
        Chunk {
            path: path.clone(),
            buffer: Vec::with_capacity(n * 128),
            records: Vec::with_capacity(n),
            lines: Vec::with_capacity(n),
        }
    }

    /// Hands `chunk` (ending at line `position`) to the decoder threads.
    fn submit(
        &self,
        chunk: Chunk,
        position: u64,
        pending: &mut VecDeque<(Receiver<Decoded>, u64)>,
    ) -> Result<(), ReadError> {
        let result = self.pool.submit(chunk).ok_or(ReadError::Gone)?;
        pending.push_back((result, position));
        Ok(())
    }

    /// Waits for the oldest chunk in flight and sends its rows with the file's position
    /// after it: batches leave in file order, whichever decoder finished first.
    fn deliver_oldest(
        &self,
        path: &Path,
        pending: &mut VecDeque<(Receiver<Decoded>, u64)>,
    ) -> Result<(), ReadError> {
        let Some((result, position)) = pending.pop_front() else {
            return Ok(());
        };
        let decoded = result.recv().map_err(|_| {
            ReadError::Failed(EngineError::Internal(format!(
                "a decoder thread of {} stopped",
                path.display()
            )))
        })?;
        match decoded {
            Ok(Some(batch)) => self
                .send(ReaderEvent::Batch(path.to_path_buf(), batch, position))
                .map_err(|_| ReadError::Gone),
            Ok(None) => Ok(()),
            Err(e) => Err(ReadError::Failed(e)),
        }
    }

    fn read_parquet(&self, path: &Path) -> Result<(), ReadError> {
        let failed = |e: String| {
            ReadError::Failed(EngineError::external(
                format!("reading {}", path.display()),
                e,
            ))
        };
        let bytes = self
            .store
            .read_all(path)
            .map_err(|e| failed(e.to_string()))?;
        self.status.count_bytes(bytes.len() as u64);
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| failed(e.to_string()))?
            .with_batch_size(self.config.batch_size)
            .build()
            .map_err(|e| failed(e.to_string()))?;
        let mut skip = self.resume.get(path).copied().unwrap_or(0);
        let mut position = 0u64;
        for batch in reader {
            let mut batch = batch.map_err(|e| failed(e.to_string()))?;
            position += batch.num_rows() as u64;
            if skip > 0 {
                // Rows delivered before a restart.
                let n = (skip as usize).min(batch.num_rows());
                batch = batch.slice(n, batch.num_rows() - n);
                skip -= n as u64;
                if batch.num_rows() == 0 {
                    continue;
                }
            }
            let aligned = align_to_schema(&batch, &self.schema).map_err(|e| {
                ReadError::Failed(EngineError::User(format!("{}: {e}", path.display())))
            })?;
            let first_row = position - aligned.num_rows() as u64;
            let aligned = self
                .drop_future_rows(path, aligned, first_row)
                .map_err(ReadError::Failed)?;
            if aligned.num_rows() == 0 {
                continue;
            }
            self.send(ReaderEvent::Batch(path.to_path_buf(), aligned, position))
                .map_err(|_| ReadError::Gone)?;
        }
        Ok(())
    }
}

impl Reader {
    /// Parquet rows whose event time is beyond `max_future` go to the bad-record policy (the
    /// row as JSON is the raw record; the location is `file#row`), and are removed.
    fn drop_future_rows(
        &self,
        path: &Path,
        batch: RecordBatch,
        first_row: u64,
    ) -> Result<RecordBatch, EngineError> {
        let Some(bound) = &self.config.event_time_bound else {
            return Ok(batch);
        };
        let Some(times) = batch.column_by_name(&bound.column) else {
            return Ok(batch);
        };
        let over = bound.violations(times, chrono::Utc::now().timestamp_millis())?;
        if over.is_empty() {
            return Ok(batch);
        }
        let mut keep = vec![true; batch.num_rows()];
        for (row, reason) in over {
            keep[row] = false;
            let mut raw = Vec::new();
            let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut raw);
            writer.write(&batch.slice(row, 1))?;
            writer.finish()?;
            let raw = raw.strip_suffix(b"\n").unwrap_or(&raw).to_vec();
            let location = format!("{}#row {}", path.display(), first_row + row as u64 + 1);
            self.bad.report(&location, &raw, &reason)?;
        }
        let mask = datafusion::arrow::array::BooleanArray::from(keep);
        Ok(datafusion::arrow::compute::filter_record_batch(
            &batch, &mask,
        )?)
    }
}

enum ReadError {
    Gone,
    Failed(EngineError),
}

/// Picks the table's columns from a Parquet batch by name (missing ones become NULL) and casts
/// them to the declared types.
fn align_to_schema(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, String> {
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => cast(c, f.data_type()).map_err(|e| {
                format!(
                    "column `{}` ({}) cannot be read as {}: {e}",
                    f.name(),
                    c.data_type(),
                    f.data_type()
                )
            }),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<_, _>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
}
