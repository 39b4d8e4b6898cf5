//! The file source's decoder threads: chunks of JSON or CSV lines decoded in parallel, each
//! answered on its own reply channel, so that a file's reader can deliver them in order.

use std::ops::Range;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use datafusion::arrow::record_batch::RecordBatch;
use laketide_engine::EngineError;

use crate::format::RecordDecoder;

/// One chunk of lines of one file.
pub(crate) struct Chunk {
    /// The file, for error locations.
    pub(crate) path: Arc<Path>,
    /// The chunk's bytes; `records` are ranges of it, one record each.
    pub(crate) buffer: Vec<u8>,
    pub(crate) records: Vec<Range<usize>>,
    /// The line number of each record.
    pub(crate) lines: Vec<u64>,
}

/// What decoding a chunk gave: rows (`None` if all were bad), or the error that stops the run.
pub(crate) type Decoded = Result<Option<RecordBatch>, EngineError>;

struct Job {
    chunk: Chunk,
    reply: SyncSender<Decoded>,
}

/// Decoder threads shared by a source's file readers. Dropping the pool (every clone) ends
/// the threads once their queue is empty.
#[derive(Clone)]
pub(crate) struct DecodePool {
    jobs: SyncSender<Job>,
}

impl DecodePool {
    /// Starts `threads` decoder threads using `decoder`.
    pub(crate) fn start(threads: usize, decoder: Arc<RecordDecoder>) -> std::io::Result<Self> {
        let (jobs, queue) = sync_channel::<Job>(threads * 2);
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            let decoder = decoder.clone();
            std::thread::Builder::new()
                .name(format!("laketide-file-decoder-{i}"))
                .spawn(move || work(&queue, &decoder))?;
        }
        Ok(DecodePool { jobs })
    }

    /// Queues `chunk`; its result comes on the returned receiver. `None` if the pool is gone.
    pub(crate) fn submit(&self, chunk: Chunk) -> Option<Receiver<Decoded>> {
        let (reply, result) = sync_channel(1);
        self.jobs.send(Job { chunk, reply }).ok()?;
        Some(result)
    }
}

fn work(queue: &Mutex<Receiver<Job>>, decoder: &RecordDecoder) {
    loop {
        let job = match queue.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(Job { chunk, reply }) = job else {
            return;
        };
        // A panic while decoding must fail the run, not silently lose the chunk.
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let location = |i: usize| format!("{}:{}", chunk.path.display(), chunk.lines[i]);
            decoder.decode(&chunk.buffer, &chunk.records, &location)
        }))
        .unwrap_or_else(|_| {
            Err(EngineError::Internal(format!(
                "decoding lines of {} panicked",
                chunk.path.display()
            )))
        });
        let _ = reply.send(decoded);
    }
}
