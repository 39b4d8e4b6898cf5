//! The web dashboard of `laketide run --ui ADDR`.
//!
//! One HTTP server beside the running pipeline serves:
//! - `/`: the live dashboard (pipeline graph, per-node counters, per-source throughput and
//!   per-shard lag, watermarks, late and bad records, checkpoint status, rows per sink, and a
//!   chart and table of each sink's latest results), updated by server-sent events from
//!   `/api/events` every half second;
//! - `/query`: ad-hoc SQL over the pipeline's tables (`POST /api/query`);
//! - `/metrics`: Prometheus text.
//!
//! Every file the pages need is compiled into the binary ([`assets`]), so they work offline.
//! Access rules are in [`auth`]. The server stops when the run ends.

mod assets;
mod auth;
mod current_rows;
mod prometheus;
mod query;
mod results;
mod rows;
mod status;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{self, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use laketide_engine::{Dataflow, PipelineMetrics};
use tokio_util::sync::CancellationToken;

pub use prometheus::render as render_metrics;
pub use results::{LatestResults, RecordingSink};
pub use status::{Graph, RunState};

use crate::error::{CliError, Result};

/// How often the page gets an update.
const UPDATE_INTERVAL: Duration = Duration::from_millis(500);

/// How long the server may take to close its connections when the run ends.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What every request handler shares.
#[derive(Clone)]
struct Shared(Arc<Inner>);

struct Inner {
    access: auth::Access,
    graph: Graph,
    metrics: PipelineMetrics,
    results: LatestResults,
    run: Mutex<RunState>,
    pipeline_file: PathBuf,
    stop: CancellationToken,
    /// Ad-hoc queries run one at a time: each one snapshots the pipeline's file sources.
    queries: tokio::sync::Semaphore,
    checkpoints: bool,
}

impl std::ops::Deref for Shared {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Inner {
    fn status(&self, seen: &mut BTreeMap<String, u64>) -> status::Status {
        let run = self.run.lock().unwrap_or_else(|e| e.into_inner()).clone();
        status::read(&self.metrics, &self.results, run, seen)
    }
}

/// A running dashboard server.
pub struct Dashboard {
    shared: Shared,
    addr: SocketAddr,
    first_visit: String,
    task: tokio::task::JoinHandle<()>,
}

impl Dashboard {
    /// Binds `addr` and serves the dashboard of `dataflow` (the pipeline in `file`), whose
    /// sinks are wrapped to record their latest rows. `token`, when set, is required of every
    /// request; a non-loopback address without one gets a generated token. `checkpoints`
    /// says whether the run takes checkpoints (their metrics are then always exported).
    pub async fn start(
        addr: SocketAddr,
        token: Option<String>,
        file: &Path,
        dataflow: &mut Dataflow,
        checkpoints: bool,
    ) -> Result<Self> {
        let (token, generated) = match token {
            Some(t) if !auth::valid_token(&t) => {
                return Err(CliError::Usage(
                    "the dashboard token must be 8 to 256 characters among A-Z a-z 0-9 . _ ~ -"
                        .into(),
                ));
            }
            Some(t) => (Some(t), false),
            None if addr.ip().is_loopback() => (None, false),
            None => (Some(uuid::Uuid::new_v4().simple().to_string()), true),
        };
        let results = LatestResults::default();
        let recorded = results.clone();
        dataflow.wrap_sinks(|name, mode, sink| {
            Box::new(RecordingSink::new(name, mode, sink, recorded.clone()))
                as Box<dyn laketide_engine::Sink>
        });
        let pipeline = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| CliError::io(format!("serving the dashboard on {addr}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| CliError::io("reading the dashboard's address", e))?;
        let shared = Shared(Arc::new(Inner {
            access: auth::Access::new(addr, token.clone()),
            graph: Graph::of(&pipeline, dataflow),
            metrics: dataflow.metrics(),
            results,
            run: Mutex::new(RunState::Running),
            pipeline_file: file.to_path_buf(),
            stop: CancellationToken::new(),
            queries: tokio::sync::Semaphore::new(1),
            checkpoints,
        }));
        let app = router(shared.clone());
        let stop = shared.stop.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "the dashboard server stopped");
            }
        });
        // The generated token is shown once, in the address to open; a token the user chose
        // is never printed.
        let first_visit = match (&token, generated) {
            (Some(t), true) => format!("http://{addr}/?token={t}"),
            _ => format!("http://{addr}/"),
        };
        Ok(Dashboard {
            shared,
            addr,
            first_visit,
            task,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address to open first (with a generated token, if any).
    pub fn url(&self) -> &str {
        &self.first_visit
    }

    /// Records how the run ended and stops the server: open pages get a last update, and
    /// connections still open after a grace period (a long query, a stalled page) are cut.
    pub async fn finish(mut self, run: RunState) {
        *self.shared.run.lock().unwrap_or_else(|e| e.into_inner()) = run;
        self.shared.stop.cancel();
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/", get(|| page(assets::DASHBOARD)))
        .route("/query", get(|| page(assets::QUERY)))
        .route("/assets/{name}", get(asset))
        .route("/api/pipeline", get(pipeline))
        .route("/api/status", get(status_now))
        .route("/api/events", get(events))
        .route("/api/query", post(run_query))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            auth::check,
        ))
        .with_state(shared)
}

async fn page(html: &'static str) -> Response {
    (
        [
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Html(html),
    )
        .into_response()
}

async fn asset(extract::Path(name): extract::Path<String>) -> Response {
    match assets::asset(&name) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            a.body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

async fn pipeline(State(s): State<Shared>) -> Response {
    axum::Json(s.graph.clone()).into_response()
}

async fn status_now(State(s): State<Shared>) -> Response {
    axum::Json(s.status(&mut BTreeMap::new())).into_response()
}

/// An update now, then one every [`UPDATE_INTERVAL`]; when the server stops, a last one
/// (with how the run ended) and the end of the stream. Each update carries only the sink
/// results that changed since the previous one.
async fn events(State(s): State<Shared>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures::stream::unfold(
        (s, BTreeMap::new(), true, false),
        |(s, mut seen, first, ended)| async move {
            if ended {
                return None;
            }
            let mut last = s.stop.is_cancelled();
            if !first && !last {
                tokio::select! {
                    _ = s.stop.cancelled() => last = true,
                    _ = tokio::time::sleep(UPDATE_INTERVAL) => {}
                }
            }
            let event = Event::default()
                .event("status")
                .json_data(s.status(&mut seen))
                .unwrap_or_else(|_| Event::default().comment("status unavailable"));
            Some((Ok(event), (s, seen, false, last)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[derive(serde::Deserialize)]
struct QueryRequest {
    sql: String,
}

async fn run_query(State(s): State<Shared>, axum::Json(q): axum::Json<QueryRequest>) -> Response {
    let Ok(_turn) = s.queries.acquire().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "the dashboard is stopping").into_response();
    };
    match query::run(&s.pipeline_file, &q.sql).await {
        Ok(result) => axum::Json(result).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, prometheus::CONTENT_TYPE)],
        render_metrics(&s.metrics, s.checkpoints),
    )
        .into_response()
}
