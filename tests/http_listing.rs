//! Listings: tags, the catalog and referrers, with their pagination.

mod common;

use common::*;
use insta::assert_json_snapshot;
use serde_json::{Value, json};

crate::on_both_backends!(tag_pagination, referrers_listing);

/// The target of a `Link: <url>; rel="next"` header.
fn next_link(r: &TestResponse) -> Option<String> {
    let link = r.header("link")?;
    assert!(link.ends_with(r#">; rel="next""#), "{link}");
    Some(link[1..link.find('>').unwrap()].to_owned())
}

async fn tag_pagination(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let (digest, body) = app.push_image("r", "b", b"layer").await;
    let r = app
        .req(
            Method::PUT,
            format!("/v2/r/manifests/{digest}?tag=a&tag=C&tag=d&tag=e&tag=A1"),
        )
        .header("Content-Type", OCI_MANIFEST)
        .body(body)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    let r = app.get("/v2/r/tags/list").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("link"), None);
    let all = json!({ "name": "r", "tags": ["A1", "C", "a", "b", "d", "e"] });
    assert_eq!(r.json(), all);

    let r = app.get("/v2/r/tags/list?n=2").await;
    assert_eq!(r.json(), json!({ "name": "r", "tags": ["A1", "C"] }));
    assert_eq!(
        r.header("link"),
        Some(r#"</v2/r/tags/list?n=2&last=C>; rel="next""#)
    );

    // Following Link headers visits every tag once, in order.
    let mut seen = Vec::new();
    let mut next = Some("/v2/r/tags/list?n=2".to_owned());
    while let Some(url) = next {
        let r = app.get(&url).await;
        assert_eq!(r.status, StatusCode::OK, "{url}");
        let page = r.json()["tags"].as_array().unwrap().clone();
        assert!(page.len() <= 2);
        seen.extend(page);
        next = next_link(&r);
    }
    assert_eq!(Value::Array(seen), all["tags"]);

    let r = app.get("/v2/r/tags/list?last=b").await;
    assert_eq!(r.json()["tags"], json!(["d", "e"]));
    assert_eq!(r.header("link"), None);
    let r = app.get("/v2/r/tags/list?n=3&last=C").await;
    assert_eq!(r.json()["tags"], json!(["a", "b", "d"]));
    assert!(r.header("link").is_some());
    let r = app.get("/v2/r/tags/list?n=3&last=e").await;
    assert_eq!(r.json()["tags"], json!([]));
    assert_eq!(r.header("link"), None);

    // n=0: an empty list and no Link.
    let r = app.get("/v2/r/tags/list?n=0").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({ "name": "r", "tags": [] }));
    assert_eq!(r.header("link"), None);
}

#[actix_web::test]
async fn tags_of_an_unknown_repository() {
    let app = TestApp::new().await;
    let body = app
        .get("/v2/nothing/here/tags/list")
        .await
        .error(StatusCode::NOT_FOUND);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "NAME_UNKNOWN",
              "message": "repository name not known to registry"
            }
          ]
        }
    "#);
    let body = app
        .get("/v2/Bad/tags/list")
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["code"], "NAME_INVALID");
}

#[actix_web::test]
async fn tags_of_a_three_level_repository() {
    let app = TestApp::new().await;
    app.push_image("a/b/c", "v1", b"l").await;
    let r = app.get("/v2/a/b/c/tags/list").await;
    assert_eq!(r.json(), json!({ "name": "a/b/c", "tags": ["v1"] }));
}

#[actix_web::test]
async fn bad_page_size() {
    let app = TestApp::new().await;
    app.push_image("r", "v1", b"l").await;
    let body = app
        .get("/v2/r/tags/list?n=-1")
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "UNSUPPORTED",
              "message": "n must be a non-negative integer, got \"-1\""
            }
          ]
        }
    "#);
    let body = app
        .get("/v2/_catalog?n=many")
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "UNSUPPORTED",
              "message": "n must be a non-negative integer, got \"many\""
            }
          ]
        }
    "#);
}

#[actix_web::test]
async fn page_size_is_capped_by_configuration() {
    let app = TestApp::build(Backend::Fs, |c| c.limits.max_page_size = 2).await;
    let (digest, body) = app.push_image("r", "t1", b"l").await;
    let r = app
        .req(
            Method::PUT,
            format!("/v2/r/manifests/{digest}?tag=t2&tag=t3"),
        )
        .header("Content-Type", OCI_MANIFEST)
        .body(body)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    for url in ["/v2/r/tags/list", "/v2/r/tags/list?n=100"] {
        let r = app.get(url).await;
        assert_eq!(r.json()["tags"], json!(["t1", "t2"]), "{url}");
        assert_eq!(
            r.header("link"),
            Some(r#"</v2/r/tags/list?n=2&last=t2>; rel="next""#),
            "{url}"
        );
    }
}

#[actix_web::test]
async fn catalog_pagination() {
    let app = TestApp::new().await;
    let r = app.get("/v2/_catalog").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({ "repositories": [] }));

    for repo in ["zeta", "alpha/one", "alpha/two/three", "beta"] {
        app.push_image(repo, "v1", b"l").await;
    }
    let all = json!(["alpha/one", "alpha/two/three", "beta", "zeta"]);
    let r = app.get("/v2/_catalog").await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), json!({ "repositories": all }));
    assert_eq!(r.header("link"), None);

    let r = app.get("/v2/_catalog?n=2").await;
    assert_eq!(
        r.json()["repositories"],
        json!(["alpha/one", "alpha/two/three"])
    );
    assert_eq!(
        r.header("link"),
        Some(r#"</v2/_catalog?n=2&last=alpha%2Ftwo%2Fthree>; rel="next""#)
    );
    let mut seen = Vec::new();
    let mut next = Some("/v2/_catalog?n=3".to_owned());
    while let Some(url) = next {
        let r = app.get(&url).await;
        seen.extend(r.json()["repositories"].as_array().unwrap().clone());
        next = next_link(&r);
    }
    assert_eq!(Value::Array(seen), all);

    let r = app.get("/v2/_catalog?n=0").await;
    assert_eq!(r.json(), json!({ "repositories": [] }));
    assert_eq!(r.header("link"), None);
    let r = app.get("/v2/_catalog?last=beta").await;
    assert_eq!(r.json()["repositories"], json!(["zeta"]));
}

/// Pushes an index (no artifactType) with `subject`; returns its digest and size.
async fn push_index_referrer(
    app: &TestApp,
    repo: &str,
    subject: &str,
    size: usize,
) -> (String, usize) {
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [],
        "subject": { "mediaType": OCI_MANIFEST, "digest": subject, "size": size },
        "annotations": { "kind": "index" },
    }))
    .unwrap();
    (
        app.push_manifest(repo, &sha256(&body), OCI_INDEX, &body)
            .await,
        body.len(),
    )
}

async fn referrers_listing(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let (subject, subject_body) = app.push_image("r", "v1", b"layer").await;
    let size = subject_body.len();

    // Nothing refers to it yet: an empty index, never 404.
    let r = app.get(format!("/v2/r/referrers/{subject}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    assert_eq!(
        r.json(),
        json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [] })
    );

    let sig = app
        .push_referrer(
            "r",
            &subject,
            size,
            "application/vnd.example.sig",
            json!({ "signed-by": "ci" }),
        )
        .await;
    let sbom = app
        .push_referrer(
            "r",
            &subject,
            size,
            "application/vnd.example.sbom",
            json!({ "format": "spdx" }),
        )
        .await;
    // An image manifest without artifactType: its config's media type stands in.
    let config = app.push_blob("r", b"{\"cfg\":1}").await;
    let plain = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.example.config", "digest": config, "size": 9 },
        "layers": [],
        "subject": { "mediaType": OCI_MANIFEST, "digest": subject, "size": size },
    }))
    .unwrap();
    let plain_digest = app
        .push_manifest("r", &sha256(&plain), OCI_MANIFEST, &plain)
        .await;
    let (index, index_size) = push_index_referrer(&app, "r", &subject, size).await;
    // Referrers of another subject, or in another repository, are not listed.
    app.push_referrer(
        "r",
        &plain_digest,
        plain.len(),
        "application/vnd.example.sig",
        json!({}),
    )
    .await;
    app.push_image("s", "v1", b"layer").await;
    app.push_referrer(
        "s",
        &subject,
        size,
        "application/vnd.example.sig",
        json!({}),
    )
    .await;

    let r = app.get(format!("/v2/r/referrers/{subject}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    assert_eq!(r.header("oci-filters-applied"), None);
    assert_eq!(r.header("link"), None);
    let listing = r.json();
    assert_eq!(listing["schemaVersion"], 2);
    assert_eq!(listing["mediaType"], OCI_INDEX);
    let mut manifests = listing["manifests"].as_array().unwrap().clone();
    manifests.sort_by_key(|m| m["digest"].as_str().unwrap().to_owned());
    let size_of = |d: &str| app.get(format!("/v2/r/manifests/{d}"));
    let mut want = vec![
        json!({
            "mediaType": OCI_MANIFEST, "digest": sig, "size": size_of(&sig).await.body.len(),
            "artifactType": "application/vnd.example.sig", "annotations": { "signed-by": "ci" },
        }),
        json!({
            "mediaType": OCI_MANIFEST, "digest": sbom, "size": size_of(&sbom).await.body.len(),
            "artifactType": "application/vnd.example.sbom", "annotations": { "format": "spdx" },
        }),
        json!({
            "mediaType": OCI_MANIFEST, "digest": plain_digest, "size": plain.len(),
            "artifactType": "application/vnd.example.config",
        }),
        json!({
            "mediaType": OCI_INDEX, "digest": index, "size": index_size,
            "annotations": { "kind": "index" },
        }),
    ];
    want.sort_by_key(|m| m["digest"].as_str().unwrap().to_owned());
    assert_eq!(Value::Array(manifests), Value::Array(want));

    // Filtered by artifactType.
    let r = app
        .get(format!(
            "/v2/r/referrers/{subject}?artifactType=application/vnd.example.sbom"
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    let digests: Vec<String> = r.json()["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(digests, vec![sbom.clone()]);
    let r = app
        .get(format!(
            "/v2/r/referrers/{subject}?artifactType=application/none"
        ))
        .await;
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    assert_eq!(r.json()["manifests"], json!([]));

    // A deleted referrer is no longer listed.
    assert_eq!(
        app.delete(format!("/v2/r/manifests/{sig}")).await.status,
        StatusCode::ACCEPTED
    );
    let r = app.get(format!("/v2/r/referrers/{subject}")).await;
    let listed: Vec<String> = r.json()["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed.len(), 3);
    assert!(!listed.contains(&sig));

    // Unknown subject and unknown repository: empty, not 404.
    for url in [
        format!("/v2/r/referrers/{}", sha256(b"nothing")),
        format!("/v2/nowhere/referrers/{subject}"),
    ] {
        let r = app.get(&url).await;
        assert_eq!(r.status, StatusCode::OK, "{url}");
        assert_eq!(r.json()["manifests"], json!([]), "{url}");
    }
}

#[actix_web::test]
async fn referrers_with_bad_input() {
    let app = TestApp::new().await;
    let body = app
        .get("/v2/r/referrers/sha256:short")
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_json_snapshot!(body, @r#"
        {
          "errors": [
            {
              "code": "DIGEST_INVALID",
              "message": "digest invalid: digest \"sha256:short\" has an invalid encoded part"
            }
          ]
        }
    "#);
    let body = app
        .get("/v2/r/referrers/latest")
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["code"], "DIGEST_INVALID");
    let body = app
        .get(format!("/v2/R/referrers/{}", sha256(b"x")))
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["code"], "NAME_INVALID");
}

/// More referrers than one page holds: `Link` headers lead through all of them,
/// keeping the filter.
#[actix_web::test]
async fn referrers_pagination() {
    let app = TestApp::new().await;
    let (subject, subject_body) = app.push_image("r", "v1", b"layer").await;
    let config = app.push_empty_config("r").await;
    let total = 501; // one more than the server's page of referrers
    let mut pushed = std::collections::BTreeSet::new();
    for i in 0..total {
        let artifact_type = if i % 2 == 0 {
            "application/vnd.even"
        } else {
            "application/vnd.odd"
        };
        let body = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": config,
            "layers": [],
            "subject": { "mediaType": OCI_MANIFEST, "digest": subject, "size": subject_body.len() },
            "annotations": { "n": i.to_string() },
        }))
        .unwrap();
        let r = app
            .put_manifest("r", &sha256(&body), Some(OCI_MANIFEST), &body)
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        pushed.insert(sha256(&body));
    }

    let mut seen = std::collections::BTreeSet::new();
    let mut pages = 0;
    let mut next = Some(format!("/v2/r/referrers/{subject}"));
    while let Some(url) = next {
        let r = app.get(&url).await;
        assert_eq!(r.status, StatusCode::OK, "{url}");
        assert_eq!(r.header("content-type"), Some(OCI_INDEX));
        for m in r.json()["manifests"].as_array().unwrap() {
            assert!(
                seen.insert(m["digest"].as_str().unwrap().to_owned()),
                "listed twice: {m}"
            );
        }
        pages += 1;
        next = next_link(&r);
    }
    assert!(pages > 1, "{total} referrers fit one page");
    assert_eq!(seen, pushed);

    // With a filter the Link keeps it.
    let mut odd = 0;
    let mut next = Some(format!(
        "/v2/r/referrers/{subject}?artifactType=application/vnd.odd"
    ));
    while let Some(url) = next {
        let r = app.get(&url).await;
        assert_eq!(
            r.header("oci-filters-applied"),
            Some("artifactType"),
            "{url}"
        );
        for m in r.json()["manifests"].as_array().unwrap() {
            assert_eq!(m["artifactType"], "application/vnd.odd");
            odd += 1;
        }
        next = next_link(&r);
        if let Some(n) = &next {
            assert!(n.contains("artifactType=application%2Fvnd.odd"), "{n}");
        }
    }
    assert_eq!(odd, total / 2);
}
