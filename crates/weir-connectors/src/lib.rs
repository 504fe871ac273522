//! Connectors: generators that produce Arrow record batches for sources
//! (`datagen`, `nexmark`). Every generator is deterministic and replayable
//! from an offset (the index of the next row or event), which is what a
//! checkpoint records.

pub mod datagen;
mod error;
pub mod generator;
pub mod nexmark;

pub use error::ConnectorError;
pub use generator::Generator;
