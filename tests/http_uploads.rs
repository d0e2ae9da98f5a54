//! The upload protocol: sessions, chunks, `Content-Range`, closing with a digest,
//! cancelling, and what a failed upload leaves behind.

mod common;

use axum::http::{Method, StatusCode};
use common::{Backend, TestApp, sha256};
use insta::{allow_duplicates, assert_json_snapshot};
use packs_registry::digest::{Algorithm, Digest};

crate::on_both_backends!(
    chunked_upload,
    post_then_put,
    final_chunk_in_the_closing_put,
    streamed_patch_without_content_range,
    chunk_out_of_order,
    content_range_length_mismatch,
    failed_digest_check_leaves_nothing,
    empty_blob,
    sha512_blobs,
    racing_chunks_never_mix,
);

fn uuid_of(location: &str) -> &str {
    location.rsplit('/').next().unwrap()
}

async fn chunked_upload(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let r = app
        .req(Method::POST, "/v2/a/b/c/blobs/uploads/")
        .header("Content-Length", "0")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let location = r.header("location").unwrap().to_owned();
    assert!(
        location.starts_with("/v2/a/b/c/blobs/uploads/"),
        "{location}"
    );
    let id = uuid_of(&location);
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{location}");
    assert_eq!(r.header("docker-upload-uuid"), Some(id));
    assert_eq!(r.header("range"), Some("0-0"));
    assert_eq!(r.header("content-length"), Some("0"));

    let r = app
        .req(Method::PATCH, &location)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", "0-4")
        .body(&b"hello"[..])
        .send()
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    assert_eq!(r.header("location"), Some(location.as_str()));
    assert_eq!(r.header("range"), Some("0-4"));
    assert_eq!(r.header("docker-upload-uuid"), Some(id));

    let r = app.get(&location).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.header("location"), Some(location.as_str()));
    assert_eq!(r.header("range"), Some("0-4"));
    assert!(r.body.is_empty());

    let r = app
        .req(Method::PATCH, &location)
        .header("Content-Range", "5-10")
        .body(&b", world"[..6])
        .send()
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    assert_eq!(r.header("range"), Some("0-10"));

    let whole = b"hello, worl";
    let digest = sha256(whole);
    let r = app
        .req(Method::PUT, format!("{location}?digest={digest}"))
        .header("Content-Length", "0")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/a/b/c/blobs/{digest}").as_str())
    );
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));

    let r = app.get(format!("/v2/a/b/c/blobs/{digest}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], whole);

    // The session is spent.
    let body = app.get(&location).await.error(StatusCode::NOT_FOUND);
    assert_eq!(body["errors"][0]["code"], "BLOB_UPLOAD_UNKNOWN");
}

/// Chunks racing for one offset of one session: exactly one lands, the others are
/// told where the session stands, and the blob is exactly the winner's bytes (on the
/// filesystem every part goes into one file, so a loser must not touch it).
async fn racing_chunks_never_mix(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let location = app.start_upload("race/chunks").await;
    // Each racer sends bytes of its own, and a length of its own to tell it by.
    let bodies: Vec<Vec<u8>> = (0..8u8)
        .map(|i| vec![b'a' + i; 300_000 + usize::from(i) * 4_099])
        .collect();
    let racers = bodies.iter().map(|body| {
        app.req(Method::PATCH, &location)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("0-{}", body.len() - 1))
            .body(body.clone())
            .send()
    });
    let results = futures_util::future::join_all(racers).await;
    let won: Vec<&Vec<u8>> = results
        .iter()
        .zip(&bodies)
        .filter(|(r, _)| r.status == StatusCode::ACCEPTED)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(won.len(), 1, "exactly one chunk lands");
    for r in results.iter().filter(|r| r.status != StatusCode::ACCEPTED) {
        assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE, "{}", r.text());
    }
    let winner = won[0];
    let r = app.get(&location).await;
    assert_eq!(
        r.header("range"),
        Some(format!("0-{}", winner.len() - 1).as_str())
    );

    let digest = sha256(winner);
    let r = app
        .req(Method::PUT, format!("{location}?digest={digest}"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = app.get(format!("/v2/race/chunks/blobs/{digest}")).await;
    assert!(r.body[..] == winner[..]);
}

async fn post_then_put(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let location = app.start_upload("r").await;
    let bytes = vec![7u8; 300_000];
    let digest = sha256(&bytes);
    let r = app
        .req(Method::PUT, format!("{location}?digest={digest}"))
        .header("Content-Type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/r/blobs/{digest}").as_str())
    );
    let r = app.get(format!("/v2/r/blobs/{digest}")).await;
    assert_eq!(r.body.len(), bytes.len());
    assert!(r.body == bytes);
}

async fn final_chunk_in_the_closing_put(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let location = app.start_upload("r").await;
    let r = app
        .req(Method::PATCH, &location)
        .header("Content-Range", "0-2")
        .body(&b"abc"[..])
        .send()
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let location = r.header("location").unwrap().to_owned();
    let digest = sha256(b"abcdef");
    let r = app
        .req(Method::PUT, format!("{location}?digest={digest}"))
        .header("Content-Range", "3-5")
        .body(&b"def"[..])
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(
        &app.get(format!("/v2/r/blobs/{digest}")).await.body[..],
        b"abcdef"
    );
}

async fn streamed_patch_without_content_range(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let location = app.start_upload("r").await;
    for (chunk, range) in [(&b"stream"[..], "0-5"), (&b"ed"[..], "0-7")] {
        let r = app.req(Method::PATCH, &location).body(chunk).send().await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
        assert_eq!(r.header("range"), Some(range));
    }
    let digest = sha256(b"streamed");
    let r = app
        .req(Method::PUT, format!("{location}?digest={digest}"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(
        &app.get(format!("/v2/r/blobs/{digest}")).await.body[..],
        b"streamed"
    );
}

async fn chunk_out_of_order(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let location = app.start_upload("r").await;
    let r = app
        .req(Method::PATCH, &location)
        .header("Content-Range", "0-4")
        .body(&b"01234"[..])
        .send()
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);

    for range in ["10-14", "0-4", "4-8"] {
        let r = app
            .req(Method::PATCH, &location)
            .header("Content-Range", range)
            .body(&b"abcde"[..])
            .send()
            .await;
        let body = r.error(StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(r.header("range"), Some("0-4"), "{range}");
        allow_duplicates! {
            assert_json_snapshot!(body, @r#"
            {
              "errors": [
                {
                  "code": "BLOB_UPLOAD_INVALID",
                  "message": "chunk out of order: the upload is at offset 5"
                }
              ]
            }
            "#);
        }
    }

    // The session is unchanged and carries on from where it stood.
    let r = app.get(&location).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.header("range"), Some("0-4"));
    let r = app
        .req(Method::PATCH, &location)
        .header("Content-Range", "5-9")
        .body(&b"56789"[..])
        .send()
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let digest = sha256(b"0123456789");
    let r = app
        .req(Method::PUT, format!("{location}?digest={digest}"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(
        &app.get(format!("/v2/r/blobs/{digest}")).await.body[..],
        b"0123456789"
    );
}

async fn content_range_length_mismatch(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let location = app.start_upload("r").await;
    let body = app
        .req(Method::PATCH, &location)
        .header("Content-Range", "0-9")
        .body(&b"01234"[..])
        .send()
        .await
        .error(StatusCode::BAD_REQUEST);
    allow_duplicates! {
        assert_json_snapshot!(body, @r#"
            {
              "errors": [
                {
                  "code": "SIZE_INVALID",
                  "message": "size invalid: Content-Range covers 10 bytes but 5 were sent"
                }
              ]
            }
        "#);
    }
    // Nothing was appended.
    let r = app.get(&location).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.header("range"), Some("0-0"));

    // Same on the closing PUT.
    let digest = sha256(b"01234");
    let body = app
        .req(Method::PUT, format!("{location}?digest={digest}"))
        .header("Content-Range", "0-2")
        .body(&b"01234"[..])
        .send()
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["code"], "SIZE_INVALID");
    assert_eq!(
        app.head(format!("/v2/r/blobs/{digest}")).await.status,
        StatusCode::NOT_FOUND
    );
}

async fn failed_digest_check_leaves_nothing(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let (manifest, _) = app.push_image("r", "v1", b"layer one").await;

    let location = app.start_upload("r").await;
    let r = app
        .req(Method::PATCH, &location)
        .body(&b"real bytes"[..])
        .send()
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let claimed = sha256(b"other bytes");
    let body = app
        .req(Method::PUT, format!("{location}?digest={claimed}"))
        .send()
        .await
        .error(StatusCode::BAD_REQUEST);
    allow_duplicates! {
        assert_json_snapshot!(body, @r#"
            {
              "errors": [
                {
                  "code": "DIGEST_INVALID",
                  "message": "digest invalid: content digest sha256:0f45c386458f3827ab3c51596894df0768cc62d6e7faab7679a78443e9639652 does not match sha256:a3ead5eedad5df82318c51685dbc1c147a36d1ff8584fc82de6b08d0bf63a795"
                }
              ]
            }
        "#);
    }
    for digest in [claimed, sha256(b"real bytes")] {
        assert_eq!(
            app.head(format!("/v2/r/blobs/{digest}")).await.status,
            StatusCode::NOT_FOUND
        );
    }
    // The session is spent, the repository's tags untouched.
    assert_eq!(app.get(&location).await.status, StatusCode::NOT_FOUND);
    if backend == Backend::Fs {
        let parts = app.storage_path().join("uploads").join(uuid_of(&location));
        assert!(!parts.exists(), "{}", parts.display());
    }
    let r = app.get("/v2/r/tags/list").await;
    assert_eq!(r.json(), serde_json::json!({ "name": "r", "tags": ["v1"] }));
    let r = app.get("/v2/r/manifests/v1").await;
    assert_eq!(r.header("docker-content-digest"), Some(manifest.as_str()));
}

async fn empty_blob(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let location = app.start_upload("r").await;
    let digest = sha256(b"");
    let r = app
        .req(Method::PUT, format!("{location}?digest={digest}"))
        .header("Content-Length", "0")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = app.get(format!("/v2/r/blobs/{digest}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length"), Some("0"));
    // No byte of an empty blob can be asked for.
    let r = app
        .req(Method::GET, format!("/v2/r/blobs/{digest}"))
        .header("Range", "bytes=0-")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.header("content-range"), Some("bytes */0"));
}

async fn sha512_blobs(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let bytes = b"hashed twice over";
    let digest = Digest::of(Algorithm::Sha512, bytes).to_string();

    // A session that hashes with sha512 from the start.
    let r = app
        .req(Method::POST, "/v2/r/blobs/uploads/?digest-algorithm=sha512")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let location = r.header("location").unwrap().to_owned();
    let r = app
        .req(Method::PUT, format!("{location}?digest={digest}"))
        .body(&bytes[..])
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));

    // A default (sha256) session closed with a sha512 digest.
    let other = b"hashed once, checked with another";
    let other_digest = Digest::of(Algorithm::Sha512, other).to_string();
    let location = app.start_upload("r").await;
    let r = app
        .req(Method::PATCH, &location)
        .body(&other[..])
        .send()
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = app
        .req(Method::PUT, format!("{location}?digest={other_digest}"))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    for (d, b) in [(&digest, &bytes[..]), (&other_digest, &other[..])] {
        let r = app.get(format!("/v2/r/blobs/{d}")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(&r.body[..], b);
        assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    }

    let body = app
        .req(Method::POST, "/v2/r/blobs/uploads/?digest-algorithm=md5")
        .send()
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["code"], "DIGEST_INVALID");
}

#[tokio::test]
async fn closing_without_a_valid_digest() {
    let app = TestApp::new().await;
    let location = app.start_upload("r").await;
    let body = app
        .req(Method::PUT, &location)
        .body(&b"x"[..])
        .send()
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "DIGEST_INVALID",
              "message": "digest invalid: the digest query parameter is required"
            }
          ]
        }
    "#);
    let body = app
        .req(Method::PUT, format!("{location}?digest=sha256:123"))
        .body(&b"x"[..])
        .send()
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "DIGEST_INVALID",
              "message": "digest invalid: digest \"sha256:123\" has an invalid encoded part"
            }
          ]
        }
    "#);
    // Neither attempt spent the session.
    assert_eq!(app.get(&location).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn malformed_content_range() {
    let app = TestApp::new().await;
    let location = app.start_upload("r").await;
    for bad in ["x", "5-2", "-3", "a-b", "bytes=1"] {
        let body = app
            .req(Method::PATCH, &location)
            .header("Content-Range", bad)
            .body(&b"abc"[..])
            .send()
            .await
            .error(StatusCode::BAD_REQUEST);
        allow_duplicates! {
            assert_json_snapshot!(body, @r#"
                {
                  "errors": [
                    {
                      "code": "BLOB_UPLOAD_INVALID",
                      "message": "blob upload invalid: malformed Content-Range"
                    }
                  ]
                }
            "#);
        }
    }
}

#[tokio::test]
async fn unknown_uploads() {
    let app = TestApp::new().await;
    let unknown = format!("/v2/r/blobs/uploads/{}", uuid::Uuid::new_v4());
    let digest = sha256(b"x");
    let body = app.get(&unknown).await.error(StatusCode::NOT_FOUND);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "BLOB_UPLOAD_UNKNOWN",
              "message": "blob upload unknown to registry"
            }
          ]
        }
    "#);
    for (method, uri) in [
        (Method::PATCH, unknown.clone()),
        (Method::PUT, format!("{unknown}?digest={digest}")),
        (Method::DELETE, unknown.clone()),
        (Method::GET, "/v2/r/blobs/uploads/not-a-uuid".to_owned()),
        (Method::PATCH, "/v2/r/blobs/uploads/not-a-uuid".to_owned()),
    ] {
        let body = app
            .req(method.clone(), &uri)
            .body(&b"x"[..])
            .send()
            .await
            .error(StatusCode::NOT_FOUND);
        assert_eq!(
            body["errors"][0]["code"], "BLOB_UPLOAD_UNKNOWN",
            "{method} {uri}"
        );
    }

    // A session belongs to the repository it was opened in.
    let location = app.start_upload("a").await;
    let elsewhere = location.replace("/v2/a/", "/v2/b/");
    let body = app.get(&elsewhere).await.error(StatusCode::NOT_FOUND);
    assert_eq!(body["errors"][0]["code"], "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(app.get(&location).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn cancel() {
    let app = TestApp::new().await;
    let location = app.start_upload("r").await;
    let r = app
        .req(Method::PATCH, &location)
        .body(&b"partial"[..])
        .send()
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = app.delete(&location).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.body.is_empty());
    let body = app.get(&location).await.error(StatusCode::NOT_FOUND);
    assert_eq!(body["errors"][0]["code"], "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(app.delete(&location).await.status, StatusCode::NOT_FOUND);
    // Its parts are gone from the filesystem store.
    let uploads = app.storage_path().join("uploads").join(uuid_of(&location));
    assert!(!uploads.exists(), "{}", uploads.display());
}

#[tokio::test]
async fn blob_size_limit() {
    let app = TestApp::build(Backend::Fs, |c| c.limits.max_blob_bytes = 16).await;
    let big = vec![1u8; 17];
    let digest = sha256(&big);

    // Declared too large: refused before reading.
    let body = app
        .req(
            Method::POST,
            format!("/v2/r/blobs/uploads/?digest={digest}"),
        )
        .body(big.clone())
        .send()
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "SIZE_INVALID",
              "message": "blob exceeds the limit of 16 bytes"
            }
          ]
        }
    "#);

    // Grown too large over chunks: refused as the bytes arrive.
    let location = app.start_upload("r").await;
    let r = app
        .req(Method::PATCH, &location)
        .body(vec![1u8; 10])
        .send()
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let body = app
        .req(Method::PATCH, &location)
        .header("Content-Range", "10-19")
        .body(vec![1u8; 10])
        .send()
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["errors"][0]["code"], "SIZE_INVALID");
    assert_eq!(app.get(&location).await.header("range"), Some("0-9"));

    // At the limit is fine.
    let ok = vec![2u8; 16];
    app.push_blob("r", &ok).await;
}

/// A `Content-Range` reaching the largest 64-bit offset covers more bytes than any
/// body: refused, whether the body is empty or not, and nothing is appended.
#[tokio::test]
async fn widest_content_range_is_refused() {
    let app = TestApp::new().await;
    let location = app.start_upload("r").await;
    for body in [&b""[..], b"abc"] {
        let r = app
            .req(Method::PATCH, &location)
            .header("Content-Range", "0-18446744073709551615")
            .body(body)
            .send()
            .await;
        assert!(r.status.is_client_error(), "{}: {}", r.status, r.text());
        let status = app.get(&location).await;
        assert_eq!(status.header("range"), Some("0-0"), "nothing was appended");
    }
}
