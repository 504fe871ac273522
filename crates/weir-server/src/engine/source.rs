//! Sources: `CREATE SOURCE` (and `CREATE TABLE ... WITH (connector = ...)`).
//!
//! A source stores nothing. Each dataflow reading it (a materialized view or
//! a sink) runs its own *readers*, one inside each instance of its first
//! fragment: a reader pulls batches of its splits from the connector's
//! replayable generators, adds the computed columns, and hands them to the
//! operators it is chained to, paced by its share of the connector's rate.
//! Barriers reach a reader through its control channel, between two
//! batches; at a checkpoint barrier the reader notes the offset each of its
//! splits resumes from, and the manifest records them under the consumer's
//! name. Recovery restores the consumer's state from the checkpoint and
//! restarts its readers at those offsets, so every row is counted exactly
//! once.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use weir_common::datafusion::common::DFSchema;
use weir_common::datafusion::logical_expr::ExprSchemable;
use weir_common::datafusion::physical_expr::PhysicalExpr;
use weir_common::{Epoch, StreamChunk};
use weir_connectors::generator::{connector_name, native_schema, SplitReader};
use weir_connectors::Generator;
use weir_dataflow::runtime::{Input, MessageSource};
use weir_dataflow::DataflowError;
use weir_dataflow::CHUNK_ROWS;
use weir_sql::source_ddl::CreateSource;

use super::*;

/// What a source reads and how its rows are shaped.
pub struct SourceSpec {
    /// Connector options, as given.
    pub options: BTreeMap<String, String>,
    /// The schema the connector's generator produces.
    generator_schema: SchemaRef,
    /// Declared plain columns: index into the generator's columns, and the
    /// type to cast to if it differs.
    columns: Vec<(usize, Option<DataType>)>,
    /// Schema of the plain columns (what computed columns are planned on).
    plain_schema: SchemaRef,
    /// Computed columns, evaluated on the plain columns.
    computed: Vec<Arc<dyn PhysicalExpr>>,
    /// `WATERMARK FOR col AS expr`, kept for windows.
    pub watermark: Option<(String, String)>,
    /// Every column: plain, then computed.
    pub schema: SchemaRef,
}

impl SourceSpec {
    /// A generator positioned at `offset` (to check the options).
    fn open(&self, offset: u64) -> std::result::Result<Generator, Error> {
        Generator::open(&self.options, &self.generator_schema, offset).map_err(Error::from)
    }

    /// A generated batch in the source's schema.
    fn shape(&self, batch: RecordBatch) -> std::result::Result<RecordBatch, Error> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (i, cast_to) in &self.columns {
            let c = Arc::clone(batch.column(*i));
            columns.push(match cast_to {
                Some(t) => cast(&c, t)?,
                None => c,
            });
        }
        if !self.computed.is_empty() {
            // Computed columns see the plain ones only.
            let plain = RecordBatch::try_new(Arc::clone(&self.plain_schema), columns.clone())?;
            for e in &self.computed {
                let v = e.evaluate(&plain).map_err(Error::from)?;
                columns.push(v.into_array(plain.num_rows()).map_err(Error::from)?);
            }
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

/// A running reader, as the engine sees it: the splits of a source one
/// instance of a dataflow reads (the reading itself is a [`ReaderSource`]
/// inside that instance's task).
pub(crate) struct Reader {
    /// The source it reads.
    pub source: String,
    barriers: mpsc::UnboundedSender<Barrier>,
    /// Splits the source is cut into for this consumer.
    splits: u64,
    /// `(split, offset, consumed)` of the splits this reader reads, as of
    /// its last batch.
    positions: Mutex<Vec<(u64, u64, u64)>>,
    /// True once a bounded source has produced its last row (every split
    /// of this reader is done).
    finished: AtomicBool,
    /// `(split, offset)` at recent checkpoint barriers.
    checkpointed: Mutex<BTreeMap<Epoch, Vec<(u64, u64)>>>,
    /// Wakes the checkpoint coordinator when the source is done.
    done: Arc<tokio::sync::Notify>,
}

impl Reader {
    fn finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }
}

/// The manifest key of a consumer's offset: the consumer's name when it
/// reads its source as one split, `name#s/S` for split `s` of `S`.
fn offset_key(consumer: &str, split: u64, splits: u64) -> String {
    if splits == 1 {
        consumer.to_string()
    } else {
        format!("{consumer}#{split}/{splits}")
    }
}

/// A manifest offset key split into its consumer and, for `name#s/S`,
/// `(s, S)`: the inverse of [`offset_key`].
fn parse_offset_key(key: &str) -> (&str, Option<(u64, u64)>) {
    let parsed = key.rsplit_once('#').and_then(|(name, suffix)| {
        let (s, n) = suffix.split_once('/')?;
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !(digits(s) && digits(n)) {
            return None;
        }
        Some((name, (s.parse().ok()?, n.parse().ok()?)))
    });
    match parsed {
        Some((name, split)) => (name, Some(split)),
        None => (key, None),
    }
}

/// The consumer a manifest offset key belongs to: the view or sink, for
/// the readers of any of its inputs.
pub(crate) fn consumer_of(key: &str) -> &str {
    view_of(parse_offset_key(key).0)
}

/// The reader key of input `n` of view `view`: the view's name for its
/// first input, `view@n` for the others (a view may read several sources).
pub(crate) fn input_consumer(view: &str, n: usize) -> String {
    if n == 0 {
        view.to_string()
    } else {
        format!("{view}@{n}")
    }
}

/// The view a reader key ([`input_consumer`]) belongs to.
fn view_of(consumer: &str) -> &str {
    match consumer.rsplit_once('@') {
        Some((view, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => view,
        _ => consumer,
    }
}

/// `(splits, split → offset)` recorded for `consumer` in `offsets`, if any.
fn restored_splits(
    offsets: &BTreeMap<String, u64>,
    consumer: &str,
) -> Option<(u64, BTreeMap<u64, u64>)> {
    if let Some(o) = offsets.get(consumer) {
        return Some((1, BTreeMap::from([(0, *o)])));
    }
    let mut splits = 0;
    let mut found = BTreeMap::new();
    for (k, o) in offsets.range(format!("{consumer}#")..) {
        match parse_offset_key(k) {
            (name, Some((s, n))) if name == consumer => {
                splits = n;
                found.insert(s, *o);
            }
            _ if !k.starts_with(consumer) => break,
            _ => {}
        }
    }
    (splits > 0).then_some((splits, found))
}

/// Readers by consumer (the view or sink they feed), one per instance of
/// its first fragment.
#[derive(Default)]
pub(crate) struct Readers {
    by_consumer: Mutex<HashMap<String, Vec<Arc<Reader>>>>,
    /// Offsets of the checkpoint recovery started from (manifest keys).
    restored: Mutex<BTreeMap<String, u64>>,
    /// Notified when a bounded source has produced its last row: the
    /// coordinator then checkpoints at once, so the last rows are visible
    /// (and durable) without waiting for the interval.
    pub finished: Arc<tokio::sync::Notify>,
}

impl Readers {
    /// Send `barrier` to every reader.
    pub fn barrier(&self, barrier: Barrier) {
        for readers in self.by_consumer.lock().values() {
            for r in readers {
                let _ = r.barriers.send(barrier);
            }
        }
    }

    /// Whether view `consumer` is fed by readers.
    pub fn feeds(&self, consumer: &str) -> bool {
        self.by_consumer
            .lock()
            .keys()
            .any(|k| view_of(k) == consumer)
    }

    /// How far view `consumer`'s readers have read (offsets consumed over
    /// all splits of all its sources) and whether all of them are done.
    pub fn progress(&self, consumer: &str) -> Option<(u64, bool)> {
        let map = self.by_consumer.lock();
        let readers: Vec<&Arc<Reader>> = map
            .iter()
            .filter(|(k, _)| view_of(k) == consumer)
            .flat_map(|(_, r)| r.iter())
            .collect();
        if readers.is_empty() {
            return None;
        }
        let consumed = readers
            .iter()
            .map(|r| r.positions.lock().iter().map(|p| p.2).sum::<u64>())
            .sum();
        Some((consumed, readers.iter().all(|r| r.finished())))
    }

    /// Forget the readers of a dropped view (their tasks end with the
    /// dataflow).
    pub fn remove(&self, consumer: &str) {
        self.by_consumer
            .lock()
            .retain(|k, _| view_of(k) != consumer);
    }

    /// Offsets every reader had at checkpoint barrier `epoch`, as manifest
    /// keys (see [`consumer_of`]). A consumer appears only if all of its
    /// readers passed that barrier.
    pub fn offsets_at(&self, epoch: Epoch) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (c, readers) in self.by_consumer.lock().iter() {
            let mut entries = Vec::new();
            let complete = readers
                .iter()
                .all(|r| match r.checkpointed.lock().get(&epoch) {
                    Some(splits) => {
                        entries.extend(
                            splits
                                .iter()
                                .map(|(s, o)| (offset_key(c, *s, r.splits), *o)),
                        );
                        true
                    }
                    None => false,
                });
            if complete {
                out.extend(entries);
            }
        }
        out
    }

    /// True when some reader moved since the offsets in `last`.
    pub fn moved_since(&self, last: Option<&BTreeMap<String, u64>>) -> bool {
        self.by_consumer.lock().iter().any(|(c, readers)| {
            readers.iter().any(|r| {
                r.positions.lock().iter().any(|(s, o, _)| {
                    last.and_then(|l| l.get(&offset_key(c, *s, r.splits))) != Some(o)
                })
            })
        })
    }

    /// Remember the offsets of the checkpoint being recovered.
    pub fn set_restored(&self, offsets: BTreeMap<String, u64>) {
        *self.restored.lock() = offsets;
    }
}

/// How many checkpoint offsets a reader remembers.
const KEPT_OFFSETS: usize = 64;

impl Engine {
    /// `CREATE SOURCE` / `CREATE TABLE ... WITH (connector = ...)`.
    pub(super) async fn create_source(
        &self,
        create: &CreateSource,
        mode: DdlMode,
    ) -> Result<QueryResult> {
        let _guard = self.ddl_guard(mode).await;
        let name = create.name.clone();
        // `CREATE TABLE ... WITH (connector = ...)` answers as it was asked.
        let tag = if create.sql.to_ascii_uppercase().starts_with("CREATE TABLE") {
            "CREATE TABLE"
        } else {
            "CREATE SOURCE"
        };
        if let Some(done) =
            super::ddl::name_taken(&self.catalog.read(), &name, create.if_not_exists, tag)?
        {
            return Ok(done);
        }
        let spec = self.plan_source(create).await?;
        // Fail now, not in the first reader, on bad options.
        spec.open(0).map_err(ServerError::Statement)?;
        let ddl = create.sql.clone();
        self.catalog.write().insert(Relation {
            name,
            schema: Arc::clone(&spec.schema),
            state_id: 0,
            outlet: Arc::new(Outlet::new()),
            ddl: ddl.clone(),
            state_ids: vec![],
            kind: RelationKind::Source {
                spec: Arc::new(spec),
            },
        });
        self.log_ddl(&ddl, mode).await?;
        Ok(QueryResult::command(tag))
    }

    async fn plan_source(&self, create: &CreateSource) -> Result<SourceSpec> {
        let option_error = |e: weir_connectors::ConnectorError| ServerError::Statement(e.into());
        connector_name(&create.options).map_err(option_error)?;
        let declared: Option<SchemaRef> = match &create.columns {
            Some(statement) => Some(self.declared_columns(statement).await?),
            None => None,
        };
        let native = native_schema(&create.options).map_err(option_error)?;
        let (generator_schema, columns, plain_schema) = match (declared, native) {
            (Some(d), None) => {
                let columns = (0..d.fields().len()).map(|i| (i, None)).collect();
                (Arc::clone(&d), columns, d)
            }
            (None, Some(n)) => {
                let columns = (0..n.fields().len()).map(|i| (i, None)).collect();
                (Arc::clone(&n), columns, n)
            }
            (None, None) => {
                return Err(user(
                    SqlState::INVALID_PARAMETER_VALUE,
                    "this connector needs the source's columns declared",
                ))
            }
            (Some(d), Some(n)) => {
                let mut columns = Vec::new();
                for f in d.fields() {
                    let Some(i) = n
                        .fields()
                        .iter()
                        .position(|g| g.name().eq_ignore_ascii_case(f.name()))
                    else {
                        let names: Vec<&str> =
                            n.fields().iter().map(|g| g.name().as_str()).collect();
                        return Err(user(
                            SqlState::UNDEFINED_COLUMN,
                            format!(
                                "the connector has no column \"{}\" (it has: {})",
                                f.name(),
                                names.join(", ")
                            ),
                        ));
                    };
                    let native_type = n.field(i).data_type();
                    let cast_to = (native_type != f.data_type()).then(|| f.data_type().clone());
                    if let Some(t) = &cast_to {
                        if !weir_common::arrow::compute::can_cast_types(native_type, t) {
                            return Err(user(
                                SqlState::DATATYPE_MISMATCH,
                                format!(
                                    "column \"{}\" is {native_type} in the connector and cannot be {t}",
                                    f.name()
                                ),
                            ));
                        }
                    }
                    columns.push((i, cast_to));
                }
                (n, columns, d)
            }
        };
        let df_schema = DFSchema::try_from(plain_schema.as_ref().clone())?;
        let state = self.state();
        let mut fields: Vec<Field> = plain_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut computed = Vec::new();
        for (col, sql) in &create.computed {
            if fields.iter().any(|f| f.name() == col) {
                return Err(user(
                    SqlState::DUPLICATE_COLUMN,
                    format!("column \"{col}\" specified more than once"),
                ));
            }
            let expr = state.create_logical_expr(sql, &df_schema)?;
            let data_type = expr.get_type(&df_schema)?;
            computed.push(state.create_physical_expr(expr, &df_schema)?);
            fields.push(Field::new(col, data_type, true));
        }
        let schema = Arc::new(Schema::new(fields));
        if let Some((col, sql)) = &create.watermark {
            let full = DFSchema::try_from(schema.as_ref().clone())?;
            let Some(field) = schema.fields().iter().find(|f| f.name() == col) else {
                return Err(user(
                    SqlState::UNDEFINED_COLUMN,
                    format!("WATERMARK FOR names column \"{col}\", which does not exist"),
                ));
            };
            let expr = state.create_logical_expr(sql, &full)?;
            let t = expr.get_type(&full)?;
            if !matches!(field.data_type(), DataType::Timestamp(..))
                || !matches!(t, DataType::Timestamp(..))
            {
                return Err(user(
                    SqlState::DATATYPE_MISMATCH,
                    format!("the watermark column \"{col}\" and its expression must be timestamps"),
                ));
            }
        }
        Ok(SourceSpec {
            options: create.options.clone(),
            generator_schema,
            columns,
            plain_schema,
            computed,
            watermark: create.watermark.clone(),
            schema,
        })
    }

    /// The columns of `CREATE TABLE name (...)`, typed by DataFusion.
    async fn declared_columns(&self, statement: &SqlStatement) -> Result<SchemaRef> {
        let plan = self.plan(statement, None).await?;
        let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) = plan else {
            return Err(user(
                SqlState::FEATURE_NOT_SUPPORTED,
                "this form of source column list is not supported",
            ));
        };
        Ok(Arc::new(create.input.schema().as_arrow().clone()))
    }

    /// The readers of `source` feeding `consumer`, one per instance of its
    /// first fragment (`readers` of them), as inputs that run inside those
    /// instances' tasks, from the offsets of the recovered checkpoint
    /// (`restore`) or from the start. The source is cut into as many splits
    /// as there are readers, or, when restoring, as many as the checkpoint
    /// recorded; reader `j` reads the splits `s` with `s % readers == j`.
    pub(super) fn start_readers(
        &self,
        consumer: &str,
        spec: &Arc<SourceSpec>,
        source: &str,
        readers: usize,
        restore: bool,
    ) -> Result<Vec<Input>> {
        let n = readers.max(1) as u64;
        let (splits, offsets) = match restore
            .then(|| restored_splits(&self.readers.restored.lock(), consumer))
            .flatten()
        {
            Some(found) => found,
            None => (n, BTreeMap::new()),
        };
        let mut registered = Vec::with_capacity(n as usize);
        let mut inputs = Vec::with_capacity(n as usize);
        for j in 0..n {
            let mut owned = Vec::new();
            for s in (j..splits).step_by(n as usize) {
                let offset = offsets.get(&s).copied().unwrap_or(0);
                owned.push(
                    SplitReader::open(&spec.options, &spec.generator_schema, s, splits, offset)
                        .map_err(|e| ServerError::Statement(e.into()))?,
                );
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let reader = Arc::new(Reader {
                source: source.to_string(),
                barriers: tx,
                splits,
                positions: Mutex::new(
                    owned
                        .iter()
                        .map(|r| (r.split(), r.offset(), r.consumed()))
                        .collect(),
                ),
                finished: AtomicBool::new(owned.is_empty()),
                checkpointed: Mutex::new(BTreeMap::new()),
                done: Arc::clone(&self.readers.finished),
            });
            if owned.is_empty() {
                reader.done.notify_one();
            }
            registered.push(Arc::clone(&reader));
            let share = owned.len() as f64 / splits as f64;
            let rate = owned
                .first()
                .and_then(|s| s.rate())
                .map(|r| (r as f64 * share).max(1.0));
            let start_consumed = owned.iter().map(|s| s.consumed()).sum();
            inputs.push(Input::Source(Box::new(ReaderSource {
                live: vec![true; owned.len()],
                splits: owned,
                turn: 0,
                spec: Arc::clone(spec),
                reader,
                barriers: rx,
                rate,
                started: Instant::now(),
                start_consumed,
            })));
        }
        self.readers
            .by_consumer
            .lock()
            .insert(consumer.to_string(), registered);
        Ok(inputs)
    }
}

/// One reader: batches from its splits in turn, barriers from the
/// coordinator in between, paced at its share of the source's rate. It runs
/// inside the task of the instance it feeds, chained to its operators.
struct ReaderSource {
    splits: Vec<SplitReader>,
    /// Splits not yet done.
    live: Vec<bool>,
    /// Where the round-robin over splits resumes.
    turn: usize,
    spec: Arc<SourceSpec>,
    reader: Arc<Reader>,
    barriers: mpsc::UnboundedReceiver<Barrier>,
    /// Offsets per second for this reader, if paced.
    rate: Option<f64>,
    started: Instant,
    start_consumed: u64,
}

impl ReaderSource {
    fn consumed(&self) -> u64 {
        self.splits.iter().map(|s| s.consumed()).sum()
    }

    /// A barrier to forward; at a checkpoint barrier, note the offsets.
    fn forward(&self, b: Barrier) -> Message {
        if b.checkpoint {
            let mut c = self.reader.checkpointed.lock();
            c.insert(
                b.epoch,
                self.splits
                    .iter()
                    .map(|s| (s.split(), s.offset()))
                    .collect(),
            );
            while c.len() > KEPT_OFFSETS {
                c.pop_first();
            }
        }
        Message::Barrier(b)
    }

    fn note(&self) {
        *self.reader.positions.lock() = self
            .splits
            .iter()
            .map(|s| (s.split(), s.offset(), s.consumed()))
            .collect();
    }

    async fn next_message(&mut self) -> Option<std::result::Result<Message, Error>> {
        loop {
            if let Ok(b) = self.barriers.try_recv() {
                return Some(Ok(self.forward(b)));
            }
            if self.reader.finished() {
                let b = self.barriers.recv().await?;
                return Some(Ok(self.forward(b)));
            }
            let mut max_rows = CHUNK_ROWS;
            if let Some(rate) = self.rate {
                let due = self.start_consumed
                    + (self.started.elapsed().as_secs_f64() * rate).min(u64::MAX as f64 / 2.0)
                        as u64;
                let done = self.consumed();
                if due <= done {
                    // Ahead of the pace: wait for the next row's time, or a barrier.
                    let next = (done + 1 - self.start_consumed) as f64 / rate;
                    let wait = Duration::from_secs_f64(next).saturating_sub(self.started.elapsed());
                    let barrier = tokio::select! {
                        b = self.barriers.recv() => Some(b?),
                        _ = tokio::time::sleep(wait.max(Duration::from_millis(1))) => None,
                    };
                    if let Some(b) = barrier {
                        return Some(Ok(self.forward(b)));
                    }
                    continue;
                }
                max_rows = max_rows.min((due - done) as usize);
            }
            let count = self.splits.len();
            let Some(i) = (0..count)
                .map(|k| (self.turn + k) % count)
                .find(|i| self.live[*i])
            else {
                self.reader.finished.store(true, Ordering::SeqCst);
                continue;
            };
            self.turn = i + 1;
            let batch = match self.splits[i].next_batch(max_rows) {
                Ok(b) => b,
                Err(e) => return Some(Err(e.into())),
            };
            match batch {
                Some(batch) => {
                    let batch = match self.spec.shape(batch) {
                        Ok(b) => b,
                        Err(e) => return Some(Err(e)),
                    };
                    self.note();
                    if batch.num_rows() > 0 {
                        return Some(Ok(Message::Chunk(StreamChunk::uniform(batch, Op::Insert))));
                    }
                }
                None => {
                    self.live[i] = false;
                    self.note();
                    if self.live.iter().all(|l| !l) {
                        self.reader.finished.store(true, Ordering::SeqCst);
                        self.reader.done.notify_one();
                    }
                }
            }
        }
    }
}

impl MessageSource for ReaderSource {
    fn next(&mut self) -> BoxFuture<'_, Option<std::result::Result<Message, DataflowError>>> {
        Box::pin(async move {
            let source = self.reader.source.clone();
            self.next_message().await.map(|r| {
                r.map_err(|e| {
                    DataflowError::Eval(e.context(format!("reading source \"{source}\"")))
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_keys_round_trip_per_consumer() {
        let offsets: BTreeMap<String, u64> = [
            (offset_key("v", 0, 1), 10),
            (offset_key("w", 0, 2), 20),
            (offset_key("w", 1, 2), 30),
            (offset_key("w#x", 0, 3), 40),
        ]
        .into_iter()
        .collect();
        assert_eq!(consumer_of("v"), "v");
        assert_eq!(consumer_of("w#1/2"), "w");
        assert_eq!(consumer_of("odd#name"), "odd#name");
        assert_eq!(
            restored_splits(&offsets, "v"),
            Some((1, BTreeMap::from([(0, 10)])))
        );
        assert_eq!(
            restored_splits(&offsets, "w"),
            Some((2, BTreeMap::from([(0, 20), (1, 30)])))
        );
        assert_eq!(
            restored_splits(&offsets, "w#x"),
            Some((3, BTreeMap::from([(0, 40)])))
        );
        assert_eq!(restored_splits(&offsets, "z"), None);
    }
}
