//! `laketide run FILE`: run a pipeline until its sources finish or it is stopped.

use std::path::Path;

use laketide_engine::RunOptions;
use tokio_util::sync::CancellationToken;

use crate::checkpointing::{self, CheckpointArgs};
use crate::error::Result;
use crate::pipeline::plan_file;
use crate::progress;

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

/// Runs the pipeline in `file`, showing progress unless `quiet`, and prints the summary.
pub async fn run(file: &Path, quiet: bool, checkpoints: &CheckpointArgs) -> Result<()> {
    let planned = plan_file(file).await?;
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
    let summary = result?;
    eprintln!("{}", progress::summary(&summary));
    Ok(())
}
