//! The `/packs` facade end to end, against the real binary: a pack published with
//! `POST /packs` is pulled with a real OCI client (the `oci-client` crate) byte for
//! byte, as the artifact DESIGN §6 describes; a pack pushed with that client through
//! `/v2` is listed, served and deleted through `/packs`. Runs on the production
//! configuration too (`PACKS_CONFORMANCE_BACKEND=production`).

mod common;

use std::collections::BTreeMap;

use common::*;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const BOUNDARY: &str = "packs-conformance-7c1e";

fn client() -> Client {
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    })
}

fn reference(s: &Server, repo: &str, tag: &str) -> Reference {
    format!("{}/{repo}:{tag}", s.addr)
        .parse()
        .expect("image reference")
}

/// `POST /packs` with the manifest part first, then the content.
async fn publish(s: &Server, manifest: &Value, content: &[u8]) -> (StatusCode, Value) {
    let mut body = Vec::new();
    for (name, ct, bytes) in [
        (
            "manifest",
            "application/json",
            serde_json::to_vec(manifest).unwrap(),
        ),
        ("content", PACK_CONTENT, content.to_vec()),
    ] {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; \
                 filename=\"{name}\"\r\nContent-Type: {ct}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    let r = s
        .req(Method::POST, "/packs")
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, json_body(r).await)
}

async fn get_json(s: &Server, path: &str) -> (StatusCode, Value) {
    let r = s.req(Method::GET, path).send().await.unwrap();
    let status = r.status();
    (status, json_body(r).await)
}

async fn get_bytes(s: &Server, path: &str) -> (StatusCode, Vec<u8>) {
    let r = s.req(Method::GET, path).send().await.unwrap();
    let status = r.status();
    (status, r.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn published_with_post_pulled_with_oci_client() {
    let s = Server::start().await;
    // Several MiB, so S3 takes a multipart upload on the production configuration.
    let data = content(41, 6 * 1024 * 1024 + 321);
    let manifest = json!({
        "packId": "conformance-policy", "version": "1.4.0", "type": "policy",
        "name": "Conformance policy", "description": "Published with POST /packs",
        "author": "conformance", "dependencies": [],
        "metadata": { "minRunnerVersion": "1.5.0" },
    });
    let (status, answer) = publish(&s, &manifest, &data).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["digest"], sha256(&data).as_str());

    let c = client();
    let image = reference(&s, "packs/conformance-policy", "1.4.0");
    let auth = RegistryAuth::Anonymous;
    let pulled = c
        .pull(&image, &auth, vec![PACK_CONTENT])
        .await
        .expect("pull");
    assert_eq!(pulled.layers.len(), 1);
    assert!(pulled.layers[0].data == data, "content pulled differs");
    assert_eq!(pulled.layers[0].media_type, PACK_CONTENT);
    assert_eq!(
        pulled.digest.as_deref(),
        answer["manifestDigest"].as_str(),
        "the manifest digest /packs reported"
    );
    // The config is the pack manifest, completed with digest, size and publishedAt.
    assert_eq!(pulled.config.media_type, PACK_CONFIG);
    let config: Value = serde_json::from_slice(&pulled.config.data).unwrap();
    for key in ["packId", "version", "type", "name", "description", "author"] {
        assert_eq!(config[key], manifest[key], "{key}");
    }
    assert_eq!(config["digest"], sha256(&data).as_str());
    assert_eq!(config["size"], data.len());
    assert!(config["publishedAt"].as_str().unwrap().ends_with('Z'));

    let m: OciImageManifest = pulled.manifest.expect("manifest");
    assert_eq!(m.media_type.as_deref(), Some(OCI_MANIFEST));
    assert_eq!(m.artifact_type.as_deref(), Some(PACK_POLICY));
    assert_eq!(m.config.media_type, PACK_CONFIG);
    let layer_title = m.layers[0]
        .annotations
        .as_ref()
        .and_then(|a| a.get("org.opencontainers.image.title"))
        .cloned();
    assert_eq!(
        layer_title.as_deref(),
        Some("conformance-policy-1.4.0.tar.gz")
    );
    let a = m.annotations.expect("annotations");
    assert_eq!(a["org.opencontainers.image.version"], "1.4.0");
    assert_eq!(a["org.opencontainers.image.title"], "Conformance policy");
    assert_eq!(a["org.opencontainers.image.authors"], "conformance");
    assert_eq!(
        a["org.opencontainers.image.description"],
        "Published with POST /packs"
    );
    assert_eq!(
        a["org.opencontainers.image.created"],
        config["publishedAt"].as_str().unwrap()
    );

    // And /packs serves the same bytes, by requirement and by range.
    let (status, got) = get_bytes(&s, "/packs/conformance-policy/%5E1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(got == data);
    let r = s
        .req(Method::GET, "/packs/conformance-policy/1.4.0")
        .header("Range", "bytes=5242880-5242889")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert!(r.bytes().await.unwrap() == data[5_242_880..5_242_890]);
}

#[tokio::test]
async fn pushed_with_oci_client_listed_served_and_deleted_through_packs() {
    let s = Server::start().await;
    // One pack through POST /packs...
    let (status, _) = publish(
        &s,
        &json!({"packId": "posted", "version": "1.0.0", "type": "task", "name": "Posted"}),
        b"posted content",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    // ...and one pushed by the OCI client, as oras or TaskRunner tooling would.
    let data = content(42, 200_000);
    let config = Config::new(
        serde_json::to_vec(&json!({
            "packId": "pushed", "version": "3.1.0", "type": "analyzer",
            "name": "Pushed analyzer", "description": "Pushed through /v2",
            "digest": sha256(&data), "size": data.len(),
            "publishedAt": "2025-01-15T10:30:00Z", "author": "oci-client",
            "dependencies": [], "metadata": {},
        }))
        .unwrap(),
        PACK_CONFIG.to_owned(),
        None,
    );
    let title = BTreeMap::from([(
        "org.opencontainers.image.title".to_owned(),
        "pushed-3.1.0.tar.gz".to_owned(),
    )]);
    let layers = vec![ImageLayer::new(
        data.clone(),
        PACK_CONTENT.to_owned(),
        Some(title),
    )];
    let mut manifest = OciImageManifest::build(&layers, &config, None);
    manifest.media_type = Some(OCI_MANIFEST.to_owned());
    manifest.artifact_type = Some("application/vnd.stellaops.pack.analyzer.v1".to_owned());
    let image = reference(&s, "packs/pushed", "3.1.0");
    let pushed = client()
        .push(
            &image,
            &layers,
            config,
            &RegistryAuth::Anonymous,
            Some(manifest),
        )
        .await
        .expect("push");
    let manifest_digest = pushed.manifest_url.rsplit('/').next().unwrap().to_owned();

    // Both listed.
    let (status, list) = get_json(&s, "/packs").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list["packs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["packId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["posted", "pushed"]);
    let (_, pack) = get_json(&s, "/packs/pushed").await;
    assert_eq!(pack["pack"]["type"], "analyzer");
    assert_eq!(pack["pack"]["digest"], sha256(&data).as_str());
    assert_eq!(pack["pack"]["publishedAt"], "2025-01-15T10:30:00Z");
    assert_eq!(pack["pack"]["manifestDigest"], manifest_digest.as_str());
    let (_, got) = get_bytes(&s, "/packs/pushed/~3.1").await;
    assert!(got == data);
    let (_, filtered) = get_json(&s, "/packs?type=analyzer&q=THROUGH%20%2Fv2").await;
    assert_eq!(filtered["packs"].as_array().unwrap().len(), 1);

    // Deleted through /v2: gone from /packs at once.
    let r = s
        .req(
            Method::DELETE,
            &format!("/v2/packs/pushed/manifests/{manifest_digest}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let (status, _) = get_json(&s, "/packs/pushed").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Deleted through /packs: its tag is gone from /v2.
    let r = s
        .req(Method::DELETE, "/packs/posted/1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = s.get_manifest("packs/posted", "1.0.0").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (_, list) = get_json(&s, "/packs").await;
    assert_eq!(list, json!({"packs": [], "next": null}));
}
