//! The connectors' error type.

use laketide_engine::EngineError;

/// Errors from configuring or running a connector.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// A `WITH` option is missing, unknown or invalid (a user error, found at plan time).
    #[error("{0}")]
    InvalidOption(String),
    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A Delta Lake operation failed.
    #[error("{context}: {source}")]
    Delta {
        context: String,
        #[source]
        source: deltalake::DeltaTableError,
    },
    /// A call to a remote service (Kinesis, DynamoDB) failed for good.
    #[error("{context}: {message}")]
    Service { context: String, message: String },
    /// The runtime reported an error.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl ConnectorError {
    /// Whose fault the error is.
    pub fn kind(&self) -> laketide_engine::ErrorKind {
        match self {
            ConnectorError::InvalidOption(_) => laketide_engine::ErrorKind::User,
            ConnectorError::Io { .. }
            | ConnectorError::Delta { .. }
            | ConnectorError::Service { .. } => laketide_engine::ErrorKind::External,
            ConnectorError::Engine(e) => e.kind(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ConnectorError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn service(context: impl Into<String>, message: impl Into<String>) -> Self {
        ConnectorError::Service {
            context: context.into(),
            message: message.into(),
        }
    }

    pub(crate) fn delta(context: impl Into<String>, source: deltalake::DeltaTableError) -> Self {
        ConnectorError::Delta {
            context: context.into(),
            source,
        }
    }
}

impl From<ConnectorError> for EngineError {
    fn from(e: ConnectorError) -> Self {
        match e {
            ConnectorError::InvalidOption(m) => EngineError::User(m),
            ConnectorError::Io { context, source } => EngineError::external(context, source),
            ConnectorError::Delta { context, source } => EngineError::external(context, source),
            ConnectorError::Service { context, message } => EngineError::external(context, message),
            ConnectorError::Engine(e) => e,
        }
    }
}

/// The column names of `schema`, comma-separated, for messages that list what exists.
pub(crate) fn column_list(schema: &datafusion::arrow::datatypes::Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Result alias of the connectors crate.
pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;
