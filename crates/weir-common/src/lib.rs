//! Shared vocabulary of Weir: the change batch that flows between operators
//! ([`StreamChunk`]), the control messages beside it ([`Message`]), epochs,
//! virtual nodes ([`vnode`]) and the SQLSTATE-carrying error type ([`Error`]).
//!
//! This crate owns no behaviour beyond these types; every other crate builds on
//! it and it depends on nothing of Weir's.

pub mod change;
pub mod char_type;
pub mod error;
pub mod failpoint;
pub mod message;
pub mod pg;
pub mod sqlstate;
pub mod vnode;

pub use change::{Op, StreamChunk};
pub use error::{Error, Result};
pub use message::{Barrier, Epoch, Message, Watermark};
pub use sqlstate::SqlState;

/// Arrow and DataFusion as every Weir crate sees them (one version, re-exported).
pub use datafusion;
pub use datafusion::arrow;
