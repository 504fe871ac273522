//! Rewrites of a parsed statement so the SQL Postgres clients send about
//! the catalog plans in DataFusion:
//! - unqualified `pg_class` (etc.) reads `pg_catalog.pg_class`, as
//!   Postgres searches `pg_catalog` first (unless a Weir relation has the
//!   name);
//! - `pg_catalog.f(...)` and `information_schema.f(...)` call `f`;
//! - `'name'::regclass` and `'type'::regtype` become the OID (42P01 /
//!   42704 if there is none); other `::regclass` and `::regtype` casts
//!   give the name, as Postgres prints them (`pg_regclass_name`,
//!   `format_type`); `::oid` casts become BIGINT, `::name` and `::regproc`
//!   TEXT;
//! - array literals `'{a,b}'::text[]` and `x = ANY('{a,b}')` are arrays;
//!   `array_upper` / `array_lower` of 1-based arrays are computed from
//!   `array_length`;
//! - `x COLLATE pg_catalog.default` is `x`;
//! - `'\x0001ff'::bytea` (and the escape format) is those bytes, as
//!   Postgres reads bytea input (psycopg2 sends bytes this way);
//! - `OPERATOR(pg_catalog.~)` and friends are the plain operators;
//! - `current_user`, `session_user`, `user` and `pg_backend_pid()` are
//!   the session's values;
//! - set-returning catalog helpers become `unnest`s, which run in lockstep
//!   in one select list as Postgres's do: `generate_subscripts(a, 1)`,
//!   `information_schema._pg_expandarray(a)` (pgJDBC's primary keys) with
//!   its fields `(...).x` / `(...).n` read by `get_field`;
//! - in a statement that reads the catalog, a scalar subquery selecting
//!   one plain expression takes `max` of it: Postgres runs such correlated
//!   subqueries (psql's `\d` does), DataFusion only aggregated ones. The
//!   catalog's subqueries return at most one row, so the value is the same.

use std::ops::ControlFlow;

use weir_common::datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, visit_relations_mut, AccessExpr, ArrayElemTypeDef, BinaryOperator,
    DataType as SqlType, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident,
    Insert, JoinOperator, ObjectName, ObjectNamePart, OrderByKind, Query, Select, SelectItem,
    SetExpr, Statement, TableAlias, TableFactor, TableWithJoins, Value, VisitMut, VisitorMut,
};
use weir_common::datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use weir_common::datafusion::sql::sqlparser::parser::Parser;
use weir_common::{Error, SqlState};

use super::{catalog_table_oid, pg_type_named, rel_oids, EMPTY_TABLES, TABLES};
use crate::catalog::Catalog;

/// What the rewrite needs from the session.
pub struct SessionFacts {
    pub user: String,
    pub pid: i32,
}

fn last_part(name: &ObjectName) -> Option<String> {
    name.0
        .last()
        .and_then(ObjectNamePart::as_ident)
        .map(|i| i.value.clone())
}

fn first_part(name: &ObjectName) -> Option<String> {
    name.0
        .first()
        .and_then(ObjectNamePart::as_ident)
        .map(|i| i.value.to_ascii_lowercase())
}

fn parse_expr(sql: &str) -> Option<Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .ok()
}

/// The elements of a Postgres array literal `{a,"b c",NULL}` (one
/// dimension), `None` if it is not one.
fn array_elements(text: &str) -> Option<Vec<Option<String>>> {
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    if inner.trim().is_empty() {
        return Some(vec![]);
    }
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut item = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            loop {
                match chars.next()? {
                    '\\' => item.push(chars.next()?),
                    '"' => break,
                    c => item.push(c),
                }
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                if c == '{' || c == '}' || c == '"' {
                    return None;
                }
                item.push(c);
                chars.next();
            }
            item = item.trim().to_string();
        }
        out.push((quoted || !item.eq_ignore_ascii_case("null")).then_some(item));
        match chars.next() {
            Some(',') => continue,
            None => return Some(out),
            Some(_) => return None,
        }
    }
}

/// `ARRAY[...]` SQL for a Postgres array literal, elements cast to `cast`.
fn array_sql(text: &str, cast: Option<&str>) -> Option<String> {
    let items: Vec<String> = array_elements(text)?
        .into_iter()
        .map(|e| match e {
            None => "NULL".to_string(),
            Some(v) => format!("'{}'", v.replace('\'', "''")),
        })
        .map(|v| match cast {
            Some(t) => format!("CAST({v} AS {t})"),
            None => v,
        })
        .collect();
    Some(format!("ARRAY[{}]", items.join(", ")))
}

/// Array literals and `array_upper` / `array_lower` (see the module docs).
fn arrays(e: &mut Expr) {
    let replacement = match e {
        Expr::Cast {
            expr,
            data_type: SqlType::Array(elem),
            ..
        } => {
            let elem_type = match elem {
                weir_common::datafusion::sql::sqlparser::ast::ArrayElemTypeDef::SquareBracket(
                    t,
                    _,
                )
                | weir_common::datafusion::sql::sqlparser::ast::ArrayElemTypeDef::AngleBracket(t)
                | weir_common::datafusion::sql::sqlparser::ast::ArrayElemTypeDef::Parenthesis(t) => {
                    Some(t.to_string())
                }
                weir_common::datafusion::sql::sqlparser::ast::ArrayElemTypeDef::None => None,
            };
            string_literal(expr).and_then(|t| array_sql(t, elem_type.as_deref()))
        }
        Expr::AnyOp { right, .. } | Expr::AllOp { right, .. } => {
            let inner = match right.as_ref() {
                Expr::Nested(x) => x.as_ref(),
                other => other,
            };
            if let Some(x) = string_literal(inner)
                .and_then(|t| array_sql(t, None))
                .and_then(|s| parse_expr(&s))
            {
                **right = x;
            }
            None
        }
        Expr::Function(f) => {
            let name = last_part(&f.name).map(|n| n.to_ascii_lowercase());
            let FunctionArguments::List(list) = &f.args else {
                return;
            };
            let args: Vec<String> = list.args.iter().map(ToString::to_string).collect();
            match (name.as_deref(), args.as_slice()) {
                (Some("array_upper"), [a, d]) => {
                    Some(format!("CAST(array_length({a}, {d}) AS BIGINT)"))
                }
                (Some("array_lower"), [a, d]) => {
                    Some(format!("CASE WHEN array_length({a}, {d}) > 0 THEN 1 END"))
                }
                _ => None,
            }
        }
        _ => None,
    };
    if let Some(x) = replacement.as_deref().and_then(parse_expr) {
        *e = x;
    }
}

/// The set-returning helpers as `unnest` expressions (see the module docs).
fn set_returning(e: &mut Expr) {
    match e {
        Expr::CompoundFieldAccess { root, access_chain } => {
            if let [AccessExpr::Dot(Expr::Identifier(field))] = access_chain.as_slice() {
                let root = match root.as_ref() {
                    Expr::Nested(inner) => inner.as_ref(),
                    other => other,
                };
                let field = field.value.to_ascii_lowercase().replace('\'', "''");
                if let Some(x) = parse_expr(&format!("get_field({root}, '{field}')")) {
                    *e = x;
                }
            }
        }
        Expr::Function(f) => {
            let name = last_part(&f.name).map(|n| n.to_ascii_lowercase());
            let FunctionArguments::List(list) = &f.args else {
                return;
            };
            let args: Vec<String> = list.args.iter().map(ToString::to_string).collect();
            let replacement = match (name.as_deref(), args.as_slice()) {
                (Some("generate_subscripts"), [a, dim]) => Some(format!(
                    "unnest(generate_series(1, array_length({a}, {dim})))"
                )),
                (Some("_pg_expandarray"), [a]) => Some(format!("unnest(pg_expandarray_list({a}))")),
                _ => None,
            };
            if let Some(x) = replacement.as_deref().and_then(parse_expr) {
                *e = x;
            }
        }
        _ => {}
    }
}

fn string_literal(e: &Expr) -> Option<&str> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

fn number(n: i64) -> Expr {
    Expr::Value(Value::Number(n.to_string(), false).into())
}

fn custom_type(t: &SqlType) -> Option<String> {
    match t {
        SqlType::Regclass => Some("regclass".into()),
        SqlType::Custom(name, _) => last_part(name).map(|n| n.to_ascii_lowercase()),
        _ => None,
    }
}

/// `'name'::regclass` (or `::regtype`) as a value of its own: a select
/// item, or cast to text. Postgres prints such a value as the name (the
/// relation's, the type's canonical one); elsewhere the literal is its
/// OID (see [`rewrite`]).
fn print_reg_literals(statement: &mut Statement) {
    fn named(e: &Expr) -> Option<String> {
        let Expr::Cast {
            expr, data_type, ..
        } = e
        else {
            return None;
        };
        string_literal(expr)?;
        match custom_type(data_type)?.as_str() {
            "regclass" => Some(format!("pg_regclass_name({e})")),
            "regtype" => Some(format!("format_type({e}, NULL)")),
            _ => None,
        }
    }
    if let Statement::Query(q) = statement {
        if let SetExpr::Select(select) = q.body.as_mut() {
            let mut used = std::collections::HashSet::new();
            for (i, item) in select.projection.iter_mut().enumerate() {
                if let SelectItem::UnnamedExpr(e) = item {
                    // Postgres names the column after the outer cast's type
                    // (DataFusion needs distinct names: a repeat gets its
                    // position appended).
                    let (alias, name) = match e {
                        Expr::Cast {
                            data_type: SqlType::Text,
                            expr,
                            ..
                        } => (Some("text".to_string()), named(expr)),
                        Expr::Cast { data_type, .. } => (custom_type(data_type), named(e)),
                        _ => (None, None),
                    };
                    if let (Some(x), Some(alias)) = (name.and_then(|n| parse_expr(&n)), alias) {
                        let alias = if used.insert(alias.clone()) {
                            alias
                        } else {
                            format!("{alias}{i}")
                        };
                        *item = SelectItem::ExprWithAlias {
                            expr: x,
                            alias: Ident::new(alias),
                        };
                    }
                }
            }
        }
    }
    let _ = visit_expressions_mut(statement, |e| {
        if let Expr::Cast {
            expr, data_type, ..
        } = e
        {
            let to_text = matches!(data_type, SqlType::Text | SqlType::Varchar(_))
                || custom_type(data_type).is_some_and(|t| t == "text" || t == "name");
            if to_text {
                if let Some(x) = named(expr).and_then(|n| parse_expr(&n)) {
                    *e = x;
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

/// `a::regtype = b::regtype` (and other comparisons, regclass too)
/// compares OIDs, as Postgres does: a column cast in an operand stays its
/// OID (the name is only how a regtype prints), a literal becomes its OID
/// later.
fn compare_oids(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |e| {
        if let Expr::BinaryOp { left, op, right } = e {
            let comparison = matches!(
                op,
                BinaryOperator::Eq
                    | BinaryOperator::NotEq
                    | BinaryOperator::Lt
                    | BinaryOperator::LtEq
                    | BinaryOperator::Gt
                    | BinaryOperator::GtEq
            );
            if comparison {
                for side in [left.as_mut(), right.as_mut()] {
                    if let Expr::Cast {
                        expr, data_type, ..
                    } = side
                    {
                        let reg = custom_type(data_type)
                            .is_some_and(|t| t == "regtype" || t == "regclass");
                        if reg && string_literal(expr).is_none() {
                            *data_type = SqlType::BigInt(None);
                        }
                    }
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Catalog columns that are NULL in every row Weir has (no storage
/// options): `unnest` of them in FROM yields nothing.
const NULL_ARRAY_COLUMNS: &[&str] = &["reloptions", "attoptions", "attfdwoptions"];

fn is_empty_table(t: &TableFactor) -> bool {
    match t {
        TableFactor::Table {
            name, args: None, ..
        } => {
            last_part(name).is_some_and(|n| EMPTY_TABLES.contains(&n.to_ascii_lowercase().as_str()))
        }
        TableFactor::Table {
            name,
            args: Some(args),
            ..
        } => {
            let column = match args.args.as_slice() {
                [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(c)))] => Some(c),
                [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::CompoundIdentifier(parts)))] => {
                    parts.last()
                }
                _ => None,
            };
            last_part(name).is_some_and(|n| n.eq_ignore_ascii_case("unnest"))
                && column.is_some_and(|c| {
                    NULL_ARRAY_COLUMNS.contains(&c.value.to_ascii_lowercase().as_str())
                })
        }
        _ => false,
    }
}

/// Scalar functions returning an array that clients call in FROM, where
/// Postgres makes them a one-row table (`FROM string_to_array(...) s`).
const SCALAR_FUNCTIONS_IN_FROM: &[&str] = &[
    "string_to_array",
    "regexp_split_to_array",
    "current_schemas",
    "parse_ident",
];

/// Rewrites of FROM items DataFusion cannot plan:
/// - a scalar function in FROM, `f(args) AS s`, is `(SELECT f(args) AS s) AS s`;
/// - the subscript walk `FROM generate_series(array_lower(X, 1),
///   array_upper(X, 1)) AS i, X AS s` with `s[i]` in the select list (how
///   Grafana lists the search path's schemas) is `FROM (SELECT unnest(X)
///   AS s) AS s` with `s`: the same elements, in order.
///
/// In statements reading the catalog, also `x IN (SELECT ...)` outside
/// WHERE (see [`in_subquery_as_array`]).
struct FromItems {
    reads_catalog: bool,
}

impl VisitorMut for FromItems {
    type Break = ();

    fn post_visit_select(&mut self, select: &mut Select) -> ControlFlow<()> {
        subscript_walk(select);
        for item in &mut select.from {
            scalar_function_in_from(&mut item.relation);
            for j in &mut item.joins {
                scalar_function_in_from(&mut j.relation);
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if !self.reads_catalog {
            return ControlFlow::Continue(());
        }
        if let SetExpr::Select(select) = query.body.as_mut() {
            for item in &mut select.projection {
                let _ = visit_expressions_mut(item, in_subquery_as_array);
            }
        }
        if let Some(OrderByKind::Expressions(list)) = query.order_by.as_mut().map(|o| &mut o.kind) {
            for o in list {
                let _ = visit_expressions_mut(&mut o.expr, in_subquery_as_array);
            }
        }
        ControlFlow::Continue(())
    }
}

/// `x IN (SELECT e ...)` outside WHERE (in a select list or ORDER BY,
/// where DataFusion plans only scalar subqueries) as
/// `coalesce(array_has((SELECT array_agg(e) ...), x), false)` (equal
/// unless the subquery yields NULLs: false where Postgres says NULL).
fn in_subquery_as_array(e: &mut Expr) -> ControlFlow<()> {
    let Expr::InSubquery {
        expr,
        subquery,
        negated,
    } = e
    else {
        return ControlFlow::Continue(());
    };
    let Some(q) = array_agg_subquery(subquery) else {
        return ControlFlow::Continue(());
    };
    let not = if *negated { "NOT " } else { "" };
    if let Some(x) = parse_expr(&format!("{not}coalesce(array_has(({q}), {expr}), false)")) {
        *e = x;
    }
    ControlFlow::Continue(())
}

/// A FROM item's function call and alias, if it is one.
fn from_function(t: &TableFactor) -> Option<(String, String, Option<&TableAlias>)> {
    let TableFactor::Table {
        name,
        args: Some(args),
        alias,
        ..
    } = t
    else {
        return None;
    };
    let list: Vec<String> = args.args.iter().map(ToString::to_string).collect();
    let fname = last_part(name)?.to_ascii_lowercase();
    Some((
        fname.clone(),
        format!("{fname}({})", list.join(", ")),
        alias.as_ref(),
    ))
}

fn scalar_function_in_from(t: &mut TableFactor) {
    let Some((name, call, alias)) = from_function(t) else {
        return;
    };
    if !SCALAR_FUNCTIONS_IN_FROM.contains(&name.as_str()) {
        return;
    }
    let table = alias.map_or(name.clone(), |a| a.name.to_string());
    let column = alias
        .and_then(|a| a.columns.first())
        .map_or(table.clone(), |c| c.name.to_string());
    if let Some(derived) = parse_table_factor(&format!("(SELECT {call} AS {column}) AS {table}")) {
        *t = derived;
    }
}

fn subscript_walk(select: &mut Select) {
    let [a, b] = select.from.as_slice() else {
        return;
    };
    if !a.joins.is_empty() || !b.joins.is_empty() {
        return;
    }
    let (Some((series, series_call, Some(i))), Some((_, array_call, Some(s)))) =
        (from_function(&a.relation), from_function(&b.relation))
    else {
        return;
    };
    let walks = series == "generate_series"
        && series_call
            == format!(
                "generate_series(array_lower({array_call}, 1), array_upper({array_call}, 1))"
            );
    if !walks || !i.columns.is_empty() || !s.columns.is_empty() {
        return;
    }
    let (i, s) = (i.name.to_string(), s.name.to_string());
    let Some(unnested) =
        parse_table_factor(&format!("(SELECT unnest({array_call}) AS {s}) AS {s}"))
    else {
        return;
    };
    let subscript = format!("{s}[{i}]");
    let element = Expr::Identifier(Ident::new(s.trim_matches('"')));
    select.from.truncate(1);
    select.from[0] = TableWithJoins {
        relation: unnested,
        joins: Vec::new(),
    };
    let mut replace = |e: &mut Expr| {
        if e.to_string() == subscript {
            *e = element.clone();
        }
        ControlFlow::<()>::Continue(())
    };
    for item in &mut select.projection {
        let _ = visit_expressions_mut(item, &mut replace);
    }
    if let Some(w) = select.selection.as_mut() {
        let _ = visit_expressions_mut(w, &mut replace);
    }
}

fn parse_table_factor(sql: &str) -> Option<TableFactor> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_table_factor())
        .ok()
}

/// Whether `query` certainly returns no rows because it joins an
/// always-empty catalog table where an empty input empties the join: a
/// FROM item (unless right- or full-joined to something) or an inner or
/// cross join's table.
fn returns_nothing(query: &Query) -> bool {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    if asks_for_foreign_keys(select) {
        return true;
    }
    select.from.iter().any(|item| {
        let keeps_left_only = item.joins.iter().all(|j| {
            !matches!(
                j.join_operator,
                JoinOperator::Right(_) | JoinOperator::RightOuter(_) | JoinOperator::FullOuter(_)
            )
        });
        (is_empty_table(&item.relation) && keeps_left_only)
            || item.joins.iter().any(|j| {
                is_empty_table(&j.relation)
                    && matches!(
                        j.join_operator,
                        JoinOperator::Join(_) | JoinOperator::Inner(_) | JoinOperator::CrossJoin(_)
                    )
            })
    })
}

/// Whether `select` reads `pg_constraint` rows with `contype = 'f'` (a
/// conjunct of its WHERE): Weir has no foreign keys, so none.
fn asks_for_foreign_keys(select: &Select) -> bool {
    fn conjuncts<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
        match e {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                conjuncts(left, out);
                conjuncts(right, out);
            }
            Expr::Nested(inner) => conjuncts(inner, out),
            other => out.push(other),
        }
    }
    let reads_constraints = select.from.iter().any(|item| {
        std::iter::once(&item.relation)
            .chain(item.joins.iter().map(|j| &j.relation))
            .any(|t| {
                matches!(t, TableFactor::Table { name, args: None, .. }
                    if last_part(name).is_some_and(|n| n.eq_ignore_ascii_case("pg_constraint")))
            })
    });
    let Some(selection) = select.selection.as_ref().filter(|_| reads_constraints) else {
        return false;
    };
    let mut all = Vec::new();
    conjuncts(selection, &mut all);
    all.iter().any(|c| {
        let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = c
        else {
            return false;
        };
        let column = match left.as_ref() {
            Expr::Identifier(i) => Some(i),
            Expr::CompoundIdentifier(parts) => parts.last(),
            _ => None,
        };
        column.is_some_and(|c| c.value.eq_ignore_ascii_case("contype"))
            && string_literal(right) == Some("f")
    })
}

/// A subquery that joins an always-empty catalog table returns no rows:
/// a scalar one is NULL, `EXISTS` false, `IN` false. (psql's `\d` asks
/// such correlated questions, e.g. a column's default in `pg_attrdef`,
/// which DataFusion cannot decorrelate.)
fn fold_empty_subqueries(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |e| {
        let folded = match e {
            Expr::Subquery(q) if returns_nothing(q) => Some(Value::Null),
            Expr::Exists { subquery, negated } if returns_nothing(subquery) => {
                Some(Value::Boolean(*negated))
            }
            Expr::InSubquery {
                subquery, negated, ..
            } if returns_nothing(subquery) => Some(Value::Boolean(*negated)),
            _ => None,
        };
        if let Some(v) = folded {
            *e = Expr::Value(v.into());
        }
        ControlFlow::<()>::Continue(())
    });
}

/// In a query that returns no rows, its subqueries are never evaluated:
/// make them NULL, so that forms DataFusion cannot plan (`ARRAY(SELECT
/// ...)`, correlated `= ANY`) do not fail a query that is empty anyway.
fn null_subqueries(query: &mut Query) {
    let _ = visit_expressions_mut(query, |e| {
        let is_subquery = match e {
            Expr::Subquery(_) => true,
            Expr::Function(f) => matches!(f.args, FunctionArguments::Subquery(_)),
            _ => false,
        };
        if is_subquery {
            *e = Expr::Value(Value::Null.into());
        } else if let Expr::Function(f) = e {
            // `unnest(NULL)` does not plan; an untyped NULL array does.
            let unnest_null = last_part(&f.name).is_some_and(|n| n.eq_ignore_ascii_case("unnest"))
                && f.args.to_string() == "(NULL)";
            if unnest_null {
                if let Some(x) = parse_expr("unnest(CAST(NULL AS TEXT[]))") {
                    *e = x;
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

/// `ARRAY(SELECT x FROM ...)` as `(SELECT array_agg(x) FROM ...)`, which
/// DataFusion plans (the subquery has one column, as Postgres requires).
fn array_subqueries(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |e| {
        let Expr::Function(f) = e else {
            return ControlFlow::<()>::Continue(());
        };
        let is_array = last_part(&f.name).is_some_and(|n| n.eq_ignore_ascii_case("array"));
        let FunctionArguments::Subquery(q) = &f.args else {
            return ControlFlow::Continue(());
        };
        if !is_array {
            return ControlFlow::Continue(());
        }
        if let Some(q) = array_agg_subquery(q) {
            *e = Expr::Subquery(Box::new(q));
        }
        ControlFlow::Continue(())
    });
}

/// `q`, a query selecting one expression `x` (a plain SELECT), as one
/// selecting `array_agg(x ORDER BY ...)`: its rows as one array, in its
/// order. `None` for other queries.
fn array_agg_subquery(q: &Query) -> Option<Query> {
    let mut q = q.clone();
    let order = q.order_by.take();
    let SetExpr::Select(select) = q.body.as_mut() else {
        return None;
    };
    let [SelectItem::UnnamedExpr(x) | SelectItem::ExprWithAlias { expr: x, .. }] =
        select.projection.as_slice()
    else {
        return None;
    };
    let order = order.map(|o| format!(" {o}")).unwrap_or_default();
    let agg = parse_expr(&format!("array_agg({x}{order})"))?;
    select.projection = vec![SelectItem::UnnamedExpr(agg)];
    Some(q)
}

/// Give repeated unnamed select items (`SELECT pubname, NULL, NULL`)
/// distinct names, which DataFusion requires and Postgres does not.
fn name_duplicate_columns(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            // Qualifiers expanded by `t.*`: an explicit `t.col` beside it
            // would name `col` twice (DBeaver sends `SELECT n.oid, n.*`).
            let wildcards: Vec<String> = select
                .projection
                .iter()
                .filter_map(|item| match item {
                    SelectItem::QualifiedWildcard(kind, _) => {
                        Some(kind.to_string().trim_end_matches(".*").to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect();
            let mut seen = std::collections::HashSet::new();
            for (i, item) in select.projection.iter_mut().enumerate() {
                if let SelectItem::UnnamedExpr(e) = item {
                    let text = e.to_string();
                    let under_wildcard = match &*e {
                        Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
                            wildcards.contains(&parts[0].value.to_ascii_lowercase())
                        }
                        _ => false,
                    };
                    if !seen.insert(text) || under_wildcard {
                        let expr = std::mem::replace(e, Expr::Value(Value::Null.into()));
                        *item = SelectItem::ExprWithAlias {
                            expr,
                            alias: Ident::new(format!(
                                "{}{i}",
                                weir_sql::naming::DUPLICATE_ALIAS_PREFIX
                            )),
                        };
                    }
                }
            }
        }
        SetExpr::SetOperation { left, right, .. } => {
            name_duplicate_columns(left);
            name_duplicate_columns(right);
        }
        SetExpr::Query(q) => name_duplicate_columns(q.body.as_mut()),
        _ => {}
    }
}

/// Wrap the one plain expression of each scalar subquery in `max(...)`.
fn aggregate_scalar_subqueries(statement: &mut Statement) {
    const AGGREGATES: &[&str] = &[
        "count(",
        "sum(",
        "max(",
        "min(",
        "avg(",
        "bool_and(",
        "bool_or(",
        "array_agg(",
        "string_agg(",
        "every(",
    ];
    let _ = visit_expressions_mut(statement, |e| {
        let Expr::Subquery(q) = e else {
            return ControlFlow::<()>::Continue(());
        };
        let SetExpr::Select(select) = q.body.as_mut() else {
            return ControlFlow::Continue(());
        };
        let grouped = match &select.group_by {
            GroupByExpr::All(_) => true,
            GroupByExpr::Expressions(exprs, _) => !exprs.is_empty(),
        };
        if grouped || select.having.is_some() || select.projection.len() != 1 {
            return ControlFlow::Continue(());
        }
        let (inner, alias) = match &select.projection[0] {
            SelectItem::UnnamedExpr(x) => (x, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.clone())),
            _ => return ControlFlow::Continue(()),
        };
        let text = inner.to_string();
        let lower = text.to_ascii_lowercase();
        if AGGREGATES.iter().any(|a| lower.starts_with(a)) {
            return ControlFlow::Continue(());
        }
        let wrapped = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&format!("max({text})"))
            .and_then(|mut p| p.parse_expr());
        if let Ok(w) = wrapped {
            select.projection[0] = match alias {
                Some(alias) => SelectItem::ExprWithAlias { expr: w, alias },
                None => SelectItem::UnnamedExpr(w),
            };
        }
        ControlFlow::Continue(())
    });
}

/// The bytes of a bytea input string: hex (`\x0a0b`) or escape format
/// (`a\\b\001`); `None` if malformed.
pub fn decode_bytea(text: &str) -> Option<Vec<u8>> {
    if let Some(hex) = text
        .strip_prefix("\\x")
        .or_else(|| text.strip_prefix("\\X"))
    {
        let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        if !digits.len().is_multiple_of(2) {
            return None;
        }
        return digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
            .collect();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
        } else if bytes.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let octal = std::str::from_utf8(bytes.get(i + 1..i + 4)?).ok()?;
            out.push(u8::from_str_radix(octal, 8).ok()?);
            i += 4;
        }
    }
    Some(out)
}

/// Apply every rewrite to `statement`.
pub fn rewrite(
    statement: &mut Statement,
    catalog: &Catalog,
    facts: &SessionFacts,
) -> Result<(), Error> {
    let mut reads_catalog = false;
    let _ = visit_relations_mut(statement, |name| {
        if name.0.len() == 1 {
            if let Some(n) = last_part(name) {
                let lower = n.to_ascii_lowercase();
                if TABLES.contains(&lower.as_str()) && catalog.get(&lower).is_none() {
                    name.0
                        .insert(0, ObjectNamePart::Identifier(Ident::new("pg_catalog")));
                }
            }
        }
        if name.0.len() == 2
            && matches!(
                first_part(name).as_deref(),
                Some("pg_catalog" | "information_schema")
            )
        {
            reads_catalog = true;
            // `pg_catalog.unnest(...)`: a table function, not a table.
            let table = last_part(name).map(|n| n.to_ascii_lowercase());
            if first_part(name).as_deref() == Some("pg_catalog")
                && !table.as_deref().is_some_and(|t| TABLES.contains(&t))
            {
                name.0.remove(0);
            }
        }
        ControlFlow::<()>::Continue(())
    });
    let _ = statement.visit(&mut FromItems { reads_catalog });
    compare_oids(statement);
    print_reg_literals(statement);
    match statement {
        Statement::Query(q) => name_duplicate_columns(q.body.as_mut()),
        Statement::Insert(Insert {
            source: Some(q), ..
        }) => name_duplicate_columns(q.body.as_mut()),
        _ => {}
    }
    if reads_catalog {
        array_subqueries(statement);
        if let Statement::Query(q) = statement {
            if returns_nothing(q) {
                null_subqueries(q);
            }
        }
        fold_empty_subqueries(statement);
        aggregate_scalar_subqueries(statement);
    }
    let _ = visit_expressions_mut(statement, |e| {
        arrays(e);
        if reads_catalog {
            set_returning(e);
        }
        ControlFlow::<()>::Continue(())
    });
    let flow = visit_expressions_mut(statement, |e| {
        match e {
            Expr::Function(f) => {
                if f.name.0.len() == 2
                    && matches!(
                        first_part(&f.name).as_deref(),
                        Some("pg_catalog" | "information_schema")
                    )
                {
                    f.name.0.remove(0);
                }
                let name = last_part(&f.name).map(|n| n.to_ascii_lowercase());
                let no_args = match &f.args {
                    FunctionArguments::None => true,
                    FunctionArguments::List(l) => l.args.is_empty(),
                    FunctionArguments::Subquery(_) => false,
                };
                match name.as_deref() {
                    Some("current_user" | "session_user" | "user" | "current_role")
                        if matches!(f.args, FunctionArguments::None) =>
                    {
                        *e = Expr::Value(Value::SingleQuotedString(facts.user.clone()).into());
                    }
                    Some("pg_backend_pid") if no_args => *e = number(i64::from(facts.pid)),
                    _ => {}
                }
            }
            Expr::Collate { expr, collation } => {
                let is_default = last_part(collation)
                    .is_some_and(|c| c.eq_ignore_ascii_case("default") || c == "C");
                if is_default {
                    let inner = std::mem::replace(expr.as_mut(), Expr::Value(Value::Null.into()));
                    *e = inner;
                }
            }
            Expr::BinaryOp { op, .. } => {
                if let BinaryOperator::PGCustomBinaryOperator(parts) = op {
                    let plain = match parts.last().map(String::as_str) {
                        Some("~") => Some(BinaryOperator::PGRegexMatch),
                        Some("~*") => Some(BinaryOperator::PGRegexIMatch),
                        Some("!~") => Some(BinaryOperator::PGRegexNotMatch),
                        Some("!~*") => Some(BinaryOperator::PGRegexNotIMatch),
                        Some("=") => Some(BinaryOperator::Eq),
                        Some("<>") => Some(BinaryOperator::NotEq),
                        Some("<") => Some(BinaryOperator::Lt),
                        Some(">") => Some(BinaryOperator::Gt),
                        Some("<=") => Some(BinaryOperator::LtEq),
                        Some(">=") => Some(BinaryOperator::GtEq),
                        Some("~~") => None,
                        _ => None,
                    };
                    if let Some(p) = plain {
                        *op = p;
                    }
                }
            }
            Expr::Cast {
                expr, data_type, ..
            } => {
                if matches!(data_type, SqlType::Uuid) {
                    if let Some(x) = parse_expr(&format!("pg_uuid({expr})")) {
                        *e = x;
                    }
                    return ControlFlow::Continue(());
                }
                if matches!(data_type, SqlType::Bytea) {
                    if let Some(bytes) = string_literal(expr).and_then(decode_bytea) {
                        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                        *e = Expr::Value(Value::HexStringLiteral(hex).into());
                    }
                    return ControlFlow::Continue(());
                }
                if let SqlType::Array(inner) = data_type {
                    let elem = match inner {
                        ArrayElemTypeDef::SquareBracket(t, _)
                        | ArrayElemTypeDef::AngleBracket(t)
                        | ArrayElemTypeDef::Parenthesis(t) => custom_type(t),
                        ArrayElemTypeDef::None => None,
                    };
                    if elem.as_deref() == Some("regtype") {
                        if let Some(x) = parse_expr(&format!("pg_regtype_names({expr})")) {
                            *e = x;
                        }
                    }
                    return ControlFlow::Continue(());
                }
                let Some(target) = custom_type(data_type) else {
                    return ControlFlow::Continue(());
                };
                match target.as_str() {
                    "regclass" => {
                        if let Some(name) = string_literal(expr) {
                            let bare = name.rsplit('.').next().unwrap_or(name);
                            let bare = bare.trim_matches('"');
                            let oid = catalog
                                .get(bare)
                                .or_else(|| catalog.get(&bare.to_ascii_lowercase()))
                                .map(|r| rel_oids(&r).rel)
                                .or_else(|| catalog_table_oid(bare));
                            match oid {
                                Some(o) => *e = number(o),
                                None => {
                                    return ControlFlow::Break(Error::new(
                                        SqlState::UNDEFINED_TABLE,
                                        format!("relation \"{name}\" does not exist"),
                                    ))
                                }
                            }
                        } else if let Some(x) = parse_expr(&format!("pg_regclass_name({expr})")) {
                            *e = x;
                        }
                    }
                    "regtype" => {
                        if let Some(name) = string_literal(expr) {
                            match pg_type_named(name) {
                                Some(t) => *e = number(t.oid),
                                None => {
                                    return ControlFlow::Break(Error::new(
                                        SqlState::UNDEFINED_OBJECT,
                                        format!("type \"{name}\" does not exist"),
                                    ))
                                }
                            }
                        } else if let Some(x) = parse_expr(&format!("format_type({expr}, NULL)")) {
                            *e = x;
                        }
                    }
                    "oid" | "regnamespace" | "regrole" | "xid" | "cid" | "tid" => {
                        *data_type = SqlType::BigInt(None)
                    }
                    "regproc" | "regprocedure" => {
                        // Functions print unqualified (all are in pg_catalog).
                        if let Some(name) = string_literal(expr) {
                            let bare = name.strip_prefix("pg_catalog.").unwrap_or(name);
                            *e = Expr::Value(Value::SingleQuotedString(bare.to_string()).into());
                        } else {
                            *data_type = SqlType::Text;
                        }
                    }
                    "name" | "regoper" | "pg_node_tree" | "text" | "char" | "bpchar"
                    | "varchar" => *data_type = SqlType::Text,
                    // Built-in types spelled with `pg_catalog.`.
                    "int2" | "smallint" => *data_type = SqlType::SmallInt(None),
                    "int4" | "integer" | "int" => *data_type = SqlType::Int(None),
                    "int8" | "bigint" => *data_type = SqlType::BigInt(None),
                    "bool" | "boolean" => *data_type = SqlType::Boolean,
                    "float4" | "real" => *data_type = SqlType::Real,
                    "float8" => *data_type = SqlType::DoublePrecision,
                    _ => {}
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    });
    match flow {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::decode_bytea;

    #[test]
    fn array_literals() {
        use super::array_elements;
        let s = |v: &[Option<&str>]| -> Vec<Option<String>> {
            v.iter().map(|x| x.map(str::to_string)).collect()
        };
        assert_eq!(
            array_elements("{r,p,f}"),
            Some(s(&[Some("r"), Some("p"), Some("f")]))
        );
        assert_eq!(array_elements("{}"), Some(vec![]));
        assert_eq!(
            array_elements("{\"a b\", NULL, \"NULL\", \"q\\\"x\"}"),
            Some(s(&[Some("a b"), None, Some("NULL"), Some("q\"x")]))
        );
        assert_eq!(array_elements("{a,{b}}"), None);
        assert_eq!(array_elements("abc"), None);
    }

    #[test]
    fn bytea_input_formats() {
        assert_eq!(decode_bytea("\\x0001ff"), Some(vec![0, 1, 255]));
        assert_eq!(decode_bytea("\\x"), Some(vec![]));
        assert_eq!(decode_bytea("\\x0"), None);
        assert_eq!(decode_bytea("\\xzz"), None);
        assert_eq!(decode_bytea("ab\\\\c\\001"), Some(b"ab\\c\x01".to_vec()));
        assert_eq!(decode_bytea("\\9"), None);
    }
}
