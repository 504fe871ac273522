//! Benchmarks for Weir. Each binary in `src/bin` drives a Weir server over
//! the Postgres wire protocol, using the minimal client in [`pg`].

pub mod pg;
pub mod server;
