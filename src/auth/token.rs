//! Biscuit tokens: minting (root key), offline attenuation (no key), verification
//! (public keys by key id), and the datalog that ties tokens to [`Need`]s.
//!
//! # The token vocabulary
//!
//! A token's authority block (signed by the registry's root key, or by a trusted
//! issuer's key with the same vocabulary) holds:
//!
//! ```text
//! principal("alice");                          // who; exactly one
//! right("repository", "packs/a", "pull");      // an exact repository, one action or "*"
//! right("prefix", "packs/team/", "push");      // every name starting with the prefix ("" = all)
//! right("registry", "catalog", "*");           // the catalog listing
//! check if time($t), $t <= 2030-01-01T00:00:00Z;   // expiry
//! ```
//!
//! A request is authorized one need at a time; for each, the registry adds
//! `resource("repository", NAME)` (or `resource("registry", "catalog")`),
//! `action("pull" | "push" | "delete")` (`pull` for the catalog) and `time(NOW)`, and
//! allows it when a `right` of the authority block covers it and every check of every
//! block passes. Facts of later blocks are not trusted by these policies, so an
//! attenuation block can only add checks: it can narrow, never widen. Attenuations made
//! here look like:
//!
//! ```text
//! check if resource("repository", "packs/a"), action($a), ["pull"].contains($a)
//!       or resource("repository", $n), $n.starts_with("packs/b/");
//! check if time($t), $t <= 2026-01-01T00:00:00Z;
//! ```
//!
//! A failed check that reads `time(…)` makes the token [`AuthError::Expired`]; any
//! other failure is [`AuthError::Denied`].
//!
//! Keys are biscuit's prefixed hex strings: `ed25519-private/<hex>` (or
//! `secp256r1-private/<hex>`) for the root key, `ed25519/<hex>` for public keys.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use biscuit_auth::builder::{self, AuthorizerBuilder, BlockBuilder, Rule, Term};
use biscuit_auth::error::{FailedCheck, Format, Logic, Token};
use biscuit_auth::{
    AuthorizerLimits, Biscuit, KeyPair, PrivateKey, PublicKey, RootKeyProvider, UnverifiedBiscuit,
};
use secrecy::{ExposeSecret, SecretString};

use super::error::{AuthError, SetupError};
use super::grant::{Action, Actions, Grant, Need, RepoPattern};
use super::principal::ANONYMOUS;
use crate::config::{AuthConfig, RunLimitsConfig};

/// Parses a private key in biscuit's prefixed form (`ed25519-private/<hex>`).
pub(crate) fn parse_private_key(s: &str) -> Result<PrivateKey, String> {
    s.trim().parse::<PrivateKey>().map_err(|_| {
        "not a private key of the form ed25519-private/<64 hex digits> \
         (make one with `packs-registry token keygen`)"
            .to_string()
    })
}

/// Parses a public key in biscuit's prefixed form (`ed25519/<hex>`).
pub(crate) fn parse_public_key(s: &str) -> Result<PublicKey, String> {
    s.trim()
        .parse::<PublicKey>()
        .map_err(|_| format!("{s:?} is not a public key of the form ed25519/<64 hex digits>"))
}

/// The key in a root key file: its first line that is neither blank nor a `#` comment
/// (so the output of `packs-registry token keygen` is a valid key file).
pub(crate) fn key_from_file_text(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
}

/// A new Ed25519 root key: the private key (`ed25519-private/<hex>`) and its public key
/// (`ed25519/<hex>`).
pub fn generate_key() -> (SecretString, String) {
    let pair = KeyPair::new();
    (
        SecretString::from(pair.private().to_prefixed_string()),
        pair.public().to_string(),
    )
}

/// What [`attenuate`] narrows a token to. Attenuation only ever removes rights: the
/// result can do what the parent could do AND what this allows, never more.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attenuation {
    /// Only these grants (repository patterns with actions, and/or the catalog).
    /// `None` leaves repositories and actions as they were; `Some(vec![])` leaves the
    /// token able to do nothing.
    pub grants: Option<Vec<Grant>>,
    /// An expiry, in force only if earlier than the token's own.
    pub expires: Option<SystemTime>,
}

impl Attenuation {
    /// The block of checks this attenuation appends.
    fn block(&self) -> Result<BlockBuilder, AuthError> {
        let mut block = BlockBuilder::new();
        if let Some(grants) = &self.grants {
            let mut params = HashMap::new();
            let mut queries = Vec::with_capacity(grants.len());
            for (i, grant) in grants.iter().enumerate() {
                let query = match grant {
                    Grant::Catalog => r#"resource("registry", "catalog")"#.to_string(),
                    Grant::Repository { pattern, actions } => {
                        let mut q = match pattern {
                            RepoPattern::Exact(name) => {
                                params.insert(format!("n{i}"), builder::string(name.as_str()));
                                format!(r#"resource("repository", {{n{i}}})"#)
                            }
                            RepoPattern::Prefix(prefix) => {
                                params.insert(format!("n{i}"), builder::string(prefix));
                                format!(r#"resource("repository", $n), $n.starts_with({{n{i}}})"#)
                            }
                            RepoPattern::Any => r#"resource("repository", $n)"#.to_string(),
                        };
                        if *actions != Actions::ALL {
                            let set: BTreeSet<Term> = actions
                                .iter()
                                .map(|a| builder::string(a.as_str()))
                                .collect();
                            params.insert(format!("a{i}"), builder::set(set));
                            q.push_str(&format!(", action($a), {{a{i}}}.contains($a)"));
                        }
                        q
                    }
                };
                queries.push(query);
            }
            let source = if queries.is_empty() {
                "check if false;".to_string()
            } else {
                format!("check if {};", queries.join(" or "))
            };
            block = block
                .code_with_params(source, params, HashMap::new())
                .map_err(internal)?;
        }
        if let Some(expires) = self.expires {
            block = expiry_check(block, expires)?;
        }
        Ok(block)
    }
}

fn expiry_check(block: BlockBuilder, expires: SystemTime) -> Result<BlockBuilder, AuthError> {
    let params = HashMap::from([("expires".to_string(), date(expires)?)]);
    block
        .code_with_params(
            "check if time($t), $t <= {expires};",
            params,
            HashMap::new(),
        )
        .map_err(internal)
}

fn date(t: SystemTime) -> Result<Term, AuthError> {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| Term::Date(d.as_secs()))
        .map_err(|_| AuthError::Internal("expiry before 1970".into()))
}

fn internal(e: impl std::fmt::Display) -> AuthError {
    AuthError::Internal(e.to_string())
}

/// Narrows `token` (base64) offline: appends a block of checks, signed with the key
/// the token itself carries for its next block. Needs no root key, and no public key
/// either: the token is not verified here (the registry verifies it on use).
pub fn attenuate(token: &str, narrower: &Attenuation) -> Result<SecretString, AuthError> {
    let parent = UnverifiedBiscuit::from_base64(token.trim()).map_err(|_| AuthError::Malformed)?;
    let child = parent
        .append(narrower.block()?)
        .map_err(|_| AuthError::Malformed)?;
    child.to_base64().map(SecretString::from).map_err(internal)
}

/// Datalog run limits for one authorization.
fn limits(c: &RunLimitsConfig) -> AuthorizerLimits {
    AuthorizerLimits {
        max_facts: c.max_facts,
        max_iterations: c.max_iterations,
        max_time: Duration::from_millis(c.max_time_ms),
    }
}

/// A token whose signature checked out: what a bearer principal carries, so later
/// checks (`can_pull`, `issue`) can run against it.
#[derive(Clone)]
pub(crate) struct VerifiedToken {
    biscuit: Biscuit,
    /// The root key id the token names.
    pub(crate) key_id: Option<u32>,
}

/// The registry's keys and the policies that evaluate tokens: mints with the signing
/// key, verifies with any configured public key (chosen by the token's root key id).
/// Parsed once; cheap to use per request.
pub struct Tokens {
    signing: KeyPair,
    key_id: u32,
    /// Every accepted public key by id: the signing key's and the trusted ones.
    verifying: Arc<HashMap<u32, PublicKey>>,
    limits: AuthorizerLimits,
    /// The policies for one need (resource + action facts added per run).
    need_policies: AuthorizerBuilder,
    /// The policy for "is this token valid at all" (no resource).
    valid_policy: AuthorizerBuilder,
    /// `principal($p)`.
    principal_rule: Rule,
}

const NEED_POLICIES: &str = r#"
    allow if resource("repository", $n), action($a), right("repository", $n, $a);
    allow if resource("repository", $n), action($a), right("repository", $n, "*");
    allow if resource("repository", $n), action($a), right("prefix", $p, $a), $n.starts_with($p);
    allow if resource("repository", $n), action($a), right("prefix", $p, "*"), $n.starts_with($p);
    allow if resource("registry", "catalog"), right("registry", "catalog", "*");
"#;

/// Picks the public key for a token's root key id; a token without one is checked
/// against the signing key.
struct KeyChooser<'a>(&'a Tokens);

impl RootKeyProvider for KeyChooser<'_> {
    fn choose(&self, key_id: Option<u32>) -> Result<PublicKey, Format> {
        let id = key_id.unwrap_or(self.0.key_id);
        self.0
            .verifying
            .get(&id)
            .copied()
            .ok_or(Format::UnknownPublicKey)
    }
}

impl Tokens {
    /// The signing key (`root_key` or the first key line of `root_key_file`), its id,
    /// the trusted public keys and the run limits of `config`. Reads the key file.
    pub fn from_config(config: &AuthConfig) -> Result<Tokens, SetupError> {
        let text;
        let key = if !config.root_key.expose_secret().is_empty() {
            config.root_key.expose_secret()
        } else if !config.root_key_file.as_os_str().is_empty() {
            text = SecretString::from(std::fs::read_to_string(&config.root_key_file).map_err(
                |e| {
                    SetupError(format!(
                        "cannot read auth.root_key_file {}: {e}",
                        config.root_key_file.display()
                    ))
                },
            )?);
            key_from_file_text(text.expose_secret()).ok_or_else(|| {
                SetupError(format!(
                    "auth.root_key_file {} holds no key",
                    config.root_key_file.display()
                ))
            })?
        } else {
            return Err(SetupError(
                "no root key: set auth.root_key_file or PACKS__AUTH__ROOT_KEY".into(),
            ));
        };
        let private = parse_private_key(key).map_err(|e| SetupError(format!("root key: {e}")))?;
        let mut tokens = Tokens::new(&private, config.key_id, &config.limits)?;
        for trusted in &config.trusted_keys {
            let public = parse_public_key(&trusted.public_key)
                .map_err(|e| SetupError(format!("auth.trusted_keys {}: {e}", trusted.key_id)))?;
            tokens.trust(trusted.key_id, public)?;
        }
        Ok(tokens)
    }

    /// Signs with `private` under `key_id`, verifies only its own tokens so far.
    pub(crate) fn new(
        private: &PrivateKey,
        key_id: u32,
        run_limits: &RunLimitsConfig,
    ) -> Result<Tokens, SetupError> {
        let signing = KeyPair::from(private);
        let parse = |code: &str| {
            AuthorizerBuilder::new()
                .code(code)
                .map_err(|e| SetupError(format!("authorizer policies: {e}")))
        };
        Ok(Tokens {
            verifying: Arc::new(HashMap::from([(key_id, signing.public())])),
            signing,
            key_id,
            limits: limits(run_limits),
            need_policies: parse(NEED_POLICIES)?,
            valid_policy: parse("allow if true;")?,
            principal_rule: builder::rule(
                "principal",
                &[builder::var("p")],
                &[builder::pred("principal", &[builder::var("p")])],
            ),
        })
    }

    /// Also accepts tokens whose root key id is `key_id`, checked against `public`.
    pub(crate) fn trust(&mut self, key_id: u32, public: PublicKey) -> Result<(), SetupError> {
        let keys = Arc::make_mut(&mut self.verifying);
        if keys.insert(key_id, public).is_some() {
            return Err(SetupError(format!("key id {key_id} is configured twice")));
        }
        Ok(())
    }

    /// The id of the signing key, set in every token minted here.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The signing key's public key (`ed25519/<hex>`), for other services to trust.
    pub fn public_key(&self) -> String {
        self.signing.public().to_string()
    }

    /// A token for `principal` with `grants`, expiring at `expires` (to the second),
    /// sealed by the root key with its key id.
    pub fn mint(
        &self,
        principal: &str,
        grants: &[Grant],
        expires: SystemTime,
    ) -> Result<SecretString, AuthError> {
        use builder::{fact, string};
        if principal.is_empty() {
            return Err(AuthError::Internal("a token needs a principal".into()));
        }
        let mut b = Biscuit::builder()
            .fact(fact("principal", &[string(principal)]))
            .map_err(internal)?;
        for grant in grants {
            let (kind, value, actions) = match grant {
                Grant::Catalog => ("registry", "catalog", Actions::ALL),
                Grant::Repository { pattern, actions } => match pattern {
                    RepoPattern::Exact(n) => ("repository", n.as_str(), *actions),
                    RepoPattern::Prefix(p) => ("prefix", p.as_str(), *actions),
                    RepoPattern::Any => ("prefix", "", *actions),
                },
            };
            if actions == Actions::ALL {
                b = b
                    .fact(fact("right", &[string(kind), string(value), string("*")]))
                    .map_err(internal)?;
            } else {
                for a in actions.iter() {
                    b = b
                        .fact(fact(
                            "right",
                            &[string(kind), string(value), string(a.as_str())],
                        ))
                        .map_err(internal)?;
                }
            }
        }
        let params = HashMap::from([("expires".to_string(), date(expires)?)]);
        b = b
            .code_with_params(
                "check if time($t), $t <= {expires};",
                params,
                HashMap::new(),
            )
            .map_err(internal)?;
        b.root_key_id(self.key_id)
            .build(&self.signing)
            .and_then(|t| t.to_base64())
            .map(SecretString::from)
            .map_err(internal)
    }

    /// Checks the token's signature and key: [`AuthError::Malformed`] or
    /// [`AuthError::UnknownKey`].
    pub(crate) fn parse(&self, token: &str) -> Result<VerifiedToken, AuthError> {
        let biscuit =
            Biscuit::from_base64(token.trim(), KeyChooser(self)).map_err(|e| match e {
                Token::Format(Format::UnknownPublicKey) => AuthError::UnknownKey,
                _ => AuthError::Malformed,
            })?;
        Ok(VerifiedToken {
            key_id: biscuit.root_key_id(),
            biscuit,
        })
    }

    /// Verifies `token` for every need (each evaluated on its own, so no check of an
    /// attenuation block can be satisfied by another need), or, with no needs, checks
    /// only that it is well-signed, not expired and names a principal. Returns the
    /// token's principal name and the verified token. A need not granted is
    /// [`AuthError::Denied`], or [`AuthError::Missing`] for a token whose principal is
    /// `anonymous`.
    pub(crate) fn verify(
        &self,
        token: &str,
        needs: &[Need<'_>],
    ) -> Result<(String, VerifiedToken), AuthError> {
        let verified = self.parse(token)?;
        let name = match needs.split_first() {
            None => self.run(&verified, None, true)?,
            Some((first, rest)) => {
                let checked = self.run(&verified, Some(first), true).and_then(|name| {
                    rest.iter()
                        .try_for_each(|need| self.run(&verified, Some(need), false).map(drop))
                        .map(|()| name)
                });
                match checked {
                    // A token issued to the anonymous caller is no credential: it
                    // lacking a need is "authenticate", not "forbidden".
                    Err(AuthError::Denied)
                        if self.run(&verified, None, true)?.as_deref() == Some(ANONYMOUS) =>
                    {
                        return Err(AuthError::Missing);
                    }
                    other => other?,
                }
            }
        };
        Ok((name.ok_or(AuthError::Malformed)?, verified))
    }

    /// Whether an already verified token allows `need` (for listings: no principal
    /// query, errors are "no").
    pub(crate) fn allows(&self, token: &VerifiedToken, need: &Need<'_>) -> bool {
        self.run(token, Some(need), false).is_ok()
    }

    /// `token` narrowed by `narrower` (a verified token stays verified: appending a
    /// block does not need the root key).
    pub(crate) fn attenuate_verified(
        &self,
        token: &VerifiedToken,
        narrower: &Attenuation,
    ) -> Result<SecretString, AuthError> {
        token
            .biscuit
            .append(narrower.block()?)
            .and_then(|t| t.to_base64())
            .map(SecretString::from)
            .map_err(internal)
    }

    /// One authorization run; with `need` absent, only the token's time checks count.
    /// With `want_name`, also reads the principal (exactly one `principal` fact of the
    /// authority block, else [`AuthError::Malformed`]).
    fn run(
        &self,
        token: &VerifiedToken,
        need: Option<&Need<'_>>,
        want_name: bool,
    ) -> Result<Option<String>, AuthError> {
        use builder::{fact, string};
        let mut b = match need {
            None => self.valid_policy.clone(),
            Some(Need::Repository { name, action }) => self
                .need_policies
                .clone()
                .fact(fact("resource", &[string("repository"), string(name)]))
                .and_then(|b| b.fact(fact("action", &[string(action.as_str())])))
                .map_err(internal)?,
            Some(Need::Catalog) => self
                .need_policies
                .clone()
                .fact(fact("resource", &[string("registry"), string("catalog")]))
                .and_then(|b| b.fact(fact("action", &[string(Action::Pull.as_str())])))
                .map_err(internal)?,
        };
        b = b.time().set_limits(self.limits.clone());
        let mut authorizer = b
            .build(&token.biscuit)
            .map_err(|e| classify(e, need).unwrap_or(AuthError::Malformed))?;
        if let Err(e) = authorizer.authorize()
            && let Some(refused) = classify(e, need)
        {
            return Err(refused);
        }
        if !want_name {
            return Ok(None);
        }
        let names: Vec<(String,)> = authorizer
            .query(self.principal_rule.clone())
            .map_err(|e| classify(e, need).unwrap_or(AuthError::Malformed))?;
        match names.as_slice() {
            [(name,)] => Ok(Some(name.clone())),
            _ => Err(AuthError::Malformed),
        }
    }
}

/// Maps a failed run to the error to answer, or `None` when the failure does not
/// count: in a validity run (no need) only failed time checks count.
fn classify(e: Token, need: Option<&Need<'_>>) -> Option<AuthError> {
    match e {
        Token::FailedLogic(Logic::NoMatchingPolicy { checks })
        | Token::FailedLogic(Logic::Unauthorized { checks, .. }) => {
            let expired = checks.iter().any(|c| {
                let rule = match c {
                    FailedCheck::Block(b) => &b.rule,
                    FailedCheck::Authorizer(a) => &a.rule,
                };
                rule.contains("time(")
            });
            if expired {
                Some(AuthError::Expired)
            } else if need.is_none() {
                None
            } else {
                Some(AuthError::Denied)
            }
        }
        Token::FailedLogic(_) => Some(AuthError::Denied),
        Token::RunLimit(_) => Some(AuthError::Limits),
        Token::Execution(_) | Token::Format(_) | Token::Base64(_) => Some(AuthError::Malformed),
        other => Some(internal(other)),
    }
}
