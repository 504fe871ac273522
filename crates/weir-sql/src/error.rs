use weir_common::datafusion::error::DataFusionError;
use weir_common::datafusion::sql::sqlparser::parser::ParserError;
use weir_common::{Error, SqlState};

/// Errors from parsing and planning.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The text is not valid SQL. `position` is a 1-based character offset.
    #[error("{message}")]
    Syntax {
        message: String,
        position: Option<usize>,
    },
    /// A construct materialized views do not support (yet).
    #[error("{0}")]
    Unsupported(String),
    /// DataFusion rejected the statement while planning.
    #[error(transparent)]
    Plan(#[from] DataFusionError),
    /// A Weir error with its SQLSTATE already decided.
    #[error(transparent)]
    Weir(#[from] Error),
}

impl SqlError {
    /// A syntax error from sqlparser, with the offset into `sql`.
    pub fn from_parser(e: ParserError, sql: &str) -> Self {
        let raw = match e {
            ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
            ParserError::RecursionLimitExceeded => "statement is nested too deeply".to_string(),
        };
        let position = line_col_to_offset(&raw, sql);
        let message = match raw.find(" at Line: ") {
            Some(i) => raw[..i].to_string(),
            None => raw,
        };
        SqlError::Syntax {
            message: format!("syntax error: {message}"),
            position,
        }
    }
}

/// sqlparser reports "... at Line: L, Column: C"; Postgres clients want a
/// character offset.
fn line_col_to_offset(msg: &str, sql: &str) -> Option<usize> {
    let line_at = msg.find("Line: ")? + 6;
    let line: usize = msg[line_at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let col_at = msg.find("Column: ")? + 8;
    let col: usize = msg[col_at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let mut offset = 0;
    for (i, l) in sql.split('\n').enumerate() {
        if i + 1 == line {
            return Some(offset + col.max(1));
        }
        offset += l.chars().count() + 1;
    }
    None
}

impl From<SqlError> for Error {
    fn from(e: SqlError) -> Self {
        match e {
            SqlError::Syntax { message, position } => {
                let mut err = Error::new(SqlState::SYNTAX_ERROR, message);
                err.position = position;
                err
            }
            SqlError::Unsupported(m) => Error::unsupported(m),
            SqlError::Plan(e) => e.into(),
            SqlError::Weir(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_count_lines() {
        assert_eq!(
            line_col_to_offset("x at Line: 2, Column: 3", "ab\ncdef"),
            Some(6)
        );
        assert_eq!(
            line_col_to_offset("x at Line: 1, Column: 8", "SELECT FROM"),
            Some(8)
        );
    }
}
