use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The process's allocator (a declaration, not state): mimalloc, much faster than the system
/// allocator for the engine's many small, short-lived allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe extern "C" {
    /// mimalloc's: returns the memory it keeps for reuse to the system (`force`: all now).
    fn mi_collect(force: bool);
}

/// Gives the memory the allocator keeps after a benchmark run back to the system, so that
/// the next run's peak memory is its own.
fn release_memory() {
    // SAFETY: `mi_collect` has no preconditions; mimalloc is this binary's allocator.
    unsafe { mi_collect(true) }
}
use laketide::commands::{
    bench, bench_dynamodb, bench_lookup, bench_nexmark, check, generate, maintain, produce, query,
    run,
};
use laketide::datagen::{ClickstreamSpec, TimeFormat};

/// Streaming SQL over files and Kinesis into a Delta lake, DynamoDB, Kinesis or webhooks:
/// event-time windows, continuous queries, one binary.
#[derive(Debug, Parser)]
#[command(
    name = "laketide",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("LAKETIDE_GIT_COMMIT"), ")")
)]
struct Cli {
    /// Log filter (e.g. `info`, `laketide_engine=debug`); also read from RUST_LOG.
    #[arg(
        long,
        global = true,
        env = "RUST_LOG",
        default_value = "warn,buoyant_kernel=off,aws_config::imds=off"
    )]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the continuous queries (INSERT INTO … SELECT) of a pipeline file.
    Run {
        /// The pipeline file.
        file: PathBuf,
        /// Do not show live progress (the summary is still printed).
        #[arg(long)]
        quiet: bool,
        #[command(flatten)]
        checkpoints: laketide::checkpointing::CheckpointArgs,
        #[command(flatten)]
        ui: run::UiArgs,
        /// How often GROUP BY queries without a window emit the results that changed, e.g.
        /// 1s, 200ms, 0s (every batch). Default: the pipeline's `SET update_interval = '…'`,
        /// or 1s.
        #[arg(long, value_name = "DURATION", value_parser = parse_update_interval)]
        update_interval: Option<std::time::Duration>,
    },
    /// Validate a pipeline file without running it; errors are shown with line:column.
    Check {
        /// The pipeline file.
        file: PathBuf,
    },
    /// Print the dataflow graph a pipeline file runs.
    Explain {
        /// The pipeline file.
        file: PathBuf,
    },
    /// Ad-hoc SQL over the lake's Delta tables; without SQL, an interactive shell.
    Query {
        /// The SQL statement to run.
        sql: Option<String>,
        /// The lake root: every Delta table directly under it is a table named after its folder.
        #[arg(long, default_value = "lake", conflicts_with = "file")]
        lake: PathBuf,
        /// Query the tables a pipeline file declares instead: its sources (what they hold now)
        /// and its Delta and filesystem sinks.
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// Time travel: read TABLE as of Delta version N (repeatable), e.g. --at revenue=3.
        #[arg(long = "at", value_name = "TABLE=VERSION", value_parser = parse_version, conflicts_with = "file")]
        at: Vec<(String, u64)>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = query::OutputFormat::Table)]
        format: query::OutputFormat,
    },
    /// Generate clickstream events as JSON lines (bounded out-of-order event time).
    Generate {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Number of events.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Number of files.
        #[arg(long, default_value_t = 4)]
        files: usize,
        /// Largest out-of-orderness in milliseconds.
        #[arg(long, default_value_t = 1_500)]
        max_delay_ms: i64,
        /// Event-time microseconds between consecutive events.
        #[arg(long, default_value_t = 1_000)]
        step_us: i64,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Number of distinct users (`laketide bench` uses 1,000,000: millions of sessions).
        #[arg(long, default_value_t = 1_000)]
        users: u32,
        /// Timestamp encoding.
        #[arg(long, value_enum, default_value_t = TimeFormat::Rfc3339)]
        time_format: TimeFormat,
    },
    /// Write generated clickstream events (or the lines of files) into a Kinesis stream.
    Produce {
        /// Stream name or ARN.
        #[arg(long)]
        stream: String,
        /// Send the lines of these files (a file, directory or glob) instead of generated events.
        #[arg(long)]
        file: Option<String>,
        /// Number of generated events (their event times start now).
        #[arg(long, default_value_t = 10_000, conflicts_with = "file")]
        events: u64,
        /// Records per second at most (0: as fast as the stream takes them).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// JSON field whose value is each record's partition key (default: random keys).
        #[arg(long)]
        partition_key: Option<String>,
        /// Pack this many records into each Kinesis record, as the KPL does (1: no aggregation).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
        aggregate: u32,
        /// Create the stream with this many shards if it does not exist.
        #[arg(long, value_name = "SHARDS")]
        create: Option<i32>,
        /// Kinesis endpoint (default: AWS_ENDPOINT_URL_KINESIS, AWS_ENDPOINT_URL, or AWS).
        #[arg(long)]
        endpoint: Option<String>,
        /// AWS region (default: AWS_REGION or the profile's).
        #[arg(long)]
        region: Option<String>,
    },
    /// Delta table maintenance: compact small files, delete unreferenced ones.
    Lake {
        #[command(subcommand)]
        action: LakeCommand,
    },
    /// Benchmark: generate events; run TUMBLE, HOP and SESSION over them (checked against
    /// batch queries) and the example pipeline with and without checkpoints; or, with
    /// `--suite nexmark`, the Nexmark queries laketide runs.
    Bench {
        /// Which benchmark: the clickstream windows and example pipeline, or Nexmark.
        #[arg(long, value_enum, default_value_t = BenchSuite::Clickstream)]
        suite: BenchSuite,
        /// Number of events (Nexmark: over all three event kinds; 46 of 50 are bids).
        #[arg(long, default_value_t = 4_000_000)]
        events: u64,
        /// Working directory (default: a temporary one).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also run it into a Delta table under this s3:// lake root and report the ratio.
        #[arg(long)]
        s3_lake: Option<String>,
        /// Also measure the DynamoDB sink: write this many items into fresh tables on the
        /// server of the AWS environment (AWS_ENDPOINT_URL_DYNAMODB), with 1, 4 and 16
        /// requests in flight; then a lookup join of ten times as many generated clicks
        /// with a DynamoDB table of customers, with the lookup cache on and off.
        #[arg(long, value_name = "ITEMS")]
        dynamodb: Option<usize>,
    },
}

/// The benchmarks of `laketide bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchSuite {
    /// TUMBLE, HOP and SESSION over a generated clickstream, and the example pipeline.
    Clickstream,
    /// Nexmark q0, q1, q2, q7, q20 and q15 to q19 over generated bids (and auctions).
    Nexmark,
}

#[derive(Debug, Subcommand)]
enum LakeCommand {
    /// Compact the small files of a Delta table (optionally of some partitions).
    Optimize {
        /// A table name under the lake root, or a table path or s3:// URL.
        table: String,
        /// The lake root (a directory or s3://bucket/prefix).
        #[arg(long, default_value = "lake")]
        lake: String,
        /// Target file size, e.g. 128MB.
        #[arg(long, value_parser = parse_size)]
        target_size: Option<u64>,
        /// Only partitions where column=value (repeatable).
        #[arg(long)]
        partition: Vec<String>,
    },
    /// Delete files a Delta table no longer references, older than the retention period.
    Vacuum {
        /// A table name under the lake root, or a table path or s3:// URL.
        table: String,
        /// The lake root (a directory or s3://bucket/prefix).
        #[arg(long, default_value = "lake")]
        lake: String,
        /// Keep unreferenced files younger than this (readers of old versions may need them).
        #[arg(long, default_value = "7d", value_parser = parse_retention)]
        retain: std::time::Duration,
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
}

fn parse_version(s: &str) -> Result<(String, u64), String> {
    let (table, version) = s.split_once('=').ok_or("expected TABLE=VERSION")?;
    let version = version
        .trim()
        .parse()
        .map_err(|_| format!("not a version number: {version}"))?;
    Ok((table.trim().to_string(), version))
}

fn parse_size(s: &str) -> Result<u64, String> {
    laketide_connectors::parse_bytes(s).ok_or_else(|| format!("not a size: {s} (e.g. 128MB)"))
}

fn parse_retention(s: &str) -> Result<std::time::Duration, String> {
    laketide_connectors::parse_duration(s)
        .ok_or_else(|| format!("not a duration: {s} (e.g. 7d, 12h)"))
}

fn parse_update_interval(text: &str) -> Result<std::time::Duration, String> {
    laketide_connectors::parse_duration(text)
        .ok_or_else(|| format!("`{text}` is not a duration such as 1s, 200ms or 0s"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Run {
            file,
            quiet,
            checkpoints,
            ui,
            update_interval,
        } => {
            let plan = laketide_sql::PlanOptions { update_interval };
            run::run(&file, quiet, &checkpoints, &ui, &plan).await
        }
        Command::Check { file } => check::check(&file).await,
        Command::Explain { file } => check::explain(&file).await,
        Command::Query {
            sql,
            lake,
            file,
            at,
            format,
        } => {
            let versions: std::collections::HashMap<String, u64> = at.into_iter().collect();
            let tables = match &file {
                Some(f) => query::Tables::Pipeline(f),
                None => query::Tables::Lake(&lake, &versions),
            };
            query::query(tables, sql.as_deref(), format).await
        }
        Command::Generate {
            out,
            events,
            files,
            max_delay_ms,
            step_us,
            seed,
            users,
            time_format,
        } => generate::generate(
            &out,
            &ClickstreamSpec {
                events,
                files,
                max_delay_ms,
                step_us,
                seed,
                users,
                time_format,
                ..Default::default()
            },
        ),
        Command::Bench {
            suite: BenchSuite::Nexmark,
            events,
            dir,
            s3_lake,
            dynamodb,
        } => {
            if dir.is_some() || s3_lake.is_some() || dynamodb.is_some() {
                Err(laketide::CliError::Usage(
                    "--dir, --s3-lake and --dynamodb belong to the clickstream benchmark, not to --suite nexmark".into(),
                ))
            } else {
                bench_nexmark::bench_nexmark(events, release_memory).await
            }
        }
        Command::Bench {
            suite: BenchSuite::Clickstream,
            events,
            dir,
            s3_lake,
            dynamodb,
        } => {
            let result = bench::bench(events, dir, s3_lake.as_deref()).await;
            match (result, dynamodb) {
                (Ok(()), Some(items)) => match bench_dynamodb::bench_dynamodb(items).await {
                    Ok(()) => {
                        let dir = std::env::temp_dir()
                            .join(format!("laketide-bench-lookup-{}", std::process::id()));
                        let result = bench_lookup::bench_lookup(10 * items as u64, &dir).await;
                        let _ = std::fs::remove_dir_all(&dir);
                        result
                    }
                    failed => failed,
                },
                (result, _) => result,
            }
        }
        Command::Produce {
            stream,
            file,
            events,
            rate,
            partition_key,
            aggregate,
            create,
            endpoint,
            region,
        } => {
            produce::produce(&produce::ProduceSpec {
                stream,
                file,
                events,
                rate,
                partition_key,
                aggregate: aggregate as usize,
                create_shards: create,
                aws: laketide_connectors::aws::AwsOptions { endpoint, region },
            })
            .await
        }
        Command::Lake { action } => match action {
            LakeCommand::Optimize {
                table,
                lake,
                target_size,
                partition,
            } => maintain::optimize(&maintain::locate(&table, &lake), target_size, &partition)
                .await
                .map(|s| println!("{s}")),
            LakeCommand::Vacuum {
                table,
                lake,
                retain,
                dry_run,
            } => maintain::vacuum(&maintain::locate(&table, &lake), retain, dry_run)
                .await
                .map(|s| println!("{s}")),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
