//! Declared character types Arrow cannot express: a column declared
//! `varchar(n)`, `character varying(n)` or `char(n)` is stored as Arrow
//! `Utf8` like `text`, with its declared type kept in the field's metadata.
//! The table checks the length on every write (22001, as Postgres), and
//! the catalog and the wire report the declared type (`varchar` OID 1043,
//! `bpchar` 1042, `atttypmod` = n + 4), as clients and BI tools expect.

use std::collections::HashMap;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Field};

use crate::{Error, SqlState};

/// Field metadata key holding the declared type: `varchar`, `varchar(n)`
/// or `bpchar(n)`.
pub const METADATA_KEY: &str = "weir.pg_char_type";

/// A declared character type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CharType {
    /// `varchar(n)`; `None` is `varchar` without a limit.
    Varchar(Option<u32>),
    /// `char(n)` (`bpchar`). Values are kept as written, not padded.
    Char(u32),
}

impl CharType {
    /// The declared type of `field`, if it has one.
    pub fn of(field: &Field) -> Option<CharType> {
        let v = field.metadata().get(METADATA_KEY)?;
        let (name, len) = match v.split_once('(') {
            Some((name, rest)) => (name, Some(rest.strip_suffix(')')?.parse().ok()?)),
            None => (v.as_str(), None),
        };
        match (name, len) {
            ("varchar", len) => Some(CharType::Varchar(len)),
            ("bpchar", Some(n)) => Some(CharType::Char(n)),
            _ => None,
        }
    }

    /// `field` carrying this declared type.
    pub fn attach(self, field: Field) -> Field {
        let mut metadata: HashMap<String, String> = field.metadata().clone();
        let v = match self {
            CharType::Varchar(None) => "varchar".to_string(),
            CharType::Varchar(Some(n)) => format!("varchar({n})"),
            CharType::Char(n) => format!("bpchar({n})"),
        };
        metadata.insert(METADATA_KEY.to_string(), v);
        field.with_metadata(metadata)
    }

    /// The Postgres type OID: `varchar` 1043, `bpchar` 1042.
    pub fn oid(self) -> u32 {
        match self {
            CharType::Varchar(_) => 1043,
            CharType::Char(_) => 1042,
        }
    }

    /// `atttypmod`: the length plus 4, or -1 without one.
    pub fn typmod(self) -> i32 {
        match self.limit() {
            Some(n) => i32::try_from(n).unwrap_or(i32::MAX - 4) + 4,
            None => -1,
        }
    }

    /// The most characters a value may have.
    pub fn limit(self) -> Option<u32> {
        match self {
            CharType::Varchar(n) => n,
            CharType::Char(n) => Some(n),
        }
    }

    /// As Postgres names it (`format_type`).
    pub fn type_name(self) -> String {
        match self {
            CharType::Varchar(None) => "character varying".into(),
            CharType::Varchar(Some(n)) => format!("character varying({n})"),
            CharType::Char(n) => format!("character({n})"),
        }
    }

    /// Refuse a value longer than the limit, as Postgres does on assignment
    /// (22001). Counts characters, not bytes.
    pub fn check(self, column: &dyn Array) -> Result<(), Error> {
        let Some(limit) = self.limit() else {
            return Ok(());
        };
        let limit = limit as usize;
        // A value of at most `limit` bytes has at most `limit` characters.
        let long = |s: &str| s.len() > limit && s.chars().count() > limit;
        let too_long = match column.data_type() {
            DataType::Utf8 => column.as_string::<i32>().iter().flatten().any(long),
            DataType::LargeUtf8 => column.as_string::<i64>().iter().flatten().any(long),
            DataType::Utf8View => column.as_string_view().iter().flatten().any(long),
            _ => false,
        };
        if too_long {
            return Err(Error::new(
                SqlState::STRING_DATA_RIGHT_TRUNCATION,
                format!("value too long for type {}", self.type_name()),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{StringArray, StringViewArray};

    #[test]
    fn metadata_round_trips() {
        for t in [
            CharType::Varchar(None),
            CharType::Varchar(Some(20)),
            CharType::Char(3),
        ] {
            let f = t.attach(Field::new("c", DataType::Utf8, true));
            assert_eq!(CharType::of(&f), Some(t));
        }
        assert_eq!(CharType::of(&Field::new("c", DataType::Utf8, true)), None);
        assert_eq!(CharType::Varchar(Some(20)).typmod(), 24);
        assert_eq!(CharType::Varchar(None).typmod(), -1);
        assert_eq!(CharType::Char(3).type_name(), "character(3)");
    }

    #[test]
    fn counts_characters_not_bytes() {
        let t = CharType::Varchar(Some(3));
        assert!(t.check(&StringArray::from(vec!["äöü", "ab"])).is_ok());
        let e = t
            .check(&StringArray::from(vec![Some("abcd"), None]))
            .unwrap_err();
        assert_eq!(e.code, SqlState::STRING_DATA_RIGHT_TRUNCATION);
        assert_eq!(e.message, "value too long for type character varying(3)");
        assert!(t.check(&StringViewArray::from(vec!["abcd"])).is_err());
        assert!(CharType::Varchar(None)
            .check(&StringArray::from(vec!["abcdef"]))
            .is_ok());
    }
}
