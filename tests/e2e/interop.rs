//! Interoperability: Delta tables written by laketide (partitioned, with timestamps; and one
//! kept at one row per key by MERGE, with updates and deletes) are read back by an independent
//! reader, the `deltalake` Python package, which `scripts/test.sh` installs. Without it the test is skipped, except under CI or with `LAKETIDE_EMULATORS=1`.

use std::path::Path;
use std::process::Command;

fn python_reader_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import deltalake, pyarrow"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let required =
            std::env::var_os("CI").is_some() || std::env::var_os("LAKETIDE_EMULATORS").is_some();
        assert!(
            !required,
            "the deltalake Python package is missing: run the tests with scripts/test.sh"
        );
        eprintln!(
            "skipped: python3 -c 'import deltalake, pyarrow' failed (scripts/test.sh installs them)"
        );
    }
    ok
}

#[test]
fn an_independent_reader_reads_the_partitioned_delta_table() {
    if !python_reader_available() {
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let sql = std::fs::read_to_string(repo.join("examples/clickstream.sql"))
        .unwrap()
        .replace(
            "'examples/data/clicks/'",
            &format!("'{}'", repo.join("examples/data/clicks").display()),
        )
        .replace(
            "path = 'lake/revenue_per_minute')",
            "path = 'lake/revenue_per_minute', partition_by = 'action')",
        );
    assert!(sql.contains("partition_by = 'action'"));
    std::fs::write(dir.path().join("p.sql"), sql).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_laketide"))
        .args(["run", "p.sql", "--quiet"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let read = Command::new("python3")
        .arg(repo.join("tests/interop/read_delta.py"))
        .arg(dir.path().join("lake/revenue_per_minute"))
        .output()
        .unwrap();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&read.stdout).unwrap();
    assert_eq!(summary["partition_columns"], serde_json::json!(["action"]));
    assert_eq!(summary["rows"], 22);
    assert_eq!(summary["events"], 3000);
    assert_eq!(
        summary["actions"],
        serde_json::json!(["add_to_cart", "click", "purchase", "view"])
    );
    assert_eq!(summary["schema"]["window_start"], "timestamp[us]");
    assert_eq!(summary["schema"]["events"], "int64");
    assert_eq!(summary["schema"]["revenue"], "double");
    assert_eq!(summary["first_window"], "2024-05-01 11:59:00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_reader_sees_one_current_row_per_key_of_a_merged_table() {
    if !python_reader_available() {
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let generated = Command::new(env!("CARGO_BIN_EXE_laketide"))
        .args([
            "generate", "--out", "data", "--events", "8000", "--files", "2", "--users", "1500",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(generated.status.success());
    // Updates, and deletes (users leave the HAVING), over several checkpoints' MERGEs.
    std::fs::write(
        dir.path().join("p.sql"),
        "SET update_interval = '0s';
         CREATE TABLE clicks (event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP)
           WITH (connector = 'file', path = 'data', mode = 'once', batch_size = '200');
         CREATE TABLE rare WITH (connector = 'delta', path = 'lake/rare', primary_key = 'user_id');
         INSERT INTO rare SELECT user_id, count(*) AS events, max(event_id) AS last_event
           FROM clicks GROUP BY user_id HAVING count(*) < 6;",
    )
    .unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_laketide"))
        .args(["run", "p.sql", "--quiet", "--checkpoint-interval", "100ms"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let read = Command::new("python3")
        .arg(repo.join("tests/interop/read_rows.py"))
        .arg(dir.path().join("lake/rare"))
        .output()
        .unwrap();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let stored: Vec<String> = String::from_utf8_lossy(&read.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let ctx = crate::common::oracle_context(&dir.path().join("data")).await;
    let mut expected = crate::common::query_rows(
        &ctx,
        "SELECT user_id, count(*), max(event_id) FROM clicks GROUP BY user_id HAVING count(*) < 6",
    )
    .await;
    expected.sort();
    assert!(expected.len() > 10);
    crate::common::assert_same_rows(
        "the merged table, read by deltalake (Python)",
        &stored,
        &expected,
    );
}
