use weir_common::{Error, SqlState};

/// Errors of the state layer.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A stored value could not be decoded: the bytes are not what the
    /// operator wrote (corruption or a bug).
    #[error("corrupt state in table {table}: {reason}")]
    Corrupt { table: u32, reason: String },
    /// The backend failed (I/O).
    #[error("state store failure: {0}")]
    Backend(String),
}

impl From<StateError> for Error {
    fn from(e: StateError) -> Self {
        match &e {
            StateError::Corrupt { .. } => Error::new(SqlState("XX001"), e.to_string()),
            StateError::Backend(_) => Error::new(SqlState("58030"), e.to_string()),
        }
    }
}
