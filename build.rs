//! Records the git commit the binary is built from, for `laketide --version`. A build
//! outside a git checkout (a source archive, a container build) may set
//! `LAKETIDE_GIT_COMMIT` itself; otherwise it says `unknown`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=LAKETIDE_GIT_COMMIT");
    let commit = std::env::var("LAKETIDE_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=LAKETIDE_GIT_COMMIT={commit}");
}

/// The checked-out commit, and the files to watch so a new commit rebuilds the version.
fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let git_dir = Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| ".git".to_string());
    let head = Path::new(&git_dir).join("HEAD");
    println!("cargo:rerun-if-changed={}", head.display());
    if let Ok(text) = std::fs::read_to_string(&head)
        && let Some(reference) = text.trim().strip_prefix("ref: ")
    {
        println!(
            "cargo:rerun-if-changed={}",
            Path::new(&git_dir).join(reference).display()
        );
        println!(
            "cargo:rerun-if-changed={}",
            Path::new(&git_dir).join("packed-refs").display()
        );
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
