//! `laketide run FILE`: run a pipeline until its sources finish or it is stopped.

use std::net::SocketAddr;
use std::path::Path;

use laketide_engine::RunOptions;
use tokio_util::sync::CancellationToken;

use crate::checkpointing::{self, CheckpointArgs};
use crate::error::Result;
use crate::pipeline::plan_file;
use crate::progress;
use crate::ui::{Dashboard, RunState};

/// The `--ui` options of `run`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct UiArgs {
    /// Serve the live dashboard, a query page and Prometheus /metrics at this address, e.g.
    /// 127.0.0.1:8080 (port 0 picks a free port). A non-loopback address requires a token.
    #[arg(long, value_name = "ADDR")]
    pub ui: Option<SocketAddr>,
    /// The token the dashboard requires of every request (Authorization: Bearer, or ?token=
    /// once in the browser); 8 to 256 of A-Z a-z 0-9 . _ ~ -. Without it, a non-loopback
    /// --ui generates one and prints the address to open. Ignored without --ui.
    #[arg(long, env = "LAKETIDE_UI_TOKEN", hide_env_values = true)]
    pub ui_token: Option<String>,
}

/// Cancels `stop` on the first SIGINT or SIGTERM (a last checkpoint and commit, or without
/// checkpoints a drain), exits at once at the second.
fn stop_on_signals(stop: CancellationToken, checkpoints: bool) {
    tokio::spawn(async move {
        let mut signals = 0;
        loop {
            wait_for_signal().await;
            signals += 1;
            if signals == 1 {
                if checkpoints {
                    eprintln!(
                        "stopping: taking a last checkpoint and committing (press Ctrl-C again to exit at once)"
                    );
                } else {
                    eprintln!(
                        "stopping: finishing in-flight rows and committing (press Ctrl-C again to exit at once)"
                    );
                }
                stop.cancel();
            } else {
                eprintln!("exiting without committing");
                std::process::exit(130);
            }
        }
    });
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs the pipeline in `file`, showing progress unless `quiet` and the dashboard if asked,
/// and prints the summary.
pub async fn run(
    file: &Path,
    quiet: bool,
    checkpoints: &CheckpointArgs,
    ui: &UiArgs,
    plan: &laketide_sql::PlanOptions,
) -> Result<()> {
    let mut planned = plan_file(file, plan).await?;
    let checkpoints = checkpointing::settings(checkpoints, file, &planned)?;
    if let Some(c) = &checkpoints {
        eprintln!(
            "checkpoints every {:?} in {}",
            c.interval,
            c.store.location()
        );
    }
    if !planned.bounded {
        eprintln!("running continuously (a source watches for new data); press Ctrl-C to stop");
    }
    let dashboard = match ui.ui {
        Some(addr) => {
            let d = Dashboard::start(
                addr,
                ui.ui_token.clone(),
                file,
                &mut planned.dataflow,
                checkpoints.is_some(),
            )
            .await?;
            eprintln!(
                "dashboard at {} (queries: /query, Prometheus: /metrics)",
                d.url()
            );
            Some(d)
        }
        None => None,
    };
    let metrics = planned.dataflow.metrics();
    let stop = CancellationToken::new();
    stop_on_signals(stop.clone(), checkpoints.is_some());
    let done = CancellationToken::new();
    let display = (!quiet).then(|| tokio::spawn(progress::show(metrics, done.clone())));
    let result = laketide_engine::run(
        planned.dataflow,
        RunOptions {
            stop,
            checkpoints,
            ..Default::default()
        },
    )
    .await;
    done.cancel();
    if let Some(task) = display {
        let _ = task.await;
    }
    if let Some(d) = dashboard {
        d.finish(match &result {
            Ok(_) => RunState::Finished,
            Err(e) => RunState::Failed {
                error: e.to_string(),
            },
        })
        .await;
    }
    let summary = result?;
    eprintln!("{}", progress::summary(&summary));
    Ok(())
}
