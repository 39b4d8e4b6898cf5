//! The Kinesis API calls the connector makes, with the retry policy shared by all of them:
//! throttling is retried with backoff for as long as it lasts (and counted); network failures
//! and server errors are retried until the `retry_timeout`; anything else fails at once.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use laketide_engine::ServiceStatus;

use super::position::IteratorStart;
use super::shards::ShardInfo;
use aws_sdk_kinesis::config::http::HttpResponse;

use crate::aws::{AwsOptions, RetryPolicy, call_with_retries, describe, error_code};
use crate::error::{ConnectorError, Result};

/// A stream, named either by name or by ARN.
#[derive(Debug, Clone)]
pub struct StreamRef {
    name: Option<String>,
    arn: Option<String>,
}

impl StreamRef {
    /// `stream` is a name, or an ARN starting with `arn:`.
    pub fn new(stream: &str) -> Self {
        if stream.starts_with("arn:") {
            StreamRef {
                name: None,
                arn: Some(stream.to_string()),
            }
        } else {
            StreamRef {
                name: Some(stream.to_string()),
                arn: None,
            }
        }
    }

    /// The name, unless the stream was given by ARN.
    pub fn name(&self) -> Option<String> {
        self.name.clone()
    }

    /// The ARN, if the stream was given by ARN.
    pub fn arn(&self) -> Option<String> {
        self.arn.clone()
    }

    /// How the stream is named in messages.
    pub fn display(&self) -> &str {
        self.name.as_deref().or(self.arn.as_deref()).unwrap_or("?")
    }
}

/// A Kinesis client for one stream, with its retry policy.
#[derive(Debug, Clone)]
pub struct StreamClient {
    client: Client,
    stream: StreamRef,
    retry_timeout: Duration,
    status: Arc<ServiceStatus>,
}

/// What a failed call means to the caller after retries.
#[derive(Debug)]
pub enum CallError {
    /// The service said the shard iterator expired: get a new one and go on.
    ExpiredIterator,
    /// The call failed for good.
    Failed(ConnectorError),
}

impl From<ConnectorError> for CallError {
    fn from(e: ConnectorError) -> Self {
        CallError::Failed(e)
    }
}

impl StreamClient {
    /// Connects to the stream's service (no call yet).
    pub async fn connect(
        stream: &str,
        aws: &AwsOptions,
        retry_timeout: Duration,
        status: Arc<ServiceStatus>,
    ) -> Result<Self> {
        let config = aws.load("Kinesis").await?;
        Ok(StreamClient {
            client: Client::new(&config),
            stream: StreamRef::new(stream),
            retry_timeout,
            status,
        })
    }

    /// The stream.
    pub fn stream(&self) -> &StreamRef {
        &self.stream
    }

    /// The SDK client.
    pub fn sdk(&self) -> &Client {
        &self.client
    }

    /// The counters of throttles and retries.
    pub fn status(&self) -> &Arc<ServiceStatus> {
        &self.status
    }

    /// Runs `call` under the retry policy. `what` names the call for messages.
    pub async fn retrying<T, E, F, Fut>(&self, what: &str, call: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let policy = RetryPolicy {
            retry_timeout: self.retry_timeout,
            status: self.status.clone(),
        };
        call_with_retries(&policy, what, call).await.map_err(|f| {
            if f.code() == Some("ExpiredIteratorException") {
                CallError::ExpiredIterator
            } else {
                CallError::Failed(f.into_error(format!(
                    "{what} on Kinesis stream `{}`",
                    self.stream.display()
                )))
            }
        })
    }

    /// Creates the stream with `shards` shards (provisioned) unless it exists, then waits
    /// until it is active. Returns whether it was created. Only a stream given by name can be
    /// created.
    pub async fn create_if_missing(&self, shards: i32) -> Result<bool> {
        let name = self.stream.name().ok_or_else(|| {
            ConnectorError::InvalidOption("a stream given by ARN cannot be created".into())
        })?;
        let exists = match self
            .client
            .describe_stream_summary()
            .stream_name(&name)
            .send()
            .await
        {
            Ok(_) => true,
            Err(e) if error_code(&e) == Some("ResourceNotFoundException") => false,
            Err(e) => {
                return Err(ConnectorError::service(
                    format!("DescribeStreamSummary on Kinesis stream `{name}`"),
                    describe(&e),
                ));
            }
        };
        if !exists {
            self.retrying("CreateStream", || {
                self.client
                    .create_stream()
                    .stream_name(&name)
                    .shard_count(shards)
                    .send()
            })
            .await
            .map_err(call_failed)?;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self
                .retrying("DescribeStreamSummary", || {
                    self.client
                        .describe_stream_summary()
                        .stream_name(&name)
                        .send()
                })
                .await
                .map_err(call_failed)?;
            let active = out.stream_description_summary().is_some_and(|d| {
                d.stream_status() == &aws_sdk_kinesis::types::StreamStatus::Active
            });
            if active {
                return Ok(!exists);
            }
            if Instant::now() > deadline {
                return Err(ConnectorError::service(
                    format!("Kinesis stream `{name}`"),
                    "not active after 60 s",
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Lists every shard of the stream (following pagination).
    pub async fn list_shards(&self) -> Result<Vec<ShardInfo>> {
        let mut shards = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let token = next.clone();
            let out = self
                .retrying("ListShards", || {
                    let request = self.client.list_shards();
                    let request = match &token {
                        Some(t) => request.next_token(t),
                        None => request
                            .set_stream_name(self.stream.name())
                            .set_stream_arn(self.stream.arn()),
                    };
                    request.send()
                })
                .await
                .map_err(call_failed)?;
            for s in out.shards() {
                shards.push(ShardInfo {
                    id: s.shard_id().to_string(),
                    parents: s
                        .parent_shard_id()
                        .into_iter()
                        .chain(s.adjacent_parent_shard_id())
                        .map(str::to_string)
                        .collect(),
                    closed: s
                        .sequence_number_range()
                        .and_then(|r| r.ending_sequence_number())
                        .is_some(),
                });
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => return Ok(shards),
            }
        }
    }

    /// A shard iterator at `start`.
    pub async fn shard_iterator(&self, shard: &str, start: &IteratorStart) -> Result<String> {
        let out = self
            .retrying("GetShardIterator", || {
                let request = self
                    .client
                    .get_shard_iterator()
                    .set_stream_name(self.stream.name())
                    .set_stream_arn(self.stream.arn())
                    .shard_id(shard);
                let request = match start {
                    IteratorStart::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
                    IteratorStart::TrimHorizon => {
                        request.shard_iterator_type(ShardIteratorType::TrimHorizon)
                    }
                    IteratorStart::AtTimestamp(millis) => request
                        .shard_iterator_type(ShardIteratorType::AtTimestamp)
                        .timestamp(DateTime::from_millis(*millis)),
                    IteratorStart::After(seq) => request
                        .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                        .starting_sequence_number(seq),
                    IteratorStart::AtSkipping { sequence, .. } => request
                        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                        .starting_sequence_number(sequence),
                };
                request.send()
            })
            .await
            .map_err(call_failed)?;
        out.shard_iterator().map(str::to_string).ok_or_else(|| {
            ConnectorError::service(
                format!("GetShardIterator on shard {shard}"),
                "the response has no shard iterator",
            )
        })
    }
}

/// An expired iterator cannot happen outside GetRecords; report it plainly if it does.
fn call_failed(e: CallError) -> ConnectorError {
    match e {
        CallError::Failed(e) => e,
        CallError::ExpiredIterator => {
            ConnectorError::service("Kinesis", "unexpected ExpiredIteratorException")
        }
    }
}
