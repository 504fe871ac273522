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
            | Statement::ShowTables
            | Statement::ShowMaterializedViews
            | Statement::ShowSources
            | Statement::ShowSinks => true,
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
    let mut significant = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF));
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
