//! Splits a SQL script into located statements and parses each one.

use datafusion::sql::sqlparser::ast::{Query, Statement as SqlStatement, TableObject};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::ddl::{TableDef, normalize_ident, parse_create_table};
use crate::error::{Location, Result, SqlError};
use crate::system_time::{LookupUse, take_system_time};

/// One statement of a pipeline script.
#[derive(Debug, Clone)]
pub enum Statement {
    /// `CREATE TABLE … WITH (…)`: a source or sink.
    CreateTable(TableDef),
    /// `CREATE VIEW name AS SELECT …`: a named intermediate query.
    CreateView {
        /// The view's name.
        name: String,
        /// The statement, planned by DataFusion.
        statement: Box<SqlStatement>,
        /// Where it starts.
        location: Location,
    },
    /// `SET name = 'value'`: a pipeline setting (see [`crate::PipelineSettings`]).
    Set {
        /// The setting's name, lower-cased.
        name: String,
        /// Its value as written (quotes removed).
        value: String,
        /// Where it starts.
        location: Location,
    },
    /// `INSERT INTO sink SELECT …`: a continuous query.
    Insert {
        /// The sink table.
        sink: String,
        /// The query producing its rows.
        query: Box<Query>,
        /// Where it starts.
        location: Location,
    },
}

impl Statement {
    /// Where the statement starts.
    pub fn location(&self) -> Location {
        match self {
            Statement::CreateTable(t) => t.location,
            Statement::CreateView { location, .. }
            | Statement::Insert { location, .. }
            | Statement::Set { location, .. } => *location,
        }
    }
}

/// A parsed pipeline script.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Statements in file order.
    pub statements: Vec<Statement>,
    /// The tables read with `FOR SYSTEM_TIME AS OF` (lookup tables), in file order.
    pub lookups: Vec<LookupUse>,
}

impl Script {
    /// The tables written by an `INSERT INTO` (the sinks); every other table is a source.
    pub fn sink_names(&self) -> std::collections::HashSet<&str> {
        self.statements
            .iter()
            .filter_map(|s| match s {
                Statement::Insert { sink, .. } => Some(sink.as_str()),
                _ => None,
            })
            .collect()
    }
}

fn is_trivia(t: &Token) -> bool {
    matches!(t, Token::Whitespace(_))
}

/// The tokens of `sql`, each with its location.
fn tokenize(dialect: &GenericDialect, sql: &str) -> Result<Vec<TokenWithSpan>> {
    Tokenizer::new(dialect, sql)
        .tokenize_with_location()
        .map_err(|e| SqlError::Syntax {
            location: Location {
                line: e.location.line,
                column: e.location.column,
            },
            message: e.message.clone(),
        })
}

/// Parses a script of `;`-separated statements.
pub fn parse_script(sql: &str) -> Result<Script> {
    let dialect = GenericDialect {};
    let tokens = tokenize(&dialect, sql)?;
    let mut statements = Vec::new();
    let mut lookups = Vec::new();
    let mut current: Vec<TokenWithSpan> = Vec::new();
    for token in tokens
        .into_iter()
        .chain(std::iter::once(TokenWithSpan::wrap(Token::SemiColon)))
    {
        if token.token == Token::SemiColon || token.token == Token::EOF {
            if current.iter().any(|t| !is_trivia(&t.token)) {
                lookups.extend(take_system_time(&mut current)?);
                statements.push(parse_statement(&dialect, std::mem::take(&mut current))?);
            }
            current.clear();
        } else {
            current.push(token);
        }
    }
    Ok(Script {
        statements,
        lookups,
    })
}

/// Parses one query (a `SELECT`), with the tables it reads by `FOR SYSTEM_TIME AS OF`.
pub fn parse_query(sql: &str) -> Result<(Box<Query>, Vec<LookupUse>)> {
    let dialect = GenericDialect {};
    let mut tokens = tokenize(&dialect, sql)?;
    let lookups = take_system_time(&mut tokens)?;
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let query = parser.parse_query().map_err(|e| SqlError::Syntax {
        location: parser.peek_token().span.start.into(),
        message: e.to_string(),
    })?;
    Ok((query, lookups))
}

fn parse_statement(dialect: &GenericDialect, tokens: Vec<TokenWithSpan>) -> Result<Statement> {
    let first = tokens
        .iter()
        .find(|t| !is_trivia(&t.token))
        .expect("statement has a non-trivia token");
    let location: Location = first.span.start.into();
    let mut parser = Parser::new(dialect).with_tokens_with_locations(tokens.clone());
    let (is_create_table, is_set) = {
        let mut probe = Parser::new(dialect).with_tokens_with_locations(tokens.clone());
        let create = probe.parse_keywords(&[Keyword::CREATE, Keyword::TABLE]);
        let mut probe = Parser::new(dialect).with_tokens_with_locations(tokens);
        (create, probe.parse_keyword(Keyword::SET))
    };
    if is_set {
        return parse_set(&mut parser, location);
    }
    if is_create_table {
        return parse_create_table(&mut parser, location).map(Statement::CreateTable);
    }
    let statement = parser.parse_statement().map_err(|e| {
        let message = e.to_string();
        SqlError::Syntax {
            location: parser.peek_token().span.start.into(),
            message: message
                .strip_prefix("sql parser error: ")
                .unwrap_or(&message)
                .to_string(),
        }
    })?;
    let trailing = parser.peek_token();
    if trailing.token != Token::EOF {
        return Err(SqlError::Syntax {
            location: trailing.span.start.into(),
            message: format!("unexpected `{}` (is a `;` missing?)", trailing.token),
        });
    }
    match statement {
        SqlStatement::CreateView(view) => {
            let name = view
                .name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(normalize_ident)
                .ok_or_else(|| SqlError::plan(location, "expected a view name"))?;
            Ok(Statement::CreateView {
                name,
                statement: Box::new(SqlStatement::CreateView(view)),
                location,
            })
        }
        SqlStatement::Insert(insert) => {
            let TableObject::TableName(table) = &insert.table else {
                return Err(SqlError::plan(location, "INSERT INTO needs a table name"));
            };
            if !insert.columns.is_empty() {
                return Err(SqlError::plan(
                    location,
                    "INSERT INTO with a column list is not supported; name the columns in the SELECT",
                ));
            }
            let sink = table
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(normalize_ident)
                .ok_or_else(|| SqlError::plan(location, "expected a table name"))?;
            let query = insert
                .source
                .ok_or_else(|| SqlError::plan(location, "INSERT INTO needs a SELECT query"))?;
            Ok(Statement::Insert {
                sink,
                query,
                location,
            })
        }
        SqlStatement::Query(_) => Err(SqlError::plan(
            location,
            "a SELECT on its own has nowhere to send its rows in a pipeline: write `INSERT INTO <sink> SELECT …` (use `laketide query` for ad-hoc queries)",
        )),
        other => Err(SqlError::plan(
            location,
            format!(
                "unsupported statement `{}`: a pipeline has CREATE TABLE, CREATE VIEW and INSERT INTO statements",
                other
                    .to_string()
                    .split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        )),
    }
}

/// `SET name = value` or `SET name TO value`, the value a quoted string, number or word.
fn parse_set(parser: &mut Parser, location: Location) -> Result<Statement> {
    let syntax = |parser: &Parser, message: &str| SqlError::Syntax {
        location: parser.peek_token().span.start.into(),
        message: message.to_string(),
    };
    parser
        .expect_keyword(Keyword::SET)
        .map_err(|_| syntax(parser, "expected SET"))?;
    let name = parser
        .parse_identifier()
        .map(|i| normalize_ident(&i))
        .map_err(|_| syntax(parser, "expected a setting name after SET"))?;
    if !parser.consume_token(&Token::Eq) && !parser.parse_keyword(Keyword::TO) {
        return Err(syntax(parser, "expected `=` after the setting name"));
    }
    let value = match parser.next_token().token {
        Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s,
        Token::Number(n, _) => n,
        Token::Word(w) => w.value,
        _ => return Err(syntax(parser, "expected a value such as '10s'")),
    };
    let trailing = parser.peek_token();
    if trailing.token != Token::EOF {
        return Err(SqlError::Syntax {
            location: trailing.span.start.into(),
            message: format!("unexpected `{}` (is a `;` missing?)", trailing.token),
        });
    }
    Ok(Statement::Set {
        name,
        value,
        location,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLICKSTREAM: &str = "
-- clicks arrive as JSON lines
CREATE TABLE clicks (
  event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE,
  ts TIMESTAMP,
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (connector = 'file', path = 'examples/data/clicks/', format = 'json', csv.header = true);

CREATE TABLE revenue WITH (connector = 'delta', path = 'lake/revenue');

INSERT INTO revenue
SELECT window_start, window_end, action, count(*) AS events, sum(amount) AS revenue
FROM TUMBLE(clicks, ts, INTERVAL '1' MINUTE)
GROUP BY window_start, window_end, action;
";

    #[test]
    fn parses_tables_watermarks_options_and_inserts() {
        let script = parse_script(CLICKSTREAM).unwrap();
        assert_eq!(script.statements.len(), 3);
        let Statement::CreateTable(clicks) = &script.statements[0] else {
            panic!()
        };
        assert_eq!(clicks.name, "clicks");
        assert_eq!(clicks.location, Location { line: 3, column: 1 });
        assert_eq!(clicks.columns.as_ref().unwrap().len(), 6);
        let w = clicks.watermark.as_ref().unwrap();
        assert_eq!(w.column, "ts");
        assert_eq!(w.expr.to_string(), "ts - INTERVAL '2' SECOND");
        assert_eq!(clicks.option("csv.header"), Some("true"));
        let Statement::CreateTable(revenue) = &script.statements[1] else {
            panic!()
        };
        assert!(revenue.columns.is_none());
        let Statement::Insert { sink, location, .. } = &script.statements[2] else {
            panic!()
        };
        assert_eq!(sink, "revenue");
        assert_eq!(location.line, 11);
    }

    #[test]
    fn parses_proctime_columns_and_primary_keys() {
        let script = parse_script(
            "CREATE TABLE c (user_id TEXT, seen AS PROCTIME(), segment TEXT, PRIMARY KEY (user_id) NOT ENFORCED)
               WITH (connector = 'dynamodb', table = 'c')",
        )
        .unwrap();
        let Statement::CreateTable(c) = &script.statements[0] else {
            panic!()
        };
        assert_eq!(c.proctime.as_deref(), Some("seen"));
        assert_eq!(c.primary_key_columns(), vec!["user_id"]);
        let columns = c.columns.as_ref().unwrap();
        assert_eq!(columns[1].data_type(), &crate::ddl::proctime_type());
        assert!(!columns[1].is_nullable());
        let pairs: Vec<(String, String)> = c.connector_option_pairs().collect();
        assert!(
            pairs.contains(&("primary_key".into(), "user_id".into())),
            "{pairs:?}"
        );
        // A sink without columns may name its key; connectors without keys do not get it.
        let script = parse_script(
            "CREATE TABLE s (PRIMARY KEY (a, b)) WITH (connector = 'delta', path = 'x');
             CREATE TABLE f (a TEXT, PRIMARY KEY (a)) WITH (connector = 'file', path = 'y')",
        )
        .unwrap();
        let (Statement::CreateTable(s), Statement::CreateTable(f)) =
            (&script.statements[0], &script.statements[1])
        else {
            panic!()
        };
        assert!(s.columns.is_none());
        assert!(
            s.connector_option_pairs()
                .any(|(k, v)| k == "primary_key" && v == "a, b")
        );
        assert!(!f.connector_option_pairs().any(|(k, _)| k == "primary_key"));
        for (sql, message) in [
            (
                "CREATE TABLE t (a TEXT, b AS NOW()) WITH (connector = 'file')",
                "PROCTIME()",
            ),
            (
                "CREATE TABLE t (a TEXT, PRIMARY KEY (z)) WITH (connector = 'file')",
                "`z`",
            ),
            (
                "CREATE TABLE t (a TEXT, PRIMARY KEY (a)) WITH (connector = 'dynamodb', primary_key = 'a')",
                "given twice",
            ),
        ] {
            let err = parse_script(sql).unwrap_err();
            assert!(err.to_string().contains(message), "{sql}: {err}");
        }
    }

    #[test]
    fn takes_for_system_time_out_of_queries() {
        let script = parse_script(
            "INSERT INTO out SELECT k.a, c.b FROM k JOIN c FOR SYSTEM_TIME AS OF k.pt AS c ON k.a = c.a",
        )
        .unwrap();
        assert_eq!(script.lookups.len(), 1);
        assert_eq!(script.lookups[0].table, "c");
        let (query, lookups) =
            parse_query("SELECT * FROM k JOIN c FOR SYSTEM_TIME AS OF PROCTIME() ON k.a = c.a")
                .unwrap();
        assert_eq!(lookups[0].time_column, None);
        assert_eq!(query.to_string(), "SELECT * FROM k JOIN c ON k.a = c.a");
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let err =
            parse_script("CREATE TABLE t (a BIGINT,\n  b WIBBLE(\n) WITH (connector = 'file')")
                .unwrap_err();
        assert_eq!(err.location().map(|l| l.line), Some(2), "{err}");
        let err = parse_script("CREATE TABLE t (a BIGINT, WATERMARK FOR b AS b) WITH (x = 'y')")
            .unwrap_err();
        assert!(err.to_string().contains("no such column"), "{err}");
        let err = parse_script("SELECT 1").unwrap_err();
        assert!(err.to_string().contains("INSERT INTO"), "{err}");
    }
}
