//! Writes records to a stream with PutRecords: batched to the service's limits, with the
//! records a response reports as failed retried (with backoff) until they succeed or the
//! retry timeout passes, which is an error: records are never dropped silently.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

use super::client::{CallError, StreamClient};
use crate::aws::{Backoff, ErrorClass, classify_code};
use crate::error::{ConnectorError, Result};

/// PutRecords accepts at most 5 MiB per call (data and partition keys).
pub const MAX_REQUEST_BYTES: usize = 5 * 1024 * 1024;
/// A record's data and partition key together must not exceed 1 MiB.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Partition keys are 1 to 256 characters.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// A record to write: partition key and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRecord {
    /// The partition key (1–256 characters).
    pub partition_key: String,
    /// The payload.
    pub data: Vec<u8>,
}

/// Writes records to one stream.
#[derive(Debug, Clone)]
pub struct RecordWriter {
    client: StreamClient,
    max_records: usize,
    retry_timeout: Duration,
}

impl RecordWriter {
    /// A writer sending at most `max_records` records per call.
    pub fn new(client: StreamClient, max_records: usize, retry_timeout: Duration) -> Self {
        RecordWriter {
            client,
            max_records: max_records.clamp(1, 500),
            retry_timeout,
        }
    }

    /// Writes `records` in order of calls (a call's records are written concurrently by the
    /// service; retried records may land after later ones of the same call). Returns the
    /// number of PutRecords calls made.
    pub async fn put_all(&self, records: Vec<OutgoingRecord>) -> Result<u64> {
        let mut calls = 0;
        let mut request: Vec<PutRecordsRequestEntry> = Vec::new();
        let mut request_bytes = 0;
        for (i, record) in records.into_iter().enumerate() {
            let size = record.data.len() + record.partition_key.len();
            let key_chars = record.partition_key.chars().count();
            if key_chars == 0 || key_chars > MAX_PARTITION_KEY_CHARS {
                return Err(ConnectorError::InvalidOption(format!(
                    "record {i} for Kinesis stream `{}`: the partition key must have 1 to {MAX_PARTITION_KEY_CHARS} characters, not {key_chars}",
                    self.client.stream().display()
                )));
            }
            if size > MAX_RECORD_BYTES {
                return Err(ConnectorError::InvalidOption(format!(
                    "record {i} for Kinesis stream `{}` is {size} bytes; Kinesis records hold at most {MAX_RECORD_BYTES} bytes (data and partition key)",
                    self.client.stream().display()
                )));
            }
            if request.len() == self.max_records || request_bytes + size > MAX_REQUEST_BYTES {
                calls += self.put_request(std::mem::take(&mut request)).await?;
                request_bytes = 0;
            }
            request.push(
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(record.data))
                    .partition_key(record.partition_key)
                    .build()
                    .map_err(|e| {
                        ConnectorError::service("building a PutRecords entry", e.to_string())
                    })?,
            );
            request_bytes += size;
        }
        if !request.is_empty() {
            calls += self.put_request(request).await?;
        }
        Ok(calls)
    }

    /// Sends one request, then re-sends the records it reports as failed.
    async fn put_request(&self, mut pending: Vec<PutRecordsRequestEntry>) -> Result<u64> {
        let stream = self.client.stream().clone();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut failing_since: Option<Instant> = None;
        let mut calls = 0;
        loop {
            calls += 1;
            let entries = pending.clone();
            let out = self
                .client
                .retrying("PutRecords", || {
                    self.client
                        .sdk()
                        .put_records()
                        .set_stream_name(stream.name())
                        .set_stream_arn(stream.arn())
                        .set_records(Some(entries.clone()))
                        .send()
                })
                .await
                .map_err(|e| match e {
                    CallError::Failed(e) => e,
                    CallError::ExpiredIterator => {
                        ConnectorError::service("PutRecords", "unexpected ExpiredIteratorException")
                    }
                })?;
            if out.failed_record_count().unwrap_or(0) == 0 {
                return Ok(calls);
            }
            let mut failed = Vec::new();
            let mut first_error = None;
            for (entry, result) in pending.into_iter().zip(out.records()) {
                if let Some(code) = result.error_code() {
                    if classify_code(code) == ErrorClass::Throttled {
                        self.client.status().count_throttle();
                    } else {
                        self.client.status().count_retry();
                    }
                    first_error.get_or_insert_with(|| {
                        format!("{code}: {}", result.error_message().unwrap_or_default())
                    });
                    failed.push(entry);
                }
            }
            let since = *failing_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.retry_timeout {
                return Err(ConnectorError::service(
                    format!("PutRecords on Kinesis stream `{}`", stream.display()),
                    format!(
                        "{} records still failed after retrying for {:?} (retry_timeout); first error: {}",
                        failed.len(),
                        self.retry_timeout,
                        first_error.unwrap_or_default()
                    ),
                ));
            }
            tracing::debug!(
                failed = failed.len(),
                stream = %stream.display(),
                "PutRecords partly failed; retrying the failed records"
            );
            pending = failed;
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}
