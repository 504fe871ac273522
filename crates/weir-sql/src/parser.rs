//! Splitting a query string into statements. sqlparser (Postgres dialect)
//! parses standard SQL; Weir's own statements are recognised first, on the
//! token stream, so sqlparser is used unforked.

use std::collections::BTreeMap;

use weir_common::datafusion::sql::sqlparser::ast::{
    CreateTableOptions, Expr, ObjectName, Query, SqlOption, Statement as SqlStatement, Value,
};
use weir_common::datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use weir_common::datafusion::sql::sqlparser::keywords::Keyword;
use weir_common::datafusion::sql::sqlparser::parser::Parser;
use weir_common::datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::source_ddl::{parse_source_sink, CreateSink, CreateSource, DropKind};
use crate::SqlError;

/// One statement as Weir executes it.
#[derive(Debug, Clone)]
pub enum Statement {
    /// A statement sqlparser understands (SELECT, INSERT, CREATE TABLE, ...).
    Sql(Box<SqlStatement>),
    /// `CREATE MATERIALIZED VIEW name AS query`.
    CreateMaterializedView {
        name: ObjectName,
        query: Box<Query>,
        if_not_exists: bool,
        /// `WITH (key = value, ...)`, keys lower-cased, values as text.
        options: BTreeMap<String, String>,
    },
    /// `EXPLAIN CREATE MATERIALIZED VIEW ...`: show the dataflow.
    ExplainMaterializedView { name: ObjectName, query: Box<Query> },
    /// `EXPLAIN MATERIALIZED VIEW name` / `EXPLAIN SINK name`: the
    /// dataflow plan the catalog stores for it.
    ExplainStored { name: String },
    /// `FLUSH`: wait until every pending change is visible.
    Flush,
    /// `CHECKPOINT`: take a checkpoint now (as in Postgres).
    Checkpoint,
    /// `SHOW TABLES`.
    ShowTables,
    /// `SHOW MATERIALIZED VIEWS`.
    ShowMaterializedViews,
    /// `SHOW SOURCES`.
    ShowSources,
    /// `SHOW SINKS`.
    ShowSinks,
    /// `CREATE SOURCE`, or `CREATE TABLE ... WITH (connector = ...)`.
    CreateSource(Box<CreateSource>),
    /// `CREATE SINK name AS query WITH (connector = ...)`.
    CreateSink(Box<CreateSink>),
    /// `DROP SOURCE` / `DROP SINK`.
    DropSourceOrSink {
        kind: DropKind,
        names: Vec<String>,
        if_exists: bool,
        cascade: bool,
    },
    /// `SUBSCRIBE [TO] name` or `SUBSCRIBE (query)`: changes as they
    /// commit.
    Subscribe { target: SubscribeTarget },
    /// `CREATE | ALTER | DROP  USER | ROLE ...`.
    Role(RoleStatement),
    /// `DECLARE cursor CURSOR FOR SUBSCRIBE [TO] name | (query)`.
    DeclareSubscribe {
        cursor: String,
        target: SubscribeTarget,
    },
    /// `FETCH [FORWARD] [n | ALL] [FROM | IN] cursor [WITH (timeout = 'd')]`.
    Fetch {
        cursor: String,
        /// `None` for ALL.
        count: Option<u64>,
        /// How long to wait for a first row (`None`: until one comes).
        timeout: Option<std::time::Duration>,
    },
}

/// What a SUBSCRIBE streams.
#[derive(Debug, Clone, PartialEq)]
pub enum SubscribeTarget {
    /// A table or materialized view, by name.
    Relation(String),
    /// A query, maintained for the subscription only.
    Query(Box<Query>),
}

impl Statement {
    /// True for statements that return rows.
    pub fn returns_rows(&self) -> bool {
        match self {
            Statement::Sql(s) => matches!(
                s.as_ref(),
                SqlStatement::Query(_)
                    | SqlStatement::Explain { .. }
                    | SqlStatement::ShowVariable { .. }
                    | SqlStatement::ShowTables { .. }
            ),
            Statement::ExplainMaterializedView { .. }
            | Statement::ExplainStored { .. }
            | Statement::ShowTables
            | Statement::ShowMaterializedViews
            | Statement::ShowSources
            | Statement::ShowSinks
            | Statement::Subscribe { .. }
            | Statement::Fetch { .. } => true,
            _ => false,
        }
    }
}

/// Give every unnamed item of an INSERT's SELECT list a unique alias.
///
/// INSERT maps columns by position, so names do not matter there; but
/// DataFusion refuses a projection with two identical expressions
/// (`SELECT i, i`), which Postgres accepts.
pub fn alias_insert_source(statement: &mut SqlStatement) {
    use weir_common::datafusion::sql::sqlparser::ast::{Ident, SelectItem, SetExpr};
    let SqlStatement::Insert(insert) = statement else {
        return;
    };
    let Some(query) = insert.source.as_mut() else {
        return;
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    for (i, item) in select.projection.iter_mut().enumerate() {
        if let SelectItem::UnnamedExpr(expr) = item {
            *item = SelectItem::ExprWithAlias {
                expr: expr.clone(),
                alias: Ident::new(format!("__weir_col_{i}")),
            };
        }
    }
}

/// Parse every statement of `sql` (separated by `;`).
pub fn parse(sql: &str) -> Result<Vec<Statement>, SqlError> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| SqlError::Syntax {
            message: format!("syntax error: {}", e.message),
            position: None,
        })?;
    let mut statements = Vec::new();
    for group in split_statements(tokens) {
        if let Some(s) = parse_source_sink(&group)? {
            statements.push(s);
            continue;
        }
        if let Some(s) = weir_statement(&group) {
            statements.push(s);
            continue;
        }
        if let Some(s) = subscribe_statement(&group, sql)? {
            statements.push(s);
            continue;
        }
        if let Some(s) = role_statement(&group)? {
            statements.push(s);
            continue;
        }
        let mut parser = Parser::new(&dialect).with_tokens_with_locations(group);
        let parsed = parser
            .parse_statement()
            .map_err(|e| SqlError::from_parser(e, sql))?;
        // Anything left over is a syntax error too.
        let next = parser.peek_token();
        if next.token != Token::EOF {
            return Err(SqlError::from_parser(
                weir_common::datafusion::sql::sqlparser::parser::ParserError::ParserError(format!(
                    "Expected: end of statement, found: {} at Line: {}, Column: {}",
                    next.token, next.span.start.line, next.span.start.column
                )),
                sql,
            ));
        }
        statements.push(classify(parsed));
    }
    Ok(statements)
}

/// Token groups between top-level semicolons, without empty ones.
fn split_statements(tokens: Vec<TokenWithSpan>) -> Vec<Vec<TokenWithSpan>> {
    let mut groups = Vec::new();
    let mut current = Vec::new();
    for t in tokens {
        match t.token {
            Token::SemiColon => {
                if has_content(&current) {
                    current.push(TokenWithSpan::wrap(Token::EOF));
                    groups.push(std::mem::take(&mut current));
                } else {
                    current.clear();
                }
            }
            _ => current.push(t),
        }
    }
    if has_content(&current) {
        groups.push(current);
    }
    groups
}

fn has_content(tokens: &[TokenWithSpan]) -> bool {
    tokens
        .iter()
        .any(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
}

/// Weir statements sqlparser does not know, matched on their words.
fn weir_statement(tokens: &[TokenWithSpan]) -> Option<Statement> {
    let all: Vec<&TokenWithSpan> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
        .collect();
    match all.as_slice() {
        [e, m, v, name]
            if is_word(Some(e), "explain")
                && is_word(Some(m), "materialized")
                && is_word(Some(v), "view") =>
        {
            return ident(name).map(|name| Statement::ExplainStored { name });
        }
        [e, s, name] if is_word(Some(e), "explain") && is_word(Some(s), "sink") => {
            return ident(name).map(|name| Statement::ExplainStored { name });
        }
        _ => {}
    }
    let mut significant = all.into_iter();
    if let (Some(first), None) = (significant.next(), significant.next()) {
        if matches!(&first.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("checkpoint"))
        {
            return Some(Statement::Checkpoint);
        }
    }
    let words: Vec<Keyword> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
        .map(|t| match &t.token {
            Token::Word(w) if w.quote_style.is_none() => Some(w.keyword),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    match words.as_slice() {
        [Keyword::FLUSH] => Some(Statement::Flush),
        [Keyword::SHOW, Keyword::TABLES] => Some(Statement::ShowTables),
        [Keyword::SHOW, Keyword::MATERIALIZED, Keyword::VIEWS] => {
            Some(Statement::ShowMaterializedViews)
        }
        _ => None,
    }
}

/// An identifier as Postgres folds it (unquoted: lower case).
fn ident(t: &TokenWithSpan) -> Option<String> {
    match &t.token {
        Token::Word(w) if w.quote_style.is_some() => Some(w.value.clone()),
        Token::Word(w) => Some(w.value.to_ascii_lowercase()),
        _ => None,
    }
}

fn is_word(t: Option<&&TokenWithSpan>, word: &str) -> bool {
    matches!(t, Some(t) if matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word)))
}

/// SUBSCRIBE, DECLARE ... CURSOR FOR SUBSCRIBE and FETCH (which sqlparser
/// parses without Weir's `WITH (timeout)`); `None` for other statements.
fn subscribe_statement(tokens: &[TokenWithSpan], sql: &str) -> Result<Option<Statement>, SqlError> {
    let t: Vec<&TokenWithSpan> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
        .collect();
    let syntax = |what: &str| SqlError::Syntax {
        message: format!("syntax error: {what}"),
        position: None,
    };
    // `[TO] name` (optionally `schema.name`) or `(query)` at `at`.
    let target = |at: usize| -> Result<SubscribeTarget, SqlError> {
        let at = if is_word(t.get(at), "to") { at + 1 } else { at };
        let rest = &t[at.min(t.len())..];
        match rest {
            [name] => ident(name)
                .map(SubscribeTarget::Relation)
                .ok_or_else(|| syntax("expected a relation name after SUBSCRIBE")),
            [_schema, dot, name] if dot.token == Token::Period => ident(name)
                .map(SubscribeTarget::Relation)
                .ok_or_else(|| syntax("expected a relation name after SUBSCRIBE")),
            [first, inner @ .., last]
                if first.token == Token::LParen && last.token == Token::RParen =>
            {
                let tokens: Vec<TokenWithSpan> = inner.iter().map(|t| (*t).clone()).collect();
                let mut parser =
                    Parser::new(&PostgreSqlDialect {}).with_tokens_with_locations(tokens);
                let query = parser
                    .parse_query()
                    .map_err(|e| SqlError::from_parser(e, sql))?;
                if parser.peek_token().token != Token::EOF {
                    return Err(syntax("expected ) after the query of SUBSCRIBE"));
                }
                Ok(SubscribeTarget::Query(query))
            }
            _ => Err(syntax("expected SUBSCRIBE [TO] name or SUBSCRIBE (query)")),
        }
    };
    if is_word(t.first(), "subscribe") {
        return Ok(Some(Statement::Subscribe { target: target(1)? }));
    }
    if is_word(t.first(), "declare")
        && is_word(t.get(2), "cursor")
        && is_word(t.get(3), "for")
        && is_word(t.get(4), "subscribe")
    {
        let cursor = t
            .get(1)
            .and_then(|c| ident(c))
            .ok_or_else(|| syntax("expected a cursor name"))?;
        return Ok(Some(Statement::DeclareSubscribe {
            cursor,
            target: target(5)?,
        }));
    }
    if !is_word(t.first(), "fetch") {
        return Ok(None);
    }
    let mut i = 1;
    if is_word(t.get(i), "forward") || is_word(t.get(i), "next") {
        i += 1;
    }
    let mut count = Some(1);
    match t.get(i).map(|x| &x.token) {
        Some(Token::Number(n, _)) => {
            count = Some(
                n.parse::<u64>()
                    .map_err(|_| syntax("expected a row count"))?,
            );
            i += 1;
        }
        Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("all") => {
            count = None;
            i += 1;
        }
        _ => {}
    }
    if is_word(t.get(i), "from") || is_word(t.get(i), "in") {
        i += 1;
    }
    let cursor = t
        .get(i)
        .and_then(|c| ident(c))
        .ok_or_else(|| syntax("expected a cursor name"))?;
    i += 1;
    let mut timeout = None;
    if is_word(t.get(i), "with") {
        // WITH ( timeout = 'duration' )
        let value = match (
            t.get(i + 1),
            t.get(i + 2),
            t.get(i + 3),
            t.get(i + 4),
            t.get(i + 5),
        ) {
            (Some(l), Some(k), Some(eq), Some(v), Some(r))
                if l.token == Token::LParen
                    && is_word(Some(k), "timeout")
                    && eq.token == Token::Eq
                    && r.token == Token::RParen =>
            {
                match &v.token {
                    Token::SingleQuotedString(s) => s.clone(),
                    Token::Number(n, _) => format!("{n}ms"),
                    _ => return Err(syntax("expected WITH (timeout = 'duration')")),
                }
            }
            _ => return Err(syntax("expected WITH (timeout = 'duration')")),
        };
        let text = value.trim();
        let parsed = match text.parse::<u64>() {
            Ok(ms) => Ok(std::time::Duration::from_millis(ms)),
            Err(_) => humantime::parse_duration(text),
        };
        timeout = Some(parsed.map_err(|_| {
            SqlError::Weir(weir_common::Error::new(
                weir_common::SqlState::INVALID_PARAMETER_VALUE,
                format!("invalid value for FETCH timeout: \"{value}\""),
            ))
        })?);
        i += 6;
    }
    if i != t.len() {
        return Err(syntax(&format!(
            "unexpected text after FETCH in \"{}\"",
            sql.trim()
        )));
    }
    Ok(Some(Statement::Fetch {
        cursor,
        count,
        timeout,
    }))
}

fn classify(statement: SqlStatement) -> Statement {
    match statement {
        SqlStatement::CreateView(v) if v.materialized => Statement::CreateMaterializedView {
            options: view_options(&v.options),
            name: v.name,
            query: v.query,
            if_not_exists: v.if_not_exists,
        },
        SqlStatement::Explain { statement, .. } if matches!(statement.as_ref(), SqlStatement::CreateView(v) if v.materialized) => {
            match *statement {
                SqlStatement::CreateView(v) => Statement::ExplainMaterializedView {
                    name: v.name,
                    query: v.query,
                },
                other => Statement::Sql(Box::new(other)),
            }
        }
        other => Statement::Sql(Box::new(other)),
    }
}

/// A user (role) statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleStatement {
    Create { name: String, options: RoleOptions },
    Alter { name: String, options: RoleOptions },
    Drop { names: Vec<String>, if_exists: bool },
}

/// What CREATE / ALTER USER set; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleOptions {
    /// `PASSWORD 'x'` (`Some(Some)`), `PASSWORD NULL` (`Some(None)`).
    pub password: Option<Option<String>>,
    pub superuser: Option<bool>,
    pub login: Option<bool>,
}

/// CREATE / ALTER / DROP USER or ROLE (parsed here: sqlparser reads
/// `CREATE USER` in Snowflake's form).
fn role_statement(tokens: &[TokenWithSpan]) -> Result<Option<Statement>, SqlError> {
    let t: Vec<&TokenWithSpan> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
        .collect();
    let verb = ["create", "alter", "drop"]
        .into_iter()
        .find(|v| is_word(t.first(), v));
    let Some(verb) = verb else {
        return Ok(None);
    };
    if !(is_word(t.get(1), "user") || is_word(t.get(1), "role")) {
        return Ok(None);
    }
    let syntax = |what: &str| SqlError::Syntax {
        message: format!("syntax error: {what}"),
        position: None,
    };
    if verb == "drop" {
        let mut i = 2;
        let if_exists = is_word(t.get(i), "if") && is_word(t.get(i + 1), "exists");
        if if_exists {
            i += 2;
        }
        let mut names = Vec::new();
        loop {
            names.push(
                t.get(i)
                    .and_then(|x| ident(x))
                    .ok_or_else(|| syntax("expected a role name"))?,
            );
            i += 1;
            match t.get(i).map(|x| &x.token) {
                Some(Token::Comma) => i += 1,
                None => break,
                Some(_) => return Err(syntax("expected , or the end of DROP USER")),
            }
        }
        return Ok(Some(Statement::Role(RoleStatement::Drop {
            names,
            if_exists,
        })));
    }
    let name = t
        .get(2)
        .and_then(|x| ident(x))
        .ok_or_else(|| syntax("expected a role name"))?;
    let mut options = RoleOptions::default();
    let mut i = 3;
    if is_word(t.get(i), "with") {
        i += 1;
    }
    while let Some(tok) = t.get(i) {
        let word = match &tok.token {
            Token::Word(w) => w.value.to_ascii_lowercase(),
            _ => return Err(syntax("expected a role option")),
        };
        i += 1;
        match word.as_str() {
            "encrypted" => {}
            "password" => {
                options.password = Some(match t.get(i).map(|x| &x.token) {
                    Some(Token::SingleQuotedString(p)) => Some(p.clone()),
                    Some(Token::Word(w)) if w.value.eq_ignore_ascii_case("null") => None,
                    _ => return Err(syntax("expected PASSWORD 'text' or PASSWORD NULL")),
                });
                i += 1;
            }
            "superuser" => options.superuser = Some(true),
            "nosuperuser" => options.superuser = Some(false),
            "login" => options.login = Some(true),
            "nologin" => options.login = Some(false),
            // Accepted and meaningless in Weir (one database, no grants).
            "createdb" | "nocreatedb" | "createrole" | "nocreaterole" | "inherit" | "noinherit"
            | "replication" | "noreplication" | "bypassrls" | "nobypassrls" => {}
            other => {
                return Err(SqlError::Unsupported(format!(
                    "role option {} is not supported",
                    other.to_ascii_uppercase()
                )))
            }
        }
    }
    Ok(Some(Statement::Role(if verb == "create" {
        RoleStatement::Create { name, options }
    } else {
        RoleStatement::Alter { name, options }
    })))
}

/// `WITH (...)` options as lower-case keys and text values.
fn view_options(options: &CreateTableOptions) -> BTreeMap<String, String> {
    let list = match options {
        CreateTableOptions::With(list) | CreateTableOptions::Options(list) => list.as_slice(),
        _ => &[],
    };
    list.iter()
        .filter_map(|o| match o {
            SqlOption::KeyValue { key, value } => {
                let text = match value {
                    Expr::Value(v) => match &v.value {
                        Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                        other => other.to_string(),
                    },
                    Expr::Identifier(i) => i.value.clone(),
                    other => other.to_string(),
                };
                Some((key.value.to_lowercase(), text))
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_recognises_weir_statements() {
        let s = parse("flush; SHOW TABLES ;; show materialized views; select 1").unwrap();
        assert!(matches!(s[0], Statement::Flush));
        assert!(matches!(s[1], Statement::ShowTables));
        assert!(matches!(s[2], Statement::ShowMaterializedViews));
        assert!(matches!(s[3], Statement::Sql(_)));
        let s = parse("CREATE MATERIALIZED VIEW v AS SELECT a FROM t").unwrap();
        assert!(matches!(s[0], Statement::CreateMaterializedView { .. }));
        let s = parse("EXPLAIN CREATE MATERIALIZED VIEW v AS SELECT a FROM t").unwrap();
        assert!(matches!(s[0], Statement::ExplainMaterializedView { .. }));
        let s = parse("explain materialized view \"V\"").unwrap();
        assert!(matches!(&s[0], Statement::ExplainStored { name } if name == "V"));
        let s = parse("EXPLAIN SINK out").unwrap();
        assert!(matches!(&s[0], Statement::ExplainStored { name } if name == "out"));
    }

    #[test]
    fn role_statements() {
        let s = parse("CREATE USER Alice WITH PASSWORD 'pw' SUPERUSER; ALTER ROLE alice PASSWORD NULL; DROP USER IF EXISTS a, b").unwrap();
        assert_eq!(
            s.iter()
                .filter_map(|x| match x {
                    Statement::Role(r) => Some(r.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            vec![
                RoleStatement::Create {
                    name: "alice".into(),
                    options: RoleOptions {
                        password: Some(Some("pw".into())),
                        superuser: Some(true),
                        login: None
                    },
                },
                RoleStatement::Alter {
                    name: "alice".into(),
                    options: RoleOptions {
                        password: Some(None),
                        ..Default::default()
                    },
                },
                RoleStatement::Drop {
                    names: vec!["a".into(), "b".into()],
                    if_exists: true
                },
            ]
        );
        assert!(parse("CREATE USER x PASSWORD").is_err());
        assert!(parse("CREATE USER x VALID UNTIL 'infinity'").is_err());
    }

    #[test]
    fn subscribe_cursors() {
        let s = parse("DECLARE c CURSOR FOR SUBSCRIBE TO Totals; FETCH 10 c WITH (timeout = '1s'); FETCH ALL FROM c; fetch c").unwrap();
        assert!(
            matches!(&s[0], Statement::DeclareSubscribe { cursor, target: SubscribeTarget::Relation(r) } if cursor == "c" && r == "totals")
        );
        assert!(
            matches!(&s[1], Statement::Fetch { cursor, count: Some(10), timeout: Some(t) } if cursor == "c" && t.as_secs() == 1)
        );
        assert!(matches!(
            &s[2],
            Statement::Fetch {
                count: None,
                timeout: None,
                ..
            }
        ));
        assert!(matches!(&s[3], Statement::Fetch { count: Some(1), .. }));
        assert!(
            matches!(&parse("SUBSCRIBE v").unwrap()[0], Statement::Subscribe { target: SubscribeTarget::Relation(r) } if r == "v")
        );
        match &parse("SUBSCRIBE TO (SELECT g, count(*) FROM t GROUP BY g)").unwrap()[0] {
            Statement::Subscribe {
                target: SubscribeTarget::Query(q),
            } => assert_eq!(q.to_string(), "SELECT g, count(*) FROM t GROUP BY g"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            &parse("DECLARE c CURSOR FOR SUBSCRIBE (SELECT * FROM t)").unwrap()[0],
            Statement::DeclareSubscribe {
                target: SubscribeTarget::Query(_),
                ..
            }
        ));
        assert!(parse("SUBSCRIBE (SELECT 1").is_err());
        assert!(parse("SUBSCRIBE (SELECT 1) x").is_err());
        assert!(parse("FETCH 1 c WITH (timeout = 'soon')").is_err());
    }

    #[test]
    fn syntax_errors_carry_position() {
        let e = parse("SELECT 1 +* 2").unwrap_err();
        match e {
            SqlError::Syntax { position, .. } => assert_eq!(position, Some(11)),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse("SELEC 1"),
            Err(SqlError::Syntax {
                position: Some(1),
                ..
            })
        ));
    }
}
