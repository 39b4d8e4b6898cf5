//! Late rows of one source: counted, and with `late_dead_letter_path` kept with their reason,
//! so that rows dropped because their window had closed can be found and replayed.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::json::WriterBuilder;
use datafusion::arrow::json::writer::LineDelimited;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{EngineError, Result};
use crate::jsonl_file::JsonLinesFile;

/// The late rows attributed to one source. An operator's late rows are attributed to every
/// source upstream of it (a window over a union of two sources counts them under both).
/// Thread-safe; shared by the operator tasks downstream of the source.
#[derive(Debug)]
pub struct LateRows {
    source: String,
    count: AtomicU64,
    file: OnceLock<JsonLinesFile>,
}

impl LateRows {
    /// Late rows of `source`, appended as JSON lines to `path` when one is given.
    pub fn new(source: impl Into<String>, path: Option<PathBuf>) -> Self {
        let late = LateRows {
            source: source.into(),
            count: AtomicU64::new(0),
            file: OnceLock::new(),
        };
        if let Some(path) = path {
            late.keep_in(path);
        }
        late
    }

    /// From now on, late rows are also appended to `path` (the first path given wins).
    pub fn keep_in(&self, path: PathBuf) {
        let _ = self.file.set(JsonLinesFile::new(path, "late-row"));
    }

    /// The source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Late rows so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The late-row file, if rows are kept.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.file.get().map(|f| f.path())
    }

    /// Records `rows` (as the operator saw them) dropped by `operator` for `reason`: counts
    /// them, and appends `{source, operator, reason, row, at}` per row to the late-row file.
    pub fn record(&self, operator: &str, rows: &RecordBatch, reason: &str) -> Result<()> {
        self.count
            .fetch_add(rows.num_rows() as u64, Ordering::Relaxed);
        let Some(file) = self.file.get() else {
            return Ok(());
        };
        let mut encoded = Vec::new();
        let mut writer = WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, LineDelimited>(&mut encoded);
        writer.write(rows)?;
        writer.finish()?;
        drop(writer);
        let at = chrono::Utc::now().to_rfc3339();
        let lines = encoded
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|row| {
                let row: serde_json::Value = serde_json::from_slice(row).map_err(|e| {
                    EngineError::Internal(format!("encoding a late row as JSON: {e}"))
                })?;
                Ok(serde_json::json!({
                    "source": self.source,
                    "operator": operator,
                    "reason": reason,
                    "row": row,
                    "at": at,
                }))
            })
            .collect::<Result<Vec<_>>>()?;
        file.append(&lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn late_rows_are_counted_and_kept_with_their_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("late/clicks.jsonl");
        let late = LateRows::new("clicks", Some(path.clone()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("page", DataType::Utf8, true),
        ]));
        let rows = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![7, 8])),
                Arc::new(StringArray::from(vec![Some("/a"), None])),
            ],
        )
        .unwrap();
        late.record("window", &rows, "its window had closed")
            .unwrap();
        assert_eq!(late.count(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["row"]["id"], 7);
        assert_eq!(lines[0]["row"]["page"], "/a");
        assert!(lines[1]["row"]["page"].is_null());
        assert_eq!(lines[1]["reason"], "its window had closed");
        assert_eq!(lines[1]["source"], "clicks");
        // Without a file, rows are only counted.
        let counted = LateRows::new("clicks", None);
        counted.record("window", &rows, "x").unwrap();
        assert_eq!(counted.count(), 2);
    }
}
