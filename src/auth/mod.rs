//! Authentication and authorization: principals, grants and biscuit tokens. No HTTP:
//! this module must not import actix or any HTTP type, nor the domain (`registry`),
//! storage or metadata.
//!
//! - [`grant`]: the vocabulary. Actions `pull`, `push`, `delete`, `*`; repository
//!   patterns (an exact name, a prefix ending in `/` that covers whole components
//!   only, or `*`); grants `<pattern>:<actions>` and `registry:catalog:*`; Docker
//!   scopes `repository:<name>:<actions>`; challenge scopes.

pub mod grant;

pub use grant::{
    Action, Actions, Grant, GrantError, Need, RepoPattern, Scope, ScopeError, challenge_scope,
};
