//! Blob reads, `Range` requests, deletes, mounts, the base endpoint, and the
//! name, digest and method checks every `/v2` route shares.

mod common;

use common::{Backend, Method, StatusCode, TestApp, sha256};
use insta::{allow_duplicates, assert_json_snapshot};

crate::on_both_backends!(
    push_then_get_and_head,
    range_reads,
    delete_then_gone,
    mount_from_another_repository
);

async fn push_then_get_and_head(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let bytes = b"hello, registry".to_vec();
    let digest = sha256(&bytes);

    let r = app
        .req(
            Method::POST,
            format!("/v2/team/app/blobs/uploads/?digest={digest}"),
        )
        .header("Content-Type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/team/app/blobs/{digest}").as_str())
    );
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));

    let r = app.get(format!("/v2/team/app/blobs/{digest}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], &bytes[..]);
    assert_eq!(
        r.header("content-length"),
        Some(bytes.len().to_string().as_str())
    );
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );

    let r = app.head(format!("/v2/team/app/blobs/{digest}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    assert_eq!(
        r.header("content-length"),
        Some(bytes.len().to_string().as_str())
    );
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
}

async fn range_reads(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let bytes = b"0123456789".to_vec();
    let digest = app.push_blob("r", &bytes).await;
    let url = format!("/v2/r/blobs/{digest}");
    let get_range = |range: &'static str| {
        let app = &app;
        let url = url.clone();
        async move {
            app.req(Method::GET, url)
                .header("Range", range)
                .send()
                .await
        }
    };

    for (range, part, content_range) in [
        ("bytes=0-4", &b"01234"[..], "bytes 0-4/10"),
        ("bytes=5-", &b"56789"[..], "bytes 5-9/10"),
        ("bytes=-3", &b"789"[..], "bytes 7-9/10"),
        ("bytes=-30", &b"0123456789"[..], "bytes 0-9/10"),
        ("bytes=8-100", &b"89"[..], "bytes 8-9/10"),
        ("bytes=9-9", &b"9"[..], "bytes 9-9/10"),
    ] {
        let r = get_range(range).await;
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(&r.body[..], part, "{range}");
        assert_eq!(r.header("content-range"), Some(content_range), "{range}");
        assert_eq!(
            r.header("content-length"),
            Some(part.len().to_string().as_str()),
            "{range}"
        );
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    }

    for range in ["bytes=10-", "bytes=50-60", "bytes=-0", "bytes=5-2"] {
        let r = get_range(range).await;
        assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(r.header("content-range"), Some("bytes */10"), "{range}");
        assert!(r.body.is_empty(), "{range}: {}", r.text());
    }

    // Ranges the server may ignore (RFC 9110): the whole blob, 200.
    for range in ["items=0-1", "bytes=0-1,4-5", "bytes=x-y"] {
        let r = get_range(range).await;
        assert_eq!(r.status, StatusCode::OK, "{range}");
        assert_eq!(&r.body[..], &bytes[..], "{range}");
        assert_eq!(r.header("content-range"), None, "{range}");
    }
}

async fn delete_then_gone(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let digest = app.push_blob("r", b"to be deleted").await;
    let kept = app.push_blob("other", b"to be deleted").await;

    let r = app.delete(format!("/v2/r/blobs/{digest}")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(
        app.head(format!("/v2/r/blobs/{digest}")).await.status,
        StatusCode::NOT_FOUND
    );
    let get = app
        .get(format!("/v2/r/blobs/{digest}"))
        .await
        .error(StatusCode::NOT_FOUND);
    let delete = app
        .delete(format!("/v2/r/blobs/{digest}"))
        .await
        .error(StatusCode::NOT_FOUND);
    assert_eq!(get, delete);
    allow_duplicates! {
        assert_json_snapshot!(get, @r#"
        {
          "errors": [
            {
              "code": "BLOB_UNKNOWN",
              "message": "blob unknown to registry"
            }
          ]
        }
        "#);
    }

    // The same bytes linked into another repository are still served there.
    let r = app.get(format!("/v2/other/blobs/{kept}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"to be deleted");
}

async fn mount_from_another_repository(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let digest = app.push_blob("source/repo", b"shared layer").await;

    let r = app
        .req(
            Method::POST,
            format!("/v2/target/repo/blobs/uploads/?mount={digest}&from=source/repo"),
        )
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/target/repo/blobs/{digest}").as_str())
    );
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    let r = app.get(format!("/v2/target/repo/blobs/{digest}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"shared layer");

    // A source that lacks the blob: an ordinary upload session instead (202).
    let missing = sha256(b"nowhere");
    let r = app
        .req(
            Method::POST,
            format!("/v2/target/repo/blobs/uploads/?mount={missing}&from=source/repo"),
        )
        .send()
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("/v2/target/repo/blobs/uploads/")
    );
    assert_eq!(
        app.head(format!("/v2/target/repo/blobs/{missing}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Without `from`, likewise a session.
    let r = app
        .req(
            Method::POST,
            format!("/v2/third/blobs/uploads/?mount={digest}"),
        )
        .send()
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
}

#[actix_web::test]
async fn mount_with_an_invalid_source_name() {
    let app = TestApp::new().await;
    let digest = sha256(b"x");
    let body = app
        .req(
            Method::POST,
            format!("/v2/target/blobs/uploads/?mount={digest}&from=Bad/Name"),
        )
        .send()
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "NAME_INVALID",
              "message": "invalid repository name \"Bad/Name\": components must match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)* separated by '/', at most 255 characters"
            }
          ]
        }
    "#);
}

#[actix_web::test]
async fn base_endpoint() {
    let app = TestApp::new().await;
    for uri in ["/v2/", "/v2"] {
        let r = app.get(uri).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}");
        assert_eq!(
            r.header("docker-distribution-api-version"),
            Some("registry/2.0")
        );
        assert_eq!(r.json(), serde_json::json!({}));
    }
    let r = app.head("/v2/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
}

#[actix_web::test]
async fn unknown_blob() {
    let app = TestApp::new().await;
    let digest = sha256(b"never pushed");
    let body = app
        .get(format!("/v2/r/blobs/{digest}"))
        .await
        .error(StatusCode::NOT_FOUND);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "BLOB_UNKNOWN",
              "message": "blob unknown to registry"
            }
          ]
        }
    "#);
    assert_eq!(
        app.head(format!("/v2/r/blobs/{digest}")).await.status,
        StatusCode::NOT_FOUND
    );

    // A blob is visible only in the repositories it was pushed or mounted to.
    let digest = app.push_blob("a", b"only in a").await;
    let body = app
        .get(format!("/v2/b/blobs/{digest}"))
        .await
        .error(StatusCode::NOT_FOUND);
    assert_eq!(body["errors"][0]["code"], "BLOB_UNKNOWN");
    assert_eq!(
        app.head(format!("/v2/b/blobs/{digest}")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[actix_web::test]
async fn malformed_digests() {
    let app = TestApp::new().await;
    let body = app
        .get("/v2/r/blobs/sha256:abc")
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "DIGEST_INVALID",
              "message": "digest invalid: digest \"sha256:abc\" has an invalid encoded part"
            }
          ]
        }
    "#);
    let body = app
        .get(format!("/v2/r/blobs/sha256:{}", "Z".repeat(64)))
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "DIGEST_INVALID",
              "message": "digest invalid: digest \"sha256:ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ\" has an invalid encoded part"
            }
          ]
        }
    "#);
    let body = app
        .get(format!("/v2/r/blobs/md5:{}", "0".repeat(32)))
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "DIGEST_INVALID",
              "message": "digest invalid: digest algorithm \"md5\" is not supported (sha256, sha512)"
            }
          ]
        }
    "#);
    let body = app
        .get("/v2/r/blobs/latest")
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "DIGEST_INVALID",
              "message": "digest invalid: digest \"latest\" is not of the form algorithm:hex"
            }
          ]
        }
    "#);
    let body = app
        .delete("/v2/r/blobs/sha256:")
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["code"], "DIGEST_INVALID");
    assert_eq!(
        app.head("/v2/r/blobs/sha256:abc").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[actix_web::test]
async fn monolithic_push_with_the_wrong_digest_leaves_nothing() {
    let app = TestApp::new().await;
    let claimed = sha256(b"what the client says");
    let r = app
        .req(
            Method::POST,
            format!("/v2/r/blobs/uploads/?digest={claimed}"),
        )
        .body(b"what the client sends".to_vec())
        .send()
        .await;
    let body = r.error(StatusCode::BAD_REQUEST);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "DIGEST_INVALID",
              "message": "digest invalid: content digest sha256:b590eb20ba414eb18e16c6976104c0102afce875da24a5663b1a400bfaeb99d7 does not match sha256:49afd925277d8a61e35c039778afde208ebb71b6942e1604b14b51d5490ae718"
            }
          ]
        }
    "#);
    assert_eq!(
        app.head(format!("/v2/r/blobs/{claimed}")).await.status,
        StatusCode::NOT_FOUND
    );
    let actual = sha256(b"what the client sends");
    assert_eq!(
        app.head(format!("/v2/r/blobs/{actual}")).await.status,
        StatusCode::NOT_FOUND
    );
    // No part of the upload is left in storage either.
    let uploads = std::fs::read_dir(app.storage_path().join("uploads")).unwrap();
    let left: Vec<_> = uploads.map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "{left:?}");

    let body = app
        .req(Method::POST, "/v2/r/blobs/uploads/?digest=sha256:nothex")
        .body(b"x".to_vec())
        .send()
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "DIGEST_INVALID",
              "message": "digest invalid: digest \"sha256:nothex\" has an invalid encoded part"
            }
          ]
        }
    "#);
}

#[actix_web::test]
async fn invalid_names() {
    let app = TestApp::new().await;
    let digest = sha256(b"x");
    let body = app
        .get(format!("/v2/Upper/blobs/{digest}"))
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "NAME_INVALID",
              "message": "invalid repository name \"Upper\": components must match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)* separated by '/', at most 255 characters"
            }
          ]
        }
    "#);

    let long = "a".repeat(256);
    let body = app
        .get(format!("/v2/{long}/blobs/{digest}"))
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["code"], "NAME_INVALID");
    let long = format!("{}/{}", "a".repeat(200), "b".repeat(55));
    assert_eq!(long.len(), 256);
    let body = app
        .get(format!("/v2/{long}/blobs/{digest}"))
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["code"], "NAME_INVALID");

    for bad in ["a__-b", "-a", "a-", "a..b", "a_.b", "a//b", "a/.b"] {
        let body = app
            .get(format!("/v2/{bad}/blobs/{digest}"))
            .await
            .error(StatusCode::BAD_REQUEST);
        assert_eq!(body["errors"][0]["code"], "NAME_INVALID", "{bad}");
    }
    for bad in ["Upper", "a b"] {
        let body = app
            .req(
                Method::POST,
                format!("/v2/{}/blobs/uploads/", bad.replace(' ', "%20")),
            )
            .send()
            .await
            .error(StatusCode::BAD_REQUEST);
        assert_eq!(body["errors"][0]["code"], "NAME_INVALID", "{bad}");
    }
}

#[actix_web::test]
async fn configured_name_length_limit() {
    let app = TestApp::build(Backend::Fs, |c| c.limits.max_name_length = 10).await;
    app.push_blob("abcde/ghij", b"x").await;
    let body = app
        .req(Method::POST, "/v2/abcde/ghijk/blobs/uploads/")
        .send()
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["code"], "NAME_INVALID");
}

#[actix_web::test]
async fn long_and_nested_names_are_valid() {
    let app = TestApp::new().await;
    let longest = format!("{}/{}", "a".repeat(200), "b".repeat(54));
    assert_eq!(longest.len(), 255);
    for name in [
        "a/b/c",
        "org/team/project/pack",
        "a0.b_c__d---e/f",
        longest.as_str(),
    ] {
        let digest = app.push_blob(name, name.as_bytes()).await;
        let r = app.get(format!("/v2/{name}/blobs/{digest}")).await;
        assert_eq!(r.status, StatusCode::OK, "{name}");
        assert_eq!(&r.body[..], name.as_bytes());
    }
}

#[actix_web::test]
async fn wrong_methods() {
    let app = TestApp::new().await;
    let digest = app.push_blob("r", b"x").await;
    let r = app
        .req(Method::PUT, format!("/v2/r/blobs/{digest}"))
        .send()
        .await;
    assert_eq!(r.header("allow"), Some("GET, HEAD, DELETE"));
    assert_json_snapshot!(r.error(StatusCode::METHOD_NOT_ALLOWED), @r#"
        {
          "errors": [
            {
              "code": "UNSUPPORTED",
              "message": "the method is not supported on this endpoint"
            }
          ]
        }
    "#);
    let upload = app.start_upload("r").await;
    for (method, uri, allow) in [
        (
            Method::POST,
            format!("/v2/r/blobs/{digest}"),
            "GET, HEAD, DELETE",
        ),
        (
            Method::PATCH,
            format!("/v2/r/blobs/{digest}"),
            "GET, HEAD, DELETE",
        ),
        (Method::GET, "/v2/r/blobs/uploads/".to_owned(), "POST"),
        (Method::PUT, "/v2/r/blobs/uploads/".to_owned(), "POST"),
        (Method::POST, upload, "GET, PATCH, PUT, DELETE"),
        (Method::DELETE, "/v2/".to_owned(), "GET, HEAD"),
        (Method::POST, "/v2/_catalog".to_owned(), "GET"),
        (Method::DELETE, "/v2/r/tags/list".to_owned(), "GET"),
        (Method::POST, format!("/v2/r/referrers/{digest}"), "GET"),
        (
            Method::PATCH,
            "/v2/r/manifests/latest".to_owned(),
            "GET, HEAD, PUT, DELETE",
        ),
    ] {
        let r = app.req(method.clone(), &uri).send().await;
        assert_eq!(r.header("allow"), Some(allow), "{method} {uri}");
        let body = r.error(StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body["errors"][0]["code"], "UNSUPPORTED", "{method} {uri}");
    }
}

#[actix_web::test]
async fn unknown_endpoint() {
    let app = TestApp::new().await;
    let body = app
        .get("/v2/r/nothing-here")
        .await
        .error(StatusCode::NOT_FOUND);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "NAME_UNKNOWN",
              "message": "unknown API endpoint"
            }
          ]
        }
    "#);
    let r = app.get("/v3/").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}
