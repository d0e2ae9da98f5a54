//! `/v2/<name>/manifests/...`, tag listing, referrers and the catalog.

use actix_web::http::header::{ACCEPT, CONTENT_TYPE, ETAG, LINK, LOCATION};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use oci_spec::distribution::{RepositoryListBuilder, TagListBuilder};
use serde_json::{Value, json};

use super::{OciError, Pagination, PathDigest, Ref, Repo};
use crate::http::auth::{Caller, audit};
use crate::http::{QueryPairs, State, content_length, header_text};
use crate::names::Tag;
use crate::registry::{Error, media_types};

/// The client's `Accept` values.
fn accept(req: &HttpRequest) -> Vec<String> {
    req.headers()
        .get_all(ACCEPT)
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect()
}

async fn read(
    state: &State,
    repo: &Repo,
    reference: &Ref,
    req: &HttpRequest,
    with_body: bool,
) -> Result<HttpResponse, OciError> {
    let reference = reference.lookup()?;
    let m = state
        .registry
        .get_manifest(&repo.0, &reference, &accept(req))
        .await?;
    let mut builder = HttpResponse::Ok();
    builder
        .insert_header((CONTENT_TYPE, m.media_type.as_str()))
        .insert_header(("Docker-Content-Digest", m.digest.as_str()))
        .insert_header((ETAG, format!("\"{}\"", m.digest)));
    Ok(if with_body {
        builder.body(m.body)
    } else {
        crate::http::range::Content {
            size: m.body.len() as u64,
            range: None,
            body: None,
        }
        .respond(builder)
    })
}

/// `GET /v2/<name>/manifests/<reference>`
pub async fn get(
    state: State,
    repo: Repo,
    reference: Ref,
    req: HttpRequest,
) -> Result<HttpResponse, OciError> {
    read(&state, &repo, &reference, &req, true).await
}

/// `HEAD /v2/<name>/manifests/<reference>`
pub async fn head(
    state: State,
    repo: Repo,
    reference: Ref,
    req: HttpRequest,
) -> Result<HttpResponse, OciError> {
    read(&state, &repo, &reference, &req, false).await
}

/// How far past the manifest limit a body is still read (and discarded) so the
/// client receives the 413.
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

/// Reads a manifest body of at most `limit` bytes. A larger one is read on to its
/// end (up to [`DRAIN_LIMIT`] more) before the 413: answering without reading it
/// closes the connection under a client still sending, which then sees a broken
/// pipe instead of the 413.
async fn read_body(mut payload: web::Payload, limit: u64) -> Result<bytes::Bytes, OciError> {
    let mut buf = bytes::BytesMut::new();
    let mut read: u64 = 0;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| OciError::from(Error::Body(e.to_string())))?;
        read = read.saturating_add(chunk.len() as u64);
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
    Ok(buf.freeze())
}

/// `PUT /v2/<name>/manifests/<reference>[?tag=...]`
pub async fn put(
    state: State,
    Repo(repo): Repo,
    reference_text: Ref,
    req: HttpRequest,
    payload: web::Payload,
    caller: Caller,
) -> Result<HttpResponse, OciError> {
    let reference = reference_text.parse()?;
    let limit = state.registry.limits().max_manifest_bytes;
    if content_length(&req).is_some_and(|n| n > limit.saturating_add(DRAIN_LIMIT)) {
        return Err(Error::TooLarge {
            what: "manifest",
            limit,
        }
        .into());
    }
    let query = QueryPairs::of(&req);
    let extra_tags = query
        .all("tag")
        .map(|t| Tag::parse(t).map_err(|e| OciError::from(Error::ReferenceInvalid(e))))
        .collect::<Result<Vec<_>, _>>()?;
    let bytes = read_body(payload, limit).await?;
    let pushed = state
        .registry
        .put_manifest(
            &repo,
            &reference,
            header_text(&req, "content-type"),
            bytes,
            &extra_tags,
        )
        .await?;
    audit(
        &caller,
        "push manifest",
        repo.as_str(),
        &reference_text.0,
        pushed.digest.as_str(),
    );
    let mut builder = HttpResponse::Created();
    builder
        .insert_header((LOCATION, format!("/v2/{repo}/manifests/{}", pushed.digest)))
        .insert_header(("Docker-Content-Digest", pushed.digest.as_str()));
    if let Some(subject) = &pushed.subject {
        builder.insert_header(("OCI-Subject", subject.as_str()));
    }
    if !extra_tags.is_empty() {
        for t in &pushed.tags {
            builder.append_header(("OCI-Tag", t.as_str()));
        }
    }
    Ok(builder.finish())
}

/// `DELETE /v2/<name>/manifests/<reference>`
pub async fn delete(
    state: State,
    Repo(repo): Repo,
    reference_text: Ref,
    caller: Caller,
) -> Result<HttpResponse, OciError> {
    let reference = reference_text.parse()?;
    state.registry.delete_manifest(&repo, &reference).await?;
    audit(
        &caller,
        "delete manifest",
        repo.as_str(),
        &reference_text.0,
        "",
    );
    Ok(HttpResponse::Accepted().finish())
}

/// A `Link: <path?query>; rel="next"` value.
fn link(path: &str, pairs: &[(&str, &str)]) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("<{path}?{query}>; rel=\"next\"")
}

/// The page size a listing used: `n` capped by the configured page.
fn effective_page(state: &State, n: Option<u32>) -> u32 {
    let max = state.registry.limits().max_page;
    n.unwrap_or(max).min(max)
}

/// `GET /v2/<name>/tags/list[?n=&last=]`
pub async fn tags(
    state: State,
    Repo(repo): Repo,
    page: Pagination,
) -> Result<HttpResponse, OciError> {
    let listed = state
        .registry
        .list_tags(&repo, page.last.as_deref(), page.n)
        .await?;
    let next = match (listed.more, listed.items.last()) {
        (true, Some(last)) => Some(link(
            &format!("/v2/{repo}/tags/list"),
            &[
                ("n", &effective_page(&state, page.n).to_string()),
                ("last", last),
            ],
        )),
        _ => None,
    };
    let list = TagListBuilder::default()
        .name(repo.as_str())
        .tags(listed.items)
        .build()
        .map_err(|e| Error::Internal(format!("tag list: {e}")))?;
    let mut builder = HttpResponse::Ok();
    if let Some(next) = next {
        builder.insert_header((LINK, next));
    }
    Ok(builder.json(&list))
}

/// `GET /v2/_catalog[?n=&last=]`
pub async fn catalog(state: State, page: Pagination) -> Result<HttpResponse, OciError> {
    let listed = state.registry.catalog(page.last.as_deref(), page.n).await?;
    let next = match (listed.more, listed.items.last()) {
        (true, Some(last)) => Some(link(
            "/v2/_catalog",
            &[
                ("n", &effective_page(&state, page.n).to_string()),
                ("last", last),
            ],
        )),
        _ => None,
    };
    let list = RepositoryListBuilder::default()
        .repositories(listed.items)
        .build()
        .map_err(|e| Error::Internal(format!("catalog: {e}")))?;
    let mut builder = HttpResponse::Ok();
    if let Some(next) = next {
        builder.insert_header((LINK, next));
    }
    Ok(builder.json(&list))
}

/// `GET /v2/<name>/referrers/<digest>[?artifactType=]`
pub async fn referrers(
    state: State,
    Repo(repo): Repo,
    PathDigest(subject): PathDigest,
    req: HttpRequest,
) -> Result<HttpResponse, OciError> {
    let query = QueryPairs::of(&req);
    let artifact_type = query.get("artifactType").filter(|a| !a.is_empty());
    let page = state
        .registry
        .referrers(&repo, &subject, artifact_type, query.get("last"))
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
    let mut builder = HttpResponse::Ok();
    builder.insert_header((CONTENT_TYPE, media_types::OCI_INDEX));
    if artifact_type.is_some() {
        builder.insert_header(("OCI-Filters-Applied", "artifactType"));
    }
    if page.more
        && let Some(last) = page.items.last()
    {
        let mut pairs = vec![("last", last.digest.as_str())];
        if let Some(a) = artifact_type {
            pairs.push(("artifactType", a));
        }
        builder.insert_header((
            LINK,
            link(&format!("/v2/{repo}/referrers/{subject}"), &pairs),
        ));
    }
    Ok(builder.body(body.to_string()))
}
