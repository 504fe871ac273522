//! The `datagen` connector: a row generator that accepts the options of
//! Apache Flink's DataGen SQL connector and produces Arrow record batches.
//!
//! # Options
//!
//! Keys are spelled as in Flink (and arrive lower-cased); values are strings.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `connector` | | `'datagen'`; its value is not checked here |
//! | `rows-per-second` | 10000 | emit rate; only exposed, the caller throttles |
//! | `number-of-rows` | unbounded | total rows; a `sequence` field also bounds the source |
//! | `seed` | 0 | Weir extension: seed of the deterministic generator |
//! | `fields.<col>.kind` | `random` | `random` or `sequence` |
//! | `fields.<col>.min`, `.max` | range of the type | bounds (inclusive) of random numbers |
//! | `fields.<col>.length` | 100 | length of random strings |
//! | `fields.<col>.var-len` | false | random strings get a random length in `1..=length` |
//! | `fields.<col>.max-past` | 0 | random timestamps lie in `[now - max-past, now]` |
//! | `fields.<col>.null-rate` | 0.0 | share of NULLs of a random field |
//! | `fields.<col>.start`, `.end` | required | inclusive bounds of a sequence field |
//!
//! As in Flink, an option key that is unknown, names a column the table does
//! not have, or does not apply to the column's type and kind (say `min` on a
//! string) is an error. Flink's default numeric bounds are kept: the full
//! range of integer types, `[MIN_VALUE, MAX_VALUE]` of Java (the smallest
//! positive value up to the largest) for floating point types, and `[0, the
//! largest value of the type]` for decimals (Flink clamps decimal bounds to
//! the type's range, and so does Weir). Random strings are lower-case
//! hexadecimal, like Flink's `nextHexString`. `max-past` is a Flink duration
//! (`'500'` milliseconds, `'10 s'`, `'5 min'`, `'1 h'`, `'2 d'`, ...).
//!
//! # Determinism
//!
//! Every value is a pure function of (`seed`, column name, row index): row
//! `i` is the same whatever offset a generator starts at and however rows are
//! cut into batches, so a checkpoint only records the offset
//! ([`DatagenGenerator::offset`]). A sequence field holds `start + i`.
//!
//! Flink's time types read the wall clock; Weir replaces the wall clock with
//! a *row clock* so output stays replayable: row `i` is generated at
//! `BASE_TIME + i / rows-per-second` seconds, where `BASE_TIME` is
//! [`BASE_TIME_MILLIS`] (2024-01-01T00:00:00Z). This is the time at which a
//! source throttled to `rows-per-second` would emit the row, so event time
//! advances as it does in Flink. A `DATE` column holds the day of the row
//! clock and a `TIMESTAMP` column the row clock minus a random past of at
//! most `max-past`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use weir_common::arrow::array::{
    ArrayRef, ArrowPrimitiveType, BooleanArray, GenericStringBuilder, OffsetSizeTrait,
    PrimitiveArray, StringViewBuilder,
};
use weir_common::arrow::buffer::{BooleanBuffer, NullBuffer, ScalarBuffer};
use weir_common::arrow::compute::kernels::cast_utils::parse_decimal;
use weir_common::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, Int8Type, SchemaRef, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use weir_common::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::ConnectorError;

/// Default of `rows-per-second` (Flink's).
pub const DEFAULT_ROWS_PER_SECOND: u64 = 10_000;

/// Default of `fields.<col>.length` for random strings (Flink's).
pub const DEFAULT_STRING_LENGTH: usize = 100;

/// Largest accepted `fields.<col>.length`.
pub const MAX_STRING_LENGTH: usize = 1 << 20;

/// Start of the row clock that replaces the wall clock for `DATE` and
/// `TIMESTAMP` columns: 2024-01-01T00:00:00Z in milliseconds since the epoch.
pub const BASE_TIME_MILLIS: i64 = 1_704_067_200_000;

/// Field options Flink's datagen knows (`fields.<col>.<option>`).
const FIELD_OPTIONS: &[&str] = &[
    "kind",
    "min",
    "max",
    "max-past",
    "length",
    "var-len",
    "start",
    "end",
    "null-rate",
];

const NANOS_PER_SECOND: u128 = 1_000_000_000;
const NANOS_PER_MILLI: i128 = 1_000_000;
const MILLIS_PER_DAY: i128 = 86_400_000;
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Parsed and checked options of a `datagen` source.
#[derive(Debug, Clone, PartialEq)]
pub struct DatagenOptions {
    /// `rows-per-second` as given (`None`: Flink's default,
    /// [`DEFAULT_ROWS_PER_SECOND`]). The generator does not throttle; the
    /// caller does.
    pub rows_per_second: Option<u64>,
    /// `number-of-rows` as given (`None`: unbounded unless a sequence field
    /// bounds the source, see [`DatagenOptions::total_rows`]).
    pub number_of_rows: Option<u64>,
    /// `seed` (Weir extension, default 0): output is a function of it.
    pub seed: u64,
    /// One generator spec per column of the schema, in schema order.
    fields: Vec<FieldSpec>,
}

/// How one column is generated.
#[derive(Debug, Clone, PartialEq)]
enum FieldSpec {
    /// `start + row index`, for `end - start + 1` rows.
    Sequence { start: i64, end: i64 },
    /// A random value, NULL with probability `null_rate`.
    Random { null_rate: f64, gen: RandomGen },
}

/// Random generator of one column, by type.
#[derive(Debug, Clone, PartialEq)]
enum RandomGen {
    Bool,
    /// Uniform in `[min, max]`.
    Int {
        min: i64,
        max: i64,
    },
    /// Uniform in `[min, max]`.
    Float {
        min: f64,
        max: f64,
    },
    /// Uniform unscaled values in `[min, max]`.
    Decimal {
        min: i128,
        max: i128,
    },
    /// Lower-case hex strings of `length` characters (or `1..=length` with `var_len`).
    Str {
        length: usize,
        var_len: bool,
    },
    /// The day of the row clock.
    Date,
    /// The row clock minus a uniform past in `[0, max_past_nanos]`.
    Timestamp {
        max_past_nanos: u64,
    },
}

/// The type families datagen knows, with the range of integer types.
#[derive(Debug, Clone, Copy)]
enum TypeClass {
    Bool,
    Int { lo: i64, hi: i64 },
    Float { single: bool },
    Decimal { precision: u8, scale: i8 },
    Str,
    Date,
    Timestamp,
}

fn classify(field: &Field) -> Result<TypeClass, ConnectorError> {
    Ok(match field.data_type() {
        DataType::Boolean => TypeClass::Bool,
        DataType::Int8 => TypeClass::Int {
            lo: i8::MIN.into(),
            hi: i8::MAX.into(),
        },
        DataType::Int16 => TypeClass::Int {
            lo: i16::MIN.into(),
            hi: i16::MAX.into(),
        },
        DataType::Int32 => TypeClass::Int {
            lo: i32::MIN.into(),
            hi: i32::MAX.into(),
        },
        DataType::Int64 => TypeClass::Int {
            lo: i64::MIN,
            hi: i64::MAX,
        },
        DataType::Float32 => TypeClass::Float { single: true },
        DataType::Float64 => TypeClass::Float { single: false },
        DataType::Decimal128(precision, scale)
            if (1..=38).contains(precision) && (0..=*precision as i8).contains(scale) =>
        {
            TypeClass::Decimal {
                precision: *precision,
                scale: *scale,
            }
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => TypeClass::Str,
        DataType::Date32 => TypeClass::Date,
        DataType::Timestamp(_, _) => TypeClass::Timestamp,
        other => {
            return Err(opt_err(format!(
                "column '{}' has type {other}, which is not supported by datagen \
                 (supported: BOOLEAN, TINYINT, SMALLINT, INT, BIGINT, FLOAT, DOUBLE, \
                 DECIMAL, VARCHAR, DATE, TIMESTAMP)",
                field.name()
            )))
        }
    })
}

fn opt_err(message: impl Into<String>) -> ConnectorError {
    ConnectorError::Option(message.into())
}

/// The options of one column, by option name (`kind`, `min`, ...), with the
/// full key for messages. Options are taken as they are used; what is left is
/// not supported for the column.
struct ColumnOptions<'a> {
    column: &'a str,
    options: BTreeMap<&'a str, (&'a str, &'a str)>,
}

impl<'a> ColumnOptions<'a> {
    fn take(&mut self, name: &str) -> Option<(&'a str, &'a str)> {
        self.options.remove(name)
    }

    fn finish(self, type_name: &DataType, kind: &str) -> Result<(), ConnectorError> {
        match self.options.values().next() {
            None => Ok(()),
            Some((key, _)) => Err(opt_err(format!(
                "datagen option '{key}' is not supported for column '{}' of type {type_name} \
                 with kind '{kind}'",
                self.column
            ))),
        }
    }
}

impl DatagenOptions {
    /// Parse and check `options` (lower-case keys) against `schema`.
    pub fn parse(
        schema: &SchemaRef,
        options: &BTreeMap<String, String>,
    ) -> Result<Self, ConnectorError> {
        let mut rows_per_second = None;
        let mut number_of_rows = None;
        let mut seed = 0;
        let mut columns: Vec<ColumnOptions<'_>> = schema
            .fields()
            .iter()
            .map(|f| ColumnOptions {
                column: f.name(),
                options: BTreeMap::new(),
            })
            .collect();

        for (key, value) in options {
            match key.as_str() {
                "connector" => {}
                "rows-per-second" => {
                    let rate = parse_u64(key, value)?;
                    if rate == 0 {
                        return Err(opt_err(format!(
                            "datagen option '{key}' must be positive, got '{value}'"
                        )));
                    }
                    rows_per_second = Some(rate);
                }
                "number-of-rows" => number_of_rows = Some(parse_u64(key, value)?),
                "seed" => seed = parse_u64(key, value)?,
                _ => {
                    let Some((column, option)) = key
                        .strip_prefix("fields.")
                        .and_then(|rest| rest.rsplit_once('.'))
                    else {
                        return Err(opt_err(format!(
                            "unknown datagen option '{key}' (supported: connector, \
                             rows-per-second, number-of-rows, seed, fields.<column>.<option>)"
                        )));
                    };
                    if !FIELD_OPTIONS.contains(&option) {
                        return Err(opt_err(format!(
                            "unknown datagen option '{key}': '{option}' is not a field option \
                             (supported: {})",
                            FIELD_OPTIONS.join(", ")
                        )));
                    }
                    let index = find_column(schema, column).ok_or_else(|| {
                        let names: Vec<&str> =
                            schema.fields().iter().map(|f| f.name().as_str()).collect();
                        opt_err(format!(
                            "datagen option '{key}' names column '{column}', which does not \
                             exist (columns: {})",
                            names.join(", ")
                        ))
                    })?;
                    if let Some(c) = columns.get_mut(index) {
                        c.options.insert(option, (key.as_str(), value.as_str()));
                    }
                }
            }
        }

        let fields = schema
            .fields()
            .iter()
            .zip(columns)
            .map(|(field, column)| parse_field(field, column))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            rows_per_second,
            number_of_rows,
            seed,
            fields,
        })
    }

    /// Total rows this source produces (None = unbounded): `number-of-rows`,
    /// lowered to the length of the shortest sequence field.
    pub fn total_rows(&self) -> Option<u64> {
        self.fields
            .iter()
            .filter_map(|f| match f {
                FieldSpec::Sequence { start, end } => Some(sequence_len(*start, *end)),
                FieldSpec::Random { .. } => None,
            })
            .chain(self.number_of_rows)
            .min()
    }

    /// `rows-per-second`, or Flink's default [`DEFAULT_ROWS_PER_SECOND`] when unset.
    pub fn effective_rows_per_second(&self) -> u64 {
        self.rows_per_second.unwrap_or(DEFAULT_ROWS_PER_SECOND)
    }
}

/// The column `name` refers to: an exact match, else the only match ignoring
/// ASCII case (keys arrive lower-cased, column names may not be).
fn find_column(schema: &SchemaRef, name: &str) -> Option<usize> {
    let fields = schema.fields();
    if let Some(i) = fields.iter().position(|f| f.name() == name) {
        return Some(i);
    }
    let mut matches = fields
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name().eq_ignore_ascii_case(name));
    match (matches.next(), matches.next()) {
        (Some((i, _)), None) => Some(i),
        _ => None,
    }
}

fn sequence_len(start: i64, end: i64) -> u64 {
    let len = i128::from(end) - i128::from(start) + 1;
    u64::try_from(len).unwrap_or(u64::MAX)
}

fn parse_field(field: &Field, mut opts: ColumnOptions<'_>) -> Result<FieldSpec, ConnectorError> {
    let class = classify(field)?;
    let column = field.name();
    let kind = match opts.take("kind") {
        None => "random".to_string(),
        Some((key, value)) => {
            let kind = value.trim().to_ascii_lowercase();
            if kind != "random" && kind != "sequence" {
                return Err(opt_err(format!(
                    "datagen option '{key}' has unsupported generator kind '{value}' \
                     (expected 'random' or 'sequence')"
                )));
            }
            kind
        }
    };
    let spec = if kind == "sequence" {
        parse_sequence(field, class, &mut opts)?
    } else {
        let null_rate = match opts.take("null-rate") {
            None => 0.0,
            Some((key, value)) => {
                let rate = parse_f64(key, value)?;
                if !(0.0..=1.0).contains(&rate) {
                    return Err(opt_err(format!(
                        "datagen option '{key}' must be between 0 and 1, got '{value}'"
                    )));
                }
                if rate > 0.0 && !field.is_nullable() {
                    return Err(opt_err(format!(
                        "datagen option '{key}' asks for NULLs in column '{column}', \
                         which is NOT NULL"
                    )));
                }
                rate
            }
        };
        let gen = parse_random(column, class, &mut opts)?;
        FieldSpec::Random { null_rate, gen }
    };
    opts.finish(field.data_type(), &kind)?;
    Ok(spec)
}

fn parse_sequence(
    field: &Field,
    class: TypeClass,
    opts: &mut ColumnOptions<'_>,
) -> Result<FieldSpec, ConnectorError> {
    let column = field.name();
    let (lo, hi): (i128, i128) = match class {
        TypeClass::Int { lo, hi } => (lo.into(), hi.into()),
        TypeClass::Float { .. } | TypeClass::Str => (i64::MIN.into(), i64::MAX.into()),
        TypeClass::Decimal { precision, scale } => {
            // Whole numbers of at most `precision - scale` digits.
            let digits = u32::from(precision).saturating_sub(scale.unsigned_abs().into());
            let bound = 10_i128.checked_pow(digits).map_or(i128::MAX, |b| b - 1);
            (-bound, bound)
        }
        TypeClass::Bool | TypeClass::Date | TypeClass::Timestamp => {
            return Err(opt_err(format!(
                "generator kind 'sequence' is not supported for column '{column}' of type {} \
                 (sequences work for numeric and string columns)",
                field.data_type()
            )))
        }
    };
    let mut bound = |name: &str| -> Result<i64, ConnectorError> {
        let key = format!("fields.{column}.{name}");
        let (key, value) = opts.take(name).ok_or_else(|| {
            opt_err(format!(
                "could not find required datagen option '{key}' for the sequence generator \
                 of column '{column}'"
            ))
        })?;
        let v = parse_i64(key, value)?;
        if !(lo..=hi).contains(&i128::from(v)) {
            return Err(opt_err(format!(
                "datagen option '{key}' = '{value}' is out of range for column '{column}' \
                 of type {} (range {lo}..={hi})",
                field.data_type()
            )));
        }
        Ok(v)
    };
    let start = bound("start")?;
    let end = bound("end")?;
    if start > end {
        return Err(opt_err(format!(
            "datagen sequence of column '{column}': start {start} is greater than end {end}"
        )));
    }
    Ok(FieldSpec::Sequence { start, end })
}

fn parse_random(
    column: &str,
    class: TypeClass,
    opts: &mut ColumnOptions<'_>,
) -> Result<RandomGen, ConnectorError> {
    let min_max_err = |min: &dyn std::fmt::Display, max: &dyn std::fmt::Display| {
        opt_err(format!(
            "datagen options of column '{column}': min ({min}) is greater than max ({max})"
        ))
    };
    Ok(match class {
        TypeClass::Bool => RandomGen::Bool,
        TypeClass::Int { lo, hi } => {
            let mut bound = |name: &str, default: i64| -> Result<i64, ConnectorError> {
                let Some((key, value)) = opts.take(name) else {
                    return Ok(default);
                };
                let v = parse_i64(key, value)?;
                if v < lo || v > hi {
                    return Err(opt_err(format!(
                        "datagen option '{key}' = '{value}' is out of range for column \
                         '{column}' (range {lo}..={hi})"
                    )));
                }
                Ok(v)
            };
            let min = bound("min", lo)?;
            let max = bound("max", hi)?;
            if min > max {
                return Err(min_max_err(&min, &max));
            }
            RandomGen::Int { min, max }
        }
        TypeClass::Float { single } => {
            // Flink's defaults: Java's MIN_VALUE (smallest positive) and MAX_VALUE.
            let (smallest, largest) = if single {
                (f64::from(f32::from_bits(1)), f64::from(f32::MAX))
            } else {
                (f64::from_bits(1), f64::MAX)
            };
            let mut bound = |name: &str, default: f64| -> Result<f64, ConnectorError> {
                let Some((key, value)) = opts.take(name) else {
                    return Ok(default);
                };
                let v = parse_f64(key, value)?;
                if !v.is_finite() || v.abs() > largest {
                    return Err(opt_err(format!(
                        "datagen option '{key}' = '{value}' is out of range for column \
                         '{column}'"
                    )));
                }
                Ok(v)
            };
            let min = bound("min", smallest)?;
            let max = bound("max", largest)?;
            if min > max {
                return Err(min_max_err(&min, &max));
            }
            RandomGen::Float { min, max }
        }
        TypeClass::Decimal { precision, scale } => {
            let largest = 10_i128
                .checked_pow(precision.into())
                .map_or(i128::MAX, |b| b - 1);
            let mut bound = |name: &str, default: i128| -> Result<i128, ConnectorError> {
                let Some((key, value)) = opts.take(name) else {
                    return Ok(default);
                };
                parse_decimal_bound(key, value, precision, scale, largest)
            };
            let min = bound("min", 0)?;
            let max = bound("max", largest)?;
            if min > max {
                return Err(min_max_err(&min, &max));
            }
            RandomGen::Decimal { min, max }
        }
        TypeClass::Str => {
            let length = match opts.take("length") {
                None => DEFAULT_STRING_LENGTH,
                Some((key, value)) => {
                    let length = parse_u64(key, value)?;
                    usize::try_from(length)
                        .ok()
                        .filter(|l| *l <= MAX_STRING_LENGTH)
                        .ok_or_else(|| {
                            opt_err(format!(
                                "datagen option '{key}' = '{value}' is too large \
                                 (at most {MAX_STRING_LENGTH})"
                            ))
                        })?
                }
            };
            let var_len = match opts.take("var-len") {
                None => false,
                Some((key, value)) => parse_bool(key, value)?,
            };
            RandomGen::Str { length, var_len }
        }
        TypeClass::Date => RandomGen::Date,
        TypeClass::Timestamp => {
            let max_past_nanos = match opts.take("max-past") {
                None => 0,
                Some((key, value)) => parse_duration_nanos(key, value)?,
            };
            RandomGen::Timestamp { max_past_nanos }
        }
    })
}

fn parse_u64(key: &str, value: &str) -> Result<u64, ConnectorError> {
    value.trim().parse().map_err(|_| {
        opt_err(format!(
            "datagen option '{key}' must be a non-negative integer, got '{value}'"
        ))
    })
}

fn parse_i64(key: &str, value: &str) -> Result<i64, ConnectorError> {
    value.trim().parse().map_err(|_| {
        opt_err(format!(
            "datagen option '{key}' must be an integer, got '{value}'"
        ))
    })
}

fn parse_f64(key: &str, value: &str) -> Result<f64, ConnectorError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| {
            opt_err(format!(
                "datagen option '{key}' must be a number, got '{value}'"
            ))
        })
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConnectorError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(opt_err(format!(
            "datagen option '{key}' must be 'true' or 'false', got '{value}'"
        ))),
    }
}

/// A decimal bound as an unscaled value of `DECIMAL(precision, scale)`:
/// extra fraction digits are truncated and, as in Flink, a bound beyond the
/// type's range is clamped to it.
fn parse_decimal_bound(
    key: &str,
    value: &str,
    precision: u8,
    scale: i8,
    largest: i128,
) -> Result<i128, ConnectorError> {
    let text = value.trim();
    if let Ok(v) = parse_decimal::<Decimal128Type>(text, precision, scale) {
        return Ok(v);
    }
    let bad = || {
        opt_err(format!(
            "datagen option '{key}' must be a decimal number, got '{value}'"
        ))
    };
    let v: f64 = text.parse().map_err(|_| bad())?;
    // Only out-of-range numbers reach this point; clamp them.
    let limit = 10_f64.powi(i32::from(precision) - i32::from(scale));
    if v >= limit {
        Ok(largest)
    } else if v <= -limit {
        Ok(-largest)
    } else {
        Err(bad())
    }
}

/// A Flink duration (`TimeUtils.parseDuration`): an integer and an optional
/// unit, milliseconds when omitted.
fn parse_duration_nanos(key: &str, value: &str) -> Result<u64, ConnectorError> {
    let bad = || {
        opt_err(format!(
            "datagen option '{key}' must be a duration such as '500 ms', '10 s', '5 min', \
             '1 h' or '2 d', got '{value}'"
        ))
    };
    let text = value.trim().to_lowercase();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let number: u128 = number.parse().map_err(|_| bad())?;
    let unit_nanos: u128 = match unit.trim() {
        "ns" | "nano" | "nanos" | "nanosecond" | "nanoseconds" => 1,
        "us" | "µs" | "micro" | "micros" | "microsecond" | "microseconds" => 1_000,
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1_000_000,
        "s" | "sec" | "secs" | "second" | "seconds" => NANOS_PER_SECOND,
        "m" | "min" | "minute" | "minutes" => 60 * NANOS_PER_SECOND,
        "h" | "hour" | "hours" => 3_600 * NANOS_PER_SECOND,
        "d" | "day" | "days" => 86_400 * NANOS_PER_SECOND,
        _ => return Err(bad()),
    };
    number
        .checked_mul(unit_nanos)
        .and_then(|n| u64::try_from(n).ok())
        .filter(|n| i64::try_from(*n).is_ok())
        .ok_or_else(|| opt_err(format!("datagen option '{key}' = '{value}' is too large")))
}

// ---------------------------------------------------------------------------
// Stateless randomness: a SplitMix64 finalizer over (stream key, row index).

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finalizer: a bijective 64-bit mix with full avalanche.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The random word of `row` in the stream `key`.
fn row_hash(key: u64, row: u64) -> u64 {
    mix64(key ^ row.wrapping_mul(GAMMA))
}

/// The `j`-th further word derived from a row's word.
fn next_word(h: u64, j: u64) -> u64 {
    mix64(h.wrapping_add(j.wrapping_add(1).wrapping_mul(GAMMA)))
}

/// Uniform in `[0, 1)`.
fn unit_f64(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Uniform in `[min, max]` (multiply-shift; bias below 2^-64 per value).
fn uniform_i64(h: u64, min: i64, max: i64) -> i64 {
    let span = (i128::from(max) - i128::from(min) + 1) as u128; // at most 2^64
    let off = (u128::from(h) * span) >> 64;
    (i128::from(min) + off as i128) as i64
}

/// Uniform in `[0, max]`.
fn uniform_u64(h: u64, max: u64) -> u64 {
    let span = u128::from(max) + 1;
    ((u128::from(h) * span) >> 64) as u64
}

/// High 128 bits of the 256-bit product `a * b`.
fn mul_hi_u128(a: u128, b: u128) -> u128 {
    const LO: u128 = u64::MAX as u128;
    let (a1, a0) = (a >> 64, a & LO);
    let (b1, b0) = (b >> 64, b & LO);
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 64) + (p01 & LO) + (p10 & LO);
    p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64)
}

/// Uniform in `[min, max]` from a 128-bit random word.
fn uniform_i128(h: u128, min: i128, max: i128) -> i128 {
    // The true span of a Decimal128 range is below 2^128, so the wrapping
    // difference read as unsigned is exact.
    let span = (max.wrapping_sub(min) as u128).saturating_add(1);
    min.wrapping_add(mul_hi_u128(h, span) as i128)
}

/// Stream keys of one column.
#[derive(Debug, Clone, Copy)]
struct ColumnKeys {
    value: u64,
    null: u64,
    len: u64,
}

impl ColumnKeys {
    fn new(seed: u64, column: &str) -> Self {
        let base = xxh3_64_with_seed(column.as_bytes(), seed);
        let stream = |s: u64| mix64(base ^ mix64(s.wrapping_mul(GAMMA)));
        Self {
            value: stream(1),
            null: stream(2),
            len: stream(3),
        }
    }
}

/// The row clock: row `i` happens at `BASE + i / rows_per_second`.
#[derive(Debug, Clone, Copy)]
struct RowClock {
    rows_per_second: u128,
}

impl RowClock {
    fn nanos(self, row: u64) -> i128 {
        let elapsed = u128::from(row) * NANOS_PER_SECOND / self.rows_per_second;
        i128::from(BASE_TIME_MILLIS) * NANOS_PER_MILLI + elapsed as i128
    }
}

// ---------------------------------------------------------------------------

/// Generates the rows of a `datagen` source as record batches, from a row
/// offset on. Row `i` only depends on the seed, the options and `i`.
#[derive(Debug)]
pub struct DatagenGenerator {
    schema: SchemaRef,
    options: DatagenOptions,
    keys: Vec<ColumnKeys>,
    clock: RowClock,
    total: Option<u64>,
    offset: u64,
    buf: String,
}

impl DatagenGenerator {
    /// Rows of `schema` from row index `offset` on (replayable: row i is
    /// always the same for the same seed/options). `schema` must be the one
    /// `options` were parsed against; otherwise [`Self::next_batch`] fails.
    pub fn new(schema: SchemaRef, options: DatagenOptions, offset: u64) -> Self {
        let keys = schema
            .fields()
            .iter()
            .map(|f| ColumnKeys::new(options.seed, f.name()))
            .collect();
        let clock = RowClock {
            rows_per_second: options.effective_rows_per_second().max(1).into(),
        };
        let total = options.total_rows();
        Self {
            schema,
            options,
            keys,
            clock,
            total,
            offset,
            buf: String::new(),
        }
    }

    /// Like [`DatagenGenerator::next_batch`], but only rows before `limit`:
    /// an empty batch at `limit`, `None` once the source is done.
    pub fn next_batch_before(
        &mut self,
        max_rows: usize,
        limit: u64,
    ) -> Result<Option<RecordBatch>, ConnectorError> {
        if self.total.is_some_and(|t| self.offset >= t) {
            return Ok(None);
        }
        if self.offset >= limit {
            return Ok(Some(RecordBatch::new_empty(Arc::clone(&self.schema))));
        }
        let n = usize::try_from(limit - self.offset).map_or(max_rows, |r| r.min(max_rows));
        self.next_batch(n)
    }

    /// The row count of a bounded source.
    pub fn end(&self) -> Option<u64> {
        self.total
    }

    /// Up to `max_rows` next rows, or None when the source is exhausted
    /// (`max_rows == 0` yields an empty batch while rows remain).
    pub fn next_batch(&mut self, max_rows: usize) -> Result<Option<RecordBatch>, ConnectorError> {
        let remaining = match self.total {
            Some(total) => total.saturating_sub(self.offset),
            None => u64::MAX - self.offset,
        };
        if remaining == 0 {
            return Ok(None);
        }
        let n = usize::try_from(remaining).map_or(max_rows, |r| r.min(max_rows));
        if self.schema.fields().len() != self.options.fields.len() {
            return Err(opt_err(format!(
                "datagen options were parsed for {} columns, the schema has {}",
                self.options.fields.len(),
                self.schema.fields().len()
            )));
        }
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for ((field, spec), keys) in self
            .schema
            .fields()
            .iter()
            .zip(&self.options.fields)
            .zip(&self.keys)
        {
            let ctx = Ctx {
                keys: *keys,
                clock: self.clock,
                start: self.offset,
                n,
            };
            columns.push(build_column(field, spec, &ctx, &mut self.buf)?);
        }
        let batch = RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        self.offset += n as u64;
        Ok(Some(batch))
    }

    /// Index of the next row (the offset a checkpoint records).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The options this generator runs with.
    pub fn options(&self) -> &DatagenOptions {
        &self.options
    }
}

/// What a column builder needs: its random streams and the rows to build.
struct Ctx {
    keys: ColumnKeys,
    clock: RowClock,
    /// Index of the first row.
    start: u64,
    /// Number of rows.
    n: usize,
}

impl Ctx {
    fn row(&self, k: usize) -> u64 {
        self.start + k as u64
    }

    fn value_hash(&self, k: usize) -> u64 {
        row_hash(self.keys.value, self.row(k))
    }

    fn is_valid(&self, null_rate: f64, k: usize) -> bool {
        null_rate <= 0.0 || unit_f64(row_hash(self.keys.null, self.row(k))) >= null_rate
    }

    fn nulls(&self, null_rate: f64) -> Option<NullBuffer> {
        (null_rate > 0.0).then(|| {
            NullBuffer::new(BooleanBuffer::collect_bool(self.n, |k| {
                self.is_valid(null_rate, k)
            }))
        })
    }
}

fn primitive<T: ArrowPrimitiveType>(
    n: usize,
    nulls: Option<NullBuffer>,
    f: impl FnMut(usize) -> T::Native,
) -> Result<PrimitiveArray<T>, ConnectorError> {
    let values: ScalarBuffer<T::Native> = (0..n).map(f).collect();
    Ok(PrimitiveArray::<T>::try_new(values, nulls)?)
}

fn arc<T: weir_common::arrow::array::Array + 'static>(a: T) -> ArrayRef {
    Arc::new(a)
}

fn build_column(
    field: &Field,
    spec: &FieldSpec,
    ctx: &Ctx,
    buf: &mut String,
) -> Result<ArrayRef, ConnectorError> {
    let n = ctx.n;
    let dt = field.data_type();
    let array = match spec {
        FieldSpec::Sequence { start, .. } => {
            // Within [start, end]: the row count is bounded by the sequence.
            let seq = |k: usize| (i128::from(*start) + i128::from(ctx.row(k))) as i64;
            match dt {
                DataType::Int8 => arc(primitive::<Int8Type>(n, None, |k| seq(k) as i8)?),
                DataType::Int16 => arc(primitive::<Int16Type>(n, None, |k| seq(k) as i16)?),
                DataType::Int32 => arc(primitive::<Int32Type>(n, None, |k| seq(k) as i32)?),
                DataType::Int64 => arc(primitive::<Int64Type>(n, None, seq)?),
                DataType::Float32 => arc(primitive::<Float32Type>(n, None, |k| seq(k) as f32)?),
                DataType::Float64 => arc(primitive::<Float64Type>(n, None, |k| seq(k) as f64)?),
                DataType::Decimal128(p, s) if *s >= 0 => {
                    let factor = 10_i128
                        .checked_pow(u32::from(s.unsigned_abs()))
                        .unwrap_or(i128::MAX);
                    arc(primitive::<Decimal128Type>(n, None, |k| {
                        i128::from(seq(k)).saturating_mul(factor)
                    })?
                    .with_precision_and_scale(*p, *s)?)
                }
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                    string_array(dt, n, n * 8, buf, |k, out| {
                        let _ = write!(out, "{}", seq(k));
                        true
                    })
                    .ok_or_else(|| mismatch(field))?
                }
                _ => return Err(mismatch(field)),
            }
        }
        FieldSpec::Random { null_rate, gen } => {
            let null_rate = *null_rate;
            let nulls = ctx.nulls(null_rate);
            match (gen, dt) {
                (RandomGen::Bool, DataType::Boolean) => arc(BooleanArray::new(
                    BooleanBuffer::collect_bool(n, |k| ctx.value_hash(k) & 1 == 1),
                    nulls,
                )),
                (RandomGen::Int { min, max }, _) => {
                    let v = |k: usize| uniform_i64(ctx.value_hash(k), *min, *max);
                    match dt {
                        DataType::Int8 => arc(primitive::<Int8Type>(n, nulls, |k| v(k) as i8)?),
                        DataType::Int16 => arc(primitive::<Int16Type>(n, nulls, |k| v(k) as i16)?),
                        DataType::Int32 => arc(primitive::<Int32Type>(n, nulls, |k| v(k) as i32)?),
                        DataType::Int64 => arc(primitive::<Int64Type>(n, nulls, v)?),
                        _ => return Err(mismatch(field)),
                    }
                }
                (RandomGen::Float { min, max }, _) => {
                    let (min, max) = (*min, *max);
                    // min*(1-u) + max*u cannot overflow even for [-MAX, MAX].
                    let v = |k: usize| {
                        let u = unit_f64(ctx.value_hash(k));
                        (min * (1.0 - u) + max * u).clamp(min, max)
                    };
                    match dt {
                        DataType::Float32 => arc(primitive::<Float32Type>(n, nulls, |k| {
                            (v(k) as f32).clamp(min as f32, max as f32)
                        })?),
                        DataType::Float64 => arc(primitive::<Float64Type>(n, nulls, v)?),
                        _ => return Err(mismatch(field)),
                    }
                }
                (RandomGen::Decimal { min, max }, DataType::Decimal128(p, s)) => {
                    arc(primitive::<Decimal128Type>(n, nulls, |k| {
                        let h = ctx.value_hash(k);
                        let wide = (u128::from(h) << 64) | u128::from(next_word(h, 0));
                        uniform_i128(wide, *min, *max)
                    })?
                    .with_precision_and_scale(*p, *s)?)
                }
                (RandomGen::Str { length, var_len }, _) => {
                    let (length, var_len) = (*length, *var_len);
                    let capacity = n.saturating_mul(if var_len { length / 2 + 1 } else { length });
                    string_array(dt, n, capacity, buf, |k, out| {
                        if !ctx.is_valid(null_rate, k) {
                            return false;
                        }
                        let len = if var_len && length > 0 {
                            1 + uniform_u64(row_hash(ctx.keys.len, ctx.row(k)), length as u64 - 1)
                                as usize
                        } else {
                            length
                        };
                        write_hex(out, ctx.value_hash(k), len);
                        true
                    })
                    .ok_or_else(|| mismatch(field))?
                }
                (RandomGen::Date, DataType::Date32) => {
                    arc(primitive::<Date32Type>(n, nulls, |k| {
                        let millis = ctx.clock.nanos(ctx.row(k)).div_euclid(NANOS_PER_MILLI);
                        clamp_i32(millis.div_euclid(MILLIS_PER_DAY))
                    })?)
                }
                (RandomGen::Timestamp { max_past_nanos }, DataType::Timestamp(unit, tz)) => {
                    let nanos = |k: usize| {
                        let row = ctx.row(k);
                        let past = if *max_past_nanos > 0 {
                            uniform_u64(ctx.value_hash(k), *max_past_nanos)
                        } else {
                            0
                        };
                        ctx.clock.nanos(row) - i128::from(past)
                    };
                    let in_unit = |k: usize, per: i128| clamp_i64(nanos(k).div_euclid(per));
                    match unit {
                        TimeUnit::Second => arc(primitive::<TimestampSecondType>(n, nulls, |k| {
                            in_unit(k, 1_000_000_000)
                        })?
                        .with_timezone_opt(tz.clone())),
                        TimeUnit::Millisecond => {
                            arc(primitive::<TimestampMillisecondType>(n, nulls, |k| {
                                in_unit(k, 1_000_000)
                            })?
                            .with_timezone_opt(tz.clone()))
                        }
                        TimeUnit::Microsecond => {
                            arc(primitive::<TimestampMicrosecondType>(n, nulls, |k| {
                                in_unit(k, 1_000)
                            })?
                            .with_timezone_opt(tz.clone()))
                        }
                        TimeUnit::Nanosecond => {
                            arc(
                                primitive::<TimestampNanosecondType>(n, nulls, |k| in_unit(k, 1))?
                                    .with_timezone_opt(tz.clone()),
                            )
                        }
                    }
                }
                _ => return Err(mismatch(field)),
            }
        }
    };
    Ok(array)
}

fn mismatch(field: &Field) -> ConnectorError {
    opt_err(format!(
        "datagen column '{}' of type {} does not match the options it was parsed with",
        field.name(),
        field.data_type()
    ))
}

fn clamp_i64(v: i128) -> i64 {
    v.clamp(i64::MIN.into(), i64::MAX.into()) as i64
}

fn clamp_i32(v: i128) -> i32 {
    v.clamp(i32::MIN.into(), i32::MAX.into()) as i32
}

/// Append `len` lower-case hex digits drawn from the row word `h`.
fn write_hex(out: &mut String, h: u64, len: usize) {
    let mut written = 0;
    let mut j = 0;
    while written < len {
        let mut word = next_word(h, j);
        let take = (len - written).min(16);
        for _ in 0..take {
            out.push(char::from(HEX[(word & 0xF) as usize]));
            word >>= 4;
        }
        written += take;
        j += 1;
    }
}

/// Where string values go: the three Arrow string layouts.
trait StringSink {
    fn push(&mut self, value: &str);
    fn push_null(&mut self);
    fn finish_array(self) -> ArrayRef;
}

impl<O: OffsetSizeTrait> StringSink for GenericStringBuilder<O> {
    fn push(&mut self, value: &str) {
        self.append_value(value);
    }
    fn push_null(&mut self) {
        self.append_null();
    }
    fn finish_array(mut self) -> ArrayRef {
        Arc::new(self.finish())
    }
}

impl StringSink for StringViewBuilder {
    fn push(&mut self, value: &str) {
        self.append_value(value);
    }
    fn push_null(&mut self) {
        self.append_null();
    }
    fn finish_array(mut self) -> ArrayRef {
        Arc::new(self.finish())
    }
}

fn fill_strings<S: StringSink>(
    mut sink: S,
    n: usize,
    buf: &mut String,
    mut value: impl FnMut(usize, &mut String) -> bool,
) -> ArrayRef {
    for k in 0..n {
        buf.clear();
        if value(k, buf) {
            sink.push(buf);
        } else {
            sink.push_null();
        }
    }
    sink.finish_array()
}

/// A string array of type `dt` whose row `k` is written by `value` (which
/// returns false for NULL); None if `dt` is no string type.
fn string_array(
    dt: &DataType,
    n: usize,
    capacity: usize,
    buf: &mut String,
    value: impl FnMut(usize, &mut String) -> bool,
) -> Option<ArrayRef> {
    Some(match dt {
        DataType::Utf8 => fill_strings(
            GenericStringBuilder::<i32>::with_capacity(n, capacity),
            n,
            buf,
            value,
        ),
        DataType::LargeUtf8 => fill_strings(
            GenericStringBuilder::<i64>::with_capacity(n, capacity),
            n,
            buf,
            value,
        ),
        DataType::Utf8View => fill_strings(StringViewBuilder::with_capacity(n), n, buf, value),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_common::arrow::array::{
        Array, AsArray, Date32Array, Decimal128Array, Int64Array, Int8Array, StringArray,
        TimestampNanosecondArray,
    };
    use weir_common::arrow::compute::concat_batches;
    use weir_common::arrow::datatypes::Schema;

    fn schema(fields: Vec<Field>) -> SchemaRef {
        Arc::new(Schema::new(fields))
    }

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(schema: &SchemaRef, pairs: &[(&str, &str)]) -> DatagenOptions {
        DatagenOptions::parse(schema, &opts(pairs)).unwrap()
    }

    fn parse_err(schema: &SchemaRef, pairs: &[(&str, &str)]) -> String {
        match DatagenOptions::parse(schema, &opts(pairs)) {
            Err(ConnectorError::Option(m)) => m,
            other => panic!("expected an option error, got {other:?}"),
        }
    }

    /// All rows of a generator from `offset`, cut into batches of `batch`.
    fn collect(
        schema: &SchemaRef,
        options: &DatagenOptions,
        offset: u64,
        batch: usize,
        limit: usize,
    ) -> RecordBatch {
        let mut generator = DatagenGenerator::new(schema.clone(), options.clone(), offset);
        let mut batches = vec![];
        let mut rows = 0;
        while rows < limit {
            let Some(b) = generator.next_batch(batch.min(limit - rows)).unwrap() else {
                break;
            };
            assert!(b.num_rows() > 0);
            rows += b.num_rows();
            batches.push(b);
        }
        assert_eq!(generator.offset(), offset + rows as u64);
        concat_batches(schema, &batches).unwrap()
    }

    fn flink_schema() -> SchemaRef {
        schema(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("price", DataType::Float64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        ])
    }

    #[test]
    fn flink_ddl_options() {
        let schema = flink_schema();
        let options = parse(
            &schema,
            &[
                ("connector", "datagen"),
                ("number-of-rows", "1000"),
                ("fields.id.kind", "sequence"),
                ("fields.id.start", "1"),
                ("fields.id.end", "500"),
                ("fields.price.min", "1"),
                ("fields.price.max", "100"),
                ("fields.name.length", "10"),
            ],
        );
        assert_eq!(options.total_rows(), Some(500));
        assert_eq!(options.number_of_rows, Some(1000));
        assert_eq!(options.rows_per_second, None);
        assert_eq!(options.effective_rows_per_second(), 10_000);
        assert_eq!(options.seed, 0);

        let mut generator = DatagenGenerator::new(schema.clone(), options.clone(), 0);
        let mut batches = vec![];
        while let Some(b) = generator.next_batch(128).unwrap() {
            assert!(b.num_rows() <= 128);
            batches.push(b);
        }
        assert_eq!(generator.offset(), 500);
        assert!(generator.next_batch(128).unwrap().is_none());
        let all = concat_batches(&schema, &batches).unwrap();
        assert_eq!(all.num_rows(), 500);

        let ids = all.column(0).as_primitive::<Int64Type>();
        assert_eq!(ids.values().to_vec(), (1..=500).collect::<Vec<i64>>());
        let names = all.column(1).as_string::<i32>();
        assert_eq!(names.null_count(), 0);
        for name in names.iter().flatten() {
            assert_eq!(name.len(), 10);
            assert!(name.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        let distinct: std::collections::HashSet<_> = names.iter().collect();
        assert!(distinct.len() > 490);
        let prices = all.column(2).as_primitive::<Float64Type>();
        assert!(prices.values().iter().all(|p| (1.0..=100.0).contains(p)));
        let mean = prices.values().iter().sum::<f64>() / 500.0;
        assert!((40.0..60.0).contains(&mean), "mean {mean}");
        // max-past 0: the row clock, 10 000 rows per second from the base time.
        let ts = all.column(3).as_primitive::<TimestampNanosecondType>();
        let base = BASE_TIME_MILLIS * 1_000_000;
        for (i, t) in ts.values().iter().enumerate() {
            assert_eq!(*t, base + i as i64 * 100_000);
        }
    }

    #[test]
    fn deterministic_and_replayable() {
        let schema = schema(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Utf8View, true),
            Field::new("c", DataType::Float32, true),
            Field::new("d", DataType::Decimal128(12, 3), true),
            Field::new("e", DataType::Boolean, true),
            Field::new("f", DataType::LargeUtf8, false),
            Field::new(
                "g",
                DataType::Timestamp(TimeUnit::Millisecond, Some("+02:00".into())),
                true,
            ),
            Field::new("h", DataType::Date32, true),
        ]);
        let pairs = [
            ("seed", "42"),
            ("fields.a.null-rate", "0.2"),
            ("fields.b.length", "20"),
            ("fields.b.var-len", "true"),
            ("fields.b.null-rate", "0.1"),
            ("fields.f.kind", "sequence"),
            ("fields.f.start", "-5"),
            ("fields.f.end", "100000"),
            ("fields.g.max-past", "5 min"),
        ];
        let options = parse(&schema, &pairs);
        let full = collect(&schema, &options, 0, 1000, 3000);
        assert_eq!(full.num_rows(), 3000);
        // Same rows for other batch sizes.
        for batch in [1, 7, 64, 999, 5000] {
            assert_eq!(collect(&schema, &options, 0, batch, 3000), full);
        }
        // Replay from an offset reproduces the tail.
        for offset in [1, 123, 2999] {
            let tail = collect(&schema, &options, offset, 37, 3000 - offset as usize);
            assert_eq!(tail, full.slice(offset as usize, 3000 - offset as usize));
        }
        // A new parse gives the same options and rows.
        assert_eq!(parse(&schema, &pairs), options);
        // Another seed changes random columns but not the sequence.
        let mut other = pairs.to_vec();
        other[0] = ("seed", "43");
        let other = collect(&schema, &parse(&schema, &other), 0, 1000, 3000);
        assert_ne!(other.column(0), full.column(0));
        assert_ne!(other.column(1), full.column(1));
        assert_eq!(other.column(5), full.column(5));
        // Column types are the schema's.
        assert_eq!(full.schema(), schema);
        let g = full.column(6).as_primitive::<TimestampMillisecondType>();
        assert_eq!(g.timezone(), Some("+02:00"));
        let f = full.column(5).as_string::<i64>();
        assert_eq!(f.value(0), "-5");
        assert_eq!(f.value(2999), "2994");
        let b = full.column(1).as_string_view();
        for s in b.iter().flatten() {
            assert!((1..=20).contains(&s.len()));
        }
        let lens: std::collections::HashSet<_> = b.iter().flatten().map(str::len).collect();
        assert!(lens.len() > 15, "var-len gives many lengths: {lens:?}");
    }

    #[test]
    fn unbounded_without_number_of_rows() {
        let schema = schema(vec![Field::new("x", DataType::Int8, true)]);
        let options = parse(&schema, &[]);
        assert_eq!(options.total_rows(), None);
        let mut generator = DatagenGenerator::new(schema.clone(), options.clone(), u64::MAX - 3);
        assert_eq!(generator.next_batch(10).unwrap().unwrap().num_rows(), 3);
        assert!(generator.next_batch(10).unwrap().is_none());
        // Default integer range is the type's.
        let all = collect(&schema, &options, 0, 4096, 4096);
        let x = all.column(0).as_any().downcast_ref::<Int8Array>().unwrap();
        assert!(x.values().iter().any(|v| *v < -100));
        assert!(x.values().iter().any(|v| *v > 100));
        // Zero rows requested: an empty batch while rows remain.
        let mut generator = DatagenGenerator::new(schema.clone(), options, 5);
        assert_eq!(generator.next_batch(0).unwrap().unwrap().num_rows(), 0);
        assert_eq!(generator.offset(), 5);
    }

    #[test]
    fn number_of_rows_bounds_and_empty_schema() {
        let empty = schema(vec![]);
        let options = parse(&empty, &[("number-of-rows", "10")]);
        let mut generator = DatagenGenerator::new(empty.clone(), options.clone(), 0);
        assert_eq!(generator.next_batch(4).unwrap().unwrap().num_rows(), 4);
        assert_eq!(generator.next_batch(100).unwrap().unwrap().num_rows(), 6);
        assert!(generator.next_batch(100).unwrap().is_none());
        let options = parse(&empty, &[("number-of-rows", "0")]);
        assert!(DatagenGenerator::new(empty, options, 0)
            .next_batch(1)
            .unwrap()
            .is_none());
    }

    #[test]
    fn errors_are_option_errors() {
        let s = flink_schema();
        let m = parse_err(&s, &[("rows-per-sec", "5")]);
        assert!(m.contains("unknown datagen option 'rows-per-sec'"), "{m}");
        let m = parse_err(&s, &[("fields.id.minimum", "5")]);
        assert!(m.contains("'minimum' is not a field option"), "{m}");
        let m = parse_err(&s, &[("fields.nope.min", "5")]);
        assert!(
            m.contains("names column 'nope', which does not exist"),
            "{m}"
        );
        assert!(m.contains("id, name, price, ts"), "{m}");
        let m = parse_err(
            &s,
            &[("fields.id.kind", "sequence"), ("fields.id.start", "1")],
        );
        assert!(m.contains("required datagen option 'fields.id.end'"), "{m}");
        let m = parse_err(
            &s,
            &[("fields.id.kind", "sequence"), ("fields.id.end", "1")],
        );
        assert!(m.contains("'fields.id.start'"), "{m}");
        let m = parse_err(
            &s,
            &[
                ("fields.id.kind", "sequence"),
                ("fields.id.start", "10"),
                ("fields.id.end", "1"),
            ],
        );
        assert!(m.contains("start 10 is greater than end 1"), "{m}");
        let m = parse_err(&s, &[("fields.id.min", "10"), ("fields.id.max", "1")]);
        assert!(m.contains("min (10) is greater than max (1)"), "{m}");
        let m = parse_err(&s, &[("fields.price.min", "10"), ("fields.price.max", "1")]);
        assert!(m.contains("min (10) is greater than max (1)"), "{m}");
        let m = parse_err(&s, &[("fields.name.min", "1")]);
        assert!(
            m.contains("'fields.name.min' is not supported for column 'name'"),
            "{m}"
        );
        let m = parse_err(
            &s,
            &[
                ("fields.id.kind", "sequence"),
                ("fields.id.start", "1"),
                ("fields.id.end", "2"),
                ("fields.id.min", "1"),
            ],
        );
        assert!(m.contains("kind 'sequence'"), "{m}");
        let m = parse_err(&s, &[("fields.id.kind", "zigzag")]);
        assert!(m.contains("unsupported generator kind 'zigzag'"), "{m}");
        let m = parse_err(&s, &[("number-of-rows", "-1")]);
        assert!(
            m.contains("'number-of-rows' must be a non-negative integer"),
            "{m}"
        );
        let m = parse_err(&s, &[("rows-per-second", "0")]);
        assert!(m.contains("must be positive"), "{m}");
        let m = parse_err(&s, &[("fields.id.null-rate", "1.5")]);
        assert!(m.contains("between 0 and 1"), "{m}");
        let m = parse_err(&s, &[("fields.ts.max-past", "3 fortnights")]);
        assert!(m.contains("must be a duration"), "{m}");

        let small = schema(vec![
            Field::new("t", DataType::Int8, false),
            Field::new("b", DataType::Boolean, true),
        ]);
        let m = parse_err(&small, &[("fields.t.max", "300")]);
        assert!(m.contains("out of range for column 't'"), "{m}");
        let m = parse_err(&small, &[("fields.t.null-rate", "0.5")]);
        assert!(m.contains("NOT NULL"), "{m}");
        let m = parse_err(
            &small,
            &[
                ("fields.t.kind", "sequence"),
                ("fields.t.start", "0"),
                ("fields.t.end", "1000"),
            ],
        );
        assert!(m.contains("'fields.t.end' = '1000' is out of range"), "{m}");
        let m = parse_err(
            &small,
            &[
                ("fields.b.kind", "sequence"),
                ("fields.b.start", "0"),
                ("fields.b.end", "1"),
            ],
        );
        assert!(
            m.contains("'sequence' is not supported for column 'b'"),
            "{m}"
        );

        let binary = schema(vec![Field::new("bin", DataType::Binary, true)]);
        let m = parse_err(&binary, &[]);
        assert!(
            m.contains("column 'bin' has type Binary, which is not supported by datagen"),
            "{m}"
        );

        for dt in [
            DataType::Decimal256(40, 2),
            DataType::Time64(TimeUnit::Microsecond),
            DataType::UInt32,
        ] {
            let m = parse_err(&schema(vec![Field::new("x", dt, true)]), &[]);
            assert!(m.contains("which is not supported by datagen"), "{m}");
        }

        // The connector's error maps to an invalid-parameter SQL error.
        let e: weir_common::Error = ConnectorError::Option(m).into();
        assert!(e.to_string().contains("not supported by datagen"), "{e}");
    }

    #[test]
    fn column_names_with_dots_and_case() {
        let s = schema(vec![
            Field::new("a.b", DataType::Int64, true),
            Field::new("Mixed", DataType::Int64, true),
        ]);
        let options = parse(
            &s,
            &[
                ("fields.a.b.min", "5"),
                ("fields.a.b.max", "5"),
                ("fields.mixed.kind", "sequence"),
                ("fields.mixed.start", "7"),
                ("fields.mixed.end", "9"),
            ],
        );
        let all = collect(&s, &options, 0, 10, 100);
        assert_eq!(all.num_rows(), 3);
        let a = all.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(a.values().to_vec(), vec![5, 5, 5]);
        let m = all.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(m.values().to_vec(), vec![7, 8, 9]);
    }

    #[test]
    fn null_rate_share() {
        let s = schema(vec![
            Field::new("x", DataType::Int64, true),
            Field::new("y", DataType::Utf8, true),
            Field::new("z", DataType::Boolean, true),
        ]);
        let options = parse(
            &s,
            &[
                ("fields.x.null-rate", "0.3"),
                ("fields.y.null-rate", "0.3"),
                ("fields.y.length", "4"),
                ("fields.z.null-rate", "1"),
            ],
        );
        let all = collect(&s, &options, 0, 4096, 20_000);
        for c in 0..2 {
            let share = all.column(c).null_count() as f64 / 20_000.0;
            assert!((0.28..0.32).contains(&share), "column {c}: {share}");
        }
        // x and y draw NULLs independently.
        assert_ne!(all.column(0).logical_nulls(), all.column(1).logical_nulls());
        assert_eq!(all.column(2).null_count(), 20_000);
        let y = all
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert!(y.iter().flatten().all(|v| v.len() == 4));
    }

    #[test]
    fn booleans_decimals_dates_timestamps_in_range() {
        let s = schema(vec![
            Field::new("b", DataType::Boolean, true),
            Field::new("d", DataType::Decimal128(10, 2), true),
            Field::new("dd", DataType::Decimal128(5, 2), true),
            Field::new("day", DataType::Date32, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            Field::new("seqd", DataType::Decimal128(6, 2), true),
            Field::new("f", DataType::Float64, true),
        ]);
        let options = parse(
            &s,
            &[
                ("rows-per-second", "1"),
                ("fields.d.min", "-5.5"),
                ("fields.d.max", "7.25"),
                ("fields.ts.max-past", "1 h"),
                ("fields.seqd.kind", "sequence"),
                ("fields.seqd.start", "1"),
                ("fields.seqd.end", "9999"),
            ],
        );
        let all = collect(&s, &options, 0, 1000, 5000);

        let b = all.column(0).as_boolean();
        let trues = b.true_count();
        assert!((2300..2700).contains(&trues), "{trues}");

        let d = all
            .column(1)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .unwrap();
        assert_eq!((d.precision(), d.scale()), (10, 2));
        assert!(d.values().iter().all(|v| (-550..=725).contains(v)));
        assert!(d.values().iter().any(|v| *v < 0));
        assert!(d.values().contains(&-550) || d.values().iter().min() < Some(&-540));
        // Default decimal range: [0, largest of DECIMAL(5,2)].
        let dd = all
            .column(2)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .unwrap();
        assert!(dd.values().iter().all(|v| (0..=99_999).contains(v)));
        assert!(dd.values().iter().any(|v| *v > 90_000));

        // One row per second from 2024-01-01: all rows fall on that day.
        let base_day = (BASE_TIME_MILLIS / 86_400_000) as i32;
        assert_eq!(base_day, 19_723);
        let day = all
            .column(3)
            .as_any()
            .downcast_ref::<Date32Array>()
            .unwrap();
        assert!(day.values().iter().all(|v| *v == base_day));
        // Replay at a later offset: the row clock has moved on by days.
        let later = collect(&s, &options, 3 * 86_400 + 5, 10, 10);
        let day = later
            .column(3)
            .as_any()
            .downcast_ref::<Date32Array>()
            .unwrap();
        assert!(day.values().iter().all(|v| *v == base_day + 3));

        let ts = all
            .column(4)
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .unwrap();
        let base = BASE_TIME_MILLIS * 1_000_000;
        let hour = 3_600 * 1_000_000_000_i64;
        for (i, t) in ts.values().iter().enumerate() {
            let now = base + i as i64 * 1_000_000_000;
            assert!((now - hour..=now).contains(t), "row {i}: {t}");
        }

        let seqd = all
            .column(5)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .unwrap();
        assert_eq!(seqd.value(0), 100);
        assert_eq!(seqd.value(4999), 500_000);
        assert_eq!(seqd.value_as_string(1), "2.00");

        // Flink's default float range: (0, MAX].
        let f = all.column(6).as_primitive::<Float64Type>();
        assert!(f.values().iter().all(|v| *v > 0.0 && v.is_finite()));
    }

    #[test]
    fn decimal_bounds_clamp_like_flink() {
        let s = schema(vec![Field::new("d", DataType::Decimal128(5, 2), true)]);
        let options = parse(&s, &[("fields.d.min", "-1e9"), ("fields.d.max", "1000000")]);
        let all = collect(&s, &options, 0, 1000, 2000);
        let d = all
            .column(0)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .unwrap();
        assert!(d.values().iter().all(|v| (-99_999..=99_999).contains(v)));
        let m = parse_err(&s, &[("fields.d.min", "abc")]);
        assert!(m.contains("must be a decimal number"), "{m}");
    }

    #[test]
    fn durations_parse_like_flink() {
        let d = |v: &str| parse_duration_nanos("k", v).unwrap();
        assert_eq!(d("500"), 500_000_000);
        assert_eq!(d("10 s"), 10_000_000_000);
        assert_eq!(d("5min"), 300_000_000_000);
        assert_eq!(d("1 H"), 3_600_000_000_000);
        assert_eq!(d("2 days"), 172_800_000_000_000);
        assert_eq!(d("7 µs"), 7_000);
        assert!(parse_duration_nanos("k", "ten s").is_err());
        assert!(parse_duration_nanos("k", "").is_err());
        assert!(parse_duration_nanos("k", "999999999999 d").is_err());
    }

    #[test]
    fn random_helpers_stay_in_range() {
        for h in [0, 1, u64::MAX, u64::MAX / 2, 0xDEAD_BEEF] {
            assert!((-3..=3).contains(&uniform_i64(h, -3, 3)));
            assert_eq!(uniform_i64(h, 9, 9), 9);
            let _ = uniform_i64(h, i64::MIN, i64::MAX);
            assert!(uniform_u64(h, 10) <= 10);
            let wide = (u128::from(h) << 64) | u128::from(h);
            let bound = 10_i128.pow(38) - 1;
            assert!((-bound..=bound).contains(&uniform_i128(wide, -bound, bound)));
            assert!(unit_f64(h) < 1.0);
        }
        assert_eq!(uniform_i64(u64::MAX, i64::MIN, i64::MAX), i64::MAX);
        assert_eq!(uniform_i64(0, i64::MIN, i64::MAX), i64::MIN);
        assert_eq!(mul_hi_u128(u128::MAX, u128::MAX), u128::MAX - 1);
    }
}
