//! The `webhook` sink: POSTs result rows as JSON to a URL, to raise alerts or send commands to
//! other systems. Each request carries an HMAC-SHA256 signature of its body (with a secret read
//! from an environment variable), has a timeout, and is retried with backoff on network
//! failures, 429 and 5xx answers until `retry_timeout`; any other answer fails the pipeline.
//! The secret never appears in logs, descriptions or errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use hmac::{Hmac, KeyInit, Mac};
use laketide_engine::{EngineError, Result, ServiceStatus, Sink, SinkSummary};
use sha2::Sha256;

use crate::aws::Backoff;
use crate::error::ConnectorError;
use crate::format::{Format, RowEncoder};
use crate::options::Options;

/// Where a webhook sink POSTs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookUrl {
    /// The `url` option.
    Literal(String),
    /// The environment variable named by `url_env`: for URLs that are themselves secrets (a
    /// Slack or Teams incoming-webhook URL embeds its token).
    FromEnv(String),
}

/// Configuration of a webhook sink (`connector = 'webhook'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSinkConfig {
    /// Where to POST.
    pub url: WebhookUrl,
    /// The environment variable holding the signing secret; no signature without it.
    pub secret_env: Option<String>,
    /// The header that carries `sha256=<hex HMAC of the body>`.
    pub signature_header: String,
    /// Rows per request: 1 sends each row as a JSON object, more sends a JSON array.
    pub rows_per_request: usize,
    /// How long one request may take.
    pub timeout: Duration,
    /// How long failed requests are retried before the pipeline fails.
    pub retry_timeout: Duration,
}

/// The option keys of the webhook sink.
pub const WEBHOOK_SINK_OPTIONS: &[&str] = &[
    "url",
    "url_env",
    "secret_env",
    "signature_header",
    "rows_per_request",
    "timeout",
    "retry_timeout",
];

impl WebhookSinkConfig {
    /// Reads and validates the options; unknown keys are errors.
    pub fn from_options(mut options: Options) -> crate::error::Result<Self> {
        let url = match (options.take("url"), options.take("url_env")) {
            (Some(url), None) => {
                check_url(&url, "option `url`")?;
                WebhookUrl::Literal(url)
            }
            (None, Some(var)) => WebhookUrl::FromEnv(var),
            _ => {
                return Err(ConnectorError::InvalidOption(
                    "the webhook connector needs exactly one of `url` and `url_env` (an environment variable holding the URL)".into(),
                ));
            }
        };
        let rows_per_request = options.take_u64("rows_per_request")?.unwrap_or(1);
        if rows_per_request == 0 {
            return Err(ConnectorError::InvalidOption(
                "option `rows_per_request` must be at least 1".into(),
            ));
        }
        let config = WebhookSinkConfig {
            url,
            secret_env: options.take("secret_env"),
            signature_header: options
                .take("signature_header")
                .unwrap_or_else(|| "X-Laketide-Signature".into()),
            rows_per_request: rows_per_request as usize,
            timeout: options
                .take_duration("timeout")?
                .unwrap_or(Duration::from_secs(10)),
            retry_timeout: options
                .take_duration("retry_timeout")?
                .unwrap_or(Duration::from_secs(60)),
        };
        options.finish("webhook", WEBHOOK_SINK_OPTIONS)?;
        Ok(config)
    }

    /// The URL without its query string and user info, which may hold tokens, or for
    /// `url_env` only the variable's name: what descriptions and errors show.
    pub fn display_url(&self) -> String {
        match &self.url {
            WebhookUrl::Literal(url) => redact(url),
            WebhookUrl::FromEnv(var) => format!("${var}"),
        }
    }
}

fn check_url(url: &str, what: &str) -> crate::error::Result<()> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(ConnectorError::InvalidOption(format!(
            "{what} must be an http:// or https:// URL, not '{}'",
            redact(url)
        )))
    }
}

fn redact(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or(url);
    match without_query.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{rest}")
        }
        None => without_query.to_string(),
    }
}

/// The signature header's value for `body`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs rows to a URL; see [`WebhookSinkConfig`].
pub struct WebhookSink {
    name: String,
    config: WebhookSinkConfig,
    /// The URL to POST to, resolved at open.
    url: Option<String>,
    client: Option<reqwest::Client>,
    secret: Option<Vec<u8>>,
    encoder: RowEncoder,
    rows_written: u64,
    requests: u64,
    status: Arc<ServiceStatus>,
}

impl WebhookSink {
    /// A sink for table `name`. Does no I/O until opened.
    pub fn new(name: &str, config: WebhookSinkConfig) -> Self {
        WebhookSink {
            name: name.to_string(),
            config,
            url: None,
            client: None,
            secret: None,
            encoder: RowEncoder::new(Format::Json),
            rows_written: 0,
            requests: 0,
            status: Arc::new(ServiceStatus::default()),
        }
    }

    /// Requests retried so far (429 answers are counted as throttles instead).
    pub fn retries(&self) -> u64 {
        self.status.retries()
    }

    async fn post(&mut self, body: Vec<u8>) -> Result<()> {
        let client = self
            .client
            .clone()
            .ok_or_else(|| EngineError::Internal("webhook sink written before open".into()))?;
        let target = self
            .url
            .clone()
            .ok_or_else(|| EngineError::Internal("webhook sink written before open".into()))?;
        let signature = self.secret.as_ref().map(|s| signature(s, &body));
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let started = Instant::now();
        let url = self.config.display_url();
        self.status.count_bytes(body.len() as u64);
        loop {
            self.requests += 1;
            let mut throttled = false;
            let mut request = client
                .post(&target)
                .header("content-type", "application/json")
                .body(body.clone());
            if let Some(s) = &signature {
                request = request.header(self.config.signature_header.as_str(), s.as_str());
            }
            let failure = match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => {
                    let status = response.status();
                    let text: String = response
                        .text()
                        .await
                        .unwrap_or_default()
                        .chars()
                        .take(200)
                        .collect();
                    throttled = status.as_u16() == 429;
                    let message = format!("{url} answered {status}: {text}");
                    if !(status.is_server_error()
                        || status.as_u16() == 429
                        || status.as_u16() == 408)
                    {
                        return Err(EngineError::external(
                            format!("sink `{}`", self.name),
                            message,
                        ));
                    }
                    message
                }
                // reqwest's errors name the URL; show the redacted one instead.
                Err(e) => format!("{url}: {}", e.without_url()),
            };
            if started.elapsed() >= self.config.retry_timeout {
                return Err(EngineError::external(
                    format!("sink `{}`", self.name),
                    format!(
                        "still failing after retrying for {:?} (retry_timeout): {failure}",
                        self.config.retry_timeout
                    ),
                ));
            }
            if throttled {
                self.status.count_throttle();
            } else {
                self.status.count_retry();
            }
            tracing::debug!(sink = %self.name, error = %failure, "webhook request failed; retrying");
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

#[async_trait]
impl Sink for WebhookSink {
    fn status(&self) -> Option<Arc<ServiceStatus>> {
        Some(self.status.clone())
    }

    async fn open(&mut self, _schema: SchemaRef) -> Result<()> {
        self.url = Some(match &self.config.url {
            WebhookUrl::Literal(url) => url.clone(),
            WebhookUrl::FromEnv(var) => {
                let url = std::env::var(var).map_err(|_| {
                    EngineError::User(format!(
                        "sink `{}`: the environment variable {var} (url_env) is not set",
                        self.name
                    ))
                })?;
                if check_url(&url, "url_env").is_err() {
                    // Not even part of the value is shown: the URL may be the secret.
                    return Err(EngineError::User(format!(
                        "sink `{}`: the environment variable {var} (url_env) does not hold an http:// or https:// URL",
                        self.name
                    )));
                }
                url
            }
        });
        if let Some(var) = &self.config.secret_env {
            let secret = std::env::var(var).map_err(|_| {
                EngineError::User(format!(
                    "sink `{}`: the environment variable {var} (secret_env) is not set",
                    self.name
                ))
            })?;
            self.secret = Some(secret.into_bytes());
        }
        let client = reqwest::Client::builder()
            .timeout(self.config.timeout)
            .build()
            .map_err(|e| EngineError::external("creating the HTTP client", e))?;
        self.client = Some(client);
        Ok(())
    }

    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
        let rows = self.encoder.encode(&batch)?;
        for group in rows.chunks(self.config.rows_per_request) {
            let body = if self.config.rows_per_request == 1 {
                group[0].clone()
            } else {
                let mut body =
                    Vec::with_capacity(group.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
                body.push(b'[');
                for (i, row) in group.iter().enumerate() {
                    if i > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(row);
                }
                body.push(b']');
                body
            };
            self.post(body).await?;
            self.rows_written += group.len() as u64;
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<SinkSummary> {
        if self.status.retries() > 0 {
            tracing::info!(sink = %self.name, retries = self.status.retries(), "webhook sink finished");
        }
        Ok(SinkSummary {
            rows_written: self.rows_written,
            commits: self.requests,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials_or_query() {
        assert_eq!(
            redact("https://user:pw@hooks.example.com/alert?token=abc"),
            "https://hooks.example.com/alert"
        );
    }

    #[tokio::test]
    async fn a_url_variable_that_is_not_set_is_named_in_the_error() {
        let options = Options::new([(
            "url_env".to_string(),
            "LAKETIDE_TEST_HOOK_URL_NEVER_SET".to_string(),
        )])
        .unwrap();
        let mut sink =
            WebhookSink::new("alerts", WebhookSinkConfig::from_options(options).unwrap());
        let schema = std::sync::Arc::new(datafusion::arrow::datatypes::Schema::empty());
        let e = sink.open(schema).await.unwrap_err().to_string();
        assert!(
            e.contains("sink `alerts`")
                && e.contains("LAKETIDE_TEST_HOOK_URL_NEVER_SET (url_env) is not set"),
            "{e}"
        );
    }

    #[test]
    fn signatures_are_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn options() {
        let o = |pairs: &[(&str, &str)]| {
            Options::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
        };
        let c = WebhookSinkConfig::from_options(o(&[("url", "http://127.0.0.1:1/x")])).unwrap();
        assert_eq!(c.rows_per_request, 1);
        assert!(WebhookSinkConfig::from_options(o(&[("url", "ftp://x")])).is_err());
        let from_env = WebhookSinkConfig::from_options(o(&[("url_env", "HOOK_URL")])).unwrap();
        assert_eq!(from_env.display_url(), "$HOOK_URL");
        assert!(WebhookSinkConfig::from_options(o(&[])).is_err());
        assert!(
            WebhookSinkConfig::from_options(o(&[("url", "http://x"), ("url_env", "HOOK_URL")]))
                .is_err()
        );
        assert!(
            WebhookSinkConfig::from_options(o(&[("url", "http://x"), ("secret", "s")]))
                .unwrap_err()
                .to_string()
                .contains("unknown option `secret`")
        );
    }
}
