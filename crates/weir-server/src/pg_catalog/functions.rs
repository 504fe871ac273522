//! Postgres's catalog functions, as clients call them: `format_type`,
//! `pg_get_userbyid`, `pg_table_is_visible`, `current_schema(s)`,
//! `current_database`, the `has_*_privilege` family (every argument form:
//! Weir has one superuser, so always true), `pg_get_expr`,
//! `obj_description` / `col_description`, `pg_get_indexdef`,
//! `pg_get_constraintdef`, `pg_get_viewdef`, and a few more psql uses.
//! They take any arguments and are evaluated row by row: catalog queries
//! are small.

use std::sync::Arc;

use parking_lot::RwLock;
use weir_common::arrow::array::{Array, ArrayRef};
use weir_common::arrow::datatypes::{DataType, Field, Fields};
use weir_common::datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use weir_common::datafusion::common::scalar::ScalarStructBuilder;
use weir_common::datafusion::common::{Result, ScalarValue};
use weir_common::datafusion::execution::context::SessionContext;
use weir_common::datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

use super::keywords::PG_KEYWORDS;
use super::{pg_type, rel_oids, visible, DATABASE_NAME, OWNER};
use crate::catalog::{Catalog, RelationKind};

/// What a function computes for one row of arguments.
type RowFn = dyn Fn(&[ScalarValue]) -> ScalarValue + Send + Sync;

/// A Postgres function taking any arguments, computed row by row.
struct PgFunction {
    name: &'static str,
    signature: Signature,
    returns: DataType,
    f: Arc<RowFn>,
}

impl std::fmt::Debug for PgFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgFunction({})", self.name)
    }
}

impl PartialEq for PgFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for PgFunction {}

impl std::hash::Hash for PgFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for PgFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let n = if scalar { 1 } else { rows };
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let row = arrays
                .iter()
                .map(|a| ScalarValue::try_from_array(a, i))
                .collect::<Result<Vec<_>>>()?;
            out.push((self.f)(&row));
        }
        if scalar {
            let v = out
                .pop()
                .map_or_else(|| ScalarValue::try_from(&self.returns), Ok)?;
            return Ok(ColumnarValue::Scalar(v));
        }
        let array: ArrayRef = if out.is_empty() {
            weir_common::arrow::array::new_empty_array(&self.returns)
        } else {
            ScalarValue::iter_to_array(out)?
        };
        Ok(ColumnarValue::Array(array))
    }
}

/// `pg_uuid(text)`: what `x::uuid` becomes. The canonical text of a UUID
/// (Weir keeps uuids as text) or 22P02; its result is typed `uuid` for
/// clients (field metadata).
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgUuid {
    signature: Signature,
}

impl ScalarUDFImpl for PgUuid {
    fn name(&self) -> &str {
        "pg_uuid"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field_from_args(
        &self,
        _args: weir_common::datafusion::logical_expr::ReturnFieldArgs,
    ) -> Result<weir_common::arrow::datatypes::FieldRef> {
        let field = Field::new(self.name(), DataType::Utf8, true);
        Ok(Arc::new(
            weir_common::char_type::CharType::Uuid.attach(field),
        ))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = matches!(args.args.first(), Some(ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let Some(input) = arrays.first() else {
            return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)));
        };
        let out = weir_common::char_type::CharType::Uuid
            .conform(input)
            .map_err(|e| weir_common::datafusion::error::DataFusionError::External(Box::new(e)))?;
        let out = weir_common::arrow::compute::cast(&out, &DataType::Utf8)?;
        if scalar {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?));
        }
        Ok(ColumnarValue::Array(out))
    }
}

fn function(
    name: &'static str,
    returns: DataType,
    f: impl Fn(&[ScalarValue]) -> ScalarValue + Send + Sync + 'static,
) -> ScalarUDF {
    ScalarUDF::from(PgFunction {
        name,
        signature: Signature::one_of(
            vec![TypeSignature::Nullary, TypeSignature::VariadicAny],
            Volatility::Stable,
        ),
        returns,
        f: Arc::new(f),
    })
}

/// An argument as an integer (OIDs, typmods), if it is one.
fn int(v: Option<&ScalarValue>) -> Option<i64> {
    match v? {
        ScalarValue::Int8(x) => x.map(i64::from),
        ScalarValue::Int16(x) => x.map(i64::from),
        ScalarValue::Int32(x) => x.map(i64::from),
        ScalarValue::Int64(x) => *x,
        ScalarValue::UInt32(x) => x.map(i64::from),
        ScalarValue::UInt64(x) => x.and_then(|x| i64::try_from(x).ok()),
        ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => s.parse().ok(),
        _ => None,
    }
}

fn text(s: Option<String>) -> ScalarValue {
    ScalarValue::Utf8(s)
}

/// `format_type(type_oid, typmod)` as Postgres prints it.
pub fn format_type(oid: i64, typmod: Option<i64>) -> Option<String> {
    let t = pg_type(oid)?;
    let typmod = typmod.unwrap_or(-1);
    Some(match (t.oid, typmod) {
        (1700, m) if m >= 4 => {
            let m = m - 4;
            format!("numeric({},{})", (m >> 16) & 0xffff, m & 0xffff)
        }
        (1043, m) if m >= 4 => format!("character varying({})", m - 4),
        (1042, m) if m >= 4 => format!("character({})", m - 4),
        _ => t.sql.to_string(),
    })
}

/// Register the functions with `ctx`; those reading the catalog see
/// `catalog`.
pub fn register(
    ctx: &SessionContext,
    catalog: Arc<RwLock<Catalog>>,
    procs: Arc<RwLock<Vec<super::procs::Proc>>>,
) {
    // pg_get_function_result / _arguments / _identity_arguments of a
    // pg_proc OID.
    let describe = |name: &'static str, result: bool| {
        let procs = Arc::clone(&procs);
        function(name, DataType::Utf8, move |a| {
            let oid = int(a.first());
            let procs = procs.read();
            let Some(p) = oid.and_then(|o| procs.iter().find(|p| p.oid == o)) else {
                return text(None);
            };
            let name_of = |t: i64| format_type(t, None).unwrap_or_else(|| t.to_string());
            text(Some(if result {
                let each = name_of(p.ret);
                if p.retset {
                    format!("SETOF {each}")
                } else {
                    each
                }
            } else {
                p.args
                    .iter()
                    .map(|t| name_of(*t))
                    .collect::<Vec<_>>()
                    .join(", ")
            }))
        })
    };
    let udfs = vec![
        describe("pg_get_function_result", true),
        describe("pg_get_function_arguments", false),
        describe("pg_get_function_identity_arguments", false),
        function("format_type", DataType::Utf8, |a| {
            text(int(a.first()).and_then(|oid| format_type(oid, int(a.get(1)))))
        }),
        function("pg_get_userbyid", DataType::Utf8, |a| {
            text(int(a.first()).map(|oid| {
                if oid == super::oid::SUPERUSER {
                    OWNER.to_string()
                } else {
                    format!("unknown (OID={oid})")
                }
            }))
        }),
        function("current_schema", DataType::Utf8, |_| {
            text(Some("public".into()))
        }),
        function(
            "current_schemas",
            DataType::new_list(DataType::Utf8, true),
            |a| {
                let implicit = matches!(a.first(), Some(ScalarValue::Boolean(Some(true))));
                let mut names = Vec::new();
                if implicit {
                    names.push(ScalarValue::Utf8(Some("pg_catalog".into())));
                }
                names.push(ScalarValue::Utf8(Some("public".into())));
                ScalarValue::List(ScalarValue::new_list(&names, &DataType::Utf8, true))
            },
        ),
        function("current_database", DataType::Utf8, |_| {
            text(Some(DATABASE_NAME.into()))
        }),
        function("current_catalog", DataType::Utf8, |_| {
            text(Some(DATABASE_NAME.into()))
        }),
        function("pg_encoding_to_char", DataType::Utf8, |_| {
            text(Some("UTF8".into()))
        }),
        // `x::regtype[]`: an oidvector (space-separated text) or an array
        // of OIDs as type names.
        function(
            "pg_regtype_names",
            DataType::new_list(DataType::Utf8, true),
            |a| {
                let oids: Option<Vec<Option<i64>>> = match a.first() {
                    Some(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s))) => {
                        Some(s.split_whitespace().map(|o| o.parse().ok()).collect())
                    }
                    Some(ScalarValue::List(l)) if !l.is_null(0) => {
                        let values = l.value(0);
                        (0..values.len())
                            .map(|i| ScalarValue::try_from_array(&values, i).ok())
                            .map(|v| Some(int(v.as_ref())))
                            .collect()
                    }
                    _ => None,
                };
                let Some(oids) = oids else {
                    return ScalarValue::new_null_list(DataType::Utf8, true, 1);
                };
                let names: Vec<ScalarValue> = oids
                    .into_iter()
                    .map(|o| text(o.map(|o| format_type(o, None).unwrap_or_else(|| o.to_string()))))
                    .collect();
                ScalarValue::List(ScalarValue::new_list(&names, &DataType::Utf8, true))
            },
        ),
        function("pg_get_expr", DataType::Utf8, |_| text(None)),
        function("obj_description", DataType::Utf8, |_| text(None)),
        function("col_description", DataType::Utf8, |_| text(None)),
        function("shobj_description", DataType::Utf8, |_| text(None)),
        function("pg_get_partkeydef", DataType::Utf8, |_| text(None)),
        // The body of a SQL-standard function (psql's \df+): Weir's
        // functions are all built in.
        function("pg_get_function_sqlbody", DataType::Utf8, |_| text(None)),
        // Definitions of objects Weir never has (statistics objects,
        // triggers, rules, sequences): no row ever asks, but psql's queries
        // name them.
        function("pg_get_statisticsobjdef_columns", DataType::Utf8, |_| {
            text(None)
        }),
        function("pg_get_triggerdef", DataType::Utf8, |_| text(None)),
        function("pg_get_ruledef", DataType::Utf8, |_| text(None)),
        function("pg_get_serial_sequence", DataType::Utf8, |_| text(None)),
        function("pg_relation_is_publishable", DataType::Boolean, |_| {
            ScalarValue::Boolean(Some(false))
        }),
        function("pg_is_in_recovery", DataType::Boolean, |_| {
            ScalarValue::Boolean(Some(false))
        }),
        function("pg_relation_size", DataType::Int64, |_| {
            ScalarValue::Int64(Some(0))
        }),
        function("pg_total_relation_size", DataType::Int64, |_| {
            ScalarValue::Int64(Some(0))
        }),
        function("pg_table_size", DataType::Int64, |_| {
            ScalarValue::Int64(Some(0))
        }),
        function("pg_size_pretty", DataType::Utf8, |a| {
            text(int(a.first()).map(|n| format!("{n} bytes")))
        }),
        function(
            "parse_ident",
            DataType::new_list(DataType::Utf8, true),
            |a| {
                let parts = match a.first() {
                    Some(ScalarValue::Utf8(Some(s))) | Some(ScalarValue::Utf8View(Some(s))) => {
                        parse_ident(s)
                    }
                    _ => None,
                };
                match parts {
                    Some(parts) => {
                        let items: Vec<ScalarValue> = parts
                            .into_iter()
                            .map(|p| ScalarValue::Utf8(Some(p)))
                            .collect();
                        ScalarValue::List(ScalarValue::new_list(&items, &DataType::Utf8, true))
                    }
                    None => ScalarValue::try_from(&DataType::new_list(DataType::Utf8, true))
                        .unwrap_or(ScalarValue::Null),
                }
            },
        ),
        function("quote_ident", DataType::Utf8, |a| {
            text(match a.first() {
                Some(ScalarValue::Utf8(Some(s))) | Some(ScalarValue::Utf8View(Some(s))) => {
                    Some(quote_ident(s))
                }
                _ => None,
            })
        }),
    ];
    for udf in udfs {
        ctx.register_udf(udf);
    }
    // `information_schema._pg_expandarray(a)` is `unnest` of this: each
    // element `x` of `a` with its subscript `n`.
    let fields = Fields::from(vec![
        Field::new("x", DataType::Int64, true),
        Field::new("n", DataType::Int64, true),
    ]);
    let item = DataType::Struct(fields.clone());
    ctx.register_udf(function(
        "pg_expandarray_list",
        DataType::new_list(item.clone(), true),
        move |a| {
            let elements: Vec<ScalarValue> = match a.first() {
                Some(ScalarValue::List(list)) if !list.is_empty() && list.is_valid(0) => {
                    let values = list.value(0);
                    (0..values.len())
                        .filter_map(|i| ScalarValue::try_from_array(&values, i).ok())
                        .collect()
                }
                _ => vec![],
            };
            let structs: Vec<ScalarValue> = elements
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let x = int(Some(v))
                        .map_or(ScalarValue::Int64(None), |x| ScalarValue::Int64(Some(x)));
                    ScalarStructBuilder::new()
                        .with_scalar(Field::new("x", DataType::Int64, true), x)
                        .with_scalar(
                            Field::new("n", DataType::Int64, true),
                            ScalarValue::Int64(Some(i as i64 + 1)),
                        )
                        .build()
                        .unwrap_or_else(|_| {
                            ScalarValue::try_from(&item).unwrap_or(ScalarValue::Null)
                        })
                })
                .collect();
            ScalarValue::List(ScalarValue::new_list(&structs, &item, true))
        },
    ));
    for name in [
        "pg_table_is_visible",
        "pg_type_is_visible",
        "pg_function_is_visible",
        "has_table_privilege",
        "has_schema_privilege",
        "has_database_privilege",
        "has_column_privilege",
        "has_any_column_privilege",
        "has_function_privilege",
        "has_sequence_privilege",
        "has_type_privilege",
        "has_language_privilege",
        "has_tablespace_privilege",
        "has_foreign_data_wrapper_privilege",
        "has_server_privilege",
        "pg_has_role",
    ] {
        ctx.register_udf(function(name, DataType::Boolean, |_| {
            ScalarValue::Boolean(Some(true))
        }));
    }
    // `oid::regclass` as text: the relation's name (the number if none).
    let c = Arc::clone(&catalog);
    ctx.register_udf(function("pg_regclass_name", DataType::Utf8, move |a| {
        let oid = int(a.first());
        text(oid.map(|oid| {
            visible(&c.read())
                .iter()
                .find(|r| rel_oids(r).rel == oid || rel_oids(r).index == oid)
                .map(|r| {
                    if rel_oids(r).rel == oid {
                        r.name.clone()
                    } else {
                        format!("{}_pkey", r.name)
                    }
                })
                .unwrap_or_else(|| oid.to_string())
        }))
    }));
    ctx.register_udtf("pg_get_keywords", Arc::new(Keywords));
    let c = Arc::clone(&catalog);
    ctx.register_udf(function("pg_get_indexdef", DataType::Utf8, move |a| {
        let oid = int(a.first());
        text(oid.and_then(|oid| {
            visible(&c.read()).iter().find_map(|r| {
                (rel_oids(r).index == oid).then(|| {
                    format!(
                        "CREATE UNIQUE INDEX {}_pkey ON public.{} USING btree ({})",
                        r.name,
                        quote_ident(&r.name),
                        key_columns(r)
                    )
                })
            })
        }))
    }));
    let c = Arc::clone(&catalog);
    ctx.register_udf(function("pg_get_constraintdef", DataType::Utf8, move |a| {
        let oid = int(a.first());
        text(oid.and_then(|oid| {
            visible(&c.read()).iter().find_map(|r| {
                (rel_oids(r).constraint == oid).then(|| format!("PRIMARY KEY ({})", key_columns(r)))
            })
        }))
    }));
    let c = catalog;
    ctx.register_udf(ScalarUDF::from(PgUuid {
        signature: Signature::string(1, Volatility::Immutable),
    }));
    ctx.register_udf(function("pg_get_viewdef", DataType::Utf8, move |a| {
        let by_oid = int(a.first());
        let by_name = match a.first() {
            Some(ScalarValue::Utf8(Some(s))) => Some(s.clone()),
            _ => None,
        };
        text(visible(&c.read()).iter().find_map(|r| {
            let (RelationKind::View { definition, .. }
            | RelationKind::PlainView { definition, .. }) = &r.kind
            else {
                return None;
            };
            let hit = by_oid == Some(rel_oids(r).rel) || by_name.as_deref() == Some(&r.name);
            hit.then(|| format!(" {definition};"))
        }))
    }));
}

/// `parse_ident('a."B c".d')`: the parts of a qualified identifier,
/// unquoted ones lower-cased; `None` if malformed.
pub fn parse_ident(text: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == '.' || c.is_whitespace() {
                    break;
                }
                part.extend(c.to_lowercase());
                chars.next();
            }
            if part.is_empty() {
                return None;
            }
        }
        parts.push(part);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            Some('.') => {
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
            }
            None => return Some(parts),
            Some(_) => return None,
        }
    }
}

/// `pg_get_keywords()`: Postgres's keywords and categories (clients
/// highlight and quote with them).
#[derive(Debug)]
struct Keywords;

impl TableFunctionImpl for Keywords {
    fn call_with_args(&self, _args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let rows: Vec<Vec<super::V>> = PG_KEYWORDS
            .iter()
            .map(|(word, code, bare)| {
                let desc = match code {
                    'U' => "unreserved",
                    'C' => "unreserved (cannot be function or type name)",
                    'T' => "reserved (can be function or type name)",
                    _ => "reserved",
                };
                let bare_desc = if *bare {
                    "can be bare label"
                } else {
                    "requires AS"
                };
                vec![
                    (*word).into(),
                    code.to_string().into(),
                    (*bare).into(),
                    desc.into(),
                    bare_desc.into(),
                ]
            })
            .collect();
        super::mem_table(
            &[
                ("word", DataType::Utf8),
                ("catcode", DataType::Utf8),
                ("barelabel", DataType::Boolean),
                ("catdesc", DataType::Utf8),
                ("baredesc", DataType::Utf8),
            ],
            &rows,
        )
    }
}

/// `quote_ident`: quoted unless a plain lower-case identifier that is
/// not a reserved keyword (as Postgres's).
pub fn quote_ident(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !PG_KEYWORDS
            .binary_search_by(|(w, _, _)| (*w).cmp(s))
            .is_ok_and(|i| PG_KEYWORDS[i].1 != 'U');
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

fn key_columns(r: &crate::catalog::Relation) -> String {
    let RelationKind::Table { pk, .. } = &r.kind else {
        return String::new();
    };
    pk.iter()
        .filter_map(|i| r.schema.fields().get(*i))
        .map(|f| quote_ident(f.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_sorted_and_reserved_ones_quoted() {
        assert!(PG_KEYWORDS.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(quote_ident("select"), "\"select\"");
        assert_eq!(quote_ident("name"), "name");
        assert_eq!(quote_ident("Abc"), "\"Abc\"");
    }

    #[test]
    fn formats_types_like_postgres() {
        assert_eq!(format_type(23, None).as_deref(), Some("integer"));
        assert_eq!(
            format_type(1184, Some(-1)).as_deref(),
            Some("timestamp with time zone")
        );
        assert_eq!(
            format_type(1700, Some(((10 << 16) | 2) + 4)).as_deref(),
            Some("numeric(10,2)")
        );
        assert_eq!(format_type(1007, None).as_deref(), Some("integer[]"));
        assert_eq!(format_type(999_999, None), None);
        assert_eq!(
            parse_ident("public.\"My Table\""),
            Some(vec!["public".to_string(), "My Table".to_string()])
        );
        assert_eq!(
            parse_ident("Abc . d"),
            Some(vec!["abc".to_string(), "d".to_string()])
        );
        assert_eq!(parse_ident("a..b"), None);
        assert_eq!(quote_ident("abc_1"), "abc_1");
        assert_eq!(quote_ident("Abc"), "\"Abc\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
