//! What Weir tells Postgres clients about itself: the server version it
//! claims and the session parameters it reports at startup
//! (`ParameterStatus`) and through `SHOW`. One place, so that
//! `server_version`, `SHOW server_version`, `server_version_num` and
//! `version()` always agree.

/// The Postgres version Weir speaks as (the protocol and catalog it
/// imitates). Clients parse this; it must look like a Postgres version.
pub const SERVER_VERSION: &str = "14.13";

/// [`SERVER_VERSION`] as `server_version_num`.
pub const SERVER_VERSION_NUM: &str = "140013";

/// What `version()` returns.
pub fn version_string() -> String {
    format!(
        "PostgreSQL {SERVER_VERSION} (Weir {}) on x86_64-pc-linux-gnu, compiled by rustc, 64-bit",
        env!("CARGO_PKG_VERSION")
    )
}

/// Who may change a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Any session, with `SET` (Postgres's `user`).
    User,
    /// Fixed for the server's lifetime (Postgres's `internal`).
    Internal,
}

/// A configuration parameter: its Postgres spelling, default value and
/// what `pg_settings` says about it.
#[derive(Debug)]
pub struct Setting {
    /// As Postgres spells it (`DateStyle`, `search_path`).
    pub name: &'static str,
    pub default: &'static str,
    pub category: &'static str,
    pub description: &'static str,
    /// `bool`, `integer`, `string` or `enum`, as in `pg_settings.vartype`.
    pub vartype: &'static str,
    pub context: Context,
    /// Sent to the client in `ParameterStatus` at startup and whenever a
    /// session changes it (Postgres's `GUC_REPORT`).
    pub reported: bool,
}

const fn user(
    name: &'static str,
    default: &'static str,
    category: &'static str,
    vartype: &'static str,
    description: &'static str,
) -> Setting {
    Setting {
        name,
        default,
        category,
        description,
        vartype,
        context: Context::User,
        reported: false,
    }
}

const fn reported(s: Setting) -> Setting {
    Setting {
        reported: true,
        ..s
    }
}

const fn internal(s: Setting) -> Setting {
    Setting {
        context: Context::Internal,
        ..s
    }
}

const CLIENT: &str = "Client Connection Defaults";
const LOCALE: &str = "Client Connection Defaults / Locale and Formatting";
const PRESET: &str = "Preset Options";
const STREAMING: &str = "Weir / Streaming";

/// Every parameter Weir knows. `SET` of another name is 42704, except
/// custom names with a dot (`myapp.flag`), which Postgres also accepts.
pub const SETTINGS: &[Setting] = &[
    reported(internal(user("server_version", SERVER_VERSION, PRESET, "string", "Shows the server version."))),
    internal(user("server_version_num", SERVER_VERSION_NUM, PRESET, "integer", "Shows the server version as an integer.")),
    reported(internal(user("server_encoding", "UTF8", PRESET, "string", "Shows the server (database) character set encoding."))),
    reported(user("client_encoding", "UTF8", LOCALE, "string", "Sets the client's character set encoding (UTF8 only).")),
    reported(user("DateStyle", "ISO, MDY", LOCALE, "string", "Sets the display format for date and time values (ISO only).")),
    reported(user("IntervalStyle", "postgres", LOCALE, "enum", "Sets the display format for interval values (postgres only).")),
    reported(user("TimeZone", "UTC", LOCALE, "string", "Sets the time zone for displaying time stamps (TIMESTAMPTZ values are shown in it).")),
    reported(internal(user("integer_datetimes", "on", PRESET, "bool", "Shows whether datetimes are integer based."))),
    reported(user("standard_conforming_strings", "on", CLIENT, "bool", "Causes '...' strings to treat backslashes literally (on only).")),
    reported(internal(user("is_superuser", "on", PRESET, "bool", "Shows whether the current user is a superuser."))),
    reported(user("default_transaction_read_only", "off", CLIENT, "bool", "Sets the default read-only status of new transactions.")),
    reported(internal(user("in_hot_standby", "off", PRESET, "bool", "Shows whether hot standby is currently active."))),
    reported(user("application_name", "", "Reporting and Logging", "string", "Sets the application name to be reported in statistics and logs.")),
    reported(user("session_authorization", "weir", CLIENT, "string", "Sets the session user name.")),
    user("extra_float_digits", "1", LOCALE, "integer", "Sets the number of digits displayed for floating-point values."),
    user("search_path", "\"$user\", public", CLIENT, "string", "Sets the schema search order for names that are not schema-qualified."),
    user("transaction_isolation", "serializable", CLIENT, "enum", "Sets the current transaction's isolation level."),
    user("default_transaction_isolation", "serializable", CLIENT, "enum", "Sets the transaction isolation level of each new transaction."),
    user("transaction_read_only", "off", CLIENT, "bool", "Sets the current transaction's read-only status."),
    internal(user("max_identifier_length", "63", PRESET, "integer", "Shows the maximum identifier length.")),
    user("statement_timeout", "0", CLIENT, "integer", "Sets the maximum allowed duration of any statement (enforced for queries; writes run to completion)."),
    user("lock_timeout", "0", CLIENT, "integer", "Sets the maximum allowed duration of any wait for a lock (not enforced)."),
    user("idle_in_transaction_session_timeout", "0", CLIENT, "integer", "Sets the maximum allowed idle time between queries, when in a transaction (not enforced)."),
    user("client_min_messages", "notice", CLIENT, "enum", "Sets the message levels that are sent to the client."),
    user("lc_messages", "C.UTF-8", LOCALE, "string", "Sets the language in which messages are displayed."),
    user("lc_monetary", "C.UTF-8", LOCALE, "string", "Sets the locale for formatting monetary amounts."),
    user("lc_numeric", "C.UTF-8", LOCALE, "string", "Sets the locale for formatting numbers."),
    user("lc_time", "C.UTF-8", LOCALE, "string", "Sets the locale for formatting date and time values."),
    internal(user("lc_collate", "C.UTF-8", PRESET, "string", "Shows the collation order locale.")),
    internal(user("lc_ctype", "C.UTF-8", PRESET, "string", "Shows the character classification and case conversion locale.")),
    user("bytea_output", "hex", CLIENT, "enum", "Sets the output format for bytea."),
    internal(user("max_connections", "100", "Connections and Authentication", "integer", "Sets the maximum number of concurrent connections.")),
    internal(user("block_size", "8192", PRESET, "integer", "Shows the size of a disk block.")),
    internal(user("ssl", "off", "Connections and Authentication", "bool", "Enables SSL connections.")),
    user("row_security", "on", CLIENT, "bool", "Enable row security."),
    user("default_table_access_method", "heap", CLIENT, "string", "Sets the default table access method for new tables."),
    user("default_tablespace", "", CLIENT, "string", "Sets the default tablespace to create tables and indexes in."),
    user("timezone_abbreviations", "Default", LOCALE, "string", "Selects a file of time zone abbreviations."),
    user("work_mem", "4MB", "Resource Usage / Memory", "integer", "Sets the maximum memory to be used for query workspaces (not enforced)."),
    user("enable_seqscan", "on", "Query Tuning / Planner Method Configuration", "bool", "Enables the planner's use of sequential-scan plans."),
    user("streaming_parallelism", "default", STREAMING, "integer", "Instances per operator of materialized views created in this session (DEFAULT: the server's --parallelism)."),
    user("checkpoint_interval", "1s", STREAMING, "string", "How often the server takes a checkpoint (server-wide)."),
];

/// The parameter called `name` (any case).
pub fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name.eq_ignore_ascii_case(name))
}

/// Parameters reported to every client at startup and on change.
pub fn reported_settings() -> impl Iterator<Item = &'static Setting> {
    SETTINGS.iter().filter(|s| s.reported)
}

/// The value `SHOW name` gives for a parameter no session has set, or
/// `None` for a parameter Weir does not know (Postgres answers 42704).
pub fn default_setting(name: &str) -> Option<&'static str> {
    setting(name).map(|s| s.default)
}

/// Field metadata naming the table column a query's output column is
/// (`pg_class` OID and attribute number), which Postgres reports in
/// RowDescription and drivers use for result-set metadata (pgJDBC's
/// `getBaseTableName`, `isNullable`). Set on the columns of a relation as
/// queries scan it; columns computed from others lose it, as in Postgres.
pub mod origin {
    use datafusion::arrow::datatypes::Field;

    const TABLE_OID: &str = "weir.table_oid";
    const ATTNUM: &str = "weir.attnum";

    /// `field` marked as column `attnum` of relation `table_oid`.
    pub fn attach(field: Field, table_oid: i64, attnum: usize) -> Field {
        let mut metadata = field.metadata().clone();
        metadata.insert(TABLE_OID.to_string(), table_oid.to_string());
        metadata.insert(ATTNUM.to_string(), attnum.to_string());
        field.with_metadata(metadata)
    }

    /// The relation OID and attribute number `field` comes from, if known.
    pub fn of(field: &Field) -> Option<(i32, i16)> {
        let oid = field.metadata().get(TABLE_OID)?.parse().ok()?;
        let attnum = field.metadata().get(ATTNUM)?.parse().ok()?;
        Some((oid, attnum))
    }
}
