//! End-to-end tests of the `laketide` binary: the example pipelines against golden outputs,
//! located errors, bad-record policies, and a continuous run stopped with SIGINT.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn laketide(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_laketide"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("laketide runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Runs `laketide query … --format csv SQL` (after `query_args`) in `dir`; fails the test on
/// an error and returns the trimmed output.
fn query_csv(dir: &Path, query_args: &[&str], sql: &str) -> String {
    let mut args = vec!["query"];
    args.extend_from_slice(query_args);
    args.extend_from_slice(&["--format", "csv", sql]);
    let out = laketide(dir, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_string()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temporary working directory with a copy of `examples/`.
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("examples"), &dir.path().join("examples"));
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn parquet_files(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            n += parquet_files(&path);
        } else if path.extension().is_some_and(|e| e == "parquet") {
            n += 1;
        }
    }
    n
}

fn golden(name: &str, actual: &str) {
    let path = repo().join("tests/golden").join(name);
    if std::env::var_os("LAKETIDE_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing golden file {}", path.display()));
    assert_eq!(
        actual,
        expected,
        "output differs from {} (LAKETIDE_BLESS=1 rewrites it)",
        path.display()
    );
}

#[test]
fn clickstream_example_runs_into_the_lake_and_is_queryable() {
    let dir = workdir();
    let run = laketide(dir.path(), &["run", "examples/clickstream.sql", "--quiet"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).contains("3000 records in"), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("0 late rows dropped, 0 bad records"),
        "{}",
        stderr(&run)
    );

    let q = laketide(
        dir.path(),
        &[
            "query",
            "--format",
            "csv",
            "SELECT window_start, window_end, action, events, round(revenue, 2) AS revenue FROM revenue_per_minute ORDER BY window_start, action",
        ],
    );
    assert!(q.status.success(), "{}", stderr(&q));
    golden("clickstream_revenue.csv", &stdout(&q));

    let table = laketide(
        dir.path(),
        &[
            "query",
            "SELECT sum(events) AS events FROM revenue_per_minute",
        ],
    );
    assert!(stdout(&table).contains("| 3000   |"), "{}", stdout(&table));
    let json = laketide(
        dir.path(),
        &[
            "query",
            "--format",
            "json",
            "SELECT count(*) AS n FROM revenue_per_minute",
        ],
    );
    assert_eq!(stdout(&json).trim(), "{\"n\":22}");

    // `query -f` registers the pipeline's own tables: the source as it is now, the sink as
    // written. A batch query over the source agrees with every streaming window result.
    let oracle = laketide(
        dir.path(),
        &[
            "query",
            "-f",
            "examples/clickstream.sql",
            "--format",
            "csv",
            "SELECT (SELECT count(*) FROM clicks) AS clicks, count(*) AS matching_windows
             FROM (SELECT date_bin(INTERVAL '1 minute', ts) AS w, action, count(*) AS c, round(sum(amount), 2) AS r
                   FROM clicks GROUP BY 1, 2) AS batch
             JOIN revenue_per_minute AS stream
               ON batch.w = stream.window_start AND batch.action = stream.action
              AND batch.c = stream.events AND batch.r = round(stream.revenue, 2)",
        ],
    );
    assert!(oracle.status.success(), "{}", stderr(&oracle));
    assert_eq!(stdout(&oracle).trim(), "clicks,matching_windows\n3000,22");

    // The interactive shell reads statements ending with `;` (here from a pipe).
    let mut shell = Command::new(env!("CARGO_BIN_EXE_laketide"))
        .args(["query", "--format", "csv"])
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        shell.stdin.as_mut().unwrap(),
        b"SELECT count(*)\n  AS n FROM revenue_per_minute;\nSELECT max(events) AS m FROM revenue_per_minute;\n\\q\n",
    )
    .unwrap();
    let shell = shell.wait_with_output().unwrap();
    assert!(shell.status.success(), "{}", stderr(&shell));
    let out = stdout(&shell);
    assert!(out.contains("n\n22") && out.contains("m\n"), "{out}");

    // A second run resumes from the first run's last checkpoint: every file is read already,
    // so nothing is added twice.
    let again = laketide(dir.path(), &["run", "examples/clickstream.sql", "--quiet"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("resumed from 1"),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        query_csv(
            dir.path(),
            &[],
            "SELECT sum(events) AS e FROM revenue_per_minute"
        ),
        "e\n3000"
    );
    // From scratch, the files are read again and appended to the existing table.
    let scratch = laketide(
        dir.path(),
        &[
            "run",
            "examples/clickstream.sql",
            "--quiet",
            "--from-scratch",
        ],
    );
    assert!(scratch.status.success(), "{}", stderr(&scratch));
    assert_eq!(
        query_csv(
            dir.path(),
            &[],
            "SELECT sum(events) AS e FROM revenue_per_minute"
        ),
        "e\n6000"
    );

    // Time travel: version 0 created the table, version 1 is the first run's commit.
    assert_eq!(
        query_csv(
            dir.path(),
            &["--at", "revenue_per_minute=1"],
            "SELECT sum(events) AS e FROM revenue_per_minute"
        ),
        "e\n3000"
    );
    let unknown = laketide(dir.path(), &["query", "--at", "nope=1", "SELECT 1"]);
    assert!(
        stderr(&unknown).contains("--at names `nope`"),
        "{}",
        stderr(&unknown)
    );

    // Maintenance: the two runs left two small files; optimize compacts them, vacuum deletes
    // the replaced ones (after a dry run), and the table reads the same throughout.
    let table = dir.path().join("lake/revenue_per_minute");
    assert_eq!(parquet_files(&table), 2);
    let optimize = laketide(dir.path(), &["lake", "optimize", "revenue_per_minute"]);
    assert!(optimize.status.success(), "{}", stderr(&optimize));
    assert!(
        stdout(&optimize).contains("2 files compacted into 1"),
        "{}",
        stdout(&optimize)
    );
    let dry = laketide(
        dir.path(),
        &[
            "lake",
            "vacuum",
            "revenue_per_minute",
            "--retain",
            "0s",
            "--dry-run",
        ],
    );
    assert!(
        stdout(&dry).contains("2 files would be deleted"),
        "{}{}",
        stdout(&dry),
        stderr(&dry)
    );
    assert_eq!(parquet_files(&table), 3);
    let vacuum = laketide(
        dir.path(),
        &["lake", "vacuum", "revenue_per_minute", "--retain", "0s"],
    );
    assert!(
        stdout(&vacuum).contains("2 files deleted"),
        "{}{}",
        stdout(&vacuum),
        stderr(&vacuum)
    );
    assert_eq!(parquet_files(&table), 1);
    assert_eq!(
        query_csv(
            dir.path(),
            &[],
            "SELECT sum(events) AS e FROM revenue_per_minute"
        ),
        "e\n6000"
    );
}

#[test]
fn several_queries_share_a_source_with_views_sessions_hops_and_console_output() {
    let dir = workdir();
    let run = laketide(
        dir.path(),
        &["run", "examples/sessions_and_views.sql", "--quiet"],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let out = stdout(&run);
    assert!(out.contains("big_purchases:"), "{out}");
    assert!(
        out.contains("/CHECKOUT") || out.contains("/CART") || out.contains("/HOME"),
        "{out}"
    );
    let summary = stderr(&run);
    assert!(summary.contains("user_sessions:"), "{summary}");
    assert!(summary.contains("page_views_5min:"), "{summary}");
    // The filesystem sink leaves only complete, visible files.
    let files: Vec<String> = std::fs::read_dir(dir.path().join("lake/page_views_5min"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        !files.is_empty()
            && files
                .iter()
                .all(|f| f.starts_with("part-") && f.ends_with(".json")),
        "{files:?}"
    );
    let sessions = laketide(
        dir.path(),
        &[
            "query",
            "--format",
            "csv",
            "SELECT count(*) AS sessions, sum(events) AS events FROM user_sessions",
        ],
    );
    let text = stdout(&sessions);
    assert!(
        text.ends_with(",3000\n"),
        "every click is in one session: {text}"
    );
}

#[test]
fn parquet_files_written_by_one_pipeline_are_read_by_another() {
    let dir = workdir();
    std::fs::write(
        dir.path().join("to_parquet.sql"),
        "CREATE TABLE clicks (event_id BIGINT, user_id TEXT, amount DOUBLE, ts TIMESTAMP)
           WITH (connector = 'file', path = 'examples/data/clicks/', mode = 'once', reader_threads = 1);
         CREATE TABLE pq WITH (connector = 'filesystem', path = 'out/pq', format = 'parquet', rollover_size = '16KB');
         INSERT INTO pq SELECT event_id, user_id, amount, ts FROM clicks;",
    )
    .unwrap();
    let first = laketide(dir.path(), &["run", "to_parquet.sql", "--quiet"]);
    assert!(first.status.success(), "{}", stderr(&first));
    std::fs::write(
        dir.path().join("from_parquet.sql"),
        "CREATE TABLE pq (event_id BIGINT, user_id TEXT, amount DOUBLE, ts TIMESTAMP,
           WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
           WITH (connector = 'file', path = 'out/pq', format = 'parquet', mode = 'once');
         CREATE TABLE per_minute WITH (connector = 'delta', path = 'lake/per_minute');
         INSERT INTO per_minute SELECT window_start, count(*) AS n, count(DISTINCT user_id) AS users
         FROM TUMBLE(pq, ts, INTERVAL '1' MINUTE) GROUP BY window_start, window_end;",
    )
    .unwrap();
    // One reader keeps the rows in time order, so that the second pipeline's 2 s watermark
    // delay holds for the files it writes.
    let second = laketide(dir.path(), &["run", "from_parquet.sql", "--quiet"]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(
        query_csv(
            dir.path(),
            &[],
            "SELECT count(*) AS windows, sum(n) AS n FROM per_minute"
        ),
        "windows,n\n6,3000"
    );
}

#[test]
fn version_names_the_release_and_the_git_commit() {
    let dir = workdir();
    let out = laketide(dir.path(), &["--version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("laketide {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    if head.status.success() {
        let commit = String::from_utf8_lossy(&head.stdout).trim().to_string();
        assert!(text.contains(&format!("(commit {commit})")), "{text}");
    }
}

#[test]
fn check_and_explain() {
    let dir = workdir();
    let ok = laketide(dir.path(), &["check", "examples/clickstream.sql"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(
        stdout(&ok).contains("ok (1 source, 1 sink, bounded"),
        "{}",
        stdout(&ok)
    );

    let s3 = laketide(dir.path(), &["check", "examples/clickstream_s3.sql"]);
    assert!(s3.status.success(), "{}", stderr(&s3));
    let views = laketide(dir.path(), &["check", "examples/sessions_and_views.sql"]);
    assert!(views.status.success(), "{}", stderr(&views));
    let dynamodb = laketide(dir.path(), &["check", "examples/clicks_to_dynamodb.sql"]);
    assert!(dynamodb.status.success(), "{}", stderr(&dynamodb));
    let live = laketide(dir.path(), &["check", "examples/customer_live_stats.sql"]);
    assert!(live.status.success(), "{}", stderr(&live));
    let kinesis = laketide(dir.path(), &["check", "examples/kinesis_to_lake.sql"]);
    assert!(kinesis.status.success(), "{}", stderr(&kinesis));
    let explain = laketide(dir.path(), &["explain", "examples/kinesis_to_lake.sql"]);
    assert!(
        stdout(&explain).contains("source clicks: kinesis clicks (json, from trim_horizon)"),
        "{}",
        stdout(&explain)
    );

    let explain = laketide(dir.path(), &["explain", "examples/clickstream.sql"]);
    let text = stdout(&explain);
    for part in [
        "source clicks: file examples/data/clicks/ (json, once)",
        "tumble size 1min on ts",
        "window_aggregate",
        "sink revenue_per_minute: delta lake/revenue_per_minute",
    ] {
        assert!(text.contains(part), "missing `{part}` in:\n{text}");
    }

    std::fs::write(
        dir.path().join("bad.sql"),
        "CREATE TABLE clicks (id BIGINT, ts TIMESTAMP)\n  WITH (connector = 'file', path = 'x',\n        colour = 'red');\n",
    )
    .unwrap();
    let bad = laketide(dir.path(), &["check", "bad.sql"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("bad.sql:3:9: table `clicks`: unknown option `colour`"),
        "{}",
        stderr(&bad)
    );

    std::fs::write(dir.path().join("typo.sql"), "CREATE TABLE t (a BIGINT) WITH (connector = 'file', path = 'x');\nINSERT INTO t SELEC a FROM t;\n").unwrap();
    let typo = laketide(dir.path(), &["check", "typo.sql"]);
    assert!(stderr(&typo).contains("typo.sql:2:"), "{}", stderr(&typo));

    std::fs::write(
        dir.path().join("types.sql"),
        "CREATE TABLE t (a BIGINT, s TEXT, ts TIMESTAMP, WATERMARK FOR ts AS ts) WITH (connector = 'file', path = 'x');\nCREATE TABLE o WITH (connector = 'console');\nINSERT INTO o\nSELECT window_start, sum(s) FROM TUMBLE(t, ts, INTERVAL '1' MINUTE) GROUP BY window_start, window_end;\n",
    )
    .unwrap();
    let types = laketide(dir.path(), &["check", "types.sql"]);
    assert!(!types.status.success());
    assert!(stderr(&types).contains("types.sql:"), "{}", stderr(&types));
}

#[test]
fn bad_records_go_to_the_dead_letter_file_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("in")).unwrap();
    std::fs::write(
        dir.path().join("in/a.json"),
        "{\"id\":1,\"ts\":\"2024-01-01T00:00:01Z\"}\n{\"id\":\"two\",\"ts\":\"2024-01-01T00:00:02Z\"}\n{\"id\":3,\"ts\":\"2024-01-01T00:00:03Z\"}\n",
    )
    .unwrap();
    let pipeline = |policy: &str| {
        format!(
            "CREATE TABLE e (id BIGINT, ts TIMESTAMP) WITH (connector = 'file', path = 'in', mode = 'once', on_error = '{policy}', dead_letter_path = 'dlq/e.jsonl');
             CREATE TABLE out WITH (connector = 'filesystem', path = 'out', format = 'csv');
             INSERT INTO out SELECT id FROM e;"
        )
    };
    std::fs::write(dir.path().join("p.sql"), pipeline("dead_letter")).unwrap();
    let run = laketide(dir.path(), &["run", "p.sql", "--quiet"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).contains("1 bad records"), "{}", stderr(&run));
    let dead = std::fs::read_to_string(dir.path().join("dlq/e.jsonl")).unwrap();
    let record: serde_json::Value = serde_json::from_str(dead.trim()).unwrap();
    assert_eq!(record["location"], "in/a.json:2");
    assert_eq!(
        record["raw"],
        "{\"id\":\"two\",\"ts\":\"2024-01-01T00:00:02Z\"}"
    );

    std::fs::write(
        dir.path().join("p.sql"),
        pipeline("fail").replace(", dead_letter_path = 'dlq/e.jsonl'", ""),
    )
    .unwrap();
    // From scratch: the first run's checkpoint says the file is read.
    let fail = laketide(dir.path(), &["run", "p.sql", "--quiet", "--from-scratch"]);
    assert!(!fail.status.success());
    assert!(
        stderr(&fail).contains("bad record at in/a.json:2"),
        "{}",
        stderr(&fail)
    );
}

fn write_events(dir: &Path, name: &str, first_id: u64, count: u64, start_second: u64) {
    let mut text = String::new();
    for i in 0..count {
        let s = start_second + i;
        text.push_str(&format!(
            "{{\"id\":{},\"ts\":\"2024-01-01T00:{:02}:{:02}Z\"}}\n",
            first_id + i,
            s / 60,
            s % 60
        ));
    }
    // Written under a hidden name and renamed, as a well-behaved producer does.
    let temp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(temp, dir.join(name)).unwrap();
}

fn committed_rows(lake_table: &Path) -> usize {
    // Count the rows of every committed data file through the query command's engine.
    let log = lake_table.join("_delta_log");
    if !log.is_dir() {
        return 0;
    }
    let out = laketide(
        lake_table.parent().unwrap().parent().unwrap(),
        &[
            "query",
            "--lake",
            "lake",
            "--format",
            "csv",
            "SELECT coalesce(sum(n), 0) AS n FROM counts",
        ],
    );
    stdout(&out)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(unix)]
#[test]
fn without_checkpoints_continuous_mode_reads_new_files_once_and_sigint_flushes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    write_events(&input, "a.json", 0, 30, 0);
    std::fs::write(
        dir.path().join("p.sql"),
        "CREATE TABLE e (id BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
           WITH (connector = 'file', path = 'in', poll_interval = '100ms');
         CREATE TABLE counts WITH (connector = 'delta', path = 'lake/counts', commit_interval = '1s');
         INSERT INTO counts SELECT window_start, count(*) AS n FROM TUMBLE(e, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end;",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_laketide"))
        .args(["run", "p.sql", "--quiet", "--no-checkpoints"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let table = dir.path().join("lake/counts");
    let wait_for = |rows: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while committed_rows(&table) < rows {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {rows} committed rows"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // Windows [0,10) and [10,20) close (watermark 28 s); [20,30) stays open.
    wait_for(20);
    write_events(&input, "b.json", 30, 30, 30);
    wait_for(50);
    // The same file name is not read again, and nothing else arrives: stop.
    std::thread::sleep(Duration::from_millis(500));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "laketide did not stop after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(exit.success(), "{err}");
    assert!(err.contains("60 records in"), "{err}");
    // Stopping flushed the last open window: all 60 events are in the table, once.
    assert_eq!(committed_rows(&table), 60, "{err}");
}

#[test]
fn a_column_delta_cannot_store_is_one_clear_line() {
    let dir = workdir();
    std::fs::write(
        dir.path().join("p.sql"),
        "CREATE TABLE clicks (event_id BIGINT, ts TIMESTAMP)
           WITH (connector = 'file', path = 'examples/data/clicks/', mode = 'once');
         CREATE TABLE out WITH (connector = 'delta', path = 'lake/out');
         INSERT INTO out SELECT event_id, ts - ts AS gap FROM clicks;",
    )
    .unwrap();
    let run = laketide(dir.path(), &["run", "p.sql", "--quiet"]);
    assert!(!run.status.success());
    let err = stderr(&run);
    assert!(
        err.contains("cannot be stored in Delta") && err.contains("Duration"),
        "{err}"
    );
    assert!(
        !err.contains("backtrace") && err.lines().count() <= 3,
        "{err}"
    );
}

#[test]
fn the_delta_sink_compacts_small_files_on_its_own() {
    let dir = workdir();
    // Without checkpoints a tiny buffer commits after every batch of 100 rows: 30 small
    // commits.
    std::fs::write(
        dir.path().join("p.sql"),
        "CREATE TABLE clicks (event_id BIGINT, user_id TEXT, ts TIMESTAMP)
           WITH (connector = 'file', path = 'examples/data/clicks/', mode = 'once', batch_size = '100', reader_threads = 1);
         CREATE TABLE copied WITH (connector = 'delta', path = 'lake/copied', max_buffer_size = '1KB', compact_file_count = '8');
         INSERT INTO copied SELECT event_id, user_id FROM clicks;",
    )
    .unwrap();
    let run = laketide(dir.path(), &["run", "p.sql", "--quiet", "--no-checkpoints"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let table = dir.path().join("lake/copied");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (files, operations) = runtime.block_on(async {
        let url = deltalake::ensure_table_uri(table.to_str().unwrap()).unwrap();
        let t = deltalake::open_table(url).await.unwrap();
        let files = t.snapshot().unwrap().log_data().num_files();
        let history: Vec<_> = futures::TryStreamExt::try_collect(t.history(None))
            .await
            .unwrap();
        let operations: Vec<String> = history.into_iter().filter_map(|c| c.operation).collect();
        (files, operations)
    });
    let appends = operations.iter().filter(|o| *o == "WRITE").count();
    let compactions = operations.iter().filter(|o| *o == "OPTIMIZE").count();
    assert!(appends >= 20, "{operations:?}");
    assert!(compactions >= 2, "{operations:?}");
    assert!(
        files < 8,
        "compaction keeps the file count below the limit: {files}"
    );
    // Nothing lost or repeated by compaction.
    let out = laketide(
        dir.path(),
        &[
            "query",
            "--lake",
            "lake",
            "--format",
            "csv",
            "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM copied",
        ],
    );
    assert_eq!(stdout(&out).trim(), "n,d\n3000,3000");
}
