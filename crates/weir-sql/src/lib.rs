//! SQL for Weir: parsing (sqlparser plus Weir's own statements), and the
//! translation of a DataFusion `LogicalPlan` into a pipeline of incremental
//! operators.
//!
//! - [`parser::parse`] splits a query string into [`parser::Statement`]s,
//!   recognising statements sqlparser lacks (FLUSH, SHOW TABLES, ...).
//! - [`view_plan::plan_view`] plans a `CREATE MATERIALIZED VIEW` query with
//!   DataFusion and translates it into a [`view_plan::ViewPlan`], whose
//!   [`view_plan::ViewPlan::dataflow`] is the physical dataflow plan the
//!   catalog stores and `weir-dataflow` instantiates.
//! - [`naming`] gives result columns the names Postgres would.
//!
//! It does not execute anything; `weir-server` does.

mod error;
pub mod functions;
pub mod naming;
pub mod parser;
pub mod source_ddl;
pub mod view_plan;

pub use error::SqlError;
pub use weir_common::datafusion::sql::sqlparser;
