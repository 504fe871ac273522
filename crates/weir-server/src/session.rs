//! One client connection's state: its open transaction, if any, and the
//! transaction characteristics it chose for the session.
//!
//! Transactions (what a user gets):
//! - Reads see one snapshot of every table and view, taken at the
//!   transaction's first statement at an epoch boundary (every view has
//!   committed the same epoch), so a transaction never sees one view ahead
//!   of another.
//! - Writes (INSERT / UPDATE / DELETE) are evaluated against that snapshot
//!   when issued, answer with their row count, and are kept in the session;
//!   COMMIT applies all of them in one write-ahead-log record and one epoch,
//!   or none. If another session committed a change to a table this
//!   transaction writes since its snapshot, COMMIT fails with 40001 (first
//!   committer wins, as in Postgres's REPEATABLE READ).
//! - A statement may not read a table this transaction has already changed,
//!   nor a view over one (0A000): the transaction's own changes are not
//!   visible before COMMIT, and Weir refuses rather than answer from stale
//!   rows.
//! - After an error, statements fail with 25P02 until ROLLBACK (or
//!   ROLLBACK TO a savepoint).

use std::collections::HashMap;

use parking_lot::Mutex;
use weir_state::SnapshotRef;

use crate::log_record::TableChange;

/// Per-connection state, shared by the connection's handlers.
#[derive(Default)]
pub struct Session {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    txn: Option<Transaction>,
    /// `SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY`.
    default_read_only: bool,
}

/// An open transaction block.
#[derive(Default)]
pub(crate) struct Transaction {
    pub read_only: bool,
    /// What the transaction reads, once its first statement ran.
    pub snapshot: Option<TxnSnapshot>,
    /// Changes to apply at COMMIT, at most one per table.
    pub writes: Vec<TableChange>,
    /// A statement failed: only ROLLBACK (TO) is accepted.
    pub failed: bool,
    /// Savepoints, oldest first, with the writes made before each.
    pub savepoints: Vec<(String, Vec<TableChange>)>,
}

/// A transaction's snapshot and each table's version when it was taken.
#[derive(Clone)]
pub(crate) struct TxnSnapshot {
    pub snapshot: SnapshotRef,
    pub versions: HashMap<String, u64>,
}

impl Session {
    /// Run `f` on the open transaction, if there is one.
    pub(crate) fn with_txn<T>(&self, f: impl FnOnce(&mut Transaction) -> T) -> Option<T> {
        self.inner.lock().txn.as_mut().map(f)
    }

    /// Whether a transaction block is open.
    pub fn in_transaction(&self) -> bool {
        self.inner.lock().txn.is_some()
    }

    /// Whether the open transaction has failed.
    pub fn failed(&self) -> bool {
        self.with_txn(|t| t.failed).unwrap_or(false)
    }

    /// Mark the open transaction failed (no-op outside one).
    pub fn fail(&self) {
        self.with_txn(|t| t.failed = true);
    }

    /// Open a transaction; `false` if one was already open.
    pub(crate) fn begin(&self, read_only: Option<bool>) -> bool {
        let mut inner = self.inner.lock();
        if inner.txn.is_some() {
            return false;
        }
        inner.txn = Some(Transaction {
            read_only: read_only.unwrap_or(inner.default_read_only),
            ..Transaction::default()
        });
        true
    }

    /// Close the transaction, returning it.
    pub(crate) fn end(&self) -> Option<Transaction> {
        self.inner.lock().txn.take()
    }

    /// Set the default access mode of later transactions.
    pub(crate) fn set_default_read_only(&self, read_only: bool) {
        self.inner.lock().default_read_only = read_only;
    }

    /// `DISCARD ALL`: forget session state.
    pub(crate) fn reset(&self) {
        *self.inner.lock() = Inner::default();
    }
}

impl Transaction {
    /// Tables this transaction has changed.
    pub fn written(&self) -> impl Iterator<Item = &str> {
        self.writes.iter().map(|c| c.table.as_str())
    }
}
