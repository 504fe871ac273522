//! Users (roles) and their passwords.
//!
//! A password is kept as its SCRAM-SHA-256 salted password (RFC 5802
//! `SaltedPassword` = PBKDF2-HMAC-SHA-256 of the password, 4096 rounds,
//! with a random 16-byte salt), never in clear: that is what the SCRAM
//! exchange (pgwire's) needs, and cleartext password checks hash the
//! offered password the same way. The WAL and checkpoints store the
//! statement with this verifier (`weir-scram-sha-256$4096$salt$salted`, hex)
//! in place of the password.
//!
//! With `--auth md5` (opt-in) a password set is also kept as Postgres's
//! `md5(password || user)`, which the MD5 challenge needs (a fifth `$`
//! part of the verifier); passwords set while the server ran with another
//! method have none, and must be set again for MD5 logins.
//!
//! The user `weir` always exists (the superuser clients connect as when
//! authentication is off); `WEIR_PASSWORD` sets its password at start.

use std::collections::BTreeMap;

use async_trait::async_trait;
use parking_lot::RwLock;
use pgwire::api::auth::sasl::scram::gen_salted_password;
use pgwire::api::auth::{AuthSource, LoginInfo, Password};
use pgwire::error::{PgWireError, PgWireResult};
use weir_common::{Error, SqlState};
use weir_sql::parser::{RoleOptions, RoleStatement};

/// PBKDF2 rounds of stored passwords (Postgres's default too).
pub const SCRAM_ITERATIONS: usize = 4096;

/// The superuser that always exists.
pub const SUPERUSER: &str = "weir";

const VERIFIER_PREFIX: &str = "weir-scram-sha-256$";

/// A stored password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    pub salt: Vec<u8>,
    pub salted: Vec<u8>,
    /// `md5(password || user)`, kept only for MD5 authentication.
    pub md5: Option<Vec<u8>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Verifier {
    /// Hash `password` with a fresh random salt; with `md5_user`, also
    /// keep its MD5 hash for that user.
    pub fn new(password: &str, md5_user: Option<&str>) -> Verifier {
        let salt: [u8; 16] = rand::random();
        Verifier {
            salted: gen_salted_password(password, &salt, SCRAM_ITERATIONS),
            salt: salt.to_vec(),
            md5: md5_user.map(|user| md5::compute(format!("{password}{user}")).0.to_vec()),
        }
    }

    /// The text kept in the WAL and checkpoints.
    pub fn encode(&self) -> String {
        let md5 = self
            .md5
            .as_ref()
            .map(|m| format!("${}", hex(m)))
            .unwrap_or_default();
        format!(
            "{VERIFIER_PREFIX}{SCRAM_ITERATIONS}${}${}{md5}",
            hex(&self.salt),
            hex(&self.salted)
        )
    }

    /// What a client answering the MD5 challenge `salt` must send:
    /// `"md5" || md5(hex(md5(password || user)) || salt)`.
    pub fn md5_response(&self, salt: &[u8]) -> Option<String> {
        let mut bytes = hex(self.md5.as_ref()?).into_bytes();
        bytes.extend_from_slice(salt);
        Some(format!("md5{:x}", md5::compute(bytes)))
    }

    /// A verifier written by [`Verifier::encode`], if `text` is one.
    pub fn decode(text: &str) -> Option<Verifier> {
        let rest = text.strip_prefix(VERIFIER_PREFIX)?;
        let mut parts = rest.split('$');
        let iterations: usize = parts.next()?.parse().ok()?;
        if iterations != SCRAM_ITERATIONS {
            return None;
        }
        let salt = unhex(parts.next()?)?;
        let salted = unhex(parts.next()?)?;
        let md5 = match parts.next() {
            Some(m) => Some(unhex(m).filter(|m| m.len() == 16)?),
            None => None,
        };
        parts
            .next()
            .is_none()
            .then_some(Verifier { salt, salted, md5 })
    }

    /// Whether `password` is the one this verifier was made from.
    pub fn matches(&self, password: &str) -> bool {
        gen_salted_password(password, &self.salt, SCRAM_ITERATIONS) == self.salted
    }
}

/// One user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub password: Option<Verifier>,
    pub superuser: bool,
    pub login: bool,
}

/// Every user of the server.
#[derive(Debug)]
pub struct Users {
    users: RwLock<BTreeMap<String, User>>,
    /// Keep MD5 hashes of passwords set (the server authenticates by MD5).
    keep_md5: std::sync::atomic::AtomicBool,
}

impl Default for Users {
    fn default() -> Self {
        let mut users = BTreeMap::new();
        users.insert(
            SUPERUSER.to_string(),
            User {
                password: None,
                superuser: true,
                login: true,
            },
        );
        Users {
            users: RwLock::new(users),
            keep_md5: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Users {
    /// Also keep MD5 hashes of passwords set from now on.
    pub fn keep_md5(&self, keep: bool) {
        self.keep_md5
            .store(keep, std::sync::atomic::Ordering::Relaxed);
    }

    fn md5_user<'a>(&self, name: &'a str) -> Option<&'a str> {
        self.keep_md5
            .load(std::sync::atomic::Ordering::Relaxed)
            .then_some(name)
    }

    fn verifier_of(
        &self,
        name: &str,
        password: &Option<Option<String>>,
    ) -> Option<Option<Verifier>> {
        password.as_ref().map(|p| {
            p.as_deref().map(|p| {
                Verifier::decode(p).unwrap_or_else(|| Verifier::new(p, self.md5_user(name)))
            })
        })
    }
}

fn apply(user: &mut User, options: &RoleOptions, verifier: Option<Option<Verifier>>) {
    if let Some(v) = verifier {
        user.password = v;
    }
    if let Some(s) = options.superuser {
        user.superuser = s;
    }
    if let Some(l) = options.login {
        user.login = l;
    }
}

impl Users {
    /// Run a user statement; returns its command tag and the statement to
    /// log (passwords replaced by their verifiers).
    pub fn execute(&self, statement: &RoleStatement) -> Result<(&'static str, String), Error> {
        let mut users = self.users.write();
        match statement {
            RoleStatement::Create { name, options } => {
                if users.contains_key(name) {
                    return Err(Error::new(
                        SqlState("42710"),
                        format!("role \"{name}\" already exists"),
                    ));
                }
                let verifier = self.verifier_of(name, &options.password);
                let mut user = User {
                    password: None,
                    superuser: false,
                    login: true,
                };
                apply(&mut user, options, verifier.clone());
                users.insert(name.clone(), user);
                Ok(("CREATE ROLE", log_text("CREATE", name, options, verifier)))
            }
            RoleStatement::Alter { name, options } => {
                let Some(user) = users.get_mut(name) else {
                    return Err(Error::new(
                        SqlState::UNDEFINED_OBJECT,
                        format!("role \"{name}\" does not exist"),
                    ));
                };
                let verifier = self.verifier_of(name, &options.password);
                apply(user, options, verifier.clone());
                Ok(("ALTER ROLE", log_text("ALTER", name, options, verifier)))
            }
            RoleStatement::Drop { names, if_exists } => {
                for name in names {
                    if name == SUPERUSER {
                        return Err(Error::new(
                            SqlState("55006"),
                            format!("cannot drop role \"{SUPERUSER}\": the server's superuser"),
                        ));
                    }
                    if !users.contains_key(name) && !if_exists {
                        return Err(Error::new(
                            SqlState::UNDEFINED_OBJECT,
                            format!("role \"{name}\" does not exist"),
                        ));
                    }
                }
                for name in names {
                    users.remove(name);
                }
                let quoted: Vec<String> = names.iter().map(|n| quote(n)).collect();
                Ok((
                    "DROP ROLE",
                    format!("DROP USER IF EXISTS {}", quoted.join(", ")),
                ))
            }
        }
    }

    /// The statements that recreate every user (for checkpoints).
    pub fn ddl(&self) -> Vec<String> {
        self.users
            .read()
            .iter()
            .map(|(name, u)| {
                let options = RoleOptions {
                    password: None,
                    superuser: Some(u.superuser),
                    login: Some(u.login),
                };
                let verb = if name == SUPERUSER { "ALTER" } else { "CREATE" };
                log_text(verb, name, &options, Some(u.password.clone()))
            })
            .collect()
    }

    /// Forget every user but the superuser (before restoring a checkpoint).
    pub fn clear(&self) {
        *self.users.write() = Users::default().users.into_inner();
    }

    /// Set the superuser's password (from `WEIR_PASSWORD`).
    pub fn set_superuser_password(&self, password: &str) {
        if let Some(u) = self.users.write().get_mut(SUPERUSER) {
            u.password = Some(Verifier::new(password, self.md5_user(SUPERUSER)));
        }
    }

    /// The user `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<User> {
        self.users.read().get(name).cloned()
    }

    /// Names, superuser flags and login flags, for `pg_roles`.
    pub fn list(&self) -> Vec<(String, bool, bool)> {
        self.users
            .read()
            .iter()
            .map(|(n, u)| (n.clone(), u.superuser, u.login))
            .collect()
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn log_text(
    verb: &str,
    name: &str,
    options: &RoleOptions,
    verifier: Option<Option<Verifier>>,
) -> String {
    let mut sql = format!("{verb} USER {} WITH", quote(name));
    match verifier {
        Some(Some(v)) => sql.push_str(&format!(" PASSWORD '{}'", v.encode())),
        Some(None) => sql.push_str(" PASSWORD NULL"),
        None => {}
    }
    match options.superuser {
        Some(true) => sql.push_str(" SUPERUSER"),
        Some(false) => sql.push_str(" NOSUPERUSER"),
        None => {}
    }
    match options.login {
        Some(true) => sql.push_str(" LOGIN"),
        Some(false) => sql.push_str(" NOLOGIN"),
        None => {}
    }
    sql
}

/// The passwords pgwire's SCRAM exchange checks against.
#[derive(Debug)]
pub struct ScramSource(pub std::sync::Arc<Users>);

#[async_trait]
impl AuthSource for ScramSource {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let name = login.user().unwrap_or_default();
        match self.0.get(name) {
            Some(User {
                password: Some(v),
                login: true,
                ..
            }) => Ok(Password::new(Some(v.salt), v.salted)),
            _ => Err(PgWireError::InvalidPassword(name.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_round_trip_and_check() {
        let v = Verifier::new("secret", None);
        assert!(v.matches("secret"));
        assert!(!v.matches("Secret"));
        assert_eq!(Verifier::decode(&v.encode()), Some(v.clone()));
        assert_eq!(v.md5_response(b"salt"), None);
        // MD5: Postgres's scheme (as pgwire's client-side helper computes it).
        let m = Verifier::new("secret", Some("alice"));
        assert_eq!(Verifier::decode(&m.encode()), Some(m.clone()));
        assert_eq!(
            m.md5_response(&[1, 2, 3, 4]).unwrap(),
            pgwire::api::auth::md5pass::hash_md5_password("alice", "secret", &[1, 2, 3, 4])
        );
        assert_eq!(Verifier::decode("weir-scram-sha-256$1$00$00"), None);
        assert_eq!(Verifier::decode("plain"), None);
    }

    #[test]
    fn logged_statements_hold_no_password() {
        let users = Users::default();
        let create = RoleStatement::Create {
            name: "alice".into(),
            options: RoleOptions {
                password: Some(Some("hunter2".into())),
                ..Default::default()
            },
        };
        let (tag, logged) = users.execute(&create).unwrap();
        assert_eq!(tag, "CREATE ROLE");
        assert!(!logged.contains("hunter2"), "{logged}");
        assert!(users.execute(&create).is_err());
        // Replaying the logged statement gives the same verifier.
        let replayed = Users::default();
        let parsed = weir_sql::parser::parse(&logged).unwrap();
        let weir_sql::parser::Statement::Role(r) = &parsed[0] else {
            panic!("{parsed:?}")
        };
        replayed.execute(r).unwrap();
        assert_eq!(replayed.get("alice"), users.get("alice"));
        assert!(replayed
            .get("alice")
            .unwrap()
            .password
            .unwrap()
            .matches("hunter2"));
        assert!(users
            .execute(&RoleStatement::Drop {
                names: vec![SUPERUSER.into()],
                if_exists: false
            })
            .is_err());
    }
}
