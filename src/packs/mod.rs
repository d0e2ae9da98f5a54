//! The `/packs` facade (DESIGN §7): the REST view of packs for TaskRunner, CI jobs and
//! people without an OCI client. Only this module knows the facade's JSON and its error
//! form; every handler parses its input, makes one domain call on
//! [`Registry`](crate::registry::Registry), and writes the answer. Listings read the
//! packs index, never storage. The OpenAPI document at `/packs/openapi.json` is
//! generated from the handlers and types here.
//!
//! Must not touch storage or metadata directly, nor know the OCI wire format.

mod error;
mod types;

use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{StreamExt, TryStreamExt};
use utoipa::OpenApi;

use crate::app::{AppState, RouteLabel};
use crate::metadata::PackFilter;
use crate::registry::PackType;
use crate::registry::packs::PackContent;
use crate::storage::ByteStream;
pub use error::{ApiError, ErrorBody, ErrorCode, ErrorEnvelope};
use types::*;

/// Largest `manifest` part of a publish.
const MAX_MANIFEST_PART: u64 = 1024 * 1024;

/// The `/packs` router.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/packs", get(list).post(publish))
        .route("/packs/openapi.json", get(openapi))
        .route("/packs/{id}", get(get_pack))
        .route("/packs/{id}/versions", get(versions))
        .route("/packs/{id}/{version}", get(content).delete(delete))
}

/// Attaches the metrics route label to an answer.
fn respond(label: &'static str, result: Result<Response, ApiError>) -> Response {
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(RouteLabel(label));
    response
}

fn header(value: impl AsRef<str>) -> HeaderValue {
    HeaderValue::from_str(value.as_ref()).expect("header values we build are ASCII")
}

/// Path segments, with a JSON error instead of axum's text one.
struct Segments(Vec<String>);

impl<S: Send + Sync> FromRequestParts<S> for Segments {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<Vec<String>>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| Segments(v))
            .map_err(|e| ApiError::bad_request(format!("path: {e}")))
    }
}

impl Segments {
    fn get(&self, i: usize) -> &str {
        self.0.get(i).map(String::as_str).unwrap_or_default()
    }
}

/// The query parameters of a listing.
fn query_params(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

#[utoipa::path(
    get,
    path = "/packs",
    tag = "packs",
    summary = "List packs",
    description = "Packs ordered by id, one page at a time, optionally filtered. Reads the \
                   packs index (keyset pagination), never storage.",
    params(
        ("type" = Option<PackTypeDoc>, Query, description = "Only packs of this type"),
        ("author" = Option<String>, Query, description = "Only packs by this author (exact)"),
        ("q" = Option<String>, Query, min_length = 3, description = "Case-insensitive text that must occur in the id, name or description (at least 3 characters)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)"),
        ("cursor" = Option<String>, Query, description = "The `next` of the previous page"),
    ),
    responses(
        (status = 200, description = "One page", body = PackList),
        (status = 400, description = "A malformed parameter", body = ErrorEnvelope),
    )
)]
async fn list(State(state): State<AppState>, uri: Uri) -> Response {
    respond("packs_list", list_inner(&state, &uri).await)
}

async fn list_inner(state: &AppState, uri: &Uri) -> Result<Response, ApiError> {
    let mut filter = PackFilter::default();
    let mut cursor = None;
    let mut limit = None;
    let max = state.registry.pack_settings().max_page;
    for (key, value) in query_params(uri) {
        match key.as_str() {
            "type" => {
                let t = PackType::parse(&value).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "type {value:?} must be one of policy, analyzer, task, bundle"
                    ))
                })?;
                filter.pack_type = Some(t.as_str().to_owned());
            }
            "author" => filter.author = Some(value),
            "q" => filter.q = Some(value),
            "limit" => {
                let n = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "limit {value:?} must be an integer from 1 to {max}"
                        ))
                    })?;
                limit = Some(n);
            }
            "cursor" => cursor = Some(value),
            _ => {}
        }
    }
    let page = state
        .registry
        .list_packs(&filter, cursor.as_deref(), limit)
        .await?;
    let next = if page.more {
        page.items.last().map(|p| p.pack_id.clone())
    } else {
        None
    };
    Ok(axum::Json(PackList {
        packs: page.items.into_iter().map(PackSummary::from).collect(),
        next,
    })
    .into_response())
}

#[utoipa::path(
    get,
    path = "/packs/{id}",
    tag = "packs",
    summary = "The latest version of a pack",
    description = "The highest version by semver precedence; a prerelease only when the pack \
                   has no release.",
    params(("id" = String, Path, description = "The pack's id", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")),
    responses(
        (status = 200, description = "The pack", body = PackResponse),
        (status = 404, description = "No such pack", body = ErrorEnvelope),
        (status = 400, description = "A malformed path", body = ErrorEnvelope),
    )
)]
async fn get_pack(State(state): State<AppState>, path: Result<Segments, ApiError>) -> Response {
    respond(
        "packs_get",
        async {
            let path = path?;
            let (_, latest) = state.registry.get_pack(path.get(0)).await?;
            Ok(axum::Json(PackResponse {
                pack: Pack::from(latest),
            })
            .into_response())
        }
        .await,
    )
}

#[utoipa::path(
    get,
    path = "/packs/{id}/versions",
    tag = "packs",
    summary = "Every version of a pack",
    description = "Highest semver precedence first (1.10.0 before 1.9.0, 2.0.0 before \
                   2.0.0-rc.1).",
    params(("id" = String, Path, description = "The pack's id", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")),
    responses(
        (status = 200, description = "The versions", body = VersionList),
        (status = 404, description = "No such pack", body = ErrorEnvelope),
        (status = 400, description = "A malformed path", body = ErrorEnvelope),
    )
)]
async fn versions(State(state): State<AppState>, path: Result<Segments, ApiError>) -> Response {
    respond(
        "packs_versions",
        async {
            let path = path?;
            let versions = state.registry.pack_versions(path.get(0)).await?;
            Ok(axum::Json(VersionList {
                versions: versions.into_iter().map(Version::from).collect(),
            })
            .into_response())
        }
        .await,
    )
}

/// `Digest` (RFC 3230) of a `sha256:`/`sha512:` digest: `sha-256=<base64>`.
fn digest_header(digest: &crate::digest::Digest) -> Option<String> {
    let raw = hex::decode(digest.hex()).ok()?;
    let name = match digest.algorithm() {
        crate::digest::Algorithm::Sha256 => "sha-256",
        crate::digest::Algorithm::Sha512 => "sha-512",
    };
    Some(format!("{name}={}", base64(&raw)))
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[utoipa::path(
    get,
    path = "/packs/{id}/{version}",
    tag = "packs",
    summary = "Download a pack's content",
    description = "The content bytes, streamed, with `Digest`, `ETag` and `Range` support. \
                   `version` is an exact version (`_` may stand for `+`) or a semver \
                   requirement (`^2`, `~2.1`, `>=1, <3`) resolved to the newest match.",
    params(
        ("id" = String, Path, description = "The pack's id", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"),
        ("version" = String, Path, description = "A version or a semver requirement"),
        ("Range" = Option<String>, Header, description = "`bytes=start-end`, `bytes=start-`, `bytes=-suffix`"),
    ),
    responses(
        (status = 200, description = "The content",
            content(("*/*")),
            headers(
                ("Content-Length" = u64, description = "Size in bytes"),
                ("ETag" = String, description = "The content digest, quoted"),
                ("Digest" = String, description = "RFC 3230 digest, e.g. sha-256=<base64>"),
                ("Pack-Version" = String, description = "The version served (useful with a requirement)"),
            )),
        (status = 206, description = "The requested byte range", content(("*/*"))),
        (status = 400, description = "A malformed path", body = ErrorEnvelope),
        (status = 404, description = "No such pack, or no version matches (text that is neither a version nor a requirement matches none)", body = ErrorEnvelope),
        (status = 416, description = "The range lies outside the content", body = ErrorEnvelope),
    )
)]
async fn content(
    State(state): State<AppState>,
    path: Result<Segments, ApiError>,
    headers: HeaderMap,
) -> Response {
    respond("packs_content", content_inner(&state, path, &headers).await)
}

async fn content_inner(
    state: &AppState,
    path: Result<Segments, ApiError>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let path = path?;
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (version, read) = state
        .registry
        .read_pack_content(path.get(0), path.get(1), |size| {
            crate::oci::params::resolve_range(range_header, size).ok()
        })
        .await?;
    let status = if read.range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let body = read.body.map(Body::from_stream).unwrap_or_default();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&version.content_media_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::ETAG,
        header(format!("\"{}\"", version.content_digest)),
    );
    if let Some(d) = digest_header(&version.content_digest) {
        h.insert("Digest", header(d));
    }
    h.insert("Pack-Version", header(&version.version));
    let extension = if version.content_media_type.ends_with("tar+gzip") {
        ".tar.gz"
    } else {
        ""
    };
    h.insert(
        header::CONTENT_DISPOSITION,
        header(format!(
            "attachment; filename=\"{}-{}{extension}\"",
            version.pack_id, version.version
        )),
    );
    match read.range {
        Some(r) => {
            h.insert(
                header::CONTENT_LENGTH,
                header((r.end - r.start).to_string()),
            );
            h.insert(
                header::CONTENT_RANGE,
                header(format!("bytes {}-{}/{}", r.start, r.end - 1, read.size)),
            );
        }
        None => {
            h.insert(header::CONTENT_LENGTH, header(read.size.to_string()));
        }
    }
    Ok(response)
}

#[utoipa::path(
    delete,
    path = "/packs/{id}/{version}",
    tag = "packs",
    summary = "Delete a version",
    description = "Removes the version's tag and its index row; the manifest and blobs are \
                   left to garbage collection.",
    params(
        ("id" = String, Path, description = "The pack's id", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"),
        ("version" = String, Path, description = "The exact version"),
    ),
    responses(
        (status = 200, description = "Deleted", body = Deleted),
        (status = 404, description = "No such version", body = Deleted),
        (status = 400, description = "A malformed path", body = ErrorEnvelope),
    )
)]
async fn delete(State(state): State<AppState>, path: Result<Segments, ApiError>) -> Response {
    respond(
        "packs_delete",
        async {
            let path = path?;
            let deleted = state
                .registry
                .delete_pack_version(path.get(0), path.get(1))
                .await?;
            let status = if deleted {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            Ok((status, axum::Json(Deleted { deleted })).into_response())
        }
        .await,
    )
}

#[utoipa::path(
    post,
    path = "/packs",
    tag = "packs",
    summary = "Publish a pack",
    description = "`multipart/form-data` with a `manifest` part (the pack manifest JSON) \
                   and a `content` part (streamed, any size up to the configured limit; \
                   put the manifest first to have it checked before the content is sent). Stores the content, the pack manifest as config and an OCI \
                   manifest in `<prefix><packId>` under the tag `<version>`, indexed, \
                   atomically. The same version with the same content and fields again is \
                   200; with anything different, 409.",
    request_body(content = PublishForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Published", body = Published,
            headers(("Location" = String, description = "/packs/{id}/{version}"))),
        (status = 200, description = "Already published with the same content", body = Published),
        (status = 400, description = "Malformed multipart or manifest JSON", body = ErrorEnvelope),
        (status = 409, description = "The version exists with other content", body = ErrorEnvelope),
        (status = 413, description = "Content over the configured limit", body = ErrorEnvelope),
        (status = 415, description = "Not multipart/form-data", body = ErrorEnvelope),
        (status = 422, description = "The pack manifest breaks a rule", body = ErrorEnvelope),
    )
)]
async fn publish(State(state): State<AppState>, request: Request) -> Response {
    respond("packs_publish", publish_inner(&state, request).await)
}

fn multipart_error(e: multer::Error) -> ApiError {
    match e {
        multer::Error::FieldSizeExceeded { field_name, .. } => ApiError::new(
            ErrorCode::TooLarge,
            format!(
                "the {} part is larger than {MAX_MANIFEST_PART} bytes",
                field_name.unwrap_or_default()
            ),
        ),
        other => ApiError::bad_request(format!("multipart body: {other}")),
    }
}

/// The layer media type a content part asks for: its own `Content-Type` when that is
/// a vendor type (`application/vnd.*`), else the default pack content type.
fn content_media_type(field: &multer::Field<'_>) -> Option<String> {
    field
        .content_type()
        .map(|m| m.essence_str().to_owned())
        .filter(|m| m.starts_with("application/vnd."))
}

async fn discard(state: &AppState, staged: Option<(PackContent, Option<String>)>) {
    if let Some((content, _)) = staged {
        state.registry.discard_pack_content(content).await;
    }
}

async fn publish_inner(state: &AppState, request: Request) -> Result<Response, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let is_multipart = content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("multipart/form-data"));
    if !is_multipart {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "POST /packs takes multipart/form-data with a manifest part and a content part",
        ));
    }
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| ApiError::bad_request(format!("Content-Type: {e}")))?;
    let constraints = multer::Constraints::new()
        .size_limit(multer::SizeLimit::new().for_field("manifest", MAX_MANIFEST_PART));
    let body = request.into_body().into_data_stream();
    let mut form = multer::Multipart::with_constraints(body, boundary, constraints);

    // Parts in either order: a manifest first is checked before any content is read
    // (fail fast); the content is staged, and the pack published only once the form
    // has ended with nothing but the two parts (a part after them is refused too).
    let mut manifest: Option<bytes::Bytes> = None;
    let mut staged: Option<(PackContent, Option<String>)> = None;
    let published = loop {
        let field = match form.next_field().await {
            Ok(f) => f,
            Err(e) => {
                discard(state, staged.take()).await;
                return Err(multipart_error(e));
            }
        };
        let Some(field) = field else {
            match (&manifest, staged.take()) {
                (Some(m), Some((content, media_type))) => {
                    break state
                        .registry
                        .publish_pack(m, content, media_type.as_deref())
                        .await?;
                }
                (_, staged) => {
                    discard(state, staged).await;
                    let missing = if manifest.is_none() {
                        "manifest"
                    } else {
                        "content"
                    };
                    return Err(ApiError::bad_request(format!(
                        "the {missing} part is missing"
                    )));
                }
            }
        };
        match field.name() {
            Some("manifest") if manifest.is_none() => {
                let bytes = match field.bytes().await {
                    Ok(b) => b,
                    Err(e) => {
                        discard(state, staged.take()).await;
                        return Err(multipart_error(e));
                    }
                };
                if staged.is_none() {
                    state.registry.check_pack_manifest(&bytes).await?;
                }
                manifest = Some(bytes);
            }
            Some("content") if staged.is_none() => {
                let media_type = content_media_type(&field);
                let stream: ByteStream = field.map_err(std::io::Error::other).boxed();
                let content = state.registry.stage_pack_content(stream).await?;
                staged = Some((content, media_type));
            }
            other => {
                discard(state, staged.take()).await;
                return Err(ApiError::bad_request(format!(
                    "unexpected part {:?}: the form has one manifest and one content part",
                    other.unwrap_or_default()
                )));
            }
        }
    };
    let record = published.record;
    let status = if published.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/packs/{}/{}", record.pack_id, record.version);
    let mut response = (
        status,
        axum::Json(Published {
            pack_id: record.pack_id,
            version: record.version,
            digest: record.content_digest.to_string(),
            manifest_digest: record.manifest_digest.to_string(),
        }),
    )
        .into_response();
    if published.created {
        response
            .headers_mut()
            .insert(header::LOCATION, header(location.replace('+', "%2B")));
    }
    Ok(response)
}

/// The OpenAPI 3 document of `/packs`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "PacksRegistry packs API",
        description = "The REST view of packs (policy, analyzer, task and bundle artifacts) \
                       stored in the registry's OCI repositories. Errors are \
                       `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(list, publish, get_pack, versions, content, delete),
    components(schemas(
        PackSummary, Pack, Version, PackList, PackResponse, VersionList, Published, Deleted,
        Dependency, PackTypeDoc, PackManifestInput, PublishForm, ErrorEnvelope, ErrorBody,
        ErrorCode
    )),
    tags((name = "packs", description = "Publish, list, search, download and delete packs"))
)]
pub struct PacksApi;

/// The document as JSON text, built once.
pub fn openapi_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        PacksApi::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serializes")
    })
}

async fn openapi() -> Response {
    let mut response =
        ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response();
    response
        .extensions_mut()
        .insert(RouteLabel("packs_openapi"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (raw, encoded) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw), encoded);
        }
    }

    #[test]
    fn openapi_document_is_generated() {
        let doc: serde_json::Value = serde_json::from_str(openapi_json()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for p in [
            "/packs",
            "/packs/{id}",
            "/packs/{id}/versions",
            "/packs/{id}/{version}",
        ] {
            assert!(doc["paths"][p].is_object(), "{p}");
        }
    }
}
