//! Running a dataflow: one tokio task per operator, joined by bounded
//! channels, from an input subscription to an [`Outlet`].
//!
//! A barrier flows through every operator in order; once the last operator
//! has handled it and its output reached the outlet, the dataflow's committed
//! epoch advances, which is what DML waits for (read-your-writes).
//!
//! If an operator fails (an error or a panic) the dataflow is marked
//! [`DataflowStatus::Failed`], its tasks end and its outlet is closed so views
//! built on it fail too. The rest of the server is unaffected.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use weir_common::{Epoch, Error, Message, SqlState};

use crate::{DataflowError, Operator, Outlet, CHANNEL_CAPACITY};

/// The error of a dataflow whose input ended: not a failure of its own
/// (the view it reads failed or was dropped).
pub const UPSTREAM_STOPPED: &str =
    "the input of this view stopped (an upstream view failed or was dropped)";

/// Whether a dataflow is maintaining its view.
#[derive(Debug, Clone)]
pub enum DataflowStatus {
    /// Processing changes.
    Running,
    /// Stopped by an error; the view cannot be read until it is recreated.
    Failed(Error),
}

/// A running dataflow.
pub struct DataflowHandle {
    status: Arc<watch::Sender<DataflowStatus>>,
    committed: watch::Receiver<Epoch>,
    tasks: Vec<JoinHandle<()>>,
    outlet: Arc<Outlet>,
}

impl DataflowHandle {
    /// Current status.
    pub fn status(&self) -> DataflowStatus {
        self.status.borrow().clone()
    }

    /// Wait until the dataflow fails (forever if it never does).
    pub async fn wait_failed(&self) -> Error {
        let mut rx = self.status.subscribe();
        loop {
            if let DataflowStatus::Failed(e) = &*rx.borrow_and_update() {
                return e.clone();
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The last epoch whose changes are visible in the view.
    pub fn committed_epoch(&self) -> Epoch {
        *self.committed.borrow()
    }

    /// Wait until `epoch` is committed, or the dataflow failed.
    pub async fn wait_committed(&self, epoch: Epoch) {
        let mut rx = self.committed.clone();
        // An error means the dataflow ended (failed or dropped).
        let _ = rx.wait_for(|e| *e >= epoch).await;
    }

    /// Stop every task (the view was dropped).
    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
        self.outlet.close();
        // Wake whoever waits for this dataflow to fail.
        self.status.send_if_modified(|s| {
            if matches!(*s, DataflowStatus::Running) {
                *s = DataflowStatus::Failed(Error::new(
                    SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                    "the dataflow was stopped",
                ));
                true
            } else {
                false
            }
        });
    }
}

/// Fails a dataflow from outside its tasks (a source reader feeding it).
#[derive(Clone)]
pub struct FailHandle {
    status: Arc<watch::Sender<DataflowStatus>>,
    outlet: Arc<Outlet>,
}

impl FailHandle {
    /// Mark the dataflow failed with `err` (if it still runs) and close its
    /// outlet.
    pub fn fail(&self, err: Error) {
        fail(&self.status, &self.outlet, err);
    }
}

impl DataflowHandle {
    /// A handle that fails this dataflow.
    pub fn fail_handle(&self) -> FailHandle {
        FailHandle {
            status: Arc::clone(&self.status),
            outlet: Arc::clone(&self.outlet),
        }
    }
}

impl Drop for DataflowHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn fail(status: &watch::Sender<DataflowStatus>, outlet: &Outlet, err: Error) {
    status.send_if_modified(|s| {
        if matches!(*s, DataflowStatus::Running) {
            tracing::warn!(error = %err, "dataflow failed");
            *s = DataflowStatus::Failed(err);
            true
        } else {
            false
        }
    });
    outlet.close();
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// Where a stage sends its output.
enum Downstream {
    Next(mpsc::Sender<Message>),
    Outlet(Arc<Outlet>, watch::Sender<Epoch>),
}

impl Downstream {
    /// Returns false when the receiver is gone.
    async fn send(&self, msg: Message) -> bool {
        match self {
            Downstream::Next(tx) => tx.send(msg).await.is_ok(),
            Downstream::Outlet(outlet, committed) => {
                let epoch = match &msg {
                    Message::Barrier(b) => Some(b.epoch),
                    _ => None,
                };
                outlet.send(msg).await;
                if let Some(e) = epoch {
                    committed.send_replace(e);
                }
                true
            }
        }
    }
}

/// Run one operator until its input ends. The channels are borrowed so that
/// the caller can record a failure before dropping them: the stages around
/// a failed one then see their channels close only after the real error is
/// on record.
async fn run_stage(
    mut op: Box<dyn Operator>,
    input: &mut mpsc::Receiver<Message>,
    downstream: &Downstream,
) -> Result<(), DataflowError> {
    let mut out = Vec::new();
    while let Some(msg) = input.recv().await {
        // Control messages follow the output they flushed.
        let forward = match msg {
            Message::Chunk(chunk) => {
                op.process(chunk, &mut out)?;
                None
            }
            Message::Barrier(b) => {
                op.on_barrier(b, &mut out)?;
                if b.checkpoint {
                    op.checkpoint(b.epoch)?;
                }
                Some(Message::Barrier(b))
            }
            Message::Watermark(w) => Some(Message::Watermark(w)),
        };
        for chunk in out.drain(..) {
            if !chunk.is_empty() && !downstream.send(Message::Chunk(chunk)).await {
                return Ok(());
            }
        }
        if let Some(m) = forward {
            if !downstream.send(m).await {
                return Ok(());
            }
        }
    }
    Err(DataflowError::Eval(Error::new(
        SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        UPSTREAM_STOPPED,
    )))
}

/// Spawn `operators` as a pipeline reading `input` and writing to `outlet`.
/// `explain` lines are kept for EXPLAIN.
pub fn spawn_pipeline(
    operators: Vec<Box<dyn Operator>>,
    input: mpsc::Receiver<Message>,
    outlet: Arc<Outlet>,
    initial_epoch: Epoch,
) -> DataflowHandle {
    let status = Arc::new(watch::channel(DataflowStatus::Running).0);
    let (committed_tx, committed_rx) = watch::channel(initial_epoch);
    let mut tasks = Vec::with_capacity(operators.len());
    let n = operators.len();
    let mut input = Some(input);
    let mut committed_tx = Some(committed_tx);
    let mut next_input: Option<mpsc::Receiver<Message>> = None;
    for (i, op) in operators.into_iter().enumerate() {
        let stage_input = match input.take() {
            Some(rx) => rx,
            None => match next_input.take() {
                Some(rx) => rx,
                None => break,
            },
        };
        let downstream = if i + 1 == n {
            match committed_tx.take() {
                Some(tx) => Downstream::Outlet(Arc::clone(&outlet), tx),
                None => break,
            }
        } else {
            let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
            next_input = Some(rx);
            Downstream::Next(tx)
        };
        let status = Arc::clone(&status);
        let outlet = Arc::clone(&outlet);
        tasks.push(tokio::spawn(async move {
            let mut stage_input = stage_input;
            let result = AssertUnwindSafe(run_stage(op, &mut stage_input, &downstream))
                .catch_unwind()
                .await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => fail(&status, &outlet, e.into()),
                Err(panic) => fail(
                    &status,
                    &outlet,
                    DataflowError::Panic(panic_message(panic)).into(),
                ),
            }
            drop(stage_input);
            drop(downstream);
        }));
    }
    DataflowHandle {
        status,
        committed: committed_rx,
        tasks,
        outlet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_common::arrow::array::{Int64Array, RecordBatch};
    use weir_common::arrow::datatypes::{DataType, Field, Schema};
    use weir_common::{Barrier, Op, StreamChunk};

    struct Doubler;
    impl Operator for Doubler {
        fn explain(&self) -> String {
            "Doubler".into()
        }
        fn process(
            &mut self,
            chunk: StreamChunk,
            out: &mut Vec<StreamChunk>,
        ) -> Result<(), DataflowError> {
            out.push(chunk.clone());
            out.push(chunk);
            Ok(())
        }
    }

    struct Exploder;
    impl Operator for Exploder {
        fn explain(&self) -> String {
            "Exploder".into()
        }
        fn process(
            &mut self,
            _chunk: StreamChunk,
            _out: &mut Vec<StreamChunk>,
        ) -> Result<(), DataflowError> {
            panic!("boom")
        }
    }

    fn chunk() -> StreamChunk {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let data = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1]))]).unwrap();
        StreamChunk::uniform(data, Op::Insert)
    }

    #[tokio::test]
    async fn barrier_commits_after_output() {
        let source = Outlet::new();
        let sink = Arc::new(Outlet::new());
        let mut out_rx = sink.subscribe();
        let h = spawn_pipeline(
            vec![Box::new(Doubler), Box::new(Doubler)],
            source.subscribe(),
            sink,
            0,
        );
        source.send(Message::Chunk(chunk())).await;
        source.send(Message::Barrier(Barrier::new(1))).await;
        let mut chunks = 0;
        loop {
            match out_rx.recv().await.unwrap() {
                Message::Chunk(_) => chunks += 1,
                Message::Barrier(b) => {
                    assert_eq!(b.epoch, 1);
                    break;
                }
                Message::Watermark(_) => {}
            }
        }
        assert_eq!(chunks, 4);
        h.wait_committed(1).await;
        assert_eq!(h.committed_epoch(), 1);
    }

    #[tokio::test]
    async fn panic_marks_failed_and_unblocks_waiters() {
        let source = Outlet::new();
        let sink = Arc::new(Outlet::new());
        let h = spawn_pipeline(
            vec![Box::new(Exploder), Box::new(Doubler)],
            source.subscribe(),
            sink,
            0,
        );
        source.send(Message::Chunk(chunk())).await;
        source.send(Message::Barrier(Barrier::new(1))).await;
        h.wait_committed(1).await;
        match h.status() {
            DataflowStatus::Failed(e) => assert!(e.message.contains("boom"), "{}", e.message),
            DataflowStatus::Running => panic!("still running"),
        }
    }
}
