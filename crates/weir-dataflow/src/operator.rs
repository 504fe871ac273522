//! The operator trait: how one step of a dataflow handles changes and epochs.

use weir_common::{Barrier, Epoch, StreamChunk};

use crate::DataflowError;

/// One incremental operator. The runtime calls it from a single task, in
/// message order.
///
/// Contract: the changes an operator emits, summed over an epoch, equal the
/// difference of its output relation between the end of the previous epoch and
/// the end of this one. Operators may emit at every chunk (stateless ones) or
/// hold changes back until the barrier (aggregates, which then emit one net
/// change per group).
pub trait Operator: Send + 'static {
    /// A one-line description for `EXPLAIN`.
    fn explain(&self) -> String;

    /// Handle a chunk of input changes; append output chunks to `out`.
    fn process(
        &mut self,
        chunk: StreamChunk,
        out: &mut Vec<StreamChunk>,
    ) -> Result<(), DataflowError>;

    /// Handle a chunk that arrived on input `input` of an operator with
    /// several inputs (a join's sides, a union's branches). Only the first
    /// operator of a fragment's chain is called with an input other than 0;
    /// single-input operators need not override it.
    fn process_input(
        &mut self,
        input: usize,
        chunk: StreamChunk,
        out: &mut Vec<StreamChunk>,
    ) -> Result<(), DataflowError> {
        let _ = input;
        self.process(chunk, out)
    }

    /// The epoch is complete: flush pending output to `out` and make state
    /// durable. The runtime forwards the barrier after the flushed chunks.
    fn on_barrier(
        &mut self,
        barrier: Barrier,
        out: &mut Vec<StreamChunk>,
    ) -> Result<(), DataflowError> {
        let _ = (barrier, out);
        Ok(())
    }

    /// A checkpoint barrier for `epoch` passed (after [`Operator::on_barrier`]):
    /// write the state changes since the last checkpoint to checkpoint files.
    /// Stateless operators have nothing to do.
    fn checkpoint(&mut self, epoch: Epoch) -> Result<(), DataflowError> {
        let _ = epoch;
        Ok(())
    }
}
