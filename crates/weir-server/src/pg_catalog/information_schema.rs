//! `information_schema`: the SQL-standard views over Weir's catalog.
//! Tables are `BASE TABLE`, sources `FOREIGN`; materialized views are
//! listed as `VIEW` (in `tables` and `views`), so tools that only read the
//! standard views find them too (Postgres leaves them out).

use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;
use weir_common::arrow::datatypes::DataType;
use weir_common::datafusion::catalog::{SchemaProvider, TableProvider};
use weir_common::datafusion::error::Result;

use super::{
    column_type, functions::format_type, mem_table, pg_type, primary_key, visible, DATABASE_NAME,
    INT4, TEXT, V,
};
use crate::catalog::{Catalog, ObjectKind, RelationKind};

/// The `information_schema` schema.
pub struct InformationSchema {
    catalog: Arc<RwLock<Catalog>>,
}

impl std::fmt::Debug for InformationSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InformationSchema")
    }
}

const TABLES: &[&str] = &[
    "schemata",
    "tables",
    "views",
    "columns",
    "table_constraints",
    "key_column_usage",
];

impl InformationSchema {
    pub fn new(catalog: Arc<RwLock<Catalog>>) -> Self {
        InformationSchema { catalog }
    }

    fn build(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let relations = visible(&self.catalog.read());
        let db = || V::from(DATABASE_NAME);
        let t = match name {
            "schemata" => mem_table(
                &[
                    ("catalog_name", TEXT),
                    ("schema_name", TEXT),
                    ("schema_owner", TEXT),
                    ("default_character_set_catalog", TEXT),
                    ("default_character_set_schema", TEXT),
                    ("default_character_set_name", TEXT),
                    ("sql_path", TEXT),
                ],
                &["pg_catalog", "public", "information_schema", "weir_catalog"]
                    .iter()
                    .map(|s| {
                        vec![
                            db(),
                            (*s).into(),
                            super::OWNER.into(),
                            V::N,
                            V::N,
                            V::N,
                            V::N,
                        ]
                    })
                    .collect::<Vec<_>>(),
            ),
            "tables" => mem_table(
                &[
                    ("table_catalog", TEXT),
                    ("table_schema", TEXT),
                    ("table_name", TEXT),
                    ("table_type", TEXT),
                    ("self_referencing_column_name", TEXT),
                    ("reference_generation", TEXT),
                    ("user_defined_type_catalog", TEXT),
                    ("user_defined_type_schema", TEXT),
                    ("user_defined_type_name", TEXT),
                    ("is_insertable_into", TEXT),
                    ("is_typed", TEXT),
                    ("commit_action", TEXT),
                ],
                &relations
                    .iter()
                    .map(|r| {
                        let (kind, insertable) = match r.object_kind() {
                            ObjectKind::Table => ("BASE TABLE", "YES"),
                            ObjectKind::Source => ("FOREIGN", "NO"),
                            _ => ("VIEW", "NO"),
                        };
                        vec![
                            db(),
                            "public".into(),
                            r.name.clone().into(),
                            kind.into(),
                            V::N,
                            V::N,
                            V::N,
                            V::N,
                            V::N,
                            insertable.into(),
                            "NO".into(),
                            V::N,
                        ]
                    })
                    .collect::<Vec<_>>(),
            ),
            "views" => mem_table(
                &[
                    ("table_catalog", TEXT),
                    ("table_schema", TEXT),
                    ("table_name", TEXT),
                    ("view_definition", TEXT),
                    ("check_option", TEXT),
                    ("is_updatable", TEXT),
                    ("is_insertable_into", TEXT),
                    ("is_trigger_updatable", TEXT),
                    ("is_trigger_deletable", TEXT),
                    ("is_trigger_insertable_into", TEXT),
                ],
                &relations
                    .iter()
                    .filter_map(|r| match &r.kind {
                        RelationKind::View { definition, .. }
                        | RelationKind::PlainView { definition, .. } => Some(vec![
                            db(),
                            "public".into(),
                            r.name.clone().into(),
                            definition.clone().into(),
                            "NONE".into(),
                            "NO".into(),
                            "NO".into(),
                            "NO".into(),
                            "NO".into(),
                            "NO".into(),
                        ]),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            "columns" => {
                let mut rows = Vec::new();
                for r in &relations {
                    let pk = primary_key(r);
                    for (i, f) in r.schema.fields().iter().enumerate() {
                        let (oid, typmod) = column_type(f);
                        let data_type = format_type(oid, None).unwrap_or_else(|| "text".into());
                        let char_length = weir_common::char_type::CharType::of(f)
                            .and_then(|t| t.limit())
                            .map_or(V::N, |n| V::I(i64::from(n)));
                        let octet_length = match (f.data_type(), &char_length) {
                            (_, V::I(n)) => V::I(n * 4),
                            (DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8, _) => {
                                V::I(1_073_741_824)
                            }
                            _ => V::N,
                        };
                        let (precision, radix, scale) = match f.data_type() {
                            DataType::Int16 => (V::I(16), V::I(2), V::I(0)),
                            DataType::Int32 => (V::I(32), V::I(2), V::I(0)),
                            DataType::Int64 => (V::I(64), V::I(2), V::I(0)),
                            DataType::Float32 => (V::I(24), V::I(2), V::N),
                            DataType::Float64 => (V::I(53), V::I(2), V::N),
                            DataType::Decimal128(p, s) if typmod >= 0 => {
                                (V::I(i64::from(*p)), V::I(10), V::I(i64::from(*s)))
                            }
                            _ => (V::N, V::N, V::N),
                        };
                        let nullable = f.is_nullable() && !pk.contains(&i);
                        rows.push(vec![
                            db(),
                            "public".into(),
                            r.name.clone().into(),
                            f.name().clone().into(),
                            V::I(i as i64 + 1),
                            V::N,
                            (if nullable { "YES" } else { "NO" }).into(),
                            data_type.into(),
                            char_length,
                            octet_length,
                            precision,
                            radix,
                            scale,
                            V::N,
                            db(),
                            "pg_catalog".into(),
                            pg_type(oid).map_or("text", |t| t.name).into(),
                            "NO".into(),
                            "NEVER".into(),
                            (if r.object_kind() == ObjectKind::Table {
                                "YES"
                            } else {
                                "NO"
                            })
                            .into(),
                        ]);
                    }
                }
                mem_table(
                    &[
                        ("table_catalog", TEXT),
                        ("table_schema", TEXT),
                        ("table_name", TEXT),
                        ("column_name", TEXT),
                        ("ordinal_position", INT4),
                        ("column_default", TEXT),
                        ("is_nullable", TEXT),
                        ("data_type", TEXT),
                        ("character_maximum_length", INT4),
                        ("character_octet_length", INT4),
                        ("numeric_precision", INT4),
                        ("numeric_precision_radix", INT4),
                        ("numeric_scale", INT4),
                        ("datetime_precision", INT4),
                        ("udt_catalog", TEXT),
                        ("udt_schema", TEXT),
                        ("udt_name", TEXT),
                        ("is_identity", TEXT),
                        ("is_generated", TEXT),
                        ("is_updatable", TEXT),
                    ],
                    &rows,
                )
            }
            "table_constraints" => mem_table(
                &[
                    ("constraint_catalog", TEXT),
                    ("constraint_schema", TEXT),
                    ("constraint_name", TEXT),
                    ("table_catalog", TEXT),
                    ("table_schema", TEXT),
                    ("table_name", TEXT),
                    ("constraint_type", TEXT),
                    ("is_deferrable", TEXT),
                    ("initially_deferred", TEXT),
                    ("enforced", TEXT),
                    ("nulls_distinct", TEXT),
                ],
                &relations
                    .iter()
                    .filter(|r| !primary_key(r).is_empty())
                    .map(|r| {
                        vec![
                            db(),
                            "public".into(),
                            format!("{}_pkey", r.name).into(),
                            db(),
                            "public".into(),
                            r.name.clone().into(),
                            "PRIMARY KEY".into(),
                            "NO".into(),
                            "NO".into(),
                            "YES".into(),
                            V::N,
                        ]
                    })
                    .collect::<Vec<_>>(),
            ),
            "key_column_usage" => {
                let mut rows = Vec::new();
                for r in &relations {
                    for (k, col) in primary_key(r).iter().enumerate() {
                        let Some(f) = r.schema.fields().get(*col) else {
                            continue;
                        };
                        rows.push(vec![
                            db(),
                            "public".into(),
                            format!("{}_pkey", r.name).into(),
                            db(),
                            "public".into(),
                            r.name.clone().into(),
                            f.name().clone().into(),
                            V::I(k as i64 + 1),
                            V::N,
                        ]);
                    }
                }
                mem_table(
                    &[
                        ("constraint_catalog", TEXT),
                        ("constraint_schema", TEXT),
                        ("constraint_name", TEXT),
                        ("table_catalog", TEXT),
                        ("table_schema", TEXT),
                        ("table_name", TEXT),
                        ("column_name", TEXT),
                        ("ordinal_position", INT4),
                        ("position_in_unique_constraint", INT4),
                    ],
                    &rows,
                )
            }
            _ => return Ok(None),
        }?;
        Ok(Some(t))
    }
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        self.build(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name)
    }
}
