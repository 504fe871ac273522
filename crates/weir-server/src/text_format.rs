//! Postgres' text output for types whose text form `pgwire` renders
//! differently: timestamps print without trailing fractional zeros
//! (`2024-01-02 03:04:05`, `... 03:04:05.5`) and TIMESTAMPTZ with its offset
//! (`+00`); floats print as Postgres does (`2`, `1e+20`, `Infinity`);
//! intervals as `1 year 2 mons 3 days 04:05:06.5`; NUMERIC by Arrow's exact
//! decimal formatting. Columns sent in binary are left alone, except that a
//! NUMERIC too large for the binary encoder is refused with 22003.

use std::sync::Arc;

use chrono::{DateTime, Offset};
use chrono_tz::Tz;
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::api::Type;
use weir_common::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Decimal128Array, Float64Array,
    IntervalMonthDayNanoArray, RecordBatch, StringBuilder, TimestampMicrosecondArray,
};
use weir_common::arrow::compute::cast;
use weir_common::arrow::datatypes::{DataType, IntervalUnit, TimeUnit};
use weir_common::arrow::error::ArrowError;

/// Replace text-format timestamp columns of `batch` by their Postgres text.
/// The batch's schema is kept for the row description, which the caller
/// has already built from the original types.
pub fn postgres_text_columns(
    batch: RecordBatch,
    format: &Format,
    time_zone: Option<Tz>,
) -> Result<RecordBatch, ArrowError> {
    let mut columns: Option<Vec<ArrayRef>> = None;
    for (i, column) in batch.columns().iter().enumerate() {
        if format.is_binary(i) {
            if let DataType::Decimal128(_, _) = column.data_type() {
                check_binary_decimal(column)?;
            }
            continue;
        }
        let text = match column.data_type() {
            DataType::Timestamp(_, tz) => {
                format_timestamps(column, tz.is_some().then_some(time_zone))?
            }
            DataType::Float64 | DataType::Float32 => format_floats(column)?,
            DataType::Interval(IntervalUnit::MonthDayNano) => format_intervals(column)?,
            DataType::Decimal128(_, _) | DataType::Decimal256(_, _) => {
                cast(column, &DataType::Utf8)?
            }
            _ => continue,
        };
        columns.get_or_insert_with(|| batch.columns().to_vec())[i] = text;
    }
    match columns {
        None => Ok(batch),
        Some(cols) => with_columns(&batch, cols),
    }
}

/// `batch` with its columns replaced by `columns` (same names, their types).
fn with_columns(batch: &RecordBatch, columns: Vec<ArrayRef>) -> Result<RecordBatch, ArrowError> {
    let fields: Vec<_> = batch
        .schema()
        .fields()
        .iter()
        .zip(&columns)
        .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
        .collect();
    RecordBatch::try_new(
        Arc::new(weir_common::arrow::datatypes::Schema::new(fields)),
        columns,
    )
}

/// Columns the row description sends as binary `uuid`: Weir keeps uuids as
/// their canonical text, Postgres's binary form is the 16 bytes.
pub fn binary_uuids(batch: RecordBatch, header: &[FieldInfo]) -> Result<RecordBatch, ArrowError> {
    let uuid_columns: Vec<usize> = header
        .iter()
        .enumerate()
        .filter(|(_, f)| f.datatype() == &Type::UUID && f.format() == FieldFormat::Binary)
        .map(|(i, _)| i)
        .collect();
    if uuid_columns.is_empty() {
        return Ok(batch);
    }
    let mut columns = batch.columns().to_vec();
    for i in uuid_columns {
        let Some(column) = columns.get(i) else {
            continue;
        };
        let text = cast(column, &DataType::Utf8)?;
        let bytes = text
            .as_string::<i32>()
            .iter()
            .map(|v| {
                v.map(weir_common::char_type::uuid_bytes)
                    .transpose()
                    .map_err(|e| ArrowError::ComputeError(e.message))
            })
            .collect::<Result<Vec<Option<[u8; 16]>>, ArrowError>>()?;
        columns[i] = Arc::new(BinaryArray::from_iter(
            bytes.iter().map(|b| b.as_ref().map(|b| &b[..])),
        ));
    }
    with_columns(&batch, columns)
}

/// TIMESTAMP columns (`zone` `None`) or TIMESTAMPTZ ones, shown in `zone`
/// (`Some(None)` is UTC).
fn format_timestamps(column: &ArrayRef, zone: Option<Option<Tz>>) -> Result<ArrayRef, ArrowError> {
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
        out.append_value(match zone {
            None => format_micros(micros.value(i), None),
            Some(tz) => format_micros_in(micros.value(i), tz),
        });
    }
    Ok(Arc::new(out.finish()))
}

/// A TIMESTAMPTZ as Postgres prints it with DateStyle ISO in time zone
/// `tz` (UTC when `None`): local time, then the offset (`+00`, `-05`,
/// `+05:30`).
pub fn format_micros_in(micros: i64, tz: Option<Tz>) -> String {
    let offset_secs = match (tz, DateTime::from_timestamp_micros(micros)) {
        (Some(tz), Some(utc)) => utc.with_timezone(&tz).offset().fix().local_minus_utc(),
        _ => 0,
    };
    let local = micros.saturating_add(i64::from(offset_secs) * 1_000_000);
    format_micros(local, Some(offset_secs))
}

/// One timestamp, as Postgres prints it with DateStyle ISO, followed by
/// the UTC offset `offset_secs` when it is a TIMESTAMPTZ.
pub fn format_micros(micros: i64, offset_secs: Option<i32>) -> String {
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
    if let Some(offset) = offset_secs {
        let sign = if offset < 0 { '-' } else { '+' };
        let abs = offset.unsigned_abs();
        s.push_str(&format!("{sign}{:02}", abs / 3600));
        if abs % 3600 != 0 {
            s.push_str(&format!(":{:02}", abs % 3600 / 60));
        }
        if abs % 60 != 0 {
            s.push_str(&format!(":{:02}", abs % 60));
        }
    }
    s
}

/// The binary NUMERIC encoder holds 28 significant digits.
fn check_binary_decimal(column: &ArrayRef) -> Result<(), ArrowError> {
    const LIMIT: i128 = 79_228_162_514_264_337_593_543_950_335;
    if let Some(d) = column.as_any().downcast_ref::<Decimal128Array>() {
        if d.iter().flatten().any(|v| !(-LIMIT..=LIMIT).contains(&v)) {
            return Err(ArrowError::ArithmeticOverflow(
                "numeric value has more than 28 digits, which the binary format cannot carry; request text format".into(),
            ));
        }
    }
    Ok(())
}

fn format_floats(column: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let is_f32 = column.data_type() == &DataType::Float32;
    let as_f64 = cast(column, &DataType::Float64)?;
    let values = as_f64
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(|| ArrowError::CastError("float cast failed".into()))?;
    let mut out = StringBuilder::with_capacity(values.len(), values.len() * 8);
    for i in 0..values.len() {
        if values.is_null(i) {
            out.append_null();
        } else if is_f32 {
            out.append_value(format_float(values.value(i) as f32 as f64, true));
        } else {
            out.append_value(format_float(values.value(i), false));
        }
    }
    Ok(Arc::new(out.finish()))
}

/// A float as Postgres prints it (shortest exact digits; exponent form
/// outside 1e-4 .. 1e15, or 1e6 for REAL).
pub fn format_float(v: f64, is_f32: bool) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let sci = if is_f32 {
        format!("{:e}", v as f32)
    } else {
        format!("{v:e}")
    };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let max_fixed = if is_f32 { 6 } else { 15 };
    if v != 0.0 && (exp < -4 || exp >= max_fixed) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else if is_f32 {
        format!("{}", v as f32)
    } else {
        format!("{v}")
    }
}

fn format_intervals(column: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let values = column
        .as_any()
        .downcast_ref::<IntervalMonthDayNanoArray>()
        .ok_or_else(|| ArrowError::CastError("interval cast failed".into()))?;
    let mut out = StringBuilder::with_capacity(values.len(), values.len() * 16);
    for i in 0..values.len() {
        if values.is_null(i) {
            out.append_null();
        } else {
            let v = values.value(i);
            out.append_value(format_interval(v.months, v.days, v.nanoseconds / 1000));
        }
    }
    Ok(Arc::new(out.finish()))
}

/// An interval as Postgres prints it with IntervalStyle `postgres`.
pub fn format_interval(months: i32, days: i32, micros: i64) -> String {
    let mut parts: Vec<String> = Vec::new();
    let (years, mons) = (months / 12, months % 12);
    let unit = |n: i64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    if years != 0 {
        parts.push(unit(years as i64, "year", "years"));
    }
    if mons != 0 {
        parts.push(unit(mons as i64, "mon", "mons"));
    }
    if days != 0 {
        parts.push(unit(days as i64, "day", "days"));
    }
    if micros != 0 || parts.is_empty() {
        let sign = if micros < 0 {
            "-"
        } else if !parts.is_empty() && (months < 0 || days < 0) {
            "+"
        } else {
            ""
        };
        let m = micros.unsigned_abs();
        let (h, rem) = (m / 3_600_000_000, m % 3_600_000_000);
        let (min, rem) = (rem / 60_000_000, rem % 60_000_000);
        let (sec, frac) = (rem / 1_000_000, rem % 1_000_000);
        let mut t = format!("{sign}{h:02}:{min:02}:{sec:02}");
        if frac != 0 {
            t.push('.');
            t.push_str(format!("{frac:06}").trim_end_matches('0'));
        }
        parts.push(t);
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn floats_like_postgres() {
        assert_eq!(format_float(2.0, false), "2");
        assert_eq!(format_float(-3.0, false), "-3");
        assert_eq!(format_float(1e20, false), "1e+20");
        assert_eq!(format_float(1.5e-7, false), "1.5e-07");
        assert_eq!(format_float(123456789012345.0, false), "123456789012345");
        assert_eq!(format_float(0.1 + 0.2, false), "0.30000000000000004");
        assert_eq!(format_float(f64::INFINITY, false), "Infinity");
        assert_eq!(format_float(1.0 / 3.0, true), "0.33333334");
        assert_eq!(format_float(1234567.0, true), "1.234567e+06");
    }

    #[test]
    fn intervals_like_postgres() {
        assert_eq!(
            format_interval(14, 3, 14_706_500_000),
            "1 year 2 mons 3 days 04:05:06.5"
        );
        assert_eq!(format_interval(0, 0, 0), "00:00:00");
        assert_eq!(format_interval(0, 0, -1_500_000), "-00:00:01.5");
        assert_eq!(format_interval(0, 1, 7_200_000_000), "1 day 02:00:00");
    }

    use super::*;

    #[test]
    fn like_postgres() {
        assert_eq!(format_micros(0, None), "1970-01-01 00:00:00");
        assert_eq!(
            format_micros(1_500_000, Some(0)),
            "1970-01-01 00:00:01.5+00"
        );
        assert_eq!(format_micros(-1, None), "1969-12-31 23:59:59.999999");
        // TIMESTAMPTZ in a session time zone: local time and its offset,
        // daylight saving time included.
        let jan = 1_704_164_645_000_000; // 2024-01-02 03:04:05 UTC
        let jul = 1_719_889_445_000_000; // 2024-07-02 03:04:05 UTC
        assert_eq!(format_micros_in(jan, None), "2024-01-02 03:04:05+00");
        let ny = Some(chrono_tz::Tz::America__New_York);
        assert_eq!(format_micros_in(jan, ny), "2024-01-01 22:04:05-05");
        assert_eq!(format_micros_in(jul, ny), "2024-07-01 23:04:05-04");
        let kolkata = Some(chrono_tz::Tz::Asia__Kolkata);
        assert_eq!(format_micros_in(jan, kolkata), "2024-01-02 08:34:05+05:30");
    }
}
