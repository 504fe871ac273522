//! Column names as Postgres gives them. DataFusion names an unaliased
//! `count(*)` "count(*)" and `a + 1` "t.a + Int64(1)"; Postgres says "count"
//! and "?column?". Clients and tests see Postgres' names.

use weir_common::datafusion::logical_expr::{Expr, LogicalPlan};

/// Postgres-style names of the output columns of an (unoptimized) plan.
pub fn output_names(plan: &LogicalPlan) -> Vec<String> {
    match plan {
        LogicalPlan::Projection(p) => p.expr.iter().map(expr_name).collect(),
        LogicalPlan::Sort(s) => output_names(&s.input),
        LogicalPlan::Limit(l) => output_names(&l.input),
        LogicalPlan::Distinct(d) => output_names(d.input()),
        LogicalPlan::SubqueryAlias(s) => output_names(&s.input),
        other => other
            .schema()
            .fields()
            .iter()
            .map(|f| name_from_display(f.name()))
            .collect(),
    }
}

/// Prefix of the aliases given to repeated select items (`SELECT a, a`):
/// DataFusion needs distinct names, Postgres repeats the name, so
/// [`output_names`] names such an item by its expression.
pub const DUPLICATE_ALIAS_PREFIX: &str = "__weir_dup_";

fn expr_name(e: &Expr) -> String {
    match e {
        Expr::Alias(a) if a.name.starts_with(DUPLICATE_ALIAS_PREFIX) => expr_name(&a.expr),
        // DataFusion aliases its own rewrites with display names such as
        // "count(*)"; a user alias with parentheses would need quoting.
        Expr::Alias(a) if a.name.contains('(') => name_from_display(&a.name),
        Expr::Alias(a) => a.name.clone(),
        Expr::Column(c) => name_from_display(&c.name),
        Expr::Literal(..) => "?column?".to_string(),
        other => name_from_display(&other.schema_name().to_string()),
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$')
}

/// Index of the parenthesis closing the one at `open`.
fn closing_paren(s: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices().skip_while(|(i, _)| *i < open) {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Name from DataFusion's display name of an expression.
pub fn name_from_display(display: &str) -> String {
    let d = display.trim();
    // A (possibly qualified) column.
    let last = d.rsplit('.').next().unwrap_or(d);
    if d.split('.').all(is_identifier) {
        return last.to_string();
    }
    if let Some(inner) = d.strip_prefix("CAST(").and_then(|r| r.rsplit_once(" AS ")) {
        let name = name_from_display(inner.0);
        return name;
    }
    if d.starts_with("CASE ") {
        return "case".to_string();
    }
    if let Some(open) = d.find('(') {
        let func = &d[..open];
        if is_identifier(func) && closing_paren(d, open) == Some(d.len() - 1) {
            return func.to_ascii_lowercase();
        }
    }
    "?column?".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_like_names() {
        assert_eq!(name_from_display("t.a"), "a");
        assert_eq!(name_from_display("count(*)"), "count");
        assert_eq!(name_from_display("sum(t.v)"), "sum");
        assert_eq!(name_from_display("t.a + Int64(1)"), "?column?");
        assert_eq!(name_from_display("CAST(t.a AS Int64)"), "a");
        assert_eq!(name_from_display("count(*) + Int64(1)"), "?column?");
        assert_eq!(name_from_display("max(t.a)"), "max");
    }
}
