//! The `/packs` facade (DESIGN §7): the REST view of packs for TaskRunner, CI jobs and
//! people without an OCI client. Only this module knows the facade's JSON and its error
//! form; every handler parses its input, makes one domain call on
//! [`Registry`](crate::registry::Registry), and writes the answer. Listings read the
//! packs index, never storage. The OpenAPI document at `/packs/openapi.json` is
//! generated from the handlers and types here.
//!
//! Must not touch storage or metadata directly, nor know the OCI wire format.

mod bundles;
mod error;
mod types;

use std::sync::OnceLock;

use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderValue;
use actix_web::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE, ETAG, LOCATION};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError, web};
use base64::Engine;
use futures_util::{StreamExt, TryStreamExt};
use utoipa::OpenApi;

use crate::http::auth::{Caller, Needs};
use crate::http::range::{Content, RangeRequest};
use crate::http::{QueryPairs, State, body};
use crate::metadata::PackFilter;
use crate::registry::PackType;
use crate::registry::packs::PackContent;
use crate::storage::ByteStream;
pub use error::{ApiError, ErrorBody, ErrorCode, ErrorEnvelope};
use types::*;

/// Largest `manifest` part of a publish.
const MAX_MANIFEST_PART: u64 = 1024 * 1024;

/// Registers the `/packs` routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/packs")
            .wrap(actix_web::middleware::from_fn(recover))
            .app_data(
                web::PathConfig::default()
                    .error_handler(|e, _| ApiError::bad_request(format!("path: {e}")).into()),
            )
            .service(
                web::resource("")
                    .name("packs_list")
                    .wrap(actix_web::middleware::from_fn(authorize))
                    .get(list)
                    .post(publish)
                    .default_service(web::to(|| unsupported("GET, POST"))),
            )
            // Before `/{id}`: `export` and `import` are reserved, never pack ids.
            .service(
                web::resource("/export")
                    .name("packs_export")
                    .wrap(actix_web::middleware::from_fn(authorize))
                    .get(bundles::export)
                    .default_service(web::to(|| unsupported("GET"))),
            )
            .service(
                web::resource("/import")
                    .name("packs_import")
                    .wrap(actix_web::middleware::from_fn(authorize))
                    .post(bundles::import)
                    .default_service(web::to(|| unsupported("POST"))),
            )
            .service(
                web::resource("/openapi.json")
                    .name("packs_openapi")
                    .get(openapi)
                    .default_service(web::to(|| unsupported("GET"))),
            )
            .service(
                web::resource("/{id}")
                    .name("packs_get")
                    .wrap(actix_web::middleware::from_fn(authorize))
                    .get(get_pack)
                    .default_service(web::to(|| unsupported("GET"))),
            )
            .service(
                web::resource("/{id}/versions")
                    .name("packs_versions")
                    .wrap(actix_web::middleware::from_fn(authorize))
                    .get(versions)
                    .default_service(web::to(|| unsupported("GET"))),
            )
            .service(
                web::resource("/{id}/{version}")
                    .name("packs_content")
                    .wrap(actix_web::middleware::from_fn(authorize))
                    .get(content)
                    .route(web::head().to(content_head))
                    .delete(delete)
                    .default_service(web::to(|| unsupported("GET, HEAD, DELETE"))),
            )
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(ApiError::new(ErrorCode::NotFound, "no such endpoint"))
            })),
    );
}

/// A 405 naming the methods the resource serves.
async fn unsupported(allow: &'static str) -> HttpResponse {
    let mut response = ApiError::new(
        ErrorCode::MethodNotAllowed,
        "the method is not supported on this endpoint",
    )
    .error_response();
    response.headers_mut().insert(
        actix_web::http::header::ALLOW,
        actix_web::http::header::HeaderValue::from_static(allow),
    );
    response
}

/// Every route's guard (see [`crate::http::auth`]); a refusal in the facade's form.
async fn authorize(
    req: ServiceRequest,
    next: Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    crate::http::auth::guard(
        req,
        next,
        |req| {
            let prefix = req
                .app_data::<State>()
                .map(|s| s.registry.pack_settings().prefix.clone())
                .unwrap_or_default();
            crate::http::auth::packs_guard(req, &prefix)
        },
        |refusal| ApiError::refused(refusal).error_response(),
    )
    .await
}

/// A handler that panicked answers 500 in the facade's error form (and is logged).
async fn recover(
    req: ServiceRequest,
    next: Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    crate::http::recover_panics(req, next, || {
        ApiError::new(ErrorCode::Internal, "internal server error").into()
    })
    .await
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
async fn list(
    state: State,
    req: HttpRequest,
    Caller(caller): Caller,
) -> Result<HttpResponse, ApiError> {
    let mut filter = PackFilter::default();
    let mut cursor = None;
    let mut limit = None;
    let max = state.registry.pack_settings().max_page;
    for (key, value) in QueryPairs::of(&req).iter() {
        match key {
            "type" => {
                let t = PackType::parse(value).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "type {value:?} must be one of policy, analyzer, task, bundle"
                    ))
                })?;
                filter.pack_type = Some(t.as_str().to_owned());
            }
            "author" => filter.author = Some(value.to_owned()),
            "q" => filter.q = Some(value.to_owned()),
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
            "cursor" => cursor = Some(value.to_owned()),
            _ => {}
        }
    }
    let want = limit.unwrap_or(state.registry.pack_settings().default_page) as usize;
    let (packs, next) = visible_packs(&state, &caller, &filter, cursor, want).await?;
    let packs = packs.into_iter().map(PackSummary::from).collect();
    Ok(HttpResponse::Ok().json(PackList { packs, next }))
}

/// Pages of the index one listing reads at most while filtering out what its caller
/// may not pull (it then answers a shorter page with `next`).
const MAX_LISTING_READS: usize = 10;

/// One page of the packs `caller` may pull, matching `filter`, after `cursor`: pages
/// of the index are read on until `want` are found (at most [`MAX_LISTING_READS`]
/// reads), and `next` continues after the last pack looked at. The `/packs` listing
/// and the web UI's both list through it.
pub(crate) async fn visible_packs(
    state: &State,
    caller: &crate::auth::Principal,
    filter: &PackFilter,
    cursor: Option<String>,
    want: usize,
) -> Result<(Vec<crate::metadata::PackSummaryRecord>, Option<String>), crate::registry::Error> {
    let prefix = &state.registry.pack_settings().prefix;
    let mut packs = Vec::with_capacity(want);
    let mut next = cursor;
    for _ in 0..MAX_LISTING_READS {
        let page = state
            .registry
            .list_packs(filter, next.as_deref(), Some((want - packs.len()) as u32))
            .await?;
        next = if page.more {
            page.items.last().map(|p| p.pack_id.clone())
        } else {
            None
        };
        packs.extend(page.items.into_iter().filter(|p| {
            state
                .auth
                .can_pull(caller, &format!("{prefix}{}", p.pack_id))
        }));
        if packs.len() >= want || next.is_none() {
            break;
        }
    }
    Ok((packs, next))
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
async fn get_pack(state: State, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (_, latest) = state.registry.get_pack(&id).await?;
    Ok(HttpResponse::Ok().json(PackResponse {
        pack: Pack::from(latest),
    }))
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
async fn versions(state: State, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let versions = state.registry.pack_versions(&id).await?;
    Ok(HttpResponse::Ok().json(VersionList {
        versions: versions.into_iter().map(Version::from).collect(),
    }))
}

/// `Digest` (RFC 3230) of a `sha256:`/`sha512:` digest: `sha-256=<base64>`.
fn digest_header(digest: &crate::digest::Digest) -> Option<String> {
    let raw = hex::decode(digest.hex()).ok()?;
    let name = match digest.algorithm() {
        crate::digest::Algorithm::Sha256 => "sha-256",
        crate::digest::Algorithm::Sha512 => "sha-512",
    };
    Some(format!(
        "{name}={}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    ))
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
    state: State,
    path: web::Path<(String, String)>,
    range: RangeRequest,
) -> Result<HttpResponse, ApiError> {
    let (id, version) = path.into_inner();
    let (version, read) = state
        .registry
        .read_pack_content(&id, &version, |size| range.resolve(size).ok())
        .await?;
    Ok(Content {
        size: read.size,
        range: read.range,
        body: read.body,
    }
    .respond(content_headers(&version)))
}

/// `HEAD /packs/{id}/{version}`: the download's headers, no body.
async fn content_head(
    state: State,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, version) = path.into_inner();
    let version = state.registry.resolve_pack_version(&id, &version).await?;
    Ok(Content {
        size: version.size,
        range: None,
        body: None,
    }
    .respond(content_headers(&version)))
}

/// The headers of a content download: type, `ETag`, RFC 3230 `Digest`, the version
/// served, and a file name.
pub(crate) fn content_headers(version: &crate::metadata::PackVersionRecord) -> HttpResponseBuilder {
    let mut builder = HttpResponse::Ok();
    let media_type = if HeaderValue::from_str(&version.content_media_type).is_ok() {
        version.content_media_type.as_str()
    } else {
        "application/octet-stream"
    };
    builder
        .insert_header((CONTENT_TYPE, media_type))
        .insert_header((ETAG, format!("\"{}\"", version.content_digest)))
        .insert_header(("Pack-Version", version.version.as_str()));
    if let Some(d) = digest_header(&version.content_digest) {
        builder.insert_header(("Digest", d));
    }
    let extension = if version.content_media_type.ends_with("tar+gzip") {
        ".tar.gz"
    } else {
        ""
    };
    builder.insert_header((
        CONTENT_DISPOSITION,
        format!(
            "attachment; filename=\"{}-{}{extension}\"",
            version.pack_id, version.version
        ),
    ));
    builder
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
async fn delete(state: State, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (id, version) = path.into_inner();
    let deleted = state.registry.delete_pack_version(&id, &version).await?;
    let mut builder = if deleted {
        HttpResponse::Ok()
    } else {
        HttpResponse::NotFound()
    };
    Ok(builder.json(Deleted { deleted }))
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

async fn discard(state: &State, staged: Option<(PackContent, Option<String>)>) {
    if let Some((content, _)) = staged {
        state.registry.discard_pack_content(content).await;
    }
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

async fn publish(
    state: State,
    req: HttpRequest,
    payload: web::Payload,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let state = &state;
    let Caller(principal) = &caller;
    // Which repository is written is known once the manifest part is read; a caller
    // who can push nowhere (the anonymous one) is told to authenticate at once.
    crate::http::auth::require(state, &req, principal, &Needs::default())?;
    let content_type = crate::http::header_text(&req, "content-type").unwrap_or_default();
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
    let _uploading = state.metrics.upload_in_progress();
    let stall = state.config.server.body_stall_timeout_secs;
    let body = body::stream(
        payload,
        (stall > 0).then(|| std::time::Duration::from_secs(stall)),
    );
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
                let allowed = match state.registry.pack_repository_for(&bytes) {
                    Ok(repo) => crate::http::auth::require(
                        state,
                        &req,
                        principal,
                        &Needs::on(repo, crate::auth::Action::Push),
                    )
                    .map_err(ApiError::from),
                    Err(e) => Err(e.into()),
                };
                let checked = match allowed {
                    Ok(()) if staged.is_none() => state
                        .registry
                        .check_pack_manifest(&bytes)
                        .await
                        .map_err(ApiError::from),
                    other => other,
                };
                if let Err(e) = checked {
                    discard(state, staged.take()).await;
                    return Err(e);
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
    if published.created {
        crate::http::auth::audit(
            &caller,
            "publish pack",
            record.repository.as_str(),
            &record.version,
            record.manifest_digest.as_str(),
        );
    }
    let mut builder = if published.created {
        let mut b = HttpResponse::Created();
        b.insert_header((
            LOCATION,
            format!("/packs/{}/{}", record.pack_id, record.version).replace('+', "%2B"),
        ));
        b
    } else {
        HttpResponse::Ok()
    };
    Ok(builder.json(Published {
        pack_id: record.pack_id,
        version: record.version,
        digest: record.content_digest.to_string(),
        manifest_digest: record.manifest_digest.to_string(),
    }))
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
    paths(list, publish, get_pack, versions, content, delete, bundles::export, bundles::import),
    components(schemas(
        PackSummary, Pack, Version, PackList, PackResponse, VersionList, Published, Deleted,
        Dependency, PackTypeDoc, PackManifestInput, PublishForm, ErrorEnvelope, ErrorBody,
        ErrorCode, Imported, ImportedPack, PackSpecDoc, ArchiveDoc
    )),
    tags(
        (name = "packs", description = "Publish, list, search, download and delete packs"),
        (name = "bundles", description = "Offline bundles: export packs as an OCI image layout archive, import one")
    )
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

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(openapi_json())
}

#[cfg(test)]
mod tests {
    use super::*;

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
