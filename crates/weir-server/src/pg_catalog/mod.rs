//! `pg_catalog` and `information_schema`: Weir's catalog as Postgres
//! clients read it. Every table is computed from Weir's own catalog when a
//! query plans, with Postgres's column names and OIDs, so psql, drivers
//! and BI tools find tables (relkind `r`), materialized views (`m`),
//! sources (`f`, like foreign tables), their columns, primary keys and
//! types where they look for them.
//!
//! OIDs: built-in objects have Postgres's (namespaces 11 and 2200, types,
//! role 10, database 16384 is Weir's). A table or view with state table
//! `id` is `16384 + 4·id`; its primary-key index, constraint and row type
//! follow (`+1`, `+2`, `+3`). Sources, which own no state table, get an
//! OID from a hash of their name above 2^30.

pub(crate) mod functions;
mod information_schema;
mod keywords;
pub mod procs;
pub mod rewrite;

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;
use weir_common::arrow::array::{ArrayRef, RecordBatch};
use weir_common::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use weir_common::datafusion::catalog::{SchemaProvider, Session, TableProvider};
use weir_common::datafusion::common::ScalarValue;
use weir_common::datafusion::datasource::MemTable;
use weir_common::datafusion::error::Result;
use weir_common::datafusion::execution::context::SessionContext;
use weir_common::datafusion::logical_expr::{Expr, TableType};
use weir_common::datafusion::physical_plan::ExecutionPlan;

use crate::catalog::{Catalog, ObjectKind, Relation, RelationKind};

pub use functions::register;
pub use information_schema::InformationSchema;

/// Postgres's OIDs for what Weir shows.
pub mod oid {
    pub const PG_CATALOG: i64 = 11;
    pub const PUBLIC: i64 = 2200;
    pub const INFORMATION_SCHEMA: i64 = 13_000;
    pub const WEIR_CATALOG: i64 = 13_001;
    pub const SUPERUSER: i64 = 10;
    pub const DATABASE: i64 = 16_384;
    pub const HEAP_AM: i64 = 2;
    pub const BTREE_AM: i64 = 403;
    pub const DEFAULT_COLLATION: i64 = 100;
    pub const DEFAULT_TABLESPACE: i64 = 1663;
    pub const PG_CLASS: i64 = 1259;
    pub const PG_CONSTRAINT: i64 = 2606;
    pub const PG_PROC_FIRST: i64 = 50_000;
}

/// The database every client is connected to.
pub const DATABASE_NAME: &str = "weir";
/// The role owning everything.
pub const OWNER: &str = "weir";

/// OIDs of one relation.
#[derive(Clone, Copy)]
pub struct RelOids {
    pub rel: i64,
    pub index: i64,
    pub constraint: i64,
    pub row_type: i64,
}

/// The OIDs of relation `r`.
pub fn rel_oids(r: &Relation) -> RelOids {
    let base = if r.state_id == 0 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        r.name.hash(&mut h);
        (1i64 << 30) + ((h.finish() % (1 << 27)) as i64) * 4
    } else {
        16_384 + 4 * i64::from(r.state_id)
    };
    RelOids {
        rel: base,
        index: base + 1,
        constraint: base + 2,
        row_type: base + 3,
    }
}

/// Relations shown in the catalog (sinks store nothing and are not
/// relations a client can read).
fn visible(catalog: &Catalog) -> Vec<Arc<Relation>> {
    let mut all: Vec<Arc<Relation>> = catalog
        .all()
        .filter(|r| r.object_kind() != ObjectKind::Sink)
        .cloned()
        .collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

fn relkind(r: &Relation) -> &'static str {
    match r.object_kind() {
        ObjectKind::Table => "r",
        ObjectKind::MaterializedView => "m",
        ObjectKind::View => "v",
        ObjectKind::Source => "f",
        ObjectKind::Sink => "r",
    }
}

fn primary_key(r: &Relation) -> &[usize] {
    match &r.kind {
        RelationKind::Table { pk, .. } => pk,
        _ => &[],
    }
}

/// A Postgres type Weir uses or clients look up.
pub struct PgType {
    pub oid: i64,
    pub name: &'static str,
    /// As `format_type` prints it.
    pub sql: &'static str,
    pub len: i16,
    pub category: &'static str,
    pub array: i64,
    pub elem: i64,
}

const fn ty(
    oid: i64,
    name: &'static str,
    sql: &'static str,
    len: i16,
    category: &'static str,
    array: i64,
) -> PgType {
    PgType {
        oid,
        name,
        sql,
        len,
        category,
        array,
        elem: 0,
    }
}

const fn arr(oid: i64, name: &'static str, sql: &'static str, elem: i64) -> PgType {
    PgType {
        oid,
        name,
        sql,
        len: -1,
        category: "A",
        array: 0,
        elem,
    }
}

/// Built-in types, with Postgres's OIDs.
pub const TYPES: &[PgType] = &[
    ty(16, "bool", "boolean", 1, "B", 1000),
    ty(17, "bytea", "bytea", -1, "U", 1001),
    ty(18, "char", "\"char\"", 1, "Z", 1002),
    ty(19, "name", "name", 64, "S", 1003),
    ty(20, "int8", "bigint", 8, "N", 1016),
    ty(21, "int2", "smallint", 2, "N", 1005),
    ty(22, "int2vector", "int2vector", -1, "A", 1006),
    ty(23, "int4", "integer", 4, "N", 1007),
    ty(24, "regproc", "regproc", 4, "N", 1008),
    ty(25, "text", "text", -1, "S", 1009),
    ty(26, "oid", "oid", 4, "N", 1028),
    ty(114, "json", "json", -1, "U", 199),
    ty(700, "float4", "real", 4, "N", 1021),
    ty(701, "float8", "double precision", 8, "N", 1022),
    ty(1042, "bpchar", "character", -1, "S", 1014),
    ty(1043, "varchar", "character varying", -1, "S", 1015),
    ty(1082, "date", "date", 4, "D", 1182),
    ty(1083, "time", "time without time zone", 8, "D", 1183),
    ty(
        1114,
        "timestamp",
        "timestamp without time zone",
        8,
        "D",
        1115,
    ),
    ty(
        1184,
        "timestamptz",
        "timestamp with time zone",
        8,
        "D",
        1185,
    ),
    ty(1186, "interval", "interval", 16, "T", 1187),
    ty(1700, "numeric", "numeric", -1, "N", 1231),
    ty(2205, "regclass", "regclass", 4, "N", 2210),
    ty(2206, "regtype", "regtype", 4, "N", 2211),
    ty(2950, "uuid", "uuid", 16, "U", 2951),
    ty(3802, "jsonb", "jsonb", -1, "U", 3807),
    // Pseudo-types, which function signatures name.
    ty(2249, "record", "record", -1, "P", 2287),
    ty(2275, "cstring", "cstring", -2, "P", 1263),
    ty(2276, "any", "\"any\"", 4, "P", 0),
    ty(2277, "anyarray", "anyarray", -1, "P", 0),
    ty(2278, "void", "void", 4, "P", 0),
    ty(2279, "trigger", "trigger", 4, "P", 0),
    ty(2281, "internal", "internal", 8, "P", 0),
    ty(2283, "anyelement", "anyelement", 4, "P", 0),
    ty(3838, "event_trigger", "event_trigger", 4, "P", 0),
    arr(1000, "_bool", "boolean[]", 16),
    arr(1001, "_bytea", "bytea[]", 17),
    arr(1005, "_int2", "smallint[]", 21),
    arr(1007, "_int4", "integer[]", 23),
    arr(1009, "_text", "text[]", 25),
    arr(1015, "_varchar", "character varying[]", 1043),
    arr(1016, "_int8", "bigint[]", 20),
    arr(1021, "_float4", "real[]", 700),
    arr(1022, "_float8", "double precision[]", 701),
    arr(1028, "_oid", "oid[]", 26),
    arr(1115, "_timestamp", "timestamp without time zone[]", 1114),
    arr(1182, "_date", "date[]", 1082),
    arr(1185, "_timestamptz", "timestamp with time zone[]", 1184),
    arr(1231, "_numeric", "numeric[]", 1700),
    arr(2951, "_uuid", "uuid[]", 2950),
];

/// The OID of `pg_catalog` table `name` (Postgres's for the system
/// catalogs clients name in `'pg_class'::regclass`).
pub fn catalog_table_oid(name: &str) -> Option<i64> {
    const KNOWN: &[(&str, i64)] = &[
        ("pg_class", 1259),
        ("pg_attribute", 1249),
        ("pg_type", 1247),
        ("pg_proc", 1255),
        ("pg_namespace", 2615),
        ("pg_constraint", 2606),
        ("pg_index", 2610),
        ("pg_description", 2609),
        ("pg_attrdef", 2604),
        ("pg_database", 1262),
        ("pg_am", 2601),
        ("pg_collation", 3456),
        ("pg_depend", 2608),
        ("pg_inherits", 2611),
        ("pg_trigger", 2620),
        ("pg_rewrite", 2618),
        ("pg_extension", 3079),
        ("pg_enum", 3501),
        ("pg_range", 3541),
        ("pg_sequence", 2224),
        ("pg_tablespace", 1213),
    ];
    let name = name.to_ascii_lowercase();
    KNOWN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, o)| *o)
        .or_else(|| {
            TABLES
                .iter()
                .position(|t| *t == name)
                .map(|i| 12_000 + i as i64)
        })
}

/// The built-in type with `oid`.
pub fn pg_type(oid: i64) -> Option<&'static PgType> {
    TYPES.iter().find(|t| t.oid == oid)
}

/// The built-in type called `name` (its `typname` or SQL name).
pub fn pg_type_named(name: &str) -> Option<&'static PgType> {
    let n = name.trim().to_ascii_lowercase();
    let n = match n.as_str() {
        "int" | "integer" => "int4",
        "bigint" => "int8",
        "smallint" => "int2",
        "boolean" => "bool",
        "real" => "float4",
        "double precision" | "double" => "float8",
        "character varying" => "varchar",
        "character" | "char" => "bpchar",
        "decimal" => "numeric",
        "timestamp without time zone" => "timestamp",
        "timestamp with time zone" => "timestamptz",
        "time without time zone" => "time",
        other => other,
    };
    TYPES.iter().find(|t| t.name == n || t.sql == n)
}

/// The Postgres type of an Arrow column, as the wire reports it.
pub fn type_oid(dt: &DataType) -> i64 {
    arrow_pg::datatypes::into_pg_type(&signed(dt))
        .map(|t| i64::from(t.oid()))
        .unwrap_or(25)
}

/// The type a client sees for `dt`: Postgres has no unsigned integers, so
/// DataFusion's (`row_number()` and `rank()` are UInt64) become the signed
/// type that holds them (UInt64 stays 64-bit: bigint, as Postgres's
/// `row_number()`).
pub fn signed(dt: &DataType) -> DataType {
    match dt {
        DataType::UInt8 => DataType::Int16,
        DataType::UInt16 => DataType::Int32,
        DataType::UInt32 | DataType::UInt64 => DataType::Int64,
        other => other.clone(),
    }
}

/// A column's Postgres type OID and `atttypmod`: from its declared
/// character type if it has one (`varchar(n)`), else from its Arrow type.
pub fn column_type(f: &Field) -> (i64, i32) {
    match weir_common::char_type::CharType::of(f) {
        Some(t) => (i64::from(t.oid()), t.typmod()),
        None => (type_oid(f.data_type()), type_modifier(f.data_type())),
    }
}

/// `atttypmod` of an Arrow column: `numeric(p, s)` carries its precision.
pub fn type_modifier(dt: &DataType) -> i32 {
    match dt {
        DataType::Decimal128(p, s) => ((i32::from(*p) << 16) | (i32::from(*s) & 0xffff)) + 4,
        _ => -1,
    }
}

// ---------------------------------------------------------------------------
// Building tables
// ---------------------------------------------------------------------------

/// A cell of a catalog row, converted to its column's type.
#[derive(Clone)]
pub(crate) enum V {
    I(i64),
    F(f64),
    S(String),
    B(bool),
    /// An array of small integers (`int2vector`, `conkey`).
    L(Vec<i16>),
    N,
}

impl From<&str> for V {
    fn from(s: &str) -> Self {
        V::S(s.to_string())
    }
}

impl From<String> for V {
    fn from(s: String) -> Self {
        V::S(s)
    }
}

impl From<i64> for V {
    fn from(v: i64) -> Self {
        V::I(v)
    }
}

impl From<bool> for V {
    fn from(v: bool) -> Self {
        V::B(v)
    }
}

pub(crate) const OID: DataType = DataType::Int64;
pub(crate) const INT2: DataType = DataType::Int16;
pub(crate) const INT4: DataType = DataType::Int32;
pub(crate) const TEXT: DataType = DataType::Utf8;
pub(crate) const BOOL: DataType = DataType::Boolean;
pub(crate) const FLOAT4: DataType = DataType::Float32;

pub(crate) fn int2_array() -> DataType {
    DataType::new_list(DataType::Int16, true)
}

pub(crate) fn text_array() -> DataType {
    DataType::new_list(DataType::Utf8, true)
}

fn scalar(v: &V, t: &DataType) -> Result<ScalarValue> {
    Ok(match (v, t) {
        (V::N, t) => ScalarValue::try_from(t)?,
        (V::I(i), DataType::Int16) => ScalarValue::Int16(Some(*i as i16)),
        (V::I(i), DataType::Int32) => ScalarValue::Int32(Some(*i as i32)),
        (V::I(i), DataType::Int64) => ScalarValue::Int64(Some(*i)),
        (V::I(i), DataType::Float32) => ScalarValue::Float32(Some(*i as f32)),
        (V::F(f), DataType::Float32) => ScalarValue::Float32(Some(*f as f32)),
        (V::F(f), DataType::Float64) => ScalarValue::Float64(Some(*f)),
        (V::S(s), DataType::Utf8) => ScalarValue::Utf8(Some(s.clone())),
        (V::B(b), DataType::Boolean) => ScalarValue::Boolean(Some(*b)),
        (V::L(l), DataType::List(_)) => {
            let items: Vec<ScalarValue> = l.iter().map(|i| ScalarValue::Int16(Some(*i))).collect();
            ScalarValue::List(ScalarValue::new_list(&items, &DataType::Int16, true))
        }
        (_, t) => ScalarValue::try_from(t)?,
    })
}

/// A batch with `columns` holding `rows`.
pub(crate) fn batch(columns: &[(&str, DataType)], rows: &[Vec<V>]) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, t)| Field::new(*n, t.clone(), true))
            .collect::<Vec<_>>(),
    ));
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for (i, (_, t)) in columns.iter().enumerate() {
        let values = rows
            .iter()
            .map(|r| scalar(r.get(i).unwrap_or(&V::N), t))
            .collect::<Result<Vec<_>>>()?;
        arrays.push(if values.is_empty() {
            weir_common::arrow::array::new_empty_array(t)
        } else {
            ScalarValue::iter_to_array(values)?
        });
    }
    Ok(RecordBatch::try_new(schema, arrays)?)
}

/// A table of `columns` holding `rows`.
pub(crate) fn mem_table(
    columns: &[(&str, DataType)],
    rows: &[Vec<V>],
) -> Result<Arc<dyn TableProvider>> {
    let b = batch(columns, rows)?;
    Ok(Arc::new(MemTable::try_new(b.schema(), vec![vec![b]])?))
}

// ---------------------------------------------------------------------------
// pg_catalog
// ---------------------------------------------------------------------------

/// The `pg_catalog` schema.
pub struct PgCatalog {
    catalog: Arc<RwLock<Catalog>>,
    users: Arc<crate::users::Users>,
    /// `pg_proc`'s rows, shared with `pg_get_function_result` and
    /// friends (see [`PgCatalog::procs`]).
    procs: Arc<RwLock<Vec<procs::Proc>>>,
    /// pg_catalog's own tables, for their rows in `pg_class` and
    /// `pg_attribute` (computed once: their columns never change).
    system: std::sync::OnceLock<Vec<SystemTable>>,
}

/// One of pg_catalog's own tables as `pg_class` lists it.
struct SystemTable {
    oid: i64,
    name: &'static str,
    /// `r` for catalogs, `v` for the system views (`pg_tables`, ...).
    kind: &'static str,
    schema: SchemaRef,
}

/// pg_catalog relations that are views in Postgres.
const SYSTEM_VIEWS: &[&str] = &[
    "pg_matviews",
    "pg_publication_tables",
    "pg_roles",
    "pg_settings",
    "pg_stat_user_tables",
    "pg_tables",
    "pg_user",
    "pg_views",
];

impl std::fmt::Debug for PgCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgCatalog")
    }
}

/// Tables of `pg_catalog`.
pub const TABLES: &[&str] = &[
    "pg_am",
    "pg_attrdef",
    "pg_attribute",
    "pg_class",
    "pg_collation",
    "pg_constraint",
    "pg_database",
    "pg_depend",
    "pg_description",
    "pg_enum",
    "pg_event_trigger",
    "pg_extension",
    "pg_foreign_table",
    "pg_index",
    "pg_inherits",
    "pg_language",
    "pg_matviews",
    "pg_namespace",
    "pg_opclass",
    "pg_partitioned_table",
    "pg_policy",
    "pg_proc",
    "pg_publication",
    "pg_publication_rel",
    "pg_publication_tables",
    "pg_range",
    "pg_rewrite",
    "pg_roles",
    "pg_sequence",
    "pg_settings",
    "pg_shdescription",
    "pg_stat_user_tables",
    "pg_statistic_ext",
    "pg_tables",
    "pg_tablespace",
    "pg_trigger",
    "pg_type",
    "pg_user",
    "pg_views",
];

/// Tables that are always empty in Weir: a subquery reading only these
/// returns no rows (see [`rewrite`]).
pub const EMPTY_TABLES: &[&str] = &[
    "pg_attrdef",
    "pg_collation",
    "pg_depend",
    "pg_description",
    "pg_enum",
    "pg_event_trigger",
    "pg_extension",
    "pg_foreign_table",
    "pg_inherits",
    "pg_opclass",
    "pg_partitioned_table",
    "pg_policy",
    "pg_publication",
    "pg_publication_rel",
    "pg_publication_tables",
    "pg_range",
    "pg_rewrite",
    "pg_sequence",
    "pg_shdescription",
    "pg_statistic_ext",
    "pg_trigger",
    "pg_views",
];

impl PgCatalog {
    pub fn new(catalog: Arc<RwLock<Catalog>>, users: Arc<crate::users::Users>) -> Self {
        PgCatalog {
            catalog,
            users,
            procs: Arc::new(RwLock::new(Vec::new())),
            system: std::sync::OnceLock::new(),
        }
    }

    /// Remember the functions of `ctx` for `pg_proc`.
    pub fn set_functions(&self, ctx: &SessionContext) {
        *self.procs.write() = procs::procs(ctx);
    }

    /// `pg_proc`'s rows, filled by [`PgCatalog::set_functions`].
    pub fn procs(&self) -> Arc<RwLock<Vec<procs::Proc>>> {
        Arc::clone(&self.procs)
    }

    /// pg_catalog's own tables (built once, without their own rows).
    fn system_tables(&self) -> &[SystemTable] {
        self.system.get_or_init(|| {
            TABLES
                .iter()
                .filter_map(|&name| {
                    let table = self.build_with(name, &[]).ok().flatten()?;
                    Some(SystemTable {
                        oid: catalog_table_oid(name)?,
                        name,
                        kind: if SYSTEM_VIEWS.contains(&name) {
                            "v"
                        } else {
                            "r"
                        },
                        schema: table.schema(),
                    })
                })
                .collect()
        })
    }

    fn build(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        match name {
            "pg_class" | "pg_attribute" => self.build_with(name, self.system_tables()),
            _ => self.build_with(name, &[]),
        }
    }

    /// Table `name`; `pg_class` and `pg_attribute` also list `system`.
    fn build_with(
        &self,
        name: &str,
        system: &[SystemTable],
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        let relations = visible(&self.catalog.read());
        let t = match name {
            "pg_namespace" => namespaces(),
            "pg_class" => classes(&relations, system),
            "pg_attribute" => attributes(&relations, system),
            "pg_type" => types(&relations),
            "pg_database" => mem_table(
                &[
                    ("oid", OID),
                    ("datname", TEXT),
                    ("datdba", OID),
                    ("encoding", INT4),
                    ("datcollate", TEXT),
                    ("datctype", TEXT),
                    ("datistemplate", BOOL),
                    ("datallowconn", BOOL),
                    ("datconnlimit", INT4),
                    ("dattablespace", OID),
                    ("datacl", text_array()),
                ],
                &[vec![
                    oid::DATABASE.into(),
                    DATABASE_NAME.into(),
                    oid::SUPERUSER.into(),
                    V::I(6),
                    "C.UTF-8".into(),
                    "C.UTF-8".into(),
                    false.into(),
                    true.into(),
                    V::I(-1),
                    oid::DEFAULT_TABLESPACE.into(),
                    V::N,
                ]],
            ),
            "pg_index" => indexes(&relations),
            "pg_constraint" => constraints(&relations),
            "pg_attrdef" => mem_table(
                &[
                    ("oid", OID),
                    ("adrelid", OID),
                    ("adnum", INT2),
                    ("adbin", TEXT),
                ],
                &[],
            ),
            "pg_description" => mem_table(
                &[
                    ("objoid", OID),
                    ("classoid", OID),
                    ("objsubid", INT4),
                    ("description", TEXT),
                ],
                &[],
            ),
            "pg_shdescription" => mem_table(
                &[("objoid", OID), ("classoid", OID), ("description", TEXT)],
                &[],
            ),
            "pg_roles" => mem_table(
                &[
                    ("oid", OID),
                    ("rolname", TEXT),
                    ("rolsuper", BOOL),
                    ("rolinherit", BOOL),
                    ("rolcreaterole", BOOL),
                    ("rolcreatedb", BOOL),
                    ("rolcanlogin", BOOL),
                    ("rolreplication", BOOL),
                    ("rolconnlimit", INT4),
                    ("rolpassword", TEXT),
                    ("rolvaliduntil", TEXT),
                    ("rolbypassrls", BOOL),
                    ("rolconfig", text_array()),
                ],
                &self
                    .roles()
                    .into_iter()
                    .map(|(oid, name, superuser, login)| {
                        vec![
                            oid.into(),
                            name.into(),
                            superuser.into(),
                            true.into(),
                            superuser.into(),
                            superuser.into(),
                            login.into(),
                            false.into(),
                            V::I(-1),
                            "********".into(),
                            V::N,
                            superuser.into(),
                            V::N,
                        ]
                    })
                    .collect::<Vec<_>>(),
            ),
            "pg_user" => mem_table(
                &[
                    ("usename", TEXT),
                    ("usesysid", OID),
                    ("usecreatedb", BOOL),
                    ("usesuper", BOOL),
                    ("userepl", BOOL),
                    ("usebypassrls", BOOL),
                    ("passwd", TEXT),
                    ("valuntil", TEXT),
                    ("useconfig", text_array()),
                ],
                &self
                    .roles()
                    .into_iter()
                    .filter(|(_, _, _, login)| *login)
                    .map(|(oid, name, superuser, _)| {
                        vec![
                            name.into(),
                            oid.into(),
                            superuser.into(),
                            superuser.into(),
                            false.into(),
                            superuser.into(),
                            "********".into(),
                            V::N,
                            V::N,
                        ]
                    })
                    .collect::<Vec<_>>(),
            ),
            "pg_am" => mem_table(
                &[
                    ("oid", OID),
                    ("amname", TEXT),
                    ("amhandler", TEXT),
                    ("amtype", TEXT),
                ],
                &[
                    vec![
                        oid::HEAP_AM.into(),
                        "heap".into(),
                        "heap_tableam_handler".into(),
                        "t".into(),
                    ],
                    vec![
                        oid::BTREE_AM.into(),
                        "btree".into(),
                        "bthandler".into(),
                        "i".into(),
                    ],
                ],
            ),
            "pg_proc" => self.proc_table(),
            "pg_tables" => mem_table(
                &[
                    ("schemaname", TEXT),
                    ("tablename", TEXT),
                    ("tableowner", TEXT),
                    ("tablespace", TEXT),
                    ("hasindexes", BOOL),
                    ("hasrules", BOOL),
                    ("hastriggers", BOOL),
                    ("rowsecurity", BOOL),
                ],
                &relations
                    .iter()
                    .filter(|r| r.object_kind() == ObjectKind::Table)
                    .map(|r| {
                        vec![
                            "public".into(),
                            r.name.clone().into(),
                            OWNER.into(),
                            V::N,
                            (!primary_key(r).is_empty()).into(),
                            false.into(),
                            false.into(),
                            false.into(),
                        ]
                    })
                    .collect::<Vec<_>>(),
            ),
            "pg_views" => mem_table(
                &[
                    ("schemaname", TEXT),
                    ("viewname", TEXT),
                    ("viewowner", TEXT),
                    ("definition", TEXT),
                ],
                &relations
                    .iter()
                    .filter_map(|r| match &r.kind {
                        RelationKind::PlainView { definition, .. } => Some(vec![
                            "public".into(),
                            r.name.clone().into(),
                            OWNER.into(),
                            format!(" {definition};").into(),
                        ]),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            "pg_matviews" => mem_table(
                &[
                    ("schemaname", TEXT),
                    ("matviewname", TEXT),
                    ("matviewowner", TEXT),
                    ("tablespace", TEXT),
                    ("hasindexes", BOOL),
                    ("ispopulated", BOOL),
                    ("definition", TEXT),
                ],
                &relations
                    .iter()
                    .filter_map(|r| match &r.kind {
                        RelationKind::View {
                            definition,
                            sink: None,
                            ..
                        } => Some(vec![
                            "public".into(),
                            r.name.clone().into(),
                            OWNER.into(),
                            V::N,
                            false.into(),
                            true.into(),
                            format!(" {definition};").into(),
                        ]),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            "pg_stat_user_tables" => mem_table(
                &[
                    ("relid", OID),
                    ("schemaname", TEXT),
                    ("relname", TEXT),
                    ("seq_scan", OID),
                    ("seq_tup_read", OID),
                    ("idx_scan", OID),
                    ("idx_tup_fetch", OID),
                    ("n_tup_ins", OID),
                    ("n_tup_upd", OID),
                    ("n_tup_del", OID),
                    ("n_tup_hot_upd", OID),
                    ("n_live_tup", OID),
                    ("n_dead_tup", OID),
                ],
                &relations
                    .iter()
                    .filter(|r| r.object_kind() == ObjectKind::Table)
                    .map(|r| {
                        let mut row = vec![
                            rel_oids(r).rel.into(),
                            "public".into(),
                            r.name.clone().into(),
                        ];
                        row.extend(std::iter::repeat_n(V::I(0), 10));
                        row
                    })
                    .collect::<Vec<_>>(),
            ),
            "pg_tablespace" => mem_table(
                &[("oid", OID), ("spcname", TEXT), ("spcowner", OID)],
                &[
                    vec![
                        oid::DEFAULT_TABLESPACE.into(),
                        "pg_default".into(),
                        oid::SUPERUSER.into(),
                    ],
                    vec![1664i64.into(), "pg_global".into(), oid::SUPERUSER.into()],
                ],
            ),
            // Weir has no collations beyond the default one.
            "pg_collation" => empty(&[
                ("oid", OID),
                ("collname", TEXT),
                ("collnamespace", OID),
                ("collowner", OID),
                ("collprovider", TEXT),
                ("collisdeterministic", BOOL),
                ("collencoding", INT4),
                ("collcollate", TEXT),
                ("collctype", TEXT),
            ]),
            "pg_language" => mem_table(
                &[("oid", OID), ("lanname", TEXT), ("lanowner", OID)],
                &[
                    vec![12i64.into(), "internal".into(), oid::SUPERUSER.into()],
                    vec![14i64.into(), "sql".into(), oid::SUPERUSER.into()],
                ],
            ),
            "pg_settings" => return Ok(Some(Arc::new(SettingsTable))),
            // Present with Postgres's columns, always empty in Weir.
            "pg_enum" => empty(&[
                ("oid", OID),
                ("enumtypid", OID),
                ("enumsortorder", FLOAT4),
                ("enumlabel", TEXT),
            ]),
            "pg_range" => empty(&[
                ("rngtypid", OID),
                ("rngsubtype", OID),
                ("rngmultitypid", OID),
                ("rngcollation", OID),
                ("rngsubopc", OID),
                ("rngcanonical", TEXT),
                ("rngsubdiff", TEXT),
            ]),
            "pg_depend" => empty(&[
                ("classid", OID),
                ("objid", OID),
                ("objsubid", INT4),
                ("refclassid", OID),
                ("refobjid", OID),
                ("refobjsubid", INT4),
                ("deptype", TEXT),
            ]),
            "pg_inherits" => empty(&[
                ("inhrelid", OID),
                ("inhparent", OID),
                ("inhseqno", INT4),
                ("inhdetachpending", BOOL),
            ]),
            "pg_extension" => empty(&[
                ("oid", OID),
                ("extname", TEXT),
                ("extowner", OID),
                ("extnamespace", OID),
                ("extrelocatable", BOOL),
                ("extversion", TEXT),
                ("extconfig", text_array()),
                ("extcondition", text_array()),
            ]),
            "pg_sequence" => empty(&[
                ("seqrelid", OID),
                ("seqtypid", OID),
                ("seqstart", OID),
                ("seqincrement", OID),
                ("seqmax", OID),
                ("seqmin", OID),
                ("seqcache", OID),
                ("seqcycle", BOOL),
            ]),
            "pg_publication" => empty(&[
                ("oid", OID),
                ("pubname", TEXT),
                ("pubowner", OID),
                ("puballtables", BOOL),
                ("pubinsert", BOOL),
                ("pubupdate", BOOL),
                ("pubdelete", BOOL),
                ("pubtruncate", BOOL),
                ("pubviaroot", BOOL),
            ]),
            "pg_publication_rel" => empty(&[("oid", OID), ("prpubid", OID), ("prrelid", OID)]),
            "pg_publication_tables" => {
                empty(&[("pubname", TEXT), ("schemaname", TEXT), ("tablename", TEXT)])
            }
            "pg_trigger" => empty(&[
                ("oid", OID),
                ("tgrelid", OID),
                ("tgparentid", OID),
                ("tgname", TEXT),
                ("tgfoid", OID),
                ("tgtype", INT2),
                ("tgenabled", TEXT),
                ("tgisinternal", BOOL),
                ("tgconstraint", OID),
            ]),
            "pg_rewrite" => empty(&[
                ("oid", OID),
                ("rulename", TEXT),
                ("ev_class", OID),
                ("ev_type", TEXT),
                ("ev_enabled", TEXT),
                ("is_instead", BOOL),
            ]),
            "pg_policy" => empty(&[
                ("oid", OID),
                ("polname", TEXT),
                ("polrelid", OID),
                ("polcmd", TEXT),
                ("polpermissive", BOOL),
                ("polroles", TEXT),
                ("polqual", TEXT),
                ("polwithcheck", TEXT),
            ]),
            "pg_statistic_ext" => empty(&[
                ("oid", OID),
                ("stxrelid", OID),
                ("stxname", TEXT),
                ("stxnamespace", OID),
                ("stxowner", OID),
                ("stxstattarget", INT4),
                ("stxkeys", int2_array()),
                ("stxkind", text_array()),
            ]),
            "pg_foreign_table" => empty(&[
                ("ftrelid", OID),
                ("ftserver", OID),
                ("ftoptions", text_array()),
            ]),
            "pg_partitioned_table" => {
                empty(&[("partrelid", OID), ("partstrat", TEXT), ("partnatts", INT2)])
            }
            "pg_opclass" => empty(&[
                ("oid", OID),
                ("opcmethod", OID),
                ("opcname", TEXT),
                ("opcnamespace", OID),
                ("opcowner", OID),
                ("opcfamily", OID),
                ("opcintype", OID),
                ("opcdefault", BOOL),
                ("opckeytype", OID),
            ]),
            "pg_event_trigger" => empty(&[
                ("oid", OID),
                ("evtname", TEXT),
                ("evtevent", TEXT),
                ("evtenabled", TEXT),
            ]),
            _ => return Ok(None),
        }?;
        Ok(Some(t))
    }

    /// Roles: OID, name, superuser, login. The superuser `weir` is OID 10;
    /// the others follow in name order.
    fn roles(&self) -> Vec<(i64, String, bool, bool)> {
        let mut next = 16_000;
        self.users
            .list()
            .into_iter()
            .map(|(name, superuser, login)| {
                let oid = if name == crate::users::SUPERUSER {
                    oid::SUPERUSER
                } else {
                    next += 1;
                    next
                };
                (oid, name, superuser, login)
            })
            .collect()
    }

    fn proc_table(&self) -> Result<Arc<dyn TableProvider>> {
        let rows: Vec<Vec<V>> = self
            .procs
            .read()
            .iter()
            .map(|p| {
                let argtypes: Vec<String> = p.args.iter().map(|a| a.to_string()).collect();
                vec![
                    p.oid.into(),
                    p.name.clone().into(),
                    oid::PG_CATALOG.into(),
                    oid::SUPERUSER.into(),
                    12i64.into(),
                    p.kind.into(),
                    p.retset.into(),
                    false.into(),
                    V::I(p.args.len() as i64),
                    V::I(0),
                    V::I(p.ret),
                    argtypes.join(" ").into(),
                    V::N,
                    V::N,
                    V::N,
                    V::N,
                    p.name.clone().into(),
                    "i".into(),
                    "s".into(),
                    V::N,
                ]
            })
            .collect();
        mem_table(
            &[
                ("oid", OID),
                ("proname", TEXT),
                ("pronamespace", OID),
                ("proowner", OID),
                ("prolang", OID),
                ("prokind", TEXT),
                ("proretset", BOOL),
                ("prosecdef", BOOL),
                ("pronargs", INT2),
                ("pronargdefaults", INT2),
                ("prorettype", OID),
                ("proargtypes", TEXT),
                ("proallargtypes", text_array()),
                ("proargmodes", text_array()),
                ("proargnames", text_array()),
                ("proargdefaults", TEXT),
                ("prosrc", TEXT),
                ("provolatile", TEXT),
                ("proparallel", TEXT),
                ("proacl", text_array()),
            ],
            &rows,
        )
    }
}

fn empty(columns: &[(&str, DataType)]) -> Result<Arc<dyn TableProvider>> {
    mem_table(columns, &[])
}

fn namespaces() -> Result<Arc<dyn TableProvider>> {
    let row = |oid: i64, name: &str| -> Vec<V> {
        vec![oid.into(), name.into(), oid::SUPERUSER.into(), V::N]
    };
    mem_table(
        &[
            ("oid", OID),
            ("nspname", TEXT),
            ("nspowner", OID),
            ("nspacl", TEXT),
        ],
        &[
            row(oid::PG_CATALOG, "pg_catalog"),
            row(oid::PUBLIC, "public"),
            row(oid::INFORMATION_SCHEMA, "information_schema"),
            row(oid::WEIR_CATALOG, "weir_catalog"),
        ],
    )
}

fn classes(relations: &[Arc<Relation>], system: &[SystemTable]) -> Result<Arc<dyn TableProvider>> {
    let mut rows = Vec::new();
    let row_in =
        |namespace: i64, oid: i64, name: &str, kind: &str, row_type: i64, am: i64, natts: usize| {
            vec![
                oid.into(),
                name.into(),
                namespace.into(),
                row_type.into(),
                V::I(0),
                oid::SUPERUSER.into(),
                am.into(),
                oid.into(),
                V::I(0),
                V::I(0),
                V::F(-1.0),
                V::I(0),
                V::I(0),
                false.into(),
                false.into(),
                "p".into(),
                kind.into(),
                V::I(natts as i64),
                V::I(0),
                false.into(),
                false.into(),
                false.into(),
                false.into(),
                false.into(),
                true.into(),
                "d".into(),
                false.into(),
                V::N,
                V::N,
                V::N,
            ]
        };
    let class_row = |oid: i64, name: &str, kind: &str, row_type: i64, am: i64, natts: usize| {
        row_in(oid::PUBLIC, oid, name, kind, row_type, am, natts)
    };
    for t in system {
        let am = if t.kind == "r" { oid::HEAP_AM } else { 0 };
        rows.push(row_in(
            oid::PG_CATALOG,
            t.oid,
            t.name,
            t.kind,
            0,
            am,
            t.schema.fields().len(),
        ));
    }
    for r in relations {
        let o = rel_oids(r);
        let pk = primary_key(r);
        let mut row = class_row(
            o.rel,
            &r.name,
            relkind(r),
            o.row_type,
            oid::HEAP_AM,
            r.schema.fields().len(),
        );
        // relhasindex
        row[13] = (!pk.is_empty()).into();
        rows.push(row);
        if !pk.is_empty() {
            rows.push(class_row(
                o.index,
                &format!("{}_pkey", r.name),
                "i",
                0,
                oid::BTREE_AM,
                pk.len(),
            ));
        }
    }
    mem_table(
        &[
            ("oid", OID),
            ("relname", TEXT),
            ("relnamespace", OID),
            ("reltype", OID),
            ("reloftype", OID),
            ("relowner", OID),
            ("relam", OID),
            ("relfilenode", OID),
            ("reltablespace", OID),
            ("relpages", INT4),
            ("reltuples", FLOAT4),
            ("relallvisible", INT4),
            ("reltoastrelid", OID),
            ("relhasindex", BOOL),
            ("relisshared", BOOL),
            ("relpersistence", TEXT),
            ("relkind", TEXT),
            ("relnatts", INT2),
            ("relchecks", INT2),
            ("relhasrules", BOOL),
            ("relhastriggers", BOOL),
            ("relhassubclass", BOOL),
            ("relrowsecurity", BOOL),
            ("relforcerowsecurity", BOOL),
            ("relispopulated", BOOL),
            ("relreplident", TEXT),
            ("relispartition", BOOL),
            ("relacl", text_array()),
            ("reloptions", text_array()),
            ("relpartbound", TEXT),
        ],
        &rows,
    )
}

fn attributes(
    relations: &[Arc<Relation>],
    system: &[SystemTable],
) -> Result<Arc<dyn TableProvider>> {
    let mut rows = Vec::new();
    for t in system {
        for (i, f) in t.schema.fields().iter().enumerate() {
            rows.push(field_attribute(t.oid, f, i + 1, true, false));
        }
    }
    for r in relations {
        let o = rel_oids(r);
        let pk = primary_key(r);
        for (i, f) in r.schema.fields().iter().enumerate() {
            let not_null = !f.is_nullable() || pk.contains(&i);
            rows.push(field_attribute(o.rel, f, i + 1, true, not_null));
        }
        // The primary key index's columns.
        for (k, col) in pk.iter().enumerate() {
            if let Some(f) = r.schema.fields().get(*col) {
                rows.push(field_attribute(o.index, f, k + 1, false, true));
            }
        }
    }
    mem_table(
        &[
            ("attrelid", OID),
            ("attname", TEXT),
            ("atttypid", OID),
            ("attstattarget", INT4),
            ("attlen", INT2),
            ("attnum", INT2),
            ("attndims", INT4),
            ("attcacheoff", INT4),
            ("atttypmod", INT4),
            ("attbyval", BOOL),
            ("attstorage", TEXT),
            ("attcompression", TEXT),
            ("attalign", TEXT),
            ("attnotnull", BOOL),
            ("atthasdef", BOOL),
            ("atthasmissing", BOOL),
            ("attidentity", TEXT),
            ("attgenerated", TEXT),
            ("attisdropped", BOOL),
            ("attislocal", BOOL),
            ("attinhcount", INT4),
            ("attcollation", OID),
            ("attacl", text_array()),
            ("attoptions", text_array()),
            ("attfdwoptions", text_array()),
            ("attmissingval", text_array()),
        ],
        &rows,
    )
}

/// The `pg_attribute` row of column `num` of relation `rel`, typed from
/// the Arrow field (its type modifier only if `with_typmod`).
fn field_attribute(rel: i64, f: &Field, num: usize, with_typmod: bool, not_null: bool) -> Vec<V> {
    let (t, typmod) = column_type(f);
    let len = pg_type(t).map_or(-1, |p| i64::from(p.len));
    let typmod = if with_typmod { typmod } else { -1 };
    attribute_row(rel, f.name(), t, len, num as i64, typmod, not_null)
}

fn attribute_row(
    rel: i64,
    name: &str,
    type_oid: i64,
    len: i64,
    num: i64,
    typmod: i32,
    not_null: bool,
) -> Vec<V> {
    let textual = matches!(type_oid, 25 | 1043 | 1042);
    vec![
        rel.into(),
        name.into(),
        type_oid.into(),
        V::I(-1),
        len.into(),
        num.into(),
        V::I(0),
        V::I(-1),
        V::I(i64::from(typmod)),
        (len > 0 && len <= 8).into(),
        // Postgres's typstorage: plain for fixed length, main for
        // numeric, extended for other varlena types.
        match (len, type_oid) {
            (1.., _) => "p",
            (_, 1700) => "m",
            _ => "x",
        }
        .into(),
        "".into(),
        "i".into(),
        not_null.into(),
        false.into(),
        false.into(),
        "".into(),
        "".into(),
        false.into(),
        true.into(),
        V::I(0),
        (if textual { oid::DEFAULT_COLLATION } else { 0 }).into(),
        V::N,
        V::N,
        V::N,
        V::N,
    ]
}

fn types(relations: &[Arc<Relation>]) -> Result<Arc<dyn TableProvider>> {
    let mut rows: Vec<Vec<V>> = TYPES
        .iter()
        .map(|t| {
            type_row(
                t.oid,
                t.name,
                i64::from(t.len),
                "b",
                t.category,
                0,
                t.elem,
                t.array,
            )
        })
        .collect();
    for r in relations {
        let o = rel_oids(r);
        rows.push(type_row(o.row_type, &r.name, -1, "c", "C", o.rel, 0, 0));
    }
    mem_table(
        &[
            ("oid", OID),
            ("typname", TEXT),
            ("typnamespace", OID),
            ("typowner", OID),
            ("typlen", INT2),
            ("typbyval", BOOL),
            ("typtype", TEXT),
            ("typcategory", TEXT),
            ("typispreferred", BOOL),
            ("typisdefined", BOOL),
            ("typdelim", TEXT),
            ("typrelid", OID),
            ("typelem", OID),
            ("typarray", OID),
            ("typinput", TEXT),
            ("typoutput", TEXT),
            ("typreceive", TEXT),
            ("typsend", TEXT),
            ("typalign", TEXT),
            ("typstorage", TEXT),
            ("typnotnull", BOOL),
            ("typbasetype", OID),
            ("typtypmod", INT4),
            ("typndims", INT4),
            ("typcollation", OID),
            ("typdefault", TEXT),
            ("typacl", text_array()),
        ],
        &rows,
    )
}

#[allow(clippy::too_many_arguments)]
fn type_row(
    oid_: i64,
    name: &str,
    len: i64,
    kind: &str,
    category: &str,
    relid: i64,
    elem: i64,
    array: i64,
) -> Vec<V> {
    let io = if kind == "c" {
        "record"
    } else {
        name.trim_start_matches('_')
    };
    let io = if elem != 0 { "array" } else { io };
    vec![
        oid_.into(),
        name.into(),
        (if kind == "c" {
            oid::PUBLIC
        } else {
            oid::PG_CATALOG
        })
        .into(),
        oid::SUPERUSER.into(),
        len.into(),
        (len > 0 && len <= 8).into(),
        kind.into(),
        category.into(),
        false.into(),
        true.into(),
        ",".into(),
        relid.into(),
        elem.into(),
        array.into(),
        format!("{io}_in").into(),
        format!("{io}_out").into(),
        format!("{io}_recv").into(),
        format!("{io}_send").into(),
        "i".into(),
        if len > 0 { "p" } else { "x" }.into(),
        false.into(),
        V::I(0),
        V::I(-1),
        V::I(0),
        (if matches!(oid_, 25 | 1043 | 1042) {
            oid::DEFAULT_COLLATION
        } else {
            0
        })
        .into(),
        V::N,
        V::N,
    ]
}

fn indexes(relations: &[Arc<Relation>]) -> Result<Arc<dyn TableProvider>> {
    let rows: Vec<Vec<V>> = relations
        .iter()
        .filter(|r| !primary_key(r).is_empty())
        .map(|r| {
            let o = rel_oids(r);
            let pk = primary_key(r);
            let keys: Vec<i16> = pk.iter().map(|c| *c as i16 + 1).collect();
            vec![
                o.index.into(),
                o.rel.into(),
                V::I(pk.len() as i64),
                V::I(pk.len() as i64),
                true.into(),
                true.into(),
                false.into(),
                true.into(),
                false.into(),
                true.into(),
                false.into(),
                true.into(),
                true.into(),
                false.into(),
                V::L(keys),
                V::L(vec![0; pk.len()]),
                V::L(vec![0; pk.len()]),
                V::L(vec![0; pk.len()]),
                V::N,
                V::N,
            ]
        })
        .collect();
    mem_table(
        &[
            ("indexrelid", OID),
            ("indrelid", OID),
            ("indnatts", INT2),
            ("indnkeyatts", INT2),
            ("indisunique", BOOL),
            ("indisprimary", BOOL),
            ("indisexclusion", BOOL),
            ("indimmediate", BOOL),
            ("indisclustered", BOOL),
            ("indisvalid", BOOL),
            ("indcheckxmin", BOOL),
            ("indisready", BOOL),
            ("indislive", BOOL),
            ("indisreplident", BOOL),
            ("indkey", int2_array()),
            ("indcollation", int2_array()),
            ("indclass", int2_array()),
            ("indoption", int2_array()),
            ("indexprs", TEXT),
            ("indpred", TEXT),
        ],
        &rows,
    )
}

fn constraints(relations: &[Arc<Relation>]) -> Result<Arc<dyn TableProvider>> {
    let rows: Vec<Vec<V>> = relations
        .iter()
        .filter(|r| !primary_key(r).is_empty())
        .map(|r| {
            let o = rel_oids(r);
            let keys: Vec<i16> = primary_key(r).iter().map(|c| *c as i16 + 1).collect();
            vec![
                o.constraint.into(),
                format!("{}_pkey", r.name).into(),
                oid::PUBLIC.into(),
                "p".into(),
                false.into(),
                false.into(),
                true.into(),
                o.rel.into(),
                V::I(0),
                o.index.into(),
                V::I(0),
                V::I(0),
                " ".into(),
                " ".into(),
                " ".into(),
                true.into(),
                V::I(0),
                true.into(),
                V::L(keys),
                V::N,
                V::N,
            ]
        })
        .collect();
    mem_table(
        &[
            ("oid", OID),
            ("conname", TEXT),
            ("connamespace", OID),
            ("contype", TEXT),
            ("condeferrable", BOOL),
            ("condeferred", BOOL),
            ("convalidated", BOOL),
            ("conrelid", OID),
            ("contypid", OID),
            ("conindid", OID),
            ("conparentid", OID),
            ("confrelid", OID),
            ("confupdtype", TEXT),
            ("confdeltype", TEXT),
            ("confmatchtype", TEXT),
            ("conislocal", BOOL),
            ("coninhcount", INT4),
            ("connoinherit", BOOL),
            ("conkey", int2_array()),
            ("confkey", int2_array()),
            ("conbin", TEXT),
        ],
        &rows,
    )
}

#[async_trait]
impl SchemaProvider for PgCatalog {
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

/// The session's settings, put in the query's session config by the
/// engine so `pg_settings` shows that session's values.
pub struct SessionSettings(pub Vec<(&'static weir_common::pg::Setting, String, bool)>);

/// `pg_settings`: read from [`SessionSettings`] when the query plans.
#[derive(Debug)]
struct SettingsTable;

const SETTINGS_COLUMNS: &[(&str, DataType)] = &[
    ("name", TEXT),
    ("setting", TEXT),
    ("unit", TEXT),
    ("category", TEXT),
    ("short_desc", TEXT),
    ("extra_desc", TEXT),
    ("context", TEXT),
    ("vartype", TEXT),
    ("source", TEXT),
    ("min_val", TEXT),
    ("max_val", TEXT),
    ("enumvals", TEXT),
    ("boot_val", TEXT),
    ("reset_val", TEXT),
    ("sourcefile", TEXT),
    ("sourceline", INT4),
    ("pending_restart", BOOL),
];

fn settings_schema() -> SchemaRef {
    Arc::new(Schema::new(
        SETTINGS_COLUMNS
            .iter()
            .map(|(n, t)| Field::new(*n, t.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

#[async_trait]
impl TableProvider for SettingsTable {
    fn schema(&self) -> SchemaRef {
        settings_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let settings = state.config().get_extension::<SessionSettings>();
        let rows: Vec<Vec<V>> = settings
            .iter()
            .flat_map(|s| s.0.iter())
            .map(|(s, value, set)| {
                let context = match s.context {
                    weir_common::pg::Context::User => "user",
                    weir_common::pg::Context::Internal => "internal",
                };
                vec![
                    s.name.into(),
                    value.clone().into(),
                    V::N,
                    s.category.into(),
                    s.description.into(),
                    V::N,
                    context.into(),
                    s.vartype.into(),
                    (if *set { "session" } else { "default" }).into(),
                    V::N,
                    V::N,
                    V::N,
                    s.default.into(),
                    s.default.into(),
                    V::N,
                    V::N,
                    false.into(),
                ]
            })
            .collect();
        let b = batch(SETTINGS_COLUMNS, &rows)?;
        MemTable::try_new(b.schema(), vec![vec![b]])?
            .scan(state, projection, filters, limit)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn empty_tables_are_empty_and_every_table_builds() {
        let pg = PgCatalog::new(
            Arc::new(RwLock::new(Catalog::new())),
            Arc::new(crate::users::Users::default()),
        );
        let ctx = SessionContext::new();
        for name in TABLES {
            let t = pg
                .build(name)
                .unwrap()
                .unwrap_or_else(|| panic!("{name} missing"));
            let plan = t.scan(&ctx.state(), None, &[], None).await.unwrap();
            let batches = weir_common::datafusion::physical_plan::collect(plan, ctx.task_ctx())
                .await
                .unwrap();
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            if EMPTY_TABLES.contains(name) {
                assert_eq!(rows, 0, "{name} must be empty");
            }
        }
        for name in EMPTY_TABLES {
            assert!(TABLES.contains(name), "{name} is not a pg_catalog table");
        }
        // Built-in namespaces and types are there with Postgres's OIDs.
        assert_eq!(pg_type_named("integer").map(|t| t.oid), Some(23));
        assert_eq!(
            pg_type_named("timestamp with time zone").map(|t| t.oid),
            Some(1184)
        );
    }
}
