//! OCI distribution-spec v1.1 conformance suite, one test per requirement of the
//! official conformance checklist (push, pull, content discovery, content
//! management), plus the main-branch additions (`?tag=` on a push by digest,
//! `?digest-algorithm=`, sha512). Every test runs against the real binary, started
//! on a free port with its own data folder, and compares content byte for byte.
//!
//! The cases mirror the official Go suite (`opencontainers/distribution-spec`,
//! `conformance/`): the same request shapes, the same expectations.

mod common;

use common::*;
use futures_util::stream;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Base
// ---------------------------------------------------------------------------

#[tokio::test]
async fn base_endpoint_answers_200() {
    let s = Server::start().await;
    let r = s.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = s.req(Method::GET, "/v2").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------
// Push: blobs
// ---------------------------------------------------------------------------

#[tokio::test]
async fn push_blob_post_then_put_monolithic() {
    let s = Server::start().await;
    let data = content(1, 1500);
    let digest = sha256(&data);

    let loc = s.start_upload(REPO).await;
    assert!(
        loc.contains(&format!("/v2/{REPO}/blobs/uploads/")),
        "session Location: {loc}"
    );
    let r = s
        .req(Method::PUT, &with_query(&loc, &format!("digest={digest}")))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", data.len().to_string())
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    assert_eq!(
        header(&r, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    let blob_loc = location(&r);
    assert!(
        blob_loc.ends_with(&format!("/v2/{REPO}/blobs/{digest}")),
        "blob Location: {blob_loc}"
    );

    // The returned Location serves the content.
    let r = s.req(Method::GET, &blob_loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.unwrap()[..] == data[..]);
    s.assert_blob(REPO, &digest, &data).await;
}

#[tokio::test]
async fn push_blob_single_post_with_digest() {
    let s = Server::start().await;
    let data = content(2, 700);
    let digest = sha256(&data);
    let r = s
        .req(
            Method::POST,
            &format!("/v2/{REPO}/blobs/uploads/?digest={digest}"),
        )
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", data.len().to_string())
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    assert_eq!(
        header(&r, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    let blob_loc = location(&r);
    let r = s.req(Method::GET, &blob_loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.unwrap()[..] == data[..]);
    s.assert_blob(REPO, &digest, &data).await;
}

/// Sends `data` as PATCH chunks of `chunk` bytes with `Content-Range`, checking
/// each 202, its `Location` and its `Range`. Returns the last `Location`.
async fn patch_chunks(s: &Server, mut loc: String, data: &[u8], chunk: usize) -> String {
    let mut start = 0;
    while start < data.len() {
        let end = (start + chunk).min(data.len());
        let r = s
            .req(Method::PATCH, &loc)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", (end - start).to_string())
            .header("Content-Range", format!("{}-{}", start, end - 1))
            .body(data[start..end].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::ACCEPTED,
            "PATCH {start}-{}: {}",
            end - 1,
            text(r).await
        );
        assert_eq!(
            header(&r, "Range"),
            Some(format!("0-{}", end - 1)),
            "Range after PATCH"
        );
        loc = location(&r);
        start = end;
    }
    loc
}

#[tokio::test]
async fn push_blob_chunked_patch_with_content_range() {
    let s = Server::start().await;
    let data = content(3, 3 * 1024 - 5);
    let digest = sha256(&data);
    let loc = s.start_upload(REPO).await;
    let loc = patch_chunks(&s, loc, &data, 1024).await;
    let r = s
        .req(Method::PUT, &with_query(&loc, &format!("digest={digest}")))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    assert_eq!(
        header(&r, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    let blob_loc = location(&r);
    let r = s.req(Method::GET, &blob_loc).send().await.unwrap();
    assert!(r.bytes().await.unwrap()[..] == data[..]);
    s.assert_blob(REPO, &digest, &data).await;
}

#[tokio::test]
async fn push_blob_chunked_with_last_chunk_in_put() {
    let s = Server::start().await;
    let data = content(4, 3 * 1024 - 5);
    let digest = sha256(&data);
    let loc = s.start_upload(REPO).await;
    let loc = patch_chunks(&s, loc, &data[..2048], 1024).await;
    let r = s
        .req(Method::PUT, &with_query(&loc, &format!("digest={digest}")))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", (data.len() - 2048).to_string())
        .header("Content-Range", format!("2048-{}", data.len() - 1))
        .body(data[2048..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    assert_eq!(
        header(&r, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    location(&r);
    s.assert_blob(REPO, &digest, &data).await;
}

#[tokio::test]
async fn push_blob_streamed_patch_without_content_range() {
    let s = Server::start().await;
    let data = content(5, 200_000);
    let digest = sha256(&data);
    let loc = s.start_upload(REPO).await;

    // A true stream: chunked transfer encoding, no Content-Length, no Content-Range.
    let pieces: Vec<Result<bytes::Bytes, std::io::Error>> = data
        .chunks(30_000)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let r = s
        .req(Method::PATCH, &loc)
        .header("Content-Type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(stream::iter(pieces)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", text(r).await);
    assert_eq!(header(&r, "Range"), Some(format!("0-{}", data.len() - 1)));
    let loc = location(&r);

    let r = s
        .req(Method::PUT, &with_query(&loc, &format!("digest={digest}")))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    assert_eq!(
        header(&r, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    location(&r);
    s.assert_blob(REPO, &digest, &data).await;
}

#[tokio::test]
async fn push_blob_out_of_order_chunk_is_416() {
    let s = Server::start().await;
    let data = content(6, 3000);
    let (chunk1, chunk2) = data.split_at(1500);
    let digest = sha256(&data);
    let loc = s.start_upload(REPO).await;

    let patch = |loc: String, start: usize, bytes: &[u8]| {
        s.req(Method::PATCH, &loc)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", bytes.len().to_string())
            .header(
                "Content-Range",
                format!("{start}-{}", start + bytes.len() - 1),
            )
            .body(bytes.to_vec())
            .send()
    };

    // Skipping ahead: the second chunk first.
    let r = patch(loc.clone(), 1500, chunk2).await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::RANGE_NOT_SATISFIABLE,
        "{}",
        text(r).await
    );

    let r = patch(loc.clone(), 0, chunk1).await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", text(r).await);
    assert_eq!(header(&r, "Range").as_deref(), Some("0-1499"));
    let next = location(&r);

    // Going back: the first chunk again, at the stale session URL.
    let r = patch(loc.clone(), 0, chunk1).await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::RANGE_NOT_SATISFIABLE,
        "{}",
        text(r).await
    );

    // The session recovers: GET tells where it stands.
    let r = s.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "Range").as_deref(), Some("0-1499"));
    let status_loc = location(&r);
    assert_eq!(status_loc, next);

    // A final PUT whose chunk skips ahead is out of order too.
    let r = s
        .req(
            Method::PUT,
            &with_query(&status_loc, &format!("digest={digest}")),
        )
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", "500")
        .header("Content-Range", "2500-2999")
        .body(data[2500..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::RANGE_NOT_SATISFIABLE,
        "{}",
        text(r).await
    );
    let r = s.req(Method::GET, &status_loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "Range").as_deref(), Some("0-1499"));

    let r = patch(status_loc, 1500, chunk2).await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", text(r).await);
    let loc = location(&r);
    let r = s
        .req(Method::PUT, &with_query(&loc, &format!("digest={digest}")))
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    s.assert_blob(REPO, &digest, &data).await;
}

#[tokio::test]
async fn upload_status_is_204_with_range_and_location() {
    let s = Server::start().await;
    let loc = s.start_upload(REPO).await;
    let r = s.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    location(&r);

    let data = content(7, 777);
    let r = s
        .req(Method::PATCH, &loc)
        .header("Content-Range", "0-776")
        .header("Content-Length", "777")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = location(&r);

    let r = s.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "Range").as_deref(), Some("0-776"));
    let loc = location(&r);
    assert!(loc.contains(&format!("/v2/{REPO}/blobs/uploads/")), "{loc}");
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn upload_cancel_is_204_and_session_is_gone() {
    let s = Server::start().await;
    let loc = s.start_upload(REPO).await;
    let r = s
        .req(Method::PATCH, &loc)
        .header("Content-Range", "0-9")
        .body(content(8, 10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = location(&r);

    let r = s
        .req(Method::DELETE, &loc)
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", text(r).await);

    let r = s.req(Method::GET, &loc).send().await.unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    let r = s
        .req(Method::PATCH, &loc)
        .header("Content-Range", "10-19")
        .body(content(8, 10))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    let r = s.req(Method::DELETE, &loc).send().await.unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn mount_from_another_repository_is_201() {
    let s = Server::start().await;
    let data = content(9, 4096);
    let digest = s.push_blob(REPO, &data).await;

    let r = s
        .req(
            Method::POST,
            &format!("/v2/{REPO2}/blobs/uploads/?mount={digest}&from={REPO}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    assert_eq!(
        header(&r, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    let loc = location(&r);
    assert!(
        loc.ends_with(&format!("/v2/{REPO2}/blobs/{digest}")),
        "mount Location: {loc}"
    );
    let r = s.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.unwrap()[..] == data[..]);
    s.assert_blob(REPO2, &digest, &data).await;

    // The two repositories hold the blob independently.
    let r = s
        .req(Method::DELETE, &format!("/v2/{REPO}/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    s.assert_no_blob(REPO, &digest).await;
    s.assert_blob(REPO2, &digest, &data).await;
}

#[tokio::test]
async fn mount_fallback_opens_a_session_202() {
    let s = Server::start().await;
    let other = "packs/other/thing";
    let data = content(10, 2048);
    let digest = s.push_blob(other, &data).await;
    s.push_blob(REPO, b"makes the repository exist").await;

    // `from` names a repository that does not hold the blob (another one does).
    let r = s
        .req(
            Method::POST,
            &format!("/v2/{REPO2}/blobs/uploads/?mount={digest}&from={REPO}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", text(r).await);
    let loc = location(&r);
    assert!(
        loc.contains(&format!("/v2/{REPO2}/blobs/uploads/")),
        "session Location: {loc}"
    );
    // The session is an ordinary one: the client falls back to a push.
    let r = s
        .req(Method::PUT, &with_query(&loc, &format!("digest={digest}")))
        .header("Content-Type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    s.assert_blob(REPO2, &digest, &data).await;

    // A digest nobody has, from a repository that does not exist.
    let unknown = sha256(b"no such content anywhere");
    let r = s
        .req(
            Method::POST,
            &format!("/v2/{REPO2}/blobs/uploads/?mount={unknown}&from=packs/no/such"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", text(r).await);
    assert!(location(&r).contains(&format!("/v2/{REPO2}/blobs/uploads/")));

    // Without `from` and for a digest nobody has: a session.
    let r = s
        .req(
            Method::POST,
            &format!("/v2/{REPO2}/blobs/uploads/?mount={unknown}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", text(r).await);
    assert!(location(&r).contains(&format!("/v2/{REPO2}/blobs/uploads/")));
    s.assert_no_blob(REPO2, &unknown).await;
}

#[tokio::test]
async fn push_empty_blob_and_empty_json() {
    let s = Server::start().await;
    // The empty blob, in one POST and through a session closed by an empty PUT.
    let empty = sha256(b"");
    s.push_blob(REPO, b"").await;
    let r = s.get_blob(REPO, &empty).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "Content-Length").as_deref(), Some("0"));
    assert!(r.bytes().await.unwrap().is_empty());
    let r = s.head_blob(REPO, &empty).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "Content-Length").as_deref(), Some("0"));

    let loc = s.start_upload(REPO2).await;
    let r = s
        .req(Method::PUT, &with_query(&loc, &format!("digest={empty}")))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    s.assert_blob(REPO2, &empty, b"").await;

    // The empty JSON descriptor's blob, `{}`, through POST then PUT.
    let empty_json = sha256(b"{}");
    assert_eq!(
        empty_json,
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    let loc = s.start_upload(REPO).await;
    let r = s
        .req(
            Method::PUT,
            &with_query(&loc, &format!("digest={empty_json}")),
        )
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", "2")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    s.assert_blob(REPO, &empty_json, b"{}").await;
}

#[tokio::test]
async fn blob_digest_mismatch_is_400_digest_invalid_and_nothing_stored() {
    let s = Server::start().await;
    // As the official suite does: a digest of some content, and that content with
    // bytes appended actually sent.
    let cases = [
        "post only",
        "post+put",
        "chunked",
        "chunked and put chunk",
        "stream",
    ];
    for (i, case) in cases.iter().enumerate() {
        let good = content(20 + i as u64, 3 * 1024 - 5);
        let claimed = sha256(&good);
        let mut sent = good.clone();
        sent.extend_from_slice(b"oh no");
        let actual = sha256(&sent);

        let r = match *case {
            "post only" => s
                .req(
                    Method::POST,
                    &format!("/v2/{REPO}/blobs/uploads/?digest={claimed}"),
                )
                .header("Content-Type", "application/octet-stream")
                .body(sent.clone())
                .send()
                .await
                .unwrap(),
            "post+put" => {
                let loc = s.start_upload(REPO).await;
                s.req(Method::PUT, &with_query(&loc, &format!("digest={claimed}")))
                    .header("Content-Type", "application/octet-stream")
                    .body(sent.clone())
                    .send()
                    .await
                    .unwrap()
            }
            "chunked" => {
                let loc = s.start_upload(REPO).await;
                let loc = patch_chunks(&s, loc, &sent, 1024).await;
                s.req(Method::PUT, &with_query(&loc, &format!("digest={claimed}")))
                    .header("Content-Length", "0")
                    .send()
                    .await
                    .unwrap()
            }
            "chunked and put chunk" => {
                let loc = s.start_upload(REPO).await;
                let loc = patch_chunks(&s, loc, &sent[..2048], 1024).await;
                s.req(Method::PUT, &with_query(&loc, &format!("digest={claimed}")))
                    .header("Content-Range", format!("2048-{}", sent.len() - 1))
                    .body(sent[2048..].to_vec())
                    .send()
                    .await
                    .unwrap()
            }
            _ => {
                let loc = s.start_upload(REPO).await;
                let r = s
                    .req(Method::PATCH, &loc)
                    .body(sent.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::ACCEPTED);
                let loc = location(&r);
                s.req(Method::PUT, &with_query(&loc, &format!("digest={claimed}")))
                    .header("Content-Length", "0")
                    .send()
                    .await
                    .unwrap()
            }
        };
        let status = r.status();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case}");
        assert_error(r, status, "DIGEST_INVALID").await;
        s.assert_no_blob(REPO, &claimed).await;
        s.assert_no_blob(REPO, &actual).await;
    }
}

// ---------------------------------------------------------------------------
// Push: manifests
// ---------------------------------------------------------------------------

/// Checks a manifest GET against the pushed bytes and media type.
async fn assert_manifest(
    s: &Server,
    repo: &str,
    reference: &str,
    body: &[u8],
    media_type: &str,
    digest: &str,
) {
    let r = s.get_manifest(repo, reference).await;
    assert_eq!(r.status(), StatusCode::OK, "GET manifest {reference}");
    assert_eq!(
        header(&r, "Content-Type").as_deref(),
        Some(media_type),
        "{reference}"
    );
    assert_eq!(
        header(&r, "Content-Length"),
        Some(body.len().to_string()),
        "{reference}"
    );
    assert_eq!(
        header(&r, "Docker-Content-Digest").as_deref(),
        Some(digest),
        "{reference}"
    );
    let got = r.bytes().await.unwrap();
    assert!(
        got[..] == body[..],
        "manifest {reference}: served bytes differ from pushed bytes"
    );

    let r = s.head_manifest(repo, reference).await;
    assert_eq!(r.status(), StatusCode::OK, "HEAD manifest {reference}");
    assert_eq!(
        header(&r, "Content-Type").as_deref(),
        Some(media_type),
        "{reference}"
    );
    assert_eq!(
        header(&r, "Content-Length"),
        Some(body.len().to_string()),
        "{reference}"
    );
    assert_eq!(
        header(&r, "Docker-Content-Digest").as_deref(),
        Some(digest),
        "{reference}"
    );
    assert!(r.bytes().await.unwrap().is_empty(), "HEAD has no body");
}

#[tokio::test]
async fn manifest_put_by_tag() {
    let s = Server::start().await;
    let image = Image::new(30, 2);
    let r = s.push_image(REPO, "1.0.0", &image).await;
    assert_eq!(
        header(&r, "Docker-Content-Digest").as_deref(),
        Some(image.digest.as_str())
    );
    let loc = location(&r);
    let r = s
        .req(Method::GET, &loc)
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "Content-Type").as_deref(), Some(OCI_MANIFEST));
    assert!(r.bytes().await.unwrap()[..] == image.manifest[..]);

    assert_manifest(
        &s,
        REPO,
        "1.0.0",
        &image.manifest,
        OCI_MANIFEST,
        &image.digest,
    )
    .await;
    assert_manifest(
        &s,
        REPO,
        &image.digest,
        &image.manifest,
        OCI_MANIFEST,
        &image.digest,
    )
    .await;
    assert_eq!(s.tags(REPO, "").await.0, vec!["1.0.0"]);

    // The official suite pushes the same manifest under several tags.
    for i in 0..4 {
        s.push_manifest(REPO, &format!("test{i}"), OCI_MANIFEST, &image.manifest)
            .await;
    }
    assert_eq!(
        s.tags(REPO, "").await.0,
        vec!["1.0.0", "test0", "test1", "test2", "test3"]
    );

    // Tags match `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`: 128 characters at most.
    let longest = format!("_{}", "A.b-9".repeat(25)) + "xy";
    assert_eq!(longest.len(), 128);
    s.push_manifest(REPO, &longest, OCI_MANIFEST, &image.manifest)
        .await;
    assert_manifest(
        &s,
        REPO,
        &longest,
        &image.manifest,
        OCI_MANIFEST,
        &image.digest,
    )
    .await;
    for bad in [
        format!("{longest}z"),
        "-leading-dash".to_owned(),
        ".leading-dot".to_owned(),
    ] {
        let r = s
            .put_manifest(REPO, &bad, OCI_MANIFEST, &image.manifest)
            .await;
        assert_eq!(
            r.status(),
            StatusCode::BAD_REQUEST,
            "tag {bad}: {}",
            text(r).await
        );
        assert!(!s.tags(REPO, "").await.0.contains(&bad));
    }
}

#[tokio::test]
async fn manifest_put_by_digest() {
    let s = Server::start().await;
    let image = Image::new(31, 1);
    let r = s.push_image(REPO, &image.digest.clone(), &image).await;
    assert_eq!(
        header(&r, "Docker-Content-Digest").as_deref(),
        Some(image.digest.as_str())
    );
    let loc = location(&r);
    assert!(
        loc.ends_with(&format!("/v2/{REPO}/manifests/{}", image.digest)),
        "{loc}"
    );
    let r = s
        .req(Method::GET, &loc)
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.unwrap()[..] == image.manifest[..]);
    assert_manifest(
        &s,
        REPO,
        &image.digest,
        &image.manifest,
        OCI_MANIFEST,
        &image.digest,
    )
    .await;
    // A push by digest creates no tag.
    assert!(s.tags(REPO, "").await.0.is_empty());
}

#[tokio::test]
async fn manifest_put_without_layers_and_index_put() {
    let s = Server::start().await;
    // An image manifest with an empty layer list.
    let image = Image::new(32, 0);
    s.push_image(REPO, "no-layers", &image).await;
    assert_manifest(
        &s,
        REPO,
        "no-layers",
        &image.manifest,
        OCI_MANIFEST,
        &image.digest,
    )
    .await;

    // An index of two platform images, pushed after its children.
    let amd = Image::new(33, 1);
    let arm = Image::new(34, 1);
    s.push_image(REPO, &amd.digest, &amd).await;
    s.push_image(REPO, &arm.digest, &arm).await;
    let mut entries = vec![amd.descriptor(), arm.descriptor()];
    entries[0]["platform"] = json!({ "os": "linux", "architecture": "amd64" });
    entries[1]["platform"] = json!({ "os": "linux", "architecture": "arm64" });
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries,
    }))
    .unwrap();
    let digest = sha256(&index);
    let r = s.push_manifest(REPO, "index", OCI_INDEX, &index).await;
    assert_eq!(
        header(&r, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    assert_manifest(&s, REPO, "index", &index, OCI_INDEX, &digest).await;
    assert_manifest(&s, REPO, &digest, &index, OCI_INDEX, &digest).await;

    // An empty index.
    let empty =
        serde_json::to_vec(&json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [] }))
            .unwrap();
    let empty_digest = sha256(&empty);
    s.push_manifest(REPO, &empty_digest, OCI_INDEX, &empty)
        .await;
    assert_manifest(&s, REPO, &empty_digest, &empty, OCI_INDEX, &empty_digest).await;
}

#[tokio::test]
async fn manifest_put_moves_an_existing_tag() {
    let s = Server::start().await;
    let first = Image::new(35, 1);
    let second = Image::new(36, 1);
    s.push_image(REPO, "latest", &first).await;
    s.push_image(REPO, "latest", &second).await;
    assert_manifest(
        &s,
        REPO,
        "latest",
        &second.manifest,
        OCI_MANIFEST,
        &second.digest,
    )
    .await;
    // The old manifest stays, by digest.
    assert_manifest(
        &s,
        REPO,
        &first.digest,
        &first.manifest,
        OCI_MANIFEST,
        &first.digest,
    )
    .await;
    assert_eq!(s.tags(REPO, "").await.0, vec!["latest"]);
}

#[tokio::test]
async fn manifest_with_subject_answers_oci_subject() {
    let s = Server::start().await;
    let subject = Image::new(40, 1);
    s.push_image(REPO, "image", &subject).await;

    let layer = Blob::new(b"signature".to_vec(), "application/vnd.example.signature");
    let referrer = artifact(PACK_POLICY, layer, Some(&subject), json!({ "k": "v" }));
    let r = s
        .push_image(REPO, &referrer.digest.clone(), &referrer)
        .await;
    assert_eq!(
        header(&r, "OCI-Subject").as_deref(),
        Some(subject.digest.as_str())
    );
    assert_manifest(
        &s,
        REPO,
        &referrer.digest,
        &referrer.manifest,
        OCI_MANIFEST,
        &referrer.digest,
    )
    .await;

    // A subject that is not (yet) in the registry is allowed, and still answered.
    let missing = Image::new(41, 1);
    let layer = Blob::new(
        b"early signature".to_vec(),
        "application/vnd.example.signature",
    );
    let early = artifact(PACK_POLICY, layer, Some(&missing), json!({ "k": "early" }));
    let r = s.push_image(REPO, "tagged-artifact", &early).await;
    assert_eq!(
        header(&r, "OCI-Subject").as_deref(),
        Some(missing.digest.as_str())
    );
    let r = s
        .req(
            Method::GET,
            &format!("/v2/{REPO}/referrers/{}", missing.digest),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v = json_body(r).await;
    let listed: Vec<&str> = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![early.digest.as_str()]);

    // A manifest without subject gets no OCI-Subject.
    let plain = Image::new(42, 1);
    let r = s.push_image(REPO, "plain", &plain).await;
    assert_eq!(header(&r, "OCI-Subject"), None);
}

/// A manifest made `target` bytes long with one large annotation.
fn padded_manifest(config: &Blob, layer: &Blob, target: usize) -> Vec<u8> {
    let base = Image::build(
        config.clone(),
        vec![layer.clone()],
        json!({ "annotations": { "pad": "" } }),
    );
    let pad = target - base.manifest.len();
    let m = Image::build(
        config.clone(),
        vec![layer.clone()],
        json!({ "annotations": { "pad": "A".repeat(pad) } }),
    );
    assert_eq!(m.manifest.len(), target);
    m.manifest
}

#[tokio::test]
async fn manifest_of_nearly_4mb_is_accepted() {
    let s = Server::start().await;
    let image = Image::new(43, 1);
    for blob in image.blobs() {
        s.push_blob(REPO, &blob.data).await;
    }
    // The official suite's large manifest: 390 annotations of 10,000 bytes.
    let annotations: serde_json::Map<String, Value> = (0..390)
        .map(|i| (format!("large-annotation-{i}"), json!("A".repeat(10_000))))
        .collect();
    let large = Image::build(
        image.config.clone(),
        image.layers.clone(),
        json!({ "annotations": annotations }),
    );
    assert!(large.manifest.len() > 3_900_000);
    let r = s
        .push_manifest(REPO, "large-manifest", OCI_MANIFEST, &large.manifest)
        .await;
    assert_eq!(
        header(&r, "Docker-Content-Digest").as_deref(),
        Some(large.digest.as_str())
    );
    assert_manifest(
        &s,
        REPO,
        "large-manifest",
        &large.manifest,
        OCI_MANIFEST,
        &large.digest,
    )
    .await;

    // And one of exactly 4 MiB.
    let exact = padded_manifest(&image.config, &image.layers[0], 4 * 1024 * 1024);
    let digest = sha256(&exact);
    s.push_manifest(REPO, &digest, OCI_MANIFEST, &exact).await;
    assert_manifest(&s, REPO, &digest, &exact, OCI_MANIFEST, &digest).await;
}

#[tokio::test]
async fn manifest_over_4mib_is_413() {
    let s = Server::start().await;
    let image = Image::new(44, 1);
    for blob in image.blobs() {
        s.push_blob(REPO, &blob.data).await;
    }
    let big = padded_manifest(&image.config, &image.layers[0], 4 * 1024 * 1024 + 1);
    let digest = sha256(&big);
    let r = s.put_manifest(REPO, "too-big", OCI_MANIFEST, &big).await;
    assert_eq!(
        r.status(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        text(r).await
    );
    let r = s.put_manifest(REPO, &digest, OCI_MANIFEST, &big).await;
    assert_eq!(
        r.status(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        text(r).await
    );

    // Nothing was stored.
    assert_error(
        s.get_manifest(REPO, "too-big").await,
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_error(
        s.get_manifest(REPO, &digest).await,
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert!(s.tags(REPO, "").await.0.is_empty());
}

#[tokio::test]
async fn manifest_with_missing_blob_is_400_manifest_blob_unknown() {
    let s = Server::start().await;
    let image = Image::new(50, 2);
    // Config and the first layer only: the second layer is missing.
    s.push_blob(REPO, &image.config.data).await;
    s.push_blob(REPO, &image.layers[0].data).await;
    let r = s
        .put_manifest(REPO, "broken", OCI_MANIFEST, &image.manifest)
        .await;
    let v = assert_error(r, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
    assert!(
        v.to_string().contains(&image.layers[1].digest),
        "names the missing blob: {v}"
    );
    assert_error(
        s.get_manifest(REPO, "broken").await,
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_error(
        s.get_manifest(REPO, &image.digest).await,
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;

    // A missing config, by digest.
    let other = Image::new(51, 1);
    s.push_blob(REPO, &other.layers[0].data).await;
    let r = s
        .put_manifest(REPO, &other.digest, OCI_MANIFEST, &other.manifest)
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;

    // A blob held by another repository does not count.
    let third = Image::new(52, 1);
    for blob in third.blobs() {
        s.push_blob(REPO2, &blob.data).await;
    }
    let r = s
        .put_manifest(REPO, "elsewhere", OCI_MANIFEST, &third.manifest)
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;

    // An index whose child manifest is missing.
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [third.descriptor()],
    }))
    .unwrap();
    let r = s.put_manifest(REPO, "index", OCI_INDEX, &index).await;
    assert_error(r, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
    assert!(s.tags(REPO, "").await.0.is_empty());
}

#[tokio::test]
async fn manifest_with_wrong_digest_is_400_digest_invalid_and_nothing_stored() {
    let s = Server::start().await;
    let image = Image::new(53, 1);
    for blob in image.blobs() {
        s.push_blob(REPO, &blob.data).await;
    }
    // As the official suite does: whitespace appended, so the body no longer matches.
    let mut sent = image.manifest.clone();
    sent.extend_from_slice(b"  ");
    let actual = sha256(&sent);
    let r = s
        .put_manifest(REPO, &image.digest, OCI_MANIFEST, &sent)
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    assert_error(
        s.get_manifest(REPO, &image.digest).await,
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_error(
        s.get_manifest(REPO, &actual).await,
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let r = s.head_manifest(REPO, &actual).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // A malformed digest as the reference.
    let r = s
        .put_manifest(
            REPO,
            "sha256:baddigeststring",
            OCI_MANIFEST,
            &image.manifest,
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{}", text(r).await);
    let r = s.get_manifest(REPO, "sha256:baddigeststring").await;
    assert!(
        r.status() == StatusCode::BAD_REQUEST || r.status() == StatusCode::NOT_FOUND,
        "{}",
        text(r).await
    );
    assert_error(
        s.get_manifest(REPO, &image.digest).await,
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
}

// ---------------------------------------------------------------------------
// Pull
// ---------------------------------------------------------------------------

#[tokio::test]
async fn blob_get_and_head() {
    let s = Server::start().await;
    let data = content(60, 10_000);
    let digest = s.push_blob(REPO, &data).await;
    s.assert_blob(REPO, &digest, &data).await;

    let r = s.head_blob(REPO, &digest).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "Content-Length").as_deref(), Some("10000"));
    assert_eq!(
        header(&r, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    assert!(r.bytes().await.unwrap().is_empty(), "HEAD has no body");
}

fn blob_2048() -> Vec<u8> {
    content(61, 2048)
}

#[tokio::test]
async fn blob_range_is_206_with_content_range() {
    let s = Server::start().await;
    let data = blob_2048();
    let digest = s.push_blob(REPO, &data).await;
    let cases: [(&str, std::ops::Range<usize>); 4] = [
        ("bytes=500-1499", 500..1500),
        ("bytes=500-", 500..2048),
        ("bytes=-500", 1548..2048),
        ("bytes=2000-5000", 2000..2048),
    ];
    for (range, want) in cases {
        let r = s
            .req(Method::GET, &format!("/v2/{REPO}/blobs/{digest}"))
            .header("Range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            header(&r, "Content-Length"),
            Some(want.len().to_string()),
            "{range}"
        );
        assert_eq!(
            header(&r, "Content-Range"),
            Some(format!("bytes {}-{}/2048", want.start, want.end - 1)),
            "{range}"
        );
        let body = r.bytes().await.unwrap();
        assert!(body[..] == data[want.clone()], "{range}: wrong bytes");
    }
}

#[tokio::test]
async fn blob_range_unsatisfiable_is_416() {
    let s = Server::start().await;
    let data = blob_2048();
    let digest = s.push_blob(REPO, &data).await;
    for range in ["bytes=5000-10000", "bytes=2048-", "bytes=500-0"] {
        let r = s
            .req(Method::GET, &format!("/v2/{REPO}/blobs/{digest}"))
            .header("Range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(
            header(&r, "Content-Range").as_deref(),
            Some("bytes */2048"),
            "{range}"
        );
        assert!(
            r.bytes().await.unwrap().is_empty(),
            "{range}: 416 has an empty body"
        );
    }
}

#[tokio::test]
async fn manifest_get_and_head_by_tag_and_digest() {
    let s = Server::start().await;
    let image = Image::new(62, 3);
    s.push_image(REPO, "v1", &image).await;
    assert_manifest(&s, REPO, "v1", &image.manifest, OCI_MANIFEST, &image.digest).await;
    assert_manifest(
        &s,
        REPO,
        &image.digest,
        &image.manifest,
        OCI_MANIFEST,
        &image.digest,
    )
    .await;
    for blob in image.blobs() {
        s.assert_blob(REPO, &blob.digest, &blob.data).await;
    }
}

#[tokio::test]
async fn unknown_blob_is_404_blob_unknown() {
    let s = Server::start().await;
    s.push_blob(REPO, b"repository exists").await;
    let unknown = sha256(b"never pushed");
    s.assert_no_blob(REPO, &unknown).await;

    // A blob of another repository is unknown here.
    let data = content(63, 100);
    let digest = s.push_blob(REPO2, &data).await;
    s.assert_no_blob(REPO, &digest).await;
    s.assert_blob(REPO2, &digest, &data).await;
}

#[tokio::test]
async fn unknown_manifest_is_404_manifest_unknown() {
    let s = Server::start().await;
    let image = Image::new(64, 1);
    s.push_image(REPO, "exists", &image).await;
    assert_error(
        s.get_manifest(REPO, "missing-tag").await,
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let unknown = sha256(&content(65, 1024));
    assert_error(
        s.get_manifest(REPO, &unknown).await,
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_eq!(
        s.head_manifest(REPO, "missing-tag").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.head_manifest(REPO, &unknown).await.status(),
        StatusCode::NOT_FOUND
    );
    // A manifest of another repository is unknown here.
    assert_eq!(
        s.get_manifest(REPO2, &image.digest).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get_manifest(REPO2, "exists").await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn unknown_repository_is_404() {
    let s = Server::start().await;
    let r = s
        .req(Method::GET, "/v2/packs/no/such/tags/list")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;
    assert_eq!(
        s.get_manifest("packs/no/such", "latest").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.head_blob("packs/no/such", &sha256(b"x")).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn invalid_requests_answer_oci_error_codes() {
    let s = Server::start().await;
    // An invalid repository name.
    let r = s
        .req(Method::GET, "/v2/Packs/Team/tags/list")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "NAME_INVALID").await;
    // An upload id that names no session.
    let r = s
        .req(
            Method::GET,
            &format!(
                "/v2/{REPO}/blobs/uploads/{}",
                "6a3a9e0c-4b9d-4f6e-9c43-1f0bdb6d8a11"
            ),
        )
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    // A malformed manifest, as the official "error codes" case sends it.
    let r = s
        .put_manifest(
            REPO,
            "sha256:totallywrong",
            OCI_MANIFEST,
            br#"{"schemaVersion": 2, "mediaType": "#,
        )
        .await;
    let status = r.status();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let v = json_body(r).await;
    let known = [
        "BLOB_UNKNOWN",
        "BLOB_UPLOAD_INVALID",
        "BLOB_UPLOAD_UNKNOWN",
        "DIGEST_INVALID",
        "MANIFEST_BLOB_UNKNOWN",
        "MANIFEST_INVALID",
        "MANIFEST_UNKNOWN",
        "NAME_INVALID",
        "NAME_UNKNOWN",
        "SIZE_INVALID",
        "UNAUTHORIZED",
        "DENIED",
        "UNSUPPORTED",
        "TOOMANYREQUESTS",
    ];
    let code = v["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(known.contains(&code.as_str()), "{v}");
    // A malformed manifest body under a tag.
    s.push_blob(REPO, b"x").await;
    let r = s.put_manifest(REPO, "bad", OCI_MANIFEST, b"not json").await;
    assert_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
}

// ---------------------------------------------------------------------------
// Content discovery: tags
// ---------------------------------------------------------------------------

/// Pushes one small manifest under each tag.
async fn push_tags(s: &Server, repo: &str, tags: &[&str]) -> Image {
    let image = Image::new(70, 1);
    for blob in image.blobs() {
        s.push_blob(repo, &blob.data).await;
    }
    for tag in tags {
        s.push_manifest(repo, tag, OCI_MANIFEST, &image.manifest)
            .await;
    }
    image
}

#[tokio::test]
async fn tags_list_is_in_lexical_order() {
    let s = Server::start().await;
    let tags = [
        "v2", "v10", "1.10.0", "1.2.0", "latest", "alpha", "beta2", "beta10",
    ];
    push_tags(&s, REPO, &tags).await;
    let (listed, link) = s.tags(REPO, "").await;
    let mut want: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    want.sort_by_key(|t| t.to_lowercase());
    assert_eq!(listed, want);
    assert_eq!(
        listed,
        [
            "1.10.0", "1.2.0", "alpha", "beta10", "beta2", "latest", "v10", "v2"
        ]
    );
    assert_eq!(link, None);
}

#[tokio::test]
async fn tags_list_n_last_and_link_pagination() {
    let s = Server::start().await;
    let tags = ["t0", "t1", "t2", "t3", "t4", "t5", "t6"];
    push_tags(&s, REPO, &tags).await;

    // `n` limits the page; a Link leads to the next one, until the end.
    let (first, link) = s.tags(REPO, "?n=3").await;
    assert_eq!(first, ["t0", "t1", "t2"]);
    let mut pages = first.clone();
    let mut link = link;
    let mut hops = 0;
    while let Some(l) = link {
        let next = next_link(&l);
        assert!(next.contains("/tags/list"), "{next}");
        let r = s.req(Method::GET, &next).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        link = header(&r, "Link");
        let page = strings(&json_body(r).await["tags"]);
        assert!(!page.is_empty() && page.len() <= 3, "{page:?}");
        pages.extend(page);
        hops += 1;
        assert!(hops < 10, "Link never ends");
    }
    assert_eq!(pages, tags);
    assert_eq!(hops, 2);

    // `last` starts after the given tag, exclusively, whether or not it exists.
    let (after, _) = s.tags(REPO, "?n=3&last=t2").await;
    assert_eq!(after, ["t3", "t4", "t5"]);
    let (after, link) = s.tags(REPO, "?last=t3").await;
    assert_eq!(after, ["t4", "t5", "t6"]);
    assert_eq!(link, None);
    let (after, _) = s.tags(REPO, "?last=t35").await;
    assert_eq!(after, ["t4", "t5", "t6"]);
    let (after, link) = s.tags(REPO, "?last=t6").await;
    assert!(after.is_empty());
    assert_eq!(link, None);

    // `n` larger than the list: everything, and no Link.
    let (all, link) = s.tags(REPO, "?n=100").await;
    assert_eq!(all, tags);
    assert_eq!(link, None);
    // Exactly `n` left: no further page.
    let (all, link) = s.tags(REPO, "?n=7").await;
    assert_eq!(all, tags);
    assert_eq!(link, None);
}

#[tokio::test]
async fn tags_list_n_zero_is_empty_without_link() {
    let s = Server::start().await;
    push_tags(&s, REPO, &["a", "b"]).await;
    let (tags, link) = s.tags(REPO, "?n=0").await;
    assert!(tags.is_empty(), "{tags:?}");
    assert_eq!(link, None);
}

#[tokio::test]
async fn tags_list_of_repository_without_tags_is_200() {
    let s = Server::start().await;
    s.push_blob(REPO, b"only a blob").await;
    let (tags, link) = s.tags(REPO, "").await;
    assert!(tags.is_empty());
    assert_eq!(link, None);
}

// ---------------------------------------------------------------------------
// Content discovery: referrers
// ---------------------------------------------------------------------------

async fn referrers(
    s: &Server,
    repo: &str,
    subject: &str,
    query: &str,
) -> (Value, reqwest::header::HeaderMap) {
    let r = s
        .req(
            Method::GET,
            &format!("/v2/{repo}/referrers/{subject}{query}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "referrers{query}");
    assert_eq!(header(&r, "Content-Type").as_deref(), Some(OCI_INDEX));
    let headers = r.headers().clone();
    let v = json_body(r).await;
    assert_eq!(v["schemaVersion"], json!(2), "{v}");
    assert_eq!(v["mediaType"], json!(OCI_INDEX), "{v}");
    assert!(v["manifests"].is_array(), "{v}");
    (v, headers)
}

fn listed_digests(v: &Value) -> Vec<String> {
    let mut d: Vec<String> = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_owned())
        .collect();
    d.sort();
    d
}

/// A referrers entry as the spec describes it.
fn entry(
    media_type: &str,
    digest: &str,
    size: usize,
    artifact_type: &str,
    annotations: Value,
) -> Value {
    json!({
        "mediaType": media_type, "digest": digest, "size": size,
        "artifactType": artifact_type, "annotations": annotations,
    })
}

struct Referrers {
    subject: Image,
    expected: Vec<Value>,
}

async fn push_referrers(s: &Server) -> Referrers {
    let subject = Image::new(80, 1);
    s.push_image(REPO, "image", &subject).await;

    let ann = |n: &str| json!({ "org.opencontainers.conformance": format!("hello conformance test {n}") });
    let mut expected = Vec::new();

    // Artifacts with an empty config and an artifactType.
    for (i, ty) in [PACK_POLICY, PACK_POLICY, "application/vnd.example.sbom"]
        .iter()
        .enumerate()
    {
        let layer = Blob::new(content(81 + i as u64, 64), ty);
        let a = artifact(ty, layer, Some(&subject), ann(&i.to_string()));
        s.push_image(REPO, &format!("tagged-artifact{i}"), &a).await;
        expected.push(entry(
            OCI_MANIFEST,
            &a.digest,
            a.manifest.len(),
            ty,
            ann(&i.to_string()),
        ));
    }

    // An image manifest with a subject and no artifactType: the config's media type stands in.
    let mut image = Image::new(84, 1);
    image = Image::build(
        image.config.clone(),
        image.layers.clone(),
        json!({ "subject": subject.descriptor(), "annotations": ann("image") }),
    );
    s.push_image(REPO, &image.digest.clone(), &image).await;
    expected.push(entry(
        OCI_MANIFEST,
        &image.digest,
        image.manifest.len(),
        OCI_CONFIG,
        ann("image"),
    ));

    // An index with a subject.
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "artifactType": "application/vnd.example.index",
        "manifests": [], "subject": subject.descriptor(), "annotations": ann("index"),
    }))
    .unwrap();
    let index_digest = sha256(&index);
    let r = s
        .push_manifest(REPO, &index_digest, OCI_INDEX, &index)
        .await;
    assert_eq!(
        header(&r, "OCI-Subject").as_deref(),
        Some(subject.digest.as_str())
    );
    expected.push(entry(
        OCI_INDEX,
        &index_digest,
        index.len(),
        "application/vnd.example.index",
        ann("index"),
    ));

    // A referrer in another repository is not listed here.
    for blob in subject.blobs() {
        s.push_blob(REPO2, &blob.data).await;
    }
    s.push_manifest(REPO2, "image", OCI_MANIFEST, &subject.manifest)
        .await;
    let layer = Blob::new(content(85, 64), PACK_POLICY);
    let other = artifact(PACK_POLICY, layer, Some(&subject), ann("other"));
    s.push_image(REPO2, &other.digest.clone(), &other).await;

    Referrers { subject, expected }
}

#[tokio::test]
async fn referrers_list_manifests_with_the_subject() {
    let s = Server::start().await;
    let refs = push_referrers(&s).await;
    let (v, headers) = referrers(&s, REPO, &refs.subject.digest, "").await;
    assert!(!headers.contains_key("OCI-Filters-Applied"));
    let mut got: Vec<Value> = v["manifests"].as_array().unwrap().clone();
    got.sort_by_key(|d| d["digest"].as_str().unwrap().to_owned());
    let mut want = refs.expected.clone();
    want.sort_by_key(|d| d["digest"].as_str().unwrap().to_owned());
    assert_eq!(got, want);
    assert_eq!(headers.get("Link"), None);
}

#[tokio::test]
async fn referrers_artifact_type_filter() {
    let s = Server::start().await;
    let refs = push_referrers(&s).await;
    for ty in [
        PACK_POLICY,
        "application/vnd.example.sbom",
        OCI_CONFIG,
        "application/vnd.example.index",
    ] {
        let query = format!("?artifactType={}", enc(ty));
        let (v, headers) = referrers(&s, REPO, &refs.subject.digest, &query).await;
        let applied = headers
            .get("OCI-Filters-Applied")
            .map(|h| {
                h.to_str()
                    .unwrap()
                    .split(',')
                    .map(|f| f.trim().to_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        assert!(
            applied.contains(&"artifactType".to_owned()),
            "OCI-Filters-Applied: {applied:?}"
        );
        let mut want: Vec<String> = refs
            .expected
            .iter()
            .filter(|e| e["artifactType"] == json!(ty))
            .map(|e| e["digest"].as_str().unwrap().to_owned())
            .collect();
        want.sort();
        assert!(!want.is_empty());
        assert_eq!(listed_digests(&v), want, "{ty}");
        for m in v["manifests"].as_array().unwrap() {
            assert_eq!(m["artifactType"], json!(ty));
        }
    }
    // A type nobody has: an empty list, still filtered.
    let (v, headers) = referrers(
        &s,
        REPO,
        &refs.subject.digest,
        "?artifactType=application/vnd.none",
    )
    .await;
    assert!(listed_digests(&v).is_empty());
    assert!(headers.contains_key("OCI-Filters-Applied"));
}

#[tokio::test]
async fn referrers_of_unknown_subject_is_an_empty_200() {
    let s = Server::start().await;
    // Before anything is pushed, as the official suite's first check does.
    let unknown = sha256(b"random subject");
    let (v, _) = referrers(&s, REPO, &unknown, "").await;
    assert!(listed_digests(&v).is_empty());

    s.push_image(REPO, "image", &Image::new(86, 1)).await;
    let (v, _) = referrers(&s, REPO, &unknown, "").await;
    assert!(listed_digests(&v).is_empty());
    let (v, _) = referrers(&s, REPO, &sha512(b"random subject"), "").await;
    assert!(listed_digests(&v).is_empty());
}

#[tokio::test]
async fn referrers_link_pagination() {
    let s = Server::start().await;
    let subject = Image::new(87, 1);
    s.push_image(REPO, "image", &subject).await;
    let layer = Blob::new(b"shared layer".to_vec(), "application/vnd.example.a");
    s.push_blob(REPO, &layer.data).await;
    s.push_blob(REPO, b"{}").await;

    // More referrers than one page holds (the registry pages at 500).
    let mut all_a = Vec::new();
    for i in 0..502 {
        let a = artifact(
            "application/vnd.example.a",
            layer.clone(),
            Some(&subject),
            json!({ "i": i.to_string() }),
        );
        s.push_manifest(REPO, &a.digest, OCI_MANIFEST, &a.manifest)
            .await;
        all_a.push(a.digest);
    }
    let b = artifact(
        "application/vnd.example.b",
        layer.clone(),
        Some(&subject),
        json!({ "i": "b" }),
    );
    s.push_manifest(REPO, &b.digest, OCI_MANIFEST, &b.manifest)
        .await;
    let mut all = all_a.clone();
    all.push(b.digest.clone());
    all.sort();
    all_a.sort();

    for (query, want, filtered) in [
        ("", &all, false),
        ("?artifactType=application/vnd.example.a", &all_a, true),
    ] {
        let (v, headers) = referrers(&s, REPO, &subject.digest, query).await;
        let mut seen = listed_digests(&v);
        let mut link = headers.get("Link").map(|l| l.to_str().unwrap().to_owned());
        assert!(link.is_some(), "a Link to the next page{query}");
        let mut hops = 0;
        while let Some(l) = link {
            let next = next_link(&l);
            assert!(
                next.contains(&format!("/v2/{REPO}/referrers/{}", subject.digest)),
                "{next}"
            );
            let r = s.req(Method::GET, &next).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(header(&r, "Content-Type").as_deref(), Some(OCI_INDEX));
            if filtered {
                assert!(
                    header_values(&r, "OCI-Filters-Applied").contains(&"artifactType".to_owned())
                );
            }
            link = header(&r, "Link");
            let page = json_body(r).await;
            if filtered {
                for m in page["manifests"].as_array().unwrap() {
                    assert_eq!(m["artifactType"], json!("application/vnd.example.a"));
                }
            }
            seen.extend(listed_digests(&page));
            hops += 1;
            assert!(hops < 10, "Link never ends");
        }
        let total = seen.len();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), total, "an entry was listed twice{query}");
        assert_eq!(&seen, want, "{query}");
    }
}

// ---------------------------------------------------------------------------
// Content discovery: catalog
// ---------------------------------------------------------------------------

#[tokio::test]
async fn catalog_n_last_and_link() {
    let s = Server::start().await;
    let repos = [
        "packs/team/policy-x",
        "packs/a/one",
        "packs/b/two",
        "packs/a/two",
        "zeta/q/r",
    ];
    for r in repos {
        s.push_blob(r, r.as_bytes()).await;
    }
    let mut want: Vec<String> = repos.iter().map(|r| r.to_string()).collect();
    want.sort();

    let get = |q: &str| s.req(Method::GET, &format!("/v2/_catalog{q}")).send();
    let r = get("").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "Link"), None);
    assert_eq!(strings(&json_body(r).await["repositories"]), want);

    let r = get("?n=2").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut link = header(&r, "Link");
    let mut seen = strings(&json_body(r).await["repositories"]);
    assert_eq!(seen, want[..2]);
    let mut hops = 0;
    while let Some(l) = link {
        let r = s.req(Method::GET, &next_link(&l)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        link = header(&r, "Link");
        let page = strings(&json_body(r).await["repositories"]);
        assert!(!page.is_empty() && page.len() <= 2);
        seen.extend(page);
        hops += 1;
        assert!(hops < 10, "Link never ends");
    }
    assert_eq!(seen, want);

    let r = get(&format!("?last={}", want[1])).await.unwrap();
    assert_eq!(strings(&json_body(r).await["repositories"]), want[2..]);
    let r = get("?n=0").await.unwrap();
    assert_eq!(header(&r, "Link"), None);
    assert!(strings(&json_body(r).await["repositories"]).is_empty());
}

// ---------------------------------------------------------------------------
// Content management
// ---------------------------------------------------------------------------

#[tokio::test]
async fn delete_tag_removes_only_the_tag() {
    let s = Server::start().await;
    let image = push_tags(&s, REPO, &["tagtest0", "keep"]).await;
    let r = s
        .req(Method::DELETE, &format!("/v2/{REPO}/manifests/tagtest0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", text(r).await);

    assert_error(
        s.get_manifest(REPO, "tagtest0").await,
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_eq!(
        s.head_manifest(REPO, "tagtest0").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_manifest(
        &s,
        REPO,
        "keep",
        &image.manifest,
        OCI_MANIFEST,
        &image.digest,
    )
    .await;
    assert_manifest(
        &s,
        REPO,
        &image.digest,
        &image.manifest,
        OCI_MANIFEST,
        &image.digest,
    )
    .await;
    assert_eq!(s.tags(REPO, "").await.0, vec!["keep"]);
    for blob in image.blobs() {
        s.assert_blob(REPO, &blob.digest, &blob.data).await;
    }

    let r = s
        .req(Method::DELETE, &format!("/v2/{REPO}/manifests/tagtest0"))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn delete_manifest_by_digest_removes_it_and_its_tags() {
    let s = Server::start().await;
    let image = push_tags(&s, REPO, &["a", "b"]).await;
    let other = Image::new(90, 1);
    s.push_image(REPO, "other", &other).await;

    let r = s
        .req(
            Method::DELETE,
            &format!("/v2/{REPO}/manifests/{}", image.digest),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", text(r).await);

    assert_error(
        s.get_manifest(REPO, &image.digest).await,
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_eq!(
        s.head_manifest(REPO, &image.digest).await.status(),
        StatusCode::NOT_FOUND
    );
    for tag in ["a", "b"] {
        assert_error(
            s.get_manifest(REPO, tag).await,
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
        )
        .await;
    }
    assert_eq!(s.tags(REPO, "").await.0, vec!["other"]);
    assert_manifest(
        &s,
        REPO,
        "other",
        &other.manifest,
        OCI_MANIFEST,
        &other.digest,
    )
    .await;

    let r = s
        .req(
            Method::DELETE,
            &format!("/v2/{REPO}/manifests/{}", image.digest),
        )
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;

    // A deleted referrer leaves the referrers list.
    let layer = Blob::new(b"sig".to_vec(), "application/vnd.example.signature");
    let sig = artifact(PACK_POLICY, layer, Some(&other), json!({ "k": "v" }));
    s.push_image(REPO, &sig.digest.clone(), &sig).await;
    let (v, _) = referrers(&s, REPO, &other.digest, "").await;
    assert_eq!(listed_digests(&v), vec![sig.digest.clone()]);
    let r = s
        .req(
            Method::DELETE,
            &format!("/v2/{REPO}/manifests/{}", sig.digest),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let (v, _) = referrers(&s, REPO, &other.digest, "").await;
    assert!(listed_digests(&v).is_empty());
}

#[tokio::test]
async fn delete_blob_is_202_then_404() {
    let s = Server::start().await;
    let data = content(91, 3000);
    let digest = s.push_blob(REPO, &data).await;
    let keep = s.push_blob(REPO, b"another blob").await;

    let r = s
        .req(Method::DELETE, &format!("/v2/{REPO}/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", text(r).await);
    s.assert_no_blob(REPO, &digest).await;
    s.assert_blob(REPO, &keep, b"another blob").await;

    let r = s
        .req(Method::DELETE, &format!("/v2/{REPO}/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
}

// ---------------------------------------------------------------------------
// Main-branch additions: ?tag=, ?digest-algorithm=, sha512
// ---------------------------------------------------------------------------

#[tokio::test]
async fn manifest_put_by_digest_with_tag_params() {
    let s = Server::start().await;
    let image = Image::new(100, 1);
    for blob in image.blobs() {
        s.push_blob(REPO, &blob.data).await;
    }
    let r = s
        .req(
            Method::PUT,
            &format!("/v2/{REPO}/manifests/{}?tag=a&tag=b", image.digest),
        )
        .header("Content-Type", OCI_MANIFEST)
        .body(image.manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    assert_eq!(
        header(&r, "Docker-Content-Digest").as_deref(),
        Some(image.digest.as_str())
    );
    let mut tags = header_values(&r, "OCI-Tag");
    tags.sort();
    assert_eq!(tags, ["a", "b"]);
    location(&r);

    assert_manifest(&s, REPO, "a", &image.manifest, OCI_MANIFEST, &image.digest).await;
    assert_manifest(&s, REPO, "b", &image.manifest, OCI_MANIFEST, &image.digest).await;
    assert_eq!(s.tags(REPO, "").await.0, vec!["a", "b"]);

    // One invalid tag refuses the whole push: no manifest, no tag.
    let other = Image::new(99, 1);
    for blob in other.blobs() {
        s.push_blob(REPO, &blob.data).await;
    }
    let r = s
        .req(
            Method::PUT,
            &format!("/v2/{REPO}/manifests/{}?tag=c&tag=-bad", other.digest),
        )
        .header("Content-Type", OCI_MANIFEST)
        .body(other.manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{}", text(r).await);
    assert_eq!(
        s.get_manifest(REPO, &other.digest).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(s.tags(REPO, "").await.0, vec!["a", "b"]);
}

#[tokio::test]
async fn upload_with_digest_algorithm_sha512() {
    let s = Server::start().await;
    let data = content(101, 5000);
    let digest = sha512(&data);

    let r = s
        .req(
            Method::POST,
            &format!("/v2/{REPO}/blobs/uploads/?digest-algorithm=sha512"),
        )
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", text(r).await);
    let loc = location(&r);
    let loc = patch_chunks(&s, loc, &data[..4000], 2000).await;
    let r = s
        .req(Method::PUT, &with_query(&loc, &format!("digest={digest}")))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", "4000-4999")
        .header("Content-Length", "1000")
        .body(data[4000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    assert_eq!(
        header(&r, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    let blob_loc = location(&r);
    assert!(
        blob_loc.ends_with(&format!("/v2/{REPO}/blobs/{digest}")),
        "{blob_loc}"
    );
    s.assert_blob(REPO, &digest, &data).await;
    let r = s.head_blob(REPO, &digest).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );

    // POST ?digest-algorithm then a monolithic PUT.
    let data = content(102, 900);
    let digest = sha512(&data);
    let r = s
        .req(
            Method::POST,
            &format!("/v2/{REPO}/blobs/uploads/?digest-algorithm=sha512"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = s
        .req(
            Method::PUT,
            &with_query(&location(&r), &format!("digest={digest}")),
        )
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    s.assert_blob(REPO, &digest, &data).await;
}

#[tokio::test]
async fn unsupported_digest_algorithm_is_400() {
    let s = Server::start().await;
    let r = s
        .req(
            Method::POST,
            &format!("/v2/{REPO}/blobs/uploads/?digest-algorithm=md5"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{}", text(r).await);
    let r = s
        .req(
            Method::POST,
            &format!("/v2/{REPO}/blobs/uploads/?digest=md5:d41d8cd98f00b204e9800998ecf8427e"),
        )
        .body("")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
}

#[tokio::test]
async fn sha512_monolithic_push() {
    let s = Server::start().await;
    let data = content(103, 4096);
    let digest = sha512(&data);
    let r = s
        .req(
            Method::POST,
            &format!("/v2/{REPO}/blobs/uploads/?digest={digest}"),
        )
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", data.len().to_string())
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    assert_eq!(
        header(&r, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    let r2 = s.req(Method::GET, &location(&r)).send().await.unwrap();
    assert!(r2.bytes().await.unwrap()[..] == data[..]);
    s.assert_blob(REPO, &digest, &data).await;

    // The same content under sha256 is another blob, unknown until pushed.
    s.assert_no_blob(REPO, &sha256(&data)).await;
    // A wrong sha512 is refused, and nothing is stored.
    let mut other = data.clone();
    other.push(0);
    let r = s
        .req(
            Method::POST,
            &format!("/v2/{REPO}/blobs/uploads/?digest={}", sha512(&data[1..])),
        )
        .body(other.clone())
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    s.assert_no_blob(REPO, &sha512(&data[1..])).await;
    s.assert_no_blob(REPO, &sha512(&other)).await;
}

#[tokio::test]
async fn sha512_blobs_without_algorithm_hint() {
    // The official suite pushes sha512 blobs through sessions opened without
    // `?digest-algorithm=`, naming the algorithm only in the closing digest.
    let s = Server::start().await;

    let data = content(104, 512);
    let digest = sha512(&data);
    let loc = s.start_upload(REPO).await;
    let r = s
        .req(Method::PUT, &with_query(&loc, &format!("digest={digest}")))
        .header("Content-Type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "post+put: {}",
        text(r).await
    );
    s.assert_blob(REPO, &digest, &data).await;

    let data = content(105, 3 * 1024 - 5);
    let digest = sha512(&data);
    let loc = s.start_upload(REPO).await;
    let loc = patch_chunks(&s, loc, &data, 1024).await;
    let r = s
        .req(Method::PUT, &with_query(&loc, &format!("digest={digest}")))
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "chunked: {}",
        text(r).await
    );
    s.assert_blob(REPO, &digest, &data).await;

    let data = content(106, 700);
    let digest = sha512(&data);
    let loc = s.start_upload(REPO).await;
    let r = s
        .req(Method::PATCH, &loc)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = s
        .req(
            Method::PUT,
            &with_query(&location(&r), &format!("digest={digest}")),
        )
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "stream: {}", text(r).await);
    s.assert_blob(REPO, &digest, &data).await;

    // A wrong sha512 through a session is refused too.
    let loc = s.start_upload(REPO).await;
    let r = s
        .req(
            Method::PUT,
            &with_query(&loc, &format!("digest={}", sha512(b"not this"))),
        )
        .body("this")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    s.assert_no_blob(REPO, &sha512(b"not this")).await;
}

#[tokio::test]
async fn sha512_manifests_and_index_with_tag_params() {
    let s = Server::start().await;
    // An image whose blobs and manifest are all addressed by sha512.
    let config = Blob::sha512(
        serde_json::to_vec(&json!({ "architecture": "amd64", "os": "linux", "rootfs": { "type": "layers", "diff_ids": [] } }))
            .unwrap(),
        OCI_CONFIG,
    );
    let layer = Blob::sha512(content(107, 2000), OCI_LAYER);
    let image = Image::build(config, vec![layer], json!({})).with_sha512_digest();
    for blob in image.blobs() {
        s.push_blob_as(REPO, &blob.data, &blob.digest).await;
    }
    let r = s
        .req(
            Method::PUT,
            &format!(
                "/v2/{REPO}/manifests/{}?tag=tag-param-sha512-0",
                image.digest
            ),
        )
        .header("Content-Type", OCI_MANIFEST)
        .body(image.manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    assert_eq!(
        header(&r, "Docker-Content-Digest").as_deref(),
        Some(image.digest.as_str())
    );
    assert_eq!(header_values(&r, "OCI-Tag"), ["tag-param-sha512-0"]);
    assert!(location(&r).ends_with(&format!("/manifests/{}", image.digest)));

    // An index over it, by sha512 digest, with two tags.
    let mut child = image.descriptor();
    child["platform"] = json!({ "os": "linux", "architecture": "amd64" });
    let index = serde_json::to_vec(
        &json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child] }),
    )
    .unwrap();
    let index_digest = sha512(&index);
    let r = s
        .req(
            Method::PUT,
            &format!(
                "/v2/{REPO}/manifests/{index_digest}?tag=tag-param-sha512&tag=tag-param-sha512-1"
            ),
        )
        .header("Content-Type", OCI_INDEX)
        .body(index.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    assert_eq!(
        header(&r, "Docker-Content-Digest").as_deref(),
        Some(index_digest.as_str())
    );
    let mut tags = header_values(&r, "OCI-Tag");
    tags.sort();
    assert_eq!(tags, ["tag-param-sha512", "tag-param-sha512-1"]);

    assert_manifest(
        &s,
        REPO,
        &image.digest,
        &image.manifest,
        OCI_MANIFEST,
        &image.digest,
    )
    .await;
    assert_manifest(
        &s,
        REPO,
        "tag-param-sha512-0",
        &image.manifest,
        OCI_MANIFEST,
        &image.digest,
    )
    .await;
    assert_manifest(&s, REPO, &index_digest, &index, OCI_INDEX, &index_digest).await;
    assert_manifest(
        &s,
        REPO,
        "tag-param-sha512",
        &index,
        OCI_INDEX,
        &index_digest,
    )
    .await;
    assert_manifest(
        &s,
        REPO,
        "tag-param-sha512-1",
        &index,
        OCI_INDEX,
        &index_digest,
    )
    .await;
    for blob in image.blobs() {
        s.assert_blob(REPO, &blob.digest, &blob.data).await;
    }
    assert_eq!(
        s.tags(REPO, "").await.0,
        vec![
            "tag-param-sha512",
            "tag-param-sha512-0",
            "tag-param-sha512-1"
        ]
    );

    // The sha256 name of the same bytes is not the manifest's.
    assert_eq!(
        s.get_manifest(REPO, &sha256(&index)).await.status(),
        StatusCode::NOT_FOUND
    );

    // A manifest pushed by a sha512 digest it does not have is refused.
    let mut wrong = index.clone();
    wrong.extend_from_slice(b"  ");
    let r = s.put_manifest(REPO, &index_digest, OCI_INDEX, &wrong).await;
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;

    // The index can be deleted by its sha512 digest, with its tags.
    let r = s
        .req(
            Method::DELETE,
            &format!("/v2/{REPO}/manifests/{index_digest}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        s.get_manifest(REPO, "tag-param-sha512").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(s.tags(REPO, "").await.0, vec!["tag-param-sha512-0"]);
}
