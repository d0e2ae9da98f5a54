//! `/v2/<name>/blobs/...`: reads, deletes, and the upload protocol.

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, LOCATION, RANGE};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};

use super::{OciError, PathDigest, Repo, UploadId, params};
use crate::digest::{Algorithm, Digest};
use crate::http::auth::{Caller, audit};
use crate::http::range::{Content, RangeRequest};
use crate::http::{QueryPairs, State, body, content_length};
use crate::names::RepoName;
use crate::registry::Error;
use crate::storage::ByteStream;

/// The request body as the domain's stream, cut off when it stalls.
fn request_body(state: &State, payload: web::Payload) -> ByteStream {
    let stall = state.config.server.body_stall_timeout_secs;
    body::stream(
        payload,
        (stall > 0).then(|| std::time::Duration::from_secs(stall)),
    )
}

/// The headers every answer about a blob's content carries.
fn blob_headers(digest: &Digest) -> HttpResponseBuilder {
    let mut builder = HttpResponse::Ok();
    builder
        .insert_header((CONTENT_TYPE, "application/octet-stream"))
        .insert_header(("Docker-Content-Digest", digest.as_str()))
        .insert_header((ETAG, format!("\"{digest}\"")))
        .insert_header((CACHE_CONTROL, "max-age=31536000"));
    builder
}

/// `GET /v2/<name>/blobs/<digest>`, whole or a `Range` of it.
pub async fn get(
    state: State,
    Repo(repo): Repo,
    PathDigest(digest): PathDigest,
    range: RangeRequest,
) -> Result<HttpResponse, OciError> {
    let read = state
        .registry
        .read_blob(&repo, &digest, |size| range.resolve(size).ok())
        .await?;
    Ok(Content {
        size: read.size,
        range: read.range,
        body: read.body,
    }
    .respond(blob_headers(&digest)))
}

/// `HEAD /v2/<name>/blobs/<digest>`
pub async fn head(
    state: State,
    Repo(repo): Repo,
    PathDigest(digest): PathDigest,
) -> Result<HttpResponse, OciError> {
    let size = state.registry.stat_blob(&repo, &digest).await?;
    Ok(Content {
        size,
        range: None,
        body: None,
    }
    .respond(blob_headers(&digest)))
}

/// `DELETE /v2/<name>/blobs/<digest>`
pub async fn delete(
    state: State,
    Repo(repo): Repo,
    PathDigest(digest): PathDigest,
    caller: Caller,
) -> Result<HttpResponse, OciError> {
    state.registry.delete_blob(&repo, &digest).await?;
    audit(&caller, "delete blob", repo.as_str(), "", digest.as_str());
    Ok(HttpResponse::Accepted().finish())
}

/// The answer describing an upload session (`Location`, `Range`, …).
fn session_response(
    state: &State,
    status: StatusCode,
    repo: &RepoName,
    id: uuid::Uuid,
    offset: u64,
) -> HttpResponse {
    let mut builder = HttpResponse::build(status);
    builder
        .insert_header((LOCATION, format!("/v2/{repo}/blobs/uploads/{id}")))
        .insert_header(("Docker-Upload-UUID", id.to_string()))
        .insert_header((RANGE, super::error::upload_range(offset)));
    let min = state.registry.min_chunk();
    if min > 0 {
        builder.insert_header(("OCI-Chunk-Min-Length", min.to_string()));
    }
    builder.finish()
}

fn created(repo: &RepoName, digest: &Digest) -> HttpResponse {
    HttpResponse::Created()
        .insert_header((LOCATION, format!("/v2/{repo}/blobs/{digest}")))
        .insert_header(("Docker-Content-Digest", digest.as_str()))
        .finish()
}

fn check_declared_size(state: &State, req: &HttpRequest) -> Result<(), OciError> {
    let limit = state.registry.limits().max_blob_bytes;
    match content_length(req) {
        Some(declared) if limit > 0 && declared > limit => Err(Error::TooLarge {
            what: "blob",
            limit,
        }
        .into()),
        _ => Ok(()),
    }
}

/// `POST /v2/<name>/blobs/uploads/`: mount, monolithic push, or a new session.
pub async fn start(
    state: State,
    Repo(repo): Repo,
    req: HttpRequest,
    payload: web::Payload,
    caller: Caller,
) -> Result<HttpResponse, OciError> {
    let query = QueryPairs::of(&req);
    if let Some(mount) = params::query_digest(&query, "mount")? {
        if let Some(from) = query.get("from").filter(|f| !f.is_empty()) {
            let from = RepoName::parse_with_limit(from, state.config.limits.max_name_length)
                .map_err(Error::NameInvalid)?;
            if state.registry.mount_blob(&repo, &from, &mount).await? {
                audit(
                    &caller,
                    "mount blob",
                    repo.as_str(),
                    from.as_str(),
                    mount.as_str(),
                );
                return Ok(created(&repo, &mount));
            }
        }
        // Cannot mount: fall through to an ordinary session, as the spec asks.
    } else if let Some(digest) = params::query_digest(&query, "digest")? {
        check_declared_size(&state, &req)?;
        let _uploading = state.metrics.upload_in_progress();
        state
            .registry
            .push_blob(&repo, &digest, request_body(&state, payload))
            .await?;
        audit(&caller, "push blob", repo.as_str(), "", digest.as_str());
        return Ok(created(&repo, &digest));
    }
    let algorithm = match query.get("digest-algorithm") {
        None | Some("") => Algorithm::Sha256,
        Some(a) => a.parse().map_err(Error::from)?,
    };
    let session = state.registry.start_upload(&repo, algorithm).await?;
    Ok(session_response(
        &state,
        StatusCode::ACCEPTED,
        &repo,
        session.id,
        session.offset,
    ))
}

/// `GET /v2/<name>/blobs/uploads/<id>`
pub async fn status(
    state: State,
    Repo(repo): Repo,
    UploadId(id): UploadId,
) -> Result<HttpResponse, OciError> {
    let s = state.registry.upload_status(&repo, id).await?;
    Ok(session_response(
        &state,
        StatusCode::NO_CONTENT,
        &repo,
        s.id,
        s.offset,
    ))
}

/// `PATCH /v2/<name>/blobs/uploads/<id>`: one chunk (with `Content-Range`) or a stream.
pub async fn patch(
    state: State,
    Repo(repo): Repo,
    UploadId(id): UploadId,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, OciError> {
    let range = params::content_range(&req)?;
    check_declared_size(&state, &req)?;
    let _uploading = state.metrics.upload_in_progress();
    let s = state
        .registry
        .append_chunk(&repo, id, range, request_body(&state, payload))
        .await?;
    Ok(session_response(
        &state,
        StatusCode::ACCEPTED,
        &repo,
        s.id,
        s.offset,
    ))
}

/// `PUT /v2/<name>/blobs/uploads/<id>?digest=`: closes a session, with an optional
/// last chunk.
pub async fn finish(
    state: State,
    Repo(repo): Repo,
    UploadId(id): UploadId,
    req: HttpRequest,
    payload: web::Payload,
    caller: Caller,
) -> Result<HttpResponse, OciError> {
    let query = QueryPairs::of(&req);
    let digest = params::query_digest(&query, "digest")?
        .ok_or_else(|| Error::DigestInvalid("the digest query parameter is required".into()))?;
    let range = params::content_range(&req)?;
    let _uploading = state.metrics.upload_in_progress();
    let body = match content_length(&req) {
        Some(0) => None,
        _ => Some(request_body(&state, payload)),
    };
    state
        .registry
        .finish_upload(&repo, id, &digest, range, body)
        .await?;
    audit(&caller, "push blob", repo.as_str(), "", digest.as_str());
    Ok(created(&repo, &digest))
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`
pub async fn cancel(
    state: State,
    Repo(repo): Repo,
    UploadId(id): UploadId,
) -> Result<HttpResponse, OciError> {
    state.registry.cancel_upload(&repo, id).await?;
    Ok(HttpResponse::NoContent().finish())
}
