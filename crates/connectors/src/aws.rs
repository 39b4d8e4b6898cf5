//! Settings and error handling shared by the connectors that call AWS service APIs (Kinesis,
//! DynamoDB): the standard AWS environment (`AWS_REGION`, `AWS_ENDPOINT_URL`,
//! `AWS_ENDPOINT_URL_<SERVICE>`, the credential chain) applies, and the `region` and `endpoint`
//! options of a table override it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use laketide_engine::ServiceStatus;

use crate::error::{ConnectorError, Result};
use crate::options::Options;

/// The `endpoint` and `region` options of a table backed by an AWS service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsOptions {
    /// Service endpoint, e.g. `http://127.0.0.1:4568` for a local Kinesis server. Without it,
    /// `AWS_ENDPOINT_URL_<SERVICE>`, then `AWS_ENDPOINT_URL`, then AWS itself.
    pub endpoint: Option<String>,
    /// Region; without it, `AWS_REGION` or the profile's region.
    pub region: Option<String>,
}

impl AwsOptions {
    /// Takes `endpoint` and `region`.
    pub fn from_options(options: &mut Options) -> Result<Self> {
        let endpoint = options.take("endpoint");
        if let Some(e) = &endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(ConnectorError::InvalidOption(format!(
                "option `endpoint` must be an http:// or https:// URL, not '{e}'"
            )));
        }
        Ok(AwsOptions {
            endpoint,
            region: options.take("region"),
        })
    }

    /// Loads the SDK configuration: the environment and profile, overridden by these options.
    /// The SDK's own retries are turned off: connectors retry themselves so that they can
    /// count throttles and honour their own deadlines. Fails when no region is known.
    pub async fn load(&self, service: &str) -> Result<aws_config::SdkConfig> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .build(),
            );
        if let Some(region) = &self.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(endpoint) = &self.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        let config = loader.load().await;
        if config.region().is_none() {
            return Err(ConnectorError::InvalidOption(format!(
                "no AWS region for {service}: set AWS_REGION or the table option region = '…'"
            )));
        }
        Ok(config)
    }
}

/// How a failed AWS call should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The service asks us to slow down: back off and retry, without a deadline.
    Throttled,
    /// A network failure, timeout or server-side error: back off and retry until a deadline.
    Transient,
    /// Anything else (bad request, missing resource, access denied): fail.
    Fatal,
}

/// Error codes that mean "slow down".
const THROTTLING_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
    "KMSThrottlingException",
];

/// Error codes of transient server-side failures.
const TRANSIENT_CODES: &[&str] = &[
    "InternalFailure",
    "InternalFailureException",
    "InternalServerError",
    "InternalError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
];

/// Classifies an error code (from a service error or a per-record failure).
pub fn classify_code(code: &str) -> ErrorClass {
    if THROTTLING_CODES.contains(&code) {
        ErrorClass::Throttled
    } else if TRANSIENT_CODES.contains(&code) {
        ErrorClass::Transient
    } else {
        ErrorClass::Fatal
    }
}

/// Classifies an SDK error.
pub fn classify<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> ErrorClass {
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ErrorClass::Transient
        }
        SdkError::ServiceError(e) => match e.err().code() {
            Some(code) => classify_code(code),
            None => ErrorClass::Transient,
        },
        _ => ErrorClass::Fatal,
    }
}

/// The error's code, if the service sent one.
pub fn error_code<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> Option<&str> {
    match error {
        SdkError::ServiceError(e) => e.err().code(),
        _ => None,
    }
}

/// A one-line description of an SDK error: the service's code and message, or the chain of
/// causes of a network failure (the SDK's `Display` alone says only "service error").
pub fn describe<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if let SdkError::ServiceError(e) = error {
        let e = e.err();
        return match (e.code(), e.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_string(),
            _ => e.to_string(),
        };
    }
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

/// How calls to a service are retried: throttling with backoff for as long as it lasts (and
/// counted), network failures and server errors until `retry_timeout` (counted as retries),
/// anything else not at all.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// How long transient failures are retried.
    pub retry_timeout: Duration,
    /// Where throttles and retries are counted.
    pub status: Arc<ServiceStatus>,
}

/// A call that failed for good: the last error, and how long it was retried.
#[derive(Debug)]
pub struct CallFailure<E, R> {
    /// The last error.
    pub error: SdkError<E, R>,
    /// Set when transient failures were retried until the timeout.
    pub retried_for: Option<Duration>,
}

impl<E, R> CallFailure<E, R>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    /// The service's error code, if any.
    pub fn code(&self) -> Option<&str> {
        error_code(&self.error)
    }

    /// The failure as a connector error, with what was being done.
    pub fn into_error(self, context: impl Into<String>) -> ConnectorError {
        let message = match self.retried_for {
            Some(d) => format!(
                "still failing after retrying for {d:?} (retry_timeout): {}",
                describe(&self.error)
            ),
            None => describe(&self.error),
        };
        ConnectorError::service(context, message)
    }
}

/// Runs `call` under `policy`. `what` names the call in logs.
pub async fn call_with_retries<T, E, R, F, Fut>(
    policy: &RetryPolicy,
    what: &str,
    mut call: F,
) -> std::result::Result<T, CallFailure<E, R>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, SdkError<E, R>>>,
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut failing_since: Option<Instant> = None;
    loop {
        let error = match call().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        match classify(&error) {
            ErrorClass::Throttled => {
                policy.status.count_throttle();
                let delay = backoff.next_delay();
                tracing::debug!(call = what, ?delay, "throttled; backing off");
                tokio::time::sleep(delay).await;
            }
            ErrorClass::Transient => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= policy.retry_timeout {
                    return Err(CallFailure {
                        error,
                        retried_for: Some(policy.retry_timeout),
                    });
                }
                policy.status.count_retry();
                let delay = backoff.next_delay();
                if backoff.attempts() == 1 || backoff.attempts().is_multiple_of(10) {
                    tracing::warn!(call = what, error = %describe(&error), "call failed; retrying");
                }
                tokio::time::sleep(delay).await;
            }
            ErrorClass::Fatal => {
                return Err(CallFailure {
                    error,
                    retried_for: None,
                });
            }
        }
    }
}

/// Exponential backoff with jitter between `base` and `cap` (delays from `backon`), so that
/// many clients do not retry in step. Never runs out: callers decide when to give up.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    attempts: u32,
}

impl Backoff {
    /// A backoff starting at `base`, never waiting longer than twice `cap` (the cap plus its
    /// jitter).
    pub fn new(base: Duration, cap: Duration) -> Self {
        let builder = ExponentialBuilder::new()
            .with_min_delay(base)
            .with_max_delay(cap)
            .with_jitter()
            .without_max_times();
        Backoff {
            delays: builder.build(),
            builder,
            attempts: 0,
        }
    }

    /// The delay before the next retry.
    pub fn next_delay(&mut self) -> Duration {
        self.attempts = self.attempts.saturating_add(1);
        self.delays.next().unwrap_or(Duration::from_secs(1))
    }

    /// Forgets past failures after a success.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
        self.attempts = 0;
    }

    /// Failures since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified() {
        assert_eq!(
            classify_code("ProvisionedThroughputExceededException"),
            ErrorClass::Throttled
        );
        assert_eq!(classify_code("InternalFailure"), ErrorClass::Transient);
        assert_eq!(
            classify_code("ResourceNotFoundException"),
            ErrorClass::Fatal
        );
    }

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(2));
        }
        assert_eq!(b.attempts(), 20);
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert!(b.next_delay() <= Duration::from_millis(200));
    }

    #[test]
    fn endpoints_must_be_urls() {
        let mut o = Options::new([("endpoint".to_string(), "localhost:4568".to_string())]).unwrap();
        assert!(AwsOptions::from_options(&mut o).is_err());
    }
}
