//! `pg_proc` rows from the functions DataFusion knows: one row per
//! argument-type list a function accepts (as Postgres lists overloads),
//! with the return type DataFusion computes for it. Functions whose
//! signature DataFusion cannot enumerate take `"any"` arguments and, when
//! no return type can be computed, return `anyelement`.

use std::collections::BTreeSet;
use std::sync::Arc;

use weir_common::arrow::datatypes::{DataType, Field, FieldRef};
use weir_common::datafusion::execution::context::SessionContext;
use weir_common::datafusion::logical_expr::function::WindowUDFFieldArgs;
use weir_common::datafusion::logical_expr::{ReturnFieldArgs, TypeSignature};

use super::{oid, type_oid};

/// Postgres's `"any"` pseudo-type.
const ANY: i64 = 2276;
/// Postgres's `anyelement` pseudo-type.
const ANY_ELEMENT: i64 = 2283;
/// Overloads listed per function at most (Coercible signatures multiply).
const MAX_OVERLOADS: usize = 8;

/// One `pg_proc` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub oid: i64,
    pub name: String,
    /// `f` function, `a` aggregate, `w` window.
    pub kind: &'static str,
    /// Argument type OIDs.
    pub args: Vec<i64>,
    /// Return type OID (of each row, for a set-returning function).
    pub ret: i64,
    /// Returns a set of rows (`proretset`).
    pub retset: bool,
}

/// The functions of `ctx` as `pg_proc` rows, OIDs from
/// [`oid::PG_PROC_FIRST`] in name order.
pub fn procs(ctx: &SessionContext) -> Vec<Proc> {
    let state = ctx.state();
    let mut rows = Rows::new();
    for (name, udf) in state.scalar_functions() {
        let ret = |args: &[DataType]| {
            udf.return_type(args).ok().or_else(|| {
                let fields = fields(args);
                let scalars = vec![None; args.len()];
                udf.return_field_from_args(ReturnFieldArgs {
                    arg_fields: &fields,
                    scalar_arguments: &scalars,
                })
                .ok()
                .map(|f| f.data_type().clone())
            })
        };
        add(&mut rows, name, "f", &udf.signature().type_signature, ret);
    }
    for (name, udaf) in state.aggregate_functions() {
        let ret = |args: &[DataType]| {
            udaf.return_type(args).ok().or_else(|| {
                udaf.return_field(&fields(args))
                    .ok()
                    .map(|f| f.data_type().clone())
            })
        };
        add(&mut rows, name, "a", &udaf.signature().type_signature, ret);
    }
    for (name, udwf) in state.window_functions() {
        let ret = |args: &[DataType]| {
            udwf.field(WindowUDFFieldArgs::new(&fields(args), name))
                .ok()
                .map(|f| f.data_type().clone())
        };
        add(&mut rows, name, "w", &udwf.signature().type_signature, ret);
    }
    rows.into_iter()
        .enumerate()
        .map(|(i, (name, kind, args, ret))| {
            // Functions Weir runs as set-returning (in FROM or a select
            // list) return a set of their list's elements.
            let set = SET_RETURNING.contains(&name.as_str());
            let (ret, retset) = match ret {
                Some(DataType::List(f) | DataType::LargeList(f)) if set => {
                    (type_oid(f.data_type()), true)
                }
                Some(t) => (type_oid(&t), false),
                None => (ANY_ELEMENT, false),
            };
            Proc {
                oid: oid::PG_PROC_FIRST + i as i64,
                name,
                kind,
                args,
                ret,
                retset,
            }
        })
        .collect()
}

/// `(name, kind, argument type OIDs, return type)` before OIDs are given,
/// in the order OIDs are given.
type Rows = BTreeSet<(String, &'static str, Vec<i64>, Option<DataType>)>;

/// Add the overloads of function `name` of `kind` with signature `sig`.
fn add(
    rows: &mut Rows,
    name: &str,
    kind: &'static str,
    sig: &TypeSignature,
    ret: impl Fn(&[DataType]) -> Option<DataType>,
) {
    for (args, r) in overloads(sig, ret) {
        rows.insert((name.to_string(), kind, args, r));
    }
}

/// Functions that return a set of rows, as Postgres's `proretset`.
const SET_RETURNING: &[&str] = &["generate_series", "unnest", "generate_subscripts"];

/// Arrow fields named `a0`, `a1`, ... of `types`.
fn fields(types: &[DataType]) -> Vec<FieldRef> {
    types
        .iter()
        .enumerate()
        .map(|(i, t)| Arc::new(Field::new(format!("a{i}"), t.clone(), true)))
        .collect()
}

/// The distinct Postgres argument lists of `sig` with their return types
/// (`ret` of the Arrow argument types; `None` when it has none).
fn overloads(
    sig: &TypeSignature,
    ret: impl Fn(&[DataType]) -> Option<DataType>,
) -> Vec<(Vec<i64>, Option<DataType>)> {
    let examples: Vec<Vec<DataType>> = match sig {
        TypeSignature::Nullary => vec![vec![]],
        TypeSignature::OneOf(sigs) if sigs.contains(&TypeSignature::Nullary) => {
            let mut all = vec![vec![]];
            all.extend(sig.get_example_types());
            all
        }
        other => other.get_example_types(),
    };
    let mut out: Vec<(Vec<i64>, Option<DataType>)> = Vec::new();
    for args in examples {
        let pg_args: Vec<i64> = args.iter().map(type_oid).collect();
        if out.iter().any(|(a, _)| *a == pg_args) {
            continue;
        }
        // The argument lists are the signature's own examples; a function
        // that still panics on them is listed as returning anyelement
        // rather than stopping the server.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ret(&args)))
            .ok()
            .flatten();
        out.push((pg_args, r));
        if out.len() == MAX_OVERLOADS {
            break;
        }
    }
    if out.is_empty() {
        // Any / VariadicAny / UserDefined / array signatures: one row
        // taking "any" (DataFusion's return types of these need real
        // arguments; some panic on made-up ones).
        let n = match sig {
            TypeSignature::Any(n) | TypeSignature::Comparable(n) => *n,
            _ => 1,
        };
        out.push((vec![ANY; n], None));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overloads_and_return_types() {
        let ctx = SessionContext::new();
        let all = procs(&ctx);
        let find = |name: &str| -> Vec<&Proc> { all.iter().filter(|p| p.name == name).collect() };
        // abs(float8) returns float8; sqrt has one row per numeric type.
        assert!(find("abs")
            .iter()
            .any(|p| p.args == vec![701] && p.ret == 701));
        // now() takes nothing and returns a timestamp (timestamptz in
        // Weir's sessions, which set a time zone; this context has none).
        assert!(find("now")
            .iter()
            .any(|p| p.args.is_empty() && matches!(p.ret, 1114 | 1184)));
        // count is an aggregate returning bigint; sum(float8) float8.
        assert!(find("count").iter().all(|p| p.kind == "a" && p.ret == 20));
        assert!(find("sum")
            .iter()
            .any(|p| p.args == vec![701] && p.ret == 701));
        // row_number is a window function with a computed return type
        // (DataFusion's UInt64, shown as numeric).
        assert!(find("row_number")
            .iter()
            .all(|p| p.kind == "w" && p.ret != ANY_ELEMENT));
        // generate_series(bigint, bigint) returns a set of bigint.
        assert!(find("generate_series")
            .iter()
            .any(|p| p.args == vec![20, 20] && p.ret == 20 && p.retset));
        // OIDs are distinct.
        let oids: BTreeSet<i64> = all.iter().map(|p| p.oid).collect();
        assert_eq!(oids.len(), all.len());
    }
}
