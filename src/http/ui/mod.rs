//! The web UI at `/ui/` (`ui.enabled`): server-rendered pages over the same domain
//! calls as `/packs`, for people choosing or checking packs.
//!
//! - Pages read the packs index and the manifest index, never storage (the download
//!   streams the content as `/packs` does). A pack page costs a fixed number of
//!   queries: its versions, the packs that use it (`pack_edges`), and its
//!   manifest's referrers.
//! - With `auth.mode = "token"`, signing in mints a token carrying the account's
//!   grants, kept in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` over HTTPS);
//!   pages show only what that token may pull. The one write, deleting a version,
//!   needs the delete grant and a CSRF token derived from the session cookie (or,
//!   without a session, from a random cookie of its own), which a page of another
//!   origin can neither read nor compute.
//! - Errors are HTML pages with the right status.

mod pages;

use std::time::Duration;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use maud::Markup;
use secrecy::SecretString;
use sha2::Digest as _;

use crate::auth::{Action, AuthMode, Credentials, Need, Principal};
use crate::http::State;
use crate::http::packs::{ApiError, visible_packs};
use crate::metadata::{PackFilter, PackVersionRecord};
use crate::names::RepoName;
use crate::registry::PackType;

/// The session cookie: a token for the signed-in account.
const SESSION_COOKIE: &str = "packs_session";
/// A random secret for the CSRF tokens of a browser without a session.
const CSRF_COOKIE: &str = "packs_csrf";
/// Packs on one page of the list.
const PAGE: usize = 50;
/// Tags shown on a repository page.
const TAGS: u32 = 200;
/// Packs listed under "Used by".
const USED_BY: u32 = 100;
/// Repositories on the status page's storage table.
const TOP_REPOSITORIES: u32 = 10;

/// Registers `/ui/…` and the redirect of `/` when `ui.enabled`.
pub fn routes(cfg: &mut web::ServiceConfig, enabled: bool) {
    if !enabled {
        return;
    }
    cfg.service(
        web::resource("/")
            .name("ui_root")
            .get(|| async { redirect("/ui/") }),
    )
    .service(
        web::scope("/ui")
            .wrap(actix_web::middleware::from_fn(|req, next| {
                crate::http::recover_panics(req, next, || {
                    actix_web::error::ErrorInternalServerError("internal server error")
                })
            }))
            .service(web::resource("/").name("ui_packs").get(list))
            .service(web::resource("/status").name("ui_status").get(status))
            .service(
                web::resource("/login")
                    .name("ui_login")
                    .get(login_form)
                    .post(login),
            )
            .service(web::resource("/logout").name("ui_logout").post(logout))
            .service(
                web::resource("/assets/style.css")
                    .name("ui_style")
                    .get(|| async { asset("text/css; charset=utf-8", pages::STYLE) }),
            )
            .service(
                web::resource("/assets/ui.js")
                    .name("ui_script")
                    .get(|| async { asset("text/javascript; charset=utf-8", pages::SCRIPT) }),
            )
            .service(
                web::resource("/packs/{id}")
                    .name("ui_pack")
                    .get(pack_latest),
            )
            .service(
                web::resource("/packs/{id}/{version}")
                    .name("ui_pack_version")
                    .get(pack_version),
            )
            .service(
                web::resource("/packs/{id}/{version}/download")
                    .name("ui_download")
                    .get(download),
            )
            .service(
                web::resource("/packs/{id}/{version}/delete")
                    .name("ui_delete")
                    .get(confirm_delete)
                    .post(delete),
            )
            .service(
                web::resource("/repos/{name:.+}")
                    .name("ui_repo")
                    .get(repository),
            )
            .default_service(web::to(|req: HttpRequest, state: State| async move {
                Err::<HttpResponse, _>(UiError::not_found(&state, &req, "There is no such page."))
            })),
    );
}

// ---------------------------------------------------------------------------------
// Sessions

/// Who is looking: the principal pages are filtered for, and the secret its CSRF
/// tokens derive from.
struct Session {
    principal: Principal,
    /// The signed-in account, when there is one.
    user: Option<String>,
    /// The session token, or the browser's CSRF cookie.
    secret: Option<String>,
    auth_on: bool,
}

impl Session {
    fn of(state: &State, req: &HttpRequest) -> Session {
        let auth_on = state.auth.mode() == AuthMode::Token;
        let csrf_cookie = || req.cookie(CSRF_COOKIE).map(|c| c.value().to_owned());
        if !auth_on {
            return Session {
                principal: Principal::open(),
                user: None,
                secret: csrf_cookie(),
                auth_on,
            };
        }
        if let Some(cookie) = req.cookie(SESSION_COOKIE) {
            let token = cookie.value().to_owned();
            let credentials = Credentials::Bearer(SecretString::from(token.clone()));
            // An expired or forged session is no session: the visitor is anonymous.
            if let Ok(principal) = state.auth.identify(Some(&credentials))
                && !principal.is_anonymous()
            {
                return Session {
                    user: Some(principal.name().to_owned()),
                    principal,
                    secret: Some(token),
                    auth_on,
                };
            }
        }
        Session {
            principal: Principal::anonymous(),
            user: None,
            secret: csrf_cookie(),
            auth_on,
        }
    }

    /// The CSRF token of this session's forms ("" when it has no secret yet).
    fn csrf(&self) -> String {
        self.secret.as_deref().map(csrf_token).unwrap_or_default()
    }

    /// Whether `given` is this session's CSRF token.
    fn csrf_ok(&self, given: &str) -> bool {
        let Some(secret) = &self.secret else {
            return false;
        };
        let expected = csrf_token(secret);
        // Compared in constant time: the token is a secret.
        expected.len() == given.len()
            && expected
                .bytes()
                .zip(given.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    fn can_pull(&self, state: &State, repository: &str) -> bool {
        state.auth.can_pull(&self.principal, repository)
    }

    fn can_delete(&self, state: &State, repository: &RepoName) -> bool {
        state
            .auth
            .check(
                &self.principal,
                &[Need::repository(repository, Action::Delete)],
            )
            .is_ok()
    }

    fn page(&self, title: &str, body: Markup) -> HttpResponse {
        let csrf = self.csrf();
        let chrome = pages::Chrome {
            title,
            auth_on: self.auth_on,
            user: self.user.as_deref(),
            csrf: &csrf,
        };
        html(StatusCode::OK, pages::layout(&chrome, body))
    }
}

/// `hex(SHA-256(label ‖ secret))`: knowing it requires the secret, which only the
/// browser's `HttpOnly` cookies hold.
fn csrf_token(secret: &str) -> String {
    let mut hash = sha2::Sha256::new();
    hash.update(b"packs-registry ui csrf\0");
    hash.update(secret.as_bytes());
    hex::encode(hash.finalize())
}

/// A cookie of the UI: `HttpOnly`, `SameSite=Strict`, path `/`, `Secure` over HTTPS.
fn cookie<'c>(state: &State, req: &HttpRequest, name: &'c str, value: String) -> Cookie<'c> {
    Cookie::build(name, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(crate::http::auth::is_https(state, req))
        .finish()
}

// ---------------------------------------------------------------------------------
// Answers

fn html(status: StatusCode, markup: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((CACHE_CONTROL, "no-store"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ))
        .body(markup.into_string())
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, content_type))
        .insert_header((CACHE_CONTROL, "public, max-age=3600"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(body)
}

/// A 303 to `to` (after a form, the browser then GETs it).
fn redirect(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((LOCATION, to))
        .finish()
}

/// An error page.
#[derive(Debug)]
pub struct UiError {
    status: StatusCode,
    message: String,
    page: String,
}

impl UiError {
    fn new(state: &State, req: &HttpRequest, status: StatusCode, message: &str) -> UiError {
        let session = Session::of(state, req);
        let csrf = session.csrf();
        let reason = status.canonical_reason().unwrap_or("Error");
        let chrome = pages::Chrome {
            title: reason,
            auth_on: session.auth_on,
            user: session.user.as_deref(),
            csrf: &csrf,
        };
        let mut message = message.to_owned();
        if status == StatusCode::NOT_FOUND && session.auth_on && session.user.is_none() {
            message.push_str(" Signing in may show more.");
        }
        let page = pages::layout(&chrome, pages::error(status.as_u16(), reason, &message));
        UiError {
            status,
            message,
            page: page.into_string(),
        }
    }

    fn not_found(state: &State, req: &HttpRequest, message: &str) -> UiError {
        UiError::new(state, req, StatusCode::NOT_FOUND, message)
    }

    /// A domain error, as `/packs` would classify it (its message and status; a
    /// failure of the registry itself is logged there and shown without detail).
    fn domain(state: &State, req: &HttpRequest, error: crate::registry::Error) -> UiError {
        use crate::registry::Error;
        match error {
            Error::NameUnknown | Error::ManifestUnknown => {
                UiError::not_found(state, req, &error.to_string())
            }
            other => {
                let api = ApiError::from(other);
                UiError::new(state, req, api.status(), api.message())
            }
        }
    }
}

impl std::fmt::Display for UiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ResponseError for UiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        html(self.status, maud::PreEscaped(self.page.clone()))
    }
}

type Page = Result<HttpResponse, UiError>;

// ---------------------------------------------------------------------------------
// Pages

/// The pack list: search, type filter and pages.
async fn list(state: State, req: HttpRequest) -> Page {
    let session = Session::of(&state, &req);
    let query = crate::http::QueryPairs::of(&req);
    let q = query.get("q").unwrap_or_default().trim();
    let pack_type = query
        .get("type")
        .filter(|t| !t.is_empty())
        .and_then(PackType::parse)
        .map(PackType::as_str);
    let cursor = query.get("cursor").filter(|c| !c.is_empty());
    let mut problem = None;
    let filter = PackFilter {
        pack_type: pack_type.map(str::to_owned),
        q: if q.chars().count() >= 3 {
            Some(q.to_owned())
        } else {
            if !q.is_empty() {
                problem = Some("Search text needs at least 3 characters.");
            }
            None
        },
        ..PackFilter::default()
    };
    let (packs, next) = visible_packs(
        &state,
        &session.principal,
        &filter,
        cursor.map(str::to_owned),
        PAGE,
    )
    .await
    .map_err(|e| UiError::domain(&state, &req, e))?;
    let list_query = pages::ListQuery {
        q,
        pack_type,
        cursor,
    };
    Ok(session.page(
        "Packs",
        pages::pack_list(&list_query, &packs, next.as_deref(), problem),
    ))
}

/// A pack's latest version.
async fn pack_latest(state: State, req: HttpRequest, id: web::Path<String>) -> Page {
    pack_page(state, req, &id, None).await
}

/// One version of a pack.
async fn pack_version(state: State, req: HttpRequest, path: web::Path<(String, String)>) -> Page {
    let (id, version) = path.into_inner();
    pack_page(state, req, &id, Some(&version)).await
}

/// The versions of a pack the session may pull (404 otherwise, as for a pack that
/// does not exist: names are not disclosed).
async fn readable_versions(
    state: &State,
    req: &HttpRequest,
    session: &Session,
    id: &str,
) -> Result<Vec<PackVersionRecord>, UiError> {
    let repository = format!("{}{id}", state.registry.pack_settings().prefix);
    let unknown = || UiError::not_found(state, req, &format!("There is no pack {id}."));
    if !session.can_pull(state, &repository) {
        return Err(unknown());
    }
    match state.registry.pack_versions(id).await {
        Ok(v) => Ok(v),
        Err(crate::registry::Error::PackUnknown(_)) => Err(unknown()),
        Err(e) => Err(UiError::domain(state, req, e)),
    }
}

/// The one exact version `spec` names (`_` for `+`) among `versions`.
fn find_version<'v>(
    versions: &'v [PackVersionRecord],
    spec: &str,
) -> Option<&'v PackVersionRecord> {
    let wanted = crate::registry::packs::parse_version(&spec.replace('_', "+"))?;
    versions
        .iter()
        .find(|v| crate::registry::packs::parse_version(&v.version).as_ref() == Some(&wanted))
}

async fn pack_page(state: State, req: HttpRequest, id: &str, version: Option<&str>) -> Page {
    let session = Session::of(&state, &req);
    let versions = readable_versions(&state, &req, &session, id).await?;
    // The latest: the highest release, or the highest prerelease when there is none
    // (versions come highest first), as `/packs/{id}` answers.
    let latest = versions
        .iter()
        .find(|v| !v.prerelease)
        .or(versions.first())
        .expect("a known pack has a version");
    let shown = match version {
        None => latest,
        Some(spec) => find_version(&versions, spec).ok_or_else(|| {
            UiError::not_found(&state, &req, &format!("{id} has no version {spec}."))
        })?,
    };
    let referrers = state
        .registry
        .referrers(&shown.repository, &shown.manifest_digest, None, None)
        .await
        .map_err(|e| UiError::domain(&state, &req, e))?
        .items;
    let prefix = &state.registry.pack_settings().prefix;
    let used_by: Vec<String> = state
        .registry
        .pack_used_by(id, USED_BY)
        .await
        .map_err(|e| UiError::domain(&state, &req, e))?
        .into_iter()
        .filter(|user| session.can_pull(&state, &format!("{prefix}{user}")))
        .collect();
    let can_delete = session.can_delete(&state, &shown.repository);
    let page = pages::PackPage {
        shown,
        latest: &latest.version,
        versions: &versions,
        dependencies: edges(&shown.dependencies),
        members: edges(&shown.members),
        used_by: &used_by,
        metadata: metadata(&shown.metadata),
        referrers: &referrers,
        commands: commands(&state, &req, shown, session.auth_on),
        can_delete,
    };
    Ok(session.page(
        &format!("{} {}", shown.pack_id, shown.version),
        pages::pack(&page),
    ))
}

/// Dependencies or members from their JSON text (`[{"packId", "version"}]`).
fn edges(json: &str) -> Vec<pages::Edge> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Raw {
        pack_id: String,
        #[serde(default)]
        version: String,
    }
    serde_json::from_str::<Vec<Raw>>(json)
        .unwrap_or_default()
        .into_iter()
        .map(|r| pages::Edge {
            pack_id: r.pack_id,
            version: r.version,
        })
        .collect()
}

/// A pack's `metadata` object as key/value text (strings bare, the rest as JSON).
fn metadata(json: &str) -> Vec<(String, String)> {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| {
                let text = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, text)
            })
            .collect(),
        _ => vec![],
    }
}

/// The copy-ready commands for a version, addressed as the browser reached us.
fn commands(
    state: &State,
    req: &HttpRequest,
    v: &PackVersionRecord,
    auth_on: bool,
) -> Vec<pages::Command> {
    let info = req.connection_info();
    let host = info.host().to_owned();
    let scheme = if crate::http::auth::is_https(state, req) {
        "https"
    } else {
        "http"
    };
    let reference = format!("{host}/{}:{}", v.repository, v.tag);
    let plain = if scheme == "http" {
        " --plain-http"
    } else {
        ""
    };
    let bearer = if auth_on {
        " -H \"Authorization: Bearer $PACKS_TOKEN\""
    } else {
        ""
    };
    let token = if auth_on {
        " --token \"$PACKS_TOKEN\""
    } else {
        ""
    };
    let url_version = v.version.replace('+', "_");
    vec![
        pages::Command {
            label: "oras",
            text: format!("oras pull{plain} {reference}"),
        },
        pages::Command {
            label: "curl",
            text: format!(
                "curl -fL{bearer} -o {}-{} {scheme}://{host}/packs/{}/{url_version}",
                v.pack_id, v.version, v.pack_id
            ),
        },
        pages::Command {
            label: "TaskRunner (examples/taskrunner-pull)",
            text: format!(
                "taskrunner-pull --registry {scheme}://{host}{token} {}@{}",
                v.pack_id, v.version
            ),
        },
        pages::Command {
            label: "OCI reference",
            text: reference,
        },
    ]
}

/// The content of a version, streamed as `/packs/{id}/{version}` serves it.
async fn download(state: State, req: HttpRequest, path: web::Path<(String, String)>) -> Page {
    let (id, version) = path.into_inner();
    let session = Session::of(&state, &req);
    let versions = readable_versions(&state, &req, &session, &id).await?;
    let exact = find_version(&versions, &version).ok_or_else(|| {
        UiError::not_found(&state, &req, &format!("{id} has no version {version}."))
    })?;
    let (record, read) = state
        .registry
        .read_pack_content(&id, &exact.version, |_| Some(None))
        .await
        .map_err(|e| UiError::domain(&state, &req, e))?;
    let body = read.body.ok_or_else(|| {
        UiError::new(
            &state,
            &req,
            StatusCode::INTERNAL_SERVER_ERROR,
            "no content",
        )
    })?;
    Ok(crate::http::packs::content_headers(&record)
        .body(crate::http::body::response(read.size, body)))
}

/// A repository: its tags, and the manifest `?ref=` names (a tag or a digest).
async fn repository(state: State, req: HttpRequest, name: web::Path<String>) -> Page {
    let session = Session::of(&state, &req);
    let unknown = || UiError::not_found(&state, &req, &format!("There is no repository {name}."));
    let repo = RepoName::parse(&name).map_err(|_| unknown())?;
    if !session.can_pull(&state, repo.as_str()) {
        return Err(unknown());
    }
    let tags = state
        .registry
        .list_tags(&repo, None, Some(TAGS))
        .await
        .map_err(|e| UiError::domain(&state, &req, e))?;
    let query = crate::http::QueryPairs::of(&req);
    let mut manifest = None;
    if let Some(reference) = query.get("ref").filter(|r| !r.is_empty()) {
        let parsed = crate::names::Reference::parse(reference).map_err(|_| {
            UiError::not_found(
                &state,
                &req,
                &format!("{reference} is neither a tag nor a digest."),
            )
        })?;
        let record = state
            .registry
            .get_manifest(&repo, &parsed, &[])
            .await
            .map_err(|e| UiError::domain(&state, &req, e))?;
        let referrers = state
            .registry
            .referrers(&repo, &record.digest, None, None)
            .await
            .map_err(|e| UiError::domain(&state, &req, e))?
            .items;
        manifest = Some((reference.to_owned(), record, referrers));
    }
    let body = match &manifest {
        Some((reference, record, referrers)) => pages::repository(
            repo.as_str(),
            &tags.items,
            tags.more,
            Some((
                reference,
                &record.media_type,
                &pages::pretty_json(&record.body),
            )),
            Some(referrers),
        ),
        None => pages::repository(repo.as_str(), &tags.items, tags.more, None, None),
    };
    Ok(session.page(repo.as_str(), body))
}

/// Health, readiness and storage figures (repositories the session may not pull are
/// left out of the table).
async fn status(state: State, req: HttpRequest) -> Page {
    let session = Session::of(&state, &req);
    let ready = state.registry.readiness().await;
    let ready: Vec<(&str, Option<String>)> = ready.into_iter().map(|d| (d.name, d.error)).collect();
    let database_up = ready.iter().all(|(_, e)| e.is_none());
    let (usage, gc) = if database_up {
        let usage = state.registry.storage_usage(TOP_REPOSITORIES).await.ok();
        let gc = state.registry.gc_totals().await.ok();
        (usage, gc)
    } else {
        (None, None)
    };
    let usage = usage.map(|mut u| {
        u.repositories.retain(|r| session.can_pull(&state, &r.repo));
        u
    });
    let mut page = session.page("Status", pages::status(&ready, usage.as_ref(), gc.as_ref()));
    if !database_up {
        *page.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    Ok(page)
}

// ---------------------------------------------------------------------------------
// Signing in and out

#[derive(serde::Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

async fn login_form(state: State, req: HttpRequest) -> Page {
    let session = Session::of(&state, &req);
    if !session.auth_on {
        return Ok(redirect("/ui/"));
    }
    Ok(session.page("Sign in", pages::login(None, "")))
}

async fn login(state: State, req: HttpRequest, form: web::Form<LoginForm>) -> Page {
    let session = Session::of(&state, &req);
    if !session.auth_on {
        return Ok(redirect("/ui/"));
    }
    let LoginForm { username, password } = form.into_inner();
    let auth = state.auth.clone();
    let name = username.clone();
    // An Argon2 verification: off the async workers.
    let principal = web::block(move || auth.authenticate_basic(&name, &password))
        .await
        .map_err(|_| {
            UiError::new(
                &state,
                &req,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
            )
        })?;
    let ttl = Duration::from_secs(state.config.ui.session_ttl_secs.max(60));
    let issued = principal.and_then(|p| state.auth.issue_session(&p, ttl));
    match issued {
        Ok(issued) => {
            tracing::info!(principal = %username, "web UI sign-in");
            let token = secrecy::ExposeSecret::expose_secret(&issued.token).to_owned();
            let mut session_cookie = cookie(&state, &req, SESSION_COOKIE, token);
            session_cookie.set_max_age(actix_web::cookie::time::Duration::seconds(
                ttl.as_secs() as i64
            ));
            Ok(HttpResponse::SeeOther()
                .insert_header((LOCATION, "/ui/"))
                .cookie(session_cookie)
                .finish())
        }
        Err(error) => {
            state.metrics.auth_failure(&error);
            let mut page = session.page(
                "Sign in",
                pages::login(Some("Wrong username or password."), &username),
            );
            *page.status_mut() = StatusCode::UNAUTHORIZED;
            Ok(page)
        }
    }
}

#[derive(serde::Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(state: State, req: HttpRequest, form: web::Form<CsrfForm>) -> Page {
    let session = Session::of(&state, &req);
    if session.user.is_some() && !session.csrf_ok(&form.csrf) {
        return Err(UiError::new(
            &state,
            &req,
            StatusCode::FORBIDDEN,
            "The form is stale or came from another site: reload the page and try again.",
        ));
    }
    let mut gone = cookie(&state, &req, SESSION_COOKIE, String::new());
    gone.make_removal();
    Ok(HttpResponse::SeeOther()
        .insert_header((LOCATION, "/ui/"))
        .cookie(gone)
        .finish())
}

// ---------------------------------------------------------------------------------
// Deleting a version

/// The version `id`/`version` names, if the session may delete it.
async fn deletable(
    state: &State,
    req: &HttpRequest,
    session: &Session,
    id: &str,
    version: &str,
) -> Result<PackVersionRecord, UiError> {
    let versions = readable_versions(state, req, session, id).await?;
    let exact = find_version(&versions, version)
        .ok_or_else(|| UiError::not_found(state, req, &format!("{id} has no version {version}.")))?
        .clone();
    if !session.can_delete(state, &exact.repository) {
        let message = if session.user.is_none() && session.auth_on {
            "Deleting needs the delete grant: sign in first."
        } else {
            "You may not delete versions of this pack."
        };
        return Err(UiError::new(state, req, StatusCode::FORBIDDEN, message));
    }
    Ok(exact)
}

async fn confirm_delete(state: State, req: HttpRequest, path: web::Path<(String, String)>) -> Page {
    let (id, version) = path.into_inner();
    let mut session = Session::of(&state, &req);
    let exact = deletable(&state, &req, &session, &id, &version).await?;
    // A browser without a session gets a random secret for its CSRF token.
    let new_secret = session.secret.is_none().then(|| {
        let secret = uuid::Uuid::new_v4().simple().to_string();
        session.secret = Some(secret.clone());
        secret
    });
    let mut page = session.page(
        "Delete a version",
        pages::confirm_delete(&exact, &session.csrf()),
    );
    if let Some(secret) = new_secret {
        page.add_cookie(&cookie(&state, &req, CSRF_COOKIE, secret))
            .map_err(|_| UiError::new(&state, &req, StatusCode::INTERNAL_SERVER_ERROR, "cookie"))?;
    }
    Ok(page)
}

async fn delete(
    state: State,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> Page {
    let (id, version) = path.into_inner();
    let session = Session::of(&state, &req);
    let exact = deletable(&state, &req, &session, &id, &version).await?;
    if !session.csrf_ok(&form.csrf) {
        return Err(UiError::new(
            &state,
            &req,
            StatusCode::FORBIDDEN,
            "The form is stale or came from another site: nothing was deleted. Reload the \
             page and try again.",
        ));
    }
    let deleted = state
        .registry
        .delete_pack_version(&id, &exact.version)
        .await
        .map_err(|e| UiError::domain(&state, &req, e))?;
    if deleted {
        crate::http::auth::audit(
            &crate::http::auth::Caller(session.principal.clone()),
            "delete pack version (web UI)",
            exact.repository.as_str(),
            &exact.version,
            exact.manifest_digest.as_str(),
        );
    }
    // The pack page, or the list when that was its last version.
    let remaining = versions_left(&state, &id).await;
    Ok(redirect(&if remaining {
        pages::pack_href(&id, None)
    } else {
        "/ui/".to_owned()
    }))
}

async fn versions_left(state: &State, id: &str) -> bool {
    state.registry.pack_versions(id).await.is_ok()
}
