//! The incremental dataflow: operators that turn input changes into output
//! changes, and the runtime that runs them as tokio tasks joined by bounded
//! channels.
//!
//! - [`operator::Operator`] is the trait every operator implements; each
//!   operator lives in its own file ([`project`], [`filter`],
//!   [`hash_aggregate`], [`hash_join`], [`union`], [`materialize`]).
//! - [`table_store`] keeps a table's rows and turns DML into change chunks.
//! - [`outlet`] fans a stream out to subscribers (views and views on views).
//! - [`runtime`] spawns a dataflow graph of fragments (fan-in at joins and
//!   unions) and tracks its status and the epochs it has committed.
//!
//! - [`plan`] is the physical dataflow plan as data: operator descriptions
//!   that serialize, print, compare and instantiate into fragments.
//!
//! Planning (SQL → [`plan::DataflowPlan`]) lives in `weir-sql`; this crate
//! knows nothing of SQL text or logical plans.

pub mod align;
pub mod blackhole;
pub mod dynamic_filter;
mod error;
pub mod exchange;
pub mod filter;
pub mod float_sum;
pub mod hash_aggregate;
pub mod hash_join;
pub mod materialize;
pub mod min_max;
pub mod operator;
pub mod outlet;
pub mod plan;
pub mod project;
pub mod restart;
pub mod row_codec;
pub mod runtime;
pub mod table_store;
pub mod union;

pub use error::DataflowError;
pub use operator::Operator;
pub use outlet::Outlet;
pub use runtime::{DataflowHandle, DataflowStatus};

/// Capacity of every channel between operators, in messages. Bounded so a
/// slow consumer applies backpressure all the way to the writer.
pub const CHANNEL_CAPACITY: usize = 16;

/// Rows per chunk that sources and operators aim for.
pub const CHUNK_ROWS: usize = 8192;
