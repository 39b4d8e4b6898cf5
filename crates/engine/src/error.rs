//! The engine's error type. Every error says whose fault it is, so that the CLI can tell a user
//! what to fix (a `User` error), what failed outside (an `External` error), or that laketide has a
//! bug (`Internal`).

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input from the user: SQL, options, or records under `on_error = 'fail'`.
    User,
    /// A system outside laketide failed: file system, object store, network.
    External,
    /// A broken invariant inside laketide.
    Internal,
}

/// Errors raised by the streaming runtime.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A record could not be decoded and the policy is `fail`.
    #[error("bad record at {location}: {reason}")]
    BadRecord { location: String, reason: String },
    /// Invalid configuration or query shape detected by the runtime.
    #[error("{0}")]
    User(String),
    /// I/O or service failure outside the engine.
    #[error("{context}: {source}")]
    External {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A DataFusion or Arrow computation failed.
    #[error("{context}: {source}")]
    Compute {
        context: String,
        #[source]
        source: DataFusionError,
    },
    /// A broken invariant.
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// Whose fault this error is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::BadRecord { .. } | EngineError::User(_) => ErrorKind::User,
            EngineError::External { .. } => ErrorKind::External,
            EngineError::Compute { .. } | EngineError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Wraps an outside failure with what was being done.
    pub fn external(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        EngineError::External {
            context: context.into(),
            source: source.into(),
        }
    }

    /// Wraps a DataFusion failure with what was being done.
    pub fn compute(context: impl Into<String>, source: impl Into<DataFusionError>) -> Self {
        EngineError::Compute {
            context: context.into(),
            source: source.into(),
        }
    }
}

impl From<ArrowError> for EngineError {
    fn from(e: ArrowError) -> Self {
        EngineError::compute("arrow", e)
    }
}

impl From<DataFusionError> for EngineError {
    fn from(e: DataFusionError) -> Self {
        EngineError::compute("datafusion", e)
    }
}

/// Result alias of the engine crate.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
