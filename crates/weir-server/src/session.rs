//! One client connection's state: its settings (`SET`, startup
//! parameters) and its open transaction, if any.
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
//! - Settings are transactional, as in Postgres: ROLLBACK (and ROLLBACK
//!   TO a savepoint) undoes the SETs made since; `SET LOCAL` lasts until
//!   the transaction ends either way.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use weir_common::pg::{self, Context};
use weir_common::{Error, SqlState};
use weir_state::SnapshotRef;

use crate::log_record::TableChange;

/// Per-connection state, shared by the connection's handlers.
#[derive(Default)]
pub struct Session {
    inner: Mutex<Inner>,
    /// The COPY FROM STDIN in progress, collecting the client's data.
    pub(crate) copy: Mutex<Option<PendingCopy>>,
    /// The process id told to the client (BackendKeyData).
    pid: std::sync::atomic::AtomicI32,
    /// Signalled by a CancelRequest for this session.
    cancel: tokio::sync::Notify,
    /// Open SUBSCRIBE cursors, closed with their transaction.
    cursors: Mutex<HashMap<String, Arc<crate::engine::Subscription>>>,
}

impl Inner {
    /// Replace the settings, noting reported parameters whose value
    /// changes (their ParameterStatus goes to the client).
    fn restore_settings(&mut self, settings: HashMap<String, String>) {
        let names: std::collections::HashSet<String> = self
            .settings
            .keys()
            .chain(settings.keys())
            .cloned()
            .collect();
        for name in names {
            if self.settings.get(&name) != settings.get(&name) {
                if let Some(s) = pg::setting(&name).filter(|s| s.reported) {
                    self.changed.push(s.name);
                }
            }
        }
        self.settings = settings;
    }
}

#[derive(Default)]
struct Inner {
    txn: Option<Transaction>,
    /// Parameters this session set: lowercase name → value.
    settings: HashMap<String, String>,
    /// Values from the startup packet, which RESET returns to.
    startup: HashMap<String, String>,
    /// Reported parameters changed since [`Session::take_changed`].
    changed: Vec<&'static str>,
}

/// A `COPY t FROM STDIN` waiting for its data.
#[derive(Debug, Clone)]
pub struct PendingCopy {
    pub table: String,
    /// Target column of each field (the table's columns in order when the
    /// statement names none).
    pub columns: Vec<usize>,
    pub format: crate::copy_format::CopyFormat,
    pub data: Vec<u8>,
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
    /// Savepoints, oldest first, with the writes made and the settings
    /// in force before each.
    pub savepoints: Vec<Savepoint>,
    /// The session's settings when the transaction began.
    pub settings_at_begin: HashMap<String, String>,
    /// Parameters `SET LOCAL` changed, with their value before (`None`:
    /// unset), restored when the transaction ends.
    pub local: Vec<(String, Option<String>)>,
}

/// A savepoint: its name, and what ROLLBACK TO it returns to.
pub(crate) struct Savepoint {
    pub name: String,
    pub writes: Vec<TableChange>,
    pub settings: HashMap<String, String>,
}

/// A transaction's snapshot and each table's version when it was taken.
#[derive(Clone)]
pub(crate) struct TxnSnapshot {
    pub snapshot: SnapshotRef,
    pub versions: HashMap<String, u64>,
}

impl Session {
    /// Remember the process id the client was told.
    pub fn set_pid(&self, pid: i32) {
        self.pid.store(pid, std::sync::atomic::Ordering::Relaxed);
    }

    /// Cancel the statement running now (a CancelRequest); nothing if
    /// none runs.
    pub fn cancel(&self) {
        self.cancel.notify_waiters();
    }

    /// Resolves when the running statement is canceled.
    pub async fn cancelled(&self) {
        self.cancel.notified().await;
    }

    /// The zone TIMESTAMPTZ values are shown in (`TimeZone`); `None` for UTC.
    pub fn time_zone(&self) -> Option<chrono_tz::Tz> {
        let tz = time_zone_named(&self.get("TimeZone")?)?;
        (tz != chrono_tz::Tz::UTC).then_some(tz)
    }

    /// The session's `statement_timeout`, if one is set.
    pub fn statement_timeout(&self) -> Option<std::time::Duration> {
        self.get("statement_timeout")
            .and_then(|v| parse_ms(&v))
            .filter(|ms| *ms > 0)
            .map(std::time::Duration::from_millis)
    }

    /// The process id the client was told (`pg_backend_pid()`).
    pub fn pid(&self) -> i32 {
        self.pid.load(std::sync::atomic::Ordering::Relaxed)
    }

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
        let default_read_only = inner
            .settings
            .get("default_transaction_read_only")
            .is_some_and(|v| v == "on");
        let settings_at_begin = inner.settings.clone();
        inner.txn = Some(Transaction {
            read_only: read_only.unwrap_or(default_read_only),
            settings_at_begin,
            ..Transaction::default()
        });
        true
    }

    /// Close the transaction (and its cursors), returning it. Settings
    /// made with `SET LOCAL` go back to their values before it.
    pub(crate) fn end(&self) -> Option<Transaction> {
        self.cursors.lock().clear();
        let mut inner = self.inner.lock();
        let txn = inner.txn.take()?;
        let mut settings = inner.settings.clone();
        for (name, before) in txn.local.iter().rev() {
            match before {
                Some(v) => settings.insert(name.clone(), v.clone()),
                None => settings.remove(name),
            };
        }
        inner.restore_settings(settings);
        Some(txn)
    }

    /// Close the transaction, undoing every SET made in it.
    pub(crate) fn rollback(&self) -> Option<Transaction> {
        let txn = self.end()?;
        self.inner
            .lock()
            .restore_settings(txn.settings_at_begin.clone());
        Some(txn)
    }

    /// The settings now, for a savepoint.
    pub(crate) fn settings_snapshot(&self) -> HashMap<String, String> {
        self.inner.lock().settings.clone()
    }

    /// Return the settings to `settings` (ROLLBACK TO a savepoint).
    pub(crate) fn restore_settings(&self, settings: HashMap<String, String>) {
        self.inner.lock().restore_settings(settings);
    }

    /// `SET LOCAL`: set `name` for the rest of the open transaction (no
    /// effect outside one, as in Postgres).
    pub fn set_local(&self, name: &str, value: Option<&str>) -> Result<(), Error> {
        let lower = name.to_ascii_lowercase();
        let before = {
            let inner = self.inner.lock();
            if inner.txn.is_none() {
                return Ok(());
            }
            inner.settings.get(&lower).cloned()
        };
        self.set(name, value)?;
        self.with_txn(|t| {
            if !t.local.iter().any(|(n, _)| *n == lower) {
                t.local.push((lower, before));
            }
        });
        Ok(())
    }

    pub(crate) fn has_cursor(&self, name: &str) -> bool {
        self.cursors.lock().contains_key(name)
    }

    pub(crate) fn add_cursor(&self, name: &str, s: crate::engine::Subscription) {
        self.cursors.lock().insert(name.to_string(), Arc::new(s));
    }

    pub(crate) fn cursor(&self, name: &str) -> Option<Arc<crate::engine::Subscription>> {
        self.cursors.lock().get(name).cloned()
    }

    /// Close cursor `name` (`None`: all); whether it existed.
    pub(crate) fn close_cursor(&self, name: Option<&str>) -> bool {
        let mut cursors = self.cursors.lock();
        match name {
            Some(n) => cursors.remove(n).is_some(),
            None => {
                cursors.clear();
                true
            }
        }
    }

    /// `DISCARD ALL`: forget session state (settings back to their
    /// startup values).
    pub(crate) fn reset(&self) {
        self.cursors.lock().clear();
        self.inner.lock().txn = None;
        self.reset_all();
    }

    /// Apply a parameter from the startup packet: RESET returns to it.
    pub fn set_startup(&self, name: &str, value: &str) -> Result<(), Error> {
        self.set(name, Some(value))?;
        let lower = name.to_ascii_lowercase();
        let mut inner = self.inner.lock();
        if let Some(v) = inner.settings.get(&lower).cloned() {
            inner.startup.insert(lower, v);
        }
        Ok(())
    }

    /// Set a parameter clients cannot change (`is_superuser`) for the
    /// session's life, as the server does at startup.
    pub fn set_preset(&self, name: &str, value: &str) {
        let lower = name.to_ascii_lowercase();
        let mut inner = self.inner.lock();
        inner.settings.insert(lower.clone(), value.to_string());
        inner.startup.insert(lower, value.to_string());
    }

    /// The value of parameter `name` in this session, `None` if Weir does
    /// not know it (and the session did not set it as a custom one).
    pub fn get(&self, name: &str) -> Option<String> {
        let lower = name.to_ascii_lowercase();
        if let Some(v) = self.inner.lock().settings.get(&lower) {
            return Some(v.clone());
        }
        pg::default_setting(name).map(str::to_string)
    }

    /// Set parameter `name` to `value` (checked and normalized), or back
    /// to its default when `value` is `None`. Errors as Postgres: 42704
    /// for an unknown name, 55P02 for a read-only one, 22023 for a bad
    /// value.
    pub fn set(&self, name: &str, value: Option<&str>) -> Result<(), Error> {
        let lower = name.to_ascii_lowercase();
        let known = pg::setting(&lower);
        match known {
            Some(s) if s.context == Context::Internal => {
                return Err(Error::new(
                    SqlState::CANT_CHANGE_RUNTIME_PARAM,
                    format!("parameter \"{}\" cannot be changed", s.name),
                ))
            }
            None if !lower.contains('.') => {
                return Err(Error::new(
                    SqlState::UNDEFINED_OBJECT,
                    format!("unrecognized configuration parameter \"{name}\""),
                ))
            }
            _ => {}
        }
        let mut inner = self.inner.lock();
        match value {
            Some(v) => {
                let v = normalize(&lower, v)?;
                inner.settings.insert(lower, v);
            }
            None => match inner.startup.get(&lower).cloned() {
                Some(v) => {
                    inner.settings.insert(lower, v);
                }
                None => {
                    inner.settings.remove(&lower);
                }
            },
        }
        if let Some(s) = known.filter(|s| s.reported) {
            inner.changed.push(s.name);
        }
        Ok(())
    }

    /// `RESET ALL`.
    pub fn reset_all(&self) {
        let names: Vec<String> = self.inner.lock().settings.keys().cloned().collect();
        for n in names {
            let _ = self.set(&n, None);
        }
    }

    /// Reported parameters changed since the last call, with their values
    /// now (the wire layer sends them as `ParameterStatus`).
    pub fn take_changed(&self) -> Vec<(&'static str, String)> {
        let mut changed = std::mem::take(&mut self.inner.lock().changed);
        changed.dedup();
        changed
            .into_iter()
            .map(|n| (n, self.get(n).unwrap_or_default()))
            .collect()
    }

    /// Every reported parameter with its value in this session.
    pub fn reported(&self) -> Vec<(&'static str, String)> {
        pg::reported_settings()
            .map(|s| (s.name, self.get(s.name).unwrap_or_default()))
            .collect()
    }

    /// Every known parameter with its value in this session, and whether
    /// the session set it.
    pub fn all(&self) -> Vec<(&'static pg::Setting, String, bool)> {
        let inner = self.inner.lock();
        pg::SETTINGS
            .iter()
            .map(|s| {
                let set = inner.settings.get(&s.name.to_ascii_lowercase());
                (
                    s,
                    set.cloned().unwrap_or_else(|| s.default.to_string()),
                    set.is_some(),
                )
            })
            .collect()
    }
}

fn bad_value(name: &str, value: &str, hint: &str) -> Error {
    Error::new(
        SqlState::INVALID_PARAMETER_VALUE,
        format!("invalid value for parameter \"{name}\": \"{value}\"{hint}"),
    )
}

fn boolean(name: &str, value: &str) -> Result<bool, Error> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" | "t" | "y" => Ok(true),
        "off" | "false" | "no" | "0" | "f" | "n" => Ok(false),
        _ => Err(bad_value(name, value, "")),
    }
}

/// Check `value` for parameter `name` (lowercase) and put it in the form
/// `SHOW` gives. Only what Weir can honour is accepted.
fn normalize(name: &str, value: &str) -> Result<String, Error> {
    let v = value.trim();
    Ok(match name {
        "client_encoding" => match v.to_ascii_uppercase().replace(['-', '_'], "").as_str() {
            "UTF8" | "UNICODE" => "UTF8".to_string(),
            _ => return Err(bad_value(name, value, " (Weir supports only UTF8)")),
        },
        "datestyle" => {
            let mut order = "MDY";
            for part in v.split(',').map(|p| p.trim().to_ascii_uppercase()) {
                match part.as_str() {
                    "ISO" | "" => {}
                    "MDY" | "DMY" | "YMD" => {
                        order = if part == "DMY" {
                            "DMY"
                        } else if part == "YMD" {
                            "YMD"
                        } else {
                            "MDY"
                        }
                    }
                    "US" | "NONEURO" | "NONEUROPEAN" => order = "MDY",
                    "EURO" | "EUROPEAN" => order = "DMY",
                    _ => {
                        return Err(bad_value(
                            "DateStyle",
                            value,
                            " (Weir prints dates in ISO style only)",
                        ))
                    }
                }
            }
            format!("ISO, {order}")
        }
        "intervalstyle" => match v.to_ascii_lowercase().as_str() {
            "postgres" => "postgres".to_string(),
            _ => {
                return Err(bad_value(
                    "IntervalStyle",
                    value,
                    " (Weir supports only postgres)",
                ))
            }
        },
        "standard_conforming_strings" => match boolean(name, v)? {
            true => "on".to_string(),
            false => return Err(bad_value(name, value, " (Weir supports only on)")),
        },
        "default_transaction_read_only" | "transaction_read_only" | "row_security" => {
            if boolean(name, v)? { "on" } else { "off" }.to_string()
        }
        "extra_float_digits" => match v.parse::<i32>() {
            Ok(n) if (-15..=3).contains(&n) => n.to_string(),
            _ => return Err(bad_value(name, value, " (an integer from -15 to 3)")),
        },
        "transaction_isolation" | "default_transaction_isolation" => {
            match v.to_ascii_lowercase().as_str() {
                l
                @ ("serializable" | "repeatable read" | "read committed" | "read uncommitted") => {
                    l.to_string()
                }
                _ => return Err(bad_value(name, value, "")),
            }
        }
        "streaming_parallelism" => match v.to_ascii_lowercase().as_str() {
            "default" | "adaptive" | "0" => "default".to_string(),
            t => match t.parse::<usize>() {
                Ok(n) if (1..=weir_common::vnode::MAX_PARALLELISM).contains(&n) => n.to_string(),
                _ => {
                    return Err(bad_value(
                        name,
                        value,
                        &format!(
                            " (an integer from 1 to {}, or DEFAULT)",
                            weir_common::vnode::MAX_PARALLELISM
                        ),
                    ))
                }
            },
        },
        "timezone" => match time_zone_named(v) {
            Some(tz) => tz.name().to_string(),
            None => {
                return Err(bad_value(
                    "TimeZone",
                    value,
                    " (Weir knows time zone names such as UTC or Europe/Berlin)",
                ))
            }
        },
        "statement_timeout" | "lock_timeout" | "idle_in_transaction_session_timeout" => {
            match parse_ms(v) {
                Some(ms) => format_ms(ms),
                None => {
                    return Err(bad_value(
                        name,
                        value,
                        " (a duration: milliseconds, or a number with ms, s, min, h or d)",
                    ))
                }
            }
        }
        _ => v.to_string(),
    })
}

/// The IANA time zone named `name`, case-insensitively as Postgres
/// (`utc`, `europe/berlin`); `GMT`, `Z` and `Zulu` are UTC.
pub fn time_zone_named(name: &str) -> Option<chrono_tz::Tz> {
    let name = name.trim().trim_matches('\'');
    if ["z", "zulu", "gmt", "utc"]
        .iter()
        .any(|u| u.eq_ignore_ascii_case(name))
    {
        return Some(chrono_tz::Tz::UTC);
    }
    // Stored values are canonical names (one lookup); what users type may
    // differ in case (a scan of the zone list).
    name.parse::<chrono_tz::Tz>().ok().or_else(|| {
        chrono_tz::TZ_VARIANTS
            .iter()
            .find(|tz| tz.name().eq_ignore_ascii_case(name))
            .copied()
    })
}

/// A duration setting in milliseconds, as Postgres reads it: a bare
/// number is milliseconds; units ms, s, min, h, d.
fn parse_ms(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" => 1.0,
        "s" => 1e3,
        "min" => 60e3,
        "h" => 3600e3,
        "d" => 86_400e3,
        _ => return None,
    };
    let ms = (number * scale).round();
    (0.0..=f64::from(i32::MAX))
        .contains(&ms)
        .then_some(ms as u64)
}

/// A duration as `SHOW` prints it: in the largest unit that divides it.
fn format_ms(ms: u64) -> String {
    if ms == 0 {
        return "0".into();
    }
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("min", 60_000),
        ("s", 1_000),
    ] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

impl Transaction {
    /// Tables this transaction has changed.
    pub fn written(&self) -> impl Iterator<Item = &str> {
        self.writes.iter().map(|c| c.table.as_str())
    }
}
