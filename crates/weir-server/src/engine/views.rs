//! Plain views: `CREATE [OR REPLACE] VIEW name [(columns)] AS query` and
//! `DROP VIEW`, as in Postgres. A plain view stores no rows and runs no
//! dataflow: it is a named query, expanded wherever it is used. Before a
//! statement is planned, every reference to a plain view in its FROM
//! clauses becomes the view's query as a derived table aliased with the
//! view's name and columns (`(query) AS name (columns)`), recursively for
//! views on views. So SELECTs, materialized views, sinks and SUBSCRIBE
//! over a plain view are planned over the relations it reads; a
//! materialized view over a plain view is maintained from those.
//!
//! The catalog records which relations a plain view reads, so DROP of one
//! of them needs CASCADE, as does DROP VIEW while other views use it.
//! **Choice:** `CREATE OR REPLACE VIEW` is refused (0A000) while a
//! materialized view or sink reads the view: its dataflow was planned
//! with the old definition, and recovery would re-plan it with the new one.

use std::collections::HashSet;
use std::ops::ControlFlow;

use weir_common::datafusion::sql::sqlparser::ast::{
    visit_relations, CreateView, Ident, Query, TableAlias, TableAliasColumnDef, TableFactor,
    VisitMut, VisitorMut,
};

use super::ddl::{name_taken, quote_ident, relation_name};
use super::*;
use crate::catalog::ObjectKind;

/// How many plain-view references one statement may expand (views on
/// views included): a guard against a definition that reads itself.
const MAX_EXPANSIONS: usize = 1000;

/// Replaces references to plain views by their queries.
struct Expand<'a> {
    catalog: &'a Catalog,
    /// Names a WITH clause of the statement defines (they shadow views).
    ctes: HashSet<String>,
    expanded: usize,
    /// Plain views referenced (directly or through other plain views).
    used: Vec<String>,
}

impl VisitorMut for Expand<'_> {
    type Break = Error;

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<Self::Break> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.to_lowercase());
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<Self::Break> {
        let TableFactor::Table {
            name, alias, args, ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        if args.is_some() {
            return ControlFlow::Continue(());
        }
        let Ok(view) = relation_name(name) else {
            return ControlFlow::Continue(());
        };
        if name.0.len() == 1 && self.ctes.contains(&view) {
            return ControlFlow::Continue(());
        }
        let Some(relation) = self.catalog.get(&view) else {
            return ControlFlow::Continue(());
        };
        let RelationKind::PlainView { query, .. } = &relation.kind else {
            return ControlFlow::Continue(());
        };
        self.expanded += 1;
        if self.expanded > MAX_EXPANSIONS {
            return ControlFlow::Break(Error::new(
                SqlState::INVALID_RECURSION,
                format!("infinite recursion detected in the definition of view \"{view}\""),
            ));
        }
        if !self.used.contains(&view) {
            self.used.push(view.clone());
        }
        let columns = relation
            .schema
            .fields()
            .iter()
            .map(|f| TableAliasColumnDef {
                name: Ident::with_quote('"', f.name()),
                data_type: None,
            })
            .collect();
        let alias = match alias.take() {
            // `v AS x (a, b)`: the caller's names win.
            Some(a) if !a.columns.is_empty() => a,
            Some(a) => TableAlias { columns, ..a },
            None => TableAlias {
                explicit: true,
                name: Ident::with_quote('"', &view),
                columns,
                at: None,
            },
        };
        *factor = TableFactor::Derived {
            lateral: false,
            subquery: query.clone(),
            alias: Some(alias),
            sample: None,
        };
        ControlFlow::Continue(())
    }
}

/// Expand the plain views `node` reads; returns their names.
pub(super) fn expand_views<T: VisitMut>(catalog: &Catalog, node: &mut T) -> Result<Vec<String>> {
    let mut expand = Expand {
        catalog,
        ctes: HashSet::new(),
        expanded: 0,
        used: Vec::new(),
    };
    match node.visit(&mut expand) {
        ControlFlow::Break(e) => Err(ServerError::Statement(e)),
        ControlFlow::Continue(()) => Ok(expand.used),
    }
}

/// Relations `query` names directly (that exist), each once.
pub(super) fn named_relations(catalog: &Catalog, query: &Query) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let _ = visit_relations(query, |name| {
        if let Ok(n) = relation_name(name) {
            if catalog.get(&n).is_some() && !out.contains(&n) {
                out.push(n);
            }
        }
        ControlFlow::<()>::Continue(())
    });
    out
}

impl Engine {
    /// `CREATE [OR REPLACE] VIEW`.
    pub(super) async fn create_view(&self, v: &CreateView, mode: DdlMode) -> Result<QueryResult> {
        if v.temporary {
            return Err(user(
                SqlState::FEATURE_NOT_SUPPORTED,
                "temporary views are not supported",
            ));
        }
        let _guard = self.ddl_guard(mode).await;
        let name = relation_name(&v.name)?;
        let existing = self.catalog.read().get(&name);
        if let Some(old) = &existing {
            if !v.or_replace || old.object_kind() != ObjectKind::View {
                if let Some(done) =
                    name_taken(&self.catalog.read(), &name, v.if_not_exists, "CREATE VIEW")?
                {
                    return Ok(done);
                }
            }
            let dataflows: Vec<String> = self
                .all_dependents(&name)
                .into_iter()
                .filter(|d| self.catalog.read().get(d).is_some_and(|r| r.is_view()))
                .collect();
            if !dataflows.is_empty() {
                return Err(user(
                    SqlState::FEATURE_NOT_SUPPORTED,
                    format!(
                        "cannot replace view \"{name}\": materialized views or sinks read it ({})",
                        dataflows.join(", ")
                    ),
                ));
            }
        }
        // Plan the expanded query: it must be valid, and gives the columns.
        let mut query = v.query.clone();
        let upstreams = {
            let catalog = self.catalog.read();
            let direct = named_relations(&catalog, &query);
            if direct.contains(&name) {
                return Err(user(
                    SqlState::INVALID_RECURSION,
                    format!("infinite recursion detected in the definition of view \"{name}\""),
                ));
            }
            expand_views(&catalog, query.as_mut())?;
            direct
        };
        let plan = self.plan(&SqlStatement::Query(query.clone()), None).await?;
        let mut names = weir_sql::naming::output_names(&plan);
        if v.columns.len() > names.len() {
            return Err(user(
                SqlState::SYNTAX_ERROR,
                "CREATE VIEW specifies more column names than columns",
            ));
        }
        for (n, c) in names.iter_mut().zip(&v.columns) {
            *n = if c.name.quote_style.is_some() {
                c.name.value.clone()
            } else {
                c.name.value.to_lowercase()
            };
        }
        let mut seen = HashSet::new();
        for n in &names {
            if !seen.insert(n.clone()) {
                return Err(user(
                    SqlState::DUPLICATE_COLUMN,
                    format!("column \"{n}\" specified more than once"),
                ));
            }
        }
        let arrow = plan.schema().as_arrow();
        let fields: Vec<Field> = names
            .iter()
            .zip(arrow.fields())
            .map(|(n, f)| {
                let column = Field::new(n, f.data_type().clone(), true);
                match weir_common::char_type::CharType::of(f) {
                    Some(t) => t.attach(column),
                    None => column,
                }
            })
            .collect();
        let schema = Arc::new(Schema::new(fields));
        // Logged with the definition as written (views it reads are
        // expanded again at every use, so replacing them is seen).
        let columns = if v.columns.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = names
                .iter()
                .take(v.columns.len())
                .map(|n| quote_ident(n))
                .collect();
            format!(" ({})", list.join(", "))
        };
        let ddl = format!(
            "CREATE OR REPLACE VIEW {}{columns} AS {}",
            quote_ident(&name),
            v.query
        );
        {
            let mut catalog = self.catalog.write();
            let state_id = match &existing {
                Some(old) => old.state_id,
                None => catalog.allocate_state_id(),
            };
            catalog.insert(Relation {
                name: name.clone(),
                schema,
                state_id,
                outlet: Arc::new(Outlet::new()),
                ddl: ddl.clone(),
                state_ids: vec![state_id],
                kind: RelationKind::PlainView {
                    query: v.query.clone(),
                    upstreams,
                    definition: v.query.to_string(),
                },
            });
        }
        self.log_ddl(&ddl, mode).await?;
        Ok(QueryResult::command("CREATE VIEW"))
    }
}
