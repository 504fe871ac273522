//! SUBSCRIBE cursors: `DECLARE c CURSOR FOR SUBSCRIBE [TO] name` inside a
//! transaction block, then `FETCH n c [WITH (timeout = '1s')]`.
//!
//! `SUBSCRIBE (query)` runs a dataflow of its own for the query, kept for
//! the subscription only (its state in memory, no checkpoints, stopped
//! when the cursor or connection closes): it backfills from its input at
//! an epoch boundary, so its first changes (all inserts, stamped with the
//! next epoch) are the query's current result, and then it streams the
//! query's changes like a view's.
//!
//! A subscription starts with the relation's contents at an epoch boundary
//! E (every row once, `weir_diff` = 1, `weir_timestamp` = E), then each
//! committed change: an inserted row with `weir_diff` = 1, a deleted one
//! with -1, stamped with the epoch that committed it (one statement = one
//! epoch, so its changes share a timestamp). Nothing is skipped or repeated:
//! the snapshot and the subscription are taken under the write lock once
//! every view has committed E, so the changes received are exactly those of
//! the epochs after E.
//!
//! Changes are moved from the relation's outlet into the cursor's buffer by
//! a task, so a cursor that is not fetched never slows the dataflow; past
//! [`MAX_BUFFERED_ROWS`] the subscription fails (57014-like error on the next
//! FETCH) rather than grow without bound.

use std::collections::VecDeque;
use std::time::Duration;

use weir_common::arrow::array::{Int64Array, Int8Array};
use weir_common::arrow::compute::concat_batches;
use weir_common::StreamChunk;

use weir_dataflow::DataflowHandle;
use weir_sql::parser::SubscribeTarget;

use super::*;
use crate::session::Session;

/// Rows a cursor holds before it is cut off.
pub const MAX_BUFFERED_ROWS: usize = 1_000_000;

/// What the feeding task and FETCH share.
#[derive(Default)]
struct Buffer {
    batches: VecDeque<RecordBatch>,
    rows: usize,
    /// Why the subscription ended, if it failed.
    failed: Option<String>,
    /// The relation went away (dropped, or the server stops).
    ended: bool,
}

/// One open SUBSCRIBE cursor.
pub struct Subscription {
    pub schema: SchemaRef,
    buffer: Arc<Mutex<Buffer>>,
    arrived: Arc<tokio::sync::Notify>,
    feeder: tokio::task::JoinHandle<()>,
    /// The dataflow of a `SUBSCRIBE (query)`, stopped with the subscription.
    _dataflow: Option<Arc<DataflowHandle>>,
}

impl Subscription {
    /// Up to `wanted` rows, waiting up to `timeout` (forever if `None`) for
    /// a first one; `None` when the timeout passed with no row. A
    /// CancelRequest for `session` ends the wait with 57014.
    pub async fn take(
        &self,
        wanted: usize,
        timeout: Option<Duration>,
        session: &Session,
    ) -> Result<Option<RecordBatch>> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let notified = self.arrived.notified();
            {
                let mut b = self.buffer.lock();
                if let Some(why) = &b.failed {
                    return Err(user(SqlState::QUERY_CANCELED, why.clone()));
                }
                if b.rows > 0 || b.ended || wanted == 0 {
                    let mut out = Vec::new();
                    let mut taken = 0;
                    while taken < wanted {
                        let Some(front) = b.batches.pop_front() else {
                            break;
                        };
                        let room = wanted - taken;
                        if front.num_rows() > room {
                            b.batches
                                .push_front(front.slice(room, front.num_rows() - room));
                            out.push(front.slice(0, room));
                            taken += room;
                        } else {
                            taken += front.num_rows();
                            out.push(front);
                        }
                    }
                    b.rows -= taken;
                    let batch = concat_batches(&self.schema, &out)
                        .map_err(|e| ServerError::Statement(e.into()))?;
                    return Ok(Some(batch));
                }
            }
            let wait = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, notified).await.is_ok(),
                    None => {
                        notified.await;
                        true
                    }
                }
            };
            let arrived = tokio::select! {
                a = wait => a,
                () = session.cancelled() => {
                    return Err(user(SqlState::QUERY_CANCELED, "canceling statement due to user request"));
                }
            };
            if !arrived {
                return Ok(None);
            }
        }
    }

    /// Whether the subscribed relation went away (no more rows will come).
    pub fn ended(&self) -> bool {
        let b = self.buffer.lock();
        b.ended && b.rows == 0
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.feeder.abort();
    }
}

/// `weir_timestamp`, `weir_diff`, then the relation's columns.
fn output_schema(relation: &SchemaRef) -> SchemaRef {
    let mut fields = vec![
        Field::new("weir_timestamp", DataType::Int64, false),
        Field::new("weir_diff", DataType::Int64, false),
    ];
    fields.extend(
        relation
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true)),
    );
    Arc::new(Schema::new(fields))
}

/// `batch` with the timestamp and diff columns in front.
fn stamp(
    schema: &SchemaRef,
    epoch: u64,
    diffs: Int64Array,
    batch: &RecordBatch,
) -> std::result::Result<RecordBatch, weir_common::arrow::error::ArrowError> {
    let n = batch.num_rows();
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![epoch as i64; n])),
        Arc::new(diffs),
    ];
    columns.extend(batch.columns().iter().cloned());
    RecordBatch::try_new(Arc::clone(schema), columns)
}

fn chunk_rows(
    schema: &SchemaRef,
    epoch: u64,
    chunk: &StreamChunk,
) -> std::result::Result<RecordBatch, weir_common::arrow::error::ArrowError> {
    let ops: &Int8Array = &chunk.ops;
    let diffs: Int64Array = ops
        .iter()
        .map(|op| Some(if op == Some(Op::Delete.code()) { -1 } else { 1 }))
        .collect();
    stamp(schema, epoch, diffs, &chunk.data)
}

impl Engine {
    /// DECLARE ... CURSOR FOR SUBSCRIBE.
    pub(super) async fn declare_subscribe(
        &self,
        cursor: &str,
        target: &SubscribeTarget,
        session: &Session,
    ) -> Result<QueryResult> {
        if !session.in_transaction() {
            return Err(user(
                SqlState::NO_ACTIVE_SQL_TRANSACTION,
                "DECLARE CURSOR can only be used in transaction blocks",
            ));
        }
        if session.has_cursor(cursor) {
            return Err(user(
                SqlState("42P03"),
                format!("cursor \"{cursor}\" already exists"),
            ));
        }
        let subscription = self.subscribe(target, session).await?;
        session.add_cursor(cursor, subscription);
        Ok(QueryResult::command("DECLARE CURSOR"))
    }

    /// Start a subscription (see the module docs).
    pub async fn subscribe(
        &self,
        target: &SubscribeTarget,
        session: &Session,
    ) -> Result<Subscription> {
        match target {
            SubscribeTarget::Relation(name) => self.subscribe_relation(name).await,
            SubscribeTarget::Query(query) => {
                self.subscribe_query(query, self.session_parallelism(session))
                    .await
            }
        }
    }

    /// `SUBSCRIBE (query)`: a dataflow for the query, for this subscription.
    async fn subscribe_query(
        &self,
        query: &Query,
        session_parallelism: usize,
    ) -> Result<Subscription> {
        let _guard = self.write_lock.lock().await;
        let view = self.plan_view_inputs(query).await?;
        if view.inputs.iter().any(|i| i.split) {
            return Err(user(
                SqlState::FEATURE_NOT_SUPPORTED,
                "SUBSCRIBE to a query over a source is not supported; create a materialized view of the query and subscribe to it",
            ));
        }
        let plan = self.scratch_plan(view)?;
        let schema = output_schema(&plan.schema.0);
        let ctx = StateContext {
            store: Arc::new(weir_state::MemoryStateStore::new()),
            checkpoints: None,
            cache_bytes: self.state_ctx.cache_bytes,
        };
        let operators =
            self.instantiate(&plan, self.session_width(session_parallelism), &ctx, None)?;
        let (dataflow, outlet) = self
            .start_dataflow("(subscribe)", &plan.inputs, operators, DdlMode::Live)
            .await?;
        let rx = outlet.subscribe();
        // The backfill is the epoch this barrier closes.
        self.inject_barrier().await;
        Ok(self.spawn_feeder(rx, schema, Buffer::default(), Some(Arc::new(dataflow))))
    }

    fn spawn_feeder(
        &self,
        rx: tokio::sync::mpsc::Receiver<Message>,
        schema: SchemaRef,
        buffer: Buffer,
        dataflow: Option<Arc<DataflowHandle>>,
    ) -> Subscription {
        let buffer = Arc::new(Mutex::new(buffer));
        let arrived = Arc::new(tokio::sync::Notify::new());
        let feeder = tokio::spawn(feed(
            rx,
            Arc::clone(&schema),
            Arc::clone(&buffer),
            Arc::clone(&arrived),
            dataflow.clone(),
        ));
        Subscription {
            schema,
            buffer,
            arrived,
            feeder,
            _dataflow: dataflow,
        }
    }

    /// Subscribe to the table or view `name` (see the module docs).
    async fn subscribe_relation(&self, name: &str) -> Result<Subscription> {
        let relation = self.relation(name)?;
        if matches!(relation.kind, RelationKind::Source { .. })
            || relation.object_kind() == ObjectKind::Sink
        {
            return Err(user(
                SqlState::WRONG_OBJECT_TYPE,
                format!(
                    "cannot subscribe to {} \"{name}\"; subscribe to a materialized view over it",
                    relation.object_kind().as_str()
                ),
            ));
        }
        let schema = output_schema(&relation.schema);
        let (epoch, snapshot, rx) = self
            .at_epoch_boundary(|epoch| {
                let snapshot = Arc::clone(&self.store).snapshot();
                (epoch, snapshot, relation.outlet.subscribe())
            })
            .await;
        let read_schema = Arc::clone(&relation.schema);
        let r = Arc::clone(&relation);
        let rows = tokio::task::spawn_blocking(move || {
            let mut batches = Vec::new();
            r.read_batches(&*snapshot, &read_schema, 8192, &mut |b| {
                batches.push(b);
                Ok(())
            })
            .map(|()| batches)
        })
        .await
        .map_err(|e| ServerError::Statement(Error::internal(e.to_string())))??;
        let mut buffer = Buffer::default();
        for b in rows {
            let diffs = Int64Array::from(vec![1; b.num_rows()]);
            let b =
                stamp(&schema, epoch, diffs, &b).map_err(|e| ServerError::Statement(e.into()))?;
            buffer.rows += b.num_rows();
            buffer.batches.push_back(b);
        }
        Ok(self.spawn_feeder(rx, schema, buffer, None))
    }

    /// FETCH from a SUBSCRIBE cursor: up to `count` rows (all buffered ones
    /// for `None`), waiting up to `timeout` (forever if `None`) for a first
    /// one.
    pub(super) async fn fetch(
        &self,
        cursor: &str,
        count: Option<u64>,
        timeout: Option<Duration>,
        session: &Session,
    ) -> Result<QueryResult> {
        let Some(sub) = session.cursor(cursor) else {
            return Err(user(
                SqlState("34000"),
                format!("cursor \"{cursor}\" does not exist"),
            ));
        };
        let batch = sub
            .take(count.map_or(usize::MAX, |c| c as usize), timeout, session)
            .await?;
        Ok(QueryResult::Rows {
            schema: Arc::clone(&sub.schema),
            batches: batch.into_iter().collect(),
        })
    }

    /// The columns FETCH returns from `cursor`.
    pub(super) fn cursor_schema(&self, cursor: &str, session: &Session) -> Option<SchemaRef> {
        session.cursor(cursor).map(|s| Arc::clone(&s.schema))
    }
}

/// Move a relation's committed changes into the cursor's buffer. When
/// the stream ends because `dataflow` (a subscribed query's) failed, the
/// subscription fails with its error.
async fn feed(
    mut rx: tokio::sync::mpsc::Receiver<Message>,
    schema: SchemaRef,
    buffer: Arc<Mutex<Buffer>>,
    arrived: Arc<tokio::sync::Notify>,
    dataflow: Option<Arc<DataflowHandle>>,
) {
    // Changes of the epoch in progress, stamped when its barrier comes.
    let mut pending: Vec<StreamChunk> = Vec::new();
    while let Some(msg) = rx.recv().await {
        match msg {
            Message::Chunk(c) => pending.push(c),
            Message::Barrier(b) => {
                let mut batches = Vec::new();
                for c in pending.drain(..) {
                    match chunk_rows(&schema, b.epoch, &c) {
                        Ok(batch) => batches.push(batch),
                        Err(e) => {
                            buffer.lock().failed = Some(format!("subscription failed: {e}"));
                            arrived.notify_waiters();
                            return;
                        }
                    }
                }
                if batches.is_empty() {
                    continue;
                }
                let mut buf = buffer.lock();
                for batch in batches {
                    buf.rows += batch.num_rows();
                    buf.batches.push_back(batch);
                }
                if buf.rows > MAX_BUFFERED_ROWS {
                    buf.failed = Some(format!(
                        "subscription fell more than {MAX_BUFFERED_ROWS} rows behind; FETCH more often"
                    ));
                    buf.batches.clear();
                    drop(buf);
                    arrived.notify_waiters();
                    return;
                }
                drop(buf);
                arrived.notify_waiters();
            }
            _ => {}
        }
    }
    let mut buf = buffer.lock();
    buf.ended = true;
    if let Some(DataflowStatus::Failed(e)) = dataflow.map(|d| d.status()) {
        buf.failed = Some(format!("subscription failed: {}", e.message));
    }
    drop(buf);
    arrived.notify_waiters();
}
