//! Runs the sqllogictest files under `tests/slt/`: `CREATE` statements declare tables and
//! views; each `SELECT` runs as a bounded streaming pipeline whose rows are collected.

use crate::common;

use std::path::PathBuf;

use async_trait::async_trait;
use laketide_connectors::memory::MemorySink;
use laketide_engine::{ChangeKind, RunOptions};
use laketide_sql::{Location, Planner, Statement, parse_query, parse_script};
use sqllogictest::{DBOutput, DefaultColumnType};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SltError(String);

fn err(e: impl std::fmt::Display) -> SltError {
    SltError(e.to_string())
}

/// A laketide "database" for sqllogictest.
#[derive(Default)]
struct StreamingDb {
    declarations: Vec<String>,
    /// `SET update_interval = '…'`, for the queries that follow.
    update_interval: Option<std::time::Duration>,
}

impl StreamingDb {
    async fn planner(&self, extra: Option<&str>) -> Result<Planner, SltError> {
        let mut text = self.declarations.join(";\n");
        if let Some(e) = extra {
            text.push_str(";\n");
            text.push_str(e);
        }
        let script = parse_script(&text).map_err(err)?;
        let mut planner = Planner::new();
        for s in &script.statements {
            match s {
                Statement::CreateTable(def) => planner.declare_table(def, false).map_err(err)?,
                Statement::CreateView {
                    name,
                    statement,
                    location,
                } => planner
                    .declare_view(name, statement, *location)
                    .await
                    .map_err(err)?,
                Statement::Insert { .. } | Statement::Set { .. } => {
                    return Err(SltError("use CREATE and SELECT in .slt files".into()));
                }
            }
        }
        Ok(planner)
    }

    async fn select(&self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let planner = self.planner(None).await?;
        let (query, lookups) = parse_query(sql).map_err(err)?;
        for lookup in &lookups {
            planner.check_lookup_use(lookup).map_err(err)?;
        }
        let location = Location { line: 1, column: 1 };
        let plan = planner.plan_query(&query, location).await.map_err(err)?;
        let mut builder = planner.builder().with_lookups(&lookups);
        if let Some(interval) = self.update_interval {
            builder = builder.with_update_interval(interval);
        }
        let output = builder.add_query(&plan, location).map_err(err)?;
        let sink = MemorySink::new();
        let collected = sink.handle();
        builder
            .add_sink("result", "memory", Box::new(sink), output.node)
            .map_err(err)?;
        let planned = builder.finish();
        if !planned.bounded {
            return Err(SltError(
                "queries in .slt files must read bounded sources (mode = 'once')".into(),
            ));
        }
        laketide_engine::run(planned.dataflow, RunOptions::default())
            .await
            .map_err(err)?;
        let batches = collected.lock().unwrap().clone();
        let mut rows = common::rows(&batches)
            .into_iter()
            .map(|r| r.split('|').map(str::to_string).collect::<Vec<_>>())
            .collect::<Vec<_>>();
        if output.mode.is_updating() {
            rows = current_rows(rows)?;
        }
        let width = output.schema.fields().len();
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; width],
            rows,
        })
    }
}

/// The result an updating query's changelog leaves (each row's last field is its change
/// code): inserts add a row, retractions take out one equal row, which must be there.
fn current_rows(changes: Vec<Vec<String>>) -> Result<Vec<Vec<String>>, SltError> {
    let mut current: Vec<Vec<String>> = Vec::new();
    for mut row in changes {
        let code: i8 = row
            .pop()
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| SltError("a changelog row without its change code".into()))?;
        let kind = ChangeKind::from_code(code)
            .ok_or_else(|| SltError(format!("unknown change code {code}")))?;
        if kind.is_retraction() {
            let at = current.iter().position(|r| *r == row).ok_or_else(|| {
                SltError(format!(
                    "{} retracts {row:?}, which is not in the result",
                    kind.short_name()
                ))
            })?;
            current.swap_remove(at);
        } else {
            current.push(row);
        }
    }
    Ok(current)
}

#[async_trait]
impl sqllogictest::AsyncDB for StreamingDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let first = sql
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        if first == "CREATE" {
            self.planner(Some(sql)).await?;
            self.declarations.push(sql.to_string());
            return Ok(DBOutput::StatementComplete(0));
        }
        if first == "SET" {
            let script = parse_script(sql).map_err(err)?;
            let [Statement::Set { name, value, .. }] = script.statements.as_slice() else {
                return Err(SltError("expected one SET".into()));
            };
            if name != "update_interval" {
                return Err(SltError(format!("`SET {name}` is not used by .slt files")));
            }
            self.update_interval = Some(
                laketide_connectors::parse_duration(value)
                    .ok_or_else(|| SltError(format!("not a duration: {value}")))?,
            );
            return Ok(DBOutput::StatementComplete(0));
        }
        self.select(sql).await
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "laketide"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut failures = Vec::new();
    for file in &files {
        let mut runner = sqllogictest::Runner::new(|| async { Ok(StreamingDb::default()) });
        runner.with_column_validator(|_, _| true);
        if let Err(e) = runner.run_file_async(file).await {
            failures.push(format!("{}: {}", file.display(), e.display(false)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
