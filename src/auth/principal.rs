//! Principals (who a request acts as) and the account directory (users and robots
//! with password hashes and grants, from configuration and a users file).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::error::SetupError;
use super::grant::Grant;
use super::password;
use super::token::VerifiedToken;
use crate::config::AccountConfig;

/// What kind of caller a [`Principal`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    /// No credentials, a token issued to the anonymous caller, or anyone when
    /// `auth.mode = "none"`.
    Anonymous,
    /// A user account, authenticated by password.
    User,
    /// A robot account, authenticated by password.
    Robot,
    /// The holder of a bearer token (minted here, issued by `/token`, attenuated, or
    /// from a trusted issuer); the name is the token's `principal`.
    Token,
}

/// The name anonymous callers go by (no account may take it).
pub const ANONYMOUS: &str = "anonymous";

/// Who a request acts as, and what it may do. Cheap to clone (shared parts are
/// reference-counted). `Debug` shows the name and kind, never a token.
#[derive(Clone)]
pub struct Principal {
    name: Arc<str>,
    kind: PrincipalKind,
    pub(crate) rights: Rights,
}

/// Where a principal's rights come from.
#[derive(Clone)]
pub(crate) enum Rights {
    /// Everything (`auth.mode = "none"`).
    Everything,
    /// A grant list (accounts; anonymous has none beyond the anonymous patterns).
    Grants(Arc<[Grant]>),
    /// A verified token, evaluated per need.
    Token(Arc<VerifiedToken>),
}

impl Principal {
    pub(crate) fn new(name: impl Into<Arc<str>>, kind: PrincipalKind, rights: Rights) -> Self {
        Principal {
            name: name.into(),
            kind,
            rights,
        }
    }

    /// The anonymous caller of a registry in token mode (rights: the anonymous
    /// patterns, applied by the authorizer).
    pub(crate) fn anonymous() -> Self {
        Principal::new(
            ANONYMOUS,
            PrincipalKind::Anonymous,
            Rights::Grants(Arc::from([])),
        )
    }

    /// The caller of an open registry: anonymous, allowed everything.
    pub(crate) fn open() -> Self {
        Principal::new(ANONYMOUS, PrincipalKind::Anonymous, Rights::Everything)
    }

    /// The principal's name: the account name, the token's `principal`, or
    /// `anonymous`. What audit events record.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What kind of caller this is.
    pub fn kind(&self) -> PrincipalKind {
        self.kind
    }

    /// Whether the caller gave no credentials (or only a token issued to the
    /// anonymous caller).
    pub fn is_anonymous(&self) -> bool {
        self.kind == PrincipalKind::Anonymous
    }

    /// For a token holder: the root key id its token was verified with (`None` if the
    /// token named none and the signing key was used). Tells the registry's own tokens
    /// from a trusted issuer's.
    pub fn key_id(&self) -> Option<u32> {
        match &self.rights {
            Rights::Token(t) => t.key_id,
            _ => None,
        }
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// One account of the directory.
pub(crate) struct Account {
    pub(crate) kind: PrincipalKind,
    pub(crate) hash: SecretString,
    pub(crate) grants: Arc<[Grant]>,
}

/// The users file: the same account fields as inline configuration.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct UsersFile {
    users: Vec<AccountConfig>,
    robots: Vec<AccountConfig>,
}

/// Checks names and hashes of a set of accounts: names non-empty, without `:` or
/// control characters, unique across users and robots, not `anonymous`; hashes
/// usable Argon2 PHC strings.
pub fn check_accounts(users: &[AccountConfig], robots: &[AccountConfig]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for a in users.iter().chain(robots) {
        if a.name.is_empty()
            || a.name.contains(':')
            || a.name.chars().any(char::is_control)
            || a.name == ANONYMOUS
        {
            return Err(format!(
                "account name {:?} must be non-empty, without ':' or control characters, \
                 and not {ANONYMOUS:?}",
                a.name
            ));
        }
        if !seen.insert(a.name.as_str()) {
            return Err(format!("account {:?} is defined twice", a.name));
        }
        password::check_hash(a.password_hash.expose_secret())
            .map_err(|e| format!("account {:?}: {e}", a.name))?;
    }
    Ok(())
}

/// Builds the account directory from the inline accounts and the users file (if
/// any), refusing duplicates and unusable hashes.
pub(crate) fn load_accounts(
    users: &[AccountConfig],
    robots: &[AccountConfig],
    users_file: &Path,
) -> Result<HashMap<String, Account>, SetupError> {
    let mut file = UsersFile::default();
    if !users_file.as_os_str().is_empty() {
        let text = std::fs::read_to_string(users_file).map_err(|e| {
            SetupError(format!(
                "cannot read auth.users_file {}: {e}",
                users_file.display()
            ))
        })?;
        file = toml_from_str(&text)
            .map_err(|e| SetupError(format!("auth.users_file {}: {e}", users_file.display())))?;
    }
    let all_users: Vec<AccountConfig> = users.iter().chain(&file.users).cloned().collect();
    let all_robots: Vec<AccountConfig> = robots.iter().chain(&file.robots).cloned().collect();
    check_accounts(&all_users, &all_robots).map_err(SetupError)?;
    let accounts = all_users
        .into_iter()
        .map(|a| (a, PrincipalKind::User))
        .chain(all_robots.into_iter().map(|a| (a, PrincipalKind::Robot)))
        .map(|(a, kind)| {
            (
                a.name,
                Account {
                    kind,
                    hash: a.password_hash,
                    grants: a.grants.into(),
                },
            )
        })
        .collect();
    Ok(accounts)
}

/// Parses TOML through figment (the crate the configuration already reads TOML with).
fn toml_from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    use figment::providers::{Format, Toml};
    figment::Figment::from(Toml::string(text))
        .extract()
        .map_err(|e| e.to_string())
}
