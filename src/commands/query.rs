//! `laketide query`: ad-hoc SQL over the lake's Delta tables, one statement or a shell.

use std::collections::HashMap;
use std::path::Path;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;

use crate::error::{CliError, Result};
use crate::lake::{query_context, register_lake, register_pipeline};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// An aligned table.
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object per line.
    Json,
}

/// Formats batches in `format`.
pub fn format_batches(batches: &[RecordBatch], format: OutputFormat) -> Result<String> {
    Ok(match format {
        OutputFormat::Table => pretty_format_batches(batches)?.to_string(),
        OutputFormat::Csv => {
            let mut buf = Vec::new();
            {
                let mut w = datafusion::arrow::csv::Writer::new(&mut buf);
                for b in batches {
                    w.write(b)?;
                }
            }
            String::from_utf8_lossy(&buf).trim_end().to_string()
        }
        OutputFormat::Json => {
            let mut buf = Vec::new();
            {
                let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut buf);
                for b in batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
            String::from_utf8_lossy(&buf).trim_end().to_string()
        }
    })
}

/// Runs one SQL statement and returns its formatted result.
pub async fn execute(ctx: &SessionContext, sql: &str, format: OutputFormat) -> Result<String> {
    let batches = ctx.sql(sql).await?.collect().await?;
    format_batches(&batches, format)
}

/// Where the tables of an ad-hoc query come from.
#[derive(Debug, Clone)]
pub enum Tables<'a> {
    /// Every Delta table directly under a lake root, some at given versions.
    Lake(&'a Path, &'a HashMap<String, u64>),
    /// The tables a pipeline file declares.
    Pipeline(&'a Path),
}

/// Runs `sql`, or an interactive shell without it, over `tables`.
pub async fn query(tables: Tables<'_>, sql: Option<&str>, format: OutputFormat) -> Result<()> {
    let ctx = query_context();
    let names = match tables {
        Tables::Lake(root, versions) => register_lake(&ctx, root, versions).await?,
        Tables::Pipeline(file) => register_pipeline(&ctx, file).await?,
    };
    match sql {
        Some(sql) => {
            println!("{}", execute(&ctx, sql, format).await?);
            Ok(())
        }
        None => shell(&ctx, &names, format).await,
    }
}

async fn shell(ctx: &SessionContext, tables: &[String], format: OutputFormat) -> Result<()> {
    let mut editor = rustyline::DefaultEditor::new()
        .map_err(|e| CliError::Usage(format!("cannot start the shell: {e}")))?;
    let history = std::env::var_os("HOME").map(|h| Path::new(&h).join(".laketide_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    eprintln!(
        "laketide query shell; tables: {}. End statements with `;`, `\\q` quits.",
        if tables.is_empty() {
            "(none)".to_string()
        } else {
            tables.join(", ")
        }
    );
    let mut statement = String::new();
    loop {
        let prompt = if statement.is_empty() {
            "laketide> "
        } else {
            "       -> "
        };
        let line = match tokio::task::block_in_place(|| editor.readline(prompt)) {
            Ok(l) => l,
            Err(rustyline::error::ReadlineError::Interrupted) => {
                statement.clear();
                continue;
            }
            Err(_) => break,
        };
        let trimmed = line.trim();
        if statement.is_empty() && matches!(trimmed, "\\q" | "quit" | "exit") {
            break;
        }
        if trimmed.is_empty() {
            continue;
        }
        statement.push_str(&line);
        statement.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let _ = editor.add_history_entry(statement.trim());
        match execute(ctx, statement.trim().trim_end_matches(';'), format).await {
            Ok(out) => println!("{out}"),
            Err(e) => eprintln!("error: {e}"),
        }
        statement.clear();
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(())
}
