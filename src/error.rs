//! The CLI's error type: which file an error is about, and whose fault it is.

use laketide_engine::ErrorKind;

/// Errors of the `laketide` command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A SQL error, located in a file.
    #[error("{file}:{source}")]
    Sql {
        file: String,
        #[source]
        source: laketide_sql::SqlError,
    },
    /// A SQL error in text given on the command line.
    #[error("{0}")]
    Query(#[from] laketide_sql::SqlError),
    /// The pipeline failed while running.
    #[error("{0}")]
    Run(#[from] laketide_engine::EngineError),
    /// DataFusion failed (ad-hoc queries).
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// A connector could not be configured or read.
    #[error("{0}")]
    Connector(#[from] laketide_connectors::ConnectorError),
    /// A Delta table could not be read.
    #[error("{context}: {source}")]
    Delta {
        context: String,
        #[source]
        source: deltalake::DeltaTableError,
    },
    /// A file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    /// Whose fault the error is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CliError::Sql { source, .. } | CliError::Query(source) => source.kind(),
            CliError::Run(e) => e.kind(),
            CliError::DataFusion(_) => ErrorKind::User,
            CliError::Connector(e) => e.kind(),
            CliError::Delta { .. } | CliError::Io { .. } => ErrorKind::External,
            CliError::Usage(_) => ErrorKind::User,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        CliError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias of the CLI crate.
pub type Result<T, E = CliError> = std::result::Result<T, E>;

impl From<datafusion::arrow::error::ArrowError> for CliError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        CliError::DataFusion(e.into())
    }
}
