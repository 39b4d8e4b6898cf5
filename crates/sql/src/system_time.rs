//! `FOR SYSTEM_TIME AS OF …` after a table in a FROM clause, Flink's form of a lookup join.
//! The SQL parser's generic dialect does not know the clause, and DataFusion would ignore it,
//! so it is taken out of a statement's tokens before parsing and remembered here: the table
//! it follows is then read as a lookup table (at processing time) by the planner.

use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Ident};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::ddl::normalize_ident;
use crate::error::{Location, Result, SqlError};

/// One `table FOR SYSTEM_TIME AS OF time` in a statement.
#[derive(Debug, Clone, PartialEq)]
pub struct LookupUse {
    /// The table read as a lookup table.
    pub table: String,
    /// The column named after `AS OF` (its last part), or `None` for `PROCTIME()`.
    pub time_column: Option<String>,
    /// Where the clause starts.
    pub location: Location,
}

fn is_keyword(token: &Token, keyword: Keyword) -> bool {
    matches!(token, Token::Word(w) if w.keyword == keyword && w.quote_style.is_none())
}

/// The positions of the non-whitespace tokens from `from` on.
fn significant(tokens: &[TokenWithSpan], from: usize) -> impl Iterator<Item = usize> + '_ {
    (from..tokens.len()).filter(|i| !matches!(tokens[*i].token, Token::Whitespace(_)))
}

/// Takes every `FOR SYSTEM_TIME AS OF <expr>` out of `tokens`, returning what they said.
pub fn take_system_time(tokens: &mut Vec<TokenWithSpan>) -> Result<Vec<LookupUse>> {
    let mut uses = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if !is_keyword(&tokens[i].token, Keyword::FOR) {
            i += 1;
            continue;
        }
        let next: Vec<usize> = significant(tokens, i + 1).take(3).collect();
        let words = [Keyword::SYSTEM_TIME, Keyword::AS, Keyword::OF];
        let is_clause = next.len() == 3
            && (next.iter().zip(words)).all(|(at, k)| is_keyword(&tokens[*at].token, k));
        if !is_clause {
            i += 1;
            continue;
        }
        let location: Location = tokens[i].span.start.into();
        let table = previous_name(tokens, i).ok_or_else(|| {
            SqlError::plan(location, "FOR SYSTEM_TIME AS OF must follow a table name")
        })?;
        let expr_start = next[2] + 1;
        let dialect = GenericDialect {};
        let mut parser =
            Parser::new(&dialect).with_tokens_with_locations(tokens[expr_start..].to_vec());
        let expr = parser.parse_expr().map_err(|e| SqlError::Syntax {
            location,
            message: format!("FOR SYSTEM_TIME AS OF: {e}"),
        })?;
        let time_column = time_column(&expr).ok_or_else(|| {
            SqlError::plan(
                location,
                format!(
                    "FOR SYSTEM_TIME AS OF `{expr}`: a lookup reads the table as it is when a row arrives; name the stream's `col AS PROCTIME()` column or write PROCTIME()"
                ),
            )
        })?;
        let end = expr_start + parser.index();
        let start = match i.checked_sub(1) {
            Some(before) if matches!(tokens[before].token, Token::Whitespace(_)) => before,
            _ => i,
        };
        tokens.drain(start..end);
        i = start;
        uses.push(LookupUse {
            table,
            time_column,
            location,
        });
    }
    Ok(uses)
}

/// The table name (its last part) that ends just before token `at`.
fn previous_name(tokens: &[TokenWithSpan], at: usize) -> Option<String> {
    let before = (0..at)
        .rev()
        .find(|i| !matches!(tokens[*i].token, Token::Whitespace(_)))?;
    match &tokens[before].token {
        Token::Word(w) => Some(normalize_ident(&Ident {
            value: w.value.clone(),
            quote_style: w.quote_style,
            span: tokens[before].span,
        })),
        _ => None,
    }
}

/// `Some(None)` for `PROCTIME()`, `Some(Some(col))` for a (qualified) column, else `None`.
fn time_column(expr: &SqlExpr) -> Option<Option<String>> {
    match expr {
        SqlExpr::Function(f) if f.name.to_string().eq_ignore_ascii_case("proctime") => Some(None),
        SqlExpr::Identifier(ident) => Some(Some(normalize_ident(ident))),
        SqlExpr::CompoundIdentifier(parts) => parts.last().map(|p| Some(normalize_ident(p))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;

    fn take(sql: &str) -> (String, Vec<LookupUse>) {
        let mut tokens = Tokenizer::new(&GenericDialect {}, sql)
            .tokenize_with_location()
            .unwrap();
        let uses = take_system_time(&mut tokens).unwrap();
        let text: String = tokens.iter().map(|t| t.token.to_string()).collect();
        (text, uses)
    }

    #[test]
    fn takes_the_clause_out_and_names_the_table_and_time() {
        let (text, uses) = take(
            "SELECT * FROM clicks AS k JOIN Customers FOR SYSTEM_TIME AS OF k.proc_time AS c ON k.u = c.u",
        );
        assert_eq!(
            text,
            "SELECT * FROM clicks AS k JOIN Customers AS c ON k.u = c.u"
        );
        assert_eq!(uses.len(), 1);
        assert_eq!(uses[0].table, "customers");
        assert_eq!(uses[0].time_column.as_deref(), Some("proc_time"));
        assert_eq!(
            uses[0].location,
            Location {
                line: 1,
                column: 42
            }
        );
        let (text, uses) =
            take("SELECT * FROM a JOIN b FOR SYSTEM_TIME AS OF PROCTIME() ON a.x = b.x");
        assert_eq!(text, "SELECT * FROM a JOIN b ON a.x = b.x");
        assert_eq!(uses[0].time_column, None);
    }

    #[test]
    fn leaves_other_fors_alone_and_refuses_other_times() {
        let (text, uses) = take("SELECT 'FOR SYSTEM_TIME' AS s FROM t");
        assert_eq!(text, "SELECT 'FOR SYSTEM_TIME' AS s FROM t");
        assert!(uses.is_empty());
        let mut tokens = Tokenizer::new(
            &GenericDialect {},
            "SELECT * FROM a JOIN b FOR SYSTEM_TIME AS OF TIMESTAMP '2024-01-01' ON a.x = b.x",
        )
        .tokenize_with_location()
        .unwrap();
        let err = take_system_time(&mut tokens).unwrap_err();
        assert!(err.to_string().contains("PROCTIME()"), "{err}");
    }
}
