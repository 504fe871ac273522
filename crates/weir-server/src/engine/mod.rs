//! The engine executes statements against the catalog.
//!
//! Consistency: every write (DML, CREATE/DROP) runs under one write lock. A
//! DML statement applies its rows to the table, sends the changes to the
//! table's subscribers, closes an epoch with a barrier sent to every table,
//! and returns only once every running view has committed that epoch. So
//! once a write is acknowledged, a SELECT from any session sees it in every
//! view (read-your-writes), and since a view commits an epoch in one atomic
//! write, no SELECT sees a view half-updated.
//!
//! DML lives in [`dml`], DDL and views in [`ddl`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use weir_common::arrow::array::{ArrayRef, RecordBatch, StringArray};
use weir_common::arrow::compute::{cast, concat_batches};
use weir_common::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use weir_common::datafusion::catalog::{CatalogProvider, MemoryCatalogProvider};
use weir_common::datafusion::common::{Constraint, ParamValues};
use weir_common::datafusion::execution::context::{SessionContext, SessionState};
use weir_common::datafusion::logical_expr::{
    DdlStatement, DmlStatement, Expr, LogicalPlan, LogicalPlanBuilder, WriteOp,
};
use weir_common::datafusion::prelude::{DataFrame, SessionConfig};
use weir_common::datafusion::sql::parser::Statement as DfStatement;
use weir_common::datafusion::sql::sqlparser::ast::{
    ObjectName, ObjectType, Query, Statement as SqlStatement,
};
use weir_common::{Barrier, Error, Message, Op, SqlState};
use weir_dataflow::restart::RestartStrategy;
use weir_dataflow::table_store::{split_chunks, TableStore};
use weir_dataflow::{DataflowStatus, Outlet};
use weir_sql::naming::output_names;
use weir_sql::parser::Statement;
use weir_sql::view_plan::plan_view;
use weir_state::{RocksStateStore, SnapshotRef, StateContext, StateStoreRef, StateTable};

use crate::catalog::{Catalog, ObjectKind, Relation, RelationKind};
use crate::provider::{ReadSnapshot, WeirSchema};
use crate::session::Session;
use crate::{ServerConfig, ServerError};

mod copy;
mod ddl;
use ddl::relation_name;
mod dml;
mod durability;
mod settings;
pub(crate) mod source;
mod subscribe;
mod supervisor;
pub mod system;
mod txn;
mod views;

/// The catalog name DataFusion resolves relations in.
pub const CATALOG: &str = "weir";
/// The only schema.
pub const SCHEMA: &str = "public";

pub use subscribe::Subscription;

/// What a statement returns.
#[derive(Debug)]
pub enum QueryResult {
    /// Rows (SELECT, SHOW, EXPLAIN).
    Rows {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    },
    /// A command tag such as `INSERT 0 3` or `CREATE TABLE`.
    Command { tag: String, rows: Option<usize> },
    /// `COPY ... FROM STDIN`: the wire layer collects the client's data,
    /// then hands it to [`Engine::copy_in`].
    CopyIn(crate::session::PendingCopy),
    /// `COPY ... TO STDOUT`: the rows to send, in `format`.
    CopyOut {
        format: crate::copy_format::CopyFormat,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    },
}

impl QueryResult {
    fn command(tag: &str) -> Self {
        QueryResult::Command {
            tag: tag.to_string(),
            rows: None,
        }
    }
}

/// Shared state of a server: catalog, state store, DataFusion context.
pub struct Engine {
    store: StateStoreRef,
    /// What every state table shares (store, checkpoint sink, cache budget).
    state_ctx: StateContext,
    catalog: Arc<RwLock<Catalog>>,
    ctx: SessionContext,
    /// Serializes writers (DML, DDL, FLUSH, the start of a checkpoint).
    write_lock: tokio::sync::Mutex<()>,
    /// The last closed epoch.
    epoch: AtomicU64,
    /// State table ids handed out for EXPLAIN, never written.
    scratch_ids: Mutex<u32>,
    /// Dataflow plans read from a checkpoint or the log, by view, for
    /// recovery's CREATE of that view to instantiate.
    stored_plans: Mutex<std::collections::HashMap<String, weir_dataflow::plan::DataflowPlan>>,
    /// Write-ahead log, checkpoints, recovery facts.
    durable: durability::Durable,
    /// The restart strategy of views that name none.
    default_restart: RestartStrategy,
    /// Readers of sources, by the dataflow they feed.
    readers: source::Readers,
    /// Parallelism of views that do not fix their own (`--parallelism`).
    default_parallelism: usize,
    /// Users and their passwords.
    users: Arc<crate::users::Users>,
    /// How clients authenticate.
    auth: crate::AuthMethod,
    /// The allocator's statistics (see `ServerConfig::heap_stats`).
    heap_stats: Option<fn() -> Vec<weir_state::MemoryUsage>>,
    /// This engine, for the tasks it spawns (coordinator, supervisors).
    me: Weak<Engine>,
}

type Result<T> = std::result::Result<T, ServerError>;

fn user(code: SqlState, message: impl Into<String>) -> ServerError {
    ServerError::Statement(Error::new(code, message))
}

/// How a DDL statement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DdlMode {
    /// From a client: logged to the WAL; a new view backfills.
    Live,
    /// Re-executed from the WAL during recovery: not logged; views backfill.
    Replay,
    /// Recreating the catalog of a checkpoint: not logged; a view's state
    /// comes from the checkpoint, so no backfill.
    Restore,
}

fn session_context(
    catalog: &Arc<RwLock<Catalog>>,
    store: &StateStoreRef,
    system: Arc<system::SystemSchema>,
    users: &Arc<crate::users::Users>,
) -> Result<SessionContext> {
    let mut config = SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG, SCHEMA)
        .with_create_default_catalog_and_schema(false)
        .with_target_partitions(1)
        .with_information_schema(false);
    // Sessions run in UTC: TIMESTAMPTZ values are stored as UTC instants.
    config.options_mut().execution.time_zone = Some("+00:00".to_string());
    // 1.005 is NUMERIC in Postgres, not a float.
    config.options_mut().sql_parser.parse_float_as_decimal = true;
    let ctx = SessionContext::new_with_config(config);
    weir_sql::functions::register(&ctx);
    let weir_catalog = MemoryCatalogProvider::new();
    weir_catalog.register_schema(
        SCHEMA,
        Arc::new(WeirSchema::new(Arc::clone(catalog), Arc::clone(store))),
    )?;
    weir_catalog.register_schema(system::SYSTEM_SCHEMA, system)?;
    let pg = Arc::new(crate::pg_catalog::PgCatalog::new(
        Arc::clone(catalog),
        Arc::clone(users),
    ));
    weir_catalog.register_schema("pg_catalog", Arc::clone(&pg) as _)?;
    weir_catalog.register_schema(
        "information_schema",
        Arc::new(crate::pg_catalog::InformationSchema::new(Arc::clone(
            catalog,
        ))),
    )?;
    ctx.register_catalog(CATALOG, Arc::new(weir_catalog));
    crate::pg_catalog::register(&ctx, Arc::clone(catalog), pg.procs());
    pg.set_functions(&ctx);
    Ok(ctx)
}

impl Engine {
    /// Open the data directory of `config`, recover the newest complete
    /// checkpoint and replay the write-ahead log after it, then start
    /// taking checkpoints.
    pub async fn open(config: &ServerConfig) -> Result<Arc<Self>> {
        let started = std::time::Instant::now();
        let opened = durability::Durable::open(config)?;
        let store: StateStoreRef = Arc::new(
            RocksStateStore::open_fresh(&config.data_dir.join("state"), config.state_cache_mb)
                .map_err(|e| ServerError::Startup(format!("cannot open the state store: {e}")))?,
        );
        let state_ctx = StateContext {
            store: Arc::clone(&store),
            checkpoints: Some(Arc::clone(&opened.durable.sink)),
            // RocksDB takes three quarters of the budget (see
            // `RocksStateStore::open`); operators' caches of hot keys share
            // the last quarter.
            cache_bytes: (config.state_cache_mb << 20) / 4,
        };
        let catalog = Arc::new(RwLock::new(Catalog::new()));
        let system = Arc::new(system::SystemSchema::new());
        let users = Arc::new(crate::users::Users::default());
        users.keep_md5(config.auth == crate::AuthMethod::Md5);
        let ctx = session_context(&catalog, &store, Arc::clone(&system), &users)?;
        let engine = Arc::new_cyclic(|me| Engine {
            store,
            state_ctx,
            catalog,
            ctx,
            write_lock: tokio::sync::Mutex::new(()),
            epoch: AtomicU64::new(0),
            scratch_ids: Mutex::new(u32::MAX),
            stored_plans: Mutex::new(std::collections::HashMap::new()),
            durable: opened.durable,
            default_restart: config.restart_strategy.clone(),
            readers: source::Readers::default(),
            default_parallelism: config
                .parallelism
                .clamp(1, weir_common::vnode::MAX_PARALLELISM),
            users,
            auth: config.auth,
            heap_stats: config.heap_stats,
            me: me.clone(),
        });
        system.attach(Arc::downgrade(&engine));
        engine
            .recover(opened.latest, opened.max_epoch, started)
            .await?;
        if let Some(p) = &config.superuser_password {
            engine.users.set_superuser_password(p);
        }
        engine.spawn_coordinator();
        Ok(engine)
    }

    /// Users and their passwords.
    pub fn users(&self) -> Arc<crate::users::Users> {
        Arc::clone(&self.users)
    }

    /// How clients authenticate.
    pub fn auth_method(&self) -> crate::AuthMethod {
        self.auth
    }

    /// The relation called `name`, or 42P01.
    fn relation(&self, name: &str) -> Result<Arc<Relation>> {
        self.catalog.read().get(name).ok_or_else(|| {
            user(
                SqlState::UNDEFINED_TABLE,
                format!("relation \"{name}\" does not exist"),
            )
        })
    }

    fn state(&self) -> SessionState {
        self.ctx.state()
    }

    /// Stop every dataflow.
    pub fn shutdown(&self) {
        self.durable.stop();
        let mut catalog = self.catalog.write();
        let names: Vec<String> = catalog.all().map(|r| r.name.clone()).collect();
        for n in names {
            catalog.remove(&n);
        }
    }

    /// Execute a statement other than transaction control for `session`.
    async fn execute_in(
        &self,
        statement: &Statement,
        params: Option<ParamValues>,
        session: &Session,
    ) -> Result<QueryResult> {
        if let Some(what) = ddl_name(statement) {
            Self::ddl_in_transaction(what, session)?;
        }
        match statement {
            Statement::Flush => {
                let guard = self.write_lock.lock().await;
                let epoch = self.inject_barrier().await;
                drop(guard);
                self.wait_epoch(epoch).await;
                Ok(QueryResult::command("FLUSH"))
            }
            Statement::Checkpoint => {
                self.checkpoint().await?;
                Ok(QueryResult::command("CHECKPOINT"))
            }
            Statement::ShowTables => Ok(self.show_relations(ObjectKind::Table)),
            Statement::ShowMaterializedViews => {
                Ok(self.show_relations(ObjectKind::MaterializedView))
            }
            Statement::ShowSources => Ok(self.show_relations(ObjectKind::Source)),
            Statement::ShowSinks => Ok(self.show_relations(ObjectKind::Sink)),
            Statement::CreateMaterializedView { .. }
            | Statement::CreateSource(_)
            | Statement::CreateSink(_)
            | Statement::DropSourceOrSink { .. } => self.live_ddl(statement, session).await,
            Statement::Role(_) => {
                let user = session.get("session_authorization").unwrap_or_default();
                let superuser = self.users.get(&user).is_some_and(|u| u.superuser);
                if self.auth != crate::AuthMethod::Trust && !superuser {
                    return Err(user_error_permission());
                }
                self.live_ddl(statement, session).await
            }
            Statement::ExplainMaterializedView { query, .. } => {
                self.explain_view(query, self.session_parallelism(session))
                    .await
            }
            Statement::ExplainStored { name } => self.explain_stored(name),
            Statement::DeclareSubscribe { cursor, target } => {
                self.declare_subscribe(cursor, target, session).await
            }
            Statement::Fetch {
                cursor,
                count,
                timeout,
            } => self.fetch(cursor, *count, *timeout, session).await,
            Statement::Subscribe { .. } => Err(user(
                SqlState::FEATURE_NOT_SUPPORTED,
                "SUBSCRIBE streams as a query of its own in the simple protocol; elsewhere use a cursor: BEGIN; DECLARE c CURSOR FOR SUBSCRIBE name; FETCH 100 c WITH (timeout = '1s')",
            )),
            Statement::Sql(s) => self.execute_sql(s, params, session).await,
        }
    }

    /// Run a CREATE TABLE, CREATE MATERIALIZED VIEW or DROP in `mode`;
    /// `None` for any other statement. Clients and recovery both come here.
    /// `parallelism` is the session's `streaming_parallelism` (0: none).
    pub(super) async fn run_ddl(
        &self,
        statement: &Statement,
        mode: DdlMode,
        parallelism: usize,
    ) -> Result<Option<QueryResult>> {
        let result = match statement {
            Statement::CreateMaterializedView {
                name,
                query,
                if_not_exists,
                options,
            } => {
                let name = relation_name(name)?;
                let new = ddl::NewDataflow {
                    name: &name,
                    query,
                    if_not_exists: *if_not_exists,
                    options,
                    sink: false,
                };
                self.create_dataflow(new, mode, parallelism).await?
            }
            Statement::CreateSink(sink) => {
                let new = ddl::NewDataflow {
                    name: &sink.name,
                    query: &sink.query,
                    if_not_exists: sink.if_not_exists,
                    options: &sink.options,
                    sink: true,
                };
                self.create_dataflow(new, mode, parallelism).await?
            }
            Statement::CreateSource(create) => self.create_source(create, mode).await?,
            Statement::Role(role) => {
                let _guard = self.ddl_guard(mode).await;
                let (tag, logged) = self.users.execute(role)?;
                self.log_ddl(&logged, mode).await?;
                QueryResult::command(tag)
            }
            Statement::DropSourceOrSink {
                kind,
                names,
                if_exists,
                cascade,
            } => {
                let kind = match kind {
                    weir_sql::source_ddl::DropKind::Source => ObjectKind::Source,
                    weir_sql::source_ddl::DropKind::Sink => ObjectKind::Sink,
                };
                self.drop(kind, *if_exists, names, *cascade, mode).await?
            }
            Statement::Sql(s) => match s.as_ref() {
                SqlStatement::CreateTable(_) => self.create_table(s, mode).await?,
                SqlStatement::CreateView(v) if !v.materialized => self.create_view(v, mode).await?,
                SqlStatement::Drop {
                    object_type,
                    if_exists,
                    names,
                    cascade,
                    ..
                } => {
                    let kind = match object_type {
                        ObjectType::Table => ObjectKind::Table,
                        ObjectType::MaterializedView => ObjectKind::MaterializedView,
                        ObjectType::View => ObjectKind::View,
                        other => {
                            return Err(user(
                                SqlState::FEATURE_NOT_SUPPORTED,
                                format!("DROP {other} is not supported"),
                            ))
                        }
                    };
                    let names = names
                        .iter()
                        .map(relation_name)
                        .collect::<Result<Vec<_>>>()?;
                    self.drop(kind, *if_exists, &names, *cascade, mode).await?
                }
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        Ok(Some(result))
    }

    /// A DDL statement from a client.
    async fn live_ddl(&self, statement: &Statement, session: &Session) -> Result<QueryResult> {
        self.run_ddl(statement, DdlMode::Live, self.session_parallelism(session))
            .await?
            .ok_or_else(|| ServerError::Statement(Error::internal("not a DDL statement")))
    }

    async fn execute_sql(
        &self,
        s: &SqlStatement,
        params: Option<ParamValues>,
        session: &Session,
    ) -> Result<QueryResult> {
        match s {
            SqlStatement::Query(_) | SqlStatement::Explain { .. } => {
                let mut s = s.clone();
                self.prepare_sql(&mut s, session, true)?;
                let txn = self.txn_read(session).await;
                self.query(&s, params, txn.as_ref(), session).await
            }
            SqlStatement::Insert(_) | SqlStatement::Update(_) | SqlStatement::Delete(_) => {
                let mut s = s.clone();
                self.prepare_sql(&mut s, session, true)?;
                let s = &s;
                match self.txn_read(session).await {
                    Some(txn) => self.dml_in_transaction(s, params, session, &txn).await,
                    None => self.dml(s, params).await,
                }
            }
            SqlStatement::CreateTable(_)
            | SqlStatement::Drop { .. }
            | SqlStatement::CreateView(_) => {
                self.live_ddl(&Statement::Sql(Box::new(s.clone())), session)
                    .await
            }
            SqlStatement::Copy {
                source,
                to,
                target,
                options,
                legacy_options,
                ..
            } => {
                self.copy(source, *to, target, options, legacy_options, session)
                    .await
            }
            SqlStatement::Close { cursor } => {
                use weir_common::datafusion::sql::sqlparser::ast::CloseCursor;
                let name = match cursor {
                    CloseCursor::All => None,
                    CloseCursor::Specific { name } => Some(name.value.to_ascii_lowercase()),
                };
                if !session.close_cursor(name.as_deref()) {
                    return Err(user(
                        SqlState("34000"),
                        format!("cursor \"{}\" does not exist", name.unwrap_or_default()),
                    ));
                }
                Ok(QueryResult::command("CLOSE CURSOR"))
            }
            SqlStatement::Set(set) => self.set(set, session),
            SqlStatement::Reset(r) => self.reset(&r.reset, session),
            SqlStatement::ShowVariable { variable } => {
                let name = variable
                    .iter()
                    .map(|i| i.value.clone())
                    .collect::<Vec<_>>()
                    .join(".");
                self.show(&name, session)
            }
            other => Err(user(
                SqlState::FEATURE_NOT_SUPPORTED,
                format!(
                    "statement not supported: {}",
                    first_words(&other.to_string())
                ),
            )),
        }
    }

    /// Plan a standard SQL statement with DataFusion.
    async fn plan(&self, s: &SqlStatement, params: Option<ParamValues>) -> Result<LogicalPlan> {
        let mut s = s.clone();
        views::expand_views(&self.catalog.read(), &mut s)?;
        let plan = self
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(s)))
            .await?;
        Ok(match params {
            Some(p) => plan.with_param_values(p)?,
            None => plan,
        })
    }

    /// Plan a statement without executing it: parameter types and, for
    /// statements returning rows, the result schema (extended protocol).
    pub async fn describe(
        &self,
        statement: &Statement,
        session: &Session,
    ) -> Result<(Vec<Option<DataType>>, Option<SchemaRef>)> {
        match statement {
            Statement::Sql(s) => match s.as_ref() {
                SqlStatement::Query(_)
                | SqlStatement::Explain { .. }
                | SqlStatement::Insert(_)
                | SqlStatement::Update(_)
                | SqlStatement::Delete(_) => {
                    let mut s = s.clone();
                    self.prepare_sql(&mut s, session, false)?;
                    let s = &s;
                    let plan = self.plan(s, None).await?;
                    let mut types = plan.get_parameter_types()?;
                    infer_cast_parameters(&plan, &mut types)?;
                    let mut ordered: Vec<(usize, Option<DataType>)> = types
                        .into_iter()
                        .filter_map(|(k, v)| {
                            k.trim_start_matches('$')
                                .parse::<usize>()
                                .ok()
                                .map(|i| (i, v))
                        })
                        .collect();
                    ordered.sort_by_key(|(i, _)| *i);
                    let count = ordered.last().map(|(i, _)| *i).unwrap_or(0);
                    let mut params = vec![None; count];
                    for (i, t) in ordered {
                        params[i - 1] = t;
                    }
                    let schema = if matches!(
                        s.as_ref(),
                        SqlStatement::Query(_) | SqlStatement::Explain { .. }
                    ) {
                        Some(pg_schema(&plan))
                    } else {
                        None
                    };
                    Ok((params, schema))
                }
                SqlStatement::ShowVariable { variable } => {
                    let name = variable
                        .iter()
                        .map(|i| i.value.clone())
                        .collect::<Vec<_>>()
                        .join(".");
                    let schema = if name.eq_ignore_ascii_case("all") {
                        text_schema(&["name", "setting", "description"])
                    } else {
                        text_schema(&[name.as_str()])
                    };
                    Ok((vec![], Some(schema)))
                }
                _ => Ok((vec![], None)),
            },
            Statement::ShowTables
            | Statement::ShowMaterializedViews
            | Statement::ShowSources
            | Statement::ShowSinks => Ok((vec![], Some(text_schema(&["Name"])))),
            Statement::ExplainMaterializedView { .. } | Statement::ExplainStored { .. } => {
                Ok((vec![], Some(text_schema(&["QUERY PLAN"]))))
            }
            Statement::Fetch { cursor, .. } => Ok((vec![], self.cursor_schema(cursor, session))),
            _ => Ok((vec![], None)),
        }
    }

    /// A SELECT or EXPLAIN. All its scans read one snapshot: the
    /// transaction's inside one, else one taken now.
    async fn query(
        &self,
        s: &SqlStatement,
        params: Option<ParamValues>,
        txn: Option<&txn::TxnRead>,
        session: &Session,
    ) -> Result<QueryResult> {
        let plan = self.plan(s, params).await?;
        if let Some(txn) = txn {
            txn::check_reads(&plan, txn)?;
        }
        let schema = pg_schema(&plan);
        let snapshot = match txn {
            Some(t) => Arc::clone(&t.snapshot),
            None => Arc::clone(&self.store).snapshot(),
        };
        // A CancelRequest or statement_timeout stops a query (reads only:
        // a write, once started, runs to its end so that it is wholly
        // applied or not).
        let timeout = session.statement_timeout();
        let expired = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let batches = tokio::select! {
            batches = self.collect(plan, Some(&snapshot), Some(session)) => batches?,
            () = session.cancelled() => {
                return Err(user(
                    SqlState::QUERY_CANCELED,
                    "canceling statement due to user request",
                ))
            }
            () = expired => {
                return Err(user(
                    SqlState::QUERY_CANCELED,
                    "canceling statement due to statement timeout",
                ))
            }
        };
        // The plan's types, even where execution produced another encoding
        // of them (DataFusion may yield Utf8View for a Utf8 column).
        let batches = batches
            .into_iter()
            .map(|b| {
                let columns = b
                    .columns()
                    .iter()
                    .zip(schema.fields())
                    .map(|(c, f)| {
                        if c.data_type() == f.data_type() {
                            Ok(Arc::clone(c))
                        } else {
                            cast(c, f.data_type())
                        }
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                RecordBatch::try_new(Arc::clone(&schema), columns)
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| ServerError::Statement(e.into()))?;
        Ok(QueryResult::Rows { schema, batches })
    }

    /// Run `plan`, its scans reading `snapshot` if given; `pg_settings`
    /// shows `session`'s values.
    async fn collect(
        &self,
        plan: LogicalPlan,
        snapshot: Option<&SnapshotRef>,
        session: Option<&Session>,
    ) -> Result<Vec<RecordBatch>> {
        let mut state = self.state();
        if let Some(s) = snapshot {
            state
                .config_mut()
                .set_extension(Arc::new(ReadSnapshot(Arc::clone(s))));
        }
        if let Some(session) = session {
            state
                .config_mut()
                .set_extension(Arc::new(crate::pg_catalog::SessionSettings(session.all())));
        }
        Ok(DataFrame::new(state, plan).collect().await?)
    }

    /// Close an epoch: a barrier to every table, then wait until every
    /// running view has committed it. Callers hold the write lock.
    async fn close_epoch(&self) {
        let epoch = self.inject_barrier().await;
        self.wait_epoch(epoch).await;
    }

    /// Send a barrier closing a new epoch to every table; returns the
    /// epoch. Callers hold the write lock.
    async fn inject_barrier(&self) -> u64 {
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        let tables: Vec<Arc<Relation>> = self
            .catalog
            .read()
            .all()
            .filter(|r| !r.is_view())
            .cloned()
            .collect();
        for r in tables {
            r.outlet.send(Message::Barrier(Barrier::new(epoch))).await;
        }
        self.readers.barrier(Barrier::new(epoch));
        epoch
    }

    /// Run `f` at an epoch boundary: under the write lock (no barrier can
    /// be injected) once every view has committed the last closed epoch,
    /// which `f` is given. What `f` takes then (a store snapshot, an
    /// outlet subscription) covers exactly the epochs up to it.
    async fn at_epoch_boundary<T>(&self, f: impl FnOnce(u64) -> T) -> T {
        let _guard = self.write_lock.lock().await;
        let epoch = self.epoch.load(Ordering::SeqCst);
        self.wait_epoch(epoch).await;
        f(epoch)
    }

    /// Wait until every running view has committed `epoch` (read-your-writes).
    async fn wait_epoch(&self, epoch: u64) {
        let views: Vec<Arc<Relation>> = self
            .catalog
            .read()
            .all()
            .filter(|r| r.is_view())
            .cloned()
            .collect();
        for r in &views {
            if let RelationKind::View { dataflow, .. } = &r.kind {
                dataflow.wait_committed(epoch).await;
            }
        }
    }

    fn show_relations(&self, kind: ObjectKind) -> QueryResult {
        let names: Vec<String> = self
            .catalog
            .read()
            .all()
            .filter(|r| r.object_kind() == kind)
            .map(|r| r.name.clone())
            .collect();
        text_rows("Name", names)
    }
}

/// Parameters the planner left untyped but that are cast (`$1::BIGINT`)
/// take the cast's type, as in Postgres.
fn infer_cast_parameters(
    plan: &LogicalPlan,
    types: &mut std::collections::HashMap<String, Option<DataType>>,
) -> Result<()> {
    use weir_common::datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                let (inner, to) = match e {
                    Expr::Cast(c) => (c.expr.as_ref(), c.field.data_type()),
                    Expr::TryCast(c) => (c.expr.as_ref(), c.field.data_type()),
                    // `$n::uuid`: described to clients as uuid.
                    Expr::ScalarFunction(f) if f.name() == "pg_uuid" => {
                        if let Some(Expr::Placeholder(p)) = f.args.first() {
                            if let Some(slot) = types.get_mut(&p.id) {
                                *slot = Some(weir_common::char_type::UUID_PARAMETER);
                            }
                        }
                        return Ok(TreeNodeRecursion::Continue);
                    }
                    _ => return Ok(TreeNodeRecursion::Continue),
                };
                if let Expr::Placeholder(p) = inner {
                    if let Some(slot @ None) = types.get_mut(&p.id) {
                        *slot = Some(to.clone());
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    Ok(())
}

/// The plan's output schema with Postgres-style column names.
fn pg_schema(plan: &LogicalPlan) -> SchemaRef {
    let names = output_names(plan);
    let arrow = plan.schema().as_arrow();
    let fields: Vec<Field> = arrow
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let name = names.get(i).cloned().unwrap_or_else(|| f.name().clone());
            // Metadata kept: it carries declared types such as varchar(n).
            let data_type = crate::pg_catalog::signed(f.data_type());
            f.as_ref().clone().with_name(name).with_data_type(data_type)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

fn text_schema(names: &[&str]) -> SchemaRef {
    Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, false))
            .collect::<Vec<_>>(),
    ))
}

fn text_rows(column: &str, values: Vec<String>) -> QueryResult {
    let schema = text_schema(&[column]);
    let array: ArrayRef = Arc::new(StringArray::from(values));
    match RecordBatch::try_new(Arc::clone(&schema), vec![array]) {
        Ok(b) => QueryResult::Rows {
            schema,
            batches: vec![b],
        },
        Err(_) => QueryResult::Rows {
            schema,
            batches: vec![],
        },
    }
}

/// What a DDL statement is called in "... cannot run inside a transaction
/// block"; `None` for statements that are not DDL.
fn ddl_name(statement: &Statement) -> Option<&'static str> {
    Some(match statement {
        Statement::CreateMaterializedView { .. } => "CREATE MATERIALIZED VIEW",
        Statement::CreateSource(_) => "CREATE SOURCE",
        Statement::CreateSink(_) => "CREATE SINK",
        Statement::DropSourceOrSink { .. } => "DROP",
        Statement::Role(weir_sql::parser::RoleStatement::Create { .. }) => "CREATE ROLE",
        Statement::Role(weir_sql::parser::RoleStatement::Alter { .. }) => "ALTER ROLE",
        Statement::Role(weir_sql::parser::RoleStatement::Drop { .. }) => "DROP ROLE",
        Statement::Sql(s) => match s.as_ref() {
            SqlStatement::CreateTable(_) => "CREATE TABLE",
            SqlStatement::CreateView(_) => "CREATE VIEW",
            SqlStatement::Drop { .. } => "DROP",
            _ => return None,
        },
        _ => return None,
    })
}

fn user_error_permission() -> ServerError {
    user(
        SqlState("42501"),
        "permission denied: only a superuser can create, alter or drop users",
    )
}

fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}
