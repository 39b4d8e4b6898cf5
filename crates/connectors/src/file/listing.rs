use std::path::{Path, PathBuf};

use crate::error::{ConnectorError, Result};

/// Lists the files a file source reads, sorted by path: a single file, every visible file of a
/// directory (recursively), or the matches of a glob. Names starting with `.` or `_`, and names
/// ending in `.tmp`, `.inprogress` or `.crc`, are skipped: writers can create files under such
/// names and rename them when complete, so that no half-written file is read.
pub fn list_files(path: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if path.contains(['*', '?', '[']) {
        let entries = glob::glob(path)
            .map_err(|e| ConnectorError::InvalidOption(format!("invalid glob `{path}`: {e}")))?;
        for entry in entries {
            let p = entry.map_err(|e| {
                ConnectorError::io(format!("listing {path}"), std::io::Error::from(e))
            })?;
            if p.is_file() && visible(&p) {
                files.push(p);
            }
        }
    } else {
        let p = Path::new(path);
        let meta =
            std::fs::metadata(p).map_err(|e| ConnectorError::io(format!("reading {path}"), e))?;
        if meta.is_file() {
            files.push(p.to_path_buf());
        } else {
            walk(p, &mut files)?;
        }
    }
    files.sort();
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ConnectorError::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry =
            entry.map_err(|e| ConnectorError::io(format!("listing {}", dir.display()), e))?;
        let p = entry.path();
        if !visible(&p) {
            continue;
        }
        let kind = entry
            .file_type()
            .map_err(|e| ConnectorError::io(format!("reading {}", p.display()), e))?;
        if kind.is_dir() {
            walk(&p, files)?;
        } else if kind.is_file() || p.is_file() {
            files.push(p);
        }
    }
    Ok(())
}

fn visible(p: &Path) -> bool {
    visible_name(p.file_name().and_then(|n| n.to_str()).unwrap_or(""))
}

/// Whether a file (or directory) name is read: not hidden, not temporary.
pub(crate) fn visible_name(name: &str) -> bool {
    !(name.starts_with('.')
        || name.starts_with('_')
        || name.ends_with(".tmp")
        || name.ends_with(".inprogress")
        || name.ends_with(".crc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_visible_files_sorted_recursively_and_by_glob() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        for f in [
            "b.json",
            "a.json",
            "sub/c.json",
            ".hidden.json",
            "_tmp.json",
            "d.json.tmp",
        ] {
            std::fs::write(d.join(f), "{}\n").unwrap();
        }
        let names = |v: Vec<PathBuf>| -> Vec<String> {
            v.iter()
                .map(|p| p.strip_prefix(d).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(
            names(list_files(d.to_str().unwrap()).unwrap()),
            vec!["a.json", "b.json", "sub/c.json"]
        );
        let glob = format!("{}/*.json", d.display());
        assert_eq!(names(list_files(&glob).unwrap()), vec!["a.json", "b.json"]);
        assert!(list_files(d.join("missing").to_str().unwrap()).is_err());
    }
}
