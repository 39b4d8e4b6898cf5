//! `laketide bench`: generate a clickstream, run the TUMBLE, HOP and SESSION queries over it
//! (each checked against a batch query), then the example pipeline with and without
//! checkpoints (and on S3), reporting events per second end to end and peak memory.

use std::path::{Path, PathBuf};

use laketide_engine::RunOptions;
use laketide_engine::checkpoint::{CheckpointSettings, CheckpointStore, Recovery};

use crate::datagen::{ClickstreamSpec, write_clickstream};
use crate::error::{CliError, Result};
use crate::pipeline::run_sql;
use crate::progress::human_rate;

/// The benchmarked pipeline: the README's example (`examples/clickstream.sql`), reading the
/// generated files and writing the Delta table at `table` (a path or `s3://` URL).
pub fn bench_sql(data: &Path, table: &str) -> String {
    include_str!("../../examples/clickstream.sql")
        .replace("'examples/data/clicks/'", &format!("'{}'", data.display()))
        .replace("'lake/revenue_per_minute'", &format!("'{table}'"))
}

/// Peak resident memory of this process in bytes (Linux), if known.
pub fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets the process's peak resident memory (Linux), so that each run reports its own peak.
pub fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Checkpoints every second (ten times as often as `laketide run` by default) into `dir`.
fn bench_checkpoints(dir: &Path) -> Result<CheckpointSettings> {
    Ok(CheckpointSettings {
        store: CheckpointStore::local(dir)?,
        interval: std::time::Duration::from_secs(1),
        pipeline_name: "bench".into(),
        fingerprint: "bench".into(),
        recovery: Recovery::FromScratch,
        incremental: true,
    })
}

/// Runs the pipeline once and prints its line; returns events per second.
async fn measure(
    label: &str,
    data: &Path,
    table: &str,
    checkpoints: Option<CheckpointSettings>,
) -> Result<f64> {
    reset_peak_memory();
    let before = peak_memory_bytes().unwrap_or(0);
    let options = RunOptions {
        checkpoints,
        ..Default::default()
    };
    let summary = run_sql(&bench_sql(data, table), options).await?;
    let secs = summary.elapsed.as_secs_f64();
    let rate = summary.totals.records_in as f64 / secs.max(1e-9);
    let peak = peak_memory_bytes().unwrap_or(0);
    println!(
        "bench tumble-1min file->delta ({label}): {} events in {secs:.2}s = {} events/s end to end; {} windows emitted; {} rows written; peak memory {} MB (before the run: {} MB)",
        summary.totals.records_in,
        human_rate(rate),
        summary.totals.windows_emitted,
        summary.totals.rows_written,
        peak / (1 << 20),
        before / (1 << 20),
    );
    if let Some(c) = &summary.totals.checkpoint {
        println!(
            "  checkpoints: {} taken, last {} bytes in {} ms",
            c.id, c.bytes, c.duration_ms
        );
    }
    Ok(rate)
}

/// Runs the benchmark with `events` events in `dir` (a temporary directory if `None`); with
/// `s3_lake`, runs it a second time writing to a Delta table under that `s3://` root and
/// reports the ratio to the local-disk run.
pub async fn bench(events: u64, dir: Option<PathBuf>, s3_lake: Option<&str>) -> Result<()> {
    let temp;
    let dir = match dir {
        Some(d) => d,
        None => {
            temp = std::env::temp_dir().join(format!("laketide-bench-{}", std::process::id()));
            temp.clone()
        }
    };
    let data = dir.join("clicks");
    let lake = dir.join("lake");
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_dir_all(&lake);
    // A million users: most of them click a few times an hour, so SESSION sees millions of
    // sessions (tens of thousands open at once), as in a real backfill.
    let spec = ClickstreamSpec {
        events,
        files: 8,
        users: 1_000_000,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    write_clickstream(&data, &spec)?;
    let bytes: u64 = std::fs::read_dir(&data)
        .map_err(|e| CliError::io("listing generated data", e))?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    eprintln!(
        "generated {events} events ({:.0} MB of JSON lines) in {:.2}s",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    crate::commands::bench_windows::bench_windows(&data, &lake.join("windows")).await?;
    let local_table = lake.join("revenue_per_minute").display().to_string();
    let local = measure("local disk", &data, &local_table, None).await?;
    let checkpointed_table = lake.join("revenue_checkpointed").display().to_string();
    let checkpointed = measure(
        "local disk, checkpoint every 1s",
        &data,
        &checkpointed_table,
        Some(bench_checkpoints(&dir.join("state"))?),
    )
    .await?;
    println!(
        "bench throughput with checkpoints / without: {:.2}",
        checkpointed / local.max(1e-9)
    );
    if let Some(root) = s3_lake {
        let table = format!(
            "{}/bench-{}-{}/revenue_per_minute",
            root.trim_end_matches('/'),
            std::process::id(),
            chrono::Utc::now().timestamp()
        );
        let s3 = measure(&table, &data, &table, None).await?;
        println!(
            "bench S3 / local-disk throughput: {:.2}",
            s3 / local.max(1e-9)
        );
    }
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_dir_all(dir.join("state"));
    crate::commands::bench_decode::bench_decode(events.min(1_000_000), 100)?;
    Ok(())
}
