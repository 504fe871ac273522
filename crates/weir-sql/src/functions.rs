//! Functions Weir adds to DataFusion's, so that DDL written for other
//! engines runs unchanged.
//!
//! - `to_timestamp_ltz(epoch, precision)` (Flink): `epoch` seconds
//!   (precision 0) or milliseconds (precision 3, the default) since the Unix
//!   epoch, as a TIMESTAMPTZ.
//! - `mod(a, b)` (Postgres, Flink): the remainder `a % b`, typed like `%`.
//! - `version()` (Postgres): `PostgreSQL 14.13 (Weir x.y.z) on ...`.

use std::sync::Arc;

use weir_common::arrow::array::{Array, Int64Array, TimestampNanosecondArray};
use weir_common::arrow::compute::cast;
use weir_common::arrow::compute::kernels::arity::try_unary;
use weir_common::arrow::compute::kernels::numeric::rem;
use weir_common::arrow::datatypes::{DataType, TimeUnit};
use weir_common::arrow::error::ArrowError;
use weir_common::datafusion::common::{exec_err, Result, ScalarValue};
use weir_common::datafusion::execution::context::SessionContext;
use weir_common::datafusion::logical_expr::type_coercion::binary::BinaryTypeCoercer;
use weir_common::datafusion::logical_expr::{
    create_udf, ColumnarValue, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignature, Volatility,
};

/// Register Weir's functions with `ctx`.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(ToTimestampLtz::new()));
    ctx.register_udf(ScalarUDF::from(Mod::new()));
    // Postgres' version(), replacing DataFusion's: clients parse it.
    let version = weir_common::pg::version_string();
    ctx.register_udf(create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_args: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                version.clone(),
            ))))
        }),
    ));
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Mod {
    signature: Signature,
}

impl Mod {
    fn new() -> Self {
        Mod {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Mod {
    fn name(&self) -> &str {
        "mod"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [a, b] => BinaryTypeCoercer::new(a, &Operator::Modulo, b).get_result_type(),
            _ => exec_err!("mod takes two arguments"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [a, b] = arrays.as_slice() else {
            return exec_err!("mod takes two arguments");
        };
        let (ta, tb) = BinaryTypeCoercer::new(a.data_type(), &Operator::Modulo, b.data_type())
            .get_input_types()?;
        let a = cast(a, &ta)?;
        let b = cast(b, &tb)?;
        let out = rem(&a, &b)?;
        if scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}

/// The type of TIMESTAMPTZ values (UTC instants).
fn timestamptz() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into()))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ToTimestampLtz {
    signature: Signature,
}

impl ToTimestampLtz {
    fn new() -> Self {
        ToTimestampLtz {
            signature: Signature::one_of(
                vec![
                    TypeSignature::Uniform(1, vec![DataType::Int64]),
                    TypeSignature::Uniform(2, vec![DataType::Int64]),
                ],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for ToTimestampLtz {
    fn name(&self) -> &str {
        "to_timestamp_ltz"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(timestamptz())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let precision = match args.args.get(1) {
            None => 3,
            Some(ColumnarValue::Scalar(ScalarValue::Int64(Some(p)))) => *p,
            Some(_) => return exec_err!("to_timestamp_ltz: the precision must be a constant"),
        };
        let factor: i64 = match precision {
            0 => 1_000_000_000,
            3 => 1_000_000,
            p => return exec_err!("to_timestamp_ltz: precision must be 0 or 3, got {p}"),
        };
        let convert = |v: i64| {
            v.checked_mul(factor).ok_or_else(|| {
                ArrowError::ComputeError(format!("to_timestamp_ltz: {v} is out of range"))
            })
        };
        let tz: Arc<str> = "+00:00".into();
        match &args.args[0] {
            ColumnarValue::Array(a) => {
                let Some(ints) = a.as_any().downcast_ref::<Int64Array>() else {
                    return exec_err!("to_timestamp_ltz: expected BIGINT, got {}", a.data_type());
                };
                let out: TimestampNanosecondArray = try_unary(ints, convert)?;
                Ok(ColumnarValue::Array(Arc::new(out.with_timezone(tz))))
            }
            ColumnarValue::Scalar(ScalarValue::Int64(v)) => {
                let v = v.map(convert).transpose()?;
                Ok(ColumnarValue::Scalar(ScalarValue::TimestampNanosecond(
                    v,
                    Some(tz),
                )))
            }
            ColumnarValue::Scalar(other) => {
                exec_err!(
                    "to_timestamp_ltz: expected BIGINT, got {}",
                    other.data_type()
                )
            }
        }
    }
}
