//! Barrier alignment for an operator with several inputs (a join, a union,
//! the receiving side of a hash exchange).
//!
//! [`AlignedInputs`] merges the inputs' messages. Once an input delivers
//! the barrier of an epoch, nothing more is read from that input until every
//! other live input has delivered the same barrier; then the barrier is
//! returned once (checkpoint if any input's copy was one), and all inputs
//! resume. So everything before the barrier on every input is processed
//! before it and nothing after it: the operator's state at the barrier is
//! exactly the state of that epoch, which is what its checkpoint must hold.
//!
//! Watermarks are aligned too: a watermark is returned when the smallest
//! watermark over all live inputs advances.

use std::future::poll_fn;
use std::task::Poll;

use tokio::sync::mpsc;
use weir_common::datafusion::common::ScalarValue;
use weir_common::{Barrier, Message, Watermark};

use crate::DataflowError;

/// Several inputs read as one aligned stream.
pub struct AlignedInputs {
    inputs: Vec<Option<mpsc::Receiver<Message>>>,
    /// Inputs that delivered the barrier being aligned.
    blocked: Vec<bool>,
    /// The barrier being aligned.
    pending: Option<Barrier>,
    /// Last watermark per input (for the one event-time column).
    watermarks: Vec<Option<ScalarValue>>,
    emitted_watermark: Option<ScalarValue>,
    /// Where the next poll starts, for fairness.
    start: usize,
    /// An input ending is an error (the instances of one upstream fragment
    /// end together, only when the dataflow stops).
    strict: bool,
}

impl AlignedInputs {
    /// Align `inputs`.
    pub fn new(inputs: Vec<mpsc::Receiver<Message>>) -> Self {
        let n = inputs.len();
        AlignedInputs {
            inputs: inputs.into_iter().map(Some).collect(),
            blocked: vec![false; n],
            pending: None,
            watermarks: vec![None; n],
            emitted_watermark: None,
            start: 0,
            strict: false,
        }
    }

    /// Align `inputs`, any of which ending is an error.
    pub fn strict(inputs: Vec<mpsc::Receiver<Message>>) -> Self {
        AlignedInputs {
            strict: true,
            ..Self::new(inputs)
        }
    }

    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.inputs.len()).filter(|i| self.inputs[*i].is_some())
    }

    /// The next message and the input it came from (for a barrier or a
    /// watermark: the last input that completed it). `None` once every
    /// input has ended. A barrier of another epoch arriving while one is
    /// being aligned is an error (the inputs disagree about epochs).
    pub async fn next(&mut self) -> Option<Result<(usize, Message), DataflowError>> {
        loop {
            if let Some(b) = self.pending {
                if self.live().all(|i| self.blocked[i]) {
                    self.pending = None;
                    self.blocked.iter_mut().for_each(|b| *b = false);
                    return Some(Ok((0, Message::Barrier(b))));
                }
            }
            self.live().next()?;
            let n = self.inputs.len();
            let start = self.start;
            let (i, msg) = {
                let inputs = &mut self.inputs;
                let blocked = &self.blocked;
                poll_fn(|cx| {
                    for k in 0..n {
                        let i = (start + k) % n;
                        if blocked[i] {
                            continue;
                        }
                        if let Some(rx) = inputs[i].as_mut() {
                            if let Poll::Ready(m) = rx.poll_recv(cx) {
                                return Poll::Ready((i, m));
                            }
                        }
                    }
                    Poll::Pending
                })
                .await
            };
            self.start = (i + 1) % n;
            match msg {
                None if self.strict => {
                    return Some(Err(DataflowError::Eval(weir_common::Error::new(
                        weir_common::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                        crate::runtime::UPSTREAM_STOPPED,
                    ))))
                }
                None => {
                    self.inputs[i] = None;
                    self.blocked[i] = false;
                    self.watermarks[i] = None;
                }
                Some(Message::Chunk(c)) => return Some(Ok((i, Message::Chunk(c)))),
                Some(Message::Barrier(b)) => {
                    match &mut self.pending {
                        Some(p) if p.epoch != b.epoch => {
                            return Some(Err(DataflowError::Internal(format!(
                                "input {i} delivered the barrier of epoch {} while epoch {} was being aligned",
                                b.epoch, p.epoch
                            ))))
                        }
                        Some(p) => p.checkpoint |= b.checkpoint,
                        None => self.pending = Some(b),
                    }
                    self.blocked[i] = true;
                }
                Some(Message::Watermark(w)) => {
                    self.watermarks[i] = Some(w.value.clone());
                    if let Some(min) = self.min_watermark() {
                        let advanced = match &self.emitted_watermark {
                            None => true,
                            Some(prev) => {
                                min.partial_cmp(prev) == Some(std::cmp::Ordering::Greater)
                            }
                        };
                        if advanced {
                            self.emitted_watermark = Some(min.clone());
                            return Some(Ok((
                                i,
                                Message::Watermark(Watermark {
                                    column: w.column,
                                    value: min,
                                }),
                            )));
                        }
                    }
                }
            }
        }
    }

    /// The smallest watermark over live inputs, once every live input has one.
    fn min_watermark(&self) -> Option<ScalarValue> {
        let mut min: Option<&ScalarValue> = None;
        for i in self.live() {
            let w = self.watermarks[i].as_ref()?;
            min = match min {
                Some(m) if m.partial_cmp(w) != Some(std::cmp::Ordering::Greater) => Some(m),
                _ => Some(w),
            };
        }
        min.cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use weir_common::arrow::array::{Int64Array, RecordBatch};
    use weir_common::arrow::datatypes::{DataType, Field, Schema};
    use weir_common::{Op, StreamChunk};

    fn chunk(v: i64) -> Message {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let data = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![v]))]).unwrap();
        Message::Chunk(StreamChunk::uniform(data, Op::Insert))
    }

    fn value(m: &Message) -> String {
        match m {
            Message::Chunk(c) => format!(
                "c{}",
                c.data
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .value(0)
            ),
            Message::Barrier(b) => format!("b{}{}", b.epoch, if b.checkpoint { "!" } else { "" }),
            Message::Watermark(w) => format!("w{}", w.value),
        }
    }

    #[tokio::test]
    async fn nothing_after_a_barrier_passes_before_every_input_delivered_it() {
        let (tx0, rx0) = mpsc::channel(16);
        let (tx1, rx1) = mpsc::channel(16);
        let mut aligned = AlignedInputs::new(vec![rx0, rx1]);
        // Input 0 runs ahead into epoch 2; input 1 is still in epoch 1.
        tx0.send(chunk(1)).await.unwrap();
        tx0.send(Message::Barrier(Barrier {
            epoch: 1,
            checkpoint: true,
        }))
        .await
        .unwrap();
        tx0.send(chunk(20)).await.unwrap();
        tx1.send(chunk(2)).await.unwrap();
        let mut seen = Vec::new();
        for _ in 0..2 {
            seen.push(value(&aligned.next().await.unwrap().unwrap().1));
        }
        seen.sort();
        assert_eq!(seen, vec!["c1", "c2"]);
        // c20 waits behind input 0's barrier: nothing is ready until input
        // 1 delivers its barrier too.
        let not_ready =
            tokio::time::timeout(std::time::Duration::from_millis(50), aligned.next()).await;
        assert!(not_ready.is_err(), "a message passed the barrier early");
        tx1.send(Message::Barrier(Barrier::new(1))).await.unwrap();
        tx1.send(chunk(21)).await.unwrap();
        assert_eq!(value(&aligned.next().await.unwrap().unwrap().1), "b1!");
        let mut after = vec![
            value(&aligned.next().await.unwrap().unwrap().1),
            value(&aligned.next().await.unwrap().unwrap().1),
        ];
        after.sort();
        assert_eq!(after, vec!["c20", "c21"]);
        // An input that ends no longer holds barriers back.
        drop(tx1);
        tx0.send(Message::Barrier(Barrier::new(2))).await.unwrap();
        assert_eq!(value(&aligned.next().await.unwrap().unwrap().1), "b2");
        drop(tx0);
        assert!(aligned.next().await.is_none());
    }

    #[tokio::test]
    async fn watermarks_advance_with_the_slowest_input() {
        let (tx0, rx0) = mpsc::channel(16);
        let (tx1, rx1) = mpsc::channel(16);
        let mut aligned = AlignedInputs::new(vec![rx0, rx1]);
        let wm = |v: i64| {
            Message::Watermark(Watermark {
                column: 0,
                value: ScalarValue::Int64(Some(v)),
            })
        };
        tx0.send(wm(10)).await.unwrap();
        tx1.send(wm(5)).await.unwrap();
        assert_eq!(value(&aligned.next().await.unwrap().unwrap().1), "w5");
        tx1.send(wm(7)).await.unwrap();
        assert_eq!(value(&aligned.next().await.unwrap().unwrap().1), "w7");
        tx1.send(wm(30)).await.unwrap();
        assert_eq!(value(&aligned.next().await.unwrap().unwrap().1), "w10");
    }
}
