//! The Postgres wire protocol, via `pgwire`: simple and extended query
//! handlers that parse with `weir-sql`, execute on the [`Engine`] and encode
//! Arrow results with `arrow-pg` (text or binary, as the client asks).

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{stream, Sink, SinkExt};
use std::collections::HashMap;

use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::sasl::{SASLState, SCRAM_SHA_256_METHOD};
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
    ServerParameterProvider, StartupHandler,
};
use pgwire::api::cancel::CancelHandler;
use pgwire::messages::startup::{Authentication, PasswordMessageFamily};

use crate::users::ScramSource;
use crate::AuthMethod;
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::send_describe_response;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::CopyResponse;
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::Entry;
use pgwire::api::store::PortalStore;
use pgwire::api::DEFAULT_NAME;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type};
use pgwire::api::{PidSecretKeyGenerator, RandomPidSecretKeyGenerator, METADATA_USER};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::data::{NoData, ParameterDescription};
use pgwire::messages::extendedquery::{Describe, TARGET_TYPE_BYTE_STATEMENT};
use pgwire::messages::startup::ParameterStatus;
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::PgWireFrontendMessage;
use weir_common::arrow::datatypes::{DataType, SchemaRef};
use weir_common::Error;
use weir_sql::parser::{parse, Statement};

use crate::engine::{Engine, QueryResult};
use crate::params;
use crate::session::Session;

/// All of Weir's pgwire handlers.
#[derive(Clone)]
pub struct WeirHandlers {
    handler: Arc<WeirHandler>,
    /// This connection is over `--max-connections`: refuse it at startup.
    refuse: bool,
    /// Refuse connections without TLS.
    require_tls: bool,
}

impl WeirHandlers {
    /// Handlers executing on `engine`; with `require_tls`, clients that do
    /// not use TLS are refused.
    pub fn new(engine: Arc<Engine>, require_tls: bool) -> Self {
        WeirHandlers {
            handler: Arc::new(WeirHandler {
                engine,
                parser: Arc::new(WeirQueryParser),
                keys: RandomPidSecretKeyGenerator::default(),
                sessions: Arc::new(SessionRegistry::default()),
            }),
            refuse: false,
            require_tls,
        }
    }

    /// The handlers for one connection; `refuse` when it is one too many.
    pub fn for_connection(&self, refuse: bool) -> Self {
        WeirHandlers {
            handler: Arc::clone(&self.handler),
            refuse,
            require_tls: self.require_tls,
        }
    }
}

/// The startup handler: Weir's, or one refusing a connection past
/// `--max-connections` with Postgres's FATAL 53300.
pub struct Startup {
    handler: Arc<WeirHandler>,
    refuse: bool,
    require_tls: bool,
    /// The SCRAM exchange of this connection, when authentication is on.
    scram: Option<(ScramAuth, tokio::sync::Mutex<SASLState>)>,
    /// The salt of this connection's MD5 challenge (`--auth md5`).
    md5_salt: [u8; 4],
}

/// A FATAL error ending the connection at startup.
fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        code.to_string(),
        message,
    )))
}

/// Postgres's FATAL 28P01.
fn auth_failed(user: &str) -> PgWireError {
    fatal(
        "28P01",
        format!("password authentication failed for user \"{user}\""),
    )
}

impl Startup {
    /// The user the client logs in as.
    fn user<C: ClientInfo>(client: &C) -> String {
        client
            .metadata()
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_default()
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if self.refuse {
            return Err(fatal("53300", "sorry, too many clients already".into()));
        }
        if self.require_tls && !client.is_secure() {
            return Err(fatal(
                "28000",
                "this server requires TLS: connect with sslmode=require".into(),
            ));
        }
        let method = self.handler.engine.auth_method();
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if method == AuthMethod::Trust {
                    return self.handler.finish_startup(client).await;
                }
                client.set_state(pgwire::api::PgWireConnectionState::AuthenticationInProgress);
                let request = match method {
                    AuthMethod::Password => Authentication::CleartextPassword,
                    AuthMethod::Md5 => Authentication::MD5Password(self.md5_salt.to_vec()),
                    _ => Authentication::SASL(vec![SCRAM_SHA_256_METHOD.to_string()]),
                };
                client
                    .send(PgWireBackendMessage::Authentication(request))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(msg) => {
                let user = Startup::user(client);
                if matches!(method, AuthMethod::Password | AuthMethod::Md5) {
                    let offered = msg.into_password()?;
                    let ok = self
                        .handler
                        .engine
                        .users()
                        .get(&user)
                        .filter(|u| u.login)
                        .and_then(|u| u.password)
                        .is_some_and(|v| match method {
                            AuthMethod::Md5 => {
                                v.md5_response(&self.md5_salt).as_deref()
                                    == Some(offered.password.as_str())
                            }
                            _ => v.matches(&offered.password),
                        });
                    if !ok {
                        return Err(auth_failed(&user));
                    }
                    return self.handler.finish_startup(client).await;
                }
                let Some((scram, state)) = &self.scram else {
                    return Err(PgWireError::InvalidSASLState);
                };
                let mut state = state.lock().await;
                let msg = if let SASLState::Initial = *state {
                    let initial = msg.into_sasl_initial_response()?;
                    if initial.auth_method != SCRAM_SHA_256_METHOD {
                        return Err(PgWireError::UnsupportedSASLAuthMethod(initial.auth_method));
                    }
                    *state = SASLState::ScramClientFirstReceived;
                    PasswordMessageFamily::SASLInitialResponse(initial)
                } else {
                    PasswordMessageFamily::SASLResponse(msg.into_sasl_response()?)
                };
                let (response, next) = scram
                    .process_scram_message(client, msg, &state)
                    .await
                    .map_err(|e| match e {
                        PgWireError::InvalidPassword(_) => auth_failed(&user),
                        other => other,
                    })?;
                client
                    .send(PgWireBackendMessage::Authentication(response))
                    .await?;
                *state = next;
                if matches!(*state, SASLState::Finished) {
                    drop(state);
                    return self.handler.finish_startup(client).await;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Open sessions by their BackendKeyData, for CancelRequest.
#[derive(Default)]
pub struct SessionRegistry {
    sessions: parking_lot::Mutex<HashMap<(i32, Bytes), std::sync::Weak<Session>>>,
}

impl SessionRegistry {
    fn register(&self, pid: i32, secret: Bytes, session: &Arc<Session>) {
        let mut sessions = self.sessions.lock();
        sessions.retain(|_, s| s.strong_count() > 0);
        sessions.insert((pid, secret), Arc::downgrade(session));
    }

    /// Cancel what the session with this key is running, if any. A wrong
    /// key does nothing (and says nothing), as in Postgres.
    fn cancel(&self, pid: i32, secret: Bytes) {
        let session = self
            .sessions
            .lock()
            .get(&(pid, secret))
            .and_then(|s| s.upgrade());
        if let Some(s) = session {
            s.cancel();
        }
    }
}

#[async_trait]
impl CancelHandler for SessionRegistry {
    async fn on_cancel_request(&self, request: CancelRequest) {
        self.cancel(request.pid, request.secret_key.to_bytes());
    }
}

impl PgWireServerHandlers for WeirHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.handler)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.handler)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        let scram = (self.handler.engine.auth_method() == AuthMethod::ScramSha256).then(|| {
            let mut auth = ScramAuth::new(Arc::new(ScramSource(self.handler.engine.users())));
            auth.set_iterations(crate::users::SCRAM_ITERATIONS);
            (auth, tokio::sync::Mutex::new(SASLState::Initial))
        });
        Arc::new(Startup {
            handler: Arc::clone(&self.handler),
            refuse: self.refuse,
            require_tls: self.require_tls,
            scram,
            md5_salt: rand::random(),
        })
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        Arc::clone(&self.handler)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.handler.sessions)
    }
}

/// Executes queries for one server (shared by all connections).
pub struct WeirHandler {
    engine: Arc<Engine>,
    parser: Arc<WeirQueryParser>,
    /// Process ids and secret keys for BackendKeyData.
    keys: RandomPidSecretKeyGenerator,
    sessions: Arc<SessionRegistry>,
}

/// What Weir reports at startup: every reported parameter
/// ([`weir_common::pg::reported_settings`]) as the session has it, after
/// the client's startup parameters and `options` were applied.
struct WeirParameters(Vec<(&'static str, String)>);

impl ServerParameterProvider for WeirParameters {
    fn server_parameters<C>(&self, _client: &C) -> Option<HashMap<String, String>>
    where
        C: ClientInfo,
    {
        Some(
            self.0
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }
}

/// Apply the startup packet's parameters to `session`: known settings
/// (`DateStyle`, `TimeZone`, `extra_float_digits`, `application_name`,
/// ...), the user as `session_authorization`, and `options` (`-c
/// name=value`, `--name=value`). Parameters Weir does not know or cannot
/// honour are ignored, as the connection must still start.
fn apply_startup(session: &Session, metadata: &HashMap<String, String>) {
    for (k, v) in metadata {
        if weir_common::pg::setting(k).is_some() {
            let _ = session.set_startup(k, v);
        }
    }
    if let Some(user) = metadata.get(METADATA_USER) {
        let _ = session.set_startup("session_authorization", user);
    }
    if let Some(options) = metadata.get("options") {
        for (k, v) in parse_options(options) {
            let _ = session.set_startup(&k, &v);
        }
    }
    session.take_changed();
}

/// The `name=value` pairs of a startup `options` string: `-c name=value`,
/// `-cname=value` or `--name=value`, separated by spaces (`\ ` escapes a
/// space), as libpq sends them (`PGOPTIONS`).
pub fn parse_options(options: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut pairs = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let assignment = if w == "-c" {
            it.next()
        } else if let Some(rest) = w.strip_prefix("-c") {
            Some(rest.to_string())
        } else {
            w.strip_prefix("--").map(str::to_string)
        };
        if let Some((k, v)) = assignment.as_deref().and_then(|a| a.split_once('=')) {
            pairs.push((k.replace('-', "_"), v.to_string()));
        }
    }
    pairs
}

impl WeirHandler {
    /// The connection is authenticated: give it a session (settings from
    /// the startup packet, a cancel key) and tell the client.
    async fn finish_startup<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (pid, secret) = self.keys.generate(client);
        let session = session(client);
        self.sessions.register(pid, secret.to_bytes(), &session);
        client.set_pid_and_secret_key(pid, secret);
        session.set_pid(pid);
        apply_startup(&session, client.metadata());
        // A role created NOSUPERUSER is told so; anyone else is a superuser
        // (with trust authentication any name connects, with every right).
        let superuser = client
            .metadata()
            .get(METADATA_USER)
            .and_then(|u| self.engine.users().get(u))
            .is_none_or(|u| u.superuser);
        session.set_preset("is_superuser", if superuser { "on" } else { "off" });
        finish_authentication(client, &WeirParameters(session.reported())).await
    }
}

/// The connection's session state.
fn session<C: ClientInfo>(client: &C) -> Arc<Session> {
    client
        .session_extensions()
        .get_or_insert_with(Session::default)
}

/// COPY data beyond this is refused (54000): a COPY is one statement, held
/// in memory until it completes.
const MAX_COPY_BYTES: usize = 1 << 30;

#[async_trait]
impl CopyHandler for WeirHandler {
    async fn on_copy_data<C>(&self, client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session(client);
        let mut copy = session.copy.lock();
        if let Some(c) = copy.as_mut() {
            if c.data.len() + copy_data.data.len() > MAX_COPY_BYTES {
                *copy = None;
                return Err(pg_error(Error::new(
                    weir_common::SqlState::PROGRAM_LIMIT_EXCEEDED,
                    "COPY data exceeds 1 GiB; split it into several COPY statements",
                )));
            }
            c.data.extend_from_slice(&copy_data.data);
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session(client);
        let pending = session.copy.lock().take();
        let Some(pending) = pending else {
            return Err(pg_error(Error::new(
                weir_common::SqlState::PROTOCOL_VIOLATION,
                "CopyDone without COPY FROM STDIN",
            )));
        };
        let result = self.engine.copy_in(pending, &session).await;
        if result.is_err() {
            session.fail();
        }
        let rows = match result.map_err(|e| pg_error(e.into()))? {
            QueryResult::Command { rows, .. } => rows.unwrap_or(0),
            _ => 0,
        };
        client
            .send(PgWireBackendMessage::CommandComplete(
                Tag::new("COPY").with_rows(rows).into(),
            ))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session(client);
        *session.copy.lock() = None;
        session.fail();
        pg_error(Error::new(
            weir_common::SqlState::QUERY_CANCELED,
            format!("COPY from stdin failed: {}", fail.message),
        ))
    }
}

/// Send a `ParameterStatus` for each reported parameter the session
/// changed, as Postgres does after SET.
async fn report_changes<C>(client: &mut C, session: &Session) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    for (name, value) in session.take_changed() {
        client
            .feed(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                name.to_string(),
                value,
            )))
            .await?;
    }
    Ok(())
}

/// Convert a Weir error into a Postgres ErrorResponse.
pub fn error_info(e: &Error) -> ErrorInfo {
    let mut info = ErrorInfo::new(
        "ERROR".to_string(),
        e.code.code().to_string(),
        e.message.clone(),
    );
    info.position = e.position.map(|p| p.to_string());
    info.severity_nonlocalized = Some("ERROR".to_string());
    info
}

/// Point an error about an unknown relation or column at its name in
/// `sql`, as Postgres does (the `P` field), when the planner gave no
/// position.
fn locate(mut e: Error, sql: &str) -> Error {
    if e.position.is_some() {
        return e;
    }
    let name = ["relation \"", "column \""]
        .iter()
        .find_map(|p| e.message.strip_prefix(p))
        .and_then(|rest| rest.split_once("\" does not exist"))
        .map(|(n, _)| n.rsplit('.').next().unwrap_or(n).to_ascii_lowercase());
    if let Some(name) = name.filter(|n| !n.is_empty()) {
        let lower = sql.to_ascii_lowercase();
        let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '"';
        let found = lower.match_indices(&name).find(|(i, _)| {
            let before = lower[..*i].chars().next_back();
            let after = lower[i + name.len()..].chars().next();
            !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
        });
        if let Some((i, _)) = found {
            e.position = Some(sql[..i].chars().count() + 1);
        }
    }
    e
}

fn pg_error(e: Error) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(&e)))
}

fn fields(schema: &SchemaRef, format: &Format) -> PgWireResult<Vec<FieldInfo>> {
    let mut fields = arrow_pg::datatypes::arrow_schema_to_pg_fields(schema, format, None)?;
    // Declared `varchar(n)` / `char(n)` columns are Utf8 in Arrow: describe
    // them as their declared type, with the length as the type modifier.
    // Columns read straight from a relation name it (table OID, column
    // number), as Postgres does.
    for (info, field) in fields.iter_mut().zip(schema.fields()) {
        let declared = weir_common::char_type::CharType::of(field);
        let origin = weir_common::pg::origin::of(field);
        if declared.is_none() && origin.is_none() {
            continue;
        }
        let datatype = match declared {
            Some(weir_common::char_type::CharType::Varchar(_)) => Type::VARCHAR,
            Some(weir_common::char_type::CharType::Char(_)) => Type::BPCHAR,
            Some(weir_common::char_type::CharType::Uuid) => Type::UUID,
            None => info.datatype().clone(),
        };
        *info = FieldInfo::new(
            info.name().to_string(),
            origin.map(|o| o.0).or(info.table_id()),
            origin.map(|o| o.1).or(info.column_id()),
            datatype,
            info.format(),
        )
        .with_type_modifier(declared.map_or(info.type_modifier(), |t| t.typmod()));
    }
    Ok(fields)
}

/// How a statement moves the connection's transaction status: `Some(true)`
/// opens a block (BEGIN), `Some(false)` closes it (COMMIT, ROLLBACK).
fn transaction_effect(statement: &Statement) -> Option<bool> {
    use weir_common::datafusion::sql::sqlparser::ast::Statement as Sql;
    match statement {
        Statement::Sql(s) => match s.as_ref() {
            Sql::StartTransaction { .. } => Some(true),
            Sql::Commit { .. }
            | Sql::Rollback {
                savepoint: None, ..
            } => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// The wire response to `statement`'s `result`.
fn response(
    statement: &Statement,
    result: QueryResult,
    format: &Format,
    time_zone: Option<chrono_tz::Tz>,
) -> PgWireResult<Response> {
    if let QueryResult::Command { tag, .. } = &result {
        match transaction_effect(statement) {
            Some(true) => return Ok(Response::TransactionStart(Tag::new(tag))),
            Some(false) => return Ok(Response::TransactionEnd(Tag::new(tag))),
            None => {}
        }
    }
    match result {
        QueryResult::Command { tag, rows } => {
            let mut t = Tag::new(&tag);
            if tag == "INSERT" {
                t = t.with_oid(0);
            }
            if let Some(r) = rows {
                t = t.with_rows(r);
            }
            Ok(Response::Execution(t))
        }
        QueryResult::CopyIn(pending) => Ok(Response::CopyIn(CopyResponse::new(
            0,
            pending.columns.len(),
            stream::empty(),
        ))),
        QueryResult::CopyOut {
            format: copy,
            schema,
            batches,
        } => {
            let lines =
                crate::copy_format::batch_lines(&copy, &batches, time_zone).map_err(pg_error)?;
            let data: Vec<PgWireResult<CopyData>> = lines
                .into_iter()
                .map(|l| Ok(CopyData::new(Bytes::from(l))))
                .collect();
            Ok(Response::CopyOut(CopyResponse::new(
                0,
                schema.fields().len(),
                stream::iter(data),
            )))
        }
        QueryResult::Rows { schema, batches } => {
            let header = Arc::new(fields(&schema, format)?);
            let mut rows = Vec::new();
            for b in batches {
                let b = crate::text_format::postgres_text_columns(b, format, time_zone)
                    .and_then(|b| crate::text_format::binary_uuids(b, &header))
                    .map_err(|e| pg_error(e.into()))?;
                rows.extend(arrow_pg::datatypes::encode_recordbatch(
                    Arc::clone(&header),
                    b,
                ));
            }
            Ok(Response::Query(QueryResponse::new(
                header,
                stream::iter(rows),
            )))
        }
    }
}

/// Rows a streaming SUBSCRIBE sends per flush at most.
const SUBSCRIBE_BATCH_ROWS: usize = 1024;

impl WeirHandler {
    /// `SUBSCRIBE [TO] name` over the simple protocol: a RowDescription, then
    /// the snapshot and every change as DataRows, flushed as they come,
    /// until the client cancels (57014) or the relation goes away.
    async fn stream_subscribe<C>(
        &self,
        client: &mut C,
        target: &weir_sql::parser::SubscribeTarget,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session(client);
        client.set_state(pgwire::api::PgWireConnectionState::QueryInProgress);
        let streamed = async {
            if session.in_transaction() {
                return Err(pg_error(Error::new(
                    weir_common::SqlState::ACTIVE_SQL_TRANSACTION,
                    "SUBSCRIBE cannot run inside a transaction block; use DECLARE ... CURSOR FOR SUBSCRIBE there",
                )));
            }
            let sub = self
                .engine
                .subscribe(target, &session)
                .await
                .map_err(|e| pg_error(e.into()))?;
            let header = Arc::new(fields(&sub.schema, &Format::UnifiedText)?);
            client
                .send(PgWireBackendMessage::RowDescription(
                    pgwire::messages::data::RowDescription::new(
                        header.iter().map(Into::into).collect(),
                    ),
                ))
                .await?;
            let mut sent = 0usize;
            loop {
                let batch = sub
                    .take(
                        SUBSCRIBE_BATCH_ROWS,
                        Some(std::time::Duration::from_secs(1)),
                        &session,
                    )
                    .await
                    .map_err(|e| pg_error(e.into()))?;
                if let Some(b) = batch.filter(|b| b.num_rows() > 0) {
                    let b = crate::text_format::postgres_text_columns(
                        b,
                        &Format::UnifiedText,
                        session.time_zone(),
                    )
                    .map_err(|e| pg_error(e.into()))?;
                    for row in arrow_pg::datatypes::encode_recordbatch(Arc::clone(&header), b) {
                        client.feed(PgWireBackendMessage::DataRow(row?)).await?;
                        sent += 1;
                    }
                    client.flush().await?;
                } else if sub.ended() {
                    return Ok(sent);
                }
            }
        };
        let result = streamed.await;
        client.set_state(pgwire::api::PgWireConnectionState::ReadyForQuery);
        match result {
            Ok(rows) => {
                client
                    .send(PgWireBackendMessage::CommandComplete(
                        Tag::new("SUBSCRIBE").with_rows(rows).into(),
                    ))
                    .await?;
            }
            Err(PgWireError::UserError(info)) => {
                client
                    .send(PgWireBackendMessage::ErrorResponse((*info).into()))
                    .await?;
            }
            Err(e) => return Err(e),
        }
        client
            .send(PgWireBackendMessage::ReadyForQuery(
                pgwire::messages::response::ReadyForQuery::new(client.transaction_status()),
            ))
            .await?;
        Ok(())
    }
}

/// The name a `DEALLOCATE [PREPARE] name | ALL` statement drops.
fn deallocated(statement: &Statement) -> Option<String> {
    match statement {
        Statement::Sql(s) => match s.as_ref() {
            weir_common::datafusion::sql::sqlparser::ast::Statement::Deallocate {
                name, ..
            } => Some(name.value.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// `ROLLBACK TO SAVEPOINT` is what takes a failed transaction back to a
/// usable one, which pgwire's status tracking cannot express (it only
/// moves from error to idle): report "in transaction" from the start of
/// such a statement; if it fails, its error puts the status back.
fn leave_error_state_for<C: ClientInfo>(client: &mut C, statement: &Statement) {
    use pgwire::messages::response::TransactionStatus;
    let rollback_to = matches!(statement, Statement::Sql(s) if matches!(
        s.as_ref(),
        weir_common::datafusion::sql::sqlparser::ast::Statement::Rollback { savepoint: Some(_), .. }
    ));
    if rollback_to && client.transaction_status() == TransactionStatus::Error {
        client.set_transaction_status(TransactionStatus::Transaction);
    }
}

#[async_trait]
impl SimpleQueryHandler for WeirHandler {
    /// `SUBSCRIBE` streams (and flushes) rows itself; everything else goes
    /// through pgwire's simple-query handling and [`Self::do_query`].
    async fn on_query<C>(
        &self,
        client: &mut C,
        query: pgwire::messages::simplequery::Query,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Ok(statements) = parse(&query.query) {
            if let Some(first) = statements.first() {
                leave_error_state_for(client, first);
            }
            if let [Statement::Subscribe { target }] = statements.as_slice() {
                if matches!(
                    client.state(),
                    pgwire::api::PgWireConnectionState::ReadyForQuery
                ) {
                    return self.stream_subscribe(client, target).await;
                }
            }
        }
        self._on_query(client, query).await
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = match parse(query) {
            Ok(s) => s,
            Err(e) => {
                return Ok(vec![Response::Error(Box::new(error_info(&locate(
                    e.into(),
                    query,
                ))))])
            }
        };
        let session = session(client);
        let mut responses = Vec::with_capacity(statements.len());
        for s in &statements {
            let result = self.engine.execute(s, None, &session).await;
            report_changes(client, &session).await?;
            if let (Ok(_), Some(name)) = (&result, deallocated(s)) {
                // DEALLOCATE ALL keeps them: pgwire's store cannot list its
                // statements (clients name new ones afresh; they go with
                // the connection).
                if !name.eq_ignore_ascii_case("all") {
                    client.portal_store().rm_statement(&name);
                }
            }
            if let Ok(QueryResult::CopyIn(pending)) = &result {
                *session.copy.lock() = Some(pending.clone());
            }
            match result {
                Ok(r) => responses.push(response(s, r, &Format::UnifiedText, session.time_zone())?),
                Err(e) => {
                    // Postgres stops at the first failing statement.
                    responses.push(Response::Error(Box::new(error_info(&locate(
                        e.into(),
                        query,
                    )))));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

/// A statement as stored between Parse and Execute.
#[derive(Debug, Clone)]
pub struct Prepared {
    statement: Statement,
    /// The SQL text, for error positions.
    sql: String,
}

/// Parses statements for the extended protocol.
#[derive(Debug)]
pub struct WeirQueryParser;

#[async_trait]
impl QueryParser for WeirQueryParser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut statements = parse(sql).map_err(|e| pg_error(e.into()))?;
        match statements.len() {
            0 => Ok(None),
            1 => Ok(statements.pop().map(|statement| Prepared {
                statement,
                sql: sql.to_string(),
            })),
            _ => Err(pg_error(Error::new(
                weir_common::SqlState::SYNTAX_ERROR,
                "cannot insert multiple commands into a prepared statement",
            ))),
        }
    }

    fn get_parameter_types(&self, _stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(vec![])
    }

    fn get_result_schema(
        &self,
        _stmt: &Prepared,
        _format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(vec![])
    }
}

fn pg_type(t: &Option<DataType>) -> Type {
    crate::params::pg_type(t.as_ref())
}

#[async_trait]
impl ExtendedQueryHandler for WeirHandler {
    type Statement = Prepared;
    type QueryParser = WeirQueryParser;

    async fn on_execute<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::extendedquery::Execute,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let statement = match client.portal_store().get_portal(name) {
            Some(pgwire::api::store::Entry::Value(portal)) => {
                Some(portal.statement.statement.statement.clone())
            }
            _ => None,
        };
        if let Some(statement) = statement {
            leave_error_state_for(client, &statement);
        }
        self._on_execute(client, message).await
    }

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    /// pgwire answers Describe of a statement with parameters but no
    /// result columns (`INSERT ... VALUES ($1)`) with an empty
    /// RowDescription; Postgres sends NoData, and pgJDBC's batches count
    /// rows from it. Such statements are answered here.
    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if message.target_type == TARGET_TYPE_BYTE_STATEMENT {
            let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
            if let Some(Entry::Value(stmt)) = client.portal_store().get_statement(name) {
                let described = self.do_describe_statement(client, &stmt).await?;
                if described.fields.is_empty() {
                    let oids = described.parameters.iter().map(|t| t.oid()).collect();
                    client
                        .send(PgWireBackendMessage::ParameterDescription(
                            ParameterDescription::new(oids),
                        ))
                        .await?;
                    client
                        .send(PgWireBackendMessage::NoData(NoData::new()))
                        .await?;
                    return Ok(());
                }
                return send_describe_response(client, &described).await;
            }
        }
        self._on_describe(client, message).await
    }

    async fn do_describe_statement<C>(
        &self,
        client: &mut C,
        target: &StoredStatement<Prepared>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (inferred, schema) = self
            .engine
            .describe(&target.statement.statement, &session(client))
            .await
            .map_err(|e| pg_error(locate(e.into(), &target.statement.sql)))?;
        let count = inferred.len().max(target.parameter_types.len());
        let params = (0..count)
            .map(|i| match target.parameter_types.get(i).cloned().flatten() {
                Some(t) if t != Type::UNKNOWN => t,
                _ => pg_type(&inferred.get(i).cloned().flatten()),
            })
            .collect();
        let fields = match schema {
            Some(s) => fields(&s, &Format::UnifiedBinary)?,
            None => vec![],
        };
        Ok(DescribeStatementResponse::new(params, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        target: &Portal<Prepared>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (_, schema) = self
            .engine
            .describe(&target.statement.statement.statement, &session(client))
            .await
            .map_err(|e| pg_error(locate(e.into(), &target.statement.statement.sql)))?;
        let fields = match schema {
            Some(s) => fields(&s, &target.result_column_format)?,
            None => vec![],
        };
        Ok(DescribePortalResponse::new(fields))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statement = &portal.statement.statement.statement;
        let params = if portal.parameter_len() > 0 {
            let (inferred, _) = self
                .engine
                .describe(statement, &session(client))
                .await
                .map_err(|e| pg_error(e.into()))?;
            Some(params::decode(portal, &inferred).map_err(pg_error)?)
        } else {
            None
        };
        let session = session(client);
        let result = self.engine.execute(statement, params, &session).await;
        report_changes(client, &session).await?;
        let sql = &portal.statement.statement.sql;
        let result = result.map_err(|e| pg_error(locate(e.into(), sql)))?;
        if let QueryResult::CopyIn(pending) = &result {
            *session.copy.lock() = Some(pending.clone());
        }
        response(
            statement,
            result,
            &portal.result_column_format,
            session.time_zone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::parse_options;

    #[test]
    fn error_positions_point_at_the_name() {
        use weir_common::{Error, SqlState};
        let e = |m: &str| Error::new(SqlState::UNDEFINED_TABLE, m);
        let sql = "SELECT * FROM pg3_no_such_table";
        let located = super::locate(e("relation \"pg3_no_such_table\" does not exist"), sql);
        assert_eq!(located.position, Some(15));
        // Only a whole identifier counts.
        let sql = "SELECT tt FROM t";
        assert_eq!(
            super::locate(e("relation \"t\" does not exist"), sql).position,
            Some(16)
        );
        assert_eq!(super::locate(e("something else"), sql).position, None);
    }

    #[test]
    fn startup_options() {
        let pairs = |s: &str| -> Vec<(String, String)> { parse_options(s) };
        assert_eq!(
            pairs("-c extra_float_digits=3 -cDateStyle=ISO,\\ DMY --search-path=public x"),
            vec![
                ("extra_float_digits".into(), "3".into()),
                ("DateStyle".into(), "ISO, DMY".into()),
                ("search_path".into(), "public".into()),
            ]
        );
        assert!(pairs("").is_empty());
        assert!(pairs("-c").is_empty());
        assert!(pairs("-c novalue").is_empty());
    }
}
