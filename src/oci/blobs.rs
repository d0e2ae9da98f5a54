//! `/v2/<name>/blobs/...`: reads, deletes, and the upload protocol.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, TryStreamExt};

use super::OciError;
use super::params::{self, Query};
use crate::app::AppState;
use crate::digest::Algorithm;
use crate::names::RepoName;
use crate::registry::Error;
use crate::storage::ByteStream;

fn stream(body: Body) -> ByteStream {
    body.into_data_stream()
        .map_err(std::io::Error::other)
        .boxed()
}

fn header(value: impl AsRef<str>) -> HeaderValue {
    HeaderValue::from_str(value.as_ref()).expect("header values we build are ASCII")
}

fn upload_location(repo: &RepoName, id: uuid::Uuid) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

fn blob_location(repo: &RepoName, digest: &crate::digest::Digest) -> String {
    format!("/v2/{repo}/blobs/{digest}")
}

/// `GET`/`HEAD /v2/<name>/blobs/<digest>`: a `GET` has a body.
pub async fn get(
    state: &AppState,
    repo: &RepoName,
    digest: &str,
    headers: &HeaderMap,
    with_body: bool,
) -> Result<Response, OciError> {
    let digest = params::path_digest(digest)?;
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, size, range, body) = if with_body {
        let read = state
            .registry
            .read_blob(repo, &digest, |size| {
                params::resolve_range(range_header, size).ok()
            })
            .await?;
        let status = if read.range.is_some() {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        };
        let body = read.body.map(Body::from_stream).unwrap_or_default();
        (status, read.size, read.range, body)
    } else {
        let size = state.registry.stat_blob(repo, &digest).await?;
        (StatusCode::OK, size, None, Body::empty())
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert("Docker-Content-Digest", header(digest.as_str()));
    h.insert(header::ETAG, header(format!("\"{digest}\"")));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=31536000"),
    );
    match range {
        Some(r) => {
            h.insert(
                header::CONTENT_LENGTH,
                header((r.end - r.start).to_string()),
            );
            h.insert(
                header::CONTENT_RANGE,
                header(format!("bytes {}-{}/{size}", r.start, r.end - 1)),
            );
        }
        None => {
            h.insert(header::CONTENT_LENGTH, header(size.to_string()));
        }
    }
    Ok(response)
}

/// `DELETE /v2/<name>/blobs/<digest>`
pub async fn delete(state: &AppState, repo: &RepoName, digest: &str) -> Result<Response, OciError> {
    let digest = params::path_digest(digest)?;
    state.registry.delete_blob(repo, &digest).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

fn session_response(
    state: &AppState,
    status: StatusCode,
    repo: &RepoName,
    id: uuid::Uuid,
    offset: u64,
) -> Response {
    let mut response = status.into_response();
    let h = response.headers_mut();
    h.insert(header::LOCATION, header(upload_location(repo, id)));
    h.insert("Docker-Upload-UUID", header(id.to_string()));
    h.insert(header::RANGE, header(super::error::upload_range(offset)));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    let min = state.registry.min_chunk();
    if min > 0 {
        h.insert("OCI-Chunk-Min-Length", header(min.to_string()));
    }
    response
}

fn created(repo: &RepoName, digest: &crate::digest::Digest) -> Response {
    let mut response = StatusCode::CREATED.into_response();
    let h = response.headers_mut();
    h.insert(header::LOCATION, header(blob_location(repo, digest)));
    h.insert("Docker-Content-Digest", header(digest.as_str()));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

/// `POST /v2/<name>/blobs/uploads/`: mount, monolithic push, or a new session.
pub async fn start(
    state: &AppState,
    repo: &RepoName,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, OciError> {
    if let Some(mount) = query.digest("mount")? {
        if let Some(from) = query.get("from").filter(|f| !f.is_empty()) {
            let from = super::repo(from, state.config.limits.max_name_length)?;
            if state.registry.mount_blob(repo, &from, &mount).await? {
                return Ok(created(repo, &mount));
            }
        }
        // Cannot mount: fall through to an ordinary session, as the spec asks.
    } else if let Some(digest) = query.digest("digest")? {
        if let Some(declared) = params::content_length(headers) {
            check_declared_size(state, declared)?;
        }
        state
            .registry
            .push_blob(repo, &digest, stream(body))
            .await?;
        return Ok(created(repo, &digest));
    }
    let algorithm = match query.get("digest-algorithm") {
        None | Some("") => Algorithm::Sha256,
        Some(a) => a.parse().map_err(Error::from)?,
    };
    let session = state.registry.start_upload(repo, algorithm).await?;
    Ok(session_response(
        state,
        StatusCode::ACCEPTED,
        repo,
        session.id,
        session.offset,
    ))
}

fn check_declared_size(state: &AppState, declared: u64) -> Result<(), OciError> {
    let limit = state.registry.limits().max_blob_bytes;
    if limit > 0 && declared > limit {
        return Err(Error::TooLarge {
            what: "blob",
            limit,
        }
        .into());
    }
    Ok(())
}

/// `GET /v2/<name>/blobs/uploads/<id>`
pub async fn status(state: &AppState, repo: &RepoName, id: &str) -> Result<Response, OciError> {
    let id = params::upload_id(id)?;
    let s = state.registry.upload_status(repo, id).await?;
    Ok(session_response(
        state,
        StatusCode::NO_CONTENT,
        repo,
        s.id,
        s.offset,
    ))
}

/// `PATCH /v2/<name>/blobs/uploads/<id>`: one chunk (with `Content-Range`) or a stream.
pub async fn patch(
    state: &AppState,
    repo: &RepoName,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, OciError> {
    let id = params::upload_id(id)?;
    let range = params::content_range(headers)?;
    if let Some(declared) = params::content_length(headers) {
        check_declared_size(state, declared)?;
    }
    let s = state
        .registry
        .append_chunk(repo, id, range, stream(body))
        .await?;
    Ok(session_response(
        state,
        StatusCode::ACCEPTED,
        repo,
        s.id,
        s.offset,
    ))
}

/// `PUT /v2/<name>/blobs/uploads/<id>?digest=`: closes a session, with an optional last chunk.
pub async fn finish(
    state: &AppState,
    repo: &RepoName,
    id: &str,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, OciError> {
    let id = params::upload_id(id)?;
    let digest = query
        .digest("digest")?
        .ok_or_else(|| Error::DigestInvalid("the digest query parameter is required".into()))?;
    let range = params::content_range(headers)?;
    let body = match params::content_length(headers) {
        Some(0) => None,
        _ => Some(stream(body)),
    };
    state
        .registry
        .finish_upload(repo, id, &digest, range, body)
        .await?;
    Ok(created(repo, &digest))
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`
pub async fn cancel(state: &AppState, repo: &RepoName, id: &str) -> Result<Response, OciError> {
    let id = params::upload_id(id)?;
    state.registry.cancel_upload(repo, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
