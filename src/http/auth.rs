//! Authentication and authorization at the HTTP edge, written once for every API:
//! the `Authorization` header turned into [`Credentials`], what each route needs
//! ([`Need`]s from its name, method, path and query), the middleware that asks the
//! [`Authorizer`] before a handler runs and records the caller ([`Caller`]), the
//! challenge of a refusal, and the Docker token endpoint (`/token`).
//!
//! What a refusal looks like is each API's business (`oci` and `packs` give
//! [`Refusal`] their envelope); which needs a route has, and who the caller is, is
//! decided here.

use std::future::{Ready, ready};
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{AUTHORIZATION, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use base64::Engine;
use secrecy::SecretString;
use serde::Serialize;

use super::{QueryPairs, State};
use crate::auth::{Action, AuthError, AuthMode, Authorizer, Credentials, Need, Principal, Scope};
use crate::names::RepoName;

/// The credentials a request carries: `Authorization: Basic …` or `Bearer …`.
/// Another scheme, or a malformed value, is [`AuthError::Malformed`].
pub fn credentials(req: &HttpRequest) -> Result<Option<Credentials>, AuthError> {
    let Some(value) = req.headers().get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| AuthError::Malformed)?.trim();
    let (scheme, rest) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Ok(Some(Credentials::Bearer(SecretString::from(
            rest.to_owned(),
        ))));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| AuthError::Malformed)?;
        let text = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
        let (username, password) = text.split_once(':').ok_or(AuthError::Malformed)?;
        return Ok(Some(Credentials::Basic {
            username: username.to_owned(),
            password: SecretString::from(password.to_owned()),
        }));
    }
    Err(AuthError::Malformed)
}

/// What one request must be allowed, with the names it borrows owned.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    repositories: Vec<(RepoName, Action)>,
    catalog: bool,
}

impl Needs {
    /// Nothing but valid credentials (`GET /v2/`).
    pub fn authenticated() -> Self {
        Needs::default()
    }

    /// `action` on `repo`.
    pub fn on(repo: RepoName, action: Action) -> Self {
        Needs {
            repositories: vec![(repo, action)],
            catalog: false,
        }
    }

    /// Also `action` on `repo`.
    pub fn and(mut self, repo: RepoName, action: Action) -> Self {
        self.repositories.push((repo, action));
        self
    }

    /// Nothing yet: a start for [`Needs::and`].
    pub fn none() -> Self {
        Needs::default()
    }

    /// The catalog.
    pub fn catalog() -> Self {
        Needs {
            repositories: Vec::new(),
            catalog: true,
        }
    }

    /// The [`Need`]s the authorizer checks.
    pub fn as_needs(&self) -> Vec<Need<'_>> {
        let mut needs: Vec<Need<'_>> = self
            .repositories
            .iter()
            .map(|(repo, action)| Need::repository(repo, *action))
            .collect();
        if self.catalog {
            needs.push(Need::Catalog);
        }
        needs
    }
}

/// Which kind of authorization a route asks for.
#[derive(Debug, Clone)]
pub enum Guard {
    /// These needs, checked before the handler runs.
    Needs(Needs),
    /// Only who the caller is (listings filter by it; a publish checks once it
    /// knows the pack): a malformed or refused credential is still a 401.
    Identify,
    /// Nothing (unknown routes, methods the route does not serve, invalid names: the
    /// handler answers those itself).
    Open,
}

/// A refused request: the error and the challenge scope of what it needed.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Why.
    pub error: AuthError,
    /// The `WWW-Authenticate` value: on a 401, and on a 403 as RFC 6750's
    /// `error="insufficient_scope"` (none on a 500).
    pub challenge: Option<String>,
}

impl Refusal {
    /// 403 for a known caller without the grant, 401 (with the challenge) otherwise,
    /// 500 for the registry's own failure.
    pub fn status(&self) -> actix_web::http::StatusCode {
        use actix_web::http::StatusCode as S;
        if self.error.is_forbidden() {
            S::FORBIDDEN
        } else if self.error.is_internal() {
            S::INTERNAL_SERVER_ERROR
        } else {
            S::UNAUTHORIZED
        }
    }

    /// Adds the challenge to a response built by the API's envelope.
    pub fn decorate(&self, mut response: HttpResponse) -> HttpResponse {
        if let Some(challenge) = self
            .challenge
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            response
                .headers_mut()
                .insert(actix_web::http::header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

/// The caller of a request, as the middleware established it (the open principal
/// in mode `none`). Handlers take it for audit events and listing filters.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequest for Caller {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Caller>()
                .cloned()
                .ok_or_else(|| actix_web::error::ErrorInternalServerError("no caller")),
        )
    }
}

/// The realm of challenges: `auth.realm`, else this registry's own `/token`, with
/// `https` when it serves TLS or a TLS proxy fronts it.
fn realm(state: &State, req: &HttpRequest) -> String {
    if let Some(realm) = state.auth.realm() {
        return realm.to_owned();
    }
    let https = is_https(state, req);
    let host = req
        .headers()
        .get(actix_web::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| state.config.server.listen.to_string(), str::to_owned);
    format!("{}://{host}/token", if https { "https" } else { "http" })
}

/// Whether the client reached this registry over HTTPS: it serves TLS, or a TLS
/// proxy fronts it (`server.behind_tls_proxy`) and did not say `X-Forwarded-Proto:
/// http`.
pub fn is_https(state: &State, req: &HttpRequest) -> bool {
    let forwarded = req
        .headers()
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    state.config.server.tls.is_some()
        || (state.config.server.behind_tls_proxy && forwarded.as_deref() != Some("http"))
}

/// The `WWW-Authenticate` challenge for `needs`.
pub fn challenge(state: &State, req: &HttpRequest, needs: &[Need<'_>]) -> String {
    let mut value = format!(
        "Bearer realm=\"{}\",service=\"{}\"",
        realm(state, req),
        state.auth.service()
    );
    let scope = state.auth.challenge_scope(needs);
    if !scope.is_empty() {
        value.push_str(&format!(",scope=\"{scope}\""));
    }
    value
}

/// The challenge of a refusal: what to authenticate for on a 401; on a 403, the
/// same with `error="insufficient_scope"` (RFC 6750 §3.1), so that a client holding a
/// token for fewer scopes (oras-py asks for `pull` first, then uses that token for
/// the push) fetches one for what this request needs instead of giving up. A caller
/// without the grant gets a token without it, and 403 again. None on a 500.
fn refusal_challenge(
    state: &State,
    req: &HttpRequest,
    error: &AuthError,
    needs: &[Need<'_>],
) -> Option<String> {
    if error.is_internal() {
        return None;
    }
    let mut value = challenge(state, req, needs);
    if error.is_forbidden() {
        value.push_str(",error=\"insufficient_scope\"");
    }
    Some(value)
}

/// Authorizes `needs` for `credentials`, off the async workers when it costs an
/// Argon2 verification (Basic credentials).
async fn authorize(
    auth: &Authorizer,
    credentials: Option<Credentials>,
    guard: &Guard,
) -> Result<Principal, AuthError> {
    let basic = matches!(credentials, Some(Credentials::Basic { .. }));
    let run = {
        let auth = auth.clone();
        let guard = guard.clone();
        move || match &guard {
            Guard::Needs(needs) => auth.authorize(credentials.as_ref(), &needs.as_needs()),
            Guard::Identify | Guard::Open => auth.identify(credentials.as_ref()),
        }
    };
    if basic {
        web::block(run)
            .await
            .unwrap_or_else(|e| Err(AuthError::Internal(e.to_string())))
    } else {
        run()
    }
}

/// The middleware behind every API's guard: computes the route's [`Guard`] with
/// `guard_of`, asks the authorizer, records the [`Caller`] and passes the request on;
/// a refusal is answered by `refuse` (the API's envelope) and counted.
pub async fn guard<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
    guard_of: impl FnOnce(&ServiceRequest) -> Guard,
    refuse: impl FnOnce(&Refusal) -> HttpResponse,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let state = req
        .app_data::<State>()
        .cloned()
        .expect("the application state is registered");
    if state.auth.mode() == AuthMode::None {
        req.extensions_mut().insert(Caller(
            state
                .auth
                .identify(None)
                .map_err(|e| actix_web::error::ErrorInternalServerError(e.to_string()))?,
        ));
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let guard = guard_of(&req);
    if matches!(guard, Guard::Open) {
        req.extensions_mut().insert(Caller(
            state
                .auth
                .identify(None)
                .map_err(|e| actix_web::error::ErrorInternalServerError(e.to_string()))?,
        ));
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let result = match credentials(req.request()) {
        Ok(credentials) => authorize(&state.auth, credentials, &guard).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(principal) => {
            req.extensions_mut().insert(Caller(principal));
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        Err(error) => {
            state.metrics.auth_failure(&error);
            let needs = match &guard {
                Guard::Needs(needs) => needs.clone(),
                _ => Needs::default(),
            };
            let challenge = refusal_challenge(&state, req.request(), &error, &needs.as_needs());
            if error.is_internal() {
                tracing::error!(error = %error, "authorization failed on the registry's side");
            }
            let refusal = Refusal { error, challenge };
            let response = refusal.decorate(refuse(&refusal));
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}

/// Checks `needs` for a caller already identified (a handler that learns what it
/// needs from the body, such as a publish): a refusal with its challenge, counted.
pub fn require(
    state: &State,
    req: &HttpRequest,
    caller: &Principal,
    needs: &Needs,
) -> Result<(), Refusal> {
    let needed = needs.as_needs();
    let result = if needed.is_empty() {
        if caller.is_anonymous() && state.auth.mode() == AuthMode::Token {
            Err(AuthError::Missing)
        } else {
            Ok(())
        }
    } else {
        state.auth.check(caller, &needed)
    };
    result.map_err(|error| {
        state.metrics.auth_failure(&error);
        let challenge = refusal_challenge(state, req, &error, &needed);
        Refusal { error, challenge }
    })
}

/// The `/token` endpoint (Docker token authentication and the OAuth2 form).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/token")
            .name("token")
            .route(web::get().to(token_get))
            .route(web::post().to(token_post)),
    );
}

/// The token answer, as Docker token servers give it (`token` and `access_token` are
/// the same token).
#[derive(Serialize)]
struct TokenAnswer {
    token: String,
    access_token: String,
    expires_in: u64,
    issued_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

/// Errors of `/token`: the OCI envelope's codes, as Distribution's token servers
/// answer.
#[derive(Debug)]
struct TokenError {
    status: actix_web::http::StatusCode,
    code: &'static str,
    message: String,
    challenge: Option<String>,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for TokenError {
    fn status_code(&self) -> actix_web::http::StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(c) = &self.challenge {
            response.insert_header((actix_web::http::header::WWW_AUTHENTICATE, c.as_str()));
        }
        response.json(serde_json::json!({
            "errors": [{ "code": self.code, "message": self.message }]
        }))
    }
}

impl TokenError {
    fn bad_request(message: impl Into<String>) -> Self {
        TokenError {
            status: actix_web::http::StatusCode::BAD_REQUEST,
            code: "UNSUPPORTED",
            message: message.into(),
            challenge: None,
        }
    }

    fn from_auth(state: &State, error: AuthError) -> Self {
        use actix_web::http::StatusCode as S;
        match error {
            AuthError::Disabled => TokenError {
                status: S::NOT_FOUND,
                code: "UNSUPPORTED",
                message: "tokens are not enabled on this registry (auth.mode = \"none\")".into(),
                challenge: None,
            },
            AuthError::Internal(detail) => {
                tracing::error!(error = %detail, "issuing a token failed");
                TokenError {
                    status: S::INTERNAL_SERVER_ERROR,
                    code: "UNKNOWN",
                    message: "internal server error".into(),
                    challenge: None,
                }
            }
            other => {
                state.metrics.auth_failure(&other);
                TokenError {
                    status: S::UNAUTHORIZED,
                    code: "UNAUTHORIZED",
                    message: other.to_string(),
                    challenge: Some(format!(
                        "Basic realm=\"{}\"",
                        state.auth.service().replace('"', "")
                    )),
                }
            }
        }
    }
}

fn scopes<'a>(values: impl Iterator<Item = &'a str>) -> Result<Vec<Scope>, TokenError> {
    let mut all = Vec::new();
    for v in values {
        all.extend(
            Scope::parse_list(v).map_err(|e| TokenError::bad_request(format!("scope: {e}")))?,
        );
    }
    Ok(all)
}

/// What a token answer says of refresh tokens.
enum Refresh {
    /// Nothing.
    None,
    /// A new one, for `access_type=offline`.
    Mint,
    /// The one the client refreshed with, given back.
    Echo(String),
}

async fn issue(
    state: &State,
    principal: Principal,
    scopes: Vec<Scope>,
    refresh: Refresh,
) -> Result<HttpResponse, TokenError> {
    let issued = state
        .auth
        .issue(&principal, &scopes)
        .map_err(|e| TokenError::from_auth(state, e))?;
    let refresh_token = match refresh {
        Refresh::None => None,
        Refresh::Echo(token) => Some(token),
        Refresh::Mint => {
            let ttl = Duration::from_secs(state.config.auth.refresh_token_ttl_secs);
            let refresh = state
                .auth
                .issue_for(&principal, &scopes, ttl)
                .map_err(|e| TokenError::from_auth(state, e))?;
            Some(secrecy::ExposeSecret::expose_secret(&refresh.token).to_owned())
        }
    };
    let token = secrecy::ExposeSecret::expose_secret(&issued.token).to_owned();
    tracing::info!(
        principal = principal.name(),
        scopes = scopes.len(),
        expires_in = issued.expires_in,
        "token issued"
    );
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(TokenAnswer {
            access_token: token.clone(),
            token,
            expires_in: issued.expires_in,
            issued_at: issued.issued_at_rfc3339(),
            refresh_token,
        }))
}

/// `GET /token?service=&scope=…`: Basic credentials, a bearer token, or none
/// (anonymous) → a token granting what was asked and may be had.
async fn token_get(state: State, req: HttpRequest) -> Result<HttpResponse, TokenError> {
    let query = QueryPairs::of(&req);
    let scopes = scopes(query.all("scope"))?;
    let credentials = credentials(&req).map_err(|e| TokenError::from_auth(&state, e))?;
    let principal = authorize(&state.auth, credentials, &Guard::Identify)
        .await
        .map_err(|e| TokenError::from_auth(&state, e))?;
    issue(&state, principal, scopes, Refresh::None).await
}

/// Largest `POST /token` form.
const TOKEN_FORM_LIMIT: usize = 64 * 1024;

/// `POST /token` with the OAuth2 form: `grant_type=password` (`username`,
/// `password`) or `grant_type=refresh_token` (`refresh_token`), `scope` (space
/// separated), `service`, `client_id`, and `access_type=offline` for a refresh token.
async fn token_post(state: State, body: web::Payload) -> Result<HttpResponse, TokenError> {
    let body = body
        .to_bytes_limited(TOKEN_FORM_LIMIT)
        .await
        .map_err(|_| TokenError::bad_request("the form is larger than 64 KiB"))?
        .map_err(|e| TokenError::bad_request(format!("form: {e}")))?;
    let form = QueryPairs::parse(&String::from_utf8_lossy(&body));
    let scopes = scopes(form.all("scope"))?;
    let credentials = match form.get("grant_type") {
        Some("password") => Credentials::Basic {
            username: form.get("username").unwrap_or_default().to_owned(),
            password: SecretString::from(form.get("password").unwrap_or_default().to_owned()),
        },
        Some("refresh_token") => Credentials::Bearer(SecretString::from(
            form.get("refresh_token").unwrap_or_default().to_owned(),
        )),
        other => {
            return Err(TokenError::bad_request(format!(
                "grant_type {:?} is not supported: use password or refresh_token",
                other.unwrap_or_default()
            )));
        }
    };
    let refresh = match (&credentials, form.get("access_type")) {
        // The refresh token goes back as it came: it is what the client keeps.
        (Credentials::Bearer(t), _) => {
            Refresh::Echo(secrecy::ExposeSecret::expose_secret(t).to_owned())
        }
        (_, Some("offline")) => Refresh::Mint,
        _ => Refresh::None,
    };
    let principal = authorize(&state.auth, Some(credentials), &Guard::Identify)
        .await
        .map_err(|e| TokenError::from_auth(&state, e))?;
    issue(&state, principal, scopes, refresh).await
}

/// The needs of a request on `/v2`, by route (the resource's name) and method.
pub fn oci_guard(req: &ServiceRequest, max_name: usize) -> Guard {
    let route = req.match_name().unwrap_or_default();
    if route == "v2_base" {
        return Guard::Needs(Needs::authenticated());
    }
    if route == "v2_catalog" {
        return Guard::Needs(Needs::catalog());
    }
    let Some(repo) = req
        .match_info()
        .get("name")
        .and_then(|n| RepoName::parse_with_limit(n, max_name).ok())
    else {
        return Guard::Open;
    };
    let method = req.method();
    let action = match (route, method) {
        ("v2_tags_list" | "v2_referrers", &Method::GET) => Action::Pull,
        ("v2_manifest" | "v2_blob", &Method::GET | &Method::HEAD) => Action::Pull,
        ("v2_manifest", &Method::PUT) => Action::Push,
        ("v2_manifest" | "v2_blob", &Method::DELETE) => Action::Delete,
        ("v2_upload_start", &Method::POST) => {
            // A mount also reads the source repository.
            let query = QueryPairs::parse(req.query_string());
            let mut needs = Needs::on(repo, Action::Push);
            if query.get("mount").is_some()
                && let Some(from) = query
                    .get("from")
                    .and_then(|f| RepoName::parse_with_limit(f, max_name).ok())
            {
                needs = needs.and(from, Action::Pull);
            }
            return Guard::Needs(needs);
        }
        ("v2_upload", &Method::GET | &Method::PATCH | &Method::PUT | &Method::DELETE) => {
            Action::Push
        }
        _ => return Guard::Open,
    };
    Guard::Needs(Needs::on(repo, action))
}

/// The needs of a request on `/packs`, by route and method. A listing and a publish
/// only identify the caller: the one filters by it, the other checks `push` once the
/// pack manifest names the repository.
pub fn packs_guard(req: &ServiceRequest, prefix: &str) -> Guard {
    let route = req.match_name().unwrap_or_default();
    match route {
        "packs_openapi" => return Guard::Open,
        "packs_get" | "packs_versions" | "packs_content" => {}
        _ => return Guard::Identify,
    }
    let Some(repo) = req
        .match_info()
        .get("id")
        .and_then(|id| RepoName::parse(&format!("{prefix}{id}")).ok())
    else {
        return Guard::Open;
    };
    let action = match (route, req.method()) {
        (_, &Method::GET | &Method::HEAD) => Action::Pull,
        ("packs_content", &Method::DELETE) => Action::Delete,
        _ => return Guard::Open,
    };
    Guard::Needs(Needs::on(repo, action))
}

/// Records a change (a push or a delete) as an audit event: who, what, where. Under
/// the `audit` target, so it can be routed on its own (`RUST_LOG=audit=info`).
pub fn audit(caller: &Caller, action: &str, repository: &str, reference: &str, digest: &str) {
    tracing::info!(
        target: "audit",
        principal = caller.0.name(),
        action,
        repository,
        reference,
        digest,
        "audit"
    );
}
