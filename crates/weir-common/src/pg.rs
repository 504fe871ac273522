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

/// Parameters reported to every client at startup, with their values;
/// `application_name`, `session_authorization` and `client_encoding` follow
/// what the client sent and are added by the wire layer.
pub const STARTUP_PARAMETERS: &[(&str, &str)] = &[
    ("server_version", SERVER_VERSION),
    ("server_encoding", "UTF8"),
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("integer_datetimes", "on"),
    ("standard_conforming_strings", "on"),
    ("is_superuser", "on"),
    ("default_transaction_read_only", "off"),
    ("in_hot_standby", "off"),
];

/// The value `SHOW name` gives for a parameter that is not set
/// otherwise, or `None` for a parameter Weir does not know (Postgres
/// answers 42704 then).
pub fn default_setting(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    if let Some((_, v)) = STARTUP_PARAMETERS
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(&name))
    {
        return Some(v);
    }
    Some(match name.as_str() {
        "server_version_num" => SERVER_VERSION_NUM,
        "client_encoding" => "UTF8",
        "application_name" => "",
        "extra_float_digits" => "1",
        "search_path" => "\"$user\", public",
        "transaction_isolation"
        | "transaction isolation level"
        | "default_transaction_isolation" => "serializable",
        "transaction_read_only" => "off",
        "max_identifier_length" => "63",
        "statement_timeout" | "lock_timeout" | "idle_in_transaction_session_timeout" => "0",
        "client_min_messages" => "notice",
        "lc_messages" | "lc_monetary" | "lc_numeric" | "lc_time" | "lc_collate" | "lc_ctype" => {
            "C.UTF-8"
        }
        "bytea_output" => "hex",
        "max_connections" => "100",
        "block_size" => "8192",
        "ssl" => "off",
        _ => return None,
    })
}
