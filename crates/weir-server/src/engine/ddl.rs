//! CREATE TABLE, CREATE / EXPLAIN / DROP MATERIALIZED VIEW, DROP TABLE.

use std::collections::BTreeMap;

use weir_common::datafusion::execution::TaskContext;
use weir_common::vnode::MAX_PARALLELISM;
use weir_dataflow::blackhole::SinkCounters;
use weir_dataflow::plan::{DataflowPlan, Instantiate, PlanInput};
use weir_dataflow::restart::RestartTracker;
use weir_dataflow::runtime::{spawn_graph, Fragment, FragmentInput, Input};
use weir_dataflow::DataflowHandle;
use weir_sql::view_plan::{explain_fragments, StateTables, ViewPlan};
use weir_sql::SqlError;
use weir_state::{StateContext, StateTableId};

use super::*;
use crate::catalog::{ObjectKind, ViewHealth, ViewState};

/// What CREATE MATERIALIZED VIEW or CREATE SINK asks for.
pub(super) struct NewDataflow<'a> {
    pub name: &'a str,
    pub query: &'a Query,
    pub if_not_exists: bool,
    pub options: &'a BTreeMap<String, String>,
    /// A sink rather than a view.
    pub sink: bool,
}

impl Engine {
    /// The write lock, unless recovery (which holds it) runs the statement.
    pub(super) async fn ddl_guard(&self, mode: DdlMode) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match mode {
            DdlMode::Live => Some(self.write_lock.lock().await),
            DdlMode::Replay | DdlMode::Restore => None,
        }
    }

    pub(super) async fn create_table(
        &self,
        s: &SqlStatement,
        mode: DdlMode,
    ) -> Result<QueryResult> {
        let _guard = self.ddl_guard(mode).await;
        let plan = self.plan(&plain_char_types(s), None).await?;
        let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) = plan else {
            return Err(user(
                SqlState::FEATURE_NOT_SUPPORTED,
                "this form of CREATE TABLE is not supported",
            ));
        };
        if !matches!(create.input.as_ref(), LogicalPlan::EmptyRelation(_)) {
            return Err(user(
                SqlState::FEATURE_NOT_SUPPORTED,
                "CREATE TABLE ... AS is not supported",
            ));
        }
        if !create.column_defaults.is_empty() {
            return Err(user(
                SqlState::FEATURE_NOT_SUPPORTED,
                "column DEFAULT values are not supported",
            ));
        }
        let name = create.name.table().to_string();
        let mut pk: Vec<usize> = Vec::new();
        for c in create.constraints.iter() {
            match c {
                Constraint::PrimaryKey(cols) => pk = cols.clone(),
                Constraint::Unique(_) => {
                    return Err(user(
                        SqlState::FEATURE_NOT_SUPPORTED,
                        "UNIQUE constraints are not supported",
                    ))
                }
            }
        }
        let input_schema = create.input.schema().as_arrow();
        let declared = declared_char_types(s);
        let fields: Vec<Field> = input_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let nullable = f.is_nullable() && !pk.contains(&i);
                let field = Field::new(f.name(), f.data_type().clone(), nullable);
                match declared.get(i).copied().flatten() {
                    Some(t) => t.attach(field),
                    None => field,
                }
            })
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let ddl = s.to_string();
        {
            let mut catalog = self.catalog.write();
            if let Some(done) = name_taken(&catalog, &name, create.if_not_exists, "CREATE TABLE")? {
                return Ok(done);
            }
            let state_id = catalog.allocate_state_id();
            let table = TableStore::new(
                &name,
                Arc::clone(&schema),
                pk.clone(),
                StateTable::with_context(&self.state_ctx, state_id),
            )?;
            catalog.insert(Relation {
                name,
                schema,
                state_id,
                outlet: Arc::new(Outlet::new()),
                ddl: ddl.clone(),
                state_ids: vec![state_id],
                kind: RelationKind::Table {
                    store: Arc::new(Mutex::new(table)),
                    pk,
                },
            });
        }
        self.log_ddl(&ddl, mode).await?;
        Ok(QueryResult::command("CREATE TABLE"))
    }

    /// CREATE MATERIALIZED VIEW, or with `sink`, CREATE SINK.
    pub(super) async fn create_dataflow(
        &self,
        new: NewDataflow<'_>,
        mode: DdlMode,
        session_parallelism: usize,
    ) -> Result<QueryResult> {
        let NewDataflow {
            name,
            query,
            if_not_exists,
            options,
            sink,
        } = new;
        let tag = if sink {
            "CREATE SINK"
        } else {
            "CREATE MATERIALIZED VIEW"
        };
        let what = if sink { "sink" } else { "materialized view" };
        let _guard = self.ddl_guard(mode).await;
        let name = name.to_string();
        if let Some(done) = name_taken(&self.catalog.read(), &name, if_not_exists, tag)? {
            return Ok(done);
        }
        let strategy = RestartStrategy::from_options(options, &self.default_restart)
            .map_err(|m| user(SqlState::INVALID_PARAMETER_VALUE, m))?;
        if let Some(k) = options
            .keys()
            .find(|k| !(VIEW_OPTIONS.contains(&k.as_str()) || (sink && k.as_str() == "connector")))
        {
            return Err(user(
                SqlState::INVALID_PARAMETER_VALUE,
                format!("unrecognized {what} option \"{k}\""),
            ));
        }
        if sink {
            let connector = options.get("connector").map(|c| c.to_ascii_lowercase());
            if connector.as_deref() != Some("blackhole") {
                return Err(user(
                    SqlState::INVALID_PARAMETER_VALUE,
                    format!(
                        "unknown sink connector \"{}\" (supported: blackhole)",
                        connector.unwrap_or_default()
                    ),
                ));
            }
        }
        // A parallelism set for the session is fixed in the view's DDL, so
        // it survives restarts; without one the view follows the server's
        // `--parallelism` at every start.
        let mut options = options.clone();
        let fixed = session_parallelism;
        if fixed > 0 && !options.contains_key("parallelism") {
            options.insert("parallelism".into(), fixed.to_string());
        }
        let options = &options;
        let parallelism = self.parallelism_of(options)?;
        let counters = sink.then(|| Arc::new(SinkCounters::default()));
        // Recovery instantiates the plan the view was created with; a live
        // CREATE (or a log from before plans were stored) plans the query.
        let stored = match mode {
            DdlMode::Live => None,
            _ => self.stored_plans.lock().remove(&name),
        };
        let plan = match stored {
            Some(plan) => {
                self.check_plan_inputs(&plan)?;
                let mut catalog = self.catalog.write();
                let next = plan.state_tables.iter().max().map_or(0, |m| m + 1);
                if next > catalog.peek_next_state_id() {
                    catalog.set_next_state_id(next);
                }
                plan
            }
            None => {
                let view = self.plan_view_inputs(query).await?;
                let mut catalog = self.catalog.write();
                let mut tables = CatalogTables {
                    catalog: &mut catalog,
                };
                view.dataflow(sink, &mut tables)?
            }
        };
        // What it reads: the relations its dataflow subscribes to, and the
        // plain views it names (expanded into those).
        let mut upstreams = plan.relations();
        for named in super::views::named_relations(&self.catalog.read(), query) {
            if !upstreams.contains(&named) {
                upstreams.push(named);
            }
        }
        let schema = Arc::clone(&plan.schema.0);
        let state_ids = plan.state_tables.clone();
        let operators = self.instantiate(&plan, parallelism, &self.state_ctx, counters.clone())?;
        let (dataflow, outlet) = self
            .start_dataflow(&name, &plan.inputs, operators, mode)
            .await?;
        let with = if options.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = options
                .iter()
                .map(|(k, v)| format!("{k} = '{}'", v.replace('\'', "''")))
                .collect();
            format!(" WITH ({})", list.join(", "))
        };
        let ddl = if sink {
            format!("CREATE SINK {} AS {query}{with}", quote_ident(&name))
        } else {
            format!(
                "CREATE MATERIALIZED VIEW {}{with} AS {query}",
                quote_ident(&name)
            )
        };
        let health = Arc::new(Mutex::new(ViewHealth {
            state: ViewState::Running,
            last_error: None,
            tracker: RestartTracker::new(strategy),
        }));
        self.catalog.write().insert(Relation {
            name: name.clone(),
            schema,
            state_id: state_ids[0],
            outlet,
            ddl: ddl.clone(),
            state_ids,
            kind: RelationKind::View {
                dataflow,
                plan: Arc::new(plan),
                upstreams,
                definition: query.to_string(),
                health: Arc::clone(&health),
                sink: counters,
            },
        });
        self.close_epoch().await;
        // A view whose backfill failed (say, division by zero) is not created,
        // as in Postgres.
        let failed = match self.catalog.read().get(&name).and_then(|r| r.view_status()) {
            Some(DataflowStatus::Failed(e)) => Some(e),
            _ => None,
        };
        if let Some(e) = failed {
            if mode == DdlMode::Live {
                self.remove_relation(&name);
                return Err(ServerError::Statement(e));
            }
        }
        self.log_view_ddl(&name, &ddl, mode).await?;
        self.supervise(&name, health);
        Ok(QueryResult::command(tag))
    }

    /// Plan `query` as a view and mark which of its inputs are connector
    /// sources (append-only, read by split readers).
    pub(super) async fn plan_view_inputs(&self, query: &Query) -> Result<ViewPlan> {
        let mut query = query.clone();
        super::views::expand_views(&self.catalog.read(), &mut query)?;
        let mut plan = plan_view(&self.state(), &query).await?;
        let catalog = self.catalog.read();
        for name in plan.relations() {
            if catalog.get(&name).is_none() {
                return Err(user(
                    SqlState::UNDEFINED_TABLE,
                    format!("relation \"{name}\" does not exist"),
                ));
            }
        }
        plan.mark_sources(|name| catalog.get(name).is_some_and(|r| r.is_append_only()));
        plan.mark_keys(|name| match &catalog.get(name)?.kind {
            RelationKind::Table { pk, .. } if !pk.is_empty() => Some(pk.clone()),
            _ => None,
        });
        Ok(plan)
    }

    /// Spawn `operators` for `consumer`, reading `inputs` (in the order the
    /// plan numbered them). Unless `mode` restores a checkpoint, the
    /// dataflow backfills: each input is fed its relation's current
    /// contents first (a source's reader starts from its first row), all
    /// at the same epoch. Callers hold the write lock (or run recovery), so
    /// no write interleaves: the backfill is one consistent snapshot of
    /// every input.
    pub(super) async fn start_dataflow(
        &self,
        consumer: &str,
        inputs: &[PlanInput],
        operators: Vec<Fragment>,
        mode: DdlMode,
    ) -> Result<(DataflowHandle, Arc<Outlet>)> {
        let restore = mode == DdlMode::Restore;
        let outlet = Arc::new(Outlet::new());
        let epoch = self.epoch.load(Ordering::SeqCst);
        let mut feeds = Vec::with_capacity(inputs.len());
        let mut backfill = Vec::new();
        for (n, input) in inputs.iter().enumerate() {
            let upstream = self.relation(&input.relation)?;
            if let RelationKind::Source { spec } = &upstream.kind {
                // One reader per instance of the fragment reading it.
                let readers = operators
                    .iter()
                    .find(|f| {
                        f.inputs
                            .iter()
                            .any(|i| matches!(i, FragmentInput::External(x) if *x == n))
                    })
                    .map_or(1, |f| f.parallelism());
                let key = super::source::input_consumer(consumer, n);
                feeds.push(self.start_readers(&key, spec, &upstream.name, readers, restore)?);
                continue;
            }
            if let (false, RelationKind::View { dataflow, .. }) = (restore, &upstream.kind) {
                // Subscribe and read the snapshot at an epoch boundary of the
                // upstream view: a barrier injected before the caller took the
                // write lock (a checkpoint's) may still be passing through it,
                // and its output for that epoch must be in the snapshot or in
                // the subscription, not both or neither. Nor may the new
                // dataflow see a checkpoint barrier of a checkpoint that does
                // not wait for it (its files would be collected as garbage).
                dataflow.wait_committed(epoch).await;
            }
            let (input_tx, input_rx) = upstream.outlet.subscribe_with_sender();
            feeds.push(vec![Input::Channel(input_rx)]);
            backfill.push((upstream, input_tx));
        }
        let dataflow = spawn_graph(operators, feeds, Arc::clone(&outlet), epoch);
        for (upstream, input_tx) in backfill {
            if !restore {
                let snapshot = upstream.read(&self.store, &upstream.schema)?;
                for chunk in split_chunks(&snapshot, Op::Insert) {
                    if input_tx.send(Message::Chunk(chunk)).await.is_err() {
                        break;
                    }
                }
            }
            drop(input_tx);
        }
        Ok((dataflow, outlet))
    }

    /// The dataflow plan of `view`, with scratch state table ids that are
    /// never checkpointed: for EXPLAIN, and for a `SUBSCRIBE (query)`.
    pub(super) fn scratch_plan(&self, view: ViewPlan) -> Result<DataflowPlan> {
        let mut scratch = self.scratch_ids.lock();
        let mut tables = ScratchTables { next: &mut scratch };
        Ok(view.dataflow(false, &mut tables)?)
    }

    /// The parallelism a session's dataflow runs at (0: the server's).
    pub(super) fn session_width(&self, session_parallelism: usize) -> usize {
        match session_parallelism {
            0 => self.default_parallelism,
            n => n,
        }
    }

    /// Make `plan`'s operators, `parallelism` instances per parallel
    /// fragment, their state in `ctx`.
    pub(super) fn instantiate(
        &self,
        plan: &DataflowPlan,
        parallelism: usize,
        ctx: &StateContext,
        sink: Option<Arc<SinkCounters>>,
    ) -> Result<Vec<Fragment>> {
        let task = TaskContext::from(&self.state());
        Ok(plan.instantiate(&Instantiate {
            parallelism,
            task: &task,
            state: ctx,
            sink,
        })?)
    }

    /// Every relation `plan` reads exists.
    fn check_plan_inputs(&self, plan: &DataflowPlan) -> Result<()> {
        let catalog = self.catalog.read();
        for name in plan.relations() {
            if catalog.get(&name).is_none() {
                return Err(user(
                    SqlState::UNDEFINED_TABLE,
                    format!("relation \"{name}\" does not exist"),
                ));
            }
        }
        Ok(())
    }

    /// `EXPLAIN MATERIALIZED VIEW name`: the plan the catalog stores for a
    /// view or sink, one line per fragment and operator.
    pub(super) fn explain_stored(&self, name: &str) -> Result<QueryResult> {
        let relation = self.relation(name)?;
        let RelationKind::View { plan, .. } = &relation.kind else {
            return Err(user(
                SqlState::WRONG_OBJECT_TYPE,
                format!("\"{name}\" is not a materialized view or sink"),
            ));
        };
        Ok(text_rows(
            "QUERY PLAN",
            plan.to_string().lines().map(str::to_string).collect(),
        ))
    }

    pub(super) async fn explain_view(
        &self,
        query: &Query,
        session_parallelism: usize,
    ) -> Result<QueryResult> {
        let view = self.plan_view_inputs(query).await?;
        let plan = self.scratch_plan(view)?;
        let names: Vec<String> = plan.inputs.iter().map(|i| i.relation.clone()).collect();
        let ctx = StateContext::in_memory(Arc::clone(&self.store));
        let fragments =
            self.instantiate(&plan, self.session_width(session_parallelism), &ctx, None)?;
        Ok(text_rows(
            "QUERY PLAN",
            explain_fragments(&fragments, &names),
        ))
    }

    pub(super) async fn drop(
        &self,
        kind: ObjectKind,
        if_exists: bool,
        names: &[String],
        cascade: bool,
        mode: DdlMode,
    ) -> Result<QueryResult> {
        let keyword = kind.as_str().to_uppercase();
        let _guard = self.ddl_guard(mode).await;
        let mut dropped = false;
        for name in names {
            let relation = self.catalog.read().get(name);
            let Some(relation) = relation else {
                if if_exists {
                    continue;
                }
                return Err(user(
                    SqlState::UNDEFINED_TABLE,
                    format!("{} \"{name}\" does not exist", kind.as_str()),
                ));
            };
            let actual = relation.object_kind();
            // DROP TABLE also drops a table declared with a connector.
            let matches =
                actual == kind || (kind == ObjectKind::Table && actual == ObjectKind::Source);
            if !matches {
                return Err(user(
                    SqlState::WRONG_OBJECT_TYPE,
                    format!("\"{name}\" is not a {}", kind.as_str()),
                ));
            }
            let dependents = self.all_dependents(name);
            if !dependents.is_empty() && !cascade {
                let list: Vec<String> = dependents
                    .iter()
                    .filter_map(|d| self.catalog.read().get(d))
                    .map(|d| format!("{} {}", d.object_kind().as_str(), d.name))
                    .collect();
                return Err(user(
                    SqlState::DEPENDENT_OBJECTS_STILL_EXIST,
                    format!(
                        "cannot drop {name} because other objects depend on it: {}",
                        list.join(", ")
                    ),
                ));
            }
            for d in dependents.iter().rev() {
                self.remove_relation(d);
            }
            self.remove_relation(name);
            dropped = true;
        }
        if dropped {
            let list: Vec<String> = names.iter().map(|n| quote_ident(n)).collect();
            let what = if kind == ObjectKind::MaterializedView {
                "MATERIALIZED VIEW".to_string()
            } else {
                keyword.clone()
            };
            let sql = format!(
                "DROP {what} IF EXISTS {}{}",
                list.join(", "),
                if cascade { " CASCADE" } else { "" }
            );
            self.log_ddl(&sql, mode).await?;
        }
        Ok(QueryResult::command(&format!(
            "DROP {}",
            if kind == ObjectKind::MaterializedView {
                "MATERIALIZED VIEW".to_string()
            } else {
                keyword
            }
        )))
    }

    /// Views depending on `name`, transitively, parents before children.
    pub(super) fn all_dependents(&self, name: &str) -> Vec<String> {
        let catalog = self.catalog.read();
        let mut out = Vec::new();
        let mut queue = vec![name.to_string()];
        while let Some(n) = queue.pop() {
            for d in catalog.dependents(&n) {
                if !out.contains(&d) {
                    out.push(d.clone());
                    queue.push(d);
                }
            }
        }
        // A view is created after everything it reads, so creation order
        // (its first state table id) puts parents before children.
        out.sort_by_key(|d| catalog.get(d).map_or(u32::MAX, |r| r.state_id));
        out
    }

    pub(super) fn remove_relation(&self, name: &str) {
        let removed = self.catalog.write().remove(name);
        if let Some(r) = removed {
            if let RelationKind::View { dataflow, .. } = &r.kind {
                dataflow.stop();
            }
            self.readers.remove(name);
            r.outlet.close();
            for id in &r.state_ids {
                if let Err(e) = StateTable::drop_table(&self.store, *id) {
                    tracing::warn!(error = %e, relation = name, "could not delete state of dropped relation");
                }
            }
        }
    }
}

/// Options `CREATE MATERIALIZED VIEW ... WITH (...)` accepts.
const VIEW_OPTIONS: &[&str] = &[
    "parallelism",
    "restart_strategy",
    "initial_backoff",
    "max_backoff",
    "backoff_multiplier",
    "jitter",
    "reset_backoff_after",
    "attempts",
    "delay",
    "max_failures",
    "failure_interval",
];

/// For `CREATE ... name`: `Some(result)` when the name is taken and
/// `IF NOT EXISTS` makes the statement a no-op, 42P07 when it is taken
/// otherwise, `None` when it is free.
pub(super) fn name_taken(
    catalog: &Catalog,
    name: &str,
    if_not_exists: bool,
    tag: &str,
) -> Result<Option<QueryResult>> {
    if catalog.get(name).is_none() {
        return Ok(None);
    }
    if if_not_exists {
        return Ok(Some(QueryResult::command(tag)));
    }
    Err(user(
        SqlState::DUPLICATE_TABLE,
        format!("relation \"{name}\" already exists"),
    ))
}

/// `name` as a quoted SQL identifier (parses back to exactly `name`).
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Name of a relation as the catalog stores it (unquoted: lower-case).
pub(super) fn relation_name(name: &ObjectName) -> Result<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident())
        .map(|i| {
            if i.quote_style.is_some() {
                i.value.clone()
            } else {
                i.value.to_lowercase()
            }
        })
        .collect();
    match parts.as_slice() {
        [n] => Ok(n.clone()),
        [s, n] if s == SCHEMA => Ok(n.clone()),
        [c, s, n] if c == CATALOG && s == SCHEMA => Ok(n.clone()),
        _ => Err(user(
            SqlState::UNDEFINED_OBJECT,
            format!("schema of \"{name}\" does not exist"),
        )),
    }
}

/// State tables of a new view: fresh ids from the catalog.
pub(super) struct CatalogTables<'a> {
    pub(super) catalog: &'a mut Catalog,
}

impl StateTables for CatalogTables<'_> {
    fn allocate(&mut self) -> std::result::Result<StateTableId, SqlError> {
        Ok(self.catalog.allocate_state_id())
    }
}

/// Throwaway tables for EXPLAIN and SUBSCRIBE: ids counting down from the
/// top, never checkpointed.
struct ScratchTables<'a> {
    next: &'a mut u32,
}

impl StateTables for ScratchTables<'_> {
    fn allocate(&mut self) -> std::result::Result<StateTableId, SqlError> {
        *self.next -= 1;
        Ok(*self.next)
    }
}

impl Engine {
    /// The parallelism a view with `options` runs at: its `parallelism`
    /// option, else the server's default.
    pub(super) fn parallelism_of(&self, options: &BTreeMap<String, String>) -> Result<usize> {
        match options.get("parallelism") {
            None => Ok(self.default_parallelism),
            Some(text) => parse_parallelism(text).ok_or_else(|| {
                user(
                    SqlState::INVALID_PARAMETER_VALUE,
                    format!(
                        "invalid value for option \"parallelism\": \"{text}\" (an integer from 1 to {MAX_PARALLELISM})"
                    ),
                )
            }),
        }
    }
}

/// A parallelism from 1 to [`MAX_PARALLELISM`].
pub(super) fn parse_parallelism(text: &str) -> Option<usize> {
    text.trim()
        .parse::<usize>()
        .ok()
        .filter(|p| (1..=MAX_PARALLELISM).contains(p))
}

/// The declared character types (`varchar(n)`, `char(n)`) of a CREATE
/// TABLE's columns, in column order: DataFusion plans them all as Utf8.
fn declared_char_types(s: &SqlStatement) -> Vec<Option<weir_common::char_type::CharType>> {
    use weir_common::char_type::CharType;
    use weir_common::datafusion::sql::sqlparser::ast::{CharacterLength, DataType as SqlType};
    let SqlStatement::CreateTable(ct) = s else {
        return Vec::new();
    };
    let length = |l: &Option<CharacterLength>| match l {
        Some(CharacterLength::IntegerLength { length, .. }) => u32::try_from(*length).ok(),
        _ => None,
    };
    ct.columns
        .iter()
        .map(|c| match &c.data_type {
            SqlType::Varchar(l)
            | SqlType::CharacterVarying(l)
            | SqlType::CharVarying(l)
            | SqlType::Nvarchar(l) => Some(CharType::Varchar(length(l))),
            SqlType::Char(l) | SqlType::Character(l) => {
                Some(CharType::Char(length(l).unwrap_or(1)))
            }
            SqlType::Uuid => Some(CharType::Uuid),
            _ => None,
        })
        .collect()
}

/// `s` with the spellings of `varchar` DataFusion does not plan
/// (`CHARACTER VARYING`, `CHAR VARYING`, `NVARCHAR`) written as `VARCHAR`,
/// and `UUID` as `TEXT` (its declared type is kept in the field metadata).
fn plain_char_types(s: &SqlStatement) -> SqlStatement {
    use weir_common::datafusion::sql::sqlparser::ast::DataType as SqlType;
    let mut s = s.clone();
    if let SqlStatement::CreateTable(ct) = &mut s {
        for c in &mut ct.columns {
            if let SqlType::CharacterVarying(l) | SqlType::CharVarying(l) | SqlType::Nvarchar(l) =
                &c.data_type
            {
                c.data_type = SqlType::Varchar(*l);
            } else if c.data_type == SqlType::Uuid {
                c.data_type = SqlType::Text;
            }
        }
    }
    s
}
