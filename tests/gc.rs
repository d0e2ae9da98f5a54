//! Garbage collection through the real app: what nothing reaches goes (after the
//! grace period) and what a tag reaches stays, bytes shared with another repository
//! stay, stray bytes go, pushes racing with a looping collector either land with
//! their blobs or fail cleanly, retention rules, and the figures on `/metrics`. On
//! every backend: SQLite with the filesystem and in memory, PostgreSQL with S3.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use common::{
    Backend, Method, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, StatusCode, TestApp,
};
use common::{image_manifest, index_manifest, sha256};
use packs_registry::digest::Digest;
use packs_registry::registry::gc::{GcOptions, GcReport, Removed, Unobserved};
use packs_registry::registry::retention::RetentionRule;
use packs_registry::storage::DynBlobStore;
use serde_json::json;

/// One collection with `grace`, and what else `tweak` sets.
async fn collect(app: &TestApp, grace: Duration, tweak: impl FnOnce(&mut GcOptions)) -> GcReport {
    // Times are kept in milliseconds, and a manifest pushed in the same millisecond
    // as the run's cutoff is within even a zero grace; step past the last write so a
    // zero grace means everything written before the call.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let mut options = GcOptions {
        grace,
        ..GcOptions::default()
    };
    tweak(&mut options);
    app.state()
        .registry
        .collect_garbage(&options, &Unobserved, true)
        .await
        .expect("garbage collection")
        .expect("the collector lock")
}

/// The app's blob store, opened again from its configuration.
fn store(app: &TestApp) -> DynBlobStore {
    packs_registry::server::open_storage(&app.state().config).expect("open the blob store")
}

/// Every digest whose bytes are in the store.
async fn stored(app: &TestApp) -> BTreeSet<String> {
    let store = store(app);
    if app.state().config.storage.backend == packs_registry::config::StorageBackend::Memory {
        // The in-memory store of the app is its own: another instance is empty.
        return BTreeSet::new();
    }
    let mut all = BTreeSet::new();
    let mut after: Option<Digest> = None;
    loop {
        let page = store
            .list_blobs(after.as_ref(), 100)
            .await
            .expect("list blobs");
        after = page.last().map(|b| b.digest.clone());
        all.extend(page.iter().map(|b| b.digest.to_string()));
        if page.len() < 100 {
            return all;
        }
    }
}

fn manifests_removed(r: &GcReport) -> BTreeSet<String> {
    r.removed
        .iter()
        .filter_map(|x| match x {
            Removed::Manifest { repo, digest, .. } => Some(format!("{repo}@{digest}")),
            _ => None,
        })
        .collect()
}

fn links_removed(r: &GcReport) -> BTreeSet<String> {
    r.removed
        .iter()
        .filter_map(|x| match x {
            Removed::Link { repo, digest, .. } => Some(format!("{repo}@{digest}")),
            _ => None,
        })
        .collect()
}

fn blobs_removed(r: &GcReport) -> BTreeSet<String> {
    r.removed
        .iter()
        .filter_map(|x| match x {
            Removed::Blob { digest, .. } => Some(digest.to_string()),
            _ => None,
        })
        .collect()
}

const CFG: &[u8] = br#"{"architecture":"amd64","os":"linux"}"#;

/// Pushes an image whose layers are `layers` (already pushed or not) under `reference`.
async fn push_image(app: &TestApp, repo: &str, reference: &str, layers: &[&[u8]]) -> String {
    let config = app.push_blob(repo, CFG).await;
    let mut descriptors = Vec::new();
    for layer in layers {
        descriptors.push((OCI_LAYER, app.push_blob(repo, layer).await, layer.len()));
    }
    let refs: Vec<(&str, &str, usize)> = descriptors
        .iter()
        .map(|(m, d, s)| (*m, d.as_str(), *s))
        .collect();
    let body = image_manifest(OCI_MANIFEST, (OCI_CONFIG, &config, CFG.len()), &refs);
    let reference = if reference.is_empty() {
        sha256(&body)
    } else {
        reference.to_owned()
    };
    app.push_manifest(repo, &reference, OCI_MANIFEST, &body)
        .await
}

/// Pushes a blob, again while the answer is that garbage collection deleted its
/// bytes as it was uploaded (a re-upload racing with the collection of the same
/// digest: the client is told to upload again); returns the digest and how many
/// uploads were refused so.
async fn push_blob_again(app: &TestApp, repo: &str, bytes: &[u8]) -> (String, u32) {
    let digest = sha256(bytes);
    for refused in 0..50 {
        let r = app
            .req(
                Method::POST,
                format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            )
            .header("Content-Type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await;
        match r.status {
            StatusCode::CREATED => return (digest, refused),
            StatusCode::BAD_REQUEST => {
                assert_eq!(
                    r.json()["errors"][0]["code"],
                    "BLOB_UPLOAD_INVALID",
                    "{}",
                    r.text()
                );
            }
            other => panic!("{other}: {}", r.text()),
        }
    }
    panic!("every upload of {digest} was refused");
}

async fn pull_blob(app: &TestApp, repo: &str, digest: &str) -> (StatusCode, Vec<u8>) {
    let r = app.get(format!("/v2/{repo}/blobs/{digest}")).await;
    (r.status, r.body.to_vec())
}

/// Unreachable manifests, unreferenced links and blobs no repository links go, with
/// their bytes; what a tag reaches (index children, referrers of a kept subject), and
/// bytes another repository still links, stay. Nothing goes within the grace period,
/// and a second run finds nothing more.
async fn collects_what_nothing_reaches(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let kept = push_image(&app, "gc/a", "v1", &[b"kept layer"]).await;
    let dropped = push_image(&app, "gc/a", "v2", &[b"shared layer", b"dropped layer"]).await;
    let untagged = push_image(&app, "gc/a", "", &[b"untagged layer"]).await;
    let stray = app.push_blob("gc/a", b"never referenced").await;
    // gc/b mounts the shared layer and keeps it with a tag.
    let shared = sha256(b"shared layer");
    let r = app
        .req(
            Method::POST,
            format!("/v2/gc/b/blobs/uploads/?mount={shared}&from=gc/a"),
        )
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    push_image(&app, "gc/b", "v1", &[b"shared layer"]).await;
    // An index and its child, and referrers of a kept and of a dropped manifest.
    let child = push_image(&app, "gc/c", "", &[b"child layer"]).await;
    let child_len = app
        .get(format!("/v2/gc/c/manifests/{child}"))
        .await
        .body
        .len();
    let index = index_manifest(OCI_INDEX, &[(OCI_MANIFEST, &child, child_len)]);
    app.push_manifest("gc/c", "multi", OCI_INDEX, &index).await;
    let kept_len = app
        .get(format!("/v2/gc/a/manifests/{kept}"))
        .await
        .body
        .len();
    let dropped_len = app
        .get(format!("/v2/gc/a/manifests/{dropped}"))
        .await
        .body
        .len();
    let kept_sig = app
        .push_referrer("gc/a", &kept, kept_len, "application/x-sig", json!({}))
        .await;
    let dropped_sig = app
        .push_referrer(
            "gc/a",
            &dropped,
            dropped_len,
            "application/x-sig",
            json!({}),
        )
        .await;
    let r = app.delete("/v2/gc/a/manifests/v2").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);

    // Everything is within an hour's grace.
    let report = collect(&app, Duration::from_secs(3600), |_| {}).await;
    assert!(report.removed.is_empty(), "{:?}", report.removed);

    let before = stored(&app).await;
    let report = collect(&app, Duration::ZERO, |_| {}).await;
    assert_eq!(
        manifests_removed(&report),
        BTreeSet::from([
            format!("gc/a@{dropped}"),
            format!("gc/a@{untagged}"),
            format!("gc/a@{dropped_sig}"),
        ])
    );
    let gone_blobs = BTreeSet::from([
        sha256(b"dropped layer"),
        sha256(b"untagged layer"),
        stray.clone(),
    ]);
    assert_eq!(
        links_removed(&report),
        BTreeSet::from([
            format!("gc/a@{shared}"),
            format!("gc/a@{}", sha256(b"dropped layer")),
            format!("gc/a@{}", sha256(b"untagged layer")),
            format!("gc/a@{stray}"),
        ])
    );
    assert_eq!(blobs_removed(&report), gone_blobs);
    let sizes: u64 = [
        &b"dropped layer"[..],
        &b"untagged layer"[..],
        &b"never referenced"[..],
    ]
    .iter()
    .map(|b| b.len() as u64)
    .sum();
    assert_eq!(report.reclaimed_bytes, sizes);

    // What stays pulls; what went does not.
    assert_eq!(
        app.get("/v2/gc/a/manifests/v1").await.status,
        StatusCode::OK
    );
    assert_eq!(
        pull_blob(&app, "gc/a", &sha256(b"kept layer")).await,
        (StatusCode::OK, b"kept layer".to_vec())
    );
    assert_eq!(
        pull_blob(&app, "gc/b", &shared).await,
        (StatusCode::OK, b"shared layer".to_vec())
    );
    assert_eq!(
        pull_blob(&app, "gc/a", &shared).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(format!("/v2/gc/a/manifests/{dropped}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(format!("/v2/gc/a/manifests/{kept_sig}"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.get(format!("/v2/gc/c/manifests/{child}")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        pull_blob(&app, "gc/c", &sha256(b"child layer")).await.0,
        StatusCode::OK
    );
    if backend != Backend::Memory {
        let after = stored(&app).await;
        let deleted: BTreeSet<String> = before.difference(&after).cloned().collect();
        assert_eq!(
            deleted, gone_blobs,
            "exactly the collected blobs' bytes went"
        );
    }
    let usage = app.state().registry.storage_usage(10).await.unwrap();
    if backend != Backend::Memory {
        assert_eq!(usage.total.blobs as usize, stored(&app).await.len());
    }

    let again = collect(&app, Duration::ZERO, |_| {}).await;
    assert!(again.removed.is_empty(), "{:?}", again.removed);
}

/// Bytes in the store that no row refers to (an upload that died before its row)
/// go once they are older than the grace period; a dry run lists them and leaves
/// them.
async fn stray_bytes_go_after_the_grace_period(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    app.push_image("gc/s", "v1", b"kept").await;
    let stray = b"stored, then the uploader died";
    let digest = Digest::parse(&sha256(stray)).unwrap();
    let body: packs_registry::storage::ByteStream =
        Box::pin(futures_util::stream::once(async move {
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(stray))
        }));
    let store = match backend {
        // The app's own in-memory store is not reachable from here.
        Backend::Memory => return,
        _ => store(&app),
    };
    store.put_blob(&digest, body).await.unwrap();

    let kept = collect(&app, Duration::from_secs(3600), |_| {}).await;
    assert!(kept.removed.is_empty(), "{:?}", kept.removed);
    let dry = collect(&app, Duration::ZERO, |o| o.dry_run = true).await;
    assert_eq!(
        dry.removed,
        [Removed::StrayBytes {
            digest: digest.clone(),
            size: stray.len() as u64
        }]
    );
    assert!(
        store.stat(&digest).await.unwrap().is_some(),
        "a dry run deletes nothing"
    );
    let report = collect(&app, Duration::ZERO, |_| {}).await;
    assert_eq!(report.removed, dry.removed);
    assert_eq!(store.stat(&digest).await.unwrap(), None);
    assert_eq!(
        app.get("/v2/gc/s/manifests/v1").await.status,
        StatusCode::OK
    );
}

/// A dry run reports what a run then removes, and the storage figures, deleting
/// nothing.
async fn a_dry_run_plans_what_a_run_removes(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    push_image(&app, "gc/d", "v1", &[b"one"]).await;
    push_image(&app, "gc/d", "v2", &[b"two", b"three"]).await;
    app.delete("/v2/gc/d/manifests/v2").await;
    let dry = collect(&app, Duration::ZERO, |o| o.dry_run = true).await;
    assert!(dry.dry_run);
    assert_eq!(dry.usage.total.manifests, 2, "nothing deleted yet");
    let run = collect(&app, Duration::ZERO, |_| {}).await;
    assert_eq!(manifests_removed(&dry), manifests_removed(&run));
    assert_eq!(links_removed(&dry), links_removed(&run));
    assert_eq!(blobs_removed(&dry), blobs_removed(&run));
    assert_eq!(dry.reclaimed_bytes, run.reclaimed_bytes);
    assert_eq!(run.usage.total.manifests, 1);
    assert_eq!(run.usage.total.blobs, 2, "config and one layer");
}

/// Pushes, tags, deletes and mounts run while a collector loops with no grace
/// period. Every manifest push either lands (and then pulls with every blob) or is
/// refused `MANIFEST_BLOB_UNKNOWN` (a blob it names was collected between its upload
/// and the push; the client uploads again), and every blob upload either lands or
/// is refused `BLOB_UPLOAD_INVALID` (its digest was collected as it was uploaded);
/// afterwards every tag the client kept pulls with the right bytes, and a last run
/// leaves no stray bytes.
async fn pushes_race_a_looping_collector(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let registry = app.state().registry.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let options = GcOptions {
                grace: Duration::ZERO,
                ..GcOptions::default()
            };
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                registry
                    .collect_garbage(&options, &Unobserved, true)
                    .await
                    .expect("a run");
                runs += 1;
                tokio::task::yield_now().await;
            }
            runs
        })
    };
    // Tags the client believes in: repo -> tag -> (manifest body, layer bytes).
    let mut expected: BTreeMap<(String, String), Vec<u8>> = BTreeMap::new();
    let mut refused = 0;
    for round in 0..12u32 {
        let clients = (0..4u32).map(|c| {
            let app = &app;
            async move {
                let repo = format!("race/r{c}");
                let layer = format!("layer {round} {c}").into_bytes();
                let shared = b"shared between every repository".to_vec();
                let mut refusals = 0;
                for attempt in 0..50 {
                    let (config, r1) = push_blob_again(app, &repo, CFG).await;
                    let (own, r2) = push_blob_again(app, &repo, &layer).await;
                    refusals += r1 + r2;
                    // Mount the shared layer from the previous client's repository,
                    // or upload it when it is not there (any more).
                    let from = format!("race/r{}", (c + 3) % 4);
                    let digest = sha256(&shared);
                    let r = app
                        .req(
                            Method::POST,
                            format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"),
                        )
                        .send()
                        .await;
                    if r.status != StatusCode::CREATED {
                        refusals += push_blob_again(app, &repo, &shared).await.1;
                    }
                    let body = image_manifest(
                        OCI_MANIFEST,
                        (OCI_CONFIG, &config, CFG.len()),
                        &[
                            (OCI_LAYER, &own, layer.len()),
                            (OCI_LAYER, &digest, shared.len()),
                        ],
                    );
                    let tag = format!("t{round}");
                    let r = app
                        .put_manifest(&repo, &tag, Some(OCI_MANIFEST), &body)
                        .await;
                    match r.status {
                        StatusCode::CREATED => return (repo, tag, layer, refusals),
                        StatusCode::BAD_REQUEST => {
                            assert_eq!(
                                r.json()["errors"][0]["code"],
                                "MANIFEST_BLOB_UNKNOWN",
                                "{}",
                                r.text()
                            );
                            refusals += 1;
                        }
                        other => panic!("attempt {attempt}: {other}: {}", r.text()),
                    }
                }
                panic!("{repo}: every push was refused");
            }
        });
        for (repo, tag, layer, refusals) in futures_util::future::join_all(clients).await {
            refused += refusals;
            expected.insert((repo.clone(), tag.clone()), layer);
            // Every other round, the previous round's tag goes.
            if round % 2 == 1 {
                let old = format!("t{}", round - 1);
                let r = app.delete(format!("/v2/{repo}/manifests/{old}")).await;
                assert_eq!(r.status, StatusCode::ACCEPTED);
                expected.remove(&(repo, old));
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = collector.await.unwrap();
    assert!(runs > 0);
    eprintln!("{runs} collections ran; {refused} pushes were refused and made again");

    let last = collect(&app, Duration::ZERO, |_| {}).await;
    for ((repo, tag), layer) in &expected {
        let r = app.get(format!("/v2/{repo}/manifests/{tag}")).await;
        assert_eq!(r.status, StatusCode::OK, "{repo}:{tag}");
        let manifest = r.json();
        for d in manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .chain([&manifest["config"]])
        {
            let digest = d["digest"].as_str().unwrap();
            let (status, bytes) = pull_blob(&app, repo, digest).await;
            assert_eq!(status, StatusCode::OK, "{repo}:{tag} {digest}");
            assert_eq!(sha256(&bytes), digest);
        }
        assert!(
            manifest["layers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["digest"] == sha256(layer))
        );
    }
    // No stray bytes: every stored blob has its row.
    if backend != Backend::Memory {
        let meta = packs_registry::server::open_metadata(&app.state().config)
            .await
            .unwrap();
        for digest in stored(&app).await {
            let d = Digest::parse(&digest).unwrap();
            assert!(
                meta.blob_size(&d).await.unwrap().is_some(),
                "stray bytes {digest} after the last run ({:?})",
                last.removed
            );
        }
    }
}

/// Pushes version `version` of policy pack `id` through `/v2` (as `oras` would),
/// published at `published` (RFC 3339), depending on `deps`.
async fn push_pack(
    app: &TestApp,
    id: &str,
    version: &str,
    published: &str,
    deps: serde_json::Value,
) {
    let repo = format!("packs/{id}");
    let content = format!("content of {id} {version}").into_bytes();
    let content_digest = app.push_blob(&repo, &content).await;
    let config = serde_json::to_vec(&json!({
        "packId": id, "version": version, "type": "policy", "name": id,
        "description": "", "author": "a", "publishedAt": published,
        "digest": content_digest, "size": content.len(), "dependencies": deps,
    }))
    .unwrap();
    let config_digest = app.push_blob(&repo, &config).await;
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.stellaops.pack.policy.v1",
        "config": {
            "mediaType": "application/vnd.stellaops.pack.config.v1+json",
            "digest": config_digest, "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.stellaops.pack.content.v1.tar+gzip",
            "digest": content_digest, "size": content.len(),
        }],
    }))
    .unwrap();
    app.push_manifest(&repo, version, OCI_MANIFEST, &body).await;
}

/// Retention: per pack, the newest versions and recent ones stay, old prereleases
/// go even among the newest, protected versions and what a kept version depends on
/// stay; a dry run only lists; the collector then takes the untagged manifests.
async fn retention_rules(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let now = "2999-01-01T00:00:00Z";
    let old = "2020-01-01T00:00:00Z";
    push_pack(&app, "base", "0.9.0", now, json!([])).await;
    push_pack(&app, "base", "1.0.0", old, json!([])).await;
    push_pack(&app, "base", "1.1.0", old, json!([])).await;
    push_pack(&app, "base", "2.0.0", old, json!([])).await;
    push_pack(&app, "base", "3.0.0-rc.1", old, json!([])).await;
    push_pack(&app, "base", "3.0.0", now, json!([])).await;
    push_pack(&app, "app", "1.0.0", old, json!([])).await;
    let needs_base_1 = json!([{"packId": "base", "version": "^1"}]);
    push_pack(&app, "app", "2.0.0", now, needs_base_1).await;
    let rules = vec![
        RetentionRule {
            pack_type: Some("policy".into()),
            keep_newest: Some(2),
            keep_days: Some(30),
            drop_prereleases_after_days: Some(7),
            ..RetentionRule::default()
        }
        .protecting(&["2.*".into()])
        .unwrap(),
    ];
    let versions = |id: &'static str| {
        let app = &app;
        async move {
            let r = app.get(format!("/packs/{id}/versions")).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            r.json()["versions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["version"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let tags = |r: &GcReport| -> HashSet<String> {
        r.removed
            .iter()
            .filter_map(|x| match x {
                Removed::Tag { repo, tag } => Some(format!("{repo}:{tag}")),
                _ => None,
            })
            .collect()
    };
    // 3.0.0-rc.1: among the newest two, but a prerelease older than a week.
    // 1.0.0: past the newest two and old. 2.0.0: protected. 1.1.0: what app@2.0.0's
    // ^1 resolves to. 0.9.0: recent. app@1.0.0: among app's newest two.
    let want: HashSet<String> = ["packs/base:3.0.0-rc.1", "packs/base:1.0.0"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let dry = collect(&app, Duration::ZERO, |o| {
        o.dry_run = true;
        o.retention = rules.clone();
    })
    .await;
    assert_eq!(tags(&dry), want);
    assert_eq!(versions("base").await.len(), 6, "a dry run deletes nothing");

    let run = collect(&app, Duration::ZERO, |o| o.retention = rules.clone()).await;
    assert_eq!(tags(&run), want);
    assert_eq!(versions("base").await, ["3.0.0", "2.0.0", "1.1.0", "0.9.0"]);
    assert_eq!(versions("app").await, ["2.0.0", "1.0.0"]);
    assert_eq!(
        manifests_removed(&run).len(),
        2,
        "the manifests of the versions let go: {:?}",
        run.removed
    );
    assert_eq!(
        app.get("/v2/packs/base/manifests/1.0.0").await.status,
        StatusCode::NOT_FOUND
    );
}

/// `/metrics` shows the storage figures (whole store and per repository) and what
/// garbage collection removed, read from the database.
async fn metrics_show_storage_and_collections(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    push_image(&app, "gc/m", "v1", &[b"0123456789"]).await;
    push_image(&app, "gc/m", "v2", &[b"abc"]).await;
    app.delete("/v2/gc/m/manifests/v2").await;
    collect(&app, Duration::ZERO, |_| {}).await;
    let text = app.get("/metrics").await.text();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter().map(Ok)).expect("parse");
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("{name} {label:?} in\n{text}"))
    };
    assert_eq!(value("packs_registry_storage_blobs", None), 2.0);
    let bytes = (CFG.len() + 10) as f64;
    assert_eq!(value("packs_registry_storage_blob_bytes", None), bytes);
    assert_eq!(value("packs_registry_storage_manifests", None), 1.0);
    assert_eq!(
        value(
            "packs_registry_repository_blob_bytes",
            Some(("repository", "gc/m"))
        ),
        bytes
    );
    assert_eq!(value("packs_registry_gc_runs_total", None), 1.0);
    assert_eq!(
        value("packs_registry_gc_removed_total", Some(("kind", "blob"))),
        1.0
    );
    assert_eq!(value("packs_registry_gc_reclaimed_bytes_total", None), 3.0);
}

/// The environment that points a `packs-registry` process at `app`'s data.
fn env_of(app: &TestApp) -> Vec<(String, String)> {
    let c = &app.state().config;
    let mut env = vec![
        ("PACKS__LOG__LEVEL".to_owned(), "warn".to_owned()),
        ("AWS_ACCESS_KEY_ID".to_owned(), "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), "test".to_owned()),
    ];
    if c.storage.backend == packs_registry::config::StorageBackend::S3 {
        for (k, v) in [
            ("PACKS__METADATA__URL", c.metadata.url.as_str()),
            ("PACKS__STORAGE__BACKEND", "s3"),
            ("PACKS__STORAGE__S3__BUCKET", c.storage.s3.bucket.as_str()),
            (
                "PACKS__STORAGE__S3__ENDPOINT",
                c.storage.s3.endpoint.as_str(),
            ),
        ] {
            env.push((k.to_owned(), v.to_owned()));
        }
    }
    env
}

/// A `packs-registry gc` killed (SIGKILL) after it deleted rows and before it deleted
/// their bytes, beside the running app: the API no longer shows what it collected,
/// the bytes are still stored (unreferenced), and the next run deletes them.
async fn a_collection_killed_between_rows_and_bytes(backend: Backend) {
    if backend == Backend::Memory {
        return; // another process cannot reach this process's memory
    }
    let app = TestApp::with_backend(backend).await;
    push_image(&app, "gc/k", "v1", &[b"kept layer"]).await;
    push_image(&app, "gc/k", "v2", &[b"collected layer"]).await;
    app.delete("/v2/gc/k/manifests/v2").await;
    let collected = sha256(b"collected layer");
    assert!(stored(&app).await.contains(&collected));

    let marks = tempfile::tempdir().unwrap();
    let paused = marks.path().join("paused");
    let mut gc = std::process::Command::new(env!("CARGO_BIN_EXE_packs-registry"))
        .args(["gc", "--grace", "0s", "--data-dir"])
        .arg(app.data_dir())
        .envs(env_of(&app))
        .env("PACKS_TEST_GC_PAUSE_BEFORE_BYTES", &paused)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start packs-registry gc");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !paused.exists() {
        if let Some(status) = gc.try_wait().unwrap() {
            panic!("gc exited before its byte deletions: {status}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gc never reached its bytes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gc.kill().unwrap(); // SIGKILL
    gc.wait().unwrap();

    let meta = packs_registry::server::open_metadata(&app.state().config)
        .await
        .unwrap();
    let digest = Digest::parse(&collected).unwrap();
    assert_eq!(meta.blob_size(&digest).await.unwrap(), None, "the row went");
    assert_eq!(
        pull_blob(&app, "gc/k", &collected).await.0,
        StatusCode::NOT_FOUND
    );
    assert!(
        stored(&app).await.contains(&collected),
        "the bytes were not deleted yet"
    );

    let next = collect(&app, Duration::from_secs(3600), |_| {}).await;
    assert!(next.removed.is_empty(), "{:?}", next.removed);
    assert_eq!(next.byte_deletions, 1, "the deletion the killed run owed");
    assert!(!stored(&app).await.contains(&collected));
    assert_eq!(
        app.get("/v2/gc/k/manifests/v1").await.status,
        StatusCode::OK
    );
    assert_eq!(
        pull_blob(&app, "gc/k", &sha256(b"kept layer")).await,
        (StatusCode::OK, b"kept layer".to_vec())
    );
}

on_both_backends!(
    a_collection_killed_between_rows_and_bytes,
    collects_what_nothing_reaches,
    stray_bytes_go_after_the_grace_period,
    a_dry_run_plans_what_a_run_removes,
    pushes_race_a_looping_collector,
    retention_rules,
    metrics_show_storage_and_collections,
);
