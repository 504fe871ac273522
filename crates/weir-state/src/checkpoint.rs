//! Checkpoints: state files and manifests on disk.
//!
//! At a checkpoint barrier every state table writes one Parquet file into
//! `<data-dir>/checkpoints/`: either a DELTA (entries changed since its
//! previous checkpoint, a deleted key has a NULL value) or a FULL snapshot
//! (every live entry). The checkpoint becomes complete, and usable for
//! recovery, only once the coordinator writes its manifest, which lists for
//! each state table its *chain*: the last full file followed by the deltas
//! after it, oldest first. Every file and every manifest carries a CRC-32 so a
//! damaged checkpoint is detected and recovery falls back to an older one.
//!
//! The on-disk format is specified in `docs/checkpoint-format.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use weir_common::arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, RecordBatch, UInt8Array, UInt8Builder,
};
use weir_common::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use weir_common::vnode::{Vnode, VnodeRange, VNODE_COUNT};

use crate::StateError;

/// Version of the checkpoint format (state files and manifests) this build
/// writes and reads.
pub const CHECKPOINT_FORMAT_VERSION: u32 = 1;

/// Default number of manifests [`CheckpointDir::retain`] keeps.
pub const DEFAULT_KEEP: usize = 3;

/// Rows buffered by [`StateFileWriter::push`] before a record batch is
/// handed to the Parquet writer.
const BATCH_ROWS: usize = 8192;

/// Rows per Parquet row group (bounds the writer's memory).
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Parquet key-value metadata keys of a state file.
const META_TABLE_ID: &str = "weir.table_id";
const META_EPOCH: &str = "weir.epoch";
const META_KIND: &str = "weir.kind";
const META_FORMAT_VERSION: &str = "weir.format_version";
/// `first-last`: the vnodes the file covers (absent = all of them).
const META_VNODES: &str = "weir.vnodes";

/// Whether a state file holds a whole table or the changes of one checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// Every live entry of the table; never contains NULL values.
    Full,
    /// Entries changed since the table's previous checkpoint; a NULL value
    /// marks a deleted key.
    Delta,
}

impl FileKind {
    /// The name used in file names and metadata: `full` or `delta`.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Full => "full",
            FileKind::Delta => "delta",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "full" => Some(FileKind::Full),
            "delta" => Some(FileKind::Delta),
            _ => None,
        }
    }
}

/// One checkpoint file, as listed in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// File name inside the checkpoint directory.
    pub name: String,
    /// The state table whose entries the file holds.
    pub table_id: u32,
    /// The checkpoint epoch that wrote the file.
    pub epoch: u64,
    /// Full snapshot or delta.
    pub kind: FileKind,
    /// Number of entries (rows).
    pub rows: u64,
    /// Size of the file in bytes.
    pub size: u64,
    /// CRC-32 (IEEE, as computed by `crc32fast`) of the whole file.
    pub crc32: u32,
    /// First vnode the file covers: an instance of a parallel operator
    /// writes the entries of the vnodes it owns (absent = 0).
    #[serde(default)]
    pub first_vnode: Vnode,
    /// Last vnode the file covers (absent = 255).
    #[serde(default = "last_vnode")]
    pub last_vnode: Vnode,
}

fn last_vnode() -> Vnode {
    VnodeRange::FULL.last
}

impl FileMeta {
    /// The vnodes the file covers.
    pub fn vnodes(&self) -> VnodeRange {
        VnodeRange {
            first: self.first_vnode,
            last: self.last_vnode,
        }
    }
}

/// Append `file` to a table's chain, then drop the files every one of whose
/// vnodes a later full file covers (a full file replaces what came before it
/// for its vnodes; with one instance that is the whole chain).
pub fn push_to_chain(chain: &mut Vec<FileMeta>, file: FileMeta) {
    chain.push(file);
    let mut covered = [false; VNODE_COUNT];
    let mut keep = vec![true; chain.len()];
    for (i, f) in chain.iter().enumerate().rev() {
        let range = f.vnodes();
        if range.iter().all(|v| covered[v as usize]) {
            keep[i] = false;
            continue;
        }
        if f.kind == FileKind::Full {
            range.iter().for_each(|v| covered[v as usize] = true);
        }
    }
    let mut i = 0;
    chain.retain(|_| {
        i += 1;
        keep[i - 1]
    });
}

/// The final name of a state file: `<epoch:020>-<table_id:010>-<kind>.parquet`
/// for a file covering every vnode, `<epoch:020>-<table_id:010>-<kind>-<first:03>-<last:03>.parquet`
/// for one instance's vnodes.
fn state_file_name(epoch: u64, table_id: u32, kind: FileKind, vnodes: VnodeRange) -> String {
    if vnodes.is_full() {
        format!("{epoch:020}-{table_id:010}-{}.parquet", kind.as_str())
    } else {
        format!(
            "{epoch:020}-{table_id:010}-{}-{:03}-{:03}.parquet",
            kind.as_str(),
            vnodes.first,
            vnodes.last
        )
    }
}

/// The epoch of a state file name (final or `.tmp`), and whether it is a
/// temporary file. `None` for names that are not state files.
fn parse_state_file_name(name: &str) -> Option<(u64, bool)> {
    let (base, tmp) = match name.strip_suffix(".tmp") {
        Some(base) => (base, true),
        None => (name, false),
    };
    let stem = base.strip_suffix(".parquet")?;
    let mut parts = stem.split('-');
    let epoch = parse_digits(parts.next()?, 20)?;
    parse_digits(parts.next()?, 10)?;
    FileKind::parse(parts.next()?)?;
    match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) => {}
        (Some(first), Some(last), None) => {
            parse_digits(first, 3)?;
            parse_digits(last, 3)?;
        }
        _ => return None,
    }
    Some((epoch, tmp))
}

/// The name of the manifest of `epoch`: `manifest-<epoch:020>.json`.
fn manifest_name(epoch: u64) -> String {
    format!("manifest-{epoch:020}.json")
}

/// The epoch of a manifest name (final or `.tmp`), and whether it is a
/// temporary file.
fn parse_manifest_name(name: &str) -> Option<(u64, bool)> {
    let (base, tmp) = match name.strip_suffix(".tmp") {
        Some(base) => (base, true),
        None => (name, false),
    };
    let digits = base.strip_prefix("manifest-")?.strip_suffix(".json")?;
    Some((parse_digits(digits, 20)?, tmp))
}

fn parse_digits(s: &str, len: usize) -> Option<u64> {
    if s.len() == len && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// The Arrow schema of a state file.
fn state_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("vnode", DataType::UInt8, false),
        Field::new("key", DataType::Binary, false),
        Field::new("value", DataType::Binary, true),
    ]))
}

fn io_error(what: &str, path: &Path, e: impl Display) -> StateError {
    StateError::Checkpoint(format!("{what} {}: {e}", path.display()))
}

fn damaged(path: &Path, reason: impl Into<String>) -> StateError {
    StateError::CheckpointDamaged {
        file: path.display().to_string(),
        reason: reason.into(),
    }
}

/// fsync a directory so renames and creations inside it are durable.
fn sync_dir(dir: &Path) -> Result<(), StateError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("cannot fsync directory", dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// A `Write` that computes the CRC-32 and length of everything written.
struct CrcWrite {
    inner: BufWriter<File>,
    hasher: crc32fast::Hasher,
    len: u64,
}

impl Write for CrcWrite {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let written = buf.get(..n).unwrap_or(buf);
        self.hasher.update(written);
        self.len += written.len() as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Streams entries of one state table into a Parquet file.
///
/// The file is written as `<name>.tmp` and renamed to its final name by
/// [`StateFileWriter::finish`]; dropping an unfinished writer removes the
/// temporary file.
pub struct StateFileWriter {
    dir: PathBuf,
    tmp_path: PathBuf,
    name: String,
    table_id: u32,
    epoch: u64,
    kind: FileKind,
    vnode_range: VnodeRange,
    schema: SchemaRef,
    writer: Option<ArrowWriter<CrcWrite>>,
    vnodes: UInt8Builder,
    keys: BinaryBuilder,
    values: BinaryBuilder,
    buffered: usize,
    rows: u64,
    done: bool,
}

impl StateFileWriter {
    /// Start `<epoch:020>-<table_id:010>-<full|delta>[-<first>-<last>].parquet.tmp`
    /// in `dir` (an existing temporary file of that name is overwritten),
    /// for the entries of `vnodes`.
    pub fn create(
        dir: &Path,
        table_id: u32,
        epoch: u64,
        kind: FileKind,
        vnodes: VnodeRange,
    ) -> Result<Self, StateError> {
        let name = state_file_name(epoch, table_id, kind, vnodes);
        let tmp_path = dir.join(format!("{name}.tmp"));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp_path)
            .map_err(|e| io_error("cannot create", &tmp_path, e))?;
        let sink = CrcWrite {
            inner: BufWriter::with_capacity(256 * 1024, file),
            hasher: crc32fast::Hasher::new(),
            len: 0,
        };
        let props = WriterProperties::builder()
            .set_compression(Compression::UNCOMPRESSED)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_key_value_metadata(Some(vec![
                KeyValue::new(META_TABLE_ID.to_string(), table_id.to_string()),
                KeyValue::new(META_EPOCH.to_string(), epoch.to_string()),
                KeyValue::new(META_KIND.to_string(), kind.as_str().to_string()),
                KeyValue::new(
                    META_FORMAT_VERSION.to_string(),
                    CHECKPOINT_FORMAT_VERSION.to_string(),
                ),
                KeyValue::new(
                    META_VNODES.to_string(),
                    format!("{}-{}", vnodes.first, vnodes.last),
                ),
            ]))
            .build();
        let schema = state_schema();
        // From here on a failure drops `Self`, which removes the temp file.
        let mut this = StateFileWriter {
            dir: dir.to_path_buf(),
            tmp_path,
            name,
            table_id,
            epoch,
            kind,
            vnode_range: vnodes,
            schema: schema.clone(),
            writer: None,
            vnodes: UInt8Builder::with_capacity(BATCH_ROWS),
            keys: BinaryBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 16),
            values: BinaryBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 16),
            buffered: 0,
            rows: 0,
            done: false,
        };
        let writer = ArrowWriter::try_new(sink, schema, Some(props))
            .map_err(|e| io_error("cannot start Parquet file", &this.tmp_path, e))?;
        this.writer = Some(writer);
        Ok(this)
    }

    /// Add one entry (`value` None = deleted, only allowed in deltas). Rows
    /// are buffered and written as a record batch every 8192 rows.
    pub fn push(&mut self, vnode: u8, key: &[u8], value: Option<&[u8]>) -> Result<(), StateError> {
        if !self.vnode_range.contains(vnode) {
            return Err(StateError::Checkpoint(format!(
                "{}: vnode {vnode} is outside the file's vnodes {}-{} (table {})",
                self.tmp_path.display(),
                self.vnode_range.first,
                self.vnode_range.last,
                self.table_id
            )));
        }
        match value {
            Some(v) => self.values.append_value(v),
            None if self.kind == FileKind::Full => {
                return Err(StateError::Checkpoint(format!(
                    "{}: a full snapshot cannot hold a deleted entry (table {})",
                    self.tmp_path.display(),
                    self.table_id
                )));
            }
            None => self.values.append_null(),
        }
        self.vnodes.append_value(vnode);
        self.keys.append_value(key);
        self.buffered += 1;
        self.rows += 1;
        if self.buffered >= BATCH_ROWS {
            self.write_batch()?;
        }
        Ok(())
    }

    /// Number of entries pushed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn write_batch(&mut self) -> Result<(), StateError> {
        if self.buffered == 0 {
            return Ok(());
        }
        self.buffered = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.vnodes.finish()),
            Arc::new(self.keys.finish()),
            Arc::new(self.values.finish()),
        ];
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| io_error("cannot build a record batch for", &self.tmp_path, e))?;
        let writer = self.writer.as_mut().ok_or_else(|| {
            StateError::Checkpoint(format!(
                "{}: writer already closed",
                self.tmp_path.display()
            ))
        })?;
        writer
            .write(&batch)
            .map_err(|e| io_error("cannot write", &self.tmp_path, e))
    }

    /// Finish the Parquet file, fsync it, rename the `.tmp` file to its final
    /// name and return its metadata (size and CRC-32 of the whole file).
    ///
    /// The directory is not fsynced here: [`CheckpointDir::write_manifest`]
    /// fsyncs it after renaming the manifest, which makes every rename in the
    /// directory durable before the checkpoint counts as complete.
    pub fn finish(mut self) -> Result<FileMeta, StateError> {
        self.write_batch()?;
        let writer = self.writer.take().ok_or_else(|| {
            StateError::Checkpoint(format!(
                "{}: writer already closed",
                self.tmp_path.display()
            ))
        })?;
        let sink = writer
            .into_inner()
            .map_err(|e| io_error("cannot finish Parquet file", &self.tmp_path, e))?;
        let CrcWrite { inner, hasher, len } = sink;
        let file = inner
            .into_inner()
            .map_err(|e| io_error("cannot flush", &self.tmp_path, e.error()))?;
        file.sync_all()
            .map_err(|e| io_error("cannot fsync", &self.tmp_path, e))?;
        drop(file);
        let final_path = self.dir.join(&self.name);
        fs::rename(&self.tmp_path, &final_path)
            .map_err(|e| io_error("cannot rename", &self.tmp_path, e))?;
        self.done = true;
        Ok(FileMeta {
            name: self.name.clone(),
            table_id: self.table_id,
            epoch: self.epoch,
            kind: self.kind,
            rows: self.rows,
            size: len,
            crc32: hasher.finalize(),
            first_vnode: self.vnode_range.first,
            last_vnode: self.vnode_range.last,
        })
    }
}

impl Drop for StateFileWriter {
    fn drop(&mut self) {
        if !self.done {
            self.writer = None;
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

/// Open `meta`'s file in `dir` and check its name, size and CRC-32. Returns
/// the open file (positioned anywhere; Parquet reads by offset).
fn open_checked(dir: &Path, meta: &FileMeta) -> Result<File, StateError> {
    let path = dir.join(&meta.name);
    if meta.first_vnode > meta.last_vnode
        || meta.name != state_file_name(meta.epoch, meta.table_id, meta.kind, meta.vnodes())
    {
        return Err(damaged(
            &path,
            format!(
                "the manifest lists it for table {} epoch {} ({}), which is not its name",
                meta.table_id,
                meta.epoch,
                meta.kind.as_str()
            ),
        ));
    }
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(damaged(&path, "the file is missing"));
        }
        Err(e) => return Err(io_error("cannot open", &path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| io_error("cannot stat", &path, e))?
        .len();
    if len != meta.size {
        return Err(damaged(
            &path,
            format!("size is {len} bytes, the manifest says {}", meta.size),
        ));
    }
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut read = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let chunk = buf.get(..n).unwrap_or(&buf);
                hasher.update(chunk);
                read += chunk.len() as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error("cannot read", &path, e)),
        }
    }
    if read != meta.size {
        return Err(damaged(
            &path,
            format!("read {read} bytes, the manifest says {}", meta.size),
        ));
    }
    let crc = hasher.finalize();
    if crc != meta.crc32 {
        return Err(damaged(
            &path,
            format!("crc32 is {crc:08x}, the manifest says {:08x}", meta.crc32),
        ));
    }
    Ok(file)
}

/// Read a state file back after checking that it exists and that its size and
/// CRC-32 match `meta` (a mismatch is an error naming the file; no row is
/// passed to `f` then). Calls `f(vnode, key, value)` per row in file order.
///
/// The Parquet metadata (`weir.table_id`, `weir.epoch`, `weir.kind`,
/// `weir.format_version`), the schema and the row count are checked as well.
#[allow(clippy::type_complexity)] // the callback signature is the interface
pub fn read_state_file(
    dir: &Path,
    meta: &FileMeta,
    f: &mut dyn FnMut(u8, &[u8], Option<&[u8]>) -> Result<(), StateError>,
) -> Result<(), StateError> {
    let file = open_checked(dir, meta)?;
    let path = dir.join(&meta.name);
    let bad = |e: &dyn Display| damaged(&path, format!("not a readable state file: {e}"));
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(&e))?;

    let file_meta = builder.metadata().file_metadata();
    let kv = |key: &str| -> Option<&str> {
        file_meta
            .key_value_metadata()?
            .iter()
            .find(|kv| kv.key == key)?
            .value
            .as_deref()
    };
    let expected = [
        (META_TABLE_ID, meta.table_id.to_string()),
        (META_EPOCH, meta.epoch.to_string()),
        (META_KIND, meta.kind.as_str().to_string()),
        (META_FORMAT_VERSION, CHECKPOINT_FORMAT_VERSION.to_string()),
    ];
    for (key, want) in &expected {
        let got = kv(key);
        if got != Some(want.as_str()) {
            return Err(damaged(
                &path,
                format!("metadata {key} is {got:?}, expected {want:?}"),
            ));
        }
    }
    let range = meta.vnodes();
    let want_vnodes = format!("{}-{}", range.first, range.last);
    match kv(META_VNODES) {
        Some(got) if got == want_vnodes => {}
        // Files of builds before parallel operators cover every vnode.
        None if range.is_full() => {}
        got => {
            return Err(damaged(
                &path,
                format!("metadata {META_VNODES} is {got:?}, expected {want_vnodes:?}"),
            ))
        }
    }
    let num_rows = file_meta.num_rows();
    if u64::try_from(num_rows).ok() != Some(meta.rows) {
        return Err(damaged(
            &path,
            format!("holds {num_rows} rows, the manifest says {}", meta.rows),
        ));
    }
    let schema = builder.schema().clone();
    for field in state_schema().fields() {
        match schema.field_with_name(field.name()) {
            Ok(f) if f.data_type() == field.data_type() => {}
            _ => {
                return Err(damaged(
                    &path,
                    format!(
                        "column {} missing or not {}",
                        field.name(),
                        field.data_type()
                    ),
                ));
            }
        }
    }

    let reader = builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| bad(&e))?;
    let mut seen = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| bad(&e))?;
        let vnodes = batch
            .column_by_name("vnode")
            .and_then(|c| c.as_any().downcast_ref::<UInt8Array>());
        let keys = batch
            .column_by_name("key")
            .and_then(|c| c.as_any().downcast_ref::<BinaryArray>());
        let values = batch
            .column_by_name("value")
            .and_then(|c| c.as_any().downcast_ref::<BinaryArray>());
        let (Some(vnodes), Some(keys), Some(values)) = (vnodes, keys, values) else {
            return Err(damaged(&path, "unexpected column types"));
        };
        if vnodes.null_count() > 0 || keys.null_count() > 0 {
            return Err(damaged(&path, "NULL vnode or key"));
        }
        if meta.kind == FileKind::Full && values.null_count() > 0 {
            return Err(damaged(&path, "NULL value in a full snapshot"));
        }
        for i in 0..batch.num_rows() {
            let value = if values.is_null(i) {
                None
            } else {
                Some(values.value(i))
            };
            f(vnodes.value(i), keys.value(i), value)?;
        }
        seen += batch.num_rows() as u64;
    }
    if seen != meta.rows {
        return Err(damaged(
            &path,
            format!("read {seen} rows, the manifest says {}", meta.rows),
        ));
    }
    Ok(())
}

/// A complete checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version, [`CHECKPOINT_FORMAT_VERSION`].
    pub format_version: u32,
    /// The checkpoint's epoch.
    pub epoch: u64,
    /// Table write-ahead log offset: records at or after it are replayed
    /// on recovery.
    pub wal_lsn: u64,
    /// When the checkpoint completed, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// How long the checkpoint took, in milliseconds.
    pub duration_ms: u64,
    /// State table id -> chain: a full file first, then deltas, oldest
    /// first. A chain may be only deltas (the table never wrote a full
    /// snapshot; its base is the empty state).
    pub tables: BTreeMap<u32, Vec<FileMeta>>,
    /// Source offsets (empty for now; for replayable sources later).
    #[serde(default)]
    pub sources: BTreeMap<String, u64>,
    /// The catalog at the checkpoint, opaque to this module.
    #[serde(default)]
    pub catalog: serde_json::Value,
}

impl Manifest {
    /// Total size in bytes of all files the manifest references.
    pub fn total_size(&self) -> u64 {
        self.files().map(|f| f.size).sum()
    }

    /// Number of files the manifest references.
    pub fn file_count(&self) -> usize {
        self.tables.values().map(Vec::len).sum()
    }

    /// Every file the manifest references, table by table, chains in order.
    pub fn files(&self) -> impl Iterator<Item = &FileMeta> {
        self.tables.values().flatten()
    }

    /// Add a file just written for this checkpoint to its table's chain: a
    /// full file replaces the chain, a delta is appended.
    pub fn add_file(&mut self, file: FileMeta) {
        push_to_chain(self.tables.entry(file.table_id).or_default(), file);
    }

    /// Structural checks: version, chain order, file names.
    fn check(&self) -> Result<(), String> {
        if self.format_version != CHECKPOINT_FORMAT_VERSION {
            return Err(format!(
                "unsupported format version {} (this build reads {CHECKPOINT_FORMAT_VERSION})",
                self.format_version
            ));
        }
        for (table_id, chain) in &self.tables {
            let mut prev: Option<u64> = None;
            for (i, f) in chain.iter().enumerate() {
                if f.table_id != *table_id {
                    return Err(format!(
                        "file {} listed under table {table_id} belongs to table {}",
                        f.name, f.table_id
                    ));
                }
                if f.first_vnode > f.last_vnode
                    || f.name != state_file_name(f.epoch, f.table_id, f.kind, f.vnodes())
                {
                    return Err(format!(
                        "file {} of table {table_id} does not have the name its epoch and kind give",
                        f.name
                    ));
                }
                if f.epoch > self.epoch {
                    return Err(format!(
                        "file {} is newer than the checkpoint ({})",
                        f.name, self.epoch
                    ));
                }
                // Files of one epoch (one per instance) cover disjoint vnodes.
                let overlaps = chain[..i]
                    .iter()
                    .rev()
                    .take_while(|g| g.epoch == f.epoch)
                    .any(|g| g.first_vnode <= f.last_vnode && f.first_vnode <= g.last_vnode);
                if prev.is_some_and(|p| f.epoch < p) || overlaps {
                    return Err(format!(
                        "chain of table {table_id} is not in epoch order at {}",
                        f.name
                    ));
                }
                prev = Some(f.epoch);
            }
        }
        Ok(())
    }
}

/// The on-disk layout of a manifest file: the manifest's JSON text and the
/// CRC-32 of that text.
#[derive(Serialize, Deserialize)]
struct ManifestEnvelope {
    crc32: u32,
    manifest: String,
}

/// The checkpoint directory, `<data-dir>/checkpoints`.
pub struct CheckpointDir {
    path: PathBuf,
}

impl CheckpointDir {
    /// `path` is `<data-dir>/checkpoints`, created if missing.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        fs::create_dir_all(path).map_err(|e| io_error("cannot create", path, e))?;
        Ok(CheckpointDir {
            path: path.to_path_buf(),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Start a state file of this checkpoint directory (see
    /// [`StateFileWriter::create`]).
    pub fn create_file(
        &self,
        table_id: u32,
        epoch: u64,
        kind: FileKind,
    ) -> Result<StateFileWriter, StateError> {
        StateFileWriter::create(&self.path, table_id, epoch, kind, VnodeRange::FULL)
    }

    /// Write `manifest-<epoch:020>.json` atomically: write to a temporary
    /// file, fsync, rename, fsync the directory. The file is
    /// `{"crc32": <CRC-32 of the manifest JSON text>, "manifest": "<the manifest JSON text>"}`.
    pub fn write_manifest(&self, m: &Manifest) -> Result<(), StateError> {
        let name = manifest_name(m.epoch);
        let path = self.path.join(&name);
        m.check()
            .map_err(|e| StateError::Checkpoint(format!("refusing to write {name}: {e}")))?;
        let text = serde_json::to_string(m).map_err(|e| io_error("cannot serialize", &path, e))?;
        let envelope = ManifestEnvelope {
            crc32: crc32fast::hash(text.as_bytes()),
            manifest: text,
        };
        let mut bytes = serde_json::to_vec_pretty(&envelope)
            .map_err(|e| io_error("cannot serialize", &path, e))?;
        bytes.push(b'\n');
        let tmp = self.path.join(format!("{name}.tmp"));
        let mut file = File::create(&tmp).map_err(|e| io_error("cannot create", &tmp, e))?;
        let written = file
            .write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error("cannot write", &tmp, e));
        drop(file);
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, &path).map_err(|e| io_error("cannot rename", &tmp, e))?;
        sync_dir(&self.path)
    }

    /// Manifest files present, newest epoch first.
    pub fn list_manifests(&self) -> Result<Vec<(u64, PathBuf)>, StateError> {
        let mut out = Vec::new();
        for entry in self.read_dir()? {
            if let Some((epoch, false)) = parse_manifest_name(&entry.0) {
                out.push((epoch, entry.1));
            }
        }
        out.sort_by_key(|m| std::cmp::Reverse(m.0));
        Ok(out)
    }

    /// `(file name, path)` of every entry with a UTF-8 name.
    fn read_dir(&self) -> Result<Vec<(String, PathBuf)>, StateError> {
        let entries =
            fs::read_dir(&self.path).map_err(|e| io_error("cannot list", &self.path, e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("cannot list", &self.path, e))?;
            if let Ok(name) = entry.file_name().into_string() {
                out.push((name, entry.path()));
            }
        }
        Ok(out)
    }

    /// Parse one manifest and check its own checksum and structure (format
    /// version, chain order, file names, epoch matching the file name).
    /// I/O failures are [`StateError::Checkpoint`]; a damaged manifest is
    /// [`StateError::CheckpointDamaged`].
    pub fn load_manifest(&self, path: &Path) -> Result<Manifest, StateError> {
        let bytes = fs::read(path).map_err(|e| io_error("cannot read", path, e))?;
        let envelope: ManifestEnvelope = serde_json::from_slice(&bytes)
            .map_err(|e| damaged(path, format!("not a manifest file: {e}")))?;
        let crc = crc32fast::hash(envelope.manifest.as_bytes());
        if crc != envelope.crc32 {
            return Err(damaged(
                path,
                format!(
                    "manifest crc32 is {crc:08x}, the file says {:08x}",
                    envelope.crc32
                ),
            ));
        }
        let m: Manifest = serde_json::from_str(&envelope.manifest)
            .map_err(|e| damaged(path, format!("invalid manifest: {e}")))?;
        m.check().map_err(|e| damaged(path, e))?;
        let named = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_manifest_name);
        if let Some((epoch, _)) = named {
            if epoch != m.epoch {
                return Err(damaged(
                    path,
                    format!("holds epoch {}, its name says {epoch}", m.epoch),
                ));
            }
        }
        Ok(m)
    }

    /// Check every file the manifest lists: present, size and CRC-32 match.
    /// Returns the first problem found.
    pub fn verify(&self, m: &Manifest) -> Result<(), StateError> {
        for f in m.files() {
            open_checked(&self.path, f)?;
        }
        Ok(())
    }

    /// Cheap check for retention: every file is present with the right size.
    fn files_present(&self, m: &Manifest) -> bool {
        m.files()
            .all(|f| fs::metadata(self.path.join(&f.name)).is_ok_and(|md| md.len() == f.size))
    }

    /// The newest manifest that loads and verifies, with the reasons newer
    /// manifests were rejected (each also logged with `tracing::error!`).
    /// `Ok(None)` when there is no manifest at all;
    /// [`StateError::NoValidCheckpoint`] when manifests exist but none is
    /// valid.
    pub fn latest_valid(&self) -> Result<Option<(Manifest, Vec<String>)>, StateError> {
        let manifests = self.list_manifests()?;
        if manifests.is_empty() {
            return Ok(None);
        }
        let mut problems = Vec::new();
        let count = manifests.len();
        for (i, (epoch, path)) in manifests.iter().enumerate() {
            let result = self
                .load_manifest(path)
                .and_then(|m| self.verify(&m).map(|()| m));
            match result {
                Ok(m) => return Ok(Some((m, problems))),
                Err(e) => {
                    if i + 1 < count {
                        tracing::error!(
                            "checkpoint {epoch} is damaged ({e}), falling back to an older checkpoint"
                        );
                    } else {
                        tracing::error!(
                            "checkpoint {epoch} is damaged ({e}), and there is no older checkpoint"
                        );
                    }
                    problems.push(format!("checkpoint {epoch}: {e}"));
                }
            }
        }
        Err(StateError::NoValidCheckpoint { problems })
    }

    /// Keep the newest `keep` manifests (at least 1; older manifest files are
    /// deleted), then delete every `.parquet` / `.tmp` file whose epoch (from
    /// its name) is at most the newest manifest's epoch and that no retained
    /// manifest references: this removes files of superseded chains and of
    /// checkpoints that never completed. Files with a larger epoch are never
    /// deleted (an in-progress checkpoint may be writing them).
    ///
    /// Only manifests that load and whose files are all present with the
    /// right size count toward `keep` (sizes are checked, CRCs are not);
    /// damaged manifests newer than the oldest retained one are kept (their
    /// files are not protected). This way retention never deletes the last
    /// usable checkpoint because newer ones are damaged.
    pub fn retain(&self, keep: usize) -> Result<(), StateError> {
        let keep = keep.max(1);
        let manifests = self.list_manifests()?;
        let Some(&(newest, _)) = manifests.first() else {
            return Ok(());
        };
        let mut referenced: BTreeSet<String> = BTreeSet::new();
        let mut counted = 0;
        let mut cut = manifests.len();
        for (i, (epoch, path)) in manifests.iter().enumerate() {
            if counted >= keep {
                cut = i;
                break;
            }
            match self.load_manifest(path) {
                Ok(m) => {
                    referenced.extend(m.files().map(|f| f.name.clone()));
                    if self.files_present(&m) {
                        counted += 1;
                    } else {
                        tracing::warn!(
                            "checkpoint {epoch} has missing or truncated files; not counted as retained"
                        );
                    }
                }
                // An I/O failure says nothing about what the manifest
                // references: delete nothing.
                Err(e @ StateError::Checkpoint(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(
                        "checkpoint {epoch} is damaged ({e}); its files are not retained"
                    );
                }
            }
        }
        for (epoch, path) in manifests.iter().skip(cut).rev() {
            tracing::debug!(epoch, "deleting old checkpoint manifest");
            remove_if_present(path)?;
        }
        for (name, path) in self.read_dir()? {
            let parsed = parse_state_file_name(&name)
                .map(|(epoch, tmp)| (epoch, tmp, false))
                .or_else(|| parse_manifest_name(&name).map(|(epoch, tmp)| (epoch, tmp, true)));
            let Some((epoch, tmp, is_manifest)) = parsed else {
                continue;
            };
            if epoch > newest || (!tmp && (is_manifest || referenced.contains(&name))) {
                continue;
            }
            tracing::debug!(file = %name, "deleting unreferenced checkpoint file");
            remove_if_present(&path)?;
        }
        Ok(())
    }

    /// Load a manifest's state: for each table (in id order), its chain in
    /// order, calling `f(table_id, vnode, key, value)` per entry. Applying
    /// the calls in order (`None` = delete) rebuilds the checkpointed state.
    #[allow(clippy::type_complexity)] // the callback signature is the interface
    pub fn load_state(
        &self,
        m: &Manifest,
        f: &mut dyn FnMut(u32, u8, &[u8], Option<&[u8]>) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        m.check().map_err(|e| {
            StateError::Checkpoint(format!("invalid manifest of checkpoint {}: {e}", m.epoch))
        })?;
        for (&table_id, chain) in &m.tables {
            // A full file replaces what precedes it for its vnodes: entries
            // of vnodes a later full file covers are skipped.
            let mut covered = vec![[false; VNODE_COUNT]; chain.len()];
            let mut later = [false; VNODE_COUNT];
            for (i, file) in chain.iter().enumerate().rev() {
                covered[i] = later;
                if file.kind == FileKind::Full {
                    file.vnodes().iter().for_each(|v| later[v as usize] = true);
                }
            }
            for (file, skip) in chain.iter().zip(&covered) {
                read_state_file(&self.path, file, &mut |vnode, key, value| {
                    if skip[vnode as usize] {
                        return Ok(());
                    }
                    f(table_id, vnode, key, value)
                })?;
            }
        }
        Ok(())
    }
}

fn remove_if_present(path: &Path) -> Result<(), StateError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("cannot delete", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_util::TempDir;

    type Rows = Vec<(u8, Vec<u8>, Option<Vec<u8>>)>;

    fn write_file(dir: &Path, table: u32, epoch: u64, kind: FileKind, rows: &Rows) -> FileMeta {
        let mut w = StateFileWriter::create(dir, table, epoch, kind, VnodeRange::FULL).unwrap();
        for (v, k, val) in rows {
            w.push(*v, k, val.as_deref()).unwrap();
        }
        w.finish().unwrap()
    }

    fn read_all(dir: &Path, meta: &FileMeta) -> Result<Rows, StateError> {
        let mut out = Vec::new();
        read_state_file(dir, meta, &mut |v, k, val| {
            out.push((v, k.to_vec(), val.map(<[u8]>::to_vec)));
            Ok(())
        })?;
        Ok(out)
    }

    fn manifest(epoch: u64) -> Manifest {
        Manifest {
            format_version: CHECKPOINT_FORMAT_VERSION,
            epoch,
            wal_lsn: epoch * 100,
            created_unix_ms: 1_700_000_000_000 + epoch,
            duration_ms: 5,
            tables: BTreeMap::new(),
            sources: BTreeMap::new(),
            catalog: serde_json::json!({"tables": ["t"], "epoch": epoch}),
        }
    }

    fn flip_byte(path: &Path, at: usize) {
        let mut bytes = fs::read(path).unwrap();
        bytes[at] ^= 0x40;
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn round_trip_with_nulls_and_many_rows() {
        let tmp = TempDir::new("checkpoint-roundtrip");
        let rows: Rows = (0..20_000u32)
            .map(|i| {
                let value = if i % 7 == 0 {
                    None
                } else {
                    Some(format!("value-{i}").into_bytes())
                };
                ((i % 256) as u8, i.to_be_bytes().to_vec(), value)
            })
            .collect();
        let meta = write_file(&tmp.0, 42, 7, FileKind::Delta, &rows);
        assert_eq!(meta.name, "00000000000000000007-0000000042-delta.parquet");
        assert_eq!(meta.rows, 20_000);
        assert_eq!(
            (meta.table_id, meta.epoch, meta.kind),
            (42, 7, FileKind::Delta)
        );
        let bytes = fs::read(tmp.0.join(&meta.name)).unwrap();
        assert_eq!(meta.size, bytes.len() as u64);
        assert_eq!(meta.crc32, crc32fast::hash(&bytes));
        assert!(!tmp.0.join(format!("{}.tmp", meta.name)).exists());
        assert_eq!(read_all(&tmp.0, &meta).unwrap(), rows);

        // Empty files are valid too.
        let empty = write_file(&tmp.0, 1, 1, FileKind::Full, &Vec::new());
        assert_eq!(empty.rows, 0);
        assert!(read_all(&tmp.0, &empty).unwrap().is_empty());
    }

    fn write_part(
        dir: &Path,
        epoch: u64,
        kind: FileKind,
        range: VnodeRange,
        rows: &Rows,
    ) -> FileMeta {
        let mut w = StateFileWriter::create(dir, 5, epoch, kind, range).unwrap();
        for (v, k, val) in rows {
            w.push(*v, k, val.as_deref()).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn instance_files_form_one_chain_that_survives_a_rescale() {
        let tmp = TempDir::new("checkpoint-parts");
        let dir = CheckpointDir::open(&tmp.0).unwrap();
        let half = |i| VnodeRange::of_instance(i, 2);
        let row = |v: u8, k: &str, val: Option<&str>| {
            (v, k.as_bytes().to_vec(), val.map(|x| x.as_bytes().to_vec()))
        };
        // Parallelism 2: each instance writes its vnodes.
        let mut m = manifest(3);
        m.add_file(write_part(
            &tmp.0,
            1,
            FileKind::Full,
            half(0),
            &vec![row(1, "a", Some("1"))],
        ));
        m.add_file(write_part(
            &tmp.0,
            1,
            FileKind::Full,
            half(1),
            &vec![row(200, "b", Some("2"))],
        ));
        m.add_file(write_part(
            &tmp.0,
            2,
            FileKind::Delta,
            half(0),
            &vec![row(1, "a", None), row(2, "c", Some("3"))],
        ));
        m.add_file(write_part(
            &tmp.0,
            3,
            FileKind::Delta,
            half(1),
            &vec![row(200, "b", Some("4"))],
        ));
        assert!(m.files().any(|f| f.name.ends_with("-full-128-255.parquet")));
        assert_eq!(m.file_count(), 4);
        dir.write_manifest(&m).unwrap();
        let loaded = dir
            .load_manifest(&dir.list_manifests().unwrap()[0].1)
            .unwrap();
        assert_eq!(loaded, m);
        let state = |m: &Manifest| {
            let mut live = BTreeMap::new();
            dir.load_state(m, &mut |_, v, k, val| {
                match val {
                    Some(val) => live.insert((v, k.to_vec()), val.to_vec()),
                    None => live.remove(&(v, k.to_vec())),
                };
                Ok(())
            })
            .unwrap();
            live
        };
        let expected: BTreeMap<_, _> = [
            ((2u8, b"c".to_vec()), b"3".to_vec()),
            ((200u8, b"b".to_vec()), b"4".to_vec()),
        ]
        .into();
        assert_eq!(state(&m), expected);
        // Rescaled to 4: the first new full file replaces only its vnodes;
        // once all four are in, the old files are gone from the chain.
        let mut m4 = m.clone();
        m4.epoch = 4;
        m4.add_file(write_part(
            &tmp.0,
            4,
            FileKind::Full,
            VnodeRange::of_instance(0, 4),
            &vec![row(2, "c", Some("3"))],
        ));
        assert_eq!(state(&m4), expected);
        for i in 1..4 {
            let rows = if i == 3 {
                vec![row(200, "b", Some("4"))]
            } else {
                vec![]
            };
            m4.add_file(write_part(
                &tmp.0,
                4,
                FileKind::Full,
                VnodeRange::of_instance(i, 4),
                &rows,
            ));
        }
        assert_eq!(m4.file_count(), 4);
        assert!(m4.files().all(|f| f.epoch == 4));
        assert_eq!(state(&m4), expected);
        // Overlapping files of one epoch are refused.
        let mut bad = m.clone();
        bad.tables
            .get_mut(&5)
            .unwrap()
            .push(m.tables[&5][0].clone());
        assert!(bad.check().is_err());
    }

    #[test]
    fn full_files_reject_deletes_and_unfinished_writers_clean_up() {
        let tmp = TempDir::new("checkpoint-fullnull");
        let mut w =
            StateFileWriter::create(&tmp.0, 1, 1, FileKind::Full, VnodeRange::FULL).unwrap();
        w.push(0, b"k", Some(b"v")).unwrap();
        assert!(w.push(0, b"k2", None).is_err());
        let tmp_name = format!(
            "{}.tmp",
            state_file_name(1, 1, FileKind::Full, VnodeRange::FULL)
        );
        assert!(tmp.0.join(&tmp_name).exists());
        drop(w);
        assert!(!tmp.0.join(&tmp_name).exists());
    }

    #[test]
    fn file_is_plain_parquet_with_documented_schema() {
        let tmp = TempDir::new("checkpoint-plain");
        let rows: Rows = vec![
            (3, b"a".to_vec(), Some(b"1".to_vec())),
            (200, b"b".to_vec(), None),
        ];
        let meta = write_file(&tmp.0, 9, 12, FileKind::Delta, &rows);
        let file = File::open(tmp.0.join(&meta.name)).unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let schema = builder.schema().clone();
        let fields: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("vnode".to_string(), DataType::UInt8, false),
                ("key".to_string(), DataType::Binary, false),
                ("value".to_string(), DataType::Binary, true),
            ]
        );
        let md = builder.metadata();
        let kv: BTreeMap<_, _> = md
            .file_metadata()
            .key_value_metadata()
            .unwrap()
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(kv["weir.table_id"], "9");
        assert_eq!(kv["weir.epoch"], "12");
        assert_eq!(kv["weir.kind"], "delta");
        assert_eq!(kv["weir.format_version"], "1");
        for rg in md.row_groups() {
            for col in rg.columns() {
                assert_eq!(col.compression(), Compression::UNCOMPRESSED);
            }
        }
        let batches: Vec<RecordBatch> = builder.build().unwrap().map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        let vnodes = b.column(0).as_any().downcast_ref::<UInt8Array>().unwrap();
        let values = b.column(2).as_any().downcast_ref::<BinaryArray>().unwrap();
        assert_eq!(vnodes.values().to_vec(), vec![3, 200]);
        assert_eq!(values.value(0), b"1");
        assert!(values.is_null(1));
    }

    #[test]
    fn damaged_files_are_reported_by_name() {
        let tmp = TempDir::new("checkpoint-damaged");
        let rows: Rows = (0..100u8)
            .map(|i| (i, vec![i], Some(vec![i; 10])))
            .collect();
        let meta = write_file(&tmp.0, 5, 3, FileKind::Full, &rows);
        let path = tmp.0.join(&meta.name);
        flip_byte(&path, 100);
        let err = read_all(&tmp.0, &meta).unwrap_err().to_string();
        assert!(err.contains(&meta.name) && err.contains("crc32"), "{err}");
        fs::remove_file(&path).unwrap();
        let err = read_all(&tmp.0, &meta).unwrap_err().to_string();
        assert!(err.contains(&meta.name) && err.contains("missing"), "{err}");
    }

    #[test]
    fn manifest_round_trip() {
        let tmp = TempDir::new("checkpoint-manifest");
        let dir = CheckpointDir::open(&tmp.0.join("checkpoints")).unwrap();
        let mut m = manifest(4);
        let f1 = write_file(
            dir.path(),
            1,
            2,
            FileKind::Full,
            &vec![(0, b"a".to_vec(), Some(b"x".to_vec()))],
        );
        let f2 = write_file(
            dir.path(),
            1,
            4,
            FileKind::Delta,
            &vec![(0, b"a".to_vec(), None)],
        );
        let f3 = write_file(
            dir.path(),
            2,
            4,
            FileKind::Delta,
            &vec![(1, b"b".to_vec(), Some(b"y".to_vec()))],
        );
        m.add_file(f1.clone());
        m.add_file(f2.clone());
        m.add_file(f3.clone());
        m.sources.insert("kafka:orders".into(), 17);
        dir.write_manifest(&m).unwrap();
        let listed = dir.list_manifests().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, 4);
        assert!(listed[0].1.ends_with("manifest-00000000000000000004.json"));
        let loaded = dir.load_manifest(&listed[0].1).unwrap();
        assert_eq!(loaded, m);
        assert_eq!(loaded.file_count(), 3);
        assert_eq!(loaded.total_size(), f1.size + f2.size + f3.size);
        dir.verify(&loaded).unwrap();

        let mut state = Vec::new();
        dir.load_state(&loaded, &mut |t, v, k, val| {
            state.push((t, v, k.to_vec(), val.map(<[u8]>::to_vec)));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            state,
            vec![
                (1, 0, b"a".to_vec(), Some(b"x".to_vec())),
                (1, 0, b"a".to_vec(), None),
                (2, 1, b"b".to_vec(), Some(b"y".to_vec())),
            ]
        );

        // A full file replaces the chain.
        let f4 = write_file(dir.path(), 1, 5, FileKind::Full, &Vec::new());
        m.add_file(f4.clone());
        assert_eq!(m.tables[&1], vec![f4]);

        // Malformed manifests are refused.
        let mut bad = manifest(3);
        bad.add_file(f2);
        assert!(dir.write_manifest(&bad).is_err());
    }

    /// Writes checkpoints `1..=n`: table 1 has a full at epoch 1 then deltas,
    /// table 2 writes a full every epoch. Returns the manifests.
    fn write_checkpoints(dir: &CheckpointDir, n: u64) -> Vec<Manifest> {
        let mut out: Vec<Manifest> = Vec::new();
        for epoch in 1..=n {
            let mut m = out.last().cloned().unwrap_or_else(|| manifest(epoch));
            m.epoch = epoch;
            m.wal_lsn = epoch * 100;
            let kind = if epoch == 1 {
                FileKind::Full
            } else {
                FileKind::Delta
            };
            let key = format!("k{epoch}").into_bytes();
            let rows: Rows = (0..50u8)
                .map(|i| (i, key.clone(), Some(vec![i; 40])))
                .collect();
            m.add_file(write_file(dir.path(), 1, epoch, kind, &rows));
            m.add_file(write_file(dir.path(), 2, epoch, FileKind::Full, &rows));
            dir.write_manifest(&m).unwrap();
            out.push(m);
        }
        out
    }

    fn newest_file_of(m: &Manifest) -> PathBuf {
        PathBuf::from(&m.tables[&1].last().unwrap().name)
    }

    #[test]
    fn latest_valid_picks_the_newest() {
        let tmp = TempDir::new("checkpoint-latest");
        let dir = CheckpointDir::open(&tmp.0).unwrap();
        assert!(dir.latest_valid().unwrap().is_none());
        let ms = write_checkpoints(&dir, 3);
        let (m, problems) = dir.latest_valid().unwrap().unwrap();
        assert_eq!(m, ms[2]);
        assert!(problems.is_empty());
    }

    #[test]
    fn latest_valid_falls_back_on_damaged_files() {
        type Damage = fn(&Path);
        let damages: [(&str, Damage); 3] = [
            ("flip", |p| flip_byte(p, 50)),
            ("truncate", |p| {
                let len = fs::metadata(p).unwrap().len();
                File::options()
                    .write(true)
                    .open(p)
                    .unwrap()
                    .set_len(len - 10)
                    .unwrap();
            }),
            ("delete", |p| fs::remove_file(p).unwrap()),
        ];
        for (tag, damage) in damages {
            let tmp = TempDir::new(&format!("checkpoint-{tag}"));
            let dir = CheckpointDir::open(&tmp.0).unwrap();
            let ms = write_checkpoints(&dir, 3);
            let victim = dir.path().join(newest_file_of(&ms[2]));
            damage(&victim);
            let (m, problems) = dir.latest_valid().unwrap().unwrap();
            assert_eq!(m, ms[1], "{tag}");
            assert_eq!(problems.len(), 1, "{tag}");
            let name = victim.file_name().unwrap().to_str().unwrap();
            assert!(
                problems[0].contains("checkpoint 3"),
                "{tag}: {}",
                problems[0]
            );
            assert!(problems[0].contains(name), "{tag}: {}", problems[0]);
        }
    }

    #[test]
    fn latest_valid_falls_back_on_corrupt_manifest() {
        let tmp = TempDir::new("checkpoint-corruptmanifest");
        let dir = CheckpointDir::open(&tmp.0).unwrap();
        let ms = write_checkpoints(&dir, 3);
        let path = dir.path().join(manifest_name(3));
        // Still valid JSON, but the manifest text no longer matches its CRC.
        let text = fs::read_to_string(&path).unwrap();
        let tampered = text.replace("\\\"wal_lsn\\\":300", "\\\"wal_lsn\\\":301");
        assert_ne!(text, tampered);
        fs::write(&path, tampered).unwrap();
        let (m, problems) = dir.latest_valid().unwrap().unwrap();
        assert_eq!(m, ms[1]);
        assert!(problems[0].contains("crc32"), "{}", problems[0]);

        // Not JSON at all, and an empty manifest.
        fs::write(&path, b"{\"crc32\": 12, \"manif").unwrap();
        fs::write(dir.path().join(manifest_name(2)), b"").unwrap();
        let (m, problems) = dir.latest_valid().unwrap().unwrap();
        assert_eq!(m, ms[0]);
        assert_eq!(problems.len(), 2);
    }

    #[test]
    fn no_valid_manifest_is_an_error() {
        let tmp = TempDir::new("checkpoint-novalid");
        let dir = CheckpointDir::open(&tmp.0).unwrap();
        let ms = write_checkpoints(&dir, 2);
        // Both manifests share table 1's full file at epoch 1.
        let shared = dir.path().join(&ms[0].tables[&1][0].name);
        flip_byte(&shared, 30);
        let err = dir.latest_valid().unwrap_err();
        assert!(matches!(err, StateError::NoValidCheckpoint { .. }));
        let msg = err.to_string();
        assert!(msg.contains("recovery is impossible"), "{msg}");
        assert!(
            msg.contains("checkpoint 2") && msg.contains("checkpoint 1"),
            "{msg}"
        );
    }

    #[test]
    fn retain_keeps_three_and_deletes_unreferenced_files() {
        let tmp = TempDir::new("checkpoint-retain");
        let dir = CheckpointDir::open(&tmp.0).unwrap();
        let ms = write_checkpoints(&dir, 5);
        let rows: Rows = vec![(0, b"z".to_vec(), Some(b"z".to_vec()))];
        // A checkpoint that never completed (no manifest 3 references it).
        let orphan = write_file(dir.path(), 9, 3, FileKind::Full, &rows).name;
        // Leftover temporary files.
        let stale_tmp = format!(
            "{}.tmp",
            state_file_name(4, 7, FileKind::Delta, VnodeRange::FULL)
        );
        fs::write(dir.path().join(&stale_tmp), b"partial").unwrap();
        let stale_manifest_tmp = format!("{}.tmp", manifest_name(2));
        fs::write(dir.path().join(&stale_manifest_tmp), b"partial").unwrap();
        // An in-progress checkpoint at epoch 6.
        let newer = write_file(dir.path(), 1, 6, FileKind::Delta, &rows).name;
        let newer_tmp = format!(
            "{}.tmp",
            state_file_name(6, 2, FileKind::Full, VnodeRange::FULL)
        );
        fs::write(dir.path().join(&newer_tmp), b"writing").unwrap();
        let newer_manifest_tmp = format!("{}.tmp", manifest_name(6));
        fs::write(dir.path().join(&newer_manifest_tmp), b"writing").unwrap();
        fs::write(dir.path().join("README"), b"not ours").unwrap();

        dir.retain(DEFAULT_KEEP).unwrap();

        let epochs: Vec<u64> = dir.list_manifests().unwrap().iter().map(|m| m.0).collect();
        assert_eq!(epochs, vec![5, 4, 3]);
        let mut expected: BTreeSet<String> = BTreeSet::new();
        for m in &ms[2..] {
            expected.extend(m.files().map(|f| f.name.clone()));
        }
        // Table 1's chain still starts with its full file from epoch 1.
        assert!(expected.contains(&state_file_name(1, 1, FileKind::Full, VnodeRange::FULL)));
        for e in [3, 4, 5] {
            expected.insert(manifest_name(e));
        }
        expected.extend([newer, newer_tmp, newer_manifest_tmp, "README".to_string()]);
        let present: BTreeSet<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(present, expected);
        assert!(!present.contains(&orphan));
        assert!(!present.contains(&stale_tmp));
        assert!(!present.contains(&state_file_name(2, 2, FileKind::Full, VnodeRange::FULL)));

        // Everything retained still loads.
        let (m, problems) = dir.latest_valid().unwrap().unwrap();
        assert_eq!(m, ms[4]);
        assert!(problems.is_empty());
        let mut n = 0;
        dir.load_state(&m, &mut |_, _, _, _| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 5 * 50 + 50);
        for old in &ms[2..4] {
            dir.verify(old).unwrap();
        }
    }

    #[test]
    fn retain_does_not_count_damaged_checkpoints() {
        let tmp = TempDir::new("checkpoint-retaindamaged");
        let dir = CheckpointDir::open(&tmp.0).unwrap();
        let ms = write_checkpoints(&dir, 4);
        // The two newest lose a file: only 2 and 1 count toward keep = 2.
        for m in &ms[2..] {
            fs::remove_file(dir.path().join(&m.tables[&2][0].name)).unwrap();
        }
        dir.retain(2).unwrap();
        let epochs: Vec<u64> = dir.list_manifests().unwrap().iter().map(|m| m.0).collect();
        assert_eq!(epochs, vec![4, 3, 2, 1]);
        let (m, problems) = dir.latest_valid().unwrap().unwrap();
        assert_eq!(m, ms[1]);
        assert_eq!(problems.len(), 2);
    }
}
