//! laketide's `CREATE TABLE`: columns, an optional `WATERMARK FOR col AS expr`, and connector
//! options in `WITH (key = 'value', …)`.

use datafusion::arrow::datatypes::Field;
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Ident};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{IsOptional, Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

use laketide_connectors::MetadataColumn;

use crate::error::{Location, Result, SqlError};
use crate::types::arrow_type;

/// `WATERMARK FOR column AS expression`.
#[derive(Debug, Clone, PartialEq)]
pub struct WatermarkDef {
    /// The event-time column.
    pub column: String,
    /// The watermark expression (a TIMESTAMP), e.g. `ts - INTERVAL '2' SECOND`.
    pub expr: SqlExpr,
    /// Where the clause starts.
    pub location: Location,
}

/// A table declared by `CREATE TABLE`.
#[derive(Debug, Clone, PartialEq)]
pub struct TableDef {
    /// Normalized name (unquoted identifiers are lower-cased).
    pub name: String,
    /// Declared columns; `None` when the statement has no column list (sinks take the schema
    /// of the query that writes them).
    pub columns: Option<Vec<Field>>,
    /// The event-time declaration, if any.
    pub watermark: Option<WatermarkDef>,
    /// Columns filled from record metadata: `col TYPE METADATA FROM 'key'`.
    pub metadata: Vec<MetadataColumn>,
    /// The column declared `col AS PROCTIME()`: the wall-clock time a row is read (a
    /// `TIMESTAMP(3)`, never NULL), for `FOR SYSTEM_TIME AS OF` lookups.
    pub proctime: Option<String>,
    /// `PRIMARY KEY (a, b)`: for connectors that key their rows (DynamoDB, Delta), the same as
    /// their `primary_key` option; informational for the others (not enforced).
    pub primary_key: Option<Vec<String>>,
    /// `WITH` options, keys lower-cased, in order.
    pub options: Vec<(String, String, Location)>,
    /// Where the statement starts.
    pub location: Location,
}

/// Table options the SQL layer reads itself; every other option belongs to the connector.
pub const TABLE_OPTIONS: &[&str] = &[
    "connector",
    "idle_timeout",
    "max_future",
    "late_dead_letter_path",
];

/// Connectors whose `primary_key` option a `PRIMARY KEY (…)` clause sets.
pub const KEYED_CONNECTORS: &[&str] = &["dynamodb", "delta"];

impl TableDef {
    /// The connector's name, lower-cased.
    pub fn connector(&self) -> Option<String> {
        self.option("connector").map(|c| c.to_ascii_lowercase())
    }

    /// The options that belong to the connector (all but [`TABLE_OPTIONS`]), with the
    /// `PRIMARY KEY` as `primary_key` for connectors that take one.
    pub fn connector_option_pairs(&self) -> impl Iterator<Item = (String, String)> + '_ {
        let keyed = (self.connector()).is_some_and(|c| KEYED_CONNECTORS.contains(&c.as_str()));
        let key = (self.primary_key.as_ref())
            .filter(|_| keyed)
            .map(|k| ("primary_key".to_string(), k.join(", ")));
        self.options
            .iter()
            .filter(|(k, _, _)| !TABLE_OPTIONS.contains(&k.as_str()))
            .map(|(k, v, _)| (k.clone(), v.clone()))
            .chain(key)
    }

    /// The primary key's columns: `PRIMARY KEY (…)` or the `primary_key` option.
    pub fn primary_key_columns(&self) -> Vec<String> {
        match &self.primary_key {
            Some(key) => key.clone(),
            None => (self.option("primary_key").unwrap_or_default().split(','))
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect(),
        }
    }

    /// The value of option `key`.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, _)| v.as_str())
    }
}

/// Normalizes an identifier as DataFusion does: unquoted ones are lower-cased.
pub fn normalize_ident(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    }
}

fn here(parser: &Parser) -> Location {
    parser.peek_token().span.start.into()
}

fn syntax(parser: &Parser, e: ParserError) -> SqlError {
    let message = e.to_string();
    let message = message
        .strip_prefix("sql parser error: ")
        .unwrap_or(&message)
        .to_string();
    SqlError::Syntax {
        location: here(parser),
        message,
    }
}

fn peek_word(parser: &Parser, word: &str) -> bool {
    matches!(&parser.peek_token().token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// Parses `CREATE TABLE …` from `parser`, positioned at `CREATE`.
pub fn parse_create_table(parser: &mut Parser, location: Location) -> Result<TableDef> {
    parser
        .expect_keyword(Keyword::CREATE)
        .map_err(|e| syntax(parser, e))?;
    parser
        .expect_keyword(Keyword::TABLE)
        .map_err(|e| syntax(parser, e))?;
    if parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]) {
        return Err(SqlError::plan(
            here(parser),
            "IF NOT EXISTS is not supported: a pipeline declares each table once",
        ));
    }
    let name_location = here(parser);
    let name = parser
        .parse_object_name(false)
        .map_err(|e| syntax(parser, e))?;
    if name.0.len() != 1 {
        return Err(SqlError::plan(
            name_location,
            format!("table names have no schema or catalog part: `{name}`"),
        ));
    }
    let name = name.0[0]
        .as_ident()
        .map(normalize_ident)
        .ok_or_else(|| SqlError::plan(name_location, "expected a table name"))?;

    let mut columns = None;
    let mut watermark = None;
    let mut metadata = Vec::new();
    let mut proctime = None;
    let mut primary_key: Option<(Vec<String>, Location)> = None;
    if parser.consume_token(&Token::LParen) {
        let mut fields: Vec<Field> = Vec::new();
        loop {
            let at = here(parser);
            if parser.parse_keywords(&[Keyword::PRIMARY, Keyword::KEY]) {
                let key = parser
                    .parse_parenthesized_column_list(IsOptional::Mandatory, false)
                    .map_err(|e| syntax(parser, e))?;
                let _ = parser.parse_keywords(&[Keyword::NOT, Keyword::ENFORCED]);
                if primary_key.is_some() {
                    return Err(SqlError::plan(at, "a table can have only one PRIMARY KEY"));
                }
                primary_key = Some((key.iter().map(normalize_ident).collect(), at));
            } else if peek_word(parser, "WATERMARK") {
                parser.next_token();
                parser
                    .expect_keyword(Keyword::FOR)
                    .map_err(|e| syntax(parser, e))?;
                let column =
                    normalize_ident(&parser.parse_identifier().map_err(|e| syntax(parser, e))?);
                parser
                    .expect_keyword(Keyword::AS)
                    .map_err(|e| syntax(parser, e))?;
                let expr = parser.parse_expr().map_err(|e| syntax(parser, e))?;
                if watermark.is_some() {
                    return Err(SqlError::plan(at, "a table can have only one WATERMARK"));
                }
                watermark = Some(WatermarkDef {
                    column,
                    expr,
                    location: at,
                });
            } else {
                parse_column(parser, at, &mut fields, &mut metadata, &mut proctime)?;
            }
            if parser.consume_token(&Token::Comma) {
                continue;
            }
            parser
                .expect_token(&Token::RParen)
                .map_err(|e| syntax(parser, e))?;
            break;
        }
        if let Some(w) = &watermark {
            match fields.iter().find(|f| f.name() == &w.column) {
                None => {
                    return Err(SqlError::plan(
                        w.location,
                        format!("WATERMARK FOR `{}`: no such column", w.column),
                    ));
                }
                Some(f)
                    if !matches!(
                        f.data_type(),
                        datafusion::arrow::datatypes::DataType::Timestamp(_, _)
                    ) =>
                {
                    return Err(SqlError::plan(
                        w.location,
                        format!(
                            "WATERMARK FOR `{}`: the column is {}, not a TIMESTAMP",
                            w.column,
                            f.data_type()
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some((key, at)) = &primary_key
            && !fields.is_empty()
            && let Some(missing) = key.iter().find(|k| !fields.iter().any(|f| f.name() == *k))
        {
            return Err(SqlError::plan(
                *at,
                format!("PRIMARY KEY names `{missing}`, which is not a column of the table"),
            ));
        }
        columns = (!fields.is_empty()).then_some(fields);
    }

    let mut options: Vec<(String, String, Location)> = Vec::new();
    if parser.parse_keyword(Keyword::WITH) {
        parser
            .expect_token(&Token::LParen)
            .map_err(|e| syntax(parser, e))?;
        loop {
            let at = here(parser);
            let key = parse_option_key(parser)?;
            parser
                .expect_token(&Token::Eq)
                .map_err(|e| syntax(parser, e))?;
            let value = parse_option_value(parser)?;
            if options
                .iter()
                .any(|(k, _, _): &(String, String, Location)| *k == key)
            {
                return Err(SqlError::plan(at, format!("option `{key}` is given twice")));
            }
            options.push((key, value, at));
            if parser.consume_token(&Token::Comma) {
                continue;
            }
            parser
                .expect_token(&Token::RParen)
                .map_err(|e| syntax(parser, e))?;
            break;
        }
    }
    let trailing = parser.peek_token();
    if trailing.token != Token::EOF {
        return Err(SqlError::Syntax {
            location: trailing.span.start.into(),
            message: format!("unexpected `{}` after CREATE TABLE", trailing.token),
        });
    }
    if let Some((_, at)) = &primary_key
        && options.iter().any(|(k, _, _)| k == "primary_key")
    {
        return Err(SqlError::plan(
            *at,
            "the primary key is given twice (PRIMARY KEY and the `primary_key` option): keep one",
        ));
    }
    Ok(TableDef {
        name,
        columns,
        watermark,
        metadata,
        proctime,
        primary_key: primary_key.map(|(key, _)| key),
        options,
        location,
    })
}

/// One column of a column list: `name TYPE [METADATA [FROM 'key']] [NOT NULL]`, or
/// `name AS PROCTIME()`.
fn parse_column(
    parser: &mut Parser,
    at: Location,
    fields: &mut Vec<Field>,
    metadata: &mut Vec<MetadataColumn>,
    proctime: &mut Option<String>,
) -> Result<()> {
    let column = normalize_ident(&parser.parse_identifier().map_err(|e| syntax(parser, e))?);
    if fields.iter().any(|f| f.name() == &column) {
        return Err(SqlError::plan(
            at,
            format!("column `{column}` is declared twice"),
        ));
    }
    if parser.parse_keyword(Keyword::AS) {
        parse_proctime(parser)?;
        if proctime.is_some() {
            return Err(SqlError::plan(
                at,
                "a table has one PROCTIME() column at most",
            ));
        }
        fields.push(Field::new(&column, proctime_type(), false));
        *proctime = Some(column);
        return Ok(());
    }
    let type_at = here(parser);
    let sql_type = parser.parse_data_type().map_err(|e| syntax(parser, e))?;
    let data_type = arrow_type(&sql_type).map_err(|m| SqlError::plan(type_at, m))?;
    if peek_word(parser, "METADATA") {
        parser.next_token();
        let key = if parser.parse_keyword(Keyword::FROM) {
            parser
                .parse_literal_string()
                .map_err(|e| syntax(parser, e))?
        } else {
            column.clone()
        };
        metadata.push(MetadataColumn {
            column: column.clone(),
            key,
        });
    }
    let nullable = if parser.parse_keywords(&[Keyword::NOT, Keyword::NULL]) {
        false
    } else {
        let _ = parser.parse_keyword(Keyword::NULL);
        true
    };
    fields.push(Field::new(column, data_type, nullable));
    Ok(())
}

/// The type of a `PROCTIME()` column: `TIMESTAMP(3)`.
pub fn proctime_type() -> datafusion::arrow::datatypes::DataType {
    use datafusion::arrow::datatypes::{DataType, TimeUnit};
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

/// `PROCTIME()`, after a column name and `AS` (the one computed column laketide has).
fn parse_proctime(parser: &mut Parser) -> Result<()> {
    let at = here(parser);
    let is_proctime = peek_word(parser, "PROCTIME");
    if !is_proctime {
        return Err(SqlError::plan(
            at,
            "a computed column can only be `name AS PROCTIME()` (the time a row is read)",
        ));
    }
    parser.next_token();
    parser
        .expect_token(&Token::LParen)
        .map_err(|e| syntax(parser, e))?;
    parser
        .expect_token(&Token::RParen)
        .map_err(|e| syntax(parser, e))?;
    Ok(())
}

/// An option key: `name`, `a.b.c`, or a quoted string.
fn parse_option_key(parser: &mut Parser) -> Result<String> {
    let token = parser.next_token();
    let mut key = match &token.token {
        Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => {
            return Ok(s.to_ascii_lowercase());
        }
        Token::Word(w) => w.value.to_ascii_lowercase(),
        other => {
            return Err(SqlError::Syntax {
                location: token.span.start.into(),
                message: format!("expected an option name, found `{other}`"),
            });
        }
    };
    while parser.consume_token(&Token::Period) {
        let part = parser.next_token();
        match &part.token {
            Token::Word(w) => {
                key.push('.');
                key.push_str(&w.value.to_ascii_lowercase());
            }
            other => {
                return Err(SqlError::Syntax {
                    location: part.span.start.into(),
                    message: format!("expected an option name after `.`, found `{other}`"),
                });
            }
        }
    }
    Ok(key)
}

/// An option value: a string, a number, or a bare word such as `true`.
fn parse_option_value(parser: &mut Parser) -> Result<String> {
    let token = parser.next_token();
    match token.token {
        Token::SingleQuotedString(s) => Ok(s),
        Token::Number(n, _) => Ok(n),
        Token::Word(w) if w.quote_style.is_none() => Ok(w.value),
        other => Err(SqlError::Syntax {
            location: token.span.start.into(),
            message: format!(
                "expected an option value such as 'text', 42 or true, found `{other}`"
            ),
        }),
    }
}
