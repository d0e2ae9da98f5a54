//! Garbage collection in the production configuration: two `serve` replicas over one
//! PostgreSQL database and one S3 bucket, each running the collector every second
//! with no grace period (one at a time, by the advisory lock), while clients push,
//! mount, tag and delete through both. Then a `packs-registry gc` run beside them,
//! and the checks: every tag the clients kept pulls with the right bytes, and no
//! bytes are left in the bucket without a row.
//!
//! Needs `PACKS_TEST_POSTGRES_URL` and `PACKS_TEST_S3_ENDPOINT` (see `replicas.rs`).

mod prod;

use std::collections::BTreeMap;
use std::time::Duration;

use packs_registry::digest::Digest;
use packs_registry::metadata::{BlobIndex, PoolOptions};
use packs_registry::storage::{BlobStore, ObjectBlobStore};
use prod::{Cluster, Replica, sha256};
use reqwest::StatusCode;
use serde_json::json;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Rounds of pushes (a few seconds of them: several collections by each replica).
const ROUNDS: u32 = 20;
const CFG: &[u8] = br#"{"architecture":"amd64","os":"linux"}"#;

/// Uploads `bytes` to `repo` on `replica`, again while the answer is that the
/// collector deleted the digest's bytes under the upload; returns how many were
/// refused so.
async fn upload(http: &reqwest::Client, replica: &Replica, repo: &str, bytes: &[u8]) -> u32 {
    let digest = sha256(bytes);
    for refused in 0..50 {
        let r = http
            .post(replica.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::CREATED => return refused,
            StatusCode::BAD_REQUEST => {
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["errors"][0]["code"], "BLOB_UPLOAD_INVALID", "{body}");
            }
            other => panic!("upload: {other}: {}", r.text().await.unwrap_or_default()),
        }
    }
    panic!("every upload of {digest} was refused");
}

/// Pushes one image (its config, its own layer, and a layer every client shares,
/// mounted from another repository when it is there) to `repo:tag`, again while the
/// push is refused `MANIFEST_BLOB_UNKNOWN`; returns the refusals.
async fn push(
    http: &reqwest::Client,
    (a, b): (&Replica, &Replica),
    repo: &str,
    tag: &str,
    layer: &[u8],
    from: &str,
) -> u32 {
    let shared = b"one layer every repository has".to_vec();
    let mut refused = 0;
    for attempt in 0..50 {
        refused += upload(http, a, repo, CFG).await;
        refused += upload(http, b, repo, layer).await;
        let digest = sha256(&shared);
        let r = http
            .post(a.url(&format!(
                "/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"
            )))
            .send()
            .await
            .unwrap();
        if r.status() != StatusCode::CREATED {
            refused += upload(http, b, repo, &shared).await;
        }
        // As a client does between its last blob and its manifest; here a window
        // for the looping collector to take the blobs.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let body = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha256(CFG), "size": CFG.len()},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                 "digest": sha256(layer), "size": layer.len()},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                 "digest": digest, "size": shared.len()},
            ],
        }))
        .unwrap();
        let target = if attempt % 2 == 0 { b } else { a };
        let r = http
            .put(target.url(&format!("/v2/{repo}/manifests/{tag}")))
            .header("content-type", OCI_MANIFEST)
            .body(body)
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::CREATED => return refused,
            StatusCode::BAD_REQUEST => {
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN", "{body}");
                refused += 1;
            }
            other => panic!("push: {other}: {}", r.text().await.unwrap_or_default()),
        }
    }
    panic!("{repo}:{tag}: every push was refused");
}

#[actix_web::test]
#[cfg_attr(
    not(all(packs_test_postgres, packs_test_s3)),
    ignore = "needs PostgreSQL and S3: set PACKS_TEST_POSTGRES_URL and PACKS_TEST_S3_ENDPOINT"
)]
async fn replicas_collect_while_clients_push() {
    let cluster = Cluster::start_with(
        2,
        &[
            ("PACKS__GC__INTERVAL_SECS", "1"),
            ("PACKS__GC__GRACE_SECS", "0"),
        ],
    )
    .await;
    let (a, b) = (&cluster.replicas[0], &cluster.replicas[1]);
    let http = reqwest::Client::new();
    // A collector looping without pause beside the replicas' (which then mostly find
    // the lock taken): a third process, as `packs-registry gc` would be.
    let mut config = packs_registry::config::Config::default();
    config.metadata.url = cluster.database.url.clone();
    config.storage.backend = packs_registry::config::StorageBackend::S3;
    config.storage.s3.bucket = cluster.bucket.clone();
    config.storage.s3.endpoint = cluster.env.s3_endpoint.clone();
    config.storage.s3.access_key_id = "test".into();
    config.storage.s3.secret_access_key = "test".to_owned().into();
    let looping = packs_registry::server::build_state(config).await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let stop = stop.clone();
        let registry = looping.registry.clone();
        tokio::spawn(async move {
            let options = packs_registry::registry::gc::GcOptions {
                grace: Duration::ZERO,
                ..Default::default()
            };
            let mut runs = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let done = registry
                    .collect_garbage(&options, &packs_registry::registry::gc::Unobserved, true)
                    .await
                    .expect("a collection");
                runs += u32::from(done.is_some());
            }
            runs
        })
    };
    let mut kept: BTreeMap<(String, String), Vec<u8>> = BTreeMap::new();
    let mut refused = 0;
    let started = std::time::Instant::now();
    for round in 0..ROUNDS {
        let clients = (0..4u32).map(|c| {
            let http = &http;
            async move {
                let repo = format!("stress/r{c}");
                let from = format!("stress/r{}", (c + 1) % 4);
                let layer = format!("layer {round} {c}").into_bytes();
                let tag = format!("t{round}");
                let replicas = if c % 2 == 0 { (a, b) } else { (b, a) };
                let refused = push(http, replicas, &repo, &tag, &layer, &from).await;
                (repo, tag, layer, refused)
            }
        });
        for (repo, tag, layer, n) in futures_util::future::join_all(clients).await {
            refused += n;
            kept.insert((repo.clone(), tag), layer);
            if round % 2 == 1 {
                let old = format!("t{}", round - 1);
                let r = http
                    .delete(a.url(&format!("/v2/{repo}/manifests/{old}")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::ACCEPTED);
                kept.remove(&(repo, old));
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = collector.await.unwrap();
    eprintln!(
        "{ROUNDS} rounds in {:?}; {runs} collections looped beside the replicas'; \
         {refused} uploads or pushes refused and made again",
        started.elapsed()
    );

    // A collection on demand beside the replicas, with no grace period.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_packs-registry"))
        .args(["gc", "--grace", "0s"])
        .envs(prod::prod_vars(
            &cluster.database.url,
            &cluster.env.s3_endpoint,
            &cluster.bucket,
        ))
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("PACKS__LOG__LEVEL", "warn")
        .output()
        .expect("run packs-registry gc");
    assert!(
        out.status.success(),
        "gc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("storage after:"), "{printed}");

    for ((repo, tag), layer) in &kept {
        for replica in [a, b] {
            let r = http
                .get(replica.url(&format!("/v2/{repo}/manifests/{tag}")))
                .header("accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{repo}:{tag}");
            let manifest: serde_json::Value = r.json().await.unwrap();
            let mut blobs: Vec<String> = manifest["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["digest"].as_str().unwrap().to_owned())
                .collect();
            blobs.push(manifest["config"]["digest"].as_str().unwrap().to_owned());
            assert!(blobs.contains(&sha256(layer)));
            for digest in blobs {
                let r = http
                    .get(replica.url(&format!("/v2/{repo}/blobs/{digest}")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK, "{repo}:{tag} {digest}");
                assert_eq!(sha256(&r.bytes().await.unwrap()), digest);
            }
        }
    }

    // Every blob in the bucket has its row.
    let s3 = packs_registry::config::S3Config {
        bucket: cluster.bucket.clone(),
        endpoint: cluster.env.s3_endpoint.clone(),
        access_key_id: "test".into(),
        secret_access_key: "test".to_owned().into(),
        ..Default::default()
    };
    let store = ObjectBlobStore::s3(&s3).unwrap();
    let meta = packs_registry::metadata::PostgresStore::connect(
        &cluster.database.url,
        &PoolOptions::default(),
    )
    .await
    .unwrap();
    let mut after: Option<Digest> = None;
    let mut stored = 0;
    loop {
        let page = store.list_blobs(after.as_ref(), 500).await.unwrap();
        for blob in &page {
            assert!(
                meta.blob_size(&blob.digest).await.unwrap().is_some(),
                "stray bytes {} in the bucket",
                blob.digest
            );
        }
        stored += page.len();
        after = page.last().map(|b| b.digest.clone());
        if page.len() < 500 {
            break;
        }
    }
    // Four repositories' kept images: configs and the shared layer once each.
    assert_eq!(stored, 2 + kept.len(), "{kept:?}");

    // Both replicas show the collections that ran, whichever process ran them.
    for replica in [a, b] {
        let text = http
            .get(replica.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let runs = text
            .lines()
            .find_map(|l| l.strip_prefix("packs_registry_gc_runs_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no gc_runs_total in\n{text}"));
        assert!(runs >= 2.0, "{runs} runs recorded");
    }
}
