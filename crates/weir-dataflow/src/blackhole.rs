//! `Blackhole`: the last operator of a sink with `connector = 'blackhole'`.
//! It consumes changes and counts them, for benchmarks and tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use weir_common::{Op, StreamChunk};

use crate::{DataflowError, Operator};

/// What a sink has consumed, readable while it runs.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Insert changes consumed.
    pub inserts: AtomicU64,
    /// Delete changes consumed.
    pub deletes: AtomicU64,
}

/// Discards every change, counting it.
pub struct Blackhole {
    counters: Arc<SinkCounters>,
}

impl Blackhole {
    /// A blackhole counting into `counters`.
    pub fn new(counters: Arc<SinkCounters>) -> Self {
        Blackhole { counters }
    }
}

impl Operator for Blackhole {
    fn explain(&self) -> String {
        "Sink connector=blackhole".into()
    }

    fn process(
        &mut self,
        chunk: StreamChunk,
        _out: &mut Vec<StreamChunk>,
    ) -> Result<(), DataflowError> {
        let inserts = chunk
            .ops
            .values()
            .iter()
            .filter(|c| **c == Op::Insert.code())
            .count() as u64;
        let deletes = chunk.len() as u64 - inserts;
        self.counters.inserts.fetch_add(inserts, Ordering::Relaxed);
        self.counters.deletes.fetch_add(deletes, Ordering::Relaxed);
        Ok(())
    }
}
