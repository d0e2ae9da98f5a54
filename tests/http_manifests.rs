//! Manifests: every supported type stored and served byte for byte, content
//! negotiation, validation on push, `?tag=` and `subject`, and deletion.

mod common;

use common::*;
use insta::{allow_duplicates, assert_json_snapshot};
use serde_json::json;

crate::on_both_backends!(
    every_manifest_type_round_trips,
    delete_semantics,
    nul_characters_are_refused_not_failed,
    descriptor_sizes_must_match,
);

/// Bytes laid out the way no serializer would, so that any re-encoding shows.
fn odd_layout(value: &serde_json::Value) -> Vec<u8> {
    let mut text = serde_json::to_string_pretty(value)
        .unwrap()
        .replace("  ", "\t ");
    text.push_str("\n\n");
    text.into_bytes()
}

async fn every_manifest_type_round_trips(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let repo = "types/all";
    let oci_config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let oci_config_digest = app.push_blob(repo, oci_config).await;
    let layer = b"layer bytes";
    let layer_digest = app.push_blob(repo, layer).await;
    let docker_config = br#"{"architecture":"arm64","os":"linux"}"#;
    let docker_config_digest = app.push_blob(repo, docker_config).await;
    let empty = app.push_empty_config(repo).await;
    let custom_config = br#"{"pack":"policy-x","version":"1.2.3"}"#;
    let custom_config_digest = app.push_blob(repo, custom_config).await;

    let oci_manifest = odd_layout(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": oci_config_digest, "size": oci_config.len() },
        "layers": [{ "mediaType": OCI_LAYER, "digest": layer_digest, "size": layer.len() }],
        "annotations": { "org.opencontainers.image.title": "oci" },
    }));
    let docker_manifest = odd_layout(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": { "mediaType": DOCKER_CONFIG, "digest": docker_config_digest, "size": docker_config.len() },
        "layers": [{ "mediaType": DOCKER_LAYER, "digest": layer_digest, "size": layer.len() }],
    }));
    let artifact = odd_layout(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.policy.v1+json",
        "config": empty,
        "layers": [{ "mediaType": "application/vnd.example.policy.layer.v1+tar", "digest": layer_digest, "size": layer.len() }],
    }));
    let custom = odd_layout(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.packs.policy.config.v1+json", "digest": custom_config_digest, "size": custom_config.len() },
        "layers": [],
    }));

    let mut pushed = Vec::new();
    for (tag, media_type, body) in [
        ("oci", OCI_MANIFEST, &oci_manifest),
        ("docker", DOCKER_MANIFEST, &docker_manifest),
        ("artifact", OCI_MANIFEST, &artifact),
        ("custom", OCI_MANIFEST, &custom),
    ] {
        pushed.push((
            tag,
            media_type,
            body.clone(),
            app.push_manifest(repo, tag, media_type, body).await,
        ));
    }
    let child = |i: usize| {
        let (_, mt, body, digest): &(_, &str, Vec<u8>, String) = &pushed[i];
        (*mt, digest.as_str(), body.len())
    };
    let oci_index = odd_layout(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            { "mediaType": child(0).0, "digest": child(0).1, "size": child(0).2, "platform": { "architecture": "amd64", "os": "linux" } },
            { "mediaType": child(2).0, "digest": child(2).1, "size": child(2).2 },
        ],
    }));
    let docker_list = odd_layout(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [
            { "mediaType": child(1).0, "digest": child(1).1, "size": child(1).2, "platform": { "architecture": "arm64", "os": "linux" } },
        ],
    }));
    for (tag, media_type, body) in [
        ("index", OCI_INDEX, &oci_index),
        ("list", DOCKER_LIST, &docker_list),
    ] {
        pushed.push((
            tag,
            media_type,
            body.clone(),
            app.push_manifest(repo, tag, media_type, body).await,
        ));
    }

    for (tag, media_type, body, digest) in &pushed {
        for reference in [*tag, digest.as_str()] {
            let url = format!("/v2/{repo}/manifests/{reference}");
            let r = app.get(&url).await;
            assert_eq!(r.status, StatusCode::OK, "{url}");
            assert!(
                r.body == body[..],
                "{url}: the bytes differ from those pushed"
            );
            assert_eq!(r.header("content-type"), Some(*media_type), "{url}");
            assert_eq!(
                r.header("docker-content-digest"),
                Some(digest.as_str()),
                "{url}"
            );
            assert_eq!(
                r.header("content-length"),
                Some(body.len().to_string().as_str())
            );

            let r = app.head(&url).await;
            assert_eq!(r.status, StatusCode::OK, "{url}");
            assert!(r.body.is_empty());
            assert_eq!(r.header("content-type"), Some(*media_type), "{url}");
            assert_eq!(
                r.header("docker-content-digest"),
                Some(digest.as_str()),
                "{url}"
            );
            assert_eq!(
                r.header("content-length"),
                Some(body.len().to_string().as_str())
            );
        }
    }
    let r = app.get(format!("/v2/{repo}/tags/list")).await;
    assert_eq!(
        r.json()["tags"],
        json!(["artifact", "custom", "docker", "index", "list", "oci"])
    );
}

#[actix_web::test]
async fn push_answers_with_location_and_digest() {
    let app = TestApp::new().await;
    let config = app.push_empty_config("r").await;
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [],
    }))
    .unwrap();
    let digest = sha256(&body);
    let r = app
        .put_manifest("r", "latest", Some(OCI_MANIFEST), &body)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/r/manifests/{digest}").as_str())
    );
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(r.header("oci-subject"), None);
    assert!(r.header_all("oci-tag").is_empty());

    // By digest, the same.
    let r = app
        .put_manifest("r", &digest, Some(OCI_MANIFEST), &body)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/r/manifests/{digest}").as_str())
    );
}

#[actix_web::test]
async fn media_type_from_content_type_or_shape() {
    let app = TestApp::new().await;
    let (child, child_body) = app.push_image("r", "child", b"l").await;
    // No mediaType in the body: the Content-Type names it.
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{ "mediaType": DOCKER_MANIFEST, "digest": child, "size": child_body.len() }],
    }))
    .unwrap();
    app.push_manifest("r", "list", DOCKER_LIST, &list).await;
    assert_eq!(
        app.get("/v2/r/manifests/list").await.header("content-type"),
        Some(DOCKER_LIST)
    );

    // Parameters on Content-Type are ignored.
    let config = app.push_empty_config("r").await;
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [],
    }))
    .unwrap();
    let ct = format!("{OCI_MANIFEST}; charset=utf-8");
    let r = app.put_manifest("r", "params", Some(&ct), &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(
        app.get("/v2/r/manifests/params")
            .await
            .header("content-type"),
        Some(OCI_MANIFEST)
    );

    // Neither: an index by its shape.
    let index = serde_json::to_vec(&json!({ "schemaVersion": 2, "manifests": [] })).unwrap();
    let r = app.put_manifest("r", "bare", None, &index).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(
        app.get("/v2/r/manifests/bare").await.header("content-type"),
        Some(OCI_INDEX)
    );
}

#[actix_web::test]
async fn media_type_and_content_type_disagree() {
    let app = TestApp::new().await;
    let config = app.push_empty_config("r").await;
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [],
    }))
    .unwrap();
    let body = app
        .put_manifest("r", "x", Some(DOCKER_MANIFEST), &body)
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "MANIFEST_INVALID",
              "message": "manifest invalid: mediaType application/vnd.oci.image.manifest.v1+json does not match Content-Type application/vnd.docker.distribution.manifest.v2+json"
            }
          ]
        }
    "#);
    assert_eq!(
        app.get("/v2/r/manifests/x").await.status,
        StatusCode::NOT_FOUND
    );
}

#[actix_web::test]
async fn invalid_manifests() {
    let app = TestApp::new().await;
    let config = app.push_empty_config("r").await;
    let cases: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        ("not json", Some(OCI_MANIFEST), b"{not json".to_vec()),
        ("schema 1", Some(OCI_MANIFEST), br#"{"schemaVersion":1}"#.to_vec()),
        (
            "no config",
            Some(OCI_MANIFEST),
            serde_json::to_vec(&json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [] })).unwrap(),
        ),
        (
            "unsupported type",
            Some("text/plain"),
            serde_json::to_vec(&json!({ "schemaVersion": 2, "config": config, "layers": [] })).unwrap(),
        ),
        (
            "bad descriptor digest",
            Some(OCI_INDEX),
            serde_json::to_vec(&json!({
                "schemaVersion": 2, "mediaType": OCI_INDEX,
                "manifests": [{ "mediaType": OCI_MANIFEST, "digest": "sha256:xyz", "size": 1 }],
            }))
            .unwrap(),
        ),
        (
            "index with layers",
            Some(OCI_INDEX),
            serde_json::to_vec(&json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [], "layers": [] })).unwrap(),
        ),
    ];
    let mut bodies = serde_json::Map::new();
    for (what, ct, body) in cases {
        let body = app
            .put_manifest("r", "bad", ct, &body)
            .await
            .error(StatusCode::BAD_REQUEST);
        bodies.insert(what.to_owned(), body);
    }
    assert_json_snapshot!(bodies, @r#"
        {
          "bad descriptor digest": {
            "errors": [
              {
                "code": "MANIFEST_INVALID",
                "message": "manifest invalid: manifests[0]: digest \"sha256:xyz\" has an invalid encoded part"
              }
            ]
          },
          "index with layers": {
            "errors": [
              {
                "code": "MANIFEST_INVALID",
                "message": "manifest invalid: an index has no config or layers"
              }
            ]
          },
          "no config": {
            "errors": [
              {
                "code": "MANIFEST_INVALID",
                "message": "manifest invalid: config is required"
              }
            ]
          },
          "not json": {
            "errors": [
              {
                "code": "MANIFEST_INVALID",
                "message": "manifest invalid: not a manifest JSON document: key must be a string at line 1 column 2"
              }
            ]
          },
          "schema 1": {
            "errors": [
              {
                "code": "MANIFEST_INVALID",
                "message": "manifest invalid: schemaVersion must be 2"
              }
            ]
          },
          "unsupported type": {
            "errors": [
              {
                "code": "MANIFEST_INVALID",
                "message": "manifest invalid: unsupported manifest media type text/plain"
              }
            ]
          }
        }
    "#);
    assert_eq!(
        app.get("/v2/r/manifests/bad").await.status,
        StatusCode::NOT_FOUND
    );
}

#[actix_web::test]
async fn manifest_referencing_missing_blobs() {
    let app = TestApp::new().await;
    let present = app.push_blob("r", b"present").await;
    let body = image_manifest(
        OCI_MANIFEST,
        (OCI_CONFIG, &sha256(b"missing config"), 14),
        &[
            (OCI_LAYER, &present, 7),
            (OCI_LAYER, &sha256(b"missing layer"), 13),
        ],
    );
    let body = app
        .put_manifest("r", "v1", Some(OCI_MANIFEST), &body)
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "MANIFEST_BLOB_UNKNOWN",
              "detail": {
                "digests": [
                  "sha256:65055d8a256c373455c4768f0ed36a6041cdb5a128369722980428f885d6d4a7",
                  "sha256:6d83d8956cdb42edfcb4eb658fa1c71e14fa04bff790f4dbb5537ef71b4e2b86"
                ]
              },
              "message": "manifest references unknown blobs or manifests"
            }
          ]
        }
    "#);

    // A blob of another repository does not count.
    let elsewhere = app.push_blob("other", b"elsewhere").await;
    let body = image_manifest(
        OCI_MANIFEST,
        (OCI_CONFIG, &present, 7),
        &[(OCI_LAYER, &elsewhere, 9)],
    );
    let body = app
        .put_manifest("r", "v1", Some(OCI_MANIFEST), &body)
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(body["errors"][0]["detail"]["digests"], json!([elsewhere]));

    // An index whose child manifest is unknown.
    let child = sha256(b"no such manifest");
    let body = index_manifest(OCI_INDEX, &[(OCI_MANIFEST, &child, 100)]);
    let body = app
        .put_manifest("r", "v1", Some(OCI_INDEX), &body)
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "MANIFEST_BLOB_UNKNOWN",
              "detail": {
                "digests": [
                  "sha256:8a62c4957f35cec75dbe676a9c064a7dcb0069523f44ef84cdbc7b320a2024c7"
                ]
              },
              "message": "manifest references unknown blobs or manifests"
            }
          ]
        }
    "#);
    assert_eq!(
        app.get("/v2/r/manifests/v1").await.status,
        StatusCode::NOT_FOUND
    );
}

#[actix_web::test]
async fn foreign_layers_need_not_be_pushed() {
    let app = TestApp::new().await;
    let config = app.push_blob("r", b"{}").await;
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": { "mediaType": DOCKER_CONFIG, "digest": config, "size": 2 },
        "layers": [{
            "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "digest": sha256(b"windows base layer"),
            "size": 18,
            "urls": ["https://example.invalid/layer"],
        }],
    }))
    .unwrap();
    app.push_manifest("r", "win", DOCKER_MANIFEST, &body).await;
}

#[actix_web::test]
async fn manifest_too_large() {
    let app = TestApp::build(Backend::Fs, |c| c.limits.max_manifest_bytes = 1024).await;
    let config = app.push_empty_config("r").await;
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [],
        "annotations": { "padding": "x".repeat(2000) },
    }))
    .unwrap();
    let body = app
        .put_manifest("r", "big", Some(OCI_MANIFEST), &body)
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "MANIFEST_INVALID",
              "message": "manifest exceeds the limit of 1024 bytes"
            }
          ]
        }
    "#);

    // Without a Content-Length (a streamed body), the limit still holds.
    let r = app
        .req(Method::PUT, "/v2/r/manifests/big")
        .header("content-type", OCI_MANIFEST)
        .send_chunks(
            (0..20)
                .map(|_| bytes::Bytes::from(vec![b' '; 100]))
                .collect(),
        )
        .await;
    assert_eq!(
        r.error(StatusCode::PAYLOAD_TOO_LARGE)["errors"][0]["code"],
        "MANIFEST_INVALID"
    );
    assert_eq!(
        app.get("/v2/r/manifests/big").await.status,
        StatusCode::NOT_FOUND
    );
}

#[actix_web::test]
async fn accept_must_admit_the_stored_type() {
    let app = TestApp::new().await;
    let (digest, _) = app.push_image("r", "v1", b"layer").await;
    for reference in ["v1", digest.as_str()] {
        let url = format!("/v2/r/manifests/{reference}");
        let r = app
            .req(Method::GET, &url)
            .header("Accept", DOCKER_MANIFEST)
            .send()
            .await;
        let body = r.error(StatusCode::NOT_FOUND);
        allow_duplicates! {
            assert_json_snapshot!(body, @r#"
                {
                  "errors": [
                    {
                      "code": "MANIFEST_UNKNOWN",
                      "message": "manifest of type application/vnd.oci.image.manifest.v1+json is not acceptable to the client"
                    }
                  ]
                }
            "#);
        }
        let r = app
            .req(Method::HEAD, &url)
            .header("Accept", DOCKER_MANIFEST)
            .send()
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);

        for accept in [
            OCI_MANIFEST.to_owned(),
            format!("{DOCKER_MANIFEST}, {OCI_MANIFEST};q=0.9"),
            "*/*".to_owned(),
        ] {
            let r = app
                .req(Method::GET, &url)
                .header("Accept", &accept)
                .send()
                .await;
            assert_eq!(r.status, StatusCode::OK, "{accept}");
            assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
        }
        // Several Accept headers count together.
        let r = app
            .req(Method::GET, &url)
            .header("Accept", DOCKER_MANIFEST)
            .header("Accept", OCI_MANIFEST)
            .send()
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
}

#[actix_web::test]
async fn unknown_manifests() {
    let app = TestApp::new().await;
    let body = app
        .get("/v2/r/manifests/latest")
        .await
        .error(StatusCode::NOT_FOUND);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "MANIFEST_UNKNOWN",
              "message": "manifest unknown"
            }
          ]
        }
    "#);
    app.push_image("r", "v1", b"layer").await;
    let missing = sha256(b"no manifest");
    for url in [
        "/v2/r/manifests/v2".to_owned(),
        format!("/v2/r/manifests/{missing}"),
        "/v2/other/manifests/v1".to_owned(),
    ] {
        let body = app.get(&url).await.error(StatusCode::NOT_FOUND);
        assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN", "{url}");
        assert_eq!(app.head(&url).await.status, StatusCode::NOT_FOUND, "{url}");
    }
}

#[actix_web::test]
async fn invalid_references() {
    let app = TestApp::new().await;
    // A read of text that is neither a tag nor a digest names no manifest: 404, as
    // the released v1.1.1 conformance suite expects of `.INVALID_MANIFEST_NAME`.
    let body = app
        .get("/v2/r/manifests/-bad")
        .await
        .error(StatusCode::NOT_FOUND);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "MANIFEST_UNKNOWN",
              "message": "manifest unknown"
            }
          ]
        }
    "#);
    let long_tag = "t".repeat(129);
    for url in [
        format!("/v2/r/manifests/{long_tag}"),
        "/v2/r/manifests/.x".to_owned(),
        "/v2/r/manifests/.INVALID_MANIFEST_NAME".to_owned(),
        "/v2/r/manifests/a+b".to_owned(),
    ] {
        let body = app.get(&url).await.error(StatusCode::NOT_FOUND);
        assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN", "{url}");
        let r = app.head(&url).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{url}");
    }
    // A push to such a reference is a client error.
    let r = app
        .put_manifest("r", ".INVALID_MANIFEST_NAME", Some(OCI_MANIFEST), b"{}")
        .await;
    assert_json_snapshot!(r.error(StatusCode::BAD_REQUEST), @r#"
        {
          "errors": [
            {
              "code": "MANIFEST_INVALID",
              "message": "invalid tag \".INVALID_MANIFEST_NAME\": must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"
            }
          ]
        }
    "#);
    let body = app
        .get("/v2/r/manifests/sha256:abc")
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
        .delete("/v2/r/manifests/sha256:abc")
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["code"], "DIGEST_INVALID");

    // The longest tag is fine.
    let (_, body) = app.push_image("r", &"t".repeat(128), b"l").await;
    let r = app
        .get(format!("/v2/r/manifests/{}", "t".repeat(128)))
        .await;
    assert!(r.body == body);

    // An invalid ?tag= refuses the whole push.
    let (digest, body) = app.push_image("r", "ok", b"l").await;
    let r = app
        .req(
            Method::PUT,
            format!("/v2/r/manifests/{digest}?tag=fine&tag=-bad"),
        )
        .header("Content-Type", OCI_MANIFEST)
        .body(body)
        .send()
        .await;
    assert_json_snapshot!(r.error(StatusCode::BAD_REQUEST), @r#"
        {
          "errors": [
            {
              "code": "MANIFEST_INVALID",
              "message": "invalid tag \"-bad\": must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"
            }
          ]
        }
    "#);
    assert_eq!(
        app.get("/v2/r/manifests/fine").await.status,
        StatusCode::NOT_FOUND
    );
}

#[actix_web::test]
async fn invalid_repository_names() {
    let app = TestApp::new().await;
    let body = app
        .get("/v2/Packs/manifests/latest")
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "NAME_INVALID",
              "message": "invalid repository name \"Packs\": components must match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)* separated by '/', at most 255 characters"
            }
          ]
        }
    "#);
    let long = "n".repeat(256);
    let body = app
        .get(format!("/v2/{long}/manifests/latest"))
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["code"], "NAME_INVALID");
    let body = app
        .put_manifest(&long, "latest", Some(OCI_MANIFEST), b"{}")
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["code"], "NAME_INVALID");

    // Three levels and the longest name are valid.
    let longest = "n".repeat(255);
    for name in ["org/team/pack", longest.as_str()] {
        let (digest, body) = app.push_image(name, "v1", b"l").await;
        let r = app.get(format!("/v2/{name}/manifests/{digest}")).await;
        assert_eq!(r.status, StatusCode::OK, "{name}");
        assert!(r.body == body);
    }
}

#[actix_web::test]
async fn put_by_digest_with_the_wrong_digest() {
    let app = TestApp::new().await;
    let (_, body) = app.push_image("r", "v1", b"layer").await;
    let wrong = sha256(b"something else");
    let r = app
        .req(Method::PUT, format!("/v2/r/manifests/{wrong}?tag=v2"))
        .header("Content-Type", OCI_MANIFEST)
        .body(body)
        .send()
        .await;
    assert_json_snapshot!(r.error(StatusCode::BAD_REQUEST), @r#"
        {
          "errors": [
            {
              "code": "DIGEST_INVALID",
              "message": "digest invalid: manifest digest sha256:698a1e3ef663e81341fe2045256ab182eebd66fb0910857efb7cd5f7f2f9e15c does not match sha256:f41f3fa625ff120ddca7ef456bf66371ecea23c129f4e4c32367101edb516cf8"
            }
          ]
        }
    "#);
    assert_eq!(
        app.get(format!("/v2/r/manifests/{wrong}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/v2/r/manifests/v2").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/v2/r/tags/list").await.json()["tags"],
        json!(["v1"])
    );
}

#[actix_web::test]
async fn tag_query_parameters() {
    let app = TestApp::new().await;
    let (digest, body) = app.push_image("r", "first", b"layer").await;
    let r = app
        .req(
            Method::PUT,
            format!("/v2/r/manifests/{digest}?tag=v1&tag=v1.0&tag=latest"),
        )
        .header("Content-Type", OCI_MANIFEST)
        .body(body.clone())
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.header_all("oci-tag"), vec!["v1", "v1.0", "latest"]);
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    for tag in ["v1", "v1.0", "latest"] {
        let r = app.get(format!("/v2/r/manifests/{tag}")).await;
        assert_eq!(
            r.header("docker-content-digest"),
            Some(digest.as_str()),
            "{tag}"
        );
    }
    assert_eq!(
        app.get("/v2/r/tags/list").await.json()["tags"],
        json!(["first", "latest", "v1", "v1.0"])
    );

    // Pushed to a tag with more tags in the query: all of them, once each.
    let r = app
        .req(Method::PUT, "/v2/r/manifests/stable?tag=stable&tag=prod")
        .header("Content-Type", OCI_MANIFEST)
        .body(body)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.header_all("oci-tag"), vec!["stable", "prod"]);
}

#[actix_web::test]
async fn tags_move_to_the_newest_push() {
    let app = TestApp::new().await;
    let (one, _) = app.push_image("r", "latest", b"one").await;
    let (two, _) = app.push_image("r", "latest", b"two").await;
    assert_ne!(one, two);
    let r = app.get("/v2/r/manifests/latest").await;
    assert_eq!(r.header("docker-content-digest"), Some(two.as_str()));
    // The old manifest stays reachable by digest.
    assert_eq!(
        app.get(format!("/v2/r/manifests/{one}")).await.status,
        StatusCode::OK
    );
}

#[actix_web::test]
async fn subject_is_acknowledged() {
    let app = TestApp::new().await;
    let (subject, subject_body) = app.push_image("r", "v1", b"layer").await;
    let config = app.push_empty_config("r").await;
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": config,
        "layers": [],
        "subject": { "mediaType": OCI_MANIFEST, "digest": subject, "size": subject_body.len() },
    }))
    .unwrap();
    let digest = sha256(&body);
    let r = app
        .put_manifest("r", &digest, Some(OCI_MANIFEST), &body)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.header("oci-subject"), Some(subject.as_str()));

    // A subject that is not (yet) in the repository is accepted too.
    let absent = sha256(b"pushed later");
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": [],
        "subject": { "mediaType": OCI_MANIFEST, "digest": absent, "size": 10 },
    }))
    .unwrap();
    let r = app
        .put_manifest("r", &sha256(&body), Some(OCI_MANIFEST), &body)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.header("oci-subject"), Some(absent.as_str()));
}

async fn delete_semantics(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let (digest, _) = app.push_image("r", "v1", b"layer").await;
    let r = app
        .req(
            Method::PUT,
            format!("/v2/r/manifests/{digest}?tag=v2&tag=v3"),
        )
        .header("Content-Type", OCI_MANIFEST)
        .body(app.get("/v2/r/manifests/v1").await.body)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    // Deleting a tag leaves the manifest and its other tags.
    let r = app.delete("/v2/r/manifests/v1").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(
        app.get("/v2/r/manifests/v1").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.get("/v2/r/manifests/v2").await.status, StatusCode::OK);
    assert_eq!(
        app.get(format!("/v2/r/manifests/{digest}")).await.status,
        StatusCode::OK
    );
    let body = app
        .delete("/v2/r/manifests/v1")
        .await
        .error(StatusCode::NOT_FOUND);
    allow_duplicates! {
        assert_json_snapshot!(body, @r#"
            {
              "errors": [
                {
                  "code": "MANIFEST_UNKNOWN",
                  "message": "manifest unknown"
                }
              ]
            }
        "#);
    }

    // Deleting the manifest takes every tag on it.
    let r = app.delete(format!("/v2/r/manifests/{digest}")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    for reference in ["v2", "v3", digest.as_str()] {
        let body = app
            .get(format!("/v2/r/manifests/{reference}"))
            .await
            .error(StatusCode::NOT_FOUND);
        assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN", "{reference}");
    }
    assert_eq!(app.get("/v2/r/tags/list").await.json()["tags"], json!([]));
    let body = app
        .delete(format!("/v2/r/manifests/{digest}"))
        .await
        .error(StatusCode::NOT_FOUND);
    assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN");
    let body = app
        .delete("/v2/nowhere/manifests/latest")
        .await
        .error(StatusCode::NOT_FOUND);
    assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN");
}

#[actix_web::test]
async fn wrong_methods() {
    let app = TestApp::new().await;
    for method in [Method::POST, Method::PATCH] {
        let body = app
            .req(method.clone(), "/v2/r/manifests/latest")
            .send()
            .await
            .error(StatusCode::METHOD_NOT_ALLOWED);
        allow_duplicates! {
            assert_json_snapshot!(body, @r#"
                {
                  "errors": [
                    {
                      "code": "UNSUPPORTED",
                      "message": "the method is not supported on this endpoint"
                    }
                  ]
                }
            "#);
        }
    }
}

#[actix_web::test]
async fn sha512_manifest_digests() {
    let app = TestApp::new().await;
    let (_, body) = app.push_image("r", "v1", b"layer").await;
    let digest =
        packs_registry::digest::Digest::of(packs_registry::digest::Algorithm::Sha512, &body)
            .to_string();
    let r = app
        .req(Method::PUT, format!("/v2/r/manifests/{digest}?tag=v512"))
        .header("Content-Type", OCI_MANIFEST)
        .body(body.clone())
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/r/manifests/{digest}").as_str())
    );
    for reference in [digest.as_str(), "v512"] {
        let r = app.get(format!("/v2/r/manifests/{reference}")).await;
        assert_eq!(r.status, StatusCode::OK, "{reference}");
        assert!(r.body == body);
        assert_eq!(
            r.header("docker-content-digest"),
            Some(digest.as_str()),
            "{reference}"
        );
    }
}

/// Names whose components are the API's own path words still route.
/// NUL cannot be stored in PostgreSQL text: a manifest whose media types carry one is
/// invalid, and listing positions or filters carrying one are never a 500.
async fn nul_characters_are_refused_not_failed(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let config = app.push_blob("packs/nul", b"{}").await;
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/x-bad\u{0}type",
        "config": { "mediaType": OCI_EMPTY, "digest": config, "size": 2 },
        "layers": [],
    }))
    .unwrap();
    let r = app
        .put_manifest("packs/nul", "v1", Some(OCI_MANIFEST), &body)
        .await;
    assert_eq!(
        r.error(StatusCode::BAD_REQUEST)["errors"][0]["code"],
        "MANIFEST_INVALID"
    );
    app.push_image("packs/nul", "v2", b"layer").await;
    for uri in [
        "/v2/packs/nul/tags/list?last=a%00",
        "/v2/_catalog?last=a%00",
        "/v2/packs/nul/referrers/sha256:0000000000000000000000000000000000000000000000000000000000000000?artifactType=a%00b",
    ] {
        let r = app.get(uri).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text());
    }
}

/// A repository name is one path segment pattern: names whose segments are `blobs`,
/// `manifests`, `tags`, `uploads` or `referrers` route by the suffix after them.
#[actix_web::test]
async fn names_made_of_endpoint_words_route_by_their_suffix() {
    let app = TestApp::new().await;
    for name in [
        "blobs/uploads/x",
        "manifests/manifests",
        "a/blobs/b/blobs",
        "tags/list/tags",
        "referrers/referrers/r",
        "uploads/blobs/uploads",
        "v2/blobs",
        "manifests/blobs/tags",
        "v2/referrers/list",
    ] {
        // Blobs: monolithic push, then a chunked session (POST, PATCH, PUT).
        let digest = app.push_blob(name, name.as_bytes()).await;
        let r = app.get(format!("/v2/{name}/blobs/{digest}")).await;
        assert_eq!(r.status, StatusCode::OK, "{name}");
        assert_eq!(&r.body[..], name.as_bytes(), "{name}");
        let location = app.start_upload(name).await;
        assert!(
            location.starts_with(&format!("/v2/{name}/blobs/uploads/")),
            "{name}: {location}"
        );
        let r = app
            .req(Method::PATCH, &location)
            .body(b"chunk".to_vec())
            .send()
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{name}: {}", r.text());
        let r = app
            .req(
                Method::PUT,
                format!("{location}?digest={}", sha256(b"chunk")),
            )
            .send()
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{name}: {}", r.text());
        // Manifests, tags and referrers.
        let (manifest, body) = app.push_image(name, "v1", name.as_bytes()).await;
        let r = app.get(format!("/v2/{name}/manifests/v1")).await;
        assert_eq!(r.status, StatusCode::OK, "{name}");
        assert!(r.body == body, "{name}");
        let r = app.get(format!("/v2/{name}/tags/list")).await;
        assert_eq!(r.json()["name"], name);
        assert_eq!(r.json()["tags"], json!(["v1"]));
        let r = app.get(format!("/v2/{name}/referrers/{manifest}")).await;
        assert_eq!(r.status, StatusCode::OK, "{name}");
        assert_eq!(r.json()["manifests"], json!([]));
    }
}

/// A descriptor's `size` must be the length of what it references (config, layers,
/// index children); the subject is exempt, as it may not exist. Refused with
/// `MANIFEST_INVALID` naming the descriptor; nothing is stored.
async fn descriptor_sizes_must_match(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let config = app.push_empty_config("r").await;
    let layer = app.push_blob("r", b"hello world").await;
    let image = |config: &serde_json::Value, layer_size: u64| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config,
            "layers": [{"mediaType": OCI_LAYER, "digest": layer, "size": layer_size}],
        }))
        .unwrap()
    };
    let mut bodies = serde_json::Map::new();
    let body = app
        .put_manifest("r", "bad", Some(OCI_MANIFEST), &image(&config, 999))
        .await
        .error(StatusCode::BAD_REQUEST);
    bodies.insert("layer".into(), body);
    let mut wrong_config = config.clone();
    wrong_config["size"] = json!(5);
    let body = app
        .put_manifest("r", "bad", Some(OCI_MANIFEST), &image(&wrong_config, 11))
        .await
        .error(StatusCode::BAD_REQUEST);
    bodies.insert("config".into(), body);

    let child = image(&config, 11);
    let child_digest = app.push_manifest("r", "child", OCI_MANIFEST, &child).await;
    let index = index_manifest(OCI_INDEX, &[(OCI_MANIFEST, &child_digest, child.len() + 1)]);
    let body = app
        .put_manifest("r", "bad", Some(OCI_INDEX), &index)
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["code"], "MANIFEST_INVALID");
    assert_eq!(
        body["errors"][0]["message"],
        format!(
            "manifest invalid: manifests[0]: size {} does not match the manifest's {} bytes",
            child.len() + 1,
            child.len()
        )
    );
    allow_duplicates! {
        assert_json_snapshot!(bodies, @r#"
            {
              "config": {
                "errors": [
                  {
                    "code": "MANIFEST_INVALID",
                    "message": "manifest invalid: config: size 5 does not match the blob's 2 bytes"
                  }
                ]
              },
              "layer": {
                "errors": [
                  {
                    "code": "MANIFEST_INVALID",
                    "message": "manifest invalid: layers[0]: size 999 does not match the blob's 11 bytes"
                  }
                ]
              }
            }
        "#);
    }
    assert_eq!(
        app.get("/v2/r/manifests/bad").await.status,
        StatusCode::NOT_FOUND
    );

    // The right sizes go in; a subject's size is not checked (it may not exist).
    let index = index_manifest(OCI_INDEX, &[(OCI_MANIFEST, &child_digest, child.len())]);
    app.push_manifest("r", "index", OCI_INDEX, &index).await;
    app.push_referrer(
        "r",
        &sha256(b"absent"),
        12345,
        "application/x-sig",
        json!({}),
    )
    .await;
    app.push_referrer("r", &child_digest, 1, "application/x-sig", json!({}))
        .await;
}

/// `?tag=` values are bounded (`limits.max_tags_per_push`): past the limit the push is
/// 414 (the distribution spec's answer) and stores nothing; at the limit, every tag is
/// taken and echoed.
#[actix_web::test]
async fn tags_per_push_are_bounded() {
    let app = TestApp::build(Backend::Fs, |c| c.limits.max_tags_per_push = 10).await;
    let (digest, body) = app.push_image("r", "base", b"layer").await;
    let put = |n: usize| {
        let query: Vec<String> = (0..n).map(|i| format!("tag=t{i}")).collect();
        app.req(
            Method::PUT,
            format!("/v2/r/manifests/{digest}?{}", query.join("&")),
        )
        .header("Content-Type", OCI_MANIFEST)
        .body(body.clone())
        .send()
    };
    let r = put(11).await;
    assert_json_snapshot!(r.error(StatusCode::URI_TOO_LONG), @r#"
        {
          "errors": [
            {
              "code": "MANIFEST_INVALID",
              "message": "11 tags in one manifest push; at most 10 are accepted"
            }
          ]
        }
    "#);
    assert_eq!(
        app.get("/v2/r/manifests/t0").await.status,
        StatusCode::NOT_FOUND
    );
    let r = put(10).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.header_all("oci-tag").len(), 10);
    assert_eq!(app.get("/v2/r/manifests/t9").await.status, StatusCode::OK);
}
