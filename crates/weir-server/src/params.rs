//! Decoding Bind parameters (text or binary) into DataFusion scalars.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime};
use pgwire::api::portal::Portal;
use pgwire::api::Type;
use rust_decimal::Decimal;
use weir_common::arrow::datatypes::DataType;
use weir_common::datafusion::common::{ParamValues, ScalarValue};
use weir_common::{Error, SqlState};

/// The parameter values of `portal`. Each parameter's type is the one the
/// client declared, else the one the planner inferred (`inferred`), else
/// text.
pub fn decode<S: Clone>(
    portal: &Portal<S>,
    inferred: &[Option<DataType>],
) -> Result<ParamValues, Error> {
    let mut values = Vec::with_capacity(portal.parameter_len());
    for i in 0..portal.parameter_len() {
        let declared = portal
            .statement
            .parameter_types
            .get(i)
            .cloned()
            .flatten()
            .filter(|t| *t != Type::UNKNOWN);
        let pg_type = match declared {
            Some(t) => t,
            None => pg_type(inferred.get(i).and_then(Option::as_ref)),
        };
        values.push(decode_one(portal, i, &pg_type)?);
    }
    Ok(ParamValues::from(values))
}

/// The Postgres type a parameter of inferred type `t` is described as
/// (text when unknown).
pub fn pg_type(t: Option<&DataType>) -> Type {
    match t {
        Some(dt) if *dt == weir_common::char_type::UUID_PARAMETER => Type::UUID,
        Some(dt) => arrow_pg::datatypes::into_pg_type(dt).unwrap_or(Type::TEXT),
        None => Type::TEXT,
    }
}

fn bad(i: usize, e: impl std::fmt::Display) -> Error {
    Error::new(
        SqlState::INVALID_TEXT_REPRESENTATION,
        format!("invalid value for parameter ${}: {e}", i + 1),
    )
}

fn decode_one<S: Clone>(portal: &Portal<S>, i: usize, t: &Type) -> Result<ScalarValue, Error> {
    Ok(match *t {
        Type::BOOL => ScalarValue::Boolean(portal.parameter::<bool>(i, t).map_err(|e| bad(i, e))?),
        Type::INT2 => ScalarValue::Int16(portal.parameter::<i16>(i, t).map_err(|e| bad(i, e))?),
        Type::INT4 => ScalarValue::Int32(portal.parameter::<i32>(i, t).map_err(|e| bad(i, e))?),
        Type::INT8 => ScalarValue::Int64(portal.parameter::<i64>(i, t).map_err(|e| bad(i, e))?),
        Type::FLOAT4 => ScalarValue::Float32(portal.parameter::<f32>(i, t).map_err(|e| bad(i, e))?),
        Type::FLOAT8 => ScalarValue::Float64(portal.parameter::<f64>(i, t).map_err(|e| bad(i, e))?),
        Type::NUMERIC => match portal.parameter::<Decimal>(i, t).map_err(|e| bad(i, e))? {
            Some(d) => ScalarValue::Decimal128(Some(d.mantissa()), 38, d.scale() as i8),
            None => ScalarValue::Decimal128(None, 38, 10),
        },
        Type::DATE => ScalarValue::Date32(
            portal
                .parameter::<NaiveDate>(i, t)
                .map_err(|e| bad(i, e))?
                .map(|d| (d - UNIX_EPOCH).num_days() as i32),
        ),
        Type::TIMESTAMP => ScalarValue::TimestampMicrosecond(
            portal
                .parameter::<NaiveDateTime>(i, t)
                .map_err(|e| bad(i, e))?
                .map(|d| d.and_utc().timestamp_micros()),
            None,
        ),
        Type::TIMESTAMPTZ => ScalarValue::TimestampMicrosecond(
            portal
                .parameter::<DateTime<FixedOffset>>(i, t)
                .map_err(|e| bad(i, e))?
                .map(|d| d.timestamp_micros()),
            Some("+00:00".into()),
        ),
        // uuid, kept as its canonical text: in binary the 16 bytes.
        Type::UUID if portal.parameter_format.is_binary(i) => ScalarValue::Utf8(
            portal
                .parameter::<Vec<u8>>(i, &Type::BYTEA)
                .map_err(|e| bad(i, e))?
                .map(|b| uuid::Uuid::from_slice(&b).map(|u| u.hyphenated().to_string()))
                .transpose()
                .map_err(|e| bad(i, e))?,
        ),
        Type::UUID => ScalarValue::Utf8(
            portal
                .parameter::<String>(i, &Type::TEXT)
                .map_err(|e| bad(i, e))?
                .map(|t| weir_common::char_type::canonical_uuid(&t))
                .transpose()?,
        ),
        Type::BYTEA => {
            ScalarValue::Binary(portal.parameter::<Vec<u8>>(i, t).map_err(|e| bad(i, e))?)
        }
        _ => ScalarValue::Utf8(portal.parameter::<String>(i, t).map_err(|e| bad(i, e))?),
    })
}

/// Day zero of Arrow's Date32.
const UNIX_EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
