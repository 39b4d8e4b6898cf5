//! Helpers shared by the end-to-end tests.

pub mod dynamodb;
pub mod kinesis;
pub mod proxy;

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::{JsonReadOptions, SessionContext};

/// The clickstream schema as the generator writes it.
pub fn clicks_schema() -> Schema {
    Schema::new(laketide::datagen::clickstream_fields())
}

/// A DataFusion session with the generated JSON files registered as `clicks`: the batch oracle.
pub async fn oracle_context(data: &Path) -> SessionContext {
    let ctx = SessionContext::new();
    register_json_files(&ctx, "clicks", data, &clicks_schema()).await;
    ctx
}

/// Registers the `.json` files (JSON lines) under `dir` as table `name` with `schema`.
pub async fn register_json_files(ctx: &SessionContext, name: &str, dir: &Path, schema: &Schema) {
    ctx.register_json(
        name,
        dir.to_str().unwrap(),
        JsonReadOptions {
            schema: Some(schema),
            file_extension: ".json",
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

/// Renders rows as `a|b|c` strings (NULL for nulls), in result order.
pub fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let formatters: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| f.value(r).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    out
}

/// Runs `sql` in `ctx` and renders the rows.
pub async fn query_rows(ctx: &SessionContext, sql: &str) -> Vec<String> {
    let batches = ctx
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap();
    rows(&batches)
}

/// Asserts two row lists are equal, printing the first differences.
pub fn assert_same_rows(what: &str, streaming: &[String], oracle: &[String]) {
    if streaming == oracle {
        return;
    }
    let only_stream: Vec<&String> = streaming
        .iter()
        .filter(|r| !oracle.contains(r))
        .take(10)
        .collect();
    let only_oracle: Vec<&String> = oracle
        .iter()
        .filter(|r| !streaming.contains(r))
        .take(10)
        .collect();
    panic!(
        "{what}: streaming result ({} rows) differs from the batch oracle ({} rows)\nonly in streaming: {only_stream:#?}\nonly in oracle: {only_oracle:#?}",
        streaming.len(),
        oracle.len()
    );
}

/// A fresh session with the Delta table at `path` registered as `name`.
pub async fn delta_context(name: &str, path: &Path) -> SessionContext {
    let ctx = SessionContext::new();
    laketide::lake::register_table(&ctx, name, path, None)
        .await
        .unwrap();
    ctx
}

/// The endpoint of a local emulator (from `env_var`, else `default`) if a server answers there;
/// `None` (the test skips) when none does and emulators are not required. Under CI or with
/// `LAKETIDE_EMULATORS=1` (what `scripts/test.sh` sets) a missing server is a failure.
pub fn emulator(service: &str, env_var: &str, default: &str) -> Option<String> {
    let endpoint = std::env::var(env_var).unwrap_or_else(|_| default.to_string());
    let up = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "2", &endpoint])
        .status()
        .is_ok_and(|s| s.success());
    if up {
        return Some(endpoint);
    }
    let required =
        std::env::var_os("CI").is_some() || std::env::var_os("LAKETIDE_EMULATORS").is_some();
    assert!(
        !required,
        "no {service} server at {endpoint}: run the tests with scripts/test.sh"
    );
    eprintln!("skipped: no {service} server at {endpoint} (scripts/test.sh starts one)");
    None
}

/// A name no other test run uses: `prefix-<pid>-<nanos>`.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Keeps `Arc` used for callers building schemas.
pub fn shared(schema: Schema) -> Arc<Schema> {
    Arc::new(schema)
}
