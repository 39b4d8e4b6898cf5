//! The query page's engine: one read-only SQL query over the tables of the running pipeline's
//! file, exactly as `laketide query -f FILE` sees them (its Delta and filesystem sinks, and a
//! snapshot of its file sources).

use std::path::Path;
use std::time::Instant;

use datafusion::execution::context::SQLOptions;
use serde::Serialize;
use serde_json::Value;

use super::rows::{Column, columns, json_rows};
use crate::error::Result;
use crate::lake::{query_context, register_pipeline};

/// The most rows a query returns to the page.
pub const MAX_ROWS: usize = 2_000;

/// A query's answer.
#[derive(Debug, Serialize)]
pub struct QueryResult {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
    /// Whether rows beyond [`MAX_ROWS`] were left out.
    pub truncated: bool,
    pub elapsed_ms: u64,
    /// The tables the statement could use.
    pub tables: Vec<String>,
}

/// Runs `sql` over the tables of the pipeline file `file`.
pub async fn run(file: &Path, sql: &str) -> Result<QueryResult> {
    let started = Instant::now();
    let ctx = query_context();
    let tables = register_pipeline(&ctx, file).await?;
    // Queries only: no DDL (CREATE EXTERNAL TABLE could read any file), no DML (COPY TO
    // could write one), no SET.
    let read_only = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let frame = ctx.sql_with_options(sql, read_only).await?;
    let schema = frame.schema().as_arrow().clone();
    let batches = frame.limit(0, Some(MAX_ROWS + 1))?.collect().await?;
    let mut rows = Vec::new();
    for batch in &batches {
        rows.extend(json_rows(batch)?);
    }
    let truncated = rows.len() > MAX_ROWS;
    rows.truncate(MAX_ROWS);
    Ok(QueryResult {
        columns: columns(&schema),
        rows,
        truncated,
        elapsed_ms: started.elapsed().as_millis() as u64,
        tables,
    })
}
