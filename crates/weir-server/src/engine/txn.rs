//! Transaction blocks: BEGIN / COMMIT / ROLLBACK, savepoints, snapshots
//! and deferred writes (semantics in [`crate::session`]).

use std::collections::{HashMap, HashSet};

use weir_common::arrow::compute::concat_batches;
use weir_common::datafusion::common::tree_node::TreeNodeRecursion;
use weir_common::datafusion::sql::sqlparser::ast::{
    DiscardObject, Set, TransactionAccessMode, TransactionMode,
};

use super::*;
use crate::log_record::TableChange;
use crate::session::{Savepoint, Session, TxnSnapshot};

/// What a statement inside a transaction reads: the transaction's
/// snapshot, and the relations it must not read (tables it changed and
/// views over them).
pub(super) struct TxnRead {
    pub snapshot: SnapshotRef,
    pub tainted: HashSet<String>,
}

fn txn_error(code: SqlState, message: impl Into<String>) -> Result<QueryResult> {
    Err(user(code, message))
}

fn read_only_mode(modes: &[TransactionMode]) -> Option<bool> {
    modes.iter().rev().find_map(|m| match m {
        TransactionMode::AccessMode(TransactionAccessMode::ReadOnly) => Some(true),
        TransactionMode::AccessMode(TransactionAccessMode::ReadWrite) => Some(false),
        TransactionMode::IsolationLevel(_) => None,
    })
}

impl Engine {
    /// Execute one parsed statement for `session`. `params` are the values
    /// of `$1`, `$2`, ... in extended-protocol execution.
    pub async fn execute(
        &self,
        statement: &Statement,
        params: Option<ParamValues>,
        session: &Session,
    ) -> Result<QueryResult> {
        if let Statement::Sql(s) = statement {
            if let Some(result) = self.transaction_control(s, session).await {
                return result;
            }
        }
        if session.failed() {
            return txn_error(
                SqlState::IN_FAILED_SQL_TRANSACTION,
                "current transaction is aborted, commands ignored until end of transaction block",
            );
        }
        let result = self.execute_in(statement, params, session).await;
        if result.is_err() {
            session.fail();
        }
        result
    }

    /// BEGIN, COMMIT, ROLLBACK, savepoints, SET TRANSACTION and DISCARD;
    /// `None` for any other statement.
    async fn transaction_control(
        &self,
        s: &SqlStatement,
        session: &Session,
    ) -> Option<Result<QueryResult>> {
        let failed = session.failed();
        let aborted = || {
            txn_error(
                SqlState::IN_FAILED_SQL_TRANSACTION,
                "current transaction is aborted, commands ignored until end of transaction block",
            )
        };
        Some(match s {
            SqlStatement::StartTransaction { modes, .. } => {
                if failed {
                    return Some(aborted());
                }
                // Postgres warns and stays in the open transaction.
                session.begin(read_only_mode(modes));
                Ok(QueryResult::command("BEGIN"))
            }
            SqlStatement::Commit { .. } => self.commit(session).await,
            SqlStatement::Rollback {
                savepoint: None, ..
            } => {
                session.rollback();
                Ok(QueryResult::command("ROLLBACK"))
            }
            SqlStatement::Rollback {
                savepoint: Some(name),
                ..
            } => Self::rollback_to(session, &name.value),
            SqlStatement::Savepoint { name } => {
                if failed {
                    return Some(aborted());
                }
                let settings = session.settings_snapshot();
                match session.with_txn(|t| {
                    let writes = t.writes.clone();
                    t.savepoints.push(Savepoint {
                        name: name.value.clone(),
                        writes,
                        settings,
                    });
                }) {
                    Some(()) => Ok(QueryResult::command("SAVEPOINT")),
                    None => txn_error(
                        SqlState::NO_ACTIVE_SQL_TRANSACTION,
                        "SAVEPOINT can only be used in transaction blocks",
                    ),
                }
            }
            SqlStatement::ReleaseSavepoint { name } => {
                if failed {
                    return Some(aborted());
                }
                match session.with_txn(|t| {
                    let at = t.savepoints.iter().rposition(|p| p.name == name.value)?;
                    t.savepoints.truncate(at);
                    Some(())
                }) {
                    Some(Some(())) => Ok(QueryResult::command("RELEASE")),
                    Some(None) => no_savepoint(&name.value),
                    None => txn_error(
                        SqlState::NO_ACTIVE_SQL_TRANSACTION,
                        "RELEASE SAVEPOINT can only be used in transaction blocks",
                    ),
                }
            }
            SqlStatement::Set(Set::SetTransaction {
                modes,
                session: all,
                ..
            }) => {
                if failed {
                    return Some(aborted());
                }
                let read_only = read_only_mode(modes);
                if *all {
                    if let Some(r) = read_only {
                        let value = if r { "on" } else { "off" };
                        if let Err(e) = session.set("default_transaction_read_only", Some(value)) {
                            return Some(Err(e.into()));
                        }
                    }
                } else if let Some(r) = read_only {
                    let set = session.with_txn(|t| {
                        if !r && t.read_only && t.snapshot.is_some() {
                            return false;
                        }
                        t.read_only = r;
                        true
                    });
                    if set == Some(false) {
                        return Some(txn_error(
                            SqlState::ACTIVE_SQL_TRANSACTION,
                            "transaction read-write mode must be set before any query",
                        ));
                    }
                }
                Ok(QueryResult::command("SET"))
            }
            SqlStatement::Discard { object_type } => {
                if session.in_transaction() {
                    return Some(txn_error(
                        SqlState::ACTIVE_SQL_TRANSACTION,
                        format!("DISCARD {object_type} cannot run inside a transaction block"),
                    ));
                }
                if matches!(object_type, DiscardObject::ALL) {
                    session.reset();
                }
                Ok(QueryResult::command(&format!("DISCARD {object_type}")))
            }
            // Prepared statements live in the wire layer's store, which
            // removes a named one; this answers the statement.
            SqlStatement::Deallocate { .. } => {
                if failed {
                    return Some(aborted());
                }
                Ok(QueryResult::command("DEALLOCATE"))
            }
            _ => return None,
        })
    }

    /// ROLLBACK TO SAVEPOINT: drop the writes made since, keep the savepoint.
    fn rollback_to(session: &Session, name: &str) -> Result<QueryResult> {
        match session.with_txn(|t| {
            let at = t.savepoints.iter().rposition(|p| p.name == name)?;
            t.savepoints.truncate(at + 1);
            t.writes = t.savepoints[at].writes.clone();
            t.failed = false;
            Some(t.savepoints[at].settings.clone())
        }) {
            Some(Some(settings)) => {
                session.restore_settings(settings);
                Ok(QueryResult::command("ROLLBACK"))
            }
            Some(None) => {
                session.fail();
                no_savepoint(name)
            }
            None => txn_error(
                SqlState::NO_ACTIVE_SQL_TRANSACTION,
                "ROLLBACK TO SAVEPOINT can only be used in transaction blocks",
            ),
        }
    }

    /// COMMIT: apply the transaction's writes, all or nothing. A failed
    /// transaction rolls back (tag ROLLBACK, as in Postgres). If applying
    /// fails, the transaction stays open and failed, so the client's
    /// ROLLBACK ends it.
    async fn commit(&self, session: &Session) -> Result<QueryResult> {
        if session.failed() {
            session.rollback();
            return Ok(QueryResult::command("ROLLBACK"));
        }
        let Some(txn) = session.end() else {
            return Ok(QueryResult::command("COMMIT"));
        };
        if txn.writes.is_empty() {
            return Ok(QueryResult::command("COMMIT"));
        }
        let guard = self.write_lock.lock().await;
        let versions = txn
            .snapshot
            .as_ref()
            .map(|s| &s.versions)
            .cloned()
            .unwrap_or_default();
        for c in &txn.writes {
            let now = self.table_version(&c.table);
            if now.is_none() || now != versions.get(&c.table).copied() {
                drop(guard);
                session.begin(None);
                session.fail();
                return txn_error(
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    format!(
                        "could not serialize access due to concurrent update of \"{}\"",
                        c.table
                    ),
                );
            }
        }
        match self.commit_changes(guard, &txn.writes).await {
            Ok(()) => Ok(QueryResult::command("COMMIT")),
            Err(e) => {
                session.begin(None);
                session.fail();
                Err(e)
            }
        }
    }

    /// The commit count of table `name`, if it is a table.
    fn table_version(&self, name: &str) -> Option<u64> {
        let relation = self.catalog.read().get(name)?;
        match &relation.kind {
            RelationKind::Table { store, .. } => Some(store.lock().version()),
            _ => None,
        }
    }

    /// A snapshot of every table and view at an epoch boundary, with each
    /// table's version: taken under the write lock once every view has
    /// committed the last closed epoch.
    async fn consistent_snapshot(&self) -> TxnSnapshot {
        self.at_epoch_boundary(|_| {
            let versions = self
                .catalog
                .read()
                .all()
                .filter_map(|r| match &r.kind {
                    RelationKind::Table { store, .. } => {
                        Some((r.name.clone(), store.lock().version()))
                    }
                    _ => None,
                })
                .collect::<HashMap<_, _>>();
            TxnSnapshot {
                snapshot: Arc::clone(&self.store).snapshot(),
                versions,
            }
        })
        .await
    }

    /// Whether DDL (`what`) may run in the session's transaction block, if
    /// one is open. DDL is not transactional in Weir: inside a block that
    /// has not written anything it runs at once, as it would outside (a
    /// later ROLLBACK does not undo it), and the block's snapshot ends, so
    /// its next read sees the new object. Drivers that open a block before
    /// every statement (psycopg2, psqlODBC, SQLAlchemy without autocommit)
    /// can so create tables and views. After writes it is refused: they
    /// would commit after the DDL, out of order.
    pub(super) fn ddl_in_transaction(what: &str, session: &Session) -> Result<()> {
        let refusal = session.with_txn(|t| {
            if t.read_only {
                Some(user(
                    SqlState::READ_ONLY_SQL_TRANSACTION,
                    format!("cannot execute {what} in a read-only transaction"),
                ))
            } else if t.writes.is_empty() {
                t.snapshot = None;
                None
            } else {
                Some(user(
                    SqlState::ACTIVE_SQL_TRANSACTION,
                    format!(
                        "{what} cannot run inside a transaction block that has uncommitted writes"
                    ),
                ))
            }
        });
        match refusal.flatten() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Inside a transaction, what the next statement reads (taking the
    /// transaction's snapshot at its first statement); `None` outside one.
    pub(super) async fn txn_read(&self, session: &Session) -> Option<TxnRead> {
        let existing = session.with_txn(|t| t.snapshot.clone())?;
        let snapshot = match existing {
            Some(s) => s,
            None => {
                let s = self.consistent_snapshot().await;
                session.with_txn(|t| t.snapshot.get_or_insert(s).clone())?
            }
        };
        let written: Vec<String> = session
            .with_txn(|t| t.written().map(str::to_string).collect())
            .unwrap_or_default();
        let mut tainted: HashSet<String> = HashSet::new();
        let catalog = self.catalog.read();
        let mut todo = written;
        while let Some(name) = todo.pop() {
            if tainted.insert(name.clone()) {
                todo.extend(catalog.dependents(&name));
            }
        }
        Some(TxnRead {
            snapshot: snapshot.snapshot,
            tainted,
        })
    }

    /// An INSERT, UPDATE or DELETE inside a transaction: evaluate it now,
    /// keep its change for COMMIT.
    pub(super) async fn dml_in_transaction(
        &self,
        s: &SqlStatement,
        params: Option<ParamValues>,
        session: &Session,
        txn: &TxnRead,
    ) -> Result<QueryResult> {
        if session.with_txn(|t| t.read_only).unwrap_or(false) {
            let what = match s {
                SqlStatement::Insert(_) => "INSERT",
                SqlStatement::Update(_) => "UPDATE",
                _ => "DELETE",
            };
            return txn_error(
                SqlState::READ_ONLY_SQL_TRANSACTION,
                format!("cannot execute {what} in a read-only transaction"),
            );
        }
        let (change, result) = self.dml_change(s, params, Some(txn)).await?;
        if let Some(change) = change {
            self.queue_in_transaction(change, session)?;
        }
        Ok(result)
    }

    /// Keep `change` for the open transaction's COMMIT, after checking its
    /// constraints with the transaction's earlier change to the table.
    pub(super) fn queue_in_transaction(
        &self,
        change: TableChange,
        session: &Session,
    ) -> Result<()> {
        let earlier = session
            .with_txn(|t| t.writes.iter().find(|c| c.table == change.table).cloned())
            .flatten();
        self.check_constraints(earlier.as_ref(), &change)?;
        session
            .with_txn(|t| merge_change(&mut t.writes, change))
            .transpose()?;
        Ok(())
    }
}

impl Engine {
    /// Report a constraint `change` breaks (after the transaction's
    /// `earlier` change to the same table) now, as Postgres does, rather
    /// than at COMMIT: stage both on the table, then discard them.
    fn check_constraints(&self, earlier: Option<&TableChange>, change: &TableChange) -> Result<()> {
        let relation = self.relation(&change.table)?;
        let RelationKind::Table { store, .. } = &relation.kind else {
            return Ok(());
        };
        let mut store = store.lock();
        let staged = earlier
            .map_or(Ok(()), |e| {
                store.stage_changes(e.deletes.as_ref(), e.inserts.as_ref())
            })
            .and_then(|()| store.stage_changes(change.deletes.as_ref(), change.inserts.as_ref()));
        store.discard_staged();
        Ok(staged?)
    }
}

/// Refuse a plan that reads a relation the transaction must not read.
pub(super) fn check_reads(plan: &LogicalPlan, txn: &TxnRead) -> Result<()> {
    if txn.tainted.is_empty() {
        return Ok(());
    }
    let mut bad: Option<String> = None;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let name = scan.table_name.table();
            if txn.tainted.contains(name) {
                bad = Some(name.to_string());
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    match bad {
        Some(name) => Err(user(
            SqlState::FEATURE_NOT_SUPPORTED,
            format!(
                "\"{name}\" depends on changes this transaction has not committed; \
                 reading it before COMMIT is not supported"
            ),
        )),
        None => Ok(()),
    }
}

/// Add `change` to a transaction's writes: a table's later inserts join
/// its earlier change (a statement that reads a changed table is refused,
/// so only a table's first change can delete rows).
fn merge_change(writes: &mut Vec<TableChange>, change: TableChange) -> Result<()> {
    let Some(existing) = writes.iter_mut().find(|c| c.table == change.table) else {
        writes.push(change);
        return Ok(());
    };
    if change.deletes.is_some() {
        return Err(ServerError::Statement(Error::internal(format!(
            "a second change deleting rows of \"{}\" in one transaction",
            change.table
        ))));
    }
    existing.inserts = match (existing.inserts.take(), change.inserts) {
        (Some(a), Some(b)) => Some(
            concat_batches(&a.schema(), [&a, &b]).map_err(|e| ServerError::Statement(e.into()))?,
        ),
        (a, b) => a.or(b),
    };
    Ok(())
}

fn no_savepoint(name: &str) -> Result<QueryResult> {
    txn_error(
        SqlState::S_E_INVALID_SPECIFICATION,
        format!("savepoint \"{name}\" does not exist"),
    )
}
