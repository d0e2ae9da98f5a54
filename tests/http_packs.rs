//! The `/packs` facade, in process: publishing (validation, idempotency, conflicts,
//! limits), reading (latest, versions in semver order, requirements, ranges), listing
//! (cursor pages, filters, search), deleting, and consistency with `/v2` whichever API
//! a pack arrives or leaves through.

mod common;

use common::*;
use insta::{allow_duplicates, assert_json_snapshot};
use serde_json::{Value, json};

crate::on_both_backends!(
    publish_and_read_back,
    republish_is_idempotent_or_conflicts,
    validation_errors_store_nothing,
    content_over_the_limit_is_413,
    semver_order_latest_and_prereleases,
    requirements_resolve_to_the_newest_match,
    range_downloads,
    list_pages_filters_and_search,
    dependencies_members_and_cycles,
    v2_pushed_packs_appear_and_disappear,
    malformed_v2_packs_are_stored_not_indexed,
    delete_removes_tag_and_row,
    openapi_document,
    nul_characters_are_refused_not_failed,
    malformed_dates_are_refused_not_panics,
    failed_publishes_leave_nothing,
    released_versions_are_immutable,
);

const PACK_CONFIG: &str = "application/vnd.stellaops.pack.config.v1+json";
const PACK_CONTENT: &str = "application/vnd.stellaops.pack.content.v1.tar+gzip";
const BOUNDARY: &str = "packs-test-boundary-7d3f0c";

/// A pack manifest with the required fields and `extra` on top.
fn manifest(id: &str, version: &str, pack_type: &str, extra: Value) -> Value {
    let mut m = json!({
        "packId": id, "version": version, "type": pack_type,
        "name": format!("Pack {id}"), "description": format!("About {id}"),
        "author": "stellaops",
    });
    for (k, v) in extra.as_object().expect("extra is an object") {
        m[k] = v.clone();
    }
    m
}

/// A multipart/form-data body of `(name, content type, bytes)` parts.
fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, content_type, bytes) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        body.extend_from_slice(
            format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n")
                .as_bytes(),
        );
        if let Some(ct) = content_type {
            body.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn post_form(app: &TestApp, body: Vec<u8>) -> TestResponse {
    app.req(Method::POST, "/packs")
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
}

/// `POST /packs` with `manifest` and `content`.
async fn publish(app: &TestApp, manifest: &Value, content: &[u8]) -> TestResponse {
    let m = serde_json::to_vec(manifest).unwrap();
    post_form(
        app,
        multipart(&[
            ("manifest", Some("application/json"), &m),
            ("content", Some("application/octet-stream"), content),
        ]),
    )
    .await
}

/// Publishes and insists on 201; returns the answer's JSON.
async fn published(app: &TestApp, manifest: &Value, content: &[u8]) -> Value {
    let r = publish(app, manifest, content).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    r.json()
}

/// Checks an error answer of the packs API; returns `(code, message)`.
fn api_error(r: &TestResponse, status: StatusCode) -> (String, String) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    let e = &v["error"];
    assert_eq!(
        v.as_object().unwrap().len(),
        1,
        "only `error` in the envelope: {v}"
    );
    (
        e["code"].as_str().expect("code").to_owned(),
        e["message"].as_str().expect("message").to_owned(),
    )
}

async fn versions(app: &TestApp, id: &str) -> Vec<String> {
    let r = app.get(format!("/packs/{id}/versions")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap().to_owned())
        .collect()
}

async fn latest(app: &TestApp, id: &str) -> String {
    let r = app.get(format!("/packs/{id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()["pack"]["version"].as_str().unwrap().to_owned()
}

async fn listed(app: &TestApp, query: &str) -> Vec<String> {
    let r = app.get(format!("/packs?{query}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()["packs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["packId"].as_str().unwrap().to_owned())
        .collect()
}

/// Every pack id, walking the cursor with pages of `limit`.
async fn walk(app: &TestApp, query: &str, limit: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut uri = format!("/packs?limit={limit}&{query}");
        if let Some(c) = &cursor {
            uri.push_str(&format!("&cursor={c}"));
        }
        let r = app.get(uri).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let v = r.json();
        let page = v["packs"].as_array().unwrap();
        assert!(page.len() <= limit as usize);
        out.extend(
            page.iter()
                .map(|p| p["packId"].as_str().unwrap().to_owned()),
        );
        match v["next"].as_str() {
            Some(next) => {
                assert_eq!(page.len(), limit as usize, "a page with a next is full");
                cursor = Some(next.to_owned());
            }
            None => {
                assert!(v["next"].is_null());
                return out;
            }
        }
    }
}

/// Everything `/v2` and `/packs` show, for "nothing was stored" checks.
async fn visible(app: &TestApp) -> (Value, Value) {
    let catalog = app.get("/v2/_catalog").await.json();
    let packs = app.get("/packs").await.json();
    (catalog, packs)
}

async fn publish_and_read_back(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let content = b"\x1f\x8b pretend this is a tar.gz of rules".to_vec();
    let m = manifest(
        "policy-baseline",
        "2.1.0",
        "policy",
        json!({"metadata": {"minRunnerVersion": "1.5.0", "tier": "gold"}}),
    );
    let r = publish(&app, &m, &content).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.header("location"), Some("/packs/policy-baseline/2.1.0"));
    let answer = r.json();
    let digest = sha256(&content);
    assert_eq!(answer["packId"], "policy-baseline");
    assert_eq!(answer["version"], "2.1.0");
    assert_eq!(answer["digest"], digest.as_str());
    let manifest_digest = answer["manifestDigest"].as_str().unwrap().to_owned();

    // The pack, its versions, its content.
    let pack = app.get("/packs/policy-baseline").await.json()["pack"].clone();
    assert_eq!(pack["packId"], "policy-baseline");
    assert_eq!(pack["version"], "2.1.0");
    assert_eq!(pack["type"], "policy");
    assert_eq!(pack["name"], "Pack policy-baseline");
    assert_eq!(pack["description"], "About policy-baseline");
    assert_eq!(pack["author"], "stellaops");
    assert_eq!(pack["digest"], digest.as_str());
    assert_eq!(pack["size"], content.len());
    assert_eq!(pack["mediaType"], PACK_CONTENT);
    assert_eq!(pack["manifestDigest"], manifest_digest.as_str());
    assert_eq!(pack["repository"], "packs/policy-baseline");
    assert_eq!(pack["dependencies"], json!([]));
    assert_eq!(
        pack["metadata"],
        json!({"minRunnerVersion": "1.5.0", "tier": "gold"})
    );
    assert_eq!(pack["prerelease"], false);
    let published_at = pack["publishedAt"].as_str().unwrap().to_owned();
    assert!(
        published_at.ends_with('Z') && published_at.len() >= 20,
        "{published_at}"
    );

    let v = app.get("/packs/policy-baseline/versions").await.json();
    assert_eq!(v["versions"].as_array().unwrap().len(), 1);
    assert_eq!(v["versions"][0]["digest"], digest.as_str());
    assert_eq!(v["versions"][0]["size"], content.len());
    assert_eq!(v["versions"][0]["publishedAt"], published_at.as_str());

    let got = app.get("/packs/policy-baseline/2.1.0").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body.as_ref(), &content[..]);
    assert_eq!(got.header("content-type"), Some(PACK_CONTENT));
    assert_eq!(
        got.header("content-length"),
        Some(content.len().to_string().as_str())
    );
    assert_eq!(got.header("etag"), Some(format!("\"{digest}\"").as_str()));
    assert!(
        got.header("digest")
            .is_some_and(|d| d.starts_with("sha-256=") && d.ends_with('=')),
        "{:?}",
        got.header("digest")
    );
    assert_eq!(got.header("accept-ranges"), Some("bytes"));

    // In /v2: the OCI artifact of the design, tag = version.
    let oci = app
        .req(Method::GET, "/v2/packs/policy-baseline/manifests/2.1.0")
        .header("Accept", OCI_MANIFEST)
        .send()
        .await;
    assert_eq!(oci.status, StatusCode::OK);
    assert_eq!(
        oci.header("docker-content-digest"),
        Some(manifest_digest.as_str())
    );
    let oci = oci.json();
    assert_eq!(oci["mediaType"], OCI_MANIFEST);
    assert_eq!(
        oci["artifactType"],
        "application/vnd.stellaops.pack.policy.v1"
    );
    assert_eq!(oci["config"]["mediaType"], PACK_CONFIG);
    assert_eq!(oci["layers"][0]["mediaType"], PACK_CONTENT);
    assert_eq!(oci["layers"][0]["digest"], digest.as_str());
    assert_eq!(
        oci["layers"][0]["annotations"]["org.opencontainers.image.title"],
        "policy-baseline-2.1.0.tar.gz"
    );
    let a = &oci["annotations"];
    assert_eq!(a["org.opencontainers.image.version"], "2.1.0");
    assert_eq!(a["org.opencontainers.image.created"], published_at.as_str());
    assert_eq!(a["org.opencontainers.image.authors"], "stellaops");
    assert_eq!(
        a["org.opencontainers.image.description"],
        "About policy-baseline"
    );
    assert_eq!(a["org.opencontainers.image.title"], "Pack policy-baseline");
    // The config blob is the pack manifest, completed by the registry.
    let config = app
        .get(format!(
            "/v2/packs/policy-baseline/blobs/{}",
            oci["config"]["digest"].as_str().unwrap()
        ))
        .await;
    assert_eq!(config.status, StatusCode::OK);
    let mut expected = m.clone();
    expected["digest"] = json!(digest);
    expected["size"] = json!(content.len());
    expected["publishedAt"] = json!(published_at);
    expected["dependencies"] = json!([]);
    assert_eq!(config.json(), expected);
    assert_eq!(
        app.get("/v2/packs/policy-baseline/blobs/".to_owned() + &digest)
            .await
            .body
            .as_ref(),
        &content[..]
    );

    // Unknown packs and versions.
    let (code, _) = api_error(&app.get("/packs/nope").await, StatusCode::NOT_FOUND);
    assert_eq!(code, "NOT_FOUND");
    api_error(
        &app.get("/packs/nope/versions").await,
        StatusCode::NOT_FOUND,
    );
    api_error(
        &app.get("/packs/policy-baseline/9.9.9").await,
        StatusCode::NOT_FOUND,
    );
    api_error(&app.get("/packs/Not_An_Id").await, StatusCode::NOT_FOUND);
}

async fn republish_is_idempotent_or_conflicts(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let m = manifest("idem", "1.0.0", "task", json!({}));
    let first = published(&app, &m, b"content one").await;
    let again = publish(&app, &m, b"content one").await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    assert_eq!(again.json(), first, "the same answer, nothing new");
    assert_eq!(again.header("location"), None);

    let r = publish(&app, &m, b"content two").await;
    let (code, message) = api_error(&r, StatusCode::CONFLICT);
    assert_eq!(code, "CONFLICT");
    assert!(message.contains("content"), "{message}");
    let mut renamed = m.clone();
    renamed["description"] = json!("another description");
    let (_, message) = api_error(
        &publish(&app, &renamed, b"content one").await,
        StatusCode::CONFLICT,
    );
    assert!(message.contains("description"), "{message}");
    // A pack keeps its type.
    let other_type = manifest("idem", "2.0.0", "policy", json!({}));
    api_error(
        &publish(&app, &other_type, b"x").await,
        StatusCode::CONFLICT,
    );

    // Nothing changed.
    assert_eq!(versions(&app, "idem").await, ["1.0.0"]);
    assert_eq!(
        app.get("/packs/idem/1.0.0").await.body.as_ref(),
        b"content one"
    );
    let tags = app.get("/v2/packs/idem/tags/list").await.json();
    assert_eq!(tags["tags"], json!(["1.0.0"]));

    // The parts in the other order: the same publish, idempotent too.
    let m_bytes = serde_json::to_vec(&m).unwrap();
    let r = post_form(
        &app,
        multipart(&[
            ("content", None, b"content one"),
            ("manifest", None, &m_bytes),
        ]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = post_form(
        &app,
        multipart(&[
            ("content", None, b"content three"),
            ("manifest", None, &m_bytes),
        ]),
    )
    .await;
    api_error(&r, StatusCode::CONFLICT);
    // Content first, new version: published, with a vendor media type from the part
    // (the OPA bundle case of the design).
    let opa = manifest("idem", "1.1.0", "task", json!({}));
    let r = post_form(
        &app,
        multipart(&[
            ("content", Some(OCI_LAYER), b"opa bundle"),
            ("manifest", None, &serde_json::to_vec(&opa).unwrap()),
        ]),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let got = app.get("/packs/idem/1.1.0").await;
    assert_eq!(got.header("content-type"), Some(OCI_LAYER));
    assert_eq!(got.body.as_ref(), b"opa bundle");
    let oci = app.get("/v2/packs/idem/manifests/1.1.0").await.json();
    assert_eq!(oci["layers"][0]["mediaType"], OCI_LAYER);
    assert_eq!(
        oci["layers"][0]["annotations"]["org.opencontainers.image.title"],
        "idem-1.1.0.tar.gz"
    );

    // A tag taken through /v2 by something that is not this pack.
    app.push_image("packs/taken", "1.0.0", b"an image layer")
        .await;
    let (code, _) = api_error(
        &publish(
            &app,
            &manifest("taken", "1.0.0", "policy", json!({})),
            b"pack",
        )
        .await,
        StatusCode::CONFLICT,
    );
    assert_eq!(code, "CONFLICT");
}

async fn validation_errors_store_nothing(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let before = visible(&app).await;
    let unprocessable = [
        manifest("Bad_Id", "1.0.0", "policy", json!({})),
        manifest(&"a".repeat(64), "1.0.0", "policy", json!({})),
        manifest("p", "1.0", "policy", json!({})),
        manifest("p", "v1.0.0", "policy", json!({})),
        manifest("p", "1.0.0", "image", json!({})),
        manifest("p", "1.0.0", "policy", json!({"name": ""})),
        manifest(
            "p",
            "1.0.0",
            "policy",
            json!({"metadata": {"minRunnerVersion": "soon"}}),
        ),
        manifest(
            "p",
            "1.0.0",
            "policy",
            json!({"dependencies": [{"packId": "q", "version": "not semver"}]}),
        ),
        manifest(
            "p",
            "1.0.0",
            "policy",
            json!({"dependencies": [{"packId": "unknown", "version": "^1"}]}),
        ),
        manifest(
            "p",
            "1.0.0",
            "policy",
            json!({"dependencies": [{"packId": "p", "version": "^1"}]}),
        ),
        manifest(
            "p",
            "1.0.0",
            "policy",
            json!({"members": [{"packId": "q", "version": "^1"}]}),
        ),
        manifest("p", "1.0.0", "bundle", json!({})),
        manifest(
            "p",
            "1.0.0",
            "policy",
            json!({"digest": sha256(b"something else")}),
        ),
        manifest("p", "1.0.0", "policy", json!({"size": 1})),
        json!({"packId": "p", "version": "1.0.0", "type": "policy"}), // no name
        json!(["not", "an", "object"]),
    ];
    for m in &unprocessable {
        let (code, message) = api_error(
            &publish(&app, m, b"content").await,
            StatusCode::UNPROCESSABLE_ENTITY,
        );
        assert_eq!(code, "INVALID_PACK", "{m}");
        assert!(!message.is_empty());
    }
    // Malformed requests.
    let ok = serde_json::to_vec(&manifest("p", "1.0.0", "policy", json!({}))).unwrap();
    let bad_requests: Vec<Vec<u8>> = vec![
        multipart(&[("manifest", None, b"{not json"), ("content", None, b"x")]),
        multipart(&[("manifest", None, &ok), ("manifest", None, &ok)]),
        multipart(&[("content", None, b"x"), ("content", None, b"y")]),
        multipart(&[("content", None, b"x")]),
        multipart(&[("manifest", None, &ok)]),
        multipart(&[("manifest", None, &ok), ("other", None, b"x")]),
        // A part after the two is refused too, and nothing is published: the pack is
        // published only once the form has ended (schemathesis found this one).
        multipart(&[
            ("manifest", None, &ok),
            ("content", None, b"x"),
            ("other", None, b""),
        ]),
        multipart(&[
            ("content", None, b"x"),
            ("manifest", None, &ok),
            ("", None, b"null"),
        ]),
        multipart(&[]),
        b"not multipart at all".to_vec(),
    ];
    for body in bad_requests {
        let r = post_form(&app, body).await;
        let (code, _) = api_error(&r, StatusCode::BAD_REQUEST);
        assert_eq!(code, "BAD_REQUEST");
    }
    // Not multipart: 415.
    let r = app
        .req(Method::POST, "/packs")
        .header("Content-Type", "application/json")
        .body(ok.clone())
        .send()
        .await;
    allow_duplicates! {
        assert_json_snapshot!(r.json(), @r#"
        {
          "error": {
            "code": "UNSUPPORTED_MEDIA_TYPE",
            "message": "POST /packs takes multipart/form-data with a manifest part and a content part"
          }
        }
        "#);
    }
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = app.req(Method::POST, "/packs").send().await;
    api_error(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = publish(
        &app,
        &manifest("p", "1.0.0", "policy", json!({"version": "01.0.0"})),
        b"x",
    )
    .await;
    let (_, message) = api_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(message.contains("01.0.0"), "{message}");

    assert_eq!(visible(&app).await, before, "nothing was stored");
}

async fn content_over_the_limit_is_413(backend: Backend) {
    let app = TestApp::build(backend, |c| c.packs.max_content_bytes = 1024).await;
    let before = visible(&app).await;
    let m = manifest("big", "1.0.0", "analyzer", json!({}));
    let r = publish(&app, &m, &vec![7u8; 1025]).await;
    let (code, _) = api_error(&r, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(code, "TOO_LARGE");
    assert_eq!(visible(&app).await, before, "nothing was stored");
    published(&app, &m, &[7u8; 1024]).await;
    assert_eq!(versions(&app, "big").await, ["1.0.0"]);
}

async fn semver_order_latest_and_prereleases(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    // Only prereleases: the highest prerelease is the latest.
    for v in ["2.0.0-beta.2", "2.0.0-beta.11", "2.0.0-alpha"] {
        published(
            &app,
            &manifest("order", v, "policy", json!({})),
            v.as_bytes(),
        )
        .await;
    }
    assert_eq!(latest(&app, "order").await, "2.0.0-beta.11");
    for v in ["1.9.0", "1.10.0", "1.2.0", "1.10.0+build.5"] {
        published(
            &app,
            &manifest("order", v, "policy", json!({})),
            v.as_bytes(),
        )
        .await;
    }
    // A release exists: it wins over higher prereleases; semver, not string, order.
    assert_eq!(latest(&app, "order").await, "1.10.0+build.5");
    assert_eq!(
        versions(&app, "order").await,
        [
            "2.0.0-beta.11",
            "2.0.0-beta.2",
            "2.0.0-alpha",
            "1.10.0+build.5",
            "1.10.0",
            "1.9.0",
            "1.2.0"
        ]
    );
    let v = app.get("/packs/order/versions").await.json();
    assert_eq!(v["versions"][0]["prerelease"], true);
    assert_eq!(v["versions"][3]["prerelease"], false);
    let summary = &app.get("/packs?q=order").await.json()["packs"][0];
    assert_eq!(summary["latestVersion"], "1.10.0+build.5");
    assert_eq!(summary["versions"], 7);
    // Build metadata: tag with '_', reachable as '+' (encoded) or '_'.
    let tags = app.get("/v2/packs/order/tags/list").await.json();
    assert!(
        tags["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("1.10.0_build.5"))
    );
    for path in [
        "/packs/order/1.10.0%2Bbuild.5",
        "/packs/order/1.10.0_build.5",
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.body.as_ref(), b"1.10.0+build.5");
    }
}

async fn requirements_resolve_to_the_newest_match(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    for v in [
        "1.2.0",
        "1.9.3",
        "1.10.0",
        "2.1.0",
        "2.1.7",
        "2.2.0",
        "3.0.0-rc.1",
    ] {
        published(&app, &manifest("req", v, "task", json!({})), v.as_bytes()).await;
    }
    for (spec, want) in [
        ("%5E1", "1.10.0"),
        ("^2", "2.2.0"),
        ("~2.1", "2.1.7"),
        ("~1.9", "1.9.3"),
        ("1", "1.10.0"),
        ("1.9", "1.10.0"),
        ("=1.9", "1.9.3"),
        ("%3E%3D1.2.0%2C%20%3C1.10.0", "1.9.3"),
        ("*", "2.2.0"),
        ("=3.0.0-rc.1", "3.0.0-rc.1"),
        ("2.1.0", "2.1.0"),
    ] {
        let r = app.get(format!("/packs/req/{spec}")).await;
        assert_eq!(r.status, StatusCode::OK, "{spec}: {}", r.text());
        assert_eq!(r.body.as_ref(), want.as_bytes(), "{spec}");
        assert_eq!(r.header("pack-version"), Some(want), "{spec}");
    }
    // ^3 excludes the prerelease; nothing else matches.
    let (code, _) = api_error(&app.get("/packs/req/%5E3").await, StatusCode::NOT_FOUND);
    assert_eq!(code, "NOT_FOUND");
    api_error(&app.get("/packs/req/%5E4").await, StatusCode::NOT_FOUND);
    // Text that is neither a version nor a requirement names nothing.
    let (code, message) = api_error(
        &app.get("/packs/req/not-a-version").await,
        StatusCode::NOT_FOUND,
    );
    assert_eq!(code, "NOT_FOUND");
    assert!(message.contains("neither"), "{message}");
    api_error(&app.get("/packs/unknown/%5E1").await, StatusCode::NOT_FOUND);
}

async fn range_downloads(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let content: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    published(
        &app,
        &manifest("ranged", "1.0.0", "analyzer", json!({})),
        &content,
    )
    .await;
    let get = |range: &'static str| {
        app.req(Method::GET, "/packs/ranged/1.0.0")
            .header("Range", range)
            .send()
    };
    let r = get("bytes=10-19").await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.body.as_ref(), &content[10..20]);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/10000"));
    assert_eq!(r.header("content-length"), Some("10"));
    let r = get("bytes=-5").await;
    assert_eq!(r.body.as_ref(), &content[9995..]);
    let r = get("bytes=9990-").await;
    assert_eq!(r.body.as_ref(), &content[9990..]);
    let r = get("bytes=10000-").await;
    let (code, _) = api_error(&r, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(code, "RANGE_NOT_SATISFIABLE");
    assert_eq!(r.header("content-range"), Some("bytes */10000"));
    // HEAD: the headers without the body.
    let r = app.head("/packs/ranged/1.0.0").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), Some("10000"));
    assert!(r.body.is_empty());
}

async fn list_pages_filters_and_search(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let types = ["policy", "analyzer", "task"];
    let mut ids = Vec::new();
    for i in 0..12 {
        let id = format!("pack-{i:02}");
        let extra = json!({
            "author": if i % 2 == 0 { "alice" } else { "bob" },
            "name": if i == 7 { "Secret Scanner".to_owned() } else { format!("Pack {i}") },
            "description": if i == 4 { "Finds LEAKED tokens" } else { "plain" },
        });
        published(
            &app,
            &manifest(&id, "1.0.0", types[i % 3], extra),
            id.as_bytes(),
        )
        .await;
        ids.push(id);
    }
    assert_eq!(listed(&app, "").await, ids);
    for limit in [1, 5, 12, 1000] {
        assert_eq!(walk(&app, "", limit).await, ids, "limit {limit}");
    }
    let pick = |is: &[usize]| is.iter().map(|i| ids[*i].clone()).collect::<Vec<_>>();
    assert_eq!(walk(&app, "type=task", 2).await, pick(&[2, 5, 8, 11]));
    assert_eq!(
        walk(&app, "type=policy&author=alice", 1).await,
        pick(&[0, 6])
    );
    assert_eq!(
        walk(&app, "author=bob", 4).await,
        pick(&[1, 3, 5, 7, 9, 11])
    );
    assert_eq!(listed(&app, "q=scanner").await, pick(&[7]));
    assert_eq!(listed(&app, "q=Leaked").await, pick(&[4]));
    assert_eq!(listed(&app, "q=pack-1").await, pick(&[10, 11]));
    assert_eq!(listed(&app, "q=-11").await, pick(&[11]));
    assert_eq!(listed(&app, "q=nothing-like-this").await, pick(&[]));
    let summary = &app.get("/packs?q=scanner").await.json()["packs"][0];
    assert_eq!(
        summary.as_object().unwrap().keys().collect::<Vec<_>>(),
        [
            "author",
            "description",
            "latestVersion",
            "name",
            "packId",
            "type",
            "updatedAt",
            "versions"
        ]
    );
    for bad in [
        "q=ab",
        "q=",
        "q=%C3%A9%C3%A9",
        "type=image",
        "type=",
        "limit=0",
        "limit=1001",
        "limit=ten",
        "limit=-1",
    ] {
        let (code, _) = api_error(
            &app.get(format!("/packs?{bad}")).await,
            StatusCode::BAD_REQUEST,
        );
        assert_eq!(code, "BAD_REQUEST", "{bad}");
    }
    // A cursor past everything is an empty last page.
    let r = app.get("/packs?cursor=zzz").await.json();
    assert_eq!(r, json!({"packs": [], "next": null}));
}

async fn dependencies_members_and_cycles(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    published(&app, &manifest("a", "1.0.0", "policy", json!({})), b"a1").await;
    let dep_a = json!({"dependencies": [{"packId": "a", "version": "^1"}]});
    published(
        &app,
        &manifest("b", "1.0.0", "analyzer", dep_a.clone()),
        b"b1",
    )
    .await;
    let pack = app.get("/packs/b").await.json();
    assert_eq!(
        pack["pack"]["dependencies"],
        json!([{"packId": "a", "version": "^1"}])
    );
    // a@1.1.0 -> b ^1 -> a ^1 (now a@1.1.0): a cycle.
    let r = publish(
        &app,
        &manifest(
            "a",
            "1.1.0",
            "policy",
            json!({"dependencies": [{"packId": "b", "version": "^1"}]}),
        ),
        b"a11",
    )
    .await;
    let (code, message) = api_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code, "INVALID_PACK");
    assert!(message.contains("cycle"), "{message}");
    // a@2.0.0 -> b ^1 -> a ^1 (a@1.0.0): no cycle.
    published(
        &app,
        &manifest(
            "a",
            "2.0.0",
            "policy",
            json!({"dependencies": [{"packId": "b", "version": "^1"}]}),
        ),
        b"a2",
    )
    .await;
    // A requirement nothing satisfies.
    let r = publish(
        &app,
        &manifest(
            "c",
            "1.0.0",
            "task",
            json!({"dependencies": [{"packId": "a", "version": "^3"}]}),
        ),
        b"c",
    )
    .await;
    let (_, message) = api_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(message.contains("no published version"), "{message}");
    // A bundle lists its members the same way.
    let bundle = manifest(
        "suite",
        "1.0.0",
        "bundle",
        json!({"members": [{"packId": "a", "version": "^2"}, {"packId": "b", "version": "~1.0"}]}),
    );
    published(&app, &bundle, b"bundle").await;
    let pack = app.get("/packs/suite").await.json();
    assert_eq!(pack["pack"]["members"].as_array().unwrap().len(), 2);
    let oci = app.get("/v2/packs/suite/manifests/1.0.0").await.json();
    assert_eq!(
        oci["artifactType"],
        "application/vnd.stellaops.pack.bundle.v1"
    );
    let r = publish(
        &app,
        &manifest(
            "suite2",
            "1.0.0",
            "bundle",
            json!({"members": [{"packId": "missing", "version": "*"}]}),
        ),
        b"x",
    )
    .await;
    api_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
}

/// Pushes a pack through /v2 the way `oras push` does; returns the manifest digest.
async fn push_v2_pack(
    app: &TestApp,
    id: &str,
    tag: &str,
    config: &[u8],
    content: &[u8],
    artifact_type: Option<&str>,
) -> String {
    let repo = format!("packs/{id}");
    let config_digest = app.push_blob(&repo, config).await;
    let layer = app.push_blob(&repo, content).await;
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": PACK_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": PACK_CONTENT, "digest": layer, "size": content.len(),
                    "annotations": {"org.opencontainers.image.title": "pack.tar.gz"}}],
        "annotations": {"org.opencontainers.image.created": "2025-01-15T10:30:00Z"},
    });
    if let Some(a) = artifact_type {
        m["artifactType"] = json!(a);
    }
    let body = serde_json::to_vec(&m).unwrap();
    app.push_manifest(&repo, tag, OCI_MANIFEST, &body).await
}

async fn v2_pushed_packs_appear_and_disappear(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let config = serde_json::to_vec(&manifest("orased", "1.2.0", "policy", json!({}))).unwrap();
    let digest = push_v2_pack(
        &app,
        "orased",
        "1.2.0",
        &config,
        b"oras content",
        Some("application/vnd.stellaops.pack.policy.v1"),
    )
    .await;
    // Indexed at once.
    assert_eq!(listed(&app, "").await, ["orased"]);
    let pack = app.get("/packs/orased").await.json()["pack"].clone();
    assert_eq!(pack["manifestDigest"], digest.as_str());
    assert_eq!(pack["digest"], sha256(b"oras content").as_str());
    assert_eq!(
        pack["publishedAt"], "2025-01-15T10:30:00Z",
        "from the created annotation"
    );
    assert_eq!(
        app.get("/packs/orased/1.2.0").await.body.as_ref(),
        b"oras content"
    );
    // Without artifactType (config media type alone), another version.
    let config2 = serde_json::to_vec(&manifest("orased", "1.3.0", "policy", json!({}))).unwrap();
    push_v2_pack(&app, "orased", "1.3.0", &config2, b"v13", None).await;
    assert_eq!(versions(&app, "orased").await, ["1.3.0", "1.2.0"]);
    // Pushed without its version tag: stored, not indexed.
    let config3 = serde_json::to_vec(&manifest("orased", "1.4.0", "policy", json!({}))).unwrap();
    push_v2_pack(&app, "orased", "latest", &config3, b"v14", None).await;
    assert_eq!(versions(&app, "orased").await, ["1.3.0", "1.2.0"]);

    // Deleting the tag through /v2 removes the version.
    let r = app.delete("/v2/packs/orased/manifests/1.3.0").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(versions(&app, "orased").await, ["1.2.0"]);
    // Deleting the manifest by digest removes the other one, and with it the pack.
    let r = app
        .delete(format!("/v2/packs/orased/manifests/{digest}"))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    api_error(&app.get("/packs/orased").await, StatusCode::NOT_FOUND);
    assert_eq!(listed(&app, "").await, Vec::<String>::new());

    // A version tag cannot be moved through /v2 (see
    // released_versions_are_immutable); deleted first, its version goes, and a pack
    // pushed over the tag re-appears.
    published(&app, &manifest("moved", "1.0.0", "task", json!({})), b"m").await;
    let r = app.delete("/v2/packs/moved/manifests/1.0.0").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    app.push_image("packs/moved", "1.0.0", b"an image, not a pack")
        .await;
    api_error(&app.get("/packs/moved").await, StatusCode::NOT_FOUND);
    let r = app.delete("/v2/packs/moved/manifests/1.0.0").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let cfg = serde_json::to_vec(&manifest("moved", "1.0.0", "task", json!({}))).unwrap();
    push_v2_pack(&app, "moved", "1.0.0", &cfg, b"m2", None).await;
    assert_eq!(latest(&app, "moved").await, "1.0.0");
}

/// A released pack version never changes under whoever pinned it: pushing other
/// content to its tag through /v2 is refused (409, naming the tag), /packs and /v2
/// keep serving the released bytes, pushing the same manifest again is a no-op, and
/// other tags of the repository still move.
async fn released_versions_are_immutable(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let released = published(
        &app,
        &manifest("policy-baseline", "1.0.0", "policy", json!({})),
        b"released rules",
    )
    .await;
    let original = app
        .get("/v2/packs/policy-baseline/manifests/1.0.0")
        .await
        .body;
    // Another manifest (a layer swapped for other bytes) onto the version's tag.
    let cfg =
        serde_json::to_vec(&manifest("policy-baseline", "1.0.0", "policy", json!({}))).unwrap();
    let config = app.push_blob("packs/policy-baseline", &cfg).await;
    let layer = app.push_blob("packs/policy-baseline", b"other rules").await;
    let body = image_manifest(
        OCI_MANIFEST,
        (PACK_CONFIG, &config, cfg.len()),
        &[(PACK_CONTENT, &layer, 11)],
    );
    let r = app
        .put_manifest("packs/policy-baseline", "1.0.0", Some(OCI_MANIFEST), &body)
        .await;
    let error = r.error(StatusCode::CONFLICT);
    assert_eq!(error["errors"][0]["code"], "DENIED");
    let message = error["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("tag 1.0.0 of packs/policy-baseline is immutable"),
        "{message}"
    );
    // Nothing moved: both APIs serve the released version.
    let pack = app.get("/packs/policy-baseline/1.0.0").await;
    assert_eq!(pack.body.as_ref(), b"released rules");
    assert_eq!(
        app.get("/packs/policy-baseline").await.json()["pack"]["manifestDigest"],
        released["manifestDigest"]
    );
    let r = app.get("/v2/packs/policy-baseline/manifests/1.0.0").await;
    assert!(r.body == original);
    // The same manifest again: fine. A mutable tag (`latest`) moves as before.
    let r = app
        .put_manifest(
            "packs/policy-baseline",
            "1.0.0",
            Some(OCI_MANIFEST),
            &original,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    app.push_manifest("packs/policy-baseline", "latest", OCI_MANIFEST, &original)
        .await;
    app.push_manifest("packs/policy-baseline", "latest", OCI_MANIFEST, &body)
        .await;
    // With `tags.immutable` emptied, version tags move again.
    let open = TestApp::build(backend, |c| c.tags.immutable.clear()).await;
    open.push_image("packs/x", "1.0.0", b"one").await;
    open.push_image("packs/x", "1.0.0", b"two").await;
}

async fn malformed_v2_packs_are_stored_not_indexed(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let bad_configs: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("broken", b"{not json".to_vec(), None),
        (
            "badver",
            serde_json::to_vec(&manifest("badver", "1.0", "policy", json!({}))).unwrap(),
            None,
        ),
        (
            "mismatch",
            serde_json::to_vec(&manifest("other-id", "1.0.0", "policy", json!({}))).unwrap(),
            None,
        ),
        (
            "wrongtype",
            serde_json::to_vec(&manifest("wrongtype", "1.0.0", "policy", json!({}))).unwrap(),
            Some("application/vnd.stellaops.pack.task.v1"),
        ),
    ];
    for (id, config, artifact_type) in bad_configs {
        let tag = if id == "badver" { "1.0" } else { "1.0.0" };
        let digest = push_v2_pack(&app, id, tag, &config, b"content", artifact_type).await;
        // Stored as a plain artifact: served by /v2...
        let r = app.get(format!("/v2/packs/{id}/manifests/{digest}")).await;
        assert_eq!(r.status, StatusCode::OK, "{id}");
        // ...but not in the packs index.
        api_error(
            &app.get(format!("/packs/{id}")).await,
            StatusCode::NOT_FOUND,
        );
    }
    assert_eq!(listed(&app, "").await, Vec::<String>::new());
    // Repositories outside packs/<id> are never indexed, even with a pack config.
    let config = serde_json::to_vec(&manifest("deep", "1.0.0", "policy", json!({}))).unwrap();
    let repo = "packs/team/deep";
    let c = app.push_blob(repo, &config).await;
    let l = app.push_blob(repo, b"x").await;
    let body = image_manifest(
        OCI_MANIFEST,
        (PACK_CONFIG, &c, config.len()),
        &[(PACK_CONTENT, &l, 1)],
    );
    app.push_manifest(repo, "1.0.0", OCI_MANIFEST, &body).await;
    assert_eq!(listed(&app, "").await, Vec::<String>::new());
}

async fn delete_removes_tag_and_row(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    for v in ["1.0.0", "1.1.0"] {
        published(
            &app,
            &manifest("gone", v, "policy", json!({})),
            v.as_bytes(),
        )
        .await;
    }
    let r = app.delete("/packs/gone/1.1.0").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"deleted": true}));
    assert_eq!(versions(&app, "gone").await, ["1.0.0"]);
    assert_eq!(latest(&app, "gone").await, "1.0.0");
    let tags = app.get("/v2/packs/gone/tags/list").await.json();
    assert_eq!(tags["tags"], json!(["1.0.0"]));
    let r = app.delete("/packs/gone/1.1.0").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json(), json!({"deleted": false}));
    for absent in ["/packs/gone/9.0.0", "/packs/nope/1.0.0", "/packs/gone/%5E1"] {
        let r = app.delete(absent).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{absent}");
    }
    assert_eq!(app.delete("/packs/gone/1.0.0").await.status, StatusCode::OK);
    api_error(&app.get("/packs/gone").await, StatusCode::NOT_FOUND);
    // Publishing the version again works: the tag is free.
    published(
        &app,
        &manifest("gone", "1.1.0", "policy", json!({})),
        b"back",
    )
    .await;
    assert_eq!(versions(&app, "gone").await, ["1.1.0"]);
}

async fn openapi_document(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let r = app.get("/packs/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(
        paths.keys().collect::<Vec<_>>(),
        [
            "/packs",
            "/packs/export",
            "/packs/import",
            "/packs/{id}",
            "/packs/{id}/versions",
            "/packs/{id}/{version}"
        ]
    );
    assert!(paths["/packs"]["post"]["requestBody"]["content"]["multipart/form-data"].is_object());
    // The manifest fields the document requires are exactly those a publish needs:
    // a publish without any of the others is accepted, so the document must not
    // require them.
    let required = ["packId", "version", "type", "name"];
    assert_eq!(
        doc["components"]["schemas"]["PackManifestInput"]["required"],
        json!(required)
    );
    let minimal = json!({"packId": "minimal", "version": "1.0.0", "type": "task", "name": "M"});
    assert_eq!(
        publish(&app, &minimal, b"content").await.status,
        StatusCode::CREATED
    );
    // Its optional fields take `null` where the document says they may be null, and
    // only there.
    let fields = doc["components"]["schemas"]["PackManifestInput"]["properties"]
        .as_object()
        .unwrap();
    let nullable = |field: &str| {
        fields[field]["type"]
            .as_array()
            .is_some_and(|types| types.contains(&json!("null")))
    };
    let mut optional: Vec<&str> = fields
        .keys()
        .map(String::as_str)
        .filter(|k| !required.contains(k))
        .collect();
    optional.sort_unstable();
    assert_eq!(
        optional,
        [
            "author",
            "dependencies",
            "description",
            "digest",
            "members",
            "metadata",
            "size"
        ]
    );
    for (n, field) in optional.into_iter().enumerate() {
        let mut null = serde_json::Map::new();
        null.insert(field.to_owned(), Value::Null);
        let m = manifest(&format!("nulls-{n}"), "1.0.0", "task", Value::Object(null));
        let r = publish(&app, &m, b"content").await;
        let expected = if nullable(field) {
            StatusCode::CREATED
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        assert_eq!(r.status, expected, "{field}: null: {}", r.text());
    }
    // Methods a route does not have: 405.
    let r = app.req(Method::PUT, "/packs").send().await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

/// NUL cannot be stored in PostgreSQL text: input carrying one is refused or matches
/// nothing, on every backend alike, and is never a 500.
async fn nul_characters_are_refused_not_failed(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let mut m = manifest("nul-free", "1.0.0", "policy", json!({}));
    m["description"] = json!("before\u{0}after");
    let (code, message) = api_error(
        &publish(&app, &m, b"content").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert_eq!(code, "INVALID_PACK");
    assert!(message.contains("NUL"), "{message}");
    assert_eq!(
        app.get("/packs/nul-free").await.status,
        StatusCode::NOT_FOUND
    );
    for uri in [
        "/packs?q=abc%00def",
        "/packs?author=me%00",
        "/packs?cursor=a%00b",
    ] {
        let r = app.get(uri).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text());
        assert_eq!(r.json()["packs"], json!([]), "{uri}");
    }
}

/// A date that is not RFC 3339, with a character of several bytes where the parser
/// looks for the offset: refused or ignored on every path that reads a date, never a
/// panic (which would drop the connection).
async fn malformed_dates_are_refused_not_panics(backend: Backend) {
    const BAD: &str = "2024-01-01T00:00:00\u{e9}1234";
    let app = TestApp::with_backend(backend).await;

    // POST /packs: publishedAt is checked, 422.
    let m = manifest("dated", "1.0.0", "policy", json!({"publishedAt": BAD}));
    let (code, message) = api_error(
        &publish(&app, &m, b"content").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert_eq!(code, "INVALID_PACK");
    assert!(message.contains("publishedAt"), "{message}");
    assert_eq!(app.get("/packs/dated").await.status, StatusCode::NOT_FOUND);

    // A /v2 push whose pack config carries it: stored as a plain artifact, not indexed.
    let config = serde_json::to_vec(&m).unwrap();
    let digest = push_v2_pack(&app, "dated", "1.0.0", &config, b"content", None).await;
    let r = app.get(format!("/v2/packs/dated/manifests/{digest}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(app.get("/packs/dated").await.status, StatusCode::NOT_FOUND);

    // A /v2 push of a valid pack whose created annotation carries it: indexed, the
    // annotation ignored (the publish time is the push's).
    let repo = "packs/created";
    let config = serde_json::to_vec(&manifest("created", "1.0.0", "task", json!({}))).unwrap();
    let config_digest = app.push_blob(repo, &config).await;
    let layer = app.push_blob(repo, b"created content").await;
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": PACK_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": PACK_CONTENT, "digest": layer, "size": 15}],
        "annotations": {"org.opencontainers.image.created": BAD},
    }))
    .unwrap();
    app.push_manifest(repo, "1.0.0", OCI_MANIFEST, &body).await;
    let pack = app.get("/packs/created").await.json()["pack"].clone();
    assert_eq!(pack["version"], "1.0.0");
    let published_at = pack["publishedAt"].as_str().unwrap();
    assert!(published_at.starts_with("20"), "{published_at}");
    assert_ne!(published_at, BAD);
}

/// Upload areas left in the filesystem store's staging area (other backends' areas are
/// not visible from here: `None`).
fn staged(app: &TestApp, backend: Backend) -> Option<usize> {
    (backend == Backend::Fs).then(|| {
        std::fs::read_dir(app.storage_path().join("uploads"))
            .map(|d| d.count())
            .unwrap_or(0)
    })
}

/// Insists that `content` is not a blob of `repo`.
async fn nothing_left(app: &TestApp, content: &[u8], repo: &str) {
    let url = format!("/v2/{repo}/blobs/{}", sha256(content));
    assert_eq!(app.head(&url).await.status, StatusCode::NOT_FOUND, "{url}");
}

/// A publish that fails, for whatever reason, leaves no repository, no blob link, no
/// tag and no staged bytes, and a request error is a 4xx.
async fn failed_publishes_leave_nothing(backend: Backend) {
    let app = TestApp::build(backend, |c| c.packs.max_content_bytes = 1024).await;
    let catalog = || async { app.get("/v2/_catalog").await.json()["repositories"].clone() };
    let before = catalog().await;

    // A content media type the multipart parser takes and RFC 6838 does not.
    let m = serde_json::to_vec(&manifest("tilde", "1.0.0", "policy", json!({}))).unwrap();
    let r = post_form(
        &app,
        multipart(&[
            ("manifest", None, &m),
            ("content", Some("application/vnd.acme~x"), b"tilde content"),
        ]),
    )
    .await;
    let (code, message) = api_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code, "INVALID_PACK");
    assert!(message.contains("application/vnd.acme~x"), "{message}");
    nothing_left(&app, b"tilde content", "packs/tilde").await;

    // A dependency that does not resolve, the content sent first (so it is staged).
    let m = manifest(
        "needy",
        "1.0.0",
        "task",
        json!({"dependencies": [{"packId": "absent", "version": "^1"}]}),
    );
    let r = post_form(
        &app,
        multipart(&[
            ("content", None, b"needy content"),
            ("manifest", None, &serde_json::to_vec(&m).unwrap()),
        ]),
    )
    .await;
    api_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
    nothing_left(&app, b"needy content", "packs/needy").await;

    // Content over the limit.
    let big = vec![7u8; 1025];
    let r = publish(&app, &manifest("big", "1.0.0", "task", json!({})), &big).await;
    api_error(&r, StatusCode::PAYLOAD_TOO_LARGE);
    nothing_left(&app, &big, "packs/big").await;
    assert_eq!(catalog().await, before, "no repository was created");
    assert_eq!(
        staged(&app, backend).unwrap_or(0),
        0,
        "nothing staged is left"
    );

    // The version's tag taken through /v2 by something that is not this pack: the
    // publish gets as far as its transaction, which refuses it.
    app.push_image("packs/taken", "1.0.0", b"an image layer")
        .await;
    let r = publish(
        &app,
        &manifest("taken", "1.0.0", "policy", json!({})),
        b"taken pack",
    )
    .await;
    api_error(&r, StatusCode::CONFLICT);
    nothing_left(&app, b"taken pack", "packs/taken").await;
    assert_eq!(
        app.get("/v2/packs/taken/tags/list").await.json()["tags"],
        json!(["1.0.0"])
    );

    // Publishes of one version racing: one wins, the others leave no trace.
    let m = manifest("race", "1.0.0", "policy", json!({}));
    let contents: Vec<Vec<u8>> = (0..6)
        .map(|i| format!("race content {i}").into_bytes())
        .collect();
    let answers =
        futures_util::future::join_all(contents.iter().map(|c| publish(&app, &m, c))).await;
    let winners: Vec<usize> = (0..answers.len())
        .filter(|&i| answers[i].status == StatusCode::CREATED)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    for (i, (answer, content)) in answers.iter().zip(&contents).enumerate() {
        if i == winners[0] {
            let url = format!("/v2/packs/race/blobs/{}", sha256(content));
            assert_eq!(app.head(&url).await.status, StatusCode::OK);
        } else {
            api_error(answer, StatusCode::CONFLICT);
            nothing_left(&app, content, "packs/race").await;
        }
    }
    let mut expected = before.as_array().unwrap().clone();
    expected.extend([json!("packs/race"), json!("packs/taken")]);
    assert_eq!(catalog().await, json!(expected));
    assert_eq!(
        staged(&app, backend).unwrap_or(0),
        0,
        "nothing staged is left"
    );
}
