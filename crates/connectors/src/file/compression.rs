//! Compressed JSON-lines and CSV files: gzip and zstd, chosen by the `compression` option or,
//! by default, by the file's extension (`.gz`, `.zst`). Decompression streams, like reading.

use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::error::{ConnectorError, Result};

/// How a source's files are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// By extension: `.gz` is gzip, `.zst`/`.zstd` is zstd, anything else is plain.
    Auto,
    /// Not compressed.
    None,
    /// gzip (several members are read one after another, as `cat a.gz b.gz` makes them).
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// Parses the `compression` option.
    pub fn parse(value: Option<&str>) -> Result<Self> {
        Ok(match value.map(str::to_ascii_lowercase).as_deref() {
            None | Some("auto") => Compression::Auto,
            Some("none") => Compression::None,
            Some("gzip") | Some("gz") => Compression::Gzip,
            Some("zstd") | Some("zst") => Compression::Zstd,
            Some(other) => {
                return Err(ConnectorError::InvalidOption(format!(
                    "option `compression` must be 'auto', 'none', 'gzip' or 'zstd', not '{other}'"
                )));
            }
        })
    }

    /// The compression of `file` under this setting.
    pub fn of(self, file: &Path) -> Compression {
        if self != Compression::Auto {
            return self;
        }
        match file.extension().and_then(|e| e.to_str()) {
            Some("gz") | Some("gzip") => Compression::Gzip,
            Some("zst") | Some("zstd") => Compression::Zstd,
            _ => Compression::None,
        }
    }

    /// Wraps `input` so that reading it yields the decompressed bytes of `file`.
    pub fn reader(
        self,
        file: &Path,
        input: Box<dyn BufRead + Send>,
    ) -> std::io::Result<Box<dyn BufRead + Send>> {
        Ok(match self.of(file) {
            Compression::Gzip => Box::new(BufReader::with_capacity(
                1 << 20,
                flate2::bufread::MultiGzDecoder::new(input),
            )),
            Compression::Zstd => Box::new(BufReader::with_capacity(
                1 << 20,
                zstd::stream::read::Decoder::with_buffer(input)?,
            )),
            _ => input,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn read_all(c: Compression, name: &str, bytes: Vec<u8>) -> String {
        let mut out = String::new();
        c.reader(Path::new(name), Box::new(std::io::Cursor::new(bytes)))
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn gzip_and_zstd_by_extension_or_option() {
        let text = "{\"a\":1}\n{\"a\":2}\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::stream::encode_all(text.as_bytes(), 1).unwrap();
        assert_eq!(read_all(Compression::Auto, "x.json.gz", gz.clone()), text);
        assert_eq!(read_all(Compression::Auto, "x.json.zst", zst.clone()), text);
        assert_eq!(read_all(Compression::Gzip, "x.json", gz), text);
        assert_eq!(read_all(Compression::Zstd, "x", zst), text);
        assert_eq!(read_all(Compression::Auto, "x.json", text.into()), text);
        assert!(Compression::parse(Some("lz4")).is_err());
    }
}
