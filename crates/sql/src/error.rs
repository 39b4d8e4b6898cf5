//! The SQL layer's error type: every user error carries the line and column it refers to.

use std::fmt;

use laketide_connectors::ConnectorError;
use laketide_engine::{EngineError, ErrorKind};

/// A position in a SQL script (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    /// Line, from 1.
    pub line: u64,
    /// Column, from 1.
    pub column: u64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

impl From<datafusion::sql::sqlparser::tokenizer::Location> for Location {
    fn from(l: datafusion::sql::sqlparser::tokenizer::Location) -> Self {
        Location {
            line: l.line,
            column: l.column,
        }
    }
}

/// Errors from parsing and planning SQL.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The text is not valid SQL, or uses syntax laketide does not know.
    #[error("{location}: syntax error: {message}")]
    Syntax { location: Location, message: String },
    /// The SQL is well-formed but wrong: unknown table, bad type, bad option …
    #[error("{location}: {message}")]
    Plan { location: Location, message: String },
    /// A connector failed while running.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// The runtime failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl SqlError {
    /// A planning error at `location`.
    pub fn plan(location: Location, message: impl Into<String>) -> Self {
        SqlError::Plan {
            location,
            message: message.into(),
        }
    }

    /// Whose fault the error is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SqlError::Syntax { .. } | SqlError::Plan { .. } => ErrorKind::User,
            SqlError::Connector(e) => e.kind(),
            SqlError::Engine(e) => e.kind(),
        }
    }

    /// The location the error refers to, if any.
    pub fn location(&self) -> Option<Location> {
        match self {
            SqlError::Syntax { location, .. } | SqlError::Plan { location, .. } => Some(*location),
            _ => None,
        }
    }
}

/// Turns a DataFusion planning error into a located message: DataFusion's diagnostic span if
/// it has one, else `fallback` (the statement's start).
pub fn from_datafusion(e: datafusion::error::DataFusionError, fallback: Location) -> SqlError {
    let location = e
        .diagnostic()
        .and_then(|d| d.span)
        .map(|s| Location {
            line: s.start.line,
            column: s.start.column,
        })
        .filter(|l| l.line > 0)
        .unwrap_or(fallback);
    let message = e.strip_backtrace();
    let message = message
        .strip_prefix("Error during planning: ")
        .or_else(|| message.strip_prefix("Schema error: "))
        .or_else(|| message.strip_prefix("This feature is not implemented: "))
        .unwrap_or(&message)
        .to_string();
    SqlError::plan(location, message)
}

/// Result alias of the SQL crate.
pub type Result<T, E = SqlError> = std::result::Result<T, E>;
