//! `CREATE SOURCE`, `CREATE TABLE ... WITH (connector = ...)`, `CREATE SINK`,
//! `DROP SOURCE` / `DROP SINK`, recognised on the token stream.
//!
//! sqlparser knows none of Flink's source DDL: computed columns
//! (`col AS expr`), `WATERMARK FOR col AS expr`, or quoted option keys
//! (`'connector' = 'datagen'`). So the column list is split at its top-level
//! commas here; plain column definitions and constraints are handed back to
//! sqlparser as an ordinary `CREATE TABLE`, and computed columns and the
//! watermark are kept as SQL text for DataFusion to plan.

use std::collections::BTreeMap;

use weir_common::datafusion::sql::sqlparser::ast::{Query, Statement as SqlStatement};
use weir_common::datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use weir_common::datafusion::sql::sqlparser::keywords::Keyword;
use weir_common::datafusion::sql::sqlparser::parser::{Parser, ParserError};
use weir_common::datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::SqlError;

/// `CREATE SOURCE` (or `CREATE TABLE` with a `connector` option).
#[derive(Debug, Clone)]
pub struct CreateSource {
    /// Name as stored (unquoted identifiers lower-cased).
    pub name: String,
    pub if_not_exists: bool,
    /// The plain columns as `CREATE TABLE name (...)`, for DataFusion to
    /// type; `None` when the DDL lists no columns (the connector's own).
    pub columns: Option<Box<SqlStatement>>,
    /// Computed columns, in order: name and SQL expression over the plain
    /// columns.
    pub computed: Vec<(String, String)>,
    /// `WATERMARK FOR column AS expr`: the column and the expression.
    pub watermark: Option<(String, String)>,
    /// `WITH (...)` options, keys lower-cased, values as text.
    pub options: BTreeMap<String, String>,
    /// The statement as SQL (logged, and kept in checkpoints).
    pub sql: String,
}

/// `CREATE SINK name AS query WITH (...)` or `CREATE SINK name FROM rel WITH (...)`.
#[derive(Debug, Clone)]
pub struct CreateSink {
    pub name: String,
    pub if_not_exists: bool,
    pub query: Box<Query>,
    pub options: BTreeMap<String, String>,
    /// The statement as SQL.
    pub sql: String,
}

/// What `DROP SOURCE` / `DROP SINK` drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropKind {
    Source,
    Sink,
}

fn significant(tokens: &[TokenWithSpan]) -> Vec<&TokenWithSpan> {
    tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
        .collect()
}

fn is_word(t: &Token, word: &str) -> bool {
    matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

fn syntax(message: impl Into<String>) -> SqlError {
    SqlError::Syntax {
        message: format!("syntax error: {}", message.into()),
        position: None,
    }
}

/// An identifier as the catalog stores it.
fn ident(t: &Token) -> Option<String> {
    match t {
        Token::Word(w) if w.quote_style.is_some() => Some(w.value.clone()),
        Token::Word(w) => Some(w.value.to_lowercase()),
        _ => None,
    }
}

/// A possibly qualified name (`public.bid`): its last part, checked.
fn object_name(tokens: &[&TokenWithSpan], at: &mut usize) -> Result<String, SqlError> {
    let mut parts = Vec::new();
    loop {
        let t = tokens.get(*at).ok_or_else(|| syntax("expected a name"))?;
        parts.push(
            ident(&t.token).ok_or_else(|| syntax(format!("expected a name, found {}", t.token)))?,
        );
        *at += 1;
        if matches!(tokens.get(*at).map(|t| &t.token), Some(Token::Period)) {
            *at += 1;
        } else {
            break;
        }
    }
    match parts.as_slice() {
        [n] => Ok(n.clone()),
        [s, n] if s == "public" => Ok(n.clone()),
        _ => Err(SqlError::Weir(weir_common::Error::new(
            weir_common::SqlState::UNDEFINED_OBJECT,
            format!("schema of \"{}\" does not exist", parts.join(".")),
        ))),
    }
}

/// Index of the token closing the parenthesis opened at `open`.
fn matching_paren(tokens: &[&TokenWithSpan], open: usize) -> Result<usize, SqlError> {
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => {}
        }
    }
    Err(syntax("unbalanced parentheses"))
}

/// Split `tokens` at top-level commas.
fn split_commas<'a>(tokens: &[&'a TokenWithSpan]) -> Vec<Vec<&'a TokenWithSpan>> {
    let mut items = vec![Vec::new()];
    let mut depth = 0usize;
    for t in tokens {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            Token::Comma if depth == 0 => {
                items.push(Vec::new());
                continue;
            }
            _ => {}
        }
        if let Some(last) = items.last_mut() {
            last.push(*t);
        }
    }
    items.retain(|i| !i.is_empty());
    items
}

/// Tokens back to SQL text that parses to the same tokens (sqlparser's
/// `Display` does not double quotes inside string literals).
fn text(tokens: &[&TokenWithSpan]) -> String {
    tokens
        .iter()
        .map(|t| match &t.token {
            Token::SingleQuotedString(s) => format!("'{}'", s.replace('\'', "''")),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `( key = value, ... )` starting at the `(` at `open`. Keys may be quoted
/// strings (`'fields.id.kind'`) or dotted words (`nexmark.table.type`).
fn options(
    tokens: &[&TokenWithSpan],
    open: usize,
) -> Result<(BTreeMap<String, String>, usize), SqlError> {
    let close = matching_paren(tokens, open)?;
    let mut out = BTreeMap::new();
    for item in split_commas(&tokens[open + 1..close]) {
        let eq = item
            .iter()
            .position(|t| t.token == Token::Eq)
            .ok_or_else(|| {
                syntax(format!(
                    "expected key = value in WITH, found {}",
                    text(&item)
                ))
            })?;
        let key: String = item[..eq]
            .iter()
            .map(|t| match &t.token {
                Token::SingleQuotedString(s) => s.clone(),
                Token::Word(w) => w.value.clone(),
                other => other.to_string(),
            })
            .collect();
        let value = match &item[eq + 1..] {
            [v] => match &v.token {
                Token::SingleQuotedString(s) => s.clone(),
                Token::Word(w) => w.value.clone(),
                Token::Number(n, _) => n.clone(),
                other => other.to_string(),
            },
            [minus, v] if minus.token == Token::Minus => format!("-{}", v.token),
            rest => {
                return Err(syntax(format!(
                    "bad value for option {key}: {}",
                    text(rest)
                )))
            }
        };
        if key.is_empty() {
            return Err(syntax("empty option name in WITH"));
        }
        out.insert(key.to_lowercase(), value);
    }
    Ok((out, close))
}

/// `IF NOT EXISTS` at `at`, consumed.
fn if_not_exists(tokens: &[&TokenWithSpan], at: &mut usize) -> bool {
    let words = ["if", "not", "exists"];
    if tokens.len() >= *at + 3
        && words
            .iter()
            .enumerate()
            .all(|(i, w)| is_word(&tokens[*at + i].token, w))
    {
        *at += 3;
        true
    } else {
        false
    }
}

/// Recognise Weir's source and sink statements. `Ok(None)`: not one.
pub fn parse_source_sink(
    tokens: &[TokenWithSpan],
) -> Result<Option<super::parser::Statement>, SqlError> {
    use super::parser::Statement;
    let t = significant(tokens);
    if t.len() < 2 {
        return Ok(None);
    }
    if t.len() == 2 && is_word(&t[0].token, "show") {
        if is_word(&t[1].token, "sources") {
            return Ok(Some(Statement::ShowSources));
        }
        if is_word(&t[1].token, "sinks") {
            return Ok(Some(Statement::ShowSinks));
        }
    }
    if is_word(&t[0].token, "drop")
        && (is_word(&t[1].token, "source") || is_word(&t[1].token, "sink"))
    {
        let kind = if is_word(&t[1].token, "source") {
            DropKind::Source
        } else {
            DropKind::Sink
        };
        let mut at = 2;
        let if_exists = t.len() > 3 && is_word(&t[2].token, "if") && is_word(&t[3].token, "exists");
        if if_exists {
            at = 4;
        }
        let mut names = Vec::new();
        loop {
            names.push(object_name(&t, &mut at)?);
            if matches!(t.get(at).map(|x| &x.token), Some(Token::Comma)) {
                at += 1;
            } else {
                break;
            }
        }
        let cascade = match t.get(at) {
            None => false,
            Some(x) if is_word(&x.token, "cascade") && at + 1 == t.len() => true,
            Some(x) if is_word(&x.token, "restrict") && at + 1 == t.len() => false,
            Some(x) => return Err(syntax(format!("unexpected {} after DROP", x.token))),
        };
        return Ok(Some(Statement::DropSourceOrSink {
            kind,
            names,
            if_exists,
            cascade,
        }));
    }
    if !is_word(&t[0].token, "create") {
        return Ok(None);
    }
    if is_word(&t[1].token, "sink") {
        return create_sink(&t).map(|s| Some(Statement::CreateSink(Box::new(s))));
    }
    let is_source = is_word(&t[1].token, "source");
    if !is_source && !is_word(&t[1].token, "table") {
        return Ok(None);
    }
    // CREATE TABLE is a source only with a `connector` option.
    let Some(with_at) = trailing_with(&t) else {
        return if is_source {
            Err(syntax("CREATE SOURCE needs WITH (connector = ...)"))
        } else {
            Ok(None)
        };
    };
    let (opts, _) = options(&t, with_at + 1)?;
    if !opts.contains_key("connector") {
        return if is_source {
            Err(syntax("CREATE SOURCE needs a connector option"))
        } else {
            Ok(None)
        };
    }
    let mut at = 2;
    let if_not_exists = if_not_exists(&t, &mut at);
    let name = object_name(&t, &mut at)?;
    let mut plain = Vec::new();
    let mut computed = Vec::new();
    let mut watermark = None;
    if at < with_at {
        if t[at].token != Token::LParen {
            return Err(syntax(format!("expected ( or WITH, found {}", t[at].token)));
        }
        let close = matching_paren(&t, at)?;
        if close + 1 != with_at {
            return Err(syntax(format!(
                "unexpected {} before WITH",
                t[close + 1].token
            )));
        }
        for item in split_commas(&t[at + 1..close]) {
            if item.len() >= 4
                && is_word(&item[0].token, "watermark")
                && is_word(&item[1].token, "for")
            {
                let col = ident(&item[2].token)
                    .ok_or_else(|| syntax("expected a column after WATERMARK FOR"))?;
                if !is_word(&item[3].token, "as") || item.len() < 5 {
                    return Err(syntax("expected WATERMARK FOR column AS expression"));
                }
                if watermark.is_some() {
                    return Err(syntax("only one WATERMARK is allowed"));
                }
                watermark = Some((col, text(&item[4..])));
            } else if item.len() >= 3
                && matches!(item[1].token, Token::Word(ref w) if w.keyword == Keyword::AS)
            {
                let col = ident(&item[0].token).ok_or_else(|| syntax("expected a column name"))?;
                computed.push((col, text(&item[2..])));
            } else {
                plain.push(text(&item));
            }
        }
    }
    let columns = if plain.is_empty() {
        None
    } else {
        let sql = format!(
            "CREATE TABLE \"{}\" ({})",
            name.replace('"', "\"\""),
            plain.join(", ")
        );
        let dialect = PostgreSqlDialect {};
        let statement = Parser::new(&dialect)
            .try_with_sql(&sql)
            .and_then(|mut p| p.parse_statement())
            .map_err(|e| SqlError::from_parser(e, &sql))?;
        Some(Box::new(statement))
    };
    Ok(Some(Statement::CreateSource(Box::new(CreateSource {
        name,
        if_not_exists,
        columns,
        computed,
        watermark,
        options: opts,
        sql: text(&t),
    }))))
}

/// Index of the `WITH` whose parenthesised list ends the statement.
fn trailing_with(t: &[&TokenWithSpan]) -> Option<usize> {
    let last = t.len().checked_sub(1)?;
    if t[last].token != Token::RParen {
        return None;
    }
    let mut depth = 0usize;
    for i in (0..=last).rev() {
        match t[i].token {
            Token::RParen => depth += 1,
            Token::LParen => {
                depth -= 1;
                if depth == 0 {
                    return (i > 0
                        && matches!(&t[i - 1].token, Token::Word(w) if w.keyword == Keyword::WITH))
                    .then(|| i - 1);
                }
            }
            _ => {}
        }
    }
    None
}

fn create_sink(t: &[&TokenWithSpan]) -> Result<CreateSink, SqlError> {
    let mut at = 2;
    let if_not_exists = if_not_exists(t, &mut at);
    let name = object_name(t, &mut at)?;
    let with_at =
        trailing_with(t).ok_or_else(|| syntax("CREATE SINK needs WITH (connector = ...)"))?;
    let (options, _) = options(t, with_at + 1)?;
    if !options.contains_key("connector") {
        return Err(syntax("CREATE SINK needs a connector option"));
    }
    let first = t.get(at).ok_or_else(|| syntax("expected AS or FROM"))?;
    let sql = if is_word(&first.token, "as") {
        text(&t[at + 1..with_at])
    } else if is_word(&first.token, "from") {
        let mut n = at + 1;
        let from = object_name(t, &mut n)?;
        if n != with_at {
            return Err(syntax("expected WITH after CREATE SINK ... FROM name"));
        }
        format!("SELECT * FROM \"{}\"", from.replace('"', "\"\""))
    } else {
        return Err(syntax(format!(
            "expected AS or FROM, found {}",
            first.token
        )));
    };
    let dialect = PostgreSqlDialect {};
    let query = Parser::new(&dialect)
        .try_with_sql(&sql)
        .and_then(|mut p| {
            let q = p.parse_query()?;
            if p.peek_token().token != Token::EOF {
                return Err(ParserError::ParserError(format!(
                    "unexpected {} in the sink's query",
                    p.peek_token().token
                )));
            }
            Ok(q)
        })
        .map_err(|e| SqlError::from_parser(e, &sql))?;
    Ok(CreateSink {
        name,
        if_not_exists,
        query,
        options,
        sql: text(t),
    })
}

#[cfg(test)]
mod tests {
    use crate::parser::{parse, Statement};

    #[test]
    fn flink_datagen_ddl() {
        let sql = "CREATE TABLE bid (
          id BIGINT, auction BIGINT, extra STRING,
          date_time AS TO_TIMESTAMP_LTZ(1700000000000 + id / 10, 3),
          WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
        ) WITH (
          'connector' = 'datagen', 'number-of-rows' = '10',
          'fields.id.kind' = 'sequence', fields.auction.min = 5
        )";
        let s = parse(sql).unwrap();
        let Statement::CreateSource(c) = &s[0] else {
            panic!("{s:?}")
        };
        assert_eq!(c.name, "bid");
        assert!(c.columns.is_some());
        assert_eq!(c.computed.len(), 1);
        assert_eq!(c.computed[0].0, "date_time");
        assert!(
            c.computed[0].1.contains("TO_TIMESTAMP_LTZ"),
            "{}",
            c.computed[0].1
        );
        let (col, expr) = c.watermark.clone().unwrap();
        assert_eq!(col, "date_time");
        assert!(expr.contains("INTERVAL"), "{expr}");
        assert_eq!(c.options["connector"], "datagen");
        assert_eq!(c.options["fields.id.kind"], "sequence");
        assert_eq!(c.options["fields.auction.min"], "5");
    }

    #[test]
    fn logged_sql_parses_back_to_the_same_statement() {
        let sql = "CREATE SOURCE s (a VARCHAR, b AS a || 'x''y') WITH (connector = 'datagen', 'fields.a.length' = '3', note = 'it''s')";
        let s = parse(sql).unwrap();
        let Statement::CreateSource(c) = &s[0] else {
            panic!()
        };
        assert_eq!(c.options["note"], "it's");
        let again = parse(&c.sql).unwrap();
        let Statement::CreateSource(d) = &again[0] else {
            panic!()
        };
        assert_eq!(d.options, c.options);
        assert_eq!(d.computed, c.computed);
        assert_eq!(d.sql, c.sql);
    }

    #[test]
    fn plain_create_table_is_not_a_source() {
        let s = parse("CREATE TABLE t (a INT) ").unwrap();
        assert!(matches!(s[0], Statement::Sql(_)));
        let s = parse("CREATE SOURCE b WITH (connector = 'nexmark', nexmark.table.type = 'Bid')")
            .unwrap();
        let Statement::CreateSource(c) = &s[0] else {
            panic!()
        };
        assert!(c.columns.is_none());
        assert_eq!(c.options["nexmark.table.type"], "Bid");
    }

    #[test]
    fn sinks_and_drops() {
        let s = parse(
            "CREATE SINK s AS SELECT a, count(*) FROM t GROUP BY a WITH (connector = 'blackhole')",
        )
        .unwrap();
        let Statement::CreateSink(k) = &s[0] else {
            panic!()
        };
        assert_eq!(k.name, "s");
        assert!(k.query.to_string().contains("GROUP BY"));
        let s = parse("CREATE SINK s FROM v WITH (connector = 'blackhole')").unwrap();
        assert!(matches!(s[0], Statement::CreateSink(_)));
        let s = parse("DROP SINK IF EXISTS s, t CASCADE").unwrap();
        assert!(
            matches!(&s[0], Statement::DropSourceOrSink { names, if_exists: true, cascade: true, .. } if names.len() == 2)
        );
        assert!(parse("CREATE SINK s AS SELECT 1").is_err());
        assert!(parse("CREATE SOURCE s (a INT)").is_err());
    }
}
