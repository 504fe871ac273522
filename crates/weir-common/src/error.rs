//! The error every Weir crate can be converted into at the wire: a message and
//! the SQLSTATE a Postgres client receives it with.

use datafusion::arrow::error::ArrowError;
use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;

use crate::SqlState;

/// A user-facing error. Deterministic errors (bad SQL, bad data) are reported
/// to the client that caused them; internal errors indicate a bug in Weir.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// The SQLSTATE the client receives.
    pub code: SqlState,
    /// The primary message (Postgres' `M` field).
    pub message: String,
    /// 1-based character offset into the statement, for syntax errors.
    pub position: Option<usize>,
}

/// Result with Weir's error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with the given SQLSTATE.
    pub fn new(code: SqlState, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            position: None,
        }
    }

    /// A construct Weir does not support (yet): SQLSTATE 0A000.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(SqlState::FEATURE_NOT_SUPPORTED, message)
    }

    /// A bug or an impossible state inside Weir: SQLSTATE XX000.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(SqlState::INTERNAL_ERROR, message)
    }

    /// Prefix the message with context, keeping the SQLSTATE.
    pub fn context(mut self, context: impl AsRef<str>) -> Self {
        self.message = format!("{}: {}", context.as_ref(), self.message);
        self
    }
}

impl From<ArrowError> for Error {
    fn from(e: ArrowError) -> Self {
        let code = match &e {
            ArrowError::DivideByZero => SqlState::DIVISION_BY_ZERO,
            ArrowError::ArithmeticOverflow(_) => SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
            ArrowError::CastError(m)
            | ArrowError::ParseError(m)
            | ArrowError::InvalidArgumentError(m)
                if m.contains("overflow")
                    || m.contains("too large")
                    || m.contains("out of range")
                    || m.contains("Can't cast value") =>
            {
                SqlState::NUMERIC_VALUE_OUT_OF_RANGE
            }
            ArrowError::CastError(_) | ArrowError::ParseError(_) => {
                SqlState::INVALID_TEXT_REPRESENTATION
            }
            ArrowError::ComputeError(m) if m.contains("Overflow") || m.contains("overflow") => {
                SqlState::NUMERIC_VALUE_OUT_OF_RANGE
            }
            _ => SqlState::DATA_EXCEPTION,
        };
        let message = match &e {
            ArrowError::DivideByZero => "division by zero".to_string(),
            other => strip_arrow_prefix(&other.to_string()),
        };
        Error::new(code, message)
    }
}

fn strip_arrow_prefix(s: &str) -> String {
    for p in [
        "Cast error: ",
        "Parser error: ",
        "Compute error: ",
        "Invalid argument error: ",
        "Arithmetic overflow: ",
    ] {
        if let Some(rest) = s.strip_prefix(p) {
            return rest.to_string();
        }
    }
    s.to_string()
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        match e {
            DataFusionError::ArrowError(a, _) => Error::from(*a),
            DataFusionError::Context(_, inner) => Error::from(*inner),
            DataFusionError::Shared(inner) => Error::from(DataFusionError::External(Box::new(
                SharedDfError(inner.to_string()),
            ))),
            DataFusionError::Diagnostic(_, inner) => Error::from(*inner),
            DataFusionError::Collection(mut errs) if !errs.is_empty() => {
                Error::from(errs.remove(0))
            }
            DataFusionError::SchemaError(s, _) => {
                if let SchemaError::FieldNotFound { field, .. } = s.as_ref() {
                    return Error::new(
                        SqlState::UNDEFINED_COLUMN,
                        format!("column \"{}\" does not exist", field.name),
                    );
                }
                let code = match s.as_ref() {
                    SchemaError::AmbiguousReference { .. } => SqlState::AMBIGUOUS_COLUMN,
                    SchemaError::FieldNotFound { .. } => SqlState::UNDEFINED_COLUMN,
                    SchemaError::DuplicateQualifiedField { .. }
                    | SchemaError::DuplicateUnqualifiedField { .. } => SqlState::DUPLICATE_COLUMN,
                };
                Error::new(code, clean_message(&s.to_string()))
            }
            DataFusionError::SQL(p, _) => Error::new(SqlState::SYNTAX_ERROR, p.to_string()),
            DataFusionError::NotImplemented(m) => Error::unsupported(clean_message(&m)),
            DataFusionError::Plan(m) => {
                let code = classify_plan_message(&m);
                let message = match (code, missing_table(&m)) {
                    (SqlState::UNDEFINED_TABLE, Some(t)) => {
                        format!("relation \"{t}\" does not exist")
                    }
                    _ => clean_message(&m),
                };
                Error::new(code, message)
            }
            DataFusionError::Execution(m) if m.contains("non-nullable but contains null") => {
                let column = m.split('\'').nth(1).unwrap_or("?");
                Error::new(
                    SqlState::NOT_NULL_VIOLATION,
                    format!("null value in column \"{column}\" violates not-null constraint"),
                )
            }
            DataFusionError::Execution(m) => {
                let code = if m.contains("Divide by zero") || m.contains("division by zero") {
                    SqlState::DIVISION_BY_ZERO
                } else if m.contains("overflow") || m.contains("Overflow") {
                    SqlState::NUMERIC_VALUE_OUT_OF_RANGE
                } else if m.contains("Cannot cast") || m.contains("cast") {
                    SqlState::INVALID_TEXT_REPRESENTATION
                } else {
                    SqlState::DATA_EXCEPTION
                };
                Error::new(code, clean_message(&m))
            }
            DataFusionError::External(inner) => match inner.downcast::<Error>() {
                Ok(weir) => *weir,
                Err(other) => Error::internal(other.to_string()),
            },
            other => Error::internal(clean_message(&other.to_string())),
        }
    }
}

#[derive(Debug)]
struct SharedDfError(String);
impl std::fmt::Display for SharedDfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for SharedDfError {}

/// The table name in DataFusion's "table 'cat.schema.name' not found".
fn missing_table(m: &str) -> Option<String> {
    let start = m.find("table '")? + 7;
    let end = start + m[start..].find('\'')?;
    Some(m[start..end].rsplit('.').next()?.to_string())
}

/// Map DataFusion's planning messages to the SQLSTATE Postgres would give.
fn classify_plan_message(m: &str) -> SqlState {
    let lower = m.to_ascii_lowercase();
    if lower.contains("table") && (lower.contains("not found") || lower.contains("doesn't exist")) {
        SqlState::UNDEFINED_TABLE
    } else if lower.contains("no field named")
        || lower.contains("column") && lower.contains("not found")
    {
        SqlState::UNDEFINED_COLUMN
    } else if lower.contains("invalid function") || lower.contains("no function matches") {
        SqlState::UNDEFINED_FUNCTION
    } else if lower.contains("non-boolean")
        || lower.contains("coerc")
        || lower.contains("cannot cast")
        || lower.contains("type")
        || lower.contains("signature")
    {
        SqlState::DATATYPE_MISMATCH
    } else if lower.contains("must appear in the group by") || lower.contains("group by") {
        SqlState::GROUPING_ERROR
    } else {
        SqlState::SYNTAX_ERROR
    }
}

/// DataFusion messages carry backtrace-like suffixes and "Error during
/// planning:" prefixes; keep the part a user can act on.
fn clean_message(m: &str) -> String {
    let m = m.trim();
    let m = m.split("\n\nBacktrace").next().unwrap_or(m);
    for p in [
        "Error during planning: ",
        "Schema error: ",
        "Execution error: ",
        "This feature is not implemented: ",
    ] {
        if let Some(rest) = m.strip_prefix(p) {
            return rest.to_string();
        }
    }
    m.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divide_by_zero_maps_to_22012() {
        let e: Error = ArrowError::DivideByZero.into();
        assert_eq!(e.code, SqlState::DIVISION_BY_ZERO);
        let e: Error = DataFusionError::ArrowError(Box::new(ArrowError::DivideByZero), None).into();
        assert_eq!(e.code, SqlState::DIVISION_BY_ZERO);
    }

    #[test]
    fn plan_messages_are_classified() {
        let e: Error = DataFusionError::Plan("table 'weir.public.t' not found".into()).into();
        assert_eq!(e.code, SqlState::UNDEFINED_TABLE);
        assert_eq!(e.message, "relation \"t\" does not exist");
        let e: Error = DataFusionError::NotImplemented("x".into()).into();
        assert_eq!(e.code, SqlState::FEATURE_NOT_SUPPORTED);
    }
}
