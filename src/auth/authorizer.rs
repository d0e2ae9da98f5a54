//! The [`Authorizer`]: one value built at start-up from `[auth]`, asked once per
//! request who the caller is and whether it may do what the request needs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};

use super::error::{AuthError, SetupError};
use super::grant::{self, Action, Actions, Grant, Need, RepoPattern, Scope};
use super::password::{self, DUMMY_HASH};
use super::principal::{self, Account, Principal, PrincipalKind, Rights};
use super::token::{Attenuation, Tokens};
use crate::config::{AuthConfig, AuthMode};

/// Credentials a request presented (the HTTP layer parses the `Authorization`
/// header into this). `Debug` never shows the password or token.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// `Authorization: Basic …`.
    Basic {
        /// The user or robot name.
        username: String,
        /// The password.
        password: SecretString,
    },
    /// `Authorization: Bearer <biscuit, base64>`.
    Bearer(SecretString),
}

/// A token issued by [`Authorizer::issue`], as `/token` answers it. `Debug` hides the
/// token.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    /// The biscuit, base64 (both `token` and `access_token` in the JSON answer).
    pub token: SecretString,
    /// Seconds from `issued_at` until it expires.
    pub expires_in: u64,
    /// When it was issued.
    pub issued_at: SystemTime,
}

impl IssuedToken {
    /// `issued_at` in RFC 3339 (`2025-01-15T10:30:00Z`), as the token JSON carries it.
    pub fn issued_at_rfc3339(&self) -> String {
        humantime::format_rfc3339_seconds(self.issued_at).to_string()
    }
}

/// Decides who a request acts as and whether it may do what it needs. Built once from
/// `[auth]` ([`Authorizer::from_config`]); clones share everything, so it can sit in
/// the application state and move into blocking tasks.
#[derive(Clone)]
pub struct Authorizer {
    inner: Arc<Inner>,
}

struct Inner {
    mode: AuthMode,
    service: String,
    realm: Option<String>,
    token_ttl: Duration,
    /// Present in token mode.
    tokens: Option<Tokens>,
    accounts: HashMap<String, Account>,
    anonymous_pull: Vec<RepoPattern>,
}

impl Authorizer {
    /// Builds the authorizer: in token mode reads the root key (file or
    /// `auth.root_key`), parses the trusted public keys and the policies once, and
    /// loads the accounts (inline and `users_file`). Fails on anything unusable.
    pub fn from_config(config: &AuthConfig) -> Result<Authorizer, SetupError> {
        let tokens = match config.mode {
            AuthMode::None => None,
            AuthMode::Token => Some(Tokens::from_config(config)?),
        };
        let accounts = principal::load_accounts(&config.users, &config.robots, &config.users_file)?;
        Ok(Authorizer {
            inner: Arc::new(Inner {
                mode: config.mode,
                service: config.service.clone(),
                realm: (!config.realm.is_empty()).then(|| config.realm.clone()),
                token_ttl: Duration::from_secs(config.token_ttl_secs),
                tokens,
                accounts,
                anonymous_pull: config.anonymous_pull.clone(),
            }),
        })
    }

    /// `none` (everything allowed, to everyone) or `token`.
    pub fn mode(&self) -> AuthMode {
        self.inner.mode
    }

    /// The `service` of challenges and token requests.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The configured `realm` URL, if any (else derive `<scheme>://<host>/token`).
    pub fn realm(&self) -> Option<&str> {
        self.inner.realm.as_deref()
    }

    /// The token engine (mint, key id, public key), present in token mode.
    pub fn tokens(&self) -> Option<&Tokens> {
        self.inner.tokens.as_ref()
    }

    /// Checks a user's or robot's password. Unknown names are checked against a dummy
    /// hash, so every failure costs one Argon2 verification, like a success: about
    /// 20-50 ms of CPU. Call it off the async workers (`web::block`).
    /// [`AuthError::BadCredentials`] whatever failed.
    pub fn authenticate_basic(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Principal, AuthError> {
        let account = self.inner.accounts.get(username);
        let hash = account.map_or(DUMMY_HASH, |a| a.hash.expose_secret());
        let ok = password::verify_password(password, hash);
        match account {
            Some(a) if ok => Ok(Principal::new(
                username,
                a.kind,
                Rights::Grants(a.grants.clone()),
            )),
            _ => Err(AuthError::BadCredentials),
        }
    }

    /// Who the caller is, without checking any need (for `/packs` listings, filtered
    /// with [`Authorizer::can_pull`], and `/token`): no credentials → the anonymous
    /// principal; Basic → the account ([`Authorizer::authenticate_basic`], slow);
    /// Bearer → the token's principal if it is well-signed by a known key and not
    /// expired. In mode `none`, always the open anonymous principal.
    pub fn identify(&self, credentials: Option<&Credentials>) -> Result<Principal, AuthError> {
        let Some(tokens) = &self.inner.tokens else {
            return Ok(Principal::open());
        };
        match credentials {
            None => Ok(Principal::anonymous()),
            Some(Credentials::Basic { username, password }) => {
                self.authenticate_basic(username, password.expose_secret())
            }
            Some(Credentials::Bearer(token)) => {
                let (name, verified) = tokens.verify(token.expose_secret(), &[])?;
                Ok(token_principal(name, verified))
            }
        }
    }

    /// Identifies the caller and checks every need; the principal if all are allowed.
    ///
    /// - Mode `none`: always allowed.
    /// - No credentials: allowed when `auth.anonymous_pull` covers every need;
    ///   otherwise, and always when `needs` is empty (the `/v2/` check, so clients
    ///   learn the realm), [`AuthError::Missing`].
    /// - Basic: the account's grants (plus the anonymous patterns) must cover every
    ///   need, else [`AuthError::Denied`]. Costs an Argon2 verification (see
    ///   [`Authorizer::authenticate_basic`]).
    /// - Bearer: [`Authorizer::verify_token`]. Each need is evaluated on its own; with
    ///   no needs, only validity counts.
    pub fn authorize(
        &self,
        credentials: Option<&Credentials>,
        needs: &[Need<'_>],
    ) -> Result<Principal, AuthError> {
        if self.inner.tokens.is_none() {
            return Ok(Principal::open());
        }
        match credentials {
            None => {
                if !needs.is_empty() && needs.iter().all(|n| self.anonymous_allows(n)) {
                    Ok(Principal::anonymous())
                } else {
                    Err(AuthError::Missing)
                }
            }
            Some(Credentials::Basic { .. }) => {
                let principal = self.identify(credentials)?;
                self.check(&principal, needs)?;
                Ok(principal)
            }
            Some(Credentials::Bearer(token)) => self.verify_token(token.expose_secret(), needs),
        }
    }

    /// `authorize` for a bearer token (base64): the token must be valid
    /// ([`AuthError::Malformed`], [`AuthError::UnknownKey`], [`AuthError::Expired`])
    /// and allow every need not covered by the anonymous patterns
    /// ([`AuthError::Denied`]; [`AuthError::Missing`] for a token issued to the
    /// anonymous caller). In mode `none`, always allowed.
    pub fn verify_token(&self, token: &str, needs: &[Need<'_>]) -> Result<Principal, AuthError> {
        let Some(tokens) = &self.inner.tokens else {
            return Ok(Principal::open());
        };
        let rest: Vec<Need<'_>> = needs
            .iter()
            .filter(|n| !self.anonymous_allows(n))
            .copied()
            .collect();
        // A token is verified even when the anonymous patterns cover every need: an
        // invalid token is refused, not ignored.
        let (name, verified) = tokens.verify(token, &rest)?;
        Ok(token_principal(name, verified))
    }

    /// Checks needs for an identified principal: `Ok` if all are allowed; else
    /// [`AuthError::Missing`] for the anonymous principal (so it authenticates) and
    /// [`AuthError::Denied`] for anyone else.
    pub fn check(&self, principal: &Principal, needs: &[Need<'_>]) -> Result<(), AuthError> {
        if needs.iter().all(|n| self.allows(principal, n)) {
            Ok(())
        } else if principal.is_anonymous() {
            Err(AuthError::Missing)
        } else {
            Err(AuthError::Denied)
        }
    }

    /// Whether `principal` may pull from the repository `name` (for filtering
    /// listings). For a token holder this evaluates the token (tens of microseconds).
    pub fn can_pull(&self, principal: &Principal, name: &str) -> bool {
        self.allows(
            principal,
            &Need::Repository {
                name,
                action: Action::Pull,
            },
        )
    }

    /// The `scope` of the challenge for `needs` (see [`grant::challenge_scope`]).
    pub fn challenge_scope(&self, needs: &[Need<'_>]) -> String {
        grant::challenge_scope(needs)
    }

    /// Issues a token for `principal` (as `/token` does) granting the intersection of
    /// `scopes` and what the principal may do: actions it may not have are dropped,
    /// scopes left with none are dropped, nothing is refused. It expires after
    /// `auth.token_ttl_secs`.
    ///
    /// For an account or the anonymous principal the token is minted afresh with the
    /// root key. For a token holder it is the presented token attenuated to `scopes`
    /// and the new expiry, so it keeps every restriction of the original (and its
    /// `expires_in` may overstate its life if the original expires sooner).
    pub fn issue(&self, principal: &Principal, scopes: &[Scope]) -> Result<IssuedToken, AuthError> {
        self.issue_for(principal, scopes, self.inner.token_ttl)
    }

    /// [`Authorizer::issue`] with a lifetime of `ttl` instead of `auth.token_ttl_secs`
    /// (the refresh token of the OAuth2 `/token` form, which outlives the access
    /// tokens it is exchanged for).
    pub fn issue_for(
        &self,
        principal: &Principal,
        scopes: &[Scope],
        ttl: Duration,
    ) -> Result<IssuedToken, AuthError> {
        let Some(tokens) = &self.inner.tokens else {
            return Err(AuthError::Disabled);
        };
        let issued_at = SystemTime::now();
        let expires = issued_at + ttl;
        let token = match &principal.rights {
            Rights::Token(verified) => {
                let grants = scopes.iter().filter_map(requested_grant).collect();
                tokens.attenuate_verified(
                    verified,
                    &Attenuation {
                        grants: Some(grants),
                        expires: Some(expires),
                    },
                )?
            }
            Rights::Grants(_) | Rights::Everything => {
                let grants: Vec<Grant> = scopes
                    .iter()
                    .filter_map(|s| self.granted(principal, s))
                    .collect();
                tokens.mint(principal.name(), &grants, expires)?
            }
        };
        Ok(IssuedToken {
            token,
            expires_in: ttl.as_secs(),
            issued_at,
        })
    }

    /// A token carrying everything an account may do, for `ttl` (the web UI's login
    /// session, kept in a cookie). Only an account authenticated by password has one:
    /// [`AuthError::Denied`] for any other principal, [`AuthError::Disabled`] in mode
    /// `none`.
    pub fn issue_session(
        &self,
        principal: &Principal,
        ttl: Duration,
    ) -> Result<IssuedToken, AuthError> {
        let Some(tokens) = &self.inner.tokens else {
            return Err(AuthError::Disabled);
        };
        let Rights::Grants(grants) = &principal.rights else {
            return Err(AuthError::Denied);
        };
        let issued_at = SystemTime::now();
        Ok(IssuedToken {
            token: tokens.mint(principal.name(), grants, issued_at + ttl)?,
            expires_in: ttl.as_secs(),
            issued_at,
        })
    }

    /// The part of `scope` that `principal` (an account or anonymous) may have.
    fn granted(&self, principal: &Principal, scope: &Scope) -> Option<Grant> {
        match scope {
            Scope::Catalog => self
                .allows(principal, &Need::Catalog)
                .then_some(Grant::Catalog),
            Scope::Repository { name, actions } => {
                let allowed = actions.iter().fold(Actions::NONE, |set, a| {
                    if self.allows(principal, &Need::repository(name, a)) {
                        set.with(a)
                    } else {
                        set
                    }
                });
                (!allowed.is_empty()).then(|| Grant::Repository {
                    pattern: RepoPattern::Exact(name.clone()),
                    actions: allowed,
                })
            }
        }
    }

    /// Whether `need` is allowed to `principal` (anonymous patterns count for all).
    fn allows(&self, principal: &Principal, need: &Need<'_>) -> bool {
        if self.anonymous_allows(need) {
            return true;
        }
        match &principal.rights {
            Rights::Everything => true,
            Rights::Grants(grants) => match *need {
                Need::Repository { name, action } => {
                    grant::actions_on(grants, name).contains(action)
                }
                Need::Catalog => grant::has_catalog(grants),
            },
            Rights::Token(verified) => self
                .inner
                .tokens
                .as_ref()
                .is_some_and(|t| t.allows(verified, need)),
        }
    }

    fn anonymous_allows(&self, need: &Need<'_>) -> bool {
        match *need {
            Need::Repository {
                name,
                action: Action::Pull,
            } => self.inner.anonymous_pull.iter().any(|p| p.matches(name)),
            _ => false,
        }
    }
}

/// The holder of a verified token; one issued to the anonymous caller stays anonymous.
fn token_principal(name: String, verified: super::token::VerifiedToken) -> Principal {
    let kind = if name == principal::ANONYMOUS {
        PrincipalKind::Anonymous
    } else {
        PrincipalKind::Token
    };
    Principal::new(name, kind, Rights::Token(Arc::new(verified)))
}

/// A scope as a grant, as asked (a token holder's rights are its token's).
fn requested_grant(scope: &Scope) -> Option<Grant> {
    match scope {
        Scope::Catalog => Some(Grant::Catalog),
        Scope::Repository { actions, .. } if actions.is_empty() => None,
        Scope::Repository { name, actions } => Some(Grant::Repository {
            pattern: RepoPattern::Exact(name.clone()),
            actions: *actions,
        }),
    }
}
