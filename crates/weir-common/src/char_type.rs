//! Declared character types Arrow cannot express: a column declared
//! `varchar(n)`, `character varying(n)` or `char(n)` is stored as Arrow
//! `Utf8` like `text`, with its declared type kept in the field's metadata.
//! The table checks the length on every write (22001, as Postgres), and
//! the catalog and the wire report the declared type (`varchar` OID 1043,
//! `bpchar` 1042, `atttypmod` = n + 4), as clients and BI tools expect.
//!
//! `uuid` columns are `Utf8` too, holding the canonical text form
//! (lowercase, hyphenated): every write normalizes what Postgres accepts
//! (`{...}`, upper case, no hyphens) and refuses the rest (22P02). The
//! canonical form sorts and compares as Postgres's 16 bytes do. Clients see
//! type `uuid` (OID 2950), in binary as 16 bytes.

use std::collections::HashMap;

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field};

use crate::{Error, SqlState};

/// Field metadata key holding the declared type: `varchar`, `varchar(n)`,
/// `bpchar(n)` or `uuid`.
pub const METADATA_KEY: &str = "weir.pg_char_type";

/// A declared character type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CharType {
    /// `varchar(n)`; `None` is `varchar` without a limit.
    Varchar(Option<u32>),
    /// `char(n)` (`bpchar`). Values are kept as written, not padded.
    Char(u32),
    /// `uuid`, in its canonical text form.
    Uuid,
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
            ("uuid", None) => Some(CharType::Uuid),
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
            CharType::Uuid => "uuid".to_string(),
        };
        metadata.insert(METADATA_KEY.to_string(), v);
        field.with_metadata(metadata)
    }

    /// The Postgres type OID: `varchar` 1043, `bpchar` 1042, `uuid` 2950.
    pub fn oid(self) -> u32 {
        match self {
            CharType::Varchar(_) => 1043,
            CharType::Char(_) => 1042,
            CharType::Uuid => 2950,
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
            CharType::Uuid => None,
        }
    }

    /// As Postgres names it (`format_type`).
    pub fn type_name(self) -> String {
        match self {
            CharType::Varchar(None) => "character varying".into(),
            CharType::Varchar(Some(n)) => format!("character varying({n})"),
            CharType::Char(n) => format!("character({n})"),
            CharType::Uuid => "uuid".into(),
        }
    }

    /// `column` as this type stores it: `uuid` values in canonical form
    /// (22P02 for one that is not a UUID); other types unchanged.
    pub fn conform(self, column: &ArrayRef) -> Result<ArrayRef, Error> {
        if self != CharType::Uuid {
            return Ok(Arc::clone(column));
        }
        let strings = cast(column, &DataType::Utf8).map_err(Error::from)?;
        let values = strings.as_string::<i32>();
        let canonical = values
            .iter()
            .map(|v| v.map(canonical_uuid).transpose())
            .collect::<Result<StringArray, Error>>()?;
        // Back to the column's own string type (TEXT may be Utf8View).
        cast(&canonical, column.data_type()).map_err(Error::from)
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

/// The canonical text of a UUID written as Postgres accepts it (hyphens
/// anywhere between digit pairs, braces, any case), or 22P02.
pub fn canonical_uuid(text: &str) -> Result<String, Error> {
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(text);
    let digits: String = inner.chars().filter(|c| *c != '-').collect();
    let parsed = (digits.len() == 32 && !inner.starts_with('-') && !inner.ends_with('-'))
        .then(|| uuid::Uuid::try_parse(&digits).ok())
        .flatten();
    match parsed {
        Some(u) => Ok(u.hyphenated().to_string()),
        None => Err(Error::new(
            SqlState::INVALID_TEXT_REPRESENTATION,
            format!("invalid input syntax for type uuid: \"{text}\""),
        )),
    }
}

/// How a parameter that must be a uuid (`$1::uuid`) is described between
/// the planner and the wire, which tells clients its type is `uuid`: Weir
/// itself never stores this type.
pub const UUID_PARAMETER: DataType = DataType::FixedSizeBinary(16);

/// The 16 bytes of a canonical (or any accepted) UUID text.
pub fn uuid_bytes(text: &str) -> Result<[u8; 16], Error> {
    let canonical = canonical_uuid(text)?;
    uuid::Uuid::try_parse(&canonical)
        .map(|u| *u.as_bytes())
        .map_err(|e| Error::new(SqlState::INVALID_TEXT_REPRESENTATION, e.to_string()))
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

    #[test]
    fn uuids_take_postgres_spellings() {
        let canonical = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        for text in [
            canonical,
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
        ] {
            assert_eq!(canonical_uuid(text).unwrap(), canonical, "{text}");
        }
        for bad in [
            "",
            "a0eebc99",
            "-a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "g0eebc999c0b4ef8bb6d6bb9bd380a11",
        ] {
            let e = canonical_uuid(bad).unwrap_err();
            assert_eq!(e.code, SqlState::INVALID_TEXT_REPRESENTATION, "{bad}");
        }
        let column: ArrayRef = Arc::new(StringArray::from(vec![
            Some("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"),
            None,
        ]));
        let out = CharType::Uuid.conform(&column).unwrap();
        assert_eq!(out.as_string::<i32>().value(0), canonical);
        assert!(out.is_null(1));
        assert_eq!(uuid_bytes(canonical).unwrap()[0], 0xa0);
        let f = CharType::Uuid.attach(Field::new("u", DataType::Utf8, true));
        assert_eq!(CharType::of(&f), Some(CharType::Uuid));
    }
}
