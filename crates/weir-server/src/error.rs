use weir_common::{Error, SqlState};

/// Errors of the server layer.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The server could not start (bind, data directory).
    #[error("{0}")]
    Startup(String),
    /// A statement failed; carries its SQLSTATE.
    #[error(transparent)]
    Statement(#[from] Error),
}

impl From<ServerError> for Error {
    fn from(e: ServerError) -> Self {
        match e {
            ServerError::Startup(m) => Error::new(SqlState("58000"), m),
            ServerError::Statement(e) => e,
        }
    }
}

impl From<weir_common::datafusion::error::DataFusionError> for ServerError {
    fn from(e: weir_common::datafusion::error::DataFusionError) -> Self {
        ServerError::Statement(e.into())
    }
}

impl From<weir_sql::SqlError> for ServerError {
    fn from(e: weir_sql::SqlError) -> Self {
        ServerError::Statement(e.into())
    }
}

impl From<weir_state::StateError> for ServerError {
    fn from(e: weir_state::StateError) -> Self {
        ServerError::Statement(e.into())
    }
}

impl From<weir_dataflow::DataflowError> for ServerError {
    fn from(e: weir_dataflow::DataflowError) -> Self {
        ServerError::Statement(e.into())
    }
}
