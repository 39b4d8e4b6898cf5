//! What happens to records that cannot be decoded: the `on_error` policy.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{EngineError, Result};
use crate::jsonl_file::JsonLinesFile;

/// The `on_error` option of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnError {
    /// Stop the pipeline with an error naming the record (the default).
    Fail,
    /// Skip the record, count it, and log the first few.
    Skip,
    /// Write the raw record and the reason to a dead-letter file (JSON lines), and count it.
    DeadLetter(PathBuf),
}

impl OnError {
    /// Parses `on_error` with the optional `dead_letter_path` option.
    pub fn parse(value: &str, dead_letter_path: Option<&str>) -> Result<Self> {
        match value.to_ascii_lowercase().as_str() {
            "fail" => Ok(OnError::Fail),
            "skip" => Ok(OnError::Skip),
            "dead_letter" => match dead_letter_path {
                Some(p) => Ok(OnError::DeadLetter(PathBuf::from(p))),
                None => Err(EngineError::User(
                    "on_error = 'dead_letter' needs the option dead_letter_path = '<file>'".into(),
                )),
            },
            other => Err(EngineError::User(format!(
                "on_error must be 'fail', 'skip' or 'dead_letter', not '{other}'"
            ))),
        }
    }
}

impl FromStr for OnError {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self> {
        OnError::parse(s, None)
    }
}

/// How many skipped records are logged individually before only counting.
const LOGGED_SKIPS: u64 = 10;

/// Applies one source's `on_error` policy and counts bad records. Shared by the source's reader
/// tasks; thread-safe.
#[derive(Debug)]
pub struct BadRecords {
    source: String,
    policy: OnError,
    count: AtomicU64,
    dead_letters: OnceLock<JsonLinesFile>,
}

impl BadRecords {
    /// A handler for source `source` with `policy`.
    pub fn new(source: impl Into<String>, policy: OnError) -> Self {
        BadRecords {
            source: source.into(),
            policy,
            count: AtomicU64::new(0),
            dead_letters: OnceLock::new(),
        }
    }

    /// Handles one bad record found at `location` (file:line, shard/sequence number …).
    /// Returns an error only under the `fail` policy or if the dead-letter file fails.
    pub fn report(&self, location: &str, raw: &[u8], reason: &str) -> Result<()> {
        match &self.policy {
            OnError::Fail => Err(EngineError::BadRecord {
                location: location.to_string(),
                reason: format!(
                    "{reason} (source `{}` has on_error = 'fail'; use 'skip' or 'dead_letter' to continue past bad records)",
                    self.source
                ),
            }),
            OnError::Skip => {
                let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
                if n <= LOGGED_SKIPS {
                    tracing::warn!(source = %self.source, %location, %reason, "skipped bad record");
                } else if n == LOGGED_SKIPS + 1 {
                    tracing::warn!(source = %self.source, "more bad records skipped; only counting from now on");
                }
                Ok(())
            }
            OnError::DeadLetter(path) => {
                self.count.fetch_add(1, Ordering::Relaxed);
                self.write_dead_letter(path, location, raw, reason)
            }
        }
    }

    fn write_dead_letter(
        &self,
        path: &Path,
        location: &str,
        raw: &[u8],
        reason: &str,
    ) -> Result<()> {
        let file = self
            .dead_letters
            .get_or_init(|| JsonLinesFile::new(path.to_path_buf(), "dead-letter"));
        file.append(&[serde_json::json!({
            "source": self.source,
            "location": location,
            "reason": reason,
            "raw": String::from_utf8_lossy(raw),
            "at": chrono::Utc::now().to_rfc3339(),
        })])
    }

    /// Bad records seen so far (skipped or dead-lettered).
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The source this handler belongs to.
    pub fn source(&self) -> &str {
        &self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_policy_names_the_record() {
        let b = BadRecords::new("clicks", OnError::Fail);
        let err = b.report("a.json:3", b"{oops", "invalid JSON").unwrap_err();
        assert!(err.to_string().contains("a.json:3"), "{err}");
        assert!(err.to_string().contains("invalid JSON"), "{err}");
    }

    #[test]
    fn dead_letters_are_written_as_json_lines() {
        let dir = std::env::temp_dir().join(format!("laketide-dlq-{}", std::process::id()));
        let path = dir.join("dead.jsonl");
        let b = BadRecords::new("clicks", OnError::DeadLetter(path.clone()));
        b.report("a.json:3", b"{oops", "invalid JSON").unwrap();
        b.report("a.json:9", b"x", "bad").unwrap();
        assert_eq!(b.count(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["raw"], "{oops");
        assert_eq!(first["location"], "a.json:3");
        assert_eq!(text.lines().count(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
