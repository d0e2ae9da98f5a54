//! The `/v2` wire format of the OCI distribution spec. Only this module knows OCI
//! headers, status codes and the error envelope; it parses each request into an
//! [`Endpoint`], calls one domain method, and writes the answer.
//!
//! Must not touch storage or metadata directly: everything goes through `registry`.

mod blobs;
pub mod error;
mod manifests;
pub(crate) mod params; // resolve_range is shared with packs/

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;

use crate::app::{AppState, RouteLabel};
use crate::names::RepoName;
use crate::registry::Error;
pub use error::{OciError, OciErrorCode};
use params::Query;

/// What a `/v2` path names, before any validation of its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(String),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(String, String),
    /// `/v2/<name>/blobs/<digest>`
    Blob(String, String),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(String),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(String, String),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(String, String),
}

impl Endpoint {
    /// Parses the part of the path after `/v2/`.
    pub fn parse(path: &str) -> Option<Endpoint> {
        if path.is_empty() {
            return Some(Endpoint::Base);
        }
        if path == "_catalog" {
            return Some(Endpoint::Catalog);
        }
        if let Some(name) = path.strip_suffix("/tags/list") {
            return Some(Endpoint::Tags(name.to_owned()));
        }
        if let Some(name) = path
            .strip_suffix("/blobs/uploads/")
            .or_else(|| path.strip_suffix("/blobs/uploads"))
        {
            return Some(Endpoint::UploadStart(name.to_owned()));
        }
        let (head, last) = path.rsplit_once('/')?;
        if last.is_empty() {
            return None;
        }
        let (name, kind) = head.rsplit_once('/')?;
        match kind {
            "manifests" => Some(Endpoint::Manifest(name.to_owned(), last.to_owned())),
            "blobs" => Some(Endpoint::Blob(name.to_owned(), last.to_owned())),
            "referrers" => Some(Endpoint::Referrers(name.to_owned(), last.to_owned())),
            "uploads" => {
                let name = name.strip_suffix("/blobs")?;
                Some(Endpoint::Upload(name.to_owned(), last.to_owned()))
            }
            _ => None,
        }
    }

    /// The methods this endpoint answers, for the `Allow` header of a 405.
    pub fn allowed_methods(&self) -> &'static str {
        match self {
            Endpoint::Base => "GET, HEAD",
            Endpoint::Catalog | Endpoint::Tags(_) | Endpoint::Referrers(..) => "GET",
            Endpoint::Manifest(..) => "GET, HEAD, PUT, DELETE",
            Endpoint::Blob(..) => "GET, HEAD, DELETE",
            Endpoint::UploadStart(_) => "POST",
            Endpoint::Upload(..) => "GET, PATCH, PUT, DELETE",
        }
    }

    /// A stable label for metrics.
    pub fn label(&self, method: &Method) -> &'static str {
        match (self, method.as_str()) {
            (Endpoint::Base, _) => "v2_base",
            (Endpoint::Catalog, _) => "v2_catalog",
            (Endpoint::Tags(_), _) => "v2_tags_list",
            (Endpoint::Manifest(..), "PUT") => "v2_manifest_put",
            (Endpoint::Manifest(..), "DELETE") => "v2_manifest_delete",
            (Endpoint::Manifest(..), _) => "v2_manifest_get",
            (Endpoint::Blob(..), "DELETE") => "v2_blob_delete",
            (Endpoint::Blob(..), _) => "v2_blob_get",
            (Endpoint::UploadStart(_), _) => "v2_upload_start",
            (Endpoint::Upload(..), "PATCH") => "v2_upload_patch",
            (Endpoint::Upload(..), "PUT") => "v2_upload_put",
            (Endpoint::Upload(..), _) => "v2_upload_other",
            (Endpoint::Referrers(..), _) => "v2_referrers",
        }
    }
}

/// Validates a repository name from the path.
pub(crate) fn repo(name: &str, max_len: usize) -> Result<RepoName, OciError> {
    RepoName::parse_with_limit(name, max_len).map_err(|e| Error::NameInvalid(e).into())
}

/// The `/v2` router.
pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v2", any(dispatch))
        .route("/v2/", any(dispatch))
        .route("/v2/{*path}", any(dispatch))
}

fn unsupported_method() -> OciError {
    OciError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        OciErrorCode::Unsupported,
        "the method is not supported on this endpoint",
    )
}

async fn dispatch(State(state): State<AppState>, request: Request<Body>) -> Response {
    let path = request.uri().path();
    let rest = path
        .strip_prefix("/v2/")
        .or_else(|| path.strip_prefix("/v2"))
        .unwrap_or_default()
        .to_owned();
    let endpoint = Endpoint::parse(&rest);
    let label = endpoint
        .as_ref()
        .map(|e| e.label(request.method()))
        .unwrap_or("v2_unknown");
    let allow = endpoint.as_ref().map(Endpoint::allowed_methods);
    let mut response = match endpoint {
        Some(endpoint) => route(state, endpoint, request)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        None => OciError::new(
            StatusCode::NOT_FOUND,
            OciErrorCode::NameUnknown,
            "unknown API endpoint",
        )
        .into_response(),
    };
    // RFC 9110: a 405 names the methods the resource does support.
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Some(allow) = allow
    {
        response
            .headers_mut()
            .insert(axum::http::header::ALLOW, HeaderValue::from_static(allow));
    }
    response.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    response.extensions_mut().insert(RouteLabel(label));
    response
}

async fn route(
    state: AppState,
    endpoint: Endpoint,
    request: Request<Body>,
) -> Result<Response, OciError> {
    let method = request.method().clone();
    let query = Query::parse(request.uri().query());
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let max_name = state.config.limits.max_name_length;
    match (endpoint, method) {
        (Endpoint::Base, Method::GET | Method::HEAD) => Ok((
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            "{}",
        )
            .into_response()),
        (Endpoint::Catalog, Method::GET) => manifests::catalog(&state, &query).await,
        (Endpoint::Tags(name), Method::GET) => {
            manifests::tags(&state, &repo(&name, max_name)?, &query).await
        }
        (Endpoint::Manifest(name, reference), m) => {
            let repo = repo(&name, max_name)?;
            match m {
                Method::GET => manifests::get(&state, &repo, &reference, headers, true).await,
                Method::HEAD => manifests::get(&state, &repo, &reference, headers, false).await,
                Method::PUT => {
                    manifests::put(&state, &repo, &reference, &query, headers, body).await
                }
                Method::DELETE => manifests::delete(&state, &repo, &reference).await,
                _ => Err(unsupported_method()),
            }
        }
        (Endpoint::Referrers(name, digest), Method::GET) => {
            manifests::referrers(&state, &repo(&name, max_name)?, &digest, &query).await
        }
        (Endpoint::Blob(name, digest), m) => {
            let repo = repo(&name, max_name)?;
            match m {
                Method::GET => blobs::get(&state, &repo, &digest, headers, true).await,
                Method::HEAD => blobs::get(&state, &repo, &digest, headers, false).await,
                Method::DELETE => blobs::delete(&state, &repo, &digest).await,
                _ => Err(unsupported_method()),
            }
        }
        (Endpoint::UploadStart(name), Method::POST) => {
            blobs::start(&state, &repo(&name, max_name)?, &query, headers, body).await
        }
        (Endpoint::Upload(name, id), m) => {
            let repo = repo(&name, max_name)?;
            match m {
                Method::GET => blobs::status(&state, &repo, &id).await,
                Method::PATCH => blobs::patch(&state, &repo, &id, headers, body).await,
                Method::PUT => blobs::finish(&state, &repo, &id, &query, headers, body).await,
                Method::DELETE => blobs::cancel(&state, &repo, &id).await,
                _ => Err(unsupported_method()),
            }
        }
        _ => Err(unsupported_method()),
    }
}

#[cfg(test)]
mod tests {
    use super::Endpoint::{self, *};

    #[test]
    fn parses_paths() {
        let s = |x: &str| x.to_owned();
        let cases: &[(&str, Option<Endpoint>)] = &[
            ("", Some(Base)),
            ("_catalog", Some(Catalog)),
            ("a/b/c/tags/list", Some(Tags(s("a/b/c")))),
            (
                "a/b/c/manifests/latest",
                Some(Manifest(s("a/b/c"), s("latest"))),
            ),
            ("a/blobs/sha256:00", Some(Blob(s("a"), s("sha256:00")))),
            ("a/b/blobs/uploads/", Some(UploadStart(s("a/b")))),
            ("a/b/blobs/uploads", Some(UploadStart(s("a/b")))),
            ("a/b/blobs/uploads/123", Some(Upload(s("a/b"), s("123")))),
            (
                "a/referrers/sha256:00",
                Some(Referrers(s("a"), s("sha256:00"))),
            ),
            (
                "blobs/uploads/x/blobs/uploads/",
                Some(UploadStart(s("blobs/uploads/x"))),
            ),
            (
                "manifests/manifests/manifests/x",
                Some(Manifest(s("manifests/manifests"), s("x"))),
            ),
            ("a/b", None),
            ("a/manifests/", None),
            ("a/uploads/x", None),
        ];
        for (path, want) in cases {
            assert_eq!(&Endpoint::parse(path), want, "{path}");
        }
    }
}
