//! The file source's reader thread: lists, reads and decodes files, and hands batches over a
//! bounded channel (so decoding runs beside the pipeline, and a slow pipeline slows reading).

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, new_null_array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio::sync::mpsc::Sender;

use laketide_engine::{BadRecords, EngineError};

use super::config::{FileMode, FileSourceConfig};
use super::listing::list_files;
use crate::format::{Format, RecordDecoder};

/// What the reader thread reports.
#[derive(Debug)]
pub(crate) enum ReaderEvent {
    /// Decoded rows.
    Batch(RecordBatch),
    /// A file was read to its end.
    FileDone(PathBuf),
    /// `mode = 'once'`: every file was read.
    Finished,
    /// Reading failed; the source fails with this error.
    Failed(EngineError),
}

/// Stops the thread when the receiving source is gone.
struct Gone;

pub(crate) struct Reader {
    config: FileSourceConfig,
    schema: SchemaRef,
    decoder: RecordDecoder,
    tx: Sender<ReaderEvent>,
}

impl Reader {
    pub(crate) fn new(
        config: FileSourceConfig,
        schema: SchemaRef,
        bad: Arc<BadRecords>,
        tx: Sender<ReaderEvent>,
    ) -> Self {
        let decoder = RecordDecoder::new(schema.clone(), config.format.clone(), bad);
        Reader {
            config,
            schema,
            decoder,
            tx,
        }
    }

    /// Runs until every file is read (`once`) or the source is dropped (`continuous`).
    pub(crate) fn run(self, mut seen: HashSet<PathBuf>) {
        let _ = self.run_inner(&mut seen);
    }

    fn send(&self, event: ReaderEvent) -> Result<(), Gone> {
        self.tx.blocking_send(event).map_err(|_| Gone)
    }

    fn run_inner(&self, seen: &mut HashSet<PathBuf>) -> Result<(), Gone> {
        let mut first_listing = true;
        loop {
            match list_files(&self.config.path) {
                Ok(files) => {
                    for file in files {
                        if seen.contains(&file) {
                            continue;
                        }
                        if let Err(e) = self.read_file(&file) {
                            return match e {
                                ReadError::Gone => Err(Gone),
                                ReadError::Failed(e) => self.send(ReaderEvent::Failed(e)),
                            };
                        }
                        seen.insert(file.clone());
                        self.send(ReaderEvent::FileDone(file))?;
                    }
                }
                Err(e) if first_listing || self.config.mode == FileMode::Once => {
                    return self.send(ReaderEvent::Failed(e.into()));
                }
                Err(e) => {
                    tracing::warn!(path = %self.config.path, error = %e, "listing failed; retrying")
                }
            }
            first_listing = false;
            if self.config.mode == FileMode::Once {
                return self.send(ReaderEvent::Finished);
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
        let file = File::open(path).map_err(io)?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let batch_size = self.config.batch_size;
        let mut buffer: Vec<u8> = Vec::with_capacity(batch_size * 128);
        let mut records: Vec<Range<usize>> = Vec::with_capacity(batch_size);
        let mut line_numbers: Vec<u64> = Vec::with_capacity(batch_size);
        let mut line = 0u64;
        loop {
            let start = buffer.len();
            let n = reader.read_until(b'\n', &mut buffer).map_err(io)?;
            if n == 0 {
                break;
            }
            line += 1;
            let mut end = buffer.len();
            while end > start && matches!(buffer[end - 1], b'\n' | b'\r') {
                end -= 1;
            }
            let blank = buffer[start..end].iter().all(|b| b.is_ascii_whitespace());
            if blank || (skip_header && line == 1) {
                buffer.truncate(start);
                continue;
            }
            records.push(start..end);
            line_numbers.push(line);
            if records.len() >= batch_size {
                self.decode_and_send(path, &buffer, &records, &line_numbers)?;
                buffer.clear();
                records.clear();
                line_numbers.clear();
            }
        }
        self.decode_and_send(path, &buffer, &records, &line_numbers)
    }

    fn decode_and_send(
        &self,
        path: &Path,
        buffer: &[u8],
        records: &[Range<usize>],
        lines: &[u64],
    ) -> Result<(), ReadError> {
        let location = |i: usize| format!("{}:{}", path.display(), lines[i]);
        match self.decoder.decode(buffer, records, &location) {
            Ok(Some(batch)) => self
                .send(ReaderEvent::Batch(batch))
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
        let file = File::open(path).map_err(|e| failed(e.to_string()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| failed(e.to_string()))?
            .with_batch_size(self.config.batch_size)
            .build()
            .map_err(|e| failed(e.to_string()))?;
        for batch in reader {
            let batch = batch.map_err(|e| failed(e.to_string()))?;
            let aligned = align_to_schema(&batch, &self.schema).map_err(|e| {
                ReadError::Failed(EngineError::User(format!("{}: {e}", path.display())))
            })?;
            self.send(ReaderEvent::Batch(aligned))
                .map_err(|_| ReadError::Gone)?;
        }
        Ok(())
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
