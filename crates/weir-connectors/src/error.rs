use weir_common::{Error, SqlState};

/// Errors of connectors.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// A connector option is missing, unknown or has a bad value.
    #[error("{0}")]
    Option(String),
    /// Building Arrow arrays failed.
    #[error("{0}")]
    Arrow(#[from] weir_common::arrow::error::ArrowError),
}

impl From<ConnectorError> for Error {
    fn from(e: ConnectorError) -> Self {
        match e {
            ConnectorError::Option(m) => Error::new(SqlState::INVALID_PARAMETER_VALUE, m),
            ConnectorError::Arrow(e) => e.into(),
        }
    }
}
