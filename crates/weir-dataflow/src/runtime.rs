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

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use weir_common::{Epoch, Error, Message, SqlState, StreamChunk};

use crate::align::AlignedInputs;
use crate::exchange::HashKey;
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
    /// Instances of its widest fragment.
    parallelism: usize,
    status: Arc<watch::Sender<DataflowStatus>>,
    committed: watch::Receiver<Epoch>,
    tasks: Vec<JoinHandle<()>>,
    outlet: Arc<Outlet>,
}

impl DataflowHandle {
    /// Instances of the dataflow's widest fragment (its parallelism).
    pub fn parallelism(&self) -> usize {
        self.parallelism
    }

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

/// How the instances of a fragment receive the output of the fragment
/// before it.
pub enum Exchange {
    /// Every instance of the previous fragment sends everything to the one
    /// instance of this fragment.
    Single,
    /// Each row goes to the instance owning the vnode of its key.
    Hash(HashKey),
}

/// Operators run as one task per instance: the operators of an instance
/// are chained (a chunk passes through all of them without a channel hop).
pub struct Fragment {
    /// How the instances receive the previous fragment's output (ignored for
    /// the first fragment, which reads the dataflow's input).
    pub exchange: Exchange,
    /// One operator chain per instance.
    pub instances: Vec<Vec<Box<dyn Operator>>>,
}

impl Fragment {
    /// A fragment of one instance.
    pub fn single(ops: Vec<Box<dyn Operator>>) -> Self {
        Fragment {
            exchange: Exchange::Single,
            instances: vec![ops],
        }
    }

    /// Number of instances.
    pub fn parallelism(&self) -> usize {
        self.instances.len()
    }
}

/// Where an instance sends its output.
enum Downstream {
    /// The one instance of the next fragment.
    Next(mpsc::Sender<Message>),
    /// The instances of the next fragment, by key.
    Hash(Arc<HashKey>, Vec<mpsc::Sender<Message>>),
    /// The view's outlet (the last fragment, one instance).
    Outlet(Arc<Outlet>, watch::Sender<Epoch>),
}

impl Downstream {
    /// Send a chunk. Returns false when a receiver is gone.
    async fn send_chunk(&self, chunk: StreamChunk) -> Result<bool, DataflowError> {
        match self {
            Downstream::Hash(key, senders) => {
                for (part, tx) in key.split(&chunk, senders.len())?.into_iter().zip(senders) {
                    if let Some(part) = part {
                        if tx.send(Message::Chunk(part)).await.is_err() {
                            return Ok(false);
                        }
                    }
                }
                Ok(true)
            }
            _ => Ok(self.send_control(Message::Chunk(chunk)).await),
        }
    }

    /// Send a message to every receiver. Returns false when one is gone.
    async fn send_control(&self, msg: Message) -> bool {
        match self {
            Downstream::Next(tx) => tx.send(msg).await.is_ok(),
            Downstream::Hash(_, senders) => {
                for tx in senders {
                    if tx.send(msg.clone()).await.is_err() {
                        return false;
                    }
                }
                true
            }
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

/// Produces a dataflow's input inside the task of the first instance (a
/// source's reader), so the operators it feeds run chained to it with no
/// channel in between. `None` ends the input.
pub trait MessageSource: Send + 'static {
    /// The next message.
    fn next(&mut self) -> BoxFuture<'_, Option<Result<Message, DataflowError>>>;
}

/// The input of one instance of a dataflow's first fragment.
pub enum Input {
    /// Messages arriving on a channel (a table's or a view's changes).
    Channel(mpsc::Receiver<Message>),
    /// Messages produced in the instance's own task.
    Source(Box<dyn MessageSource>),
}

/// What an instance reads: its input, or the channels from every instance
/// of the previous fragment, barrier-aligned.
enum Upstream {
    One(mpsc::Receiver<Message>),
    Source(Box<dyn MessageSource>),
    Aligned(AlignedInputs),
}

impl Upstream {
    async fn next(&mut self) -> Option<Result<Message, DataflowError>> {
        match self {
            Upstream::One(rx) => rx.recv().await.map(Ok),
            Upstream::Source(source) => source.next().await,
            Upstream::Aligned(inputs) => inputs.next().await.map(|r| r.map(|(_, m)| m)),
        }
    }
}

/// Pass `chunks` through `ops`, returning what the last one emits.
fn through(
    ops: &mut [Box<dyn Operator>],
    mut chunks: Vec<StreamChunk>,
) -> Result<Vec<StreamChunk>, DataflowError> {
    for op in ops.iter_mut() {
        if chunks.is_empty() {
            break;
        }
        let mut next = Vec::new();
        for c in chunks {
            if !c.is_empty() {
                op.process(c, &mut next)?;
            }
        }
        chunks = next;
    }
    Ok(chunks)
}

/// Run one instance's operator chain until its input ends. The channels are
/// borrowed so that the caller can record a failure before dropping them:
/// the instances around a failed one then see their channels close only
/// after the real error is on record.
async fn run_instance(
    mut ops: Vec<Box<dyn Operator>>,
    input: &mut Upstream,
    downstream: &Downstream,
) -> Result<(), DataflowError> {
    while let Some(msg) = input.next().await {
        // Control messages follow the output they flushed.
        let (out, forward) = match msg? {
            Message::Chunk(chunk) => (through(&mut ops, vec![chunk])?, None),
            Message::Barrier(b) => {
                // Each operator flushes at the barrier; what it emits passes
                // through the operators after it before they flush.
                let mut pending = Vec::new();
                for op in ops.iter_mut() {
                    let mut next = Vec::new();
                    for c in pending {
                        op.process(c, &mut next)?;
                    }
                    op.on_barrier(b, &mut next)?;
                    if b.checkpoint {
                        op.checkpoint(b.epoch)?;
                    }
                    pending = next;
                }
                (pending, Some(Message::Barrier(b)))
            }
            Message::Watermark(w) => (Vec::new(), Some(Message::Watermark(w))),
        };
        for chunk in out {
            if !chunk.is_empty() && !downstream.send_chunk(chunk).await? {
                return Ok(());
            }
        }
        if let Some(m) = forward {
            if !downstream.send_control(m).await {
                return Ok(());
            }
        }
    }
    Err(DataflowError::Eval(Error::new(
        SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        UPSTREAM_STOPPED,
    )))
}

/// Spawn `operators` chained in one task reading `input` and writing to
/// `outlet`.
pub fn spawn_pipeline(
    operators: Vec<Box<dyn Operator>>,
    input: mpsc::Receiver<Message>,
    outlet: Arc<Outlet>,
    initial_epoch: Epoch,
) -> DataflowHandle {
    spawn_graph(
        vec![Fragment::single(operators)],
        vec![Input::Channel(input)],
        outlet,
        initial_epoch,
    )
}

/// Spawn a dataflow of `fragments` in order, instance `i` of the first
/// reading `inputs[i]`, the last writing to `outlet`. The last fragment must
/// have one instance, the first one instance per input (extra instances are
/// dropped). Between fragments every upstream instance is connected to
/// every downstream instance by a bounded channel; barriers and watermarks
/// go to all of them and are aligned on the receiving side.
pub fn spawn_graph(
    fragments: Vec<Fragment>,
    inputs: Vec<Input>,
    outlet: Arc<Outlet>,
    initial_epoch: Epoch,
) -> DataflowHandle {
    let status = Arc::new(watch::channel(DataflowStatus::Running).0);
    let (committed_tx, committed_rx) = watch::channel(initial_epoch);
    let count = fragments.len();
    // Build the channels first: inputs[f][i] are the receivers of instance
    // i of fragment f; downstreams[f][i] its output.
    let mut fragments: Vec<Fragment> = fragments
        .into_iter()
        .enumerate()
        .map(|(f, mut frag)| {
            if f + 1 == count && frag.instances.len() > 1 {
                frag.instances.truncate(1);
            }
            if f == 0 {
                frag.instances.truncate(inputs.len().max(1));
            }
            frag
        })
        .filter(|frag| !frag.instances.is_empty())
        .collect();
    if fragments.is_empty() {
        fragments.push(Fragment::single(Vec::new()));
    }
    let count = fragments.len();
    let parallelism = fragments
        .iter()
        .map(Fragment::parallelism)
        .max()
        .unwrap_or(1);
    let mut receivers: Vec<Vec<Vec<mpsc::Receiver<Message>>>> = fragments
        .iter()
        .map(|f| (0..f.parallelism()).map(|_| Vec::new()).collect())
        .collect();
    let keys: Vec<Option<Arc<HashKey>>> = fragments
        .iter_mut()
        .map(
            |f| match std::mem::replace(&mut f.exchange, Exchange::Single) {
                Exchange::Hash(k) => Some(Arc::new(k)),
                Exchange::Single => None,
            },
        )
        .collect();
    let mut downstreams: Vec<Vec<Downstream>> = Vec::with_capacity(count);
    let mut committed_tx = Some(committed_tx);
    for f in 0..count {
        let mut outs = Vec::with_capacity(fragments[f].parallelism());
        for _ in 0..fragments[f].parallelism() {
            if f + 1 == count {
                if let Some(tx) = committed_tx.take() {
                    outs.push(Downstream::Outlet(Arc::clone(&outlet), tx));
                }
                continue;
            }
            let mut senders = Vec::new();
            for rx_list in receivers[f + 1].iter_mut() {
                let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
                senders.push(tx);
                rx_list.push(rx);
            }
            outs.push(match &keys[f + 1] {
                Some(key) if senders.len() > 1 => Downstream::Hash(Arc::clone(key), senders),
                _ => match senders.pop() {
                    Some(tx) => Downstream::Next(tx),
                    None => continue,
                },
            });
        }
        downstreams.push(outs);
    }
    let mut tasks = Vec::new();
    let mut inputs = inputs.into_iter();
    for (f, (frag, outs)) in fragments.into_iter().zip(downstreams).enumerate() {
        let rx_lists = std::mem::take(&mut receivers[f]);
        for ((ops, downstream), rx_list) in frag.instances.into_iter().zip(outs).zip(rx_lists) {
            let upstream = if f == 0 {
                match inputs.next() {
                    Some(Input::Channel(rx)) => Upstream::One(rx),
                    Some(Input::Source(source)) => Upstream::Source(source),
                    None => continue,
                }
            } else if rx_list.len() == 1 {
                let mut rx_list = rx_list;
                match rx_list.pop() {
                    Some(rx) => Upstream::One(rx),
                    None => continue,
                }
            } else {
                Upstream::Aligned(AlignedInputs::strict(rx_list))
            };
            let status = Arc::clone(&status);
            let outlet = Arc::clone(&outlet);
            tasks.push(tokio::spawn(async move {
                let mut upstream = upstream;
                let result = AssertUnwindSafe(run_instance(ops, &mut upstream, &downstream))
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
                drop(upstream);
                drop(downstream);
            }));
        }
    }
    DataflowHandle {
        parallelism,
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

    struct Identity;
    impl Operator for Identity {
        fn explain(&self) -> String {
            "Identity".into()
        }
        fn process(
            &mut self,
            chunk: StreamChunk,
            out: &mut Vec<StreamChunk>,
        ) -> Result<(), DataflowError> {
            out.push(chunk);
            Ok(())
        }
    }

    fn keyed(v: i64) -> StreamChunk {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let data =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![v, v + 1]))]).unwrap();
        StreamChunk::uniform(data, Op::Insert)
    }

    #[tokio::test]
    async fn hash_exchange_delivers_every_row_before_the_aligned_barrier() {
        use weir_common::datafusion::physical_expr::expressions::Column;
        let source = Outlet::new();
        let sink = Arc::new(Outlet::new());
        let mut out_rx = sink.subscribe();
        let key = HashKey::new(vec![Arc::new(Column::new("a", 0))], &[DataType::Int64]).unwrap();
        let middle: Vec<Vec<Box<dyn Operator>>> = (0..3)
            .map(|_| vec![Box::new(Doubler) as Box<dyn Operator>])
            .collect();
        let h = spawn_graph(
            vec![
                Fragment::single(vec![Box::new(Identity)]),
                Fragment {
                    exchange: Exchange::Hash(key),
                    instances: middle,
                },
                Fragment::single(vec![Box::new(Identity)]),
            ],
            vec![Input::Channel(source.subscribe())],
            sink,
            0,
        );
        for epoch in 1..=3u64 {
            for v in 0..50 {
                source.send(Message::Chunk(keyed(v))).await;
            }
            source.send(Message::Barrier(Barrier::new(epoch))).await;
            let mut rows = 0;
            loop {
                match out_rx.recv().await.unwrap() {
                    Message::Chunk(c) => rows += c.len(),
                    Message::Barrier(b) => {
                        assert_eq!(b.epoch, epoch);
                        break;
                    }
                    Message::Watermark(_) => {}
                }
            }
            // 50 chunks of 2 rows, doubled by the middle instances.
            assert_eq!(rows, 200, "epoch {epoch}");
            h.wait_committed(epoch).await;
        }
        assert!(matches!(h.status(), DataflowStatus::Running));
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
