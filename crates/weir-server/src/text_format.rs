//! Postgres' text output for types whose text form `pgwire` renders
//! differently: timestamps print without trailing fractional zeros
//! (`2024-01-02 03:04:05`, `... 03:04:05.5`) and TIMESTAMPTZ with its offset
//! (`+00`). Columns sent in binary are left alone.

use std::sync::Arc;

use chrono::DateTime;
use pgwire::api::portal::Format;
use weir_common::arrow::array::{Array, ArrayRef, RecordBatch, StringBuilder, TimestampMicrosecondArray};
use weir_common::arrow::compute::cast;
use weir_common::arrow::datatypes::{DataType, TimeUnit};
use weir_common::arrow::error::ArrowError;

/// Replace text-format timestamp columns of `batch` by their Postgres text.
/// The batch's schema is kept for the row description, which the caller
/// has already built from the original types.
pub fn postgres_text_columns(batch: RecordBatch, format: &Format) -> Result<RecordBatch, ArrowError> {
    let mut columns: Option<Vec<ArrayRef>> = None;
    for (i, column) in batch.columns().iter().enumerate() {
        if let DataType::Timestamp(_, tz) = column.data_type() {
            if format.is_binary(i) {
                continue;
            }
            let text = format_timestamps(column, tz.is_some())?;
            columns.get_or_insert_with(|| batch.columns().to_vec())[i] = text;
        }
    }
    match columns {
        None => Ok(batch),
        Some(cols) => {
            let fields: Vec<_> = batch
                .schema()
                .fields()
                .iter()
                .zip(&cols)
                .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
                .collect();
            RecordBatch::try_new(Arc::new(weir_common::arrow::datatypes::Schema::new(fields)), cols)
        }
    }
}

fn format_timestamps(column: &ArrayRef, with_offset: bool) -> Result<ArrayRef, ArrowError> {
    let micros = cast(column, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    let micros = micros
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .ok_or_else(|| ArrowError::CastError("timestamp cast failed".into()))?;
    let mut out = StringBuilder::with_capacity(micros.len(), micros.len() * 26);
    for i in 0..micros.len() {
        if micros.is_null(i) {
            out.append_null();
            continue;
        }
        out.append_value(format_micros(micros.value(i), with_offset));
    }
    Ok(Arc::new(out.finish()))
}

/// One timestamp, as Postgres prints it with DateStyle ISO in UTC.
pub fn format_micros(micros: i64, with_offset: bool) -> String {
    let Some(dt) = DateTime::from_timestamp_micros(micros) else {
        return micros.to_string();
    };
    let mut s = dt.format("%Y-%m-%d %H:%M:%S").to_string();
    let frac = micros.rem_euclid(1_000_000);
    if frac != 0 {
        let digits = format!("{frac:06}");
        s.push('.');
        s.push_str(digits.trim_end_matches('0'));
    }
    if with_offset {
        s.push_str("+00");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_postgres() {
        assert_eq!(format_micros(0, false), "1970-01-01 00:00:00");
        assert_eq!(format_micros(1_500_000, true), "1970-01-01 00:00:01.5+00");
        assert_eq!(format_micros(-1, false), "1969-12-31 23:59:59.999999");
    }
}
