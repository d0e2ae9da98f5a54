//! Why a request was not let through, and why the auth setup could not be built.

/// Why credentials or a token were refused. Every variant except [`AuthError::Denied`]
/// (and the server-side [`AuthError::Internal`] and [`AuthError::Disabled`]) means
/// "authenticate (again)": answer 401 with a challenge. `Denied` means the caller is
/// known and valid but not allowed: 403. See [`AuthError::is_forbidden`].
///
/// The messages are safe to show to clients: they never contain a secret, a token or
/// a user name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials, and anonymous access does not cover the request. (401)
    #[error("authentication required")]
    Missing,
    /// Unknown user, or wrong password. The two are not told apart. (401)
    #[error("invalid username or password")]
    BadCredentials,
    /// Not a biscuit token, or altered after signing (bad signature). (401)
    #[error("invalid token")]
    Malformed,
    /// A well-formed token whose root key id names no configured key. (401)
    #[error("token signed by an unknown key")]
    UnknownKey,
    /// The token is past its expiry (its own, or that of an attenuation). (401)
    #[error("token expired")]
    Expired,
    /// Evaluating the token's rules exceeded the configured run limits
    /// (`auth.limits`): a pathological token, or limits too tight. (401)
    #[error("token too complex to evaluate")]
    Limits,
    /// Valid credentials or token, but the request needs something not granted. (403)
    #[error("access denied")]
    Denied,
    /// Tokens are not enabled (`auth.mode = "none"`): nothing to issue. (404 or 400
    /// from `/token`.)
    #[error("tokens are not enabled on this registry")]
    Disabled,
    /// A failure of this registry, not of the caller (500). The text is for logs.
    #[error("internal authorization error: {0}")]
    Internal(String),
}

impl AuthError {
    /// Whether this is "known but not allowed" (403 `DENIED`) rather than "not
    /// authenticated" (401 `UNAUTHORIZED` with a `WWW-Authenticate` challenge).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, AuthError::Denied)
    }

    /// Whether this is a failure of the registry itself (500), not of the caller.
    pub fn is_internal(&self) -> bool {
        matches!(self, AuthError::Internal(_))
    }
}

/// The auth configuration could not be turned into an [`crate::auth::Authorizer`]
/// (unreadable key or users file, invalid key, bad password hash, …). Refuse to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("auth: {0}")]
pub struct SetupError(pub(crate) String);
