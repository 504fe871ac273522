//! SQLSTATE codes that Weir reports, as in Postgres' `errcodes.txt`.

use std::fmt;

/// A five-character Postgres SQLSTATE, carried by every user-facing error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqlState(pub &'static str);

impl SqlState {
    pub const SYNTAX_ERROR: SqlState = SqlState("42601");
    pub const UNDEFINED_TABLE: SqlState = SqlState("42P01");
    pub const UNDEFINED_COLUMN: SqlState = SqlState("42703");
    pub const UNDEFINED_FUNCTION: SqlState = SqlState("42883");
    pub const UNDEFINED_OBJECT: SqlState = SqlState("42704");
    pub const DATATYPE_MISMATCH: SqlState = SqlState("42804");
    pub const DUPLICATE_TABLE: SqlState = SqlState("42P07");
    pub const DUPLICATE_COLUMN: SqlState = SqlState("42701");
    pub const AMBIGUOUS_COLUMN: SqlState = SqlState("42702");
    pub const GROUPING_ERROR: SqlState = SqlState("42803");
    pub const INVALID_TABLE_DEFINITION: SqlState = SqlState("42P16");
    pub const DEPENDENT_OBJECTS_STILL_EXIST: SqlState = SqlState("2BP01");
    pub const WRONG_OBJECT_TYPE: SqlState = SqlState("42809");
    pub const UNIQUE_VIOLATION: SqlState = SqlState("23505");
    pub const NOT_NULL_VIOLATION: SqlState = SqlState("23502");
    pub const FEATURE_NOT_SUPPORTED: SqlState = SqlState("0A000");
    /// A view whose definition reads itself.
    pub const INVALID_RECURSION: SqlState = SqlState("42P19");
    pub const DIVISION_BY_ZERO: SqlState = SqlState("22012");
    pub const NUMERIC_VALUE_OUT_OF_RANGE: SqlState = SqlState("22003");
    pub const INVALID_TEXT_REPRESENTATION: SqlState = SqlState("22P02");
    pub const DATA_EXCEPTION: SqlState = SqlState("22000");
    pub const STRING_DATA_RIGHT_TRUNCATION: SqlState = SqlState("22001");
    pub const INVALID_PARAMETER_VALUE: SqlState = SqlState("22023");
    pub const PROTOCOL_VIOLATION: SqlState = SqlState("08P01");
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: SqlState = SqlState("55000");
    pub const INTERNAL_ERROR: SqlState = SqlState("XX000");
    pub const DATA_CORRUPTED: SqlState = SqlState("XX001");
    pub const PROGRAM_LIMIT_EXCEEDED: SqlState = SqlState("54000");
    pub const UNDEFINED_PARAMETER: SqlState = SqlState("42704");
    pub const IO_ERROR: SqlState = SqlState("58030");
    pub const ACTIVE_SQL_TRANSACTION: SqlState = SqlState("25001");
    pub const READ_ONLY_SQL_TRANSACTION: SqlState = SqlState("25006");
    pub const NO_ACTIVE_SQL_TRANSACTION: SqlState = SqlState("25P01");
    pub const IN_FAILED_SQL_TRANSACTION: SqlState = SqlState("25P02");
    pub const T_R_SERIALIZATION_FAILURE: SqlState = SqlState("40001");
    pub const S_E_INVALID_SPECIFICATION: SqlState = SqlState("3B001");
    pub const CANT_CHANGE_RUNTIME_PARAM: SqlState = SqlState("55P02");
    pub const QUERY_CANCELED: SqlState = SqlState("57014");

    /// The code as the wire carries it.
    pub fn code(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}
