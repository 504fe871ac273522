//! Crash points for tests: `WEIR_FAILPOINTS=name[@n],...` makes the process
//! abort (as abruptly as `kill -9`: no destructors, no flushing) the `n`th
//! time (default: the first time) execution passes [`hit`]`(name)`.
//!
//! Points: `wal-after-append` (a DML record is written but not yet
//! fsynced or acknowledged), `checkpoint-after-tables` (tables wrote their
//! files, views not yet), `checkpoint-after-file` (a state file was just
//! written), `checkpoint-before-manifest` (every file written, no
//! manifest), `checkpoint-after-manifest` (manifest written, old files not
//! yet collected). Without the variable, [`hit`] costs one atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

struct Point {
    at: u64,
    seen: AtomicU64,
}

fn points() -> &'static HashMap<String, Point> {
    static POINTS: OnceLock<HashMap<String, Point>> = OnceLock::new();
    POINTS.get_or_init(|| {
        let spec = std::env::var("WEIR_FAILPOINTS").unwrap_or_default();
        spec.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                let (name, at) = match s.trim().split_once('@') {
                    Some((n, k)) => (n, k.parse().unwrap_or(1)),
                    None => (s.trim(), 1),
                };
                (
                    name.to_string(),
                    Point {
                        at,
                        seen: AtomicU64::new(0),
                    },
                )
            })
            .collect()
    })
}

/// Abort here if the crash point `name` is armed and due.
pub fn hit(name: &str) {
    let points = points();
    if points.is_empty() {
        return;
    }
    if let Some(p) = points.get(name) {
        if p.seen.fetch_add(1, Ordering::SeqCst) + 1 == p.at {
            eprintln!("weir: failpoint {name} reached, aborting");
            std::process::abort();
        }
    }
}
