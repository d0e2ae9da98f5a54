//! Crash consistency: a real `serve` process is killed with SIGKILL at random points
//! of monolithic, chunked, manifest and `/packs` pushes, restarted on the same data,
//! and then every invariant is checked:
//!
//! - every tag resolves, and every blob a manifest names exists with its digest and
//!   size (bytes read back and hashed);
//! - the packs index agrees with the tags, and every pack's content is its digest;
//! - whatever was acknowledged (201) is there, byte for byte;
//! - what was not acknowledged is absent or whole, never half-written;
//! - interrupted chunked uploads are invisible until finished, and resume from the
//!   offset the server reports.
//!
//! Both configurations: SQLite + filesystem (a data folder kept across restarts) and
//! PostgreSQL + S3. The kill points come from a seed printed at the start, so a
//! failing round can be replayed (`PACKS_CRASH_SEED`).

#[path = "prod/mod.rs"]
mod prod;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

/// Where the registry keeps its data, across restarts.
struct Deployment {
    vars: Vec<(String, String)>,
    dir: tempfile::TempDir,
    port: u16,
    _database: Option<prod::TestDatabase>,
}

impl Deployment {
    fn start(&self) -> Child {
        Command::new(env!("CARGO_BIN_EXE_packs-registry"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--data-dir",
            ])
            .arg(self.dir.path())
            .envs(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("PACKS__LOG__LEVEL", "error")
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start packs-registry")
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn wait_ready(&self, child: &mut Child) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(self.url("/readyz")).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("packs-registry exited during start-up: {status}");
            }
            assert!(Instant::now() < deadline, "packs-registry did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn embedded() -> Deployment {
    Deployment {
        vars: Vec::new(),
        dir: tempfile::tempdir().unwrap(),
        port: prod::free_port(),
        _database: None,
    }
}

async fn production() -> Deployment {
    let env = prod::ProdEnv::from_env().expect("the production services");
    let database = prod::TestDatabase::create(&env.postgres_url).await;
    let bucket = prod::create_bucket(&env.s3_endpoint).await;
    Deployment {
        vars: prod::prod_vars(&database.url, &env.s3_endpoint, &bucket),
        dir: tempfile::tempdir().unwrap(),
        port: prod::free_port(),
        _database: Some(database),
    }
}

/// What the clients were told, to check after the crash.
#[derive(Default)]
struct Ledger {
    /// Blobs acknowledged (201): repository, digest, bytes.
    blobs: Vec<(String, String, Bytes)>,
    /// Blobs pushed without an answer: may be absent, never wrong.
    unanswered: Vec<(String, String, Bytes)>,
    /// Manifests acknowledged: repository, tag, digest.
    manifests: Vec<(String, String, String)>,
    /// Packs acknowledged: id, version, content digest.
    packs: Vec<(String, String, String)>,
    /// Chunked uploads begun, by location: repository, the whole content, the offset
    /// acknowledged, and whether its closing `PUT` was sent (and not answered).
    uploads: BTreeMap<String, (String, Bytes, u64, bool)>,
}

fn content(rng: &mut fastrand::Rng, min: usize, max: usize) -> Bytes {
    let len = rng.usize(min..max);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    Bytes::from(v)
}

/// A body that trickles out in 64 KiB pieces, so a request takes long enough to be
/// cut in the middle.
fn trickle(bytes: Bytes) -> reqwest::Body {
    let pieces: Vec<Bytes> = (0..bytes.len())
        .step_by(64 * 1024)
        .map(|i| bytes.slice(i..(i + 64 * 1024).min(bytes.len())))
        .collect();
    let stream = futures_util::stream::unfold(pieces.into_iter(), |mut it| async move {
        let piece = it.next()?;
        tokio::time::sleep(Duration::from_millis(2)).await;
        Some((Ok::<_, std::io::Error>(piece), it))
    });
    reqwest::Body::wrap_stream(stream)
}

async fn push_blob(
    d: &Deployment,
    http: &reqwest::Client,
    repo: &str,
    bytes: Bytes,
) -> Option<String> {
    let digest = prod::sha256(&bytes);
    let r = http
        .post(d.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
        .header("content-length", bytes.len().to_string())
        .body(trickle(bytes))
        .send()
        .await
        .ok()?;
    (r.status() == 201).then_some(digest)
}

/// One client's work until the server dies under it.
async fn client(d: &Deployment, ledger: Arc<Mutex<Ledger>>, round: u64, worker: u64, seed: u64) {
    let http = reqwest::Client::new();
    let mut rng = fastrand::Rng::with_seed(seed ^ (round << 8) ^ worker);
    let repo = format!("crash/r{worker}");
    for step in 0.. {
        match rng.u8(0..4) {
            0 => {
                let bytes = content(&mut rng, 10_000, 2_000_000);
                let digest = prod::sha256(&bytes);
                match push_blob(d, &http, &repo, bytes.clone()).await {
                    Some(_) => ledger
                        .lock()
                        .unwrap()
                        .blobs
                        .push((repo.clone(), digest, bytes)),
                    None => {
                        ledger
                            .lock()
                            .unwrap()
                            .unanswered
                            .push((repo.clone(), digest, bytes));
                        return;
                    }
                }
            }
            1 => {
                // Chunked: a session, then chunks; it stops where the server dies.
                let bytes = content(&mut rng, 300_000, 3_000_000);
                let Ok(r) = http
                    .post(d.url(&format!("/v2/{repo}/blobs/uploads/")))
                    .send()
                    .await
                else {
                    return;
                };
                if r.status() != 202 {
                    return;
                }
                let location = r.headers()["location"].to_str().unwrap().to_owned();
                ledger
                    .lock()
                    .unwrap()
                    .uploads
                    .insert(location.clone(), (repo.clone(), bytes.clone(), 0, false));
                let mut offset = 0usize;
                while offset < bytes.len() {
                    let end = (offset + 256 * 1024).min(bytes.len());
                    let Ok(r) = http
                        .patch(d.url(&location))
                        .header("content-range", format!("{offset}-{}", end - 1))
                        .body(trickle(bytes.slice(offset..end)))
                        .send()
                        .await
                    else {
                        return;
                    };
                    if r.status() != 202 {
                        return;
                    }
                    offset = end;
                    if let Some(u) = ledger.lock().unwrap().uploads.get_mut(&location) {
                        u.2 = offset as u64;
                    }
                }
                let digest = prod::sha256(&bytes);
                if let Some(u) = ledger.lock().unwrap().uploads.get_mut(&location) {
                    u.3 = true;
                }
                let Ok(r) = http
                    .put(d.url(&format!("{location}?digest={digest}")))
                    .send()
                    .await
                else {
                    return;
                };
                if r.status() == 201 {
                    let mut l = ledger.lock().unwrap();
                    l.uploads.remove(&location);
                    l.blobs.push((repo.clone(), digest, bytes));
                }
            }
            2 => {
                // An image: config, layer, manifest under a tag.
                let config = Bytes::from(format!(r#"{{"round":{round},"step":{step}}}"#));
                let layer = content(&mut rng, 1_000, 500_000);
                let (Some(c), Some(l)) = (
                    push_blob(d, &http, &repo, config.clone()).await,
                    push_blob(d, &http, &repo, layer.clone()).await,
                ) else {
                    return;
                };
                let manifest = serde_json::to_vec(&json!({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": c, "size": config.len()},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                "digest": l, "size": layer.len()}],
                }))
                .unwrap();
                let tag = format!("t{round}-{worker}-{step}");
                let Ok(r) = http
                    .put(d.url(&format!("/v2/{repo}/manifests/{tag}")))
                    .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                    .body(manifest.clone())
                    .send()
                    .await
                else {
                    return;
                };
                if r.status() == 201 {
                    ledger.lock().unwrap().manifests.push((
                        repo.clone(),
                        tag,
                        prod::sha256(&manifest),
                    ));
                }
            }
            _ => {
                // A pack through /packs.
                let id = format!("crash-{worker}");
                let version = format!("{round}.{step}.0");
                let bytes = content(&mut rng, 1_000, 1_500_000);
                let manifest = json!({"packId": id, "version": version, "type": "task",
                                      "name": "crash test"});
                let boundary = "crash-test-boundary";
                let mut form = format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"manifest\"\r\n\
                     Content-Type: application/json\r\n\r\n{manifest}\r\n--{boundary}\r\n\
                     Content-Disposition: form-data; name=\"content\"; filename=\"c\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                )
                .into_bytes();
                form.extend_from_slice(&bytes);
                form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
                let Ok(r) = http
                    .post(d.url("/packs"))
                    .header(
                        "content-type",
                        format!("multipart/form-data; boundary={boundary}"),
                    )
                    .body(trickle(Bytes::from(form)))
                    .send()
                    .await
                else {
                    return;
                };
                if r.status() == 201 {
                    ledger
                        .lock()
                        .unwrap()
                        .packs
                        .push((id, version, prod::sha256(&bytes)));
                }
            }
        }
    }
}

async fn get_json(http: &reqwest::Client, url: String) -> (u16, Value) {
    let r = http.get(&url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn blob_is(
    d: &Deployment,
    http: &reqwest::Client,
    repo: &str,
    digest: &str,
    size: Option<u64>,
) {
    let r = http
        .get(d.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{repo}@{digest} missing");
    let bytes = r.bytes().await.unwrap();
    assert_eq!(prod::sha256(&bytes), digest, "{repo}@{digest}: other bytes");
    if let Some(size) = size {
        assert_eq!(bytes.len() as u64, size, "{repo}@{digest}: size");
    }
}

/// Every invariant, after a restart.
async fn check(d: &Deployment, ledger: &Mutex<Ledger>) {
    let http = reqwest::Client::new();
    // Every tag resolves; every blob of every manifest is whole.
    let (_, catalog) = get_json(&http, d.url("/v2/_catalog")).await;
    let repos: Vec<String> = catalog["repositories"]
        .as_array()
        .map(|a| a.iter().map(|r| r.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    let mut tagged = BTreeMap::new();
    for repo in &repos {
        let (status, tags) = get_json(&http, d.url(&format!("/v2/{repo}/tags/list"))).await;
        assert_eq!(status, 200, "{repo}");
        for tag in tags["tags"].as_array().cloned().unwrap_or_default() {
            let tag = tag.as_str().unwrap().to_owned();
            let r = http
                .get(d.url(&format!("/v2/{repo}/manifests/{tag}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{repo}:{tag}");
            let digest = r.headers()["docker-content-digest"]
                .to_str()
                .unwrap()
                .to_owned();
            let body = r.bytes().await.unwrap();
            assert_eq!(prod::sha256(&body), digest, "{repo}:{tag}");
            let manifest: Value = serde_json::from_slice(&body).unwrap();
            let descriptors = std::iter::once(&manifest["config"])
                .chain(manifest["layers"].as_array().into_iter().flatten());
            for desc in descriptors {
                blob_is(
                    d,
                    &http,
                    repo,
                    desc["digest"].as_str().unwrap(),
                    desc["size"].as_u64(),
                )
                .await;
            }
            tagged.insert((repo.clone(), tag), digest);
        }
    }
    // The packs index agrees with the tags, and every pack's content is whole.
    let (_, list) = get_json(&http, d.url("/packs?limit=1000")).await;
    for pack in list["packs"].as_array().cloned().unwrap_or_default() {
        let id = pack["packId"].as_str().unwrap();
        let (_, versions) = get_json(&http, d.url(&format!("/packs/{id}/versions"))).await;
        for v in versions["versions"].as_array().cloned().unwrap_or_default() {
            let version = v["version"].as_str().unwrap();
            let tag = version.replace('+', "_");
            assert_eq!(
                tagged
                    .get(&(format!("packs/{id}"), tag))
                    .map(String::as_str),
                v["manifestDigest"].as_str(),
                "{id}@{version}: the index and the tag disagree"
            );
            let bytes = http
                .get(d.url(&format!("/packs/{id}/{version}")))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert_eq!(Some(prod::sha256(&bytes).as_str()), v["digest"].as_str());
        }
    }
    let (blobs, unanswered, manifests, packs, uploads) = {
        let l = ledger.lock().unwrap();
        (
            l.blobs.clone(),
            l.unanswered.clone(),
            l.manifests.clone(),
            l.packs.clone(),
            l.uploads.clone(),
        )
    };
    // What was acknowledged is there.
    for (repo, digest, bytes) in &blobs {
        blob_is(d, &http, repo, digest, Some(bytes.len() as u64)).await;
    }
    for (repo, tag, digest) in &manifests {
        assert_eq!(
            tagged.get(&(repo.clone(), tag.clone())),
            Some(digest),
            "{repo}:{tag} was acknowledged"
        );
    }
    for (id, version, digest) in &packs {
        let r = http
            .get(d.url(&format!("/packs/{id}/{version}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{id}@{version} was acknowledged");
        assert_eq!(&prod::sha256(&r.bytes().await.unwrap()), digest);
    }
    // What was not is absent or whole.
    for (repo, digest, _) in &unanswered {
        let r = http
            .head(d.url(&format!("/v2/{repo}/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            blob_is(d, &http, repo, digest, None).await;
        } else {
            assert_eq!(r.status(), 404, "{repo}@{digest}");
        }
    }
    // Interrupted uploads resume from the offset the server reports, and only then
    // is their blob visible.
    for (location, (repo, bytes, acked, finishing)) in &uploads {
        let digest = prod::sha256(bytes);
        let r = http.get(d.url(location)).send().await.unwrap();
        if *finishing && r.status() == 404 {
            // The closing PUT went through before the kill: the blob is whole.
            blob_is(d, &http, repo, &digest, Some(bytes.len() as u64)).await;
            continue;
        }
        assert_eq!(r.status(), 204, "{location}");
        let visible = http
            .head(d.url(&format!("/v2/{repo}/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            visible.status(),
            404,
            "an unfinished upload's blob is invisible"
        );
        let range = r.headers()["range"].to_str().unwrap();
        let offset: u64 = range
            .split_once('-')
            .map(|(_, e)| e.parse::<u64>().unwrap() + 1)
            .unwrap();
        let offset = if range == "0-0" { 0 } else { offset };
        assert!(
            offset >= *acked,
            "{location}: {offset} < acknowledged {acked}"
        );
        let rest = bytes.slice(offset as usize..);
        let mut put = http.put(d.url(&format!("{location}?digest={digest}")));
        if !rest.is_empty() {
            put = put
                .header("content-range", format!("{offset}-{}", bytes.len() - 1))
                .body(rest);
        }
        let id = location.rsplit('/').next().unwrap();
        let data = d.dir.path().join("blobs/uploads").join(id);
        let listing: Vec<(String, u64)> = std::fs::read_dir(&data)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| {
                        (
                            e.file_name().to_string_lossy().into_owned(),
                            e.metadata().unwrap().len(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let r = put.send().await.unwrap();
        assert_eq!(
            r.status(),
            201,
            "{location}: resumed; acked {acked}, server offset {offset}, files before {listing:?}"
        );
        blob_is(d, &http, repo, &digest, Some(bytes.len() as u64)).await;
    }
    ledger.lock().unwrap().uploads.clear();
    ledger.lock().unwrap().unanswered.clear();
}

async fn crash_rounds(d: Deployment) {
    let seed: u64 = std::env::var("PACKS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("crash test seed: {seed} (PACKS_CRASH_SEED replays it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for round in 0..6u64 {
        let mut child = d.start();
        d.wait_ready(&mut child).await;
        let clients: Vec<_> = (0..4)
            .map(|w| client(&d, ledger.clone(), round, w, seed))
            .collect();
        let kill_after = Duration::from_millis(rng.u64(50..1500));
        tokio::select! {
            _ = futures_util::future::join_all(clients) => {},
            () = tokio::time::sleep(kill_after) => {},
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let mut child = d.start();
        d.wait_ready(&mut child).await;
        check(&d, &ledger).await;
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let l = ledger.lock().unwrap();
    eprintln!(
        "{} blobs, {} manifests, {} packs acknowledged across the crashes",
        l.blobs.len(),
        l.manifests.len(),
        l.packs.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_push_keeps_every_invariant_embedded() {
    crash_rounds(embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(packs_test_postgres, packs_test_s3)),
    ignore = "needs PostgreSQL and S3: set PACKS_TEST_POSTGRES_URL and PACKS_TEST_S3_ENDPOINT"
)]
async fn sigkill_mid_push_keeps_every_invariant_production() {
    crash_rounds(production().await).await;
}
