//! [`Generator`]: one interface over every connector a source can name.

use std::collections::BTreeMap;

use std::sync::Arc;

use weir_common::arrow::array::RecordBatch;
use weir_common::arrow::datatypes::SchemaRef;

use crate::datagen::{DatagenGenerator, DatagenOptions};
use crate::nexmark::{self, NexmarkConfig, NexmarkGenerator, NexmarkTable};
use crate::ConnectorError;

/// Connectors a source may name.
pub const CONNECTORS: &[&str] = &["datagen", "nexmark"];

/// A replayable generator of rows: what a source reads.
#[derive(Debug)]
pub enum Generator {
    /// `connector = 'datagen'`.
    Datagen(DatagenGenerator),
    /// `connector = 'nexmark'`.
    Nexmark(NexmarkGenerator),
}

/// The connector named by `options` (lower-cased), checked.
pub fn connector_name(options: &BTreeMap<String, String>) -> Result<String, ConnectorError> {
    let name = options
        .get("connector")
        .map(|c| c.to_ascii_lowercase())
        .ok_or_else(|| ConnectorError::Option("missing option \"connector\"".into()))?;
    if !CONNECTORS.contains(&name.as_str()) {
        return Err(ConnectorError::Option(format!(
            "unknown connector \"{name}\" (supported: {})",
            CONNECTORS.join(", ")
        )));
    }
    Ok(name)
}

/// The schema a connector produces when the DDL declares no columns, if it
/// has one of its own (nexmark does; datagen needs declared columns).
pub fn native_schema(
    options: &BTreeMap<String, String>,
) -> Result<Option<SchemaRef>, ConnectorError> {
    match connector_name(options)?.as_str() {
        "nexmark" => Ok(Some(nexmark::schema(nexmark_table(options)?))),
        _ => Ok(None),
    }
}

fn nexmark_table(options: &BTreeMap<String, String>) -> Result<NexmarkTable, ConnectorError> {
    match options.get("nexmark.table.type") {
        Some(t) => NexmarkTable::parse(t),
        None => Ok(NexmarkTable::Combined),
    }
}

impl Generator {
    /// Open the generator `options` describe, producing `schema` (the
    /// declared columns; for nexmark, [`native_schema`]), from `offset`.
    pub fn open(
        options: &BTreeMap<String, String>,
        schema: &SchemaRef,
        offset: u64,
    ) -> Result<Self, ConnectorError> {
        match connector_name(options)?.as_str() {
            "datagen" => {
                let parsed = DatagenOptions::parse(schema, options)?;
                Ok(Generator::Datagen(DatagenGenerator::new(
                    schema.clone(),
                    parsed,
                    offset,
                )))
            }
            _ => {
                let config = NexmarkConfig::from_options(options)?;
                Ok(Generator::Nexmark(NexmarkGenerator::new(
                    config,
                    nexmark_table(options)?,
                    offset,
                )))
            }
        }
    }

    /// Up to `max_rows` more rows, or `None` once a bounded source is done.
    pub fn next_batch(&mut self, max_rows: usize) -> Result<Option<RecordBatch>, ConnectorError> {
        match self {
            Generator::Datagen(g) => g.next_batch(max_rows),
            Generator::Nexmark(g) => g.next_batch(max_rows),
        }
    }

    /// Up to `max_rows` more rows before offset `limit` (an empty batch,
    /// with the offset at `limit`, when none are left before it), or `None`
    /// once a bounded source is done.
    pub fn next_batch_before(
        &mut self,
        max_rows: usize,
        limit: u64,
    ) -> Result<Option<RecordBatch>, ConnectorError> {
        match self {
            Generator::Datagen(g) => g.next_batch_before(max_rows, limit),
            Generator::Nexmark(g) => g.next_batch_before(max_rows, limit),
        }
    }

    /// The offset after the last row of a bounded source.
    pub fn end(&self) -> Option<u64> {
        match self {
            Generator::Datagen(g) => g.end(),
            Generator::Nexmark(g) => g.end(),
        }
    }

    /// Where the next batch starts (rows for datagen, event ids for
    /// nexmark): what a checkpoint records, and what `open` resumes from.
    pub fn offset(&self) -> u64 {
        match self {
            Generator::Datagen(g) => g.offset(),
            Generator::Nexmark(g) => g.offset(),
        }
    }

    /// Wall-clock pace in offset units per second (`rows-per-second`,
    /// nexmark's `event_rate`); `None`: as fast as the dataflow takes it.
    pub fn rate(&self) -> Option<u64> {
        match self {
            Generator::Datagen(g) => Some(g.options().effective_rows_per_second()),
            Generator::Nexmark(g) => g.event_rate(),
        }
    }
}

/// Offsets of a source are cut into blocks of this many; split `s` of `S`
/// reads the blocks `b` with `b % S == s`, so `S` readers share a source
/// without coordination, and any reader can resume any split from its
/// offset.
pub const SPLIT_BLOCK: u64 = 8192;

/// One split of a source, read through a [`Generator`].
#[derive(Debug)]
pub struct SplitReader {
    generator: Generator,
    options: BTreeMap<String, String>,
    schema: SchemaRef,
    split: u64,
    splits: u64,
}

impl SplitReader {
    /// Split `split` of `splits` of the source `options` describe, resuming
    /// at `offset` (a position this split reported, or 0 to start).
    pub fn open(
        options: &BTreeMap<String, String>,
        schema: &SchemaRef,
        split: u64,
        splits: u64,
        offset: u64,
    ) -> Result<Self, ConnectorError> {
        let splits = splits.max(1);
        Ok(SplitReader {
            generator: Generator::open(options, schema, offset)?,
            options: options.clone(),
            schema: Arc::clone(schema),
            split: split.min(splits - 1),
            splits,
        })
    }

    /// The split's index.
    pub fn split(&self) -> u64 {
        self.split
    }

    /// Where the split resumes: what a checkpoint records.
    pub fn offset(&self) -> u64 {
        self.generator.offset()
    }

    /// The generator's pace (whole source), if any.
    pub fn rate(&self) -> Option<u64> {
        self.generator.rate()
    }

    /// Up to `max_rows` more rows of this split, or `None` once it is done.
    pub fn next_batch(&mut self, max_rows: usize) -> Result<Option<RecordBatch>, ConnectorError> {
        if self.splits == 1 {
            return self.generator.next_batch(max_rows);
        }
        loop {
            let pos = self.generator.offset();
            if self.generator.end().is_some_and(|end| pos >= end) {
                // A bounded source clamps offsets to its end: done.
                return Ok(None);
            }
            let block = pos / SPLIT_BLOCK;
            let ahead = (self.split + self.splits - block % self.splits) % self.splits;
            if ahead != 0 {
                self.seek((block + ahead) * SPLIT_BLOCK)?;
                continue;
            }
            let limit = (block + 1) * SPLIT_BLOCK;
            match self.generator.next_batch_before(max_rows, limit)? {
                None => return Ok(None),
                Some(b) if b.num_rows() == 0 && self.generator.offset() >= limit => {
                    self.seek((block + self.splits) * SPLIT_BLOCK)?;
                }
                Some(b) => return Ok(Some(b)),
            }
        }
    }

    fn seek(&mut self, offset: u64) -> Result<(), ConnectorError> {
        self.generator = Generator::open(&self.options, &self.schema, offset)?;
        Ok(())
    }

    /// Offsets of this split before its position (clamped to the end of a
    /// bounded source): how far it has read.
    pub fn consumed(&self) -> u64 {
        let x = self
            .generator
            .offset()
            .min(self.generator.end().unwrap_or(u64::MAX));
        if self.splits == 1 {
            return x;
        }
        let full = x / SPLIT_BLOCK;
        let own_full = if full > self.split {
            (full - self.split - 1) / self.splits + 1
        } else {
            0
        };
        let partial = if full % self.splits == self.split {
            x - full * SPLIT_BLOCK
        } else {
            0
        };
        own_full * SPLIT_BLOCK + partial
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_common::arrow::array::{Array, Int64Array};
    use weir_common::arrow::datatypes::{DataType, Field, Schema};

    fn ids(
        options: &BTreeMap<String, String>,
        schema: &SchemaRef,
        splits: u64,
        stop_after: usize,
    ) -> Vec<i64> {
        let mut out = Vec::new();
        for s in 0..splits {
            let mut r = SplitReader::open(options, schema, s, splits, 0).unwrap();
            let mut batches = 0;
            // Read a few batches, "checkpoint", resume from the offset.
            loop {
                if batches == stop_after {
                    let offset = r.offset();
                    r = SplitReader::open(options, schema, s, splits, offset).unwrap();
                }
                match r.next_batch(3000).unwrap() {
                    Some(b) => {
                        let col = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                        out.extend((0..col.len()).map(|i| col.value(i)));
                    }
                    None => break,
                }
                batches += 1;
            }
            assert_eq!(r.consumed(), {
                // Every split ends having read all of its offsets.
                let total = 50_000u64;
                (0..total)
                    .filter(|o| (o / SPLIT_BLOCK) % splits == s)
                    .count() as u64
            });
        }
        out.sort_unstable();
        out
    }

    #[test]
    fn splits_partition_a_source_and_resume_from_offsets() {
        let schema: SchemaRef =
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let options: BTreeMap<String, String> = [
            ("connector", "datagen"),
            ("fields.id.kind", "sequence"),
            ("fields.id.start", "1"),
            ("fields.id.end", "50000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let all: Vec<i64> = (1..=50_000).collect();
        for splits in [1u64, 2, 3, 7] {
            assert_eq!(ids(&options, &schema, splits, 5), all, "{splits} splits");
        }
    }

    #[test]
    fn nexmark_splits_read_every_bid_once() {
        let options: BTreeMap<String, String> = [
            ("connector", "nexmark"),
            ("nexmark.table.type", "Bid"),
            ("max_events", "100000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let schema = native_schema(&options).unwrap().unwrap();
        let read = |splits: u64| {
            let mut rows: Vec<String> = Vec::new();
            for s in 0..splits {
                let mut r = SplitReader::open(&options, &schema, s, splits, 0).unwrap();
                while let Some(b) = r.next_batch(5000).unwrap() {
                    for i in 0..b.num_rows() {
                        let row: Vec<String> = b
                            .columns()
                            .iter()
                            .map(|c| {
                                weir_common::arrow::util::display::array_value_to_string(c, i)
                                    .unwrap()
                            })
                            .collect();
                        rows.push(row.join("|"));
                    }
                }
            }
            rows.sort();
            rows
        };
        let one = read(1);
        assert_eq!(one.len(), 92_000);
        assert_eq!(read(3), one);
    }
}
