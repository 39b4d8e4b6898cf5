//! `laketide bench --suite nexmark`: the Nexmark queries laketide runs (q0, q1, q2, the
//! regular joins q3 and q20, q4 and q9 over a join, the interval join q7, the window join q8,
//! the lookup join q13 and the updating q15-q19), each over the
//! `nexmark` source's bids into a blackhole sink (as Flink's and RisingWave's Nexmark runs
//! do), measured (events/s end to end, peak memory, throughput as a share of q0's) and checked:
//! the fingerprint of each result (the table an updating result leaves) must equal that of
//! the same query run by DataFusion as a batch query over the same generated bids.

use std::sync::Arc;

use datafusion::arrow::compute::cast;
use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::{CsvReadOptions, SessionContext};
use laketide_connectors::Options;
use laketide_connectors::blackhole::{BlackholeSink, Fingerprint};
use laketide_connectors::nexmark::{NexmarkSource, NexmarkSourceConfig};
use laketide_engine::checkpoint::{CheckpointInfo, CheckpointSettings, CheckpointStore, Recovery};
use laketide_engine::{RunOptions, Source, SourcePoll};
use laketide_sql::{Location, Planner, Statement, parse_query, parse_script};

use crate::error::{CliError, Result};
use crate::progress::human_rate;

/// One Nexmark query over table `bid`, run alike as a streaming and as a batch query.
struct NexmarkQuery {
    name: &'static str,
    sql: String,
    /// The batch query where it differs (window table functions spelled out).
    batch: Option<String>,
}

impl NexmarkQuery {
    fn batch_sql(&self) -> &str {
        self.batch.as_deref().unwrap_or(&self.sql)
    }
}

/// Nexmark q7 (the highest bid of every 10 seconds, joined back to its bids); `windows` is
/// the table of windowed maxima (a TUMBLE aggregate, or its batch form).
fn q7(windows: &str) -> String {
    format!(
        "SELECT b.auction, b.price, b.bidder, b.date_time, b.extra
         FROM bid b
         JOIN ({windows}) m ON b.price = m.maxprice
         WHERE b.date_time BETWEEN m.window_end - INTERVAL '10' SECOND AND m.window_end"
    )
}

/// Nexmark q5 (the auctions with the most bids in each 10-second window sliding by 2
/// seconds) over the bid counts per auction and window (`counts`: a HOP aggregate, or its
/// batch form).
fn q5(counts: &str) -> String {
    format!(
        "SELECT ab.auction, ab.num, ab.starttime
         FROM ({counts}) ab
         JOIN (SELECT max(num) AS maxn, starttime, endtime FROM ({counts}) cb
               GROUP BY starttime, endtime) mb
           ON ab.starttime = mb.starttime AND ab.endtime = mb.endtime AND ab.num >= mb.maxn"
    )
}

/// The batch form of q5's counts: each bid in the five 10-second windows that hold it.
fn q5_batch_counts() -> String {
    let windows: Vec<String> = (0..5)
        .map(|k| {
            format!(
                "SELECT auction, date_bin(INTERVAL '2 seconds', date_time, TIMESTAMP '1970-01-01T00:00:00') - INTERVAL '{}' SECOND AS starttime FROM bid",
                2 * k
            )
        })
        .collect();
    format!(
        "SELECT auction, count(*) AS num, starttime, starttime + INTERVAL '10' SECOND AS endtime
         FROM ({}) w GROUP BY auction, starttime",
        windows.join(" UNION ALL ")
    )
}

/// Nexmark q8 (people who opened an account and an auction in the same 10 seconds) over the
/// windowed people and sellers (TUMBLE aggregates, or their batch forms).
fn q8(people: &str, sellers: &str) -> String {
    format!(
        "SELECT p.id, p.name, p.starttime
         FROM ({people}) p JOIN ({sellers}) a
           ON p.id = a.seller AND p.starttime = a.starttime AND p.endtime = a.endtime"
    )
}

/// The `count(*) FILTER …`, `count(DISTINCT …) FILTER …` columns of q15 and q16.
const RANKED_COUNTS: &str = "count(*) AS total_bids,
  count(*) FILTER (WHERE price < 10000) AS rank1_bids,
  count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids,
  count(*) FILTER (WHERE price >= 1000000) AS rank3_bids,
  count(DISTINCT bidder) AS total_bidders,
  count(DISTINCT bidder) FILTER (WHERE price < 10000) AS rank1_bidders,
  count(DISTINCT bidder) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bidders,
  count(DISTINCT bidder) FILTER (WHERE price >= 1000000) AS rank3_bidders,
  count(DISTINCT auction) AS total_auctions,
  count(DISTINCT auction) FILTER (WHERE price < 10000) AS rank1_auctions,
  count(DISTINCT auction) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_auctions,
  count(DISTINCT auction) FILTER (WHERE price >= 1000000) AS rank3_auctions";

fn queries() -> Vec<NexmarkQuery> {
    let query = |name, sql: &str| NexmarkQuery {
        name,
        sql: sql.to_string(),
        batch: None,
    };
    let ten_seconds = "date_bin(INTERVAL '10 seconds', date_time, TIMESTAMP '1970-01-01T00:00:00') + INTERVAL '10 seconds'";
    let ten_start = "date_bin(INTERVAL '10 seconds', date_time, TIMESTAMP '1970-01-01T00:00:00')";
    vec![
        query(
            "q0 (pass-through)",
            "SELECT auction, bidder, price, date_time, extra FROM bid",
        ),
        query(
            "q1 (currency conversion)",
            "SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid",
        ),
        query(
            "q2 (selection)",
            "SELECT auction, price FROM bid WHERE auction % 123 = 0",
        ),
        NexmarkQuery {
            name: "q7 (highest bid, an interval join with a windowed aggregate)",
            sql: q7("SELECT max(price) AS maxprice, window_end
                     FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND)
                     GROUP BY window_start, window_end"),
            batch: Some(q7(&format!(
                "SELECT max(price) AS maxprice, {ten_seconds} AS window_end FROM bid GROUP BY 2"
            ))),
        },
        NexmarkQuery {
            name: "q13 (bids joined with a side input, a lookup join)",
            sql: "SELECT b.auction, b.bidder, b.price, b.date_time, s.value
                  FROM bid b JOIN side_input FOR SYSTEM_TIME AS OF PROCTIME() AS s
                    ON b.auction % 10000 = s.key"
                .to_string(),
            batch: Some(
                "SELECT b.auction, b.bidder, b.price, b.date_time, s.value
                 FROM bid b JOIN side_input s ON b.auction % 10000 = s.key"
                    .to_string(),
            ),
        },
        // The generator writes states in lower case (as RisingWave's q3 spells them).
        query(
            "q3 (local item suggestion, a regular join of auctions and people)",
            "SELECT p.name, p.city, p.state, a.id
             FROM auction a JOIN person p ON a.seller = p.id
             WHERE a.category = 10 AND (p.state = 'or' OR p.state = 'id' OR p.state = 'ca')",
        ),
        query(
            "q4 (average price per category, updating over a join)",
            "SELECT q.category, avg(q.final) AS avg_final
             FROM (SELECT max(b.price) AS final, a.category
                   FROM auction a JOIN bid b ON a.id = b.auction
                   WHERE b.date_time BETWEEN a.date_time AND a.expires
                   GROUP BY a.id, a.category) q
             GROUP BY q.category",
        ),
        NexmarkQuery {
            name: "q5 (hot items, a window join of HOP aggregates)",
            sql: q5("SELECT auction, count(*) AS num, window_start AS starttime, window_end AS endtime
                     FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
                     GROUP BY auction, window_start, window_end"),
            batch: Some(q5(&q5_batch_counts())),
        },
        NexmarkQuery {
            name: "q8 (new sellers, a window join of windowed aggregates)",
            sql: q8(
                "SELECT id, name, window_start AS starttime, window_end AS endtime
                 FROM TUMBLE(person, date_time, INTERVAL '10' SECOND)
                 GROUP BY id, name, window_start, window_end",
                "SELECT seller, window_start AS starttime, window_end AS endtime
                 FROM TUMBLE(auction, date_time, INTERVAL '10' SECOND)
                 GROUP BY seller, window_start, window_end",
            ),
            batch: Some(q8(
                &format!(
                    "SELECT id, name, {ten_start} AS starttime, {ten_start} + INTERVAL '10 seconds' AS endtime
                     FROM person GROUP BY id, name, 3, 4"
                ),
                &format!(
                    "SELECT seller, {ten_start} AS starttime, {ten_start} + INTERVAL '10 seconds' AS endtime
                     FROM auction GROUP BY seller, 2, 3"
                ),
            )),
        },
        query(
            "q9 (winning bids, Top-1 over a join)",
            "SELECT id, item_name, description, initial_bid, reserve, date_time, expires, seller,
                    category, auction, bidder, price, bid_date_time FROM (
               SELECT a.*, b.auction, b.bidder, b.price, b.date_time AS bid_date_time,
                      ROW_NUMBER() OVER (PARTITION BY a.id
                                         ORDER BY b.price DESC, b.date_time, b.extra) AS rownum
               FROM auction a JOIN bid b ON a.id = b.auction
               WHERE b.date_time BETWEEN a.date_time AND a.expires) WHERE rownum <= 1",
        ),
        query(
            "q20 (bids of category-10 auctions, a regular join)",
            "SELECT b.auction, b.bidder, b.price, b.channel, b.url, b.date_time, b.extra,
                    a.item_name, a.description, a.initial_bid, a.reserve, a.date_time AS auction_time,
                    a.expires, a.seller, a.category, a.extra AS auction_extra
             FROM bid b JOIN auction a ON b.auction = a.id
             WHERE a.category = 10",
        ),
        query(
            "q15 (bidding statistics per day, updating)",
            &format!(
                "SELECT to_char(date_time, '%Y-%m-%d') AS day, {RANKED_COUNTS}
                 FROM bid GROUP BY to_char(date_time, '%Y-%m-%d')"
            ),
        ),
        query(
            "q16 (channel statistics per day, updating)",
            &format!(
                "SELECT channel, to_char(date_time, '%Y-%m-%d') AS day,
                        max(to_char(date_time, '%H:%M')) AS minute, {RANKED_COUNTS}
                 FROM bid GROUP BY channel, to_char(date_time, '%Y-%m-%d')"
            ),
        ),
        query(
            "q17 (auction statistics per day, updating)",
            "SELECT auction, to_char(date_time, '%Y-%m-%d') AS day,
                count(*) AS total_bids,
                count(*) FILTER (WHERE price < 10000) AS rank1_bids,
                count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids,
                count(*) FILTER (WHERE price >= 1000000) AS rank3_bids,
                min(price) AS min_price, max(price) AS max_price, avg(price) AS avg_price,
                sum(price) AS sum_price
             FROM bid GROUP BY auction, to_char(date_time, '%Y-%m-%d')",
        ),
        // Not in the Nexmark suite: a running total per auction, whose keys go idle as bids
        // move on to newer auctions (the shape of a customer profile kept current).
        query(
            "auction totals (updating, keys go idle)",
            "SELECT auction, count(*) AS bids, max(price) AS max_price, sum(price) AS volume
             FROM bid GROUP BY auction",
        ),
        // Ties are broken by `extra` (random text) so that the batch query picks the same
        // rows as the stream.
        query(
            "q18 (latest bid per bidder and auction, updating)",
            "SELECT auction, bidder, price, channel, url, date_time, extra FROM (
               SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction
                                            ORDER BY date_time DESC, price DESC, extra DESC) AS rank_number
               FROM bid) WHERE rank_number <= 1",
        ),
        query(
            "q19 (top 10 bids per auction, updating)",
            "SELECT * FROM (
               SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC, date_time, extra) AS rank_number
               FROM bid) WHERE rank_number <= 10",
        ),
    ]
}

/// Rows of q13's side input: keys 0 to 9,999, each with a text value.
const SIDE_INPUT_ROWS: u64 = 10_000;

/// Writes q13's side input, `key,value` lines, to `dir/side_input.csv`.
fn write_side_input(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("side_input.csv");
    let io = |source| CliError::Io {
        context: format!("writing {}", path.display()),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let text: String = (0..SIDE_INPUT_ROWS)
        .map(|k| format!("{k},value-{}\n", k * 7 % 1000))
        .collect();
    std::fs::write(&path, text).map_err(io)?;
    Ok(path)
}

/// The tables of every query: Nexmark's bids (and auctions) among the first `events` events,
/// and q13's side input at `side_input`.
fn bid_table(events: u64, side_input: &Path) -> String {
    format!(
        "CREATE TABLE side_input (key BIGINT, value TEXT)
         WITH (connector = 'file', path = '{}', format = 'csv', csv.header = 'false');
         {}",
        side_input.display(),
        stream_tables(events)
    )
}

/// Nexmark's bids, people and auctions among the first `events` events.
fn stream_tables(events: u64) -> String {
    format!(
        "CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel TEXT, url TEXT,
           date_time TIMESTAMP(3), extra TEXT,
           WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
         WITH (connector = 'nexmark', table = 'bid', events = '{events}');
         CREATE TABLE person (id BIGINT, name TEXT, email_address TEXT, credit_card TEXT,
           city TEXT, state TEXT, date_time TIMESTAMP(3), extra TEXT,
           WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
         WITH (connector = 'nexmark', table = 'person', events = '{events}');
         CREATE TABLE auction (id BIGINT, item_name TEXT, description TEXT, initial_bid BIGINT,
           reserve BIGINT, date_time TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT,
           category BIGINT, extra TEXT,
           WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
         WITH (connector = 'nexmark', table = 'auction', events = '{events}')"
    )
}

/// A measured run: its summary, the result's fingerprint and schema.
struct Measured {
    events: u64,
    seconds: f64,
    peak_mb: u64,
    fingerprint: Fingerprint,
    schema: SchemaRef,
}

/// Runs `query` over the bids of `events` events into a fingerprinting blackhole.
async fn run_query(events: u64, query: &NexmarkQuery) -> Result<Measured> {
    run_query_with(events, query, RunOptions::default())
        .await
        .map(|(m, _)| m)
}

/// [`run_query`] with `options`; also returns the run's last checkpoint and peak open state.
async fn run_query_with(
    events: u64,
    query: &NexmarkQuery,
    options: RunOptions,
) -> Result<(Measured, (Option<CheckpointInfo>, u64))> {
    let script = parse_script(&bid_table(events, &side_input_path()))?;
    let mut planner = Planner::new();
    for s in &script.statements {
        if let Statement::CreateTable(def) = s {
            planner.declare_table(def, false)?;
        }
    }
    let (parsed, lookups) = parse_query(&query.sql)?;
    for lookup in &lookups {
        planner.check_lookup_use(lookup)?;
    }
    let location = Location { line: 1, column: 1 };
    let plan = planner.plan_query(&parsed, location).await?;
    let mut builder = planner.builder().with_lookups(&lookups);
    let output = builder.add_query(&plan, location)?;
    let (sink, fingerprint) = BlackholeSink::fingerprinting();
    builder.add_sink("result", "blackhole", Box::new(sink), output.node)?;
    let planned = builder.finish();
    super::bench::reset_peak_memory();
    let summary = laketide_engine::run(planned.dataflow, options).await?;
    let peak = super::bench::peak_memory_bytes().unwrap_or(0);
    let fingerprint = *fingerprint
        .lock()
        .map_err(|_| CliError::Usage("fingerprint lock poisoned".into()))?;
    let open = summary
        .totals
        .peak_open_state
        .iter()
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(0);
    let measured = Measured {
        events: summary.totals.records_in,
        seconds: summary.elapsed.as_secs_f64(),
        peak_mb: peak / (1 << 20),
        fingerprint,
        schema: Arc::new(output.schema.as_arrow().clone()),
    };
    Ok((measured, (summary.totals.checkpoint, open)))
}

/// Runs a query with many keys again with a checkpoint every second, incremental or full,
/// and prints what checkpoints of that state cost.
async fn checkpoint_cost(
    events: u64,
    query: &NexmarkQuery,
    plain: &Measured,
    incremental: bool,
) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("laketide-nexmark-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = RunOptions {
        checkpoints: Some(CheckpointSettings {
            store: CheckpointStore::local(&dir)?,
            interval: std::time::Duration::from_secs(1),
            pipeline_name: "nexmark".into(),
            fingerprint: "nexmark".into(),
            recovery: Recovery::FromScratch,
            incremental,
        }),
        ..Default::default()
    };
    let (m, (checkpoint, keys)) = run_query_with(events, query, options).await?;
    let _ = std::fs::remove_dir_all(&dir);
    let rate = events as f64 / m.seconds.max(1e-9);
    let base = events as f64 / plain.seconds.max(1e-9);
    let kind = if incremental { "incremental" } else { "full" };
    match checkpoint {
        Some(c) => println!(
            "bench nexmark {} with a{} {kind} checkpoint every second: {} events/s ({:.2} of the run without); {} checkpoints wrote {:.1} MB, the last {:.1} MB in {} ms for {} keys",
            query.name,
            if incremental { "n" } else { "" },
            human_rate(rate),
            rate / base.max(1e-9),
            c.id,
            c.written_bytes as f64 / 1e6,
            c.bytes as f64 / 1e6,
            c.duration_ms,
            keys
        ),
        None => println!(
            "bench nexmark {} with {kind} checkpoints every second: {} events/s; the run ended before a checkpoint",
            query.name,
            human_rate(rate)
        ),
    }
    Ok(())
}

/// Every row of table `table` (`bid`, `auction` or `person`) of `events` events, as the source
/// generates them.
async fn all_rows(events: u64, table: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let script = parse_script(&stream_tables(events))?;
    let def = script
        .statements
        .iter()
        .find_map(|s| match s {
            Statement::CreateTable(def) if def.name == table => Some(def),
            _ => None,
        })
        .ok_or_else(|| CliError::Usage(format!("the {table} table")))?;
    let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
        def.columns.clone().unwrap_or_default(),
    ));
    let options = Options::new([
        ("table".to_string(), table.to_string()),
        ("events".to_string(), events.to_string()),
    ])?;
    let mut source =
        NexmarkSource::new(NexmarkSourceConfig::from_options(options)?, schema.clone())?;
    let mut batches = Vec::new();
    loop {
        match source.poll_next().await? {
            SourcePoll::Batch { batch, .. } => batches.push(batch),
            SourcePoll::Finished => return Ok((schema, batches)),
            _ => {}
        }
    }
}

/// The fingerprint of `query` run as a batch query over `bids`, its columns cast to the
/// streaming result's types.
async fn oracle(
    ctx: &SessionContext,
    query: &NexmarkQuery,
    schema: &SchemaRef,
) -> Result<Fingerprint> {
    let batches = ctx.sql(query.batch_sql()).await?.collect().await?;
    let mut fingerprint = Fingerprint::default();
    for b in batches {
        let columns = b
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| cast(c, f.data_type()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let cast_batch = RecordBatch::try_new(
            Arc::new(datafusion::arrow::datatypes::Schema::new(
                schema
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect::<Vec<_>>(),
            )),
            columns,
        )?;
        fingerprint.add(&cast_batch)?;
    }
    Ok(fingerprint)
}

/// Runs every query over the bids of `events` Nexmark events, prints a line each with its
/// throughput as a share of q0's, then checks every result against its batch query (after
/// all runs, so that the oracle's memory does not count in the runs' peaks).
///
/// `release_memory` returns the memory the allocator keeps after a run to the system (the
/// binary's allocator, mimalloc, keeps freed pages), so that each query's peak memory is its
/// own rather than the largest one before it.
pub async fn bench_nexmark(events: u64, release_memory: fn()) -> Result<()> {
    let side_input = write_side_input(side_input_path().parent().unwrap_or(Path::new(".")))?;
    let result = run_and_check(events, &side_input, release_memory).await;
    let _ = std::fs::remove_file(&side_input);
    result
}

/// Where q13's side input is written for this run.
fn side_input_path() -> PathBuf {
    std::env::temp_dir()
        .join(format!("laketide-nexmark-{}", std::process::id()))
        .join("side_input.csv")
}

/// [`bench_nexmark`] with the side input written.
async fn run_and_check(events: u64, side_input: &Path, release_memory: fn()) -> Result<()> {
    let mut measured = Vec::new();
    let mut q0_rate = None;
    for query in &queries() {
        release_memory();
        let m = run_query(events, query).await?;
        // Nexmark's throughput: generated events per second (every kind, as one source of
        // all events delivers them), whichever tables the query reads.
        let rate = events as f64 / m.seconds.max(1e-9);
        let base = *q0_rate.get_or_insert(rate);
        println!(
            "bench nexmark {}: {events} events ({} rows read) in {:.2}s = {} events/s ({:.0}% of q0); peak memory {} MB; {} result rows",
            query.name,
            m.events,
            m.seconds,
            human_rate(rate),
            100.0 * rate / base.max(1e-9),
            m.peak_mb,
            m.fingerprint.rows
        );
        measured.push(m);
    }
    let all = queries();
    // The queries with the most keys: q18 (one row per bidder and auction, most of them
    // new) and the auction totals (most keys idle), with incremental and full checkpoints.
    for name in ["q18", "auction totals"] {
        if let Some(at) = all.iter().position(|q| q.name.starts_with(name)) {
            for incremental in [true, false] {
                release_memory();
                checkpoint_cost(events, &all[at], &measured[at], incremental).await?;
            }
        }
    }
    let ctx = SessionContext::new();
    for table in ["bid", "auction", "person"] {
        let (schema, rows) = all_rows(events, table).await?;
        ctx.register_table(table, Arc::new(MemTable::try_new(schema, vec![rows])?))?;
    }
    let side_schema = datafusion::arrow::datatypes::Schema::new(vec![
        datafusion::arrow::datatypes::Field::new("key", DataType::Int64, true),
        datafusion::arrow::datatypes::Field::new("value", DataType::Utf8, true),
    ]);
    let csv = CsvReadOptions::new().has_header(false).schema(&side_schema);
    ctx.register_csv("side_input", &side_input.display().to_string(), csv)
        .await?;
    for (query, m) in queries().iter().zip(&measured) {
        let started = std::time::Instant::now();
        let expected = oracle(&ctx, query, &m.schema).await?;
        let batch_seconds = started.elapsed().as_secs_f64();
        if expected != m.fingerprint {
            return Err(CliError::Usage(format!(
                "bench nexmark {}: the streaming result ({} rows) differs from the batch query ({} rows)",
                query.name, m.fingerprint.rows, expected.rows
            )));
        }
        println!(
            "bench nexmark {}: the result equals the DataFusion batch query ({batch_seconds:.2}s over the bids in memory; the stream took {:.2}s from generation on)",
            query.name, m.seconds
        );
    }
    Ok(())
}
