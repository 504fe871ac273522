use std::path::PathBuf;

use weir_common::{Error, SqlState};

/// Errors of the state layer.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A stored value could not be decoded: the bytes are not what the
    /// operator wrote (corruption or a bug).
    #[error("corrupt state in table {table}: {reason}")]
    Corrupt { table: u32, reason: String },
    /// A scan's visitor asked to stop (its reader went away or failed).
    #[error("scan stopped by its reader")]
    ScanStopped,
    /// The backend failed (I/O).
    #[error("state store failure: {0}")]
    Backend(String),
    /// Writing or reading a checkpoint failed (I/O, encoding); the message
    /// names the file.
    #[error("checkpoint failure: {0}")]
    Checkpoint(String),
    /// A checkpoint file or manifest is missing, truncated, or fails its
    /// checksum or format checks.
    #[error("checkpoint file {file} is damaged: {reason}")]
    CheckpointDamaged { file: String, reason: String },
    /// Checkpoint manifests exist but none of them is usable.
    #[error(
        "recovery is impossible: no valid checkpoint ({})",
        .problems.join("; ")
    )]
    NoValidCheckpoint { problems: Vec<String> },
    /// The write-ahead log is damaged somewhere other than the tail of its
    /// last segment (which open repairs): records that were acknowledged may
    /// be lost, so the log is not used.
    #[error("corrupt write-ahead log {file} at offset {offset}: {reason}")]
    WalCorrupt {
        /// The damaged segment file.
        file: PathBuf,
        /// Byte offset of the damage within `file`.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A log position passed to the write-ahead log is out of range or not a
    /// record boundary (a caller bug).
    #[error("invalid write-ahead log position {lsn}: {reason}")]
    WalPosition {
        /// The position asked for.
        lsn: u64,
        /// Why it is invalid.
        reason: String,
    },
}

impl From<StateError> for Error {
    fn from(e: StateError) -> Self {
        match &e {
            StateError::Corrupt { .. } => Error::new(SqlState("XX001"), e.to_string()),
            StateError::Backend(_) => Error::new(SqlState("58030"), e.to_string()),
            StateError::ScanStopped => Error::new(SqlState::QUERY_CANCELED, e.to_string()),
            StateError::WalCorrupt { .. } => Error::new(SqlState("XX001"), e.to_string()),
            StateError::WalPosition { .. } => Error::new(SqlState("XX000"), e.to_string()),
            StateError::Checkpoint(_) => Error::new(SqlState("58030"), e.to_string()),
            StateError::CheckpointDamaged { .. } | StateError::NoValidCheckpoint { .. } => {
                Error::new(SqlState("XX001"), e.to_string())
            }
        }
    }
}
