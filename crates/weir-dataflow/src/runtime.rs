//! Running a dataflow graph: fragments of chained operators, one tokio task
//! per fragment instance, joined by bounded channels, from the dataflow's
//! inputs (subscriptions, source readers) to an [`Outlet`].
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
/// feeding one of its inputs.
pub enum Exchange {
    /// Every instance of the previous fragment sends everything to the one
    /// instance of this fragment.
    Single,
    /// Each row goes to the instance owning the vnode of its key.
    Hash(HashKey),
}

/// Where one input of a fragment comes from.
pub enum FragmentInput {
    /// The dataflow's external input `n` (a subscription to a table or
    /// view, or a source's readers): one [`Input`] per instance.
    External(usize),
    /// The output of the fragment at index `from` (an earlier one), through
    /// `exchange`.
    Fragment {
        /// Index of the producing fragment.
        from: usize,
        /// How its rows reach this fragment's instances.
        exchange: Exchange,
    },
}

/// Operators run as one task per instance: the operators of an instance
/// are chained (a chunk passes through all of them without a channel hop).
/// The first operator of the chain receives each chunk with the index of
/// the input it arrived on (a join's side, a union's branch).
pub struct Fragment {
    /// The fragment's inputs, in the order its first operator numbers them.
    pub inputs: Vec<FragmentInput>,
    /// One operator chain per instance.
    pub instances: Vec<Vec<Box<dyn Operator>>>,
}

impl Fragment {
    /// A fragment of one instance reading the dataflow's only input.
    pub fn single(ops: Vec<Box<dyn Operator>>) -> Self {
        Fragment {
            inputs: vec![FragmentInput::External(0)],
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

/// The external input of one instance of a fragment.
pub enum Input {
    /// Messages arriving on a channel (a table's or a view's changes).
    Channel(mpsc::Receiver<Message>),
    /// Messages produced in the instance's own task.
    Source(Box<dyn MessageSource>),
}

/// What an instance reads, each message tagged with the input it came on:
/// one channel, a source in its own task, or several channels
/// barrier-aligned.
enum Upstream {
    One(mpsc::Receiver<Message>, usize),
    Source(Box<dyn MessageSource>, usize),
    /// Channels and the fragment input each one belongs to.
    Aligned(AlignedInputs, Vec<usize>),
}

impl Upstream {
    async fn next(&mut self) -> Option<Result<(usize, Message), DataflowError>> {
        match self {
            Upstream::One(rx, k) => rx.recv().await.map(|m| Ok((*k, m))),
            Upstream::Source(source, k) => source.next().await.map(|r| r.map(|m| (*k, m))),
            Upstream::Aligned(inputs, map) => inputs
                .next()
                .await
                .map(|r| r.map(|(i, m)| (map.get(i).copied().unwrap_or(0), m))),
        }
    }
}

/// Pass `chunks` through `ops`, returning what the last one emits. The
/// first operator receives them as arriving on `input`.
fn through(
    ops: &mut [Box<dyn Operator>],
    input: usize,
    mut chunks: Vec<StreamChunk>,
) -> Result<Vec<StreamChunk>, DataflowError> {
    for (n, op) in ops.iter_mut().enumerate() {
        if chunks.is_empty() {
            break;
        }
        let mut next = Vec::new();
        for c in chunks {
            if !c.is_empty() {
                if n == 0 {
                    op.process_input(input, c, &mut next)?;
                } else {
                    op.process(c, &mut next)?;
                }
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
        let (k, msg) = msg?;
        // Control messages follow the output they flushed.
        let (out, forward) = match msg {
            Message::Chunk(chunk) => (through(&mut ops, k, vec![chunk])?, None),
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
        vec![vec![Input::Channel(input)]],
        outlet,
        initial_epoch,
    )
}

/// One channel end an instance reads, before it is wired.
enum Feed {
    Channel(mpsc::Receiver<Message>),
    Source(Box<dyn MessageSource>),
}

/// Spawn a dataflow graph. `fragments` are in topological order: each reads
/// external inputs or earlier fragments, every fragment but the last feeds
/// exactly one later fragment, and the last one (one instance) writes to
/// `outlet`. `inputs[n]` holds external input `n`'s [`Input`] for each
/// instance of the fragment reading it. Between fragments every producing
/// instance is connected to every consuming instance by a bounded channel;
/// barriers and watermarks go to all of them, and an instance reading
/// several channels aligns them (`align.rs`): the graph's operators
/// snapshot exactly the state of each epoch.
pub fn spawn_graph(
    fragments: Vec<Fragment>,
    inputs: Vec<Vec<Input>>,
    outlet: Arc<Outlet>,
    initial_epoch: Epoch,
) -> DataflowHandle {
    let status = Arc::new(watch::channel(DataflowStatus::Running).0);
    let (committed_tx, committed_rx) = watch::channel(initial_epoch);
    let mut fragments = fragments;
    if fragments.is_empty() {
        fragments.push(Fragment::single(Vec::new()));
    }
    let count = fragments.len();
    if let Some(last) = fragments.last_mut() {
        last.instances.truncate(1);
    }
    let parallelism = fragments
        .iter()
        .map(Fragment::parallelism)
        .max()
        .unwrap_or(1);
    let mut inputs: Vec<std::vec::IntoIter<Input>> =
        inputs.into_iter().map(Vec::into_iter).collect();
    // feeds[f][i]: what instance i of fragment f reads, with the input
    // number its first operator sees.
    let mut feeds: Vec<Vec<Vec<(Feed, usize)>>> = fragments
        .iter()
        .map(|f| (0..f.parallelism()).map(|_| Vec::new()).collect())
        .collect();
    // outs[f][j]: where instance j of fragment f sends its output.
    let mut outs: Vec<Vec<Option<Downstream>>> = fragments
        .iter()
        .map(|f| (0..f.parallelism()).map(|_| None).collect())
        .collect();
    for f in 0..count {
        let width = fragments[f].parallelism();
        let wiring = std::mem::take(&mut fragments[f].inputs);
        for (k, input) in wiring.into_iter().enumerate() {
            match input {
                FragmentInput::External(n) => {
                    for feed in feeds[f].iter_mut() {
                        match inputs.get_mut(n).and_then(Iterator::next) {
                            Some(Input::Channel(rx)) => feed.push((Feed::Channel(rx), k)),
                            Some(Input::Source(s)) => feed.push((Feed::Source(s), k)),
                            None => {}
                        }
                    }
                }
                FragmentInput::Fragment { from, exchange } => {
                    if from >= f {
                        continue;
                    }
                    let key = match exchange {
                        Exchange::Hash(key) if width > 1 => Some(Arc::new(key)),
                        _ => None,
                    };
                    let producers = fragments[from].parallelism();
                    for out in outs[from].iter_mut().take(producers) {
                        let mut senders = Vec::with_capacity(width);
                        for feed in feeds[f].iter_mut() {
                            let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
                            senders.push(tx);
                            feed.push((Feed::Channel(rx), k));
                        }
                        *out = match &key {
                            Some(key) => Some(Downstream::Hash(Arc::clone(key), senders)),
                            None => senders.pop().map(Downstream::Next),
                        };
                    }
                }
            }
        }
    }
    if let Some(out) = outs.last_mut().and_then(|o| o.first_mut()) {
        *out = Some(Downstream::Outlet(Arc::clone(&outlet), committed_tx));
    }
    let mut tasks = Vec::new();
    for ((frag, frag_feeds), frag_outs) in fragments.into_iter().zip(feeds).zip(outs) {
        for ((ops, feed), downstream) in frag.instances.into_iter().zip(frag_feeds).zip(frag_outs) {
            let (Some(upstream), Some(downstream)) =
                (upstream_of(feed, &mut tasks, &status, &outlet), downstream)
            else {
                continue;
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

/// The upstream of an instance reading `feeds`. A source read beside other
/// inputs runs in a task of its own feeding a channel (only a source read
/// alone runs chained in the instance).
fn upstream_of(
    mut feeds: Vec<(Feed, usize)>,
    tasks: &mut Vec<JoinHandle<()>>,
    status: &Arc<watch::Sender<DataflowStatus>>,
    outlet: &Arc<Outlet>,
) -> Option<Upstream> {
    if feeds.len() == 1 {
        return feeds.pop().map(|(feed, k)| match feed {
            Feed::Channel(rx) => Upstream::One(rx, k),
            Feed::Source(s) => Upstream::Source(s, k),
        });
    }
    if feeds.is_empty() {
        return None;
    }
    let mut rxs = Vec::with_capacity(feeds.len());
    let mut map = Vec::with_capacity(feeds.len());
    for (feed, k) in feeds {
        let rx = match feed {
            Feed::Channel(rx) => rx,
            Feed::Source(mut source) => {
                let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
                let status = Arc::clone(status);
                let outlet = Arc::clone(outlet);
                tasks.push(tokio::spawn(async move {
                    while let Some(m) = source.next().await {
                        match m {
                            Ok(m) => {
                                if tx.send(m).await.is_err() {
                                    break;
                                }
                            }
                            Err(e) => {
                                fail(&status, &outlet, e.into());
                                break;
                            }
                        }
                    }
                }));
                rx
            }
        };
        rxs.push(rx);
        map.push(k);
    }
    Some(Upstream::Aligned(AlignedInputs::strict(rxs), map))
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
                    inputs: vec![FragmentInput::Fragment {
                        from: 0,
                        exchange: Exchange::Hash(key),
                    }],
                    instances: middle,
                },
                Fragment {
                    inputs: vec![FragmentInput::Fragment {
                        from: 1,
                        exchange: Exchange::Single,
                    }],
                    instances: vec![vec![Box::new(Identity)]],
                },
            ],
            vec![vec![Input::Channel(source.subscribe())]],
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
