//! Weir's write-ahead log for table writes, with group commit.
//!
//! The log is a directory of segment files named `<start lsn as 20 digits>.wal`.
//! Positions ([`Lsn`]s) are byte offsets as if all segments were one file, so
//! a segment starting at LSN `s` holds the bytes `[s, s + file length)`.
//!
//! Each record is framed as `u32 LE payload length | u32 LE crc32 of the
//! payload | payload` and written with a single `write(2)` of the whole frame,
//! so after a crash the last record is either complete or detectably torn.
//! Payloads are never empty: a zero length marks damage (a zero-filled tail
//! would otherwise read as valid empty records).
//!
//! Appends only reach the file; [`Wal::sync`] makes them durable. Syncs are
//! group commits: one `fdatasync` covers every record appended before it
//! started, and callers arriving while it runs share the next one.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::StateError;

/// A log sequence number: a byte offset in the log as if all segments were
/// one file.
pub type Lsn = u64;

/// Bytes of a record header: payload length and checksum.
const HEADER_LEN: u64 = 8;
/// Extension of segment files.
const SEGMENT_EXT: &str = "wal";
/// Digits of the start LSN in a segment file name.
const NAME_DIGITS: usize = 20;
/// Read buffer for scanning segments.
const READ_BUF: usize = 1 << 16;

/// One segment file.
#[derive(Clone)]
struct Segment {
    /// LSN of the segment's first byte.
    start: Lsn,
    path: PathBuf,
}

/// State changed by appends, rolls and truncations.
struct Writer {
    /// Segments on disk, oldest first; the last one is written to.
    segments: Vec<Segment>,
    /// The last segment, opened for appending. Shared so a sync can fsync it
    /// without holding the writer lock.
    file: Arc<File>,
    /// LSN just past the last appended record.
    end: Lsn,
    /// Set when a write or fsync failed in a way that leaves the file's
    /// contents or durability unknown: the log refuses further use.
    broken: Option<String>,
}

impl Writer {
    fn current(&self) -> Result<&Segment, StateError> {
        self.segments
            .last()
            .ok_or_else(|| StateError::Backend("write-ahead log has no segment".into()))
    }

    fn check(&self) -> Result<(), StateError> {
        match &self.broken {
            Some(why) => Err(StateError::Backend(format!(
                "write-ahead log unusable after an earlier failure: {why}"
            ))),
            None => Ok(()),
        }
    }
}

/// Weir's write-ahead log. `Send + Sync`: share it as `Arc<Wal>`; `sync`
/// blocks on `fdatasync`, so async callers should run it on a blocking
/// thread.
pub struct Wal {
    dir: PathBuf,
    writer: Mutex<Writer>,
    /// Serializes fsyncs; callers waiting here form the next group.
    sync_lock: Mutex<()>,
    /// LSN up to which the log is durable.
    synced: AtomicU64,
    /// fsyncs done by [`Wal::sync`].
    syncs: AtomicU64,
}

/// An I/O failure on `path`.
fn io_err(what: &str, path: &Path, e: std::io::Error) -> StateError {
    StateError::Backend(format!("write-ahead log: {what} {}: {e}", path.display()))
}

/// fsync a directory so entries created or removed in it are durable.
fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("cannot sync directory", dir, e))
}

fn segment_path(dir: &Path, start: Lsn) -> PathBuf {
    dir.join(format!(
        "{start:0width$}.{SEGMENT_EXT}",
        width = NAME_DIGITS
    ))
}

/// The start LSN encoded in a segment file name, if it is one.
fn parse_segment_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SEGMENT_EXT)?.strip_suffix('.')?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Create a new empty segment file and make it durable. On failure the file
/// is removed again if possible.
fn create_segment(dir: &Path, start: Lsn) -> Result<(Segment, File), StateError> {
    let path = segment_path(dir, start);
    let file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io_err("cannot create segment", &path, e))?;
    let synced = file
        .sync_all()
        .map_err(|e| io_err("cannot sync new segment", &path, e))
        .and_then(|()| sync_dir(dir));
    if let Err(e) = synced {
        drop(file);
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok((Segment { start, path }, file))
}

/// Why a record could not be read.
enum Bad {
    /// The file failed to read.
    Io(std::io::Error),
    /// The bytes at this offset are not a valid record.
    Damaged(String),
}

/// Reads the records of one segment in order.
struct SegmentReader {
    reader: BufReader<File>,
    path: PathBuf,
    /// Offset in the file of the next record.
    pos: u64,
    /// Bytes of the file that may be read.
    limit: u64,
}

impl SegmentReader {
    /// Read `path` up to `limit` bytes (or its whole length if `None`).
    fn open(path: &Path, limit: Option<u64>) -> Result<Self, StateError> {
        let file = File::open(path).map_err(|e| io_err("cannot open segment", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| io_err("cannot stat segment", path, e))?
            .len();
        let limit = match limit {
            Some(limit) if limit > len => {
                return Err(StateError::WalCorrupt {
                    file: path.to_path_buf(),
                    offset: len,
                    reason: format!("segment is {len} bytes, expected at least {limit}"),
                })
            }
            Some(limit) => limit,
            None => len,
        };
        Ok(SegmentReader {
            reader: BufReader::with_capacity(READ_BUF, file),
            path: path.to_path_buf(),
            pos: 0,
            limit,
        })
    }

    fn corrupt(&self, offset: u64, reason: String) -> StateError {
        StateError::WalCorrupt {
            file: self.path.clone(),
            offset,
            reason,
        }
    }

    /// Read the next record's header: `None` at the limit, else the payload
    /// length and checksum.
    fn header(&mut self) -> Result<Option<(u64, u32)>, Bad> {
        let left = self.limit - self.pos;
        if left == 0 {
            return Ok(None);
        }
        if left < HEADER_LEN {
            return Err(Bad::Damaged(format!(
                "{left} trailing bytes, a torn header"
            )));
        }
        let mut header = [0u8; HEADER_LEN as usize];
        self.reader.read_exact(&mut header).map_err(Bad::Io)?;
        let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
        let len = u64::from(u32::from_le_bytes([l0, l1, l2, l3]));
        let crc = u32::from_le_bytes([c0, c1, c2, c3]);
        if len == 0 {
            return Err(Bad::Damaged("zero record length".into()));
        }
        if len > left - HEADER_LEN {
            return Err(Bad::Damaged(format!(
                "record of {len} bytes runs past the end ({} bytes left)",
                left - HEADER_LEN
            )));
        }
        Ok(Some((len, crc)))
    }

    /// The next record as (offset in the file, payload), checked, reusing
    /// `buf` for the payload; `None` at the limit.
    fn next_into(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>, Bad> {
        let Some((len, crc)) = self.header()? else {
            return Ok(None);
        };
        buf.clear();
        buf.resize(len as usize, 0);
        self.reader.read_exact(buf).map_err(Bad::Io)?;
        if crc32fast::hash(buf) != crc {
            return Err(Bad::Damaged("checksum mismatch".into()));
        }
        let at = self.pos;
        self.pos += HEADER_LEN + len;
        Ok(Some(at))
    }

    /// Skip the next record without reading or checking its payload (it was
    /// checked at open); `None` at the limit.
    fn skip(&mut self) -> Result<Option<u64>, Bad> {
        let Some((len, _)) = self.header()? else {
            return Ok(None);
        };
        let skip = i64::try_from(len).map_err(|_| Bad::Damaged("huge record".into()))?;
        self.reader.seek_relative(skip).map_err(Bad::Io)?;
        let at = self.pos;
        self.pos += HEADER_LEN + len;
        Ok(Some(at))
    }

    /// Turn a read failure at the current record into an error.
    fn fail(&self, bad: Bad) -> StateError {
        match bad {
            Bad::Io(e) => io_err("cannot read segment", &self.path, e),
            Bad::Damaged(reason) => self.corrupt(self.pos, reason),
        }
    }

    /// Check every record; the length of the valid prefix, and the damage
    /// that ends it if it is not the whole segment.
    fn verify(mut self) -> Result<(u64, Option<String>), StateError> {
        let mut buf = Vec::new();
        loop {
            match self.next_into(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => return Ok((self.pos, None)),
                Err(Bad::Damaged(reason)) => return Ok((self.pos, Some(reason))),
                // A short read of a file whose length we just took is damage
                // too (the file shrank): let the caller decide.
                Err(Bad::Io(e)) if e.kind() == ErrorKind::UnexpectedEof => {
                    return Ok((self.pos, Some(format!("unexpected end of file: {e}"))))
                }
                Err(bad) => return Err(self.fail(bad)),
            }
        }
    }
}

impl Wal {
    /// Open the log in `dir` (created if missing). Segment files are
    /// `<start lsn as 20 digits>.wal`. Scans every segment and verifies every
    /// record; a torn or corrupt tail of the last segment (a crash
    /// mid-append) is truncated away with a warning; damage anywhere else is
    /// a [`StateError::WalCorrupt`] naming the file and offset. Writes
    /// continue at the end of the last segment.
    pub fn open(dir: &Path) -> Result<Wal, StateError> {
        if !dir.is_dir() {
            std::fs::create_dir_all(dir).map_err(|e| io_err("cannot create directory", dir, e))?;
            sync_dir(dir)?;
            if let Some(parent) = dir.parent() {
                let parent = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
                sync_dir(parent)?;
            }
        }

        let mut segments = Vec::new();
        let entries =
            std::fs::read_dir(dir).map_err(|e| io_err("cannot list directory", dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_err("cannot list directory", dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            match parse_segment_name(name) {
                Some(start) => segments.push(Segment {
                    start,
                    path: entry.path(),
                }),
                None if name.ends_with(SEGMENT_EXT) => {
                    tracing::warn!(file = %entry.path().display(), "ignoring file that is not a WAL segment");
                }
                None => {}
            }
        }
        segments.sort_by_key(|s| s.start);

        let Some(last) = segments.last().cloned() else {
            let (segment, file) = create_segment(dir, 0)?;
            return Ok(Wal::from_parts(dir, vec![segment], file, 0));
        };

        // Every segment but the last must be whole and end where the next
        // one starts.
        for pair in segments.windows(2) {
            let [seg, next] = pair else { continue };
            let (len, damage) = SegmentReader::open(&seg.path, None)?.verify()?;
            if let Some(reason) = damage {
                return Err(StateError::WalCorrupt {
                    file: seg.path.clone(),
                    offset: len,
                    reason,
                });
            }
            if seg.start + len != next.start {
                return Err(StateError::WalCorrupt {
                    file: seg.path.clone(),
                    offset: len,
                    reason: format!(
                        "segment ends at lsn {} but the next segment starts at lsn {}",
                        seg.start + len,
                        next.start
                    ),
                });
            }
        }

        // The last segment: a damaged tail is an interrupted append.
        let (len, damage) = SegmentReader::open(&last.path, None)?.verify()?;
        let file = OpenOptions::new()
            .append(true)
            .open(&last.path)
            .map_err(|e| io_err("cannot open segment", &last.path, e))?;
        if let Some(reason) = damage {
            let size = file
                .metadata()
                .map_err(|e| io_err("cannot stat segment", &last.path, e))?
                .len();
            tracing::warn!(
                file = %last.path.display(),
                offset = len,
                dropped_bytes = size.saturating_sub(len),
                %reason,
                "truncating torn tail of the write-ahead log",
            );
            file.set_len(len)
                .map_err(|e| io_err("cannot truncate segment", &last.path, e))?;
        }
        // Whatever the previous process wrote may not have been synced yet.
        file.sync_all()
            .map_err(|e| io_err("cannot sync segment", &last.path, e))?;
        let end = last.start + len;
        Ok(Wal::from_parts(dir, segments, file, end))
    }

    /// A log over `segments`, appending to `file` (the last one) at `end`.
    fn from_parts(dir: &Path, segments: Vec<Segment>, file: File, end: Lsn) -> Wal {
        Wal {
            dir: dir.to_path_buf(),
            writer: Mutex::new(Writer {
                segments,
                file: Arc::new(file),
                end,
                broken: None,
            }),
            sync_lock: Mutex::new(()),
            synced: AtomicU64::new(end),
            syncs: AtomicU64::new(0),
        }
    }

    /// LSN just past the last appended record.
    pub fn end(&self) -> Lsn {
        self.writer.lock().end
    }

    /// LSN of the oldest record still on disk (start of the first segment;
    /// 0 for a new log).
    pub fn start(&self) -> Lsn {
        let w = self.writer.lock();
        w.segments.first().map_or(w.end, |s| s.start)
    }

    /// Append one record; it is written to the file (`write(2)`) but not yet
    /// fsynced. Returns the LSN just past it. Payloads must not be empty.
    pub fn append(&self, payload: &[u8]) -> Result<Lsn, StateError> {
        if payload.is_empty() {
            return Err(StateError::Backend(
                "write-ahead log records must not be empty".into(),
            ));
        }
        let len = u32::try_from(payload.len()).map_err(|_| {
            StateError::Backend(format!(
                "write-ahead log record of {} bytes is too large",
                payload.len()
            ))
        })?;
        let mut frame = Vec::with_capacity(HEADER_LEN as usize + payload.len());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        frame.extend_from_slice(payload);

        let mut w = self.writer.lock();
        w.check()?;
        if let Err(e) = (&*w.file).write_all(&frame) {
            // A partial frame would hide every later record behind it: cut
            // it off, or stop using the log.
            let seg = w.current()?.clone();
            let keep = w.end - seg.start;
            if let Err(e2) = w.file.set_len(keep) {
                w.broken = Some(format!("append failed ({e}) and undoing it failed ({e2})"));
            }
            return Err(io_err("cannot append to", &seg.path, e));
        }
        w.end += frame.len() as u64;
        Ok(w.end)
    }

    /// Return once every record ending at or before `lsn` is durable
    /// (`fdatasync`). Group commit: callers arriving while an fsync is in
    /// progress wait for it and then share the next one; a caller whose
    /// `lsn` is already durable returns at once without syncing.
    pub fn sync(&self, lsn: Lsn) -> Result<(), StateError> {
        if self.synced.load(Ordering::Acquire) >= lsn {
            return Ok(());
        }
        let _group = self.sync_lock.lock();
        if self.synced.load(Ordering::Acquire) >= lsn {
            return Ok(());
        }
        // Take the current end and file, then let appends continue while
        // the fsync runs: the next group forms behind `sync_lock`.
        let (file, end, path) = {
            let w = self.writer.lock();
            w.check()?;
            if lsn > w.end {
                return Err(StateError::WalPosition {
                    lsn,
                    reason: format!("sync past the end of the log ({})", w.end),
                });
            }
            (Arc::clone(&w.file), w.end, w.current()?.path.clone())
        };
        if let Err(e) = file.sync_data() {
            // After a failed fsync the kernel may have dropped the dirty
            // pages: nothing written since the last good sync can be trusted.
            self.writer.lock().broken = Some(format!("fsync failed: {e}"));
            return Err(io_err("cannot sync", &path, e));
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.synced.fetch_max(end, Ordering::Release);
        Ok(())
    }

    /// LSN up to which the log is known durable.
    pub fn synced(&self) -> Lsn {
        self.synced.load(Ordering::Acquire)
    }

    /// Every record that starts at or after `from`, in order, as (start lsn,
    /// payload). Errors if `from` < [`Wal::start`] or > [`Wal::end`], or if
    /// `from` is not a record boundary. Records appended while this runs may
    /// or may not be included.
    pub fn read_from(&self, from: Lsn) -> Result<Vec<(Lsn, Vec<u8>)>, StateError> {
        let (segments, end) = {
            let w = self.writer.lock();
            (w.segments.clone(), w.end)
        };
        let start = segments.first().map_or(end, |s| s.start);
        if from < start || from > end {
            return Err(StateError::WalPosition {
                lsn: from,
                reason: format!("outside the log, which holds [{start}, {end})"),
            });
        }
        // The segment holding `from` (the later one if `from` is where a
        // segment ends and the next begins).
        let first = segments
            .partition_point(|s| s.start <= from)
            .saturating_sub(1);
        let mut out = Vec::new();
        for (i, seg) in segments.iter().enumerate().skip(first) {
            let seg_end = segments.get(i + 1).map_or(end, |next| next.start);
            let mut reader = SegmentReader::open(&seg.path, Some(seg_end - seg.start))?;
            if i == first {
                let target = from - seg.start;
                while reader.pos < target {
                    if reader.skip().map_err(|bad| reader.fail(bad))?.is_none() {
                        break;
                    }
                }
                if reader.pos != target {
                    return Err(StateError::WalPosition {
                        lsn: from,
                        reason: "not a record boundary".into(),
                    });
                }
            }
            loop {
                let mut buf = Vec::new();
                match reader.next_into(&mut buf) {
                    Ok(Some(at)) => out.push((seg.start + at, buf)),
                    Ok(None) => break,
                    Err(bad) => return Err(reader.fail(bad)),
                }
            }
        }
        Ok(out)
    }

    /// Start a new segment if the current one holds more than `max_bytes`
    /// (the old segment is fsynced first; the new segment file and the
    /// directory are fsynced).
    pub fn maybe_roll(&self, max_bytes: u64) -> Result<(), StateError> {
        let mut w = self.writer.lock();
        w.check()?;
        let current = w.current()?.clone();
        if w.end - current.start <= max_bytes {
            return Ok(());
        }
        // The old segment is abandoned: make it durable now, so `synced` stays
        // true and syncs only ever need the current segment.
        if let Err(e) = w.file.sync_data() {
            w.broken = Some(format!("fsync failed: {e}"));
            return Err(io_err("cannot sync", &current.path, e));
        }
        self.synced.fetch_max(w.end, Ordering::Release);
        let (segment, file) = match create_segment(&self.dir, w.end) {
            Ok(created) => created,
            Err(e) => {
                // A leftover empty segment would make the current one look
                // overlong on the next open: stop appending to it.
                if segment_path(&self.dir, w.end).exists() {
                    w.broken = Some(format!("rolling the log failed: {e}"));
                }
                return Err(e);
            }
        };
        w.segments.push(segment);
        w.file = Arc::new(file);
        Ok(())
    }

    /// Delete segments all of whose records end at or before `lsn` (never
    /// the current segment), oldest first.
    pub fn truncate_before(&self, lsn: Lsn) -> Result<(), StateError> {
        let doomed: Vec<Segment> = {
            let mut w = self.writer.lock();
            // A segment ends where the next one starts; the last never goes.
            let n = w
                .segments
                .windows(2)
                .take_while(|pair| pair.get(1).is_some_and(|next| next.start <= lsn))
                .count();
            w.segments.drain(..n).collect()
        };
        if doomed.is_empty() {
            return Ok(());
        }
        for seg in &doomed {
            match std::fs::remove_file(&seg.path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("cannot delete segment", &seg.path, e)),
            }
        }
        sync_dir(&self.dir)
    }

    /// Number of fsyncs [`Wal::sync`] has performed so far (not counting
    /// those of `open` and `maybe_roll`).
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    use crate::test_util::TempDir;

    fn record(i: usize) -> Vec<u8> {
        format!("record {i}").repeat(i % 7 + 1).into_bytes()
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == SEGMENT_EXT))
            .collect();
        files.sort();
        files
    }

    fn payloads(records: Vec<(Lsn, Vec<u8>)>) -> Vec<Vec<u8>> {
        records.into_iter().map(|(_, p)| p).collect()
    }

    #[test]
    fn round_trip_across_rolls() {
        let dir = TempDir::new("wal-test");
        let wal = Wal::open(&dir.0).unwrap();
        assert_eq!((wal.start(), wal.end(), wal.synced()), (0, 0, 0));
        let mut lsns = Vec::new();
        for i in 0..30 {
            let start = wal.end();
            let end = wal.append(&record(i)).unwrap();
            assert_eq!(end, start + HEADER_LEN + record(i).len() as u64);
            lsns.push(start);
            wal.maybe_roll(200).unwrap();
        }
        assert!(segment_files(&dir.0).len() > 3);
        // Rolled segments are durable.
        assert!(wal.synced() > 0);
        let all = wal.read_from(0).unwrap();
        assert_eq!(all.iter().map(|r| r.0).collect::<Vec<_>>(), lsns);
        assert_eq!(payloads(all), (0..30).map(record).collect::<Vec<_>>());
        // From the middle, from a segment boundary, and from the end.
        assert_eq!(
            payloads(wal.read_from(lsns[17]).unwrap()),
            (17..30).map(record).collect::<Vec<_>>()
        );
        let boundary = parse_segment_name(
            segment_files(&dir.0)[2]
                .file_name()
                .unwrap()
                .to_str()
                .unwrap(),
        )
        .unwrap();
        let i = lsns.iter().position(|&l| l == boundary).unwrap();
        assert_eq!(
            payloads(wal.read_from(boundary).unwrap()),
            (i..30).map(record).collect::<Vec<_>>()
        );
        assert!(wal.read_from(wal.end()).unwrap().is_empty());
        // Not a boundary, past the end.
        assert!(matches!(
            wal.read_from(lsns[5] + 1),
            Err(StateError::WalPosition { .. })
        ));
        assert!(matches!(
            wal.read_from(wal.end() + 1),
            Err(StateError::WalPosition { .. })
        ));
        assert!(wal.append(&[]).is_err());
    }

    #[test]
    fn reopen_continues_lsns() {
        let dir = TempDir::new("wal-test");
        let end = {
            let wal = Wal::open(&dir.0).unwrap();
            for i in 0..5 {
                wal.append(&record(i)).unwrap();
            }
            wal.maybe_roll(10).unwrap();
            for i in 5..8 {
                wal.append(&record(i)).unwrap();
            }
            wal.end()
        };
        let wal = Wal::open(&dir.0).unwrap();
        assert_eq!(wal.end(), end);
        assert_eq!(wal.synced(), end);
        assert_eq!(wal.start(), 0);
        let next = wal.append(&record(8)).unwrap();
        assert_eq!(next, end + HEADER_LEN + record(8).len() as u64);
        assert_eq!(
            payloads(wal.read_from(0).unwrap()),
            (0..9).map(record).collect::<Vec<_>>()
        );
        assert_eq!(wal.read_from(end).unwrap(), vec![(end, record(8))]);
    }

    #[test]
    fn torn_tail_is_dropped() {
        for damage in ["truncate", "garbage", "zeros"] {
            let dir = TempDir::new("wal-test");
            let good_end = {
                let wal = Wal::open(&dir.0).unwrap();
                for i in 0..3 {
                    wal.append(&record(i)).unwrap();
                }
                wal.maybe_roll(1).unwrap();
                let good = wal.append(&record(3)).unwrap();
                wal.append(&record(4)).unwrap();
                wal.sync(wal.end()).unwrap();
                good
            };
            let files = segment_files(&dir.0);
            let last = files.last().unwrap();
            let len = std::fs::metadata(last).unwrap().len();
            let expected_end = match damage {
                "truncate" => {
                    let f = OpenOptions::new().write(true).open(last).unwrap();
                    f.set_len(len - 3).unwrap();
                    good_end
                }
                _ => {
                    let mut f = OpenOptions::new().append(true).open(last).unwrap();
                    let junk: Vec<u8> = if damage == "zeros" {
                        vec![0; 37]
                    } else {
                        (0..37u8).map(|b| b.wrapping_mul(101) ^ 0x5A).collect()
                    };
                    f.write_all(&junk).unwrap();
                    good_end + HEADER_LEN + record(4).len() as u64
                }
            };
            let wal = Wal::open(&dir.0).unwrap();
            assert_eq!(wal.end(), expected_end, "{damage}");
            let kept = if damage == "truncate" { 4 } else { 5 };
            let end = wal.append(&record(9)).unwrap();
            let mut want: Vec<_> = (0..kept).map(record).collect();
            want.push(record(9));
            assert_eq!(payloads(wal.read_from(0).unwrap()), want, "{damage}");
            drop(wal);
            // The repair is stable.
            let wal = Wal::open(&dir.0).unwrap();
            assert_eq!(wal.end(), end);
            assert_eq!(payloads(wal.read_from(0).unwrap()), want, "{damage}");
        }
    }

    #[test]
    fn damage_before_the_last_segment_is_an_error() {
        let dir = TempDir::new("wal-test");
        {
            let wal = Wal::open(&dir.0).unwrap();
            for i in 0..6 {
                wal.append(&record(i)).unwrap();
            }
            wal.maybe_roll(1).unwrap();
            wal.append(&record(6)).unwrap();
        }
        let files = segment_files(&dir.0);
        assert_eq!(files.len(), 2);
        let mut bytes = std::fs::read(&files[0]).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&files[0], &bytes).unwrap();
        match Wal::open(&dir.0) {
            Err(StateError::WalCorrupt { file, offset, .. }) => {
                assert_eq!(file, files[0]);
                assert!(offset <= mid as u64);
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("opened a corrupt log"),
        }
    }

    #[test]
    fn truncate_before_deletes_old_segments() {
        let dir = TempDir::new("wal-test");
        let wal = Wal::open(&dir.0).unwrap();
        let mut ends = Vec::new();
        for i in 0..4 {
            ends.push(wal.append(&record(i)).unwrap());
            wal.maybe_roll(0).unwrap();
        }
        // Segments start at 0, ends[0], ends[1], ends[2], ends[3] (current, empty).
        assert_eq!(segment_files(&dir.0).len(), 5);
        wal.truncate_before(ends[1] - 1).unwrap();
        assert_eq!(wal.start(), ends[0]);
        assert_eq!(segment_files(&dir.0).len(), 4);
        wal.truncate_before(ends[2]).unwrap();
        assert_eq!(wal.start(), ends[2]);
        assert_eq!(segment_files(&dir.0).len(), 2);
        assert!(matches!(
            wal.read_from(0),
            Err(StateError::WalPosition { .. })
        ));
        assert_eq!(payloads(wal.read_from(ends[2]).unwrap()), vec![record(3)]);
        // Never the current segment.
        wal.truncate_before(u64::MAX).unwrap();
        assert_eq!(segment_files(&dir.0).len(), 1);
        assert_eq!(wal.start(), ends[3]);
        assert_eq!(wal.start(), wal.end());
        let end = wal.append(&record(4)).unwrap();
        drop(wal);
        let wal = Wal::open(&dir.0).unwrap();
        assert_eq!((wal.start(), wal.end()), (ends[3], end));
        assert_eq!(payloads(wal.read_from(ends[3]).unwrap()), vec![record(4)]);
    }

    #[test]
    fn sync_is_idempotent() {
        let dir = TempDir::new("wal-test");
        let wal = Wal::open(&dir.0).unwrap();
        let lsn = wal.append(b"x").unwrap();
        assert_eq!(wal.synced(), 0);
        wal.sync(lsn).unwrap();
        assert_eq!(wal.synced(), lsn);
        assert_eq!(wal.sync_count(), 1);
        wal.sync(lsn).unwrap();
        wal.sync(0).unwrap();
        assert_eq!(wal.sync_count(), 1);
        assert!(wal.sync(lsn + 1).is_err());
    }

    #[test]
    fn group_commit_shares_fsyncs() {
        const THREADS: usize = 8;
        const ROUNDS: usize = 50;
        let dir = TempDir::new("wal-test");
        let wal = Arc::new(Wal::open(&dir.0).unwrap());
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let wal = Arc::clone(&wal);
                std::thread::spawn(move || {
                    for r in 0..ROUNDS {
                        let lsn = wal.append(format!("{t}:{r}").as_bytes()).unwrap();
                        wal.sync(lsn).unwrap();
                        assert!(wal.synced() >= lsn);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let syncs = wal.sync_count();
        assert!(
            syncs < (THREADS * ROUNDS) as u64,
            "{syncs} fsyncs for {} sync calls",
            THREADS * ROUNDS
        );
        assert_eq!(wal.synced(), wal.end());
        let records = payloads(wal.read_from(0).unwrap());
        assert_eq!(records.len(), THREADS * ROUNDS);
        for t in 0..THREADS {
            let mine: Vec<_> = records
                .iter()
                .filter_map(|p| std::str::from_utf8(p).ok())
                .filter(|s| s.starts_with(&format!("{t}:")))
                .map(str::to_owned)
                .collect();
            let want: Vec<_> = (0..ROUNDS).map(|r| format!("{t}:{r}")).collect();
            assert_eq!(mine, want);
        }
    }
}
