//! `/v2/<name>/manifests/...`, tag listing, referrers and the catalog.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::OciError;
use super::params::{self, Query};
use crate::app::AppState;
use crate::names::{Reference, RepoName, Tag};
use crate::registry::{Error, media_types};

fn header(value: impl AsRef<str>) -> HeaderValue {
    HeaderValue::from_str(value.as_ref()).expect("header values we build are ASCII")
}

fn reference(s: &str) -> Result<Reference, OciError> {
    Reference::parse(s).map_err(|e| match e {
        crate::names::NameError::Digest(d) => Error::from(d).into(),
        other => Error::ReferenceInvalid(other).into(),
    })
}

/// `GET`/`HEAD /v2/<name>/manifests/<reference>`
pub async fn get(
    state: &AppState,
    repo: &RepoName,
    reference_text: &str,
    headers: &HeaderMap,
    with_body: bool,
) -> Result<Response, OciError> {
    let reference = reference(reference_text)?;
    let accept: Vec<String> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let m = state
        .registry
        .get_manifest(repo, &reference, &accept)
        .await?;
    let size = m.body.len();
    let mut response = if with_body {
        Response::new(Body::from(m.body))
    } else {
        Response::new(Body::empty())
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, header(&m.media_type));
    h.insert(header::CONTENT_LENGTH, header(size.to_string()));
    h.insert("Docker-Content-Digest", header(m.digest.as_str()));
    h.insert(header::ETAG, header(format!("\"{}\"", m.digest)));
    Ok(response)
}

/// How far past the manifest limit a body is still read (and discarded) so the
/// client receives the 413.
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

/// Reads a manifest body of at most `limit` bytes. A larger one is read on to its
/// end (up to [`DRAIN_LIMIT`] more) before the 413: answering without reading it
/// closes the connection under a client still sending, which then sees a broken
/// pipe instead of the 413.
async fn read_body(body: Body, limit: u64) -> Result<bytes::Bytes, OciError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut read: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| OciError::from(Error::Body(e.to_string())))?;
        read += chunk.len() as u64;
        if read <= limit {
            buf.extend_from_slice(&chunk);
        } else if read > limit.saturating_add(DRAIN_LIMIT) {
            break;
        }
    }
    if read > limit {
        return Err(Error::TooLarge {
            what: "manifest",
            limit,
        }
        .into());
    }
    Ok(buf.into())
}

/// `PUT /v2/<name>/manifests/<reference>[?tag=...]`
pub async fn put(
    state: &AppState,
    repo: &RepoName,
    reference_text: &str,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, OciError> {
    let reference = reference(reference_text)?;
    let limit = state.registry.limits().max_manifest_bytes;
    let too_large = || {
        OciError::from(Error::TooLarge {
            what: "manifest",
            limit,
        })
    };
    if params::content_length(headers).is_some_and(|n| n > limit.saturating_add(DRAIN_LIMIT)) {
        return Err(too_large());
    }
    let bytes = read_body(body, limit).await?;
    let extra_tags = query
        .all("tag")
        .map(|t| Tag::parse(t).map_err(|e| OciError::from(Error::ReferenceInvalid(e))))
        .collect::<Result<Vec<_>, _>>()?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let pushed = state
        .registry
        .put_manifest(repo, &reference, content_type, bytes, &extra_tags)
        .await?;
    let mut response = StatusCode::CREATED.into_response();
    let h = response.headers_mut();
    h.insert(
        header::LOCATION,
        header(format!("/v2/{repo}/manifests/{}", pushed.digest)),
    );
    h.insert("Docker-Content-Digest", header(pushed.digest.as_str()));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    if let Some(subject) = &pushed.subject {
        h.insert("OCI-Subject", header(subject.as_str()));
    }
    if !extra_tags.is_empty() {
        for t in &pushed.tags {
            h.append("OCI-Tag", header(t.as_str()));
        }
    }
    Ok(response)
}

/// `DELETE /v2/<name>/manifests/<reference>`
pub async fn delete(
    state: &AppState,
    repo: &RepoName,
    reference_text: &str,
) -> Result<Response, OciError> {
    let reference = reference(reference_text)?;
    state.registry.delete_manifest(repo, &reference).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

fn link(path: &str, pairs: &[(&str, &str)]) -> HeaderValue {
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    header(format!("<{path}?{query}>; rel=\"next\""))
}

/// `GET /v2/<name>/tags/list[?n=&last=]`
pub async fn tags(state: &AppState, repo: &RepoName, query: &Query) -> Result<Response, OciError> {
    let n = query.page_size()?;
    let page = state.registry.list_tags(repo, query.get("last"), n).await?;
    let effective = n
        .unwrap_or(state.registry.limits().max_page)
        .min(state.registry.limits().max_page);
    let last = page.items.last().cloned();
    // Serialized straight from the page (a `json!` value would copy every tag first).
    #[derive(serde::Serialize)]
    struct TagList<'a> {
        name: &'a str,
        tags: &'a [String],
    }
    let mut response = axum::Json(TagList {
        name: repo.as_str(),
        tags: &page.items,
    })
    .into_response();
    if page.more
        && let Some(last) = last
    {
        response.headers_mut().insert(
            header::LINK,
            link(
                &format!("/v2/{repo}/tags/list"),
                &[("n", &effective.to_string()), ("last", &last)],
            ),
        );
    }
    Ok(response)
}

/// `GET /v2/_catalog[?n=&last=]`
pub async fn catalog(state: &AppState, query: &Query) -> Result<Response, OciError> {
    let n = query.page_size()?;
    let page = state.registry.catalog(query.get("last"), n).await?;
    let effective = n
        .unwrap_or(state.registry.limits().max_page)
        .min(state.registry.limits().max_page);
    let last = page.items.last().cloned();
    #[derive(serde::Serialize)]
    struct Catalog<'a> {
        repositories: &'a [String],
    }
    let mut response = axum::Json(Catalog {
        repositories: &page.items,
    })
    .into_response();
    if page.more
        && let Some(last) = last
    {
        response.headers_mut().insert(
            header::LINK,
            link(
                "/v2/_catalog",
                &[("n", &effective.to_string()), ("last", &last)],
            ),
        );
    }
    Ok(response)
}

/// `GET /v2/<name>/referrers/<digest>[?artifactType=]`
pub async fn referrers(
    state: &AppState,
    repo: &RepoName,
    digest: &str,
    query: &Query,
) -> Result<Response, OciError> {
    let subject = params::path_digest(digest)?;
    let artifact_type = query.get("artifactType").filter(|a| !a.is_empty());
    let page = state
        .registry
        .referrers(repo, &subject, artifact_type, query.get("last"))
        .await?;
    let manifests: Vec<Value> = page
        .items
        .iter()
        .map(|r| {
            let mut d = json!({
                "mediaType": r.media_type,
                "digest": r.digest.as_str(),
                "size": r.size,
            });
            if let Some(a) = &r.artifact_type {
                d["artifactType"] = json!(a);
            }
            if let Some(a) = r
                .annotations
                .as_deref()
                .and_then(|a| serde_json::from_str::<Value>(a).ok())
            {
                d["annotations"] = a;
            }
            d
        })
        .collect();
    let body = json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_INDEX,
        "manifests": manifests,
    });
    let mut response = Response::new(Body::from(serde_json::to_vec(&body).expect("json")));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media_types::OCI_INDEX),
    );
    if artifact_type.is_some() {
        h.insert(
            "OCI-Filters-Applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    if page.more
        && let Some(last) = page.items.last()
    {
        let mut pairs = vec![("last", last.digest.as_str())];
        if let Some(a) = artifact_type {
            pairs.push(("artifactType", a));
        }
        h.insert(
            header::LINK,
            link(&format!("/v2/{repo}/referrers/{subject}"), &pairs),
        );
    }
    Ok(response)
}
