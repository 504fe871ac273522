//! [`Generator`]: one interface over every connector a source can name.

use std::collections::BTreeMap;

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
