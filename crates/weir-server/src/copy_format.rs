//! COPY's text and CSV formats: reading what `COPY t FROM STDIN` (psql's
//! `\copy`) sends, writing what `COPY ... TO STDOUT` returns.
//!
//! Text: one row per line, fields split by the delimiter (tab), `\N` is
//! NULL, backslash escapes (`\t`, `\n`, `\\`, `\r`, octal `\123`, hex
//! `\x41`). CSV: RFC 4180 quoting (the `csv` crate); an empty unquoted
//! field, or the NULL string, is NULL.

use weir_common::datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption,
};
use weir_common::{Error, SqlState};

/// How COPY data is laid out.
#[derive(Debug, Clone)]
pub struct CopyFormat {
    pub csv: bool,
    pub delimiter: u8,
    pub null: String,
    pub header: bool,
    pub quote: u8,
    pub escape: u8,
}

fn unsupported(what: impl Into<String>) -> Error {
    Error::new(SqlState::FEATURE_NOT_SUPPORTED, what)
}

fn byte(c: char, what: &str) -> Result<u8, Error> {
    u8::try_from(c).map_err(|_| {
        Error::new(
            SqlState::INVALID_PARAMETER_VALUE,
            format!("COPY {what} must be a single one-byte character"),
        )
    })
}

impl CopyFormat {
    /// The format the statement's options ask for.
    pub fn from_options(
        options: &[CopyOption],
        legacy: &[CopyLegacyOption],
    ) -> Result<CopyFormat, Error> {
        let mut f = CopyFormat {
            csv: false,
            delimiter: b'\t',
            null: "\\N".into(),
            header: false,
            quote: b'"',
            escape: b'"',
        };
        let mut delimiter = None;
        let mut null = None;
        let mut escape = None;
        for o in options {
            match o {
                CopyOption::Format(name) => match name.value.to_ascii_lowercase().as_str() {
                    "text" => f.csv = false,
                    "csv" => f.csv = true,
                    other => {
                        return Err(unsupported(format!(
                            "COPY format \"{other}\" is not supported"
                        )))
                    }
                },
                CopyOption::Delimiter(c) => delimiter = Some(byte(*c, "delimiter")?),
                CopyOption::Null(s) => null = Some(s.clone()),
                CopyOption::Header(h) => f.header = *h,
                CopyOption::Quote(c) => f.quote = byte(*c, "quote")?,
                CopyOption::Escape(c) => escape = Some(byte(*c, "escape")?),
                CopyOption::Encoding(e)
                    if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {}
                CopyOption::Freeze(_) => {}
                other => return Err(unsupported(format!("COPY option {other} is not supported"))),
            }
        }
        for o in legacy {
            match o {
                CopyLegacyOption::Csv(csv) => {
                    f.csv = true;
                    for c in csv {
                        match c {
                            CopyLegacyCsvOption::Header => f.header = true,
                            CopyLegacyCsvOption::Quote(q) => f.quote = byte(*q, "quote")?,
                            CopyLegacyCsvOption::Escape(e) => escape = Some(byte(*e, "escape")?),
                            other => {
                                return Err(unsupported(format!(
                                    "COPY option {other} is not supported"
                                )))
                            }
                        }
                    }
                }
                CopyLegacyOption::Delimiter(c) => delimiter = Some(byte(*c, "delimiter")?),
                CopyLegacyOption::Null(s) => null = Some(s.clone()),
                CopyLegacyOption::Header => f.header = true,
                other => return Err(unsupported(format!("COPY option {other} is not supported"))),
            }
        }
        if f.csv {
            f.delimiter = b',';
            f.null = String::new();
        }
        if let Some(d) = delimiter {
            f.delimiter = d;
        }
        if let Some(n) = null {
            f.null = n;
        }
        f.escape = escape.unwrap_or(f.quote);
        Ok(f)
    }

    /// The rows of `data`, each a field per column (`None` for NULL).
    pub fn parse(&self, data: &[u8]) -> Result<Vec<Vec<Option<String>>>, Error> {
        if self.csv {
            self.parse_csv(data)
        } else {
            self.parse_text(data)
        }
    }

    fn parse_csv(&self, data: &[u8]) -> Result<Vec<Vec<Option<String>>>, Error> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(self.header)
            .delimiter(self.delimiter)
            .quote(self.quote)
            .escape((self.escape != self.quote).then_some(self.escape))
            .double_quote(self.escape == self.quote)
            .flexible(true)
            .from_reader(data);
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| bad_data(format!("invalid CSV: {e}")))?;
            if record.len() == 1 && record.get(0) == Some("\\.") {
                break;
            }
            rows.push(
                record
                    .iter()
                    .map(|f| (f != self.null).then(|| f.to_string()))
                    .collect(),
            );
        }
        Ok(rows)
    }

    fn parse_text(&self, data: &[u8]) -> Result<Vec<Vec<Option<String>>>, Error> {
        let text = std::str::from_utf8(data).map_err(|_| {
            Error::new(
                SqlState("22021"),
                "invalid byte sequence for encoding \"UTF8\"",
            )
        })?;
        let mut rows = Vec::new();
        let mut lines = text.split('\n').peekable();
        if self.header {
            lines.next();
        }
        while let Some(line) = lines.next() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line == "\\." || (line.is_empty() && lines.peek().is_none()) {
                break;
            }
            let delimiter = char::from(self.delimiter);
            rows.push(
                line.split(delimiter)
                    .map(|f| {
                        if f == self.null {
                            Ok(None)
                        } else {
                            unescape(f).map(Some)
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
        Ok(rows)
    }

    /// One output line for `fields` (`None` for NULL), ending in `\n`.
    pub fn line(&self, fields: &[Option<String>]) -> String {
        let delimiter = char::from(self.delimiter);
        let mut out = String::new();
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                out.push(delimiter);
            }
            match f {
                None => out.push_str(&self.null),
                Some(v) if self.csv => {
                    let quote = char::from(self.quote);
                    let needs = v.is_empty()
                        || v.contains(delimiter)
                        || v.contains(quote)
                        || v.contains('\n')
                        || v.contains('\r')
                        || *v == self.null;
                    if needs {
                        out.push(quote);
                        for c in v.chars() {
                            if c == quote {
                                out.push(char::from(self.escape));
                            }
                            out.push(c);
                        }
                        out.push(quote);
                    } else {
                        out.push_str(v);
                    }
                }
                Some(v) => {
                    for c in v.chars() {
                        match c {
                            '\\' => out.push_str("\\\\"),
                            '\n' => out.push_str("\\n"),
                            '\r' => out.push_str("\\r"),
                            '\t' => out.push_str("\\t"),
                            c if c == delimiter => {
                                out.push('\\');
                                out.push(c);
                            }
                            c => out.push(c),
                        }
                    }
                }
            }
        }
        out.push('\n');
        out
    }
}

/// The COPY TO lines of `batches`: each value as Postgres prints it in text
/// (booleans `t`/`f`, bytea `\x...`, timestamps, floats and numerics as
/// the wire's text format does).
pub fn batch_lines(
    format: &CopyFormat,
    batches: &[weir_common::arrow::array::RecordBatch],
    time_zone: Option<chrono_tz::Tz>,
) -> Result<Vec<String>, Error> {
    use pgwire::api::portal::Format;
    use weir_common::arrow::array::{Array, BinaryArray, BooleanArray};
    use weir_common::arrow::util::display::{ArrayFormatter, FormatOptions};
    let mut lines = Vec::new();
    for b in batches {
        let b =
            crate::text_format::postgres_text_columns(b.clone(), &Format::UnifiedText, time_zone)
                .map_err(Error::from)?;
        let options = FormatOptions::default();
        let formatters = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::from)?;
        for row in 0..b.num_rows() {
            let fields: Vec<Option<String>> = b
                .columns()
                .iter()
                .zip(&formatters)
                .map(|(c, f)| {
                    if c.is_null(row) {
                        return None;
                    }
                    if let Some(bools) = c.as_any().downcast_ref::<BooleanArray>() {
                        return Some(if bools.value(row) { "t" } else { "f" }.to_string());
                    }
                    if let Some(bytes) = c.as_any().downcast_ref::<BinaryArray>() {
                        let hex: String = bytes
                            .value(row)
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect();
                        return Some(format!("\\x{hex}"));
                    }
                    Some(f.value(row).to_string())
                })
                .collect();
            lines.push(format.line(&fields));
        }
    }
    Ok(lines)
}

fn bad_data(message: String) -> Error {
    Error::new(SqlState("22P04"), message)
}

/// Undo COPY text escapes.
fn unescape(field: &str) -> Result<String, Error> {
    if !field.contains('\\') {
        return Ok(field.to_string());
    }
    let mut out: Vec<u8> = Vec::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'\\' || i + 1 == bytes.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let next = bytes[i + 1];
        i += 2;
        match next {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(next - b'0');
                let mut n = 1;
                while n < 3 && i < bytes.len() && (b'0'..=b'7').contains(&bytes[i]) {
                    v = v * 8 + u32::from(bytes[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push((v & 0xff) as u8);
            }
            b'x' if i < bytes.len() && bytes[i].is_ascii_hexdigit() => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 && i < bytes.len() && bytes[i].is_ascii_hexdigit() {
                    v = v * 16 + char::from(bytes[i]).to_digit(16).unwrap_or(0);
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).map_err(|_| {
        Error::new(
            SqlState("22021"),
            "invalid byte sequence for encoding \"UTF8\"",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text() -> CopyFormat {
        CopyFormat::from_options(&[], &[]).unwrap()
    }

    #[test]
    fn text_format_round_trips() {
        let f = text();
        let rows = f
            .parse(b"1\ta\\tb\t\\N\n2\tc\\\\d\\n\t\\101\n\\.\n")
            .unwrap();
        assert_eq!(
            rows,
            vec![
                vec![Some("1".into()), Some("a\tb".into()), None],
                vec![Some("2".into()), Some("c\\d\n".into()), Some("A".into())],
            ]
        );
        assert_eq!(f.line(&rows[0]), "1\ta\\tb\t\\N\n");
        assert_eq!(f.line(&rows[1]), "2\tc\\\\d\\n\tA\n");
        assert_eq!(f.parse(b"").unwrap(), Vec::<Vec<Option<String>>>::new());
    }

    #[test]
    fn csv_format() {
        let f = CopyFormat::from_options(
            &[
                CopyOption::Format(weir_common::datafusion::sql::sqlparser::ast::Ident::new(
                    "csv",
                )),
                CopyOption::Header(true),
            ],
            &[],
        )
        .unwrap();
        let rows = f
            .parse(b"id,name\n1,\"a,b\"\n2,\n3,\"say \"\"hi\"\"\"\n")
            .unwrap();
        assert_eq!(
            rows,
            vec![
                vec![Some("1".into()), Some("a,b".into())],
                vec![Some("2".into()), None],
                vec![Some("3".into()), Some("say \"hi\"".into())],
            ]
        );
        assert_eq!(f.line(&rows[0]), "1,\"a,b\"\n");
        assert_eq!(f.line(&rows[1]), "2,\n");
        assert_eq!(f.line(&rows[2]), "3,\"say \"\"hi\"\"\"\n");
    }
}
