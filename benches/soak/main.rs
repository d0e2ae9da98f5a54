//! soak: a mixed workload from many clients for N minutes against one server or two
//! replicas, verifying every byte it reads, reporting per minute.
//!
//! Run by hand (bounded in time), from the project root:
//!
//! ```sh
//! cargo build --release --bin packs-registry
//! cargo bench --bench soak -- --minutes 10 --clients 32                # embedded
//! PACKS_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//! PACKS_TEST_S3_ENDPOINT=http://127.0.0.1:9000 \
//!   cargo bench --bench soak -- --minutes 10 --clients 32 --replicas 2  # PostgreSQL + S3
//! ```
//!
//! Every client loops over a weighted mix: pushes (blob monolithic or chunked, a
//! config, a manifest under a tag), pulls (manifest by tag, every blob, each checked
//! against its digest), manifest deletes (then a GET that must be 404), `/packs`
//! publishes, searches, version listings and downloads (checked against the content's
//! digest). Requests go round-robin to the replicas. The servers run their garbage
//! collector with a short grace period, so collection races the workload too.
//!
//! Each minute it prints requests, errors, p50/p99 latency, and for every server its
//! RSS and open descriptors; at the end a summary. Any error (a wrong status, a digest
//! mismatch, a transport failure) is printed and makes the exit status 1: the soak
//! passes only with 0 errors. Nothing here asserts on time.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::StreamExt as _;
use sha2::Digest as _;
use tokio::sync::{Mutex, RwLock};

const MIB: usize = 1 << 20;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A mixed workload for N minutes; exit status 1 on any error.
#[derive(Parser, Debug, Clone)]
#[command(name = "soak")]
struct Opts {
    /// How long the workload runs.
    #[arg(long, default_value_t = 5)]
    minutes: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Servers to start: 1 embedded (SQLite + filesystem), or with `--replicas 2` two
    /// replicas on PostgreSQL (`PACKS_TEST_POSTGRES_URL`) + S3 (`PACKS_TEST_S3_ENDPOINT`).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// PostgreSQL + S3 even with one replica.
    #[arg(long)]
    production: bool,
    /// The registry binary.
    #[arg(long, default_value = "target/release/packs-registry")]
    ours: PathBuf,
    /// Largest blob pushed (bytes); most are far smaller.
    #[arg(long, default_value_t = 8 * MIB)]
    max_blob: usize,
    /// `cargo bench` passes this; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

type R<T> = Result<T, String>;

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Server {
    base: String,
    proc: Proc,
}

/// A pushed manifest; pulls hold the read lock, the delete takes the write lock.
struct Pushed {
    repo: String,
    tag: String,
    digest: String,
    blobs: Vec<(String, usize)>,
    deleted: RwLock<bool>,
}

/// A published pack version and its content's digest.
struct Published {
    id: String,
    version: String,
    sha256: String,
}

#[derive(Default)]
struct Minute {
    requests: u64,
    errors: u64,
    latencies_us: Vec<u64>,
    bytes_verified: u64,
}

struct Shared {
    opts: Opts,
    http: reqwest::Client,
    bases: Vec<String>,
    next_base: AtomicUsize,
    start: Instant,
    minutes: Mutex<Vec<Minute>>,
    pushed: Mutex<Vec<Arc<Pushed>>>,
    published: Mutex<Vec<Arc<Published>>>,
    errors: Mutex<Vec<String>>,
    total_errors: AtomicU64,
}

impl Shared {
    fn base(&self) -> &str {
        let i = self.next_base.fetch_add(1, Ordering::Relaxed);
        &self.bases[i % self.bases.len()]
    }

    async fn record(&self, started: Instant, outcome: &R<u64>) {
        let minute = started.duration_since(self.start).as_secs() as usize / 60;
        let mut minutes = self.minutes.lock().await;
        if minutes.len() <= minute {
            minutes.resize_with(minute + 1, Minute::default);
        }
        let m = &mut minutes[minute];
        m.requests += 1;
        m.latencies_us.push(started.elapsed().as_micros() as u64);
        match outcome {
            Ok(bytes) => m.bytes_verified += bytes,
            Err(e) => {
                m.errors += 1;
                drop(minutes);
                self.total_errors.fetch_add(1, Ordering::Relaxed);
                let mut errors = self.errors.lock().await;
                if errors.len() < 50 {
                    eprintln!("error: {e}");
                    errors.push(e.clone());
                }
            }
        }
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fastrand::fill(&mut v);
    v
}

async fn expect(r: reqwest::Response, status: u16, what: &str) -> R<reqwest::Response> {
    if r.status().as_u16() == status {
        Ok(r)
    } else {
        let got = r.status();
        let body = r.text().await.unwrap_or_default();
        Err(format!(
            "{what}: expected {status}, got {got}: {}",
            body.chars().take(300).collect::<String>()
        ))
    }
}

/// A response header's value, when it is text.
fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn send_err(what: &'static str) -> impl Fn(reqwest::Error) -> String {
    move |e| format!("{what}: {e}")
}

/// Streams a body, hashing it; checks the digest and returns the byte count.
async fn verify_stream(r: reqwest::Response, want_hex: &str, what: &str) -> R<u64> {
    let mut hasher = sha2::Sha256::new();
    let mut n = 0u64;
    let mut body = r.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("{what}: body: {e}"))?;
        n += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let got = hex::encode(hasher.finalize());
    if got == want_hex {
        Ok(n)
    } else {
        Err(format!(
            "{what}: digest mismatch: got sha256:{got}, want sha256:{want_hex}"
        ))
    }
}

async fn push_blob(s: &Shared, repo: &str, data: Vec<u8>, chunked: bool) -> R<(String, usize)> {
    let digest = format!("sha256:{}", sha256_hex(&data));
    let len = data.len();
    let base = s.base();
    let r = s
        .http
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .map_err(send_err("start upload"))?;
    let r = expect(r, 202, "start upload").await?;
    let location = header(&r, "location").ok_or("start upload: no Location")?;
    let url = |loc: &str| {
        if loc.starts_with("http") {
            loc.to_owned()
        } else {
            format!("{base}{loc}")
        }
    };
    let sep = |loc: &str| if loc.contains('?') { '&' } else { '?' };
    // Chunked: every byte in PATCHes, then a closing PUT without a body; monolithic:
    // the bytes in the closing PUT.
    let (location, last) = if chunked && len > 0 {
        let mut location = location;
        let chunk = (len / 3).max(1);
        let mut offset = 0;
        while offset < len {
            let end = (offset + chunk).min(len);
            let r = s
                .http
                .patch(url(&location))
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("{}-{}", offset, end - 1))
                .body(data[offset..end].to_vec())
                .send()
                .await
                .map_err(send_err("upload chunk"))?;
            let r = expect(r, 202, "upload chunk").await?;
            location = header(&r, "location").ok_or("upload chunk: no Location")?;
            offset = end;
        }
        (location, Vec::new())
    } else {
        (location, data)
    };
    let r = s
        .http
        .put(format!(
            "{}{}digest={digest}",
            url(&location),
            sep(&location)
        ))
        .header("content-type", "application/octet-stream")
        .body(last)
        .send()
        .await
        .map_err(send_err("close upload"))?;
    expect(r, 201, "close upload").await?;
    Ok((digest, len))
}

async fn op_push(s: &Shared, client: usize, n: u64) -> R<u64> {
    let repo = format!("soak/r{}", client % 8);
    let size = match fastrand::u32(0..100) {
        0..=59 => fastrand::usize(1..64 * 1024),
        60..=94 => fastrand::usize(64 * 1024..MIB),
        _ => fastrand::usize(MIB..=s.opts.max_blob.max(MIB + 1)),
    };
    let layer = push_blob(s, &repo, random_bytes(size), n.is_multiple_of(2)).await?;
    let config = format!(
        r#"{{"soak":{client},"n":{n},"nonce":{}}}"#,
        fastrand::u64(..)
    );
    let config = push_blob(s, &repo, config.into_bytes(), false).await?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.0, "size": config.1},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer.0, "size": layer.1}],
    });
    let body = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
    let digest = format!("sha256:{}", sha256_hex(&body));
    let tag = format!("c{client}-{n}");
    let r = s
        .http
        .put(format!("{}/v2/{repo}/manifests/{tag}", s.base()))
        .header("content-type", OCI_MANIFEST)
        .body(body)
        .send()
        .await
        .map_err(send_err("manifest PUT"))?;
    let r = expect(r, 201, "manifest PUT").await?;
    let got = header(&r, "docker-content-digest").unwrap_or_default();
    if got != digest {
        return Err(format!("manifest PUT: digest {got}, want {digest}"));
    }
    s.pushed.lock().await.push(Arc::new(Pushed {
        repo,
        tag,
        digest,
        blobs: vec![config, layer],
        deleted: RwLock::new(false),
    }));
    Ok(0)
}

async fn pick<T>(list: &Mutex<Vec<Arc<T>>>) -> Option<Arc<T>> {
    let list = list.lock().await;
    if list.is_empty() {
        None
    } else {
        Some(list[fastrand::usize(..list.len())].clone())
    }
}

async fn op_pull(s: &Shared) -> R<u64> {
    let Some(p) = pick(&s.pushed).await else {
        return Ok(0);
    };
    let deleted = p.deleted.read().await;
    if *deleted {
        return Ok(0);
    }
    let r = s
        .http
        .get(format!("{}/v2/{}/manifests/{}", s.base(), p.repo, p.tag))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .map_err(send_err("manifest GET"))?;
    let r = expect(r, 200, "manifest GET").await?;
    let mut n = verify_stream(r, &p.digest["sha256:".len()..], "manifest GET").await?;
    for (digest, size) in &p.blobs {
        let r = s
            .http
            .get(format!("{}/v2/{}/blobs/{digest}", s.base(), p.repo))
            .send()
            .await
            .map_err(send_err("blob GET"))?;
        let r = expect(r, 200, "blob GET").await?;
        let got = verify_stream(r, &digest["sha256:".len()..], "blob GET").await?;
        if got != *size as u64 {
            return Err(format!("blob GET {digest}: {got} bytes, want {size}"));
        }
        n += got;
    }
    Ok(n)
}

async fn op_delete(s: &Shared) -> R<u64> {
    let p = {
        let mut list = s.pushed.lock().await;
        if list.len() < 20 {
            return Ok(0);
        }
        let i = fastrand::usize(..list.len());
        list.swap_remove(i)
    };
    let mut deleted = p.deleted.write().await;
    *deleted = true;
    let r = s
        .http
        .delete(format!("{}/v2/{}/manifests/{}", s.base(), p.repo, p.digest))
        .send()
        .await
        .map_err(send_err("manifest DELETE"))?;
    expect(r, 202, "manifest DELETE").await?;
    let r = s
        .http
        .get(format!("{}/v2/{}/manifests/{}", s.base(), p.repo, p.digest))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .map_err(send_err("GET after DELETE"))?;
    expect(r, 404, "GET after DELETE").await?;
    Ok(0)
}

async fn op_publish(s: &Shared, client: usize, n: u64) -> R<u64> {
    let id = format!("soak-{client}-{}", n % 5);
    let version = format!("1.{}.{}", n / 100, n % 100);
    let content = random_bytes(fastrand::usize(512..256 * 1024));
    let sha = sha256_hex(&content);
    let manifest = serde_json::json!({
        "packId": id, "version": version, "type": "policy",
        "name": format!("Soak pack {client}"),
        "description": format!("soak workload word{:02}", n % 50),
        "author": "soak",
    });
    let boundary = format!("soak{}", fastrand::u64(..));
    let mut body = Vec::with_capacity(content.len() + 1024);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"manifest\"\r\n\
             content-type: application/json\r\n\r\n{manifest}\r\n--{boundary}\r\n\
             content-disposition: form-data; name=\"content\"; filename=\"c.tar.gz\"\r\n\
             content-type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = s
        .http
        .post(format!("{}/packs", s.base()))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .map_err(send_err("POST /packs"))?;
    expect(r, 201, "POST /packs").await?;
    s.published.lock().await.push(Arc::new(Published {
        id,
        version,
        sha256: sha,
    }));
    Ok(0)
}

async fn op_search(s: &Shared, n: u64) -> R<u64> {
    let r = s
        .http
        .get(format!("{}/packs?q=word{:02}&limit=20", s.base(), n % 50))
        .send()
        .await
        .map_err(send_err("GET /packs?q="))?;
    let r = expect(r, 200, "GET /packs?q=").await?;
    let v: serde_json::Value = r.json().await.map_err(send_err("GET /packs?q= body"))?;
    if !v["packs"].is_array() {
        return Err(format!("GET /packs?q=: no packs array: {v}"));
    }
    let Some(p) = pick(&s.published).await else {
        return Ok(0);
    };
    let r = s
        .http
        .get(format!("{}/packs/{}/versions", s.base(), p.id))
        .send()
        .await
        .map_err(send_err("GET versions"))?;
    expect(r, 200, "GET /packs/{id}/versions").await?;
    let r = s
        .http
        .get(format!("{}/packs/{}/{}", s.base(), p.id, p.version))
        .send()
        .await
        .map_err(send_err("pack download"))?;
    let r = expect(r, 200, "pack download").await?;
    verify_stream(r, &p.sha256, "pack download").await
}

async fn client(s: Arc<Shared>, client: usize, deadline: Instant) {
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let started = Instant::now();
        let outcome = match fastrand::u32(0..100) {
            0..=39 => op_pull(&s).await,
            40..=64 => op_push(&s, client, n).await,
            65..=79 => op_search(&s, n).await,
            80..=89 => op_publish(&s, client, n).await,
            _ => op_delete(&s).await,
        };
        s.record(started, &outcome).await;
    }
}

fn rss_and_fds(pid: u32) -> (f64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn free_port() -> R<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}

async fn start(
    opts: &Opts,
    http: &reqwest::Client,
    dir: &std::path::Path,
    env: &[(String, String)],
) -> R<Server> {
    let port = free_port()?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let child = Command::new(&opts.ours)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("PACKS__LOG__LEVEL", "warn")
        // Collection races the workload: a short interval and grace period.
        .env("PACKS__GC__INTERVAL_SECS", "20")
        .env("PACKS__GC__GRACE_SECS", "30")
        .env("AWS_ACCESS_KEY_ID", "soak")
        .env("AWS_SECRET_ACCESS_KEY", "soak")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("start {}: {e}", opts.ours.display()))?;
    let server = Server {
        base: format!("http://127.0.0.1:{port}"),
        proc: Proc(child),
    };
    for _ in 0..200 {
        if let Ok(r) = http.get(format!("{}/readyz", server.base)).send().await
            && r.status().is_success()
        {
            return Ok(server);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{} did not become ready", server.base))
}

#[tokio::main]
async fn main() {
    let opts = Opts::parse();
    match run(opts).await {
        Ok(0) => {}
        Ok(_) => std::process::exit(1),
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(2);
        }
    }
}

async fn run(opts: Opts) -> R<u64> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.clients)
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let production = opts.production || opts.replicas > 1;
    let mut env = Vec::new();
    let mut cleanup = None;
    if production {
        use sqlx::Connection as _;
        let pg = std::env::var("PACKS_TEST_POSTGRES_URL")
            .map_err(|_| "--replicas > 1 needs PACKS_TEST_POSTGRES_URL")?;
        let s3 = std::env::var("PACKS_TEST_S3_ENDPOINT")
            .map_err(|_| "--replicas > 1 needs PACKS_TEST_S3_ENDPOINT")?;
        let name = format!("soak_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&pg)
            .await
            .map_err(|e| format!("PostgreSQL: {e}"))?;
        sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
            .await
            .map_err(|e| format!("create database: {e}"))?;
        let r = http
            .put(format!("{s3}/{name}"))
            .send()
            .await
            .map_err(send_err("create bucket"))?;
        expect(r, 200, "create bucket").await?;
        let db_url = match pg.rfind('/') {
            Some(i) => format!("{}/{name}", &pg[..i]),
            None => return Err("PACKS_TEST_POSTGRES_URL has no database".into()),
        };
        env.extend([
            ("PACKS__METADATA__URL".to_owned(), db_url),
            ("PACKS__STORAGE__BACKEND".to_owned(), "s3".to_owned()),
            ("PACKS__STORAGE__S3__BUCKET".to_owned(), name.clone()),
            ("PACKS__STORAGE__S3__ENDPOINT".to_owned(), s3),
        ]);
        cleanup = Some((conn, name));
    }
    let mut servers = Vec::new();
    for i in 0..opts.replicas.max(1) {
        servers.push(start(&opts, &http, &tmp.path().join(format!("r{i}")), &env).await?);
    }
    let shared = Arc::new(Shared {
        bases: servers.iter().map(|s| s.base.clone()).collect(),
        opts: opts.clone(),
        http,
        next_base: AtomicUsize::new(0),
        start: Instant::now(),
        minutes: Mutex::new(Vec::new()),
        pushed: Mutex::new(Vec::new()),
        published: Mutex::new(Vec::new()),
        errors: Mutex::new(Vec::new()),
        total_errors: AtomicU64::new(0),
    });
    let deadline = shared.start + Duration::from_secs(opts.minutes * 60);
    let pids: Vec<u32> = servers.iter().map(|s| s.proc.0.id()).collect();
    // Memory and descriptors, sampled every 5 s; the per-minute row shows the maximum.
    let samples = Arc::new(Mutex::new(Vec::<Vec<(f64, usize)>>::new()));
    let sampler = {
        let samples = samples.clone();
        let pids = pids.clone();
        let start = shared.start;
        tokio::spawn(async move {
            loop {
                let minute = start.elapsed().as_secs() as usize / 60;
                let now: Vec<_> = pids.iter().map(|&p| rss_and_fds(p)).collect();
                let mut all = samples.lock().await;
                if all.len() <= minute {
                    all.resize(minute + 1, vec![(0.0, 0); pids.len()]);
                }
                for (slot, (rss, fds)) in all[minute].iter_mut().zip(now) {
                    slot.0 = slot.0.max(rss);
                    slot.1 = slot.1.max(fds);
                }
                drop(all);
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        })
    };
    eprintln!(
        "soak: {} client(s) for {} min against {} server(s) ({})",
        opts.clients,
        opts.minutes,
        servers.len(),
        if production {
            "PostgreSQL + S3"
        } else {
            "SQLite + filesystem"
        }
    );
    let tasks: Vec<_> = (0..opts.clients)
        .map(|c| tokio::spawn(client(shared.clone(), c, deadline)))
        .collect();
    for t in tasks {
        if let Err(e) = t.await {
            shared.total_errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("error: a client panicked: {e}");
        }
    }
    // Idle a while (the servers give memory back after 10-20 quiet seconds), then the
    // memory they keep once the work is over.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let idle: Vec<_> = pids.iter().map(|&p| rss_and_fds(p)).collect();
    sampler.abort();

    let minutes = shared.minutes.lock().await;
    let samples = samples.lock().await;
    let names: Vec<String> = (0..pids.len()).map(|i| format!("server {i}")).collect();
    print!("| minute | requests | errors | p50 | p99 | verified |");
    for n in &names {
        print!(" {n} RSS | {n} fds |");
    }
    println!();
    print!("|---:|---:|---:|---:|---:|---:|");
    for _ in &names {
        print!("---:|---:|");
    }
    println!();
    let (mut requests, mut bytes) = (0u64, 0u64);
    for (i, m) in minutes.iter().enumerate() {
        let mut l = m.latencies_us.clone();
        l.sort_unstable();
        requests += m.requests;
        bytes += m.bytes_verified;
        print!(
            "| {} | {} | {} | {:.1} ms | {:.1} ms | {:.0} MiB |",
            i + 1,
            m.requests,
            m.errors,
            percentile(&l, 0.5),
            percentile(&l, 0.99),
            m.bytes_verified as f64 / MIB as f64
        );
        for (rss, fds) in samples.get(i).cloned().unwrap_or_default() {
            print!(" {rss:.1} MiB | {fds} |");
        }
        println!();
    }
    let errors = shared.total_errors.load(Ordering::Relaxed);
    println!();
    println!(
        "{requests} requests, {errors} errors, {:.0} MiB read and verified, {} manifests live, {} pack versions published",
        bytes as f64 / MIB as f64,
        shared.pushed.lock().await.len(),
        shared.published.lock().await.len()
    );
    for (i, (rss, fds)) in idle.iter().enumerate() {
        println!("server {i} after 30 s idle: RSS {rss:.1} MiB, {fds} open descriptors");
    }
    drop(servers);
    if let Some((conn, name)) = cleanup {
        let mut conn = conn;
        let _ = sqlx::Executor::execute(
            &mut conn,
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str(),
        )
        .await;
    }
    Ok(errors)
}
