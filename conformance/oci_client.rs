//! Interoperability with a real OCI client: the `oci-client` crate pushes and pulls
//! images and pack artifacts against the real server over plain HTTP, once with
//! monolithic uploads and once with chunked ones, and everything pulled back is
//! compared byte for byte with what was pushed. One test does the same in token mode
//! over TLS (a test CA, trusted by the client alone): Basic credentials through the
//! token flow, a pre-minted and attenuated bearer token, and the refusals.
//!
//! `oci-client` silently falls back to a monolithic push when a chunked one breaks
//! the spec, so each test also reads the server's request counters (`/metrics`) to
//! prove which upload protocol was really used, and that no request failed.

mod common;

use std::collections::BTreeMap;

use common::*;
use futures_util::stream;
use oci_client::client::{
    Certificate, CertificateEncoding, ClientConfig, ClientProtocol, Config, ImageLayer,
};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use reqwest::{Method, StatusCode};
use serde_json::json;

fn client(monolithic: bool) -> Client {
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        use_monolithic_push: monolithic,
        ..Default::default()
    })
}

fn reference(s: &Server, repo: &str, tag: &str) -> Reference {
    format!("{}/{repo}:{tag}", s.addr)
        .parse()
        .expect("image reference")
}

/// `packs_registry_http_requests_total` summed over the series matching every filter.
fn requests(metrics: &str, route: &str, method: Option<&str>, status: Option<&str>) -> u64 {
    let mut total = 0;
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("packs_registry_http_requests_total{") else {
            continue;
        };
        let (labels, value) = rest.split_once('}').expect("labels end");
        let label = |name: &str| {
            labels.split(',').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k.trim() == name).then(|| v.trim().trim_matches('"').to_owned())
            })
        };
        if label("route").as_deref() != Some(route) {
            continue;
        }
        if method.is_some_and(|m| label("method").as_deref() != Some(m)) {
            continue;
        }
        if status.is_some_and(|st| label("status").as_deref() != Some(st)) {
            continue;
        }
        total += value.trim().parse::<f64>().expect("counter value") as u64;
    }
    total
}

/// Every request counted with a status of 400 or more, as `route method status`.
fn failures(metrics: &str) -> Vec<String> {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("packs_registry_http_requests_total{"))
        .filter_map(|rest| {
            let (labels, _) = rest.split_once('}')?;
            let status = labels
                .split(',')
                .find_map(|kv| kv.strip_prefix("status=\""))?
                .trim_end_matches('"')
                .parse::<u16>()
                .ok()?;
            (status >= 400).then(|| labels.to_owned())
        })
        .collect()
}

/// The upload requests a push made.
struct Uploads {
    posts: u64,
    patches: u64,
    puts: u64,
}

async fn uploads(s: &Server) -> Uploads {
    let m = s.metrics().await;
    assert!(
        failures(&m).is_empty(),
        "failed requests: {:?}",
        failures(&m)
    );
    Uploads {
        posts: requests(&m, "v2_upload_start", Some("POST"), Some("202")),
        patches: requests(&m, "v2_upload", Some("PATCH"), Some("202")),
        puts: requests(&m, "v2_upload", Some("PUT"), Some("201")),
    }
}

fn image_layers() -> (Vec<ImageLayer>, Config) {
    let title = BTreeMap::from([(
        "org.opencontainers.image.title".to_owned(),
        "notes.txt".to_owned(),
    )]);
    let layers = vec![
        ImageLayer::new(content(1, 300_000), OCI_LAYER.to_owned(), None),
        ImageLayer::new(
            b"hello from a small layer\n".to_vec(),
            "application/vnd.oci.image.layer.v1.tar".to_owned(),
            Some(title),
        ),
    ];
    let config = Config::new(
        serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [] },
        }))
        .unwrap(),
        OCI_CONFIG.to_owned(),
        None,
    );
    (layers, config)
}

/// A pack artifact: the pack manifest as config, the content as its one layer.
fn pack(content_len: usize) -> (Vec<ImageLayer>, Config, OciImageManifest) {
    let data = content(7, content_len);
    let config = Config::new(
        serde_json::to_vec(&json!({
            "packId": "policy-x", "version": "2.1.0", "type": "policy",
            "name": "Baseline Security Policy", "description": "Standard security policy pack",
            "digest": sha256(&data), "size": data.len(), "publishedAt": "2025-01-15T10:30:00Z",
            "author": "stellaops", "dependencies": [], "metadata": { "minRunnerVersion": "1.5.0" },
        }))
        .unwrap(),
        PACK_CONFIG.to_owned(),
        None,
    );
    let title = BTreeMap::from([(
        "org.opencontainers.image.title".to_owned(),
        "policy-x-2.1.0.tar.gz".to_owned(),
    )]);
    let layers = vec![ImageLayer::new(data, PACK_CONTENT.to_owned(), Some(title))];
    let annotations = BTreeMap::from([
        (
            "org.opencontainers.image.version".to_owned(),
            "2.1.0".to_owned(),
        ),
        (
            "org.opencontainers.image.title".to_owned(),
            "Baseline Security Policy".to_owned(),
        ),
    ]);
    let mut manifest = OciImageManifest::build(&layers, &config, Some(annotations));
    manifest.media_type = Some(OCI_MANIFEST.to_owned());
    manifest.artifact_type = Some(PACK_POLICY.to_owned());
    (layers, config, manifest)
}

/// Pulls `image` with the client (as `auth`) and compares everything with what was
/// pushed; returns the pulled manifest. Also checks the manifest digest three ways:
/// the client's, the raw bytes', and the server's `Docker-Content-Digest`.
async fn pull_and_compare(
    s: &Server,
    c: &Client,
    image: &Reference,
    layers: &[ImageLayer],
    config: &Config,
    auth: &RegistryAuth,
) -> OciImageManifest {
    let auth = auth.clone();
    let accepted: Vec<&str> = layers.iter().map(|l| l.media_type.as_str()).collect();
    let pulled = c.pull(image, &auth, accepted).await.expect("pull");

    assert_eq!(pulled.config.media_type, config.media_type);
    assert!(pulled.config.data == config.data, "config differs");
    let manifest = pulled.manifest.clone().expect("pulled manifest");
    assert_eq!(manifest.layers.len(), layers.len());
    assert_eq!(pulled.layers.len(), layers.len());
    for (pushed, descriptor) in layers.iter().zip(&manifest.layers) {
        assert_eq!(descriptor.digest, sha256(&pushed.data));
        assert_eq!(descriptor.media_type, pushed.media_type);
        assert_eq!(descriptor.size, pushed.data.len() as i64);
        assert_eq!(descriptor.annotations, pushed.annotations);
        // Layers arrive in completion order: match them by content digest.
        let got = pulled
            .layers
            .iter()
            .find(|l| sha256(&l.data) == descriptor.digest)
            .unwrap_or_else(|| panic!("layer {} not pulled", descriptor.digest));
        assert!(
            got.data == pushed.data,
            "layer {} differs",
            descriptor.digest
        );
        assert_eq!(got.media_type, pushed.media_type);
    }

    // The manifest digest.
    let (raw, digest) = c
        .pull_manifest_raw(image, &auth, &[OCI_MANIFEST])
        .await
        .expect("pull raw manifest");
    assert_eq!(digest, sha256(&raw));
    assert_eq!(pulled.digest.as_deref(), Some(digest.as_str()));
    let (parsed, parsed_digest) = c
        .pull_image_manifest(image, &auth)
        .await
        .expect("pull manifest");
    assert_eq!(parsed_digest, digest);
    assert_eq!(parsed.config.digest, sha256(&config.data));
    let fetched = c
        .fetch_manifest_digest(image, &auth)
        .await
        .expect("fetch digest");
    assert_eq!(fetched, digest);

    // And the bytes the server serves are the ones the client got.
    let repo = image.repository();
    let tag = image.tag().expect("tag");
    let r = s
        .req(Method::GET, &format!("/v2/{repo}/manifests/{tag}"))
        .header("Accept", OCI_MANIFEST);
    let r = match &auth {
        RegistryAuth::Anonymous => r,
        RegistryAuth::Basic(user, password) => r.basic_auth(user, Some(password)),
        RegistryAuth::Bearer(token) => r.bearer_auth(token),
    };
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "Docker-Content-Digest").as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(header(&r, "Content-Type").as_deref(), Some(OCI_MANIFEST));
    assert!(r.bytes().await.unwrap() == raw, "served manifest differs");
    let by_digest: Reference = format!("{}/{repo}@{digest}", s.addr).parse().unwrap();
    let (raw2, digest2) = c
        .pull_manifest_raw(&by_digest, &auth, &[OCI_MANIFEST])
        .await
        .expect("pull by digest");
    assert_eq!(digest2, digest);
    assert!(raw2 == raw);
    manifest
}

#[tokio::test]
async fn image_monolithic_push_then_pull() {
    let s = Server::start().await;
    let c = client(true);
    let image = reference(&s, REPO, "1.0.0");
    let (layers, config) = image_layers();
    let pushed = c
        .push(
            &image,
            &layers,
            config.clone(),
            &RegistryAuth::Anonymous,
            None,
        )
        .await
        .expect("push");
    assert!(
        pushed
            .manifest_url
            .contains(&format!("/v2/{REPO}/manifests/")),
        "{}",
        pushed.manifest_url
    );

    let u = uploads(&s).await;
    assert_eq!(u.patches, 0, "a monolithic push sends no PATCH");
    assert_eq!(u.posts, 3, "one session per blob");
    assert_eq!(u.puts, 3, "one PUT with the content per blob");

    pull_and_compare(&s, &c, &image, &layers, &config, &RegistryAuth::Anonymous).await;
    let tags = c
        .list_tags(&image, &RegistryAuth::Anonymous, None, None)
        .await
        .expect("list tags");
    assert_eq!(tags.name, REPO);
    assert_eq!(tags.tags, ["1.0.0"]);
}

#[tokio::test]
async fn image_chunked_push_then_pull() {
    let s = Server::start().await;
    let c = client(false);
    let image = reference(&s, REPO, "2.0.0");
    let (mut layers, config) = image_layers();
    // Larger than two of the client's 4 MiB chunks: three PATCHes.
    layers[0] = ImageLayer::new(
        content(2, 2 * 4 * 1024 * 1024 + 123),
        OCI_LAYER.to_owned(),
        None,
    );
    c.push(
        &image,
        &layers,
        config.clone(),
        &RegistryAuth::Anonymous,
        None,
    )
    .await
    .expect("push");

    let u = uploads(&s).await;
    assert_eq!(
        u.posts, 3,
        "one session per blob, no fallback to a monolithic push"
    );
    assert_eq!(
        u.patches,
        3 + 1 + 1,
        "the large layer in three chunks, the others in one"
    );
    assert_eq!(u.puts, 3, "one closing PUT per blob");

    pull_and_compare(&s, &c, &image, &layers, &config, &RegistryAuth::Anonymous).await;
}

#[tokio::test]
async fn artifact_monolithic_push_then_pull() {
    let s = Server::start().await;
    let c = client(true);
    let image = reference(&s, "packs/team/policy-x", "2.1.0");
    let (layers, config, manifest) = pack(50_000);
    c.push(
        &image,
        &layers,
        config.clone(),
        &RegistryAuth::Anonymous,
        Some(manifest),
    )
    .await
    .expect("push");

    let u = uploads(&s).await;
    assert_eq!(u.patches, 0);
    assert_eq!((u.posts, u.puts), (2, 2));

    let pulled = pull_and_compare(&s, &c, &image, &layers, &config, &RegistryAuth::Anonymous).await;
    assert_eq!(pulled.artifact_type.as_deref(), Some(PACK_POLICY));
    assert_eq!(
        pulled
            .annotations
            .as_ref()
            .and_then(|a| a.get("org.opencontainers.image.version"))
            .map(String::as_str),
        Some("2.1.0")
    );
}

#[tokio::test]
async fn artifact_chunked_stream_push_then_pull() {
    let s = Server::start().await;
    let c = client(false);
    let image = reference(&s, "packs/team/policy-x", "2.1.1");
    let (layers, config, manifest) = pack(100_000);
    let auth = RegistryAuth::Anonymous;

    // The content as a stream of ten pieces: one PATCH each, with no fallback.
    let data = layers[0].data.clone();
    let pieces: Vec<Result<bytes::Bytes, OciDistributionError>> = (0..10)
        .map(|i| Ok(data.slice(i * 10_000..(i + 1) * 10_000)))
        .collect();
    let digest = sha256(&data);
    // The client authenticates lazily; an anonymous pull-free push needs it stored first.
    c.store_auth_if_needed(image.resolve_registry(), &auth)
        .await;
    c.push_blob_stream(
        &image,
        stream::iter(pieces),
        &digest,
        Some(data.len() as u64),
    )
    .await
    .expect("push stream");
    c.push_blob(&image, config.data.clone(), &sha256(&config.data))
        .await
        .expect("push config");
    c.push_manifest(&image, &OciManifest::Image(manifest))
        .await
        .expect("push manifest");

    let u = uploads(&s).await;
    assert_eq!(u.posts, 2);
    assert_eq!(u.patches, 10 + 1, "ten content chunks and the config");
    assert_eq!(u.puts, 2);

    let pulled = pull_and_compare(&s, &c, &image, &layers, &config, &RegistryAuth::Anonymous).await;
    assert_eq!(pulled.artifact_type.as_deref(), Some(PACK_POLICY));

    // The blob the stream pushed is served whole, byte for byte.
    s.assert_blob("packs/team/policy-x", &digest, &data).await;
    let r = s
        .req(Method::GET, "/v2/packs/team/policy-x/tags/list")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// A 403 `DENIED` from the registry (parsed, or as the raw body of a push).
fn denied(err: &OciDistributionError) -> bool {
    match err {
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| e.code == oci_client::errors::OciErrorCode::Denied),
        OciDistributionError::ServerError { code, message, .. } => {
            *code == 403 && message.contains(r#""code":"DENIED""#)
        }
        _ => false,
    }
}

/// A client over HTTPS that trusts the test CA and nothing else.
fn tls_client(ca: &[u8]) -> Client {
    Client::new(ClientConfig {
        protocol: ClientProtocol::Https,
        tls_certs_only: vec![Certificate {
            encoding: CertificateEncoding::Pem,
            data: ca.to_vec(),
        }],
        ..Default::default()
    })
}

/// Token mode over TLS: `alice` may pull and push under `packs/` and `public/`, the
/// robot `runner` may only pull `packs/`, anyone may pull `public/`. The certificate
/// is signed by a CA made for the test; the client trusts that CA alone.
#[tokio::test]
async fn token_auth_over_tls_basic_credentials_and_a_minted_token() {
    const ALICE: &str = "alice-password";
    const RUNNER: &str = "runner-password";
    let dir = tempfile::TempDir::new().unwrap();
    let ca = TestCa::make(dir.path());
    let root_key = dir.path().join("root.key");
    std::fs::write(&root_key, cli(&["token", "keygen"], "")).unwrap();
    let config = dir.path().join("registry.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server.tls]
cert = "{cert}"
key = "{key}"

[auth]
mode = "token"
service = "packs-registry.test"
root_key_file = "{root_key}"
anonymous_pull = ["public/"]

[[auth.users]]
name = "alice"
password_hash = "{alice}"
grants = ["packs/:pull,push", "public/:pull,push"]

[[auth.robots]]
name = "runner"
password_hash = "{runner}"
grants = ["packs/:pull"]
"#,
            cert = ca.cert.display(),
            key = ca.key.display(),
            root_key = root_key.display(),
            alice = cli(&["user", "hash"], &format!("{ALICE}\n")),
            runner = cli(&["user", "hash"], &format!("{RUNNER}\n")),
        ),
    )
    .unwrap();
    let s = Server::start_with(&["--config".as_ref(), config.as_os_str()], Some(&ca.ca_pem)).await;
    let r = s.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&r, "WWW-Authenticate").as_deref(),
        Some(
            format!(
                r#"Bearer realm="https://{}/token",service="packs-registry.test""#,
                s.addr
            )
            .as_str()
        )
    );

    let alice = RegistryAuth::Basic("alice".into(), ALICE.into());
    let runner = RegistryAuth::Basic("runner".into(), RUNNER.into());
    let image = reference(&s, "packs/team/tls-image", "1.0.0");
    let (layers, config_blob) = image_layers();

    // alice pushes through the token flow, and pulls it back.
    let c = tls_client(&ca.ca_pem);
    c.push(&image, &layers, config_blob.clone(), &alice, None)
        .await
        .expect("alice's push");
    pull_and_compare(
        &s,
        &tls_client(&ca.ca_pem),
        &image,
        &layers,
        &config_blob,
        &alice,
    )
    .await;

    // The pull-only robot pulls, and cannot push; nothing is stored.
    pull_and_compare(
        &s,
        &tls_client(&ca.ca_pem),
        &image,
        &layers,
        &config_blob,
        &runner,
    )
    .await;
    let refused = reference(&s, "packs/team/runner-push", "1.0.0");
    let err = tls_client(&ca.ca_pem)
        .push(&refused, &layers, config_blob.clone(), &runner, None)
        .await
        .err()
        .expect("a pull-only robot pushed");
    assert!(denied(&err), "{err:?}");
    let err = tls_client(&ca.ca_pem)
        .pull_image_manifest(&refused, &alice)
        .await
        .expect_err("the refused push stored a manifest");
    assert!(format!("{err:?}").contains("ManifestUnknown"), "{err:?}");

    // A wrong password gets no token, hence nothing.
    let wrong = RegistryAuth::Basic("alice".into(), "not-alice-password".into());
    let err = tls_client(&ca.ca_pem)
        .pull_image_manifest(&image, &wrong)
        .await
        .expect_err("a wrong password pulled");
    // (The client goes on without a token when it gets none: the registry's 401.)
    assert!(
        matches!(err, OciDistributionError::UnauthorizedError { .. }),
        "{err:?}"
    );

    // Anonymous: pulls under public/ only.
    let err = tls_client(&ca.ca_pem)
        .pull_image_manifest(&image, &RegistryAuth::Anonymous)
        .await
        .expect_err("an anonymous pull under packs/");
    assert!(
        matches!(err, OciDistributionError::UnauthorizedError { .. }),
        "{err:?}"
    );
    let public = reference(&s, "public/team/tls-image", "1.0.0");
    tls_client(&ca.ca_pem)
        .push(&public, &layers, config_blob.clone(), &alice, None)
        .await
        .expect("alice's push to public/");
    pull_and_compare(
        &s,
        &tls_client(&ca.ca_pem),
        &public,
        &layers,
        &config_blob,
        &RegistryAuth::Anonymous,
    )
    .await;

    // A TaskRunner's token, minted ahead of time and narrowed to one repository,
    // presented directly as Bearer: it pulls that repository and nothing else.
    let config_arg = config.to_str().unwrap();
    let minted = cli(
        &[
            "token",
            "mint",
            "--config",
            config_arg,
            "--principal",
            "taskrunner-7",
            "--grant",
            "packs/team/:pull",
            "--expires",
            "1h",
        ],
        "",
    );
    let narrowed = cli(
        &[
            "token",
            "attenuate",
            "--token",
            "-",
            "--repository",
            "packs/team/tls-image",
            "--expires",
            "10min",
        ],
        &format!("{minted}\n"),
    );
    let bearer = RegistryAuth::Bearer(narrowed);
    pull_and_compare(
        &s,
        &tls_client(&ca.ca_pem),
        &image,
        &layers,
        &config_blob,
        &bearer,
    )
    .await;
    let other = reference(&s, "packs/team/other", "1.0.0");
    tls_client(&ca.ca_pem)
        .push(&other, &layers, config_blob.clone(), &alice, None)
        .await
        .expect("alice's push of another repository");
    let err = tls_client(&ca.ca_pem)
        .pull_image_manifest(&other, &bearer)
        .await
        .expect_err("the narrowed token pulled another repository");
    assert!(denied(&err), "{err:?}");
    let err = tls_client(&ca.ca_pem)
        .push(&refused, &layers, config_blob.clone(), &bearer, None)
        .await
        .err()
        .expect("a pull token pushed");
    assert!(denied(&err), "{err:?}");

    // Without the test CA the client refuses the certificate.
    let untrusted = Client::new(ClientConfig {
        protocol: ClientProtocol::Https,
        ..Default::default()
    });
    let err = untrusted
        .pull_image_manifest(&image, &alice)
        .await
        .expect_err("a client without the CA connected");
    assert!(
        format!("{err:?}").to_lowercase().contains("certificate"),
        "{err:?}"
    );
}
