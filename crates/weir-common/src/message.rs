//! What flows on the channels between operators: change chunks and control
//! messages.

use datafusion::common::ScalarValue;

use crate::StreamChunk;

/// A logical timestamp. Every DML statement (and, later, every checkpoint
/// interval) closes one epoch; views commit their changes epoch by epoch.
pub type Epoch = u64;

/// One message on an operator input.
#[derive(Debug, Clone)]
pub enum Message {
    /// A batch of row changes.
    Chunk(StreamChunk),
    /// End of an epoch: every change before it belongs to `epoch`.
    Barrier(Barrier),
    /// Event time has advanced (used by windows in a later issue; operators
    /// forward it unchanged today).
    Watermark(Watermark),
}

/// Separates epochs. Operators flush pending output when they see one, and
/// materialize operators make the epoch visible to readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    /// The epoch this barrier closes.
    pub epoch: Epoch,
    /// True for a checkpoint barrier: besides committing, every stateful
    /// operator writes its state changes to the checkpoint files.
    pub checkpoint: bool,
}

impl Barrier {
    /// A barrier that only closes `epoch` (no checkpoint).
    pub const fn new(epoch: Epoch) -> Self {
        Barrier {
            epoch,
            checkpoint: false,
        }
    }
}

/// No future row will carry a smaller value in `column`.
#[derive(Debug, Clone, PartialEq)]
pub struct Watermark {
    /// Index of the event-time column in the stream's schema.
    pub column: usize,
    /// The watermark value.
    pub value: ScalarValue,
}
