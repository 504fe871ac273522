//! SET, RESET, SHOW and the `current_setting` / `set_config` functions,
//! over the session's settings ([`Session`]). `checkpoint_interval` is the
//! one server-wide parameter: setting it changes the coordinator's period.

use std::ops::ControlFlow;
use std::time::Duration;

use weir_common::datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, ContextModifier, Expr as SqlExpr, FunctionArg, FunctionArgExpr,
    FunctionArguments, Reset, Set, Value,
};

use super::*;
use crate::session::Session;

/// The text of a SET value: `'x'`, `x`, `42`, `a, b` (lists are joined as
/// Postgres shows them); `None` for DEFAULT.
fn value_text(values: &[SqlExpr]) -> Option<String> {
    let parts: Vec<String> = values
        .iter()
        .map(|e| match e {
            SqlExpr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                other => other.to_string(),
            },
            SqlExpr::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        })
        .collect();
    let text = parts.join(", ");
    (!text.eq_ignore_ascii_case("default")).then_some(text)
}

impl Engine {
    /// SET in all its Postgres forms.
    pub(super) fn set(&self, set: &Set, session: &Session) -> Result<QueryResult> {
        let (name, value) = match set {
            Set::SingleAssignment {
                scope: Some(ContextModifier::Local),
                variable,
                values,
                ..
            } => {
                // Server-wide parameters are not transactional.
                let name = variable.to_string();
                if name.eq_ignore_ascii_case("checkpoint_interval") {
                    return Err(user(
                        SqlState::FEATURE_NOT_SUPPORTED,
                        "SET LOCAL checkpoint_interval is not supported: it is server-wide",
                    ));
                }
                session.set_local(&name, value_text(values).as_deref())?;
                return Ok(QueryResult::command("SET"));
            }
            Set::SingleAssignment {
                variable, values, ..
            } => (variable.to_string(), value_text(values)),
            Set::SetTimeZone { value, .. } => (
                "TimeZone".to_string(),
                value_text(std::slice::from_ref(value)),
            ),
            Set::SetNames { charset_name, .. } => (
                "client_encoding".to_string(),
                Some(charset_name.value.clone()),
            ),
            other => {
                return Err(user(
                    SqlState::FEATURE_NOT_SUPPORTED,
                    format!("{} is not supported", first_words(&other.to_string())),
                ))
            }
        };
        self.set_parameter(&name, value.as_deref(), session)?;
        Ok(QueryResult::command("SET"))
    }

    /// Set one parameter (`None`: back to its default).
    fn set_parameter(&self, name: &str, value: Option<&str>, session: &Session) -> Result<()> {
        if name.eq_ignore_ascii_case("checkpoint_interval") {
            let text = value.unwrap_or("1s");
            // A bare number is milliseconds.
            let parsed = match text.trim().parse::<u64>() {
                Ok(ms) => Ok(Duration::from_millis(ms)),
                Err(_) => humantime::parse_duration(text.trim()),
            };
            let d = parsed.ok().filter(|d| !d.is_zero()).ok_or_else(|| {
                user(
                    SqlState::INVALID_PARAMETER_VALUE,
                    format!("invalid value for parameter \"checkpoint_interval\": \"{text}\""),
                )
            })?;
            self.durable.interval.send_replace(d);
            return Ok(());
        }
        session.set(name, value)?;
        Ok(())
    }

    /// RESET name / RESET ALL.
    pub(super) fn reset(&self, reset: &Reset, session: &Session) -> Result<QueryResult> {
        match reset {
            Reset::ALL => session.reset_all(),
            Reset::ConfigurationParameter(name) => {
                self.set_parameter(&name.to_string(), None, session)?
            }
        }
        Ok(QueryResult::command("RESET"))
    }

    /// SHOW name / SHOW ALL.
    pub(super) fn show(&self, name: &str, session: &Session) -> Result<QueryResult> {
        // `SHOW TRANSACTION ISOLATION LEVEL` arrives as three words.
        let name = match name.to_ascii_lowercase().replace('.', " ").as_str() {
            "transaction isolation level" => "transaction_isolation".to_string(),
            "time zone" => "TimeZone".to_string(),
            _ => name.to_string(),
        };
        if name.eq_ignore_ascii_case("all") {
            return Ok(self.show_all(session));
        }
        Ok(text_rows(&name, vec![self.setting_value(&name, session)?]))
    }

    /// What `SHOW name` and `current_setting(name)` give.
    fn setting_value(&self, name: &str, session: &Session) -> Result<String> {
        if name.eq_ignore_ascii_case("checkpoint_interval") {
            return Ok(humantime::format_duration(self.checkpoint_interval()).to_string());
        }
        if name.eq_ignore_ascii_case("streaming_parallelism") {
            return Ok(match self.session_parallelism(session) {
                0 => format!("default ({})", self.default_parallelism),
                n => n.to_string(),
            });
        }
        session.get(name).ok_or_else(|| {
            user(
                SqlState::UNDEFINED_OBJECT,
                format!("unrecognized configuration parameter \"{name}\""),
            )
        })
    }

    fn show_all(&self, session: &Session) -> QueryResult {
        let schema = text_schema(&["name", "setting", "description"]);
        let mut names = Vec::new();
        let mut values = Vec::new();
        let mut descriptions = Vec::new();
        for (s, _, _) in session.all() {
            names.push(s.name.to_string());
            values.push(self.setting_value(s.name, session).unwrap_or_default());
            descriptions.push(s.description.to_string());
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(names)),
            Arc::new(StringArray::from(values)),
            Arc::new(StringArray::from(descriptions)),
        ];
        let batches = RecordBatch::try_new(Arc::clone(&schema), columns)
            .map(|b| vec![b])
            .unwrap_or_default();
        QueryResult::Rows { schema, batches }
    }

    /// The session's `streaming_parallelism`: 0 for the default.
    pub(super) fn session_parallelism(&self, session: &Session) -> usize {
        session
            .get("streaming_parallelism")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Everything done to a client's statement before planning: setting
    /// functions inlined ([`Engine::inline_setting_functions`]) and the
    /// Postgres catalog rewrites ([`crate::pg_catalog::rewrite`]).
    pub(super) fn prepare_sql(
        &self,
        statement: &mut SqlStatement,
        session: &Session,
        apply: bool,
    ) -> Result<()> {
        self.inline_setting_functions(statement, session, apply)?;
        let facts = crate::pg_catalog::rewrite::SessionFacts {
            user: session
                .get("session_authorization")
                .unwrap_or_else(|| crate::pg_catalog::OWNER.to_string()),
            pid: session.pid(),
        };
        crate::pg_catalog::rewrite::rewrite(statement, &self.catalog.read(), &facts)?;
        Ok(())
    }

    /// Replace `current_setting('name' [, missing_ok])` and
    /// `set_config('name', 'value', is_local)` calls with literal
    /// arguments by their values, as Postgres evaluates them; `set_config`
    /// also sets the parameter when `apply` (execution, not Describe).
    pub(super) fn inline_setting_functions(
        &self,
        statement: &mut SqlStatement,
        session: &Session,
        apply: bool,
    ) -> Result<()> {
        let flow = visit_expressions_mut(statement, |e| {
            let SqlExpr::Function(f) = e else {
                return ControlFlow::Continue(());
            };
            let name = f
                .name
                .0
                .last()
                .map(|p| p.to_string().to_ascii_lowercase())
                .unwrap_or_default();
            if name != "current_setting" && name != "set_config" {
                return ControlFlow::Continue(());
            }
            let FunctionArguments::List(list) = &f.args else {
                return ControlFlow::Continue(());
            };
            let args: Vec<Option<String>> = list
                .args
                .iter()
                .map(|a| match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Value(v))) => {
                        match &v.value {
                            Value::SingleQuotedString(s) => Some(s.clone()),
                            Value::Boolean(b) => Some(b.to_string()),
                            _ => None,
                        }
                    }
                    _ => None,
                })
                .collect();
            let value = match (name.as_str(), args.as_slice()) {
                ("current_setting", [Some(n)]) => self.setting_value(n, session).map(Some),
                ("current_setting", [Some(n), Some(missing_ok)]) => {
                    match self.setting_value(n, session) {
                        Ok(v) => Ok(Some(v)),
                        Err(_) if missing_ok == "true" => Ok(None),
                        Err(e) => Err(e),
                    }
                }
                ("set_config", [Some(n), Some(v), Some(_local)]) => {
                    let set = if apply {
                        self.set_parameter(n, Some(v), session)
                    } else {
                        Ok(())
                    };
                    set.and_then(|()| {
                        if apply {
                            self.setting_value(n, session).map(Some)
                        } else {
                            Ok(Some(v.clone()))
                        }
                    })
                }
                _ => return ControlFlow::Continue(()),
            };
            match value {
                Ok(v) => {
                    *e = SqlExpr::Value(
                        match v {
                            Some(s) => Value::SingleQuotedString(s),
                            None => Value::Null,
                        }
                        .into(),
                    );
                    ControlFlow::Continue(())
                }
                Err(err) => ControlFlow::Break(err),
            }
        });
        match flow {
            ControlFlow::Break(e) => Err(e),
            ControlFlow::Continue(()) => Ok(()),
        }
    }
}
