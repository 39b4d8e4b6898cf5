//! Interoperability: a Delta table written by laketide (partitioned, with timestamps) is read
//! back by an independent reader, the `deltalake` Python package, which `scripts/test.sh`
//! installs. Without it the test is skipped, except under CI or with `LAKETIDE_EMULATORS=1`.

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
