//! Typed access to `WITH (key = 'value', …)` options. Every connector takes the keys it knows;
//! whatever is left is an unknown key and a plan-time error.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{ConnectorError, Result};

/// The options of one table, keyed case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    values: BTreeMap<String, String>,
}

impl Options {
    /// Options from key/value pairs; keys are lower-cased. A repeated key is an error.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let mut values = BTreeMap::new();
        for (k, v) in pairs {
            let k = k.to_ascii_lowercase();
            if values.insert(k.clone(), v).is_some() {
                return Err(ConnectorError::InvalidOption(format!(
                    "option `{k}` is given twice"
                )));
            }
        }
        Ok(Options { values })
    }

    /// The options whose keys do not start with `prefix`.
    pub fn without_prefix(mut self, prefix: &str) -> Self {
        self.values.retain(|k, _| !k.starts_with(prefix));
        self
    }

    /// Whether option `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    /// Removes and returns an option.
    pub fn take(&mut self, key: &str) -> Option<String> {
        self.values.remove(key)
    }

    /// Removes and returns a required option.
    pub fn take_required(&mut self, key: &str, connector: &str) -> Result<String> {
        self.take(key).ok_or_else(|| {
            ConnectorError::InvalidOption(format!(
                "connector '{connector}' needs the option `{key}`"
            ))
        })
    }

    /// Removes a boolean option (`true`/`false`).
    pub fn take_bool(&mut self, key: &str) -> Result<Option<bool>> {
        self.take(key)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(ConnectorError::InvalidOption(format!(
                    "option `{key}` must be 'true' or 'false', not '{v}'"
                ))),
            })
            .transpose()
    }

    /// Removes a positive integer option.
    pub fn take_u64(&mut self, key: &str) -> Result<Option<u64>> {
        self.take(key)
            .map(|v| {
                v.trim().parse::<u64>().map_err(|_| {
                    ConnectorError::InvalidOption(format!(
                        "option `{key}` must be a whole number, not '{v}'"
                    ))
                })
            })
            .transpose()
    }

    /// Removes a size option such as `128MB`, `64 KiB` or `1000000` (bytes).
    pub fn take_bytes(&mut self, key: &str) -> Result<Option<u64>> {
        self.take(key)
            .map(|v| {
                parse_bytes(&v).ok_or_else(|| {
                    ConnectorError::InvalidOption(format!(
                        "option `{key}` must be a size such as '128MB' or '1048576', not '{v}'"
                    ))
                })
            })
            .transpose()
    }

    /// Removes a duration option such as `500ms`, `10s`, `5m`, `1h`.
    pub fn take_duration(&mut self, key: &str) -> Result<Option<Duration>> {
        self.take(key)
            .map(|v| {
                parse_duration(&v).ok_or_else(|| {
                    ConnectorError::InvalidOption(format!(
                        "option `{key}` must be a duration such as '500ms', '10s' or '5m', not '{v}'"
                    ))
                })
            })
            .transpose()
    }

    /// Removes an option that must be one of `allowed` (case-insensitive); returns it lower-cased.
    pub fn take_choice(&mut self, key: &str, allowed: &[&str]) -> Result<Option<String>> {
        self.take(key)
            .map(|v| {
                let lower = v.to_ascii_lowercase();
                if allowed.contains(&lower.as_str()) {
                    Ok(lower)
                } else {
                    Err(ConnectorError::InvalidOption(format!(
                        "option `{key}` must be one of {}, not '{v}'",
                        allowed
                            .iter()
                            .map(|a| format!("'{a}'"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            })
            .transpose()
    }

    /// Fails if any option was not taken: unknown keys are errors, listing the valid ones.
    pub fn finish(self, connector: &str, valid: &[&str]) -> Result<()> {
        if let Some(key) = self.values.keys().next() {
            return Err(ConnectorError::InvalidOption(format!(
                "unknown option `{key}` for connector '{connector}'; valid options are: {}",
                valid.join(", ")
            )));
        }
        Ok(())
    }

    /// Whether no option is left.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// Parses `500ms`, `10s`, `5m`, `2h`, `1d`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" | "sec" | "secs" | "second" | "seconds" => n,
        "m" | "min" | "mins" | "minute" | "minutes" => n * 60.0,
        "h" | "hour" | "hours" => n * 3600.0,
        "d" | "day" | "days" => n * 86400.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// Parses `128MB`, `64KiB`, `1GB`, or a bare number of bytes (1 KB = 1024 bytes).
pub fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_and_sizes() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2 m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_bytes("128MB"), Some(128 << 20));
        assert_eq!(parse_bytes("12 parsecs"), None);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let mut o = Options::new([
            ("Path".to_string(), "x".to_string()),
            ("colour".into(), "red".into()),
        ])
        .unwrap();
        assert_eq!(o.take("path").as_deref(), Some("x"));
        let err = o.finish("file", &["path"]).unwrap_err().to_string();
        assert!(err.contains("unknown option `colour`"), "{err}");
    }
}
