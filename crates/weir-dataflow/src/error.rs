use weir_common::arrow::error::ArrowError;
use weir_common::datafusion::error::DataFusionError;
use weir_common::{Error, SqlState};
use weir_state::StateError;

/// Errors raised while running operators.
#[derive(Debug, thiserror::Error)]
pub enum DataflowError {
    /// Evaluating an expression or aggregate failed (division by zero,
    /// overflow, a bad cast): deterministic, caused by the data.
    #[error("{0}")]
    Eval(#[from] Error),
    /// The state layer failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// A primary-key conflict or similar constraint violation in a table.
    #[error("{0}")]
    Constraint(Error),
    /// An operator task panicked.
    #[error("operator panicked: {0}")]
    Panic(String),
    /// Something Weir got wrong.
    #[error("internal error: {0}")]
    Internal(String),
    /// A stored dataflow plan cannot be read.
    #[error("stored dataflow plan cannot be read: {0}")]
    Plan(String),
}

impl From<ArrowError> for DataflowError {
    fn from(e: ArrowError) -> Self {
        DataflowError::Eval(e.into())
    }
}

impl From<DataFusionError> for DataflowError {
    fn from(e: DataFusionError) -> Self {
        DataflowError::Eval(e.into())
    }
}

impl From<DataflowError> for Error {
    fn from(e: DataflowError) -> Self {
        match e {
            DataflowError::Eval(e) | DataflowError::Constraint(e) => e,
            DataflowError::State(s) => s.into(),
            DataflowError::Panic(m) => {
                Error::new(SqlState::INTERNAL_ERROR, format!("operator panicked: {m}"))
            }
            DataflowError::Internal(m) => Error::internal(m),
            DataflowError::Plan(m) => Error::new(
                SqlState::DATA_CORRUPTED,
                format!("stored dataflow plan cannot be read: {m}"),
            ),
        }
    }
}
