//! An append-only JSON-lines file, opened (with its directory) at the first line written:
//! the dead-letter and late-row files.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{EngineError, Result};

/// Appends JSON values, one per line, flushing after each call. Thread-safe.
#[derive(Debug)]
pub(crate) struct JsonLinesFile {
    path: PathBuf,
    /// What the file is, for error messages ("dead-letter", "late-row").
    what: &'static str,
    file: Mutex<Option<File>>,
}

impl JsonLinesFile {
    /// A file at `path`; nothing is created until the first line.
    pub(crate) fn new(path: PathBuf, what: &'static str) -> Self {
        JsonLinesFile {
            path,
            what,
            file: Mutex::new(None),
        }
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `lines` and flushes.
    pub(crate) fn append(&self, lines: &[serde_json::Value]) -> Result<()> {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(self.open()?);
        }
        let file = guard.as_mut().expect("opened above");
        let mut text = String::new();
        for line in lines {
            text.push_str(&line.to_string());
            text.push('\n');
        }
        file.write_all(text.as_bytes())
            .and_then(|_| file.flush())
            .map_err(|e| {
                EngineError::external(
                    format!("writing {} file {}", self.what, self.path.display()),
                    e,
                )
            })
    }

    fn open(&self) -> Result<File> {
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                EngineError::external(
                    format!("creating {} directory {}", self.what, parent.display()),
                    e,
                )
            })?;
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| {
                EngineError::external(
                    format!("opening {} file {}", self.what, self.path.display()),
                    e,
                )
            })
    }
}
