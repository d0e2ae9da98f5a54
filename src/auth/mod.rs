//! Authentication and authorization: principals, grants and biscuit tokens. No HTTP:
//! this module must not import actix or any HTTP type, nor the domain (`registry`),
//! storage or metadata. The HTTP layer turns headers into [`Credentials`] and
//! endpoints into [`Need`]s, calls one [`Authorizer`], and maps [`AuthError`] to
//! statuses.
//!
//! - [`grant`]: the vocabulary. Actions `pull`, `push`, `delete`, `*`; repository
//!   patterns (an exact name, a prefix ending in `/` that covers whole components
//!   only, or `*`); grants `<pattern>:<actions>` and `registry:catalog:*`; Docker
//!   scopes `repository:<name>:<actions>`; challenge scopes.
//! - [`Authorizer`]: built once from `[auth]`; `authenticate_basic`, `identify`,
//!   `authorize` (credentials + needs → principal), `check`, `can_pull`, `issue`
//!   (the `/token` answer), `challenge_scope`.
//! - [`Tokens`] and [`attenuate`]: biscuit tokens sealed by the root key with its key
//!   id, verified with any configured public key (rotation, other issuers); offline
//!   attenuation without any key. The datalog vocabulary is documented in `token.rs`.
//! - [`hash_password`], [`verify_password`]: Argon2id PHC strings.
//! - [`cli`]: `packs-registry user hash` and `packs-registry token …`.
//!
//! # Wiring it (the HTTP layer's side)
//!
//! | request | needs |
//! |---|---|
//! | `GET /v2/` | none (`authorize(creds, &[])`: anonymous → 401, any valid credentials → 200) |
//! | manifest/blob/tag/referrers read | `Need::pull(repo)` |
//! | upload, manifest put | `Need::push(repo)` |
//! | mount `?mount=&from=` | `Need::push(repo)` and `Need::pull(from)` |
//! | delete | `Need::delete(repo)` |
//! | `/v2/_catalog` | `Need::Catalog` |
//! | `/packs` list | `identify`, then keep what `can_pull` allows |
//! | `/packs/{id}…` read / `POST /packs` / `DELETE` | pull / push / delete on the pack's repository |
//!
//! Errors: [`AuthError::is_forbidden`] → 403 `DENIED`; [`AuthError::is_internal`] →
//! 500; everything else → 401 `UNAUTHORIZED` with
//! `WWW-Authenticate: Bearer realm="<realm>",service="<service>",scope="<challenge_scope(needs)>"`
//! (omit `scope` when it is empty). `/token` parses each `scope` with
//! [`Scope::parse_list`] (400 on error), gets the principal with
//! [`Authorizer::identify`] (401 on error), and answers [`Authorizer::issue`]. Basic
//! authentication costs an Argon2 verification: run it with `web::block`.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use packs_registry::auth::{Authorizer, Credentials, Need, Scope, generate_key, hash_password};
//! use packs_registry::config::{AccountConfig, AuthConfig, AuthMode};
//! use packs_registry::names::RepoName;
//!
//! let (root_key, _public_key) = generate_key();
//! let config = AuthConfig {
//!     mode: AuthMode::Token,
//!     root_key,
//!     users: vec![AccountConfig {
//!         name: "alice".into(),
//!         password_hash: hash_password("s3cret")?.into(),
//!         grants: vec!["packs/:pull,push".parse()?],
//!     }],
//!     anonymous_pull: vec!["public/".parse()?],
//!     ..AuthConfig::default()
//! };
//! let auth = Authorizer::from_config(&config)?;
//!
//! // GET /token with Basic credentials: the intersection of the scopes and the grants.
//! let alice = auth.authenticate_basic("alice", "s3cret")?;
//! let scopes = Scope::parse_list("repository:packs/a:pull,push,delete")?;
//! let issued = auth.issue(&alice, &scopes)?; // pull,push (delete dropped)
//!
//! // A /v2 request with that token as Bearer.
//! let repo = RepoName::parse("packs/a")?;
//! let bearer = Credentials::Bearer(issued.token.clone());
//! let who = auth.authorize(Some(&bearer), &[Need::push(&repo)])?;
//! assert_eq!(who.name(), "alice");
//! let refused = auth.authorize(Some(&bearer), &[Need::delete(&repo)]).unwrap_err();
//! assert!(refused.is_forbidden()); // 403 DENIED
//!
//! // No credentials: 401 with a challenge naming what this request needs.
//! let refused = auth.authorize(None, &[Need::pull(&repo)]).unwrap_err();
//! assert!(!refused.is_forbidden());
//! assert_eq!(auth.challenge_scope(&[Need::pull(&repo)]), "repository:packs/a:pull");
//! # Ok(())
//! # }
//! ```

mod authorizer;
pub mod cli;
mod error;
pub mod grant;
mod password;
mod principal;
pub(crate) mod token;

pub use crate::config::AuthMode;
pub use authorizer::{Authorizer, Credentials, IssuedToken};
pub use error::{AuthError, SetupError};
pub use grant::{
    Action, Actions, Grant, GrantError, Need, RepoPattern, Scope, ScopeError, challenge_scope,
};
pub use password::{PasswordError, check_hash, hash_password, verify_password};
pub use principal::{ANONYMOUS, Principal, PrincipalKind, check_accounts};
pub use token::{Attenuation, Tokens, attenuate, generate_key};

#[cfg(test)]
mod tests;
