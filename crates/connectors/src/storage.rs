//! Object-storage settings shared by connectors that take `s3://` paths. The standard AWS
//! environment (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`, `AWS_REGION`, `AWS_ALLOW_HTTP`,
//! credentials) applies by default; these `WITH` options override it per table.

use std::collections::HashMap;

use crate::error::Result;
use crate::options::Options;

/// `endpoint`, `region` and `allow_http` options of a table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageConfig {
    /// S3-compatible endpoint URL, e.g. `http://127.0.0.1:9000` for a local server.
    pub endpoint: Option<String>,
    /// Region of the bucket.
    pub region: Option<String>,
    /// Allow plain-HTTP endpoints (implied by an `http://` endpoint).
    pub allow_http: Option<bool>,
}

/// The option keys of [`StorageConfig`].
pub const STORAGE_OPTIONS: &[&str] = &["endpoint", "region", "allow_http"];

impl StorageConfig {
    /// Takes the storage options.
    pub fn from_options(options: &mut Options) -> Result<Self> {
        Ok(StorageConfig {
            endpoint: options.take("endpoint"),
            region: options.take("region"),
            allow_http: options.take_bool("allow_http")?,
        })
    }

    /// Options for delta-rs / object_store; the environment fills in what is not set here.
    pub fn storage_options(&self) -> HashMap<String, String> {
        let mut map = HashMap::new();
        if let Some(e) = &self.endpoint {
            map.insert("AWS_ENDPOINT_URL".to_string(), e.clone());
        }
        if let Some(r) = &self.region {
            map.insert("AWS_REGION".to_string(), r.clone());
        }
        let http = self.allow_http.unwrap_or_else(|| {
            self.endpoint
                .as_deref()
                .or(std::env::var("AWS_ENDPOINT_URL_S3").ok().as_deref())
                .or(std::env::var("AWS_ENDPOINT_URL").ok().as_deref())
                .is_some_and(|e| e.starts_with("http://"))
        });
        if http {
            map.insert("AWS_ALLOW_HTTP".to_string(), "true".to_string());
        }
        map
    }
}
