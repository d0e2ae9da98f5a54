//! regbench: PacksRegistry side by side with CNCF Distribution 2.8 (Debian's
//! `docker-registry`), same workload, same machine, same run, as ratios.
//!
//! Run it with `benches/regbench/run.sh` (installs Distribution if missing, builds our
//! release binary, then `cargo bench --bench regbench -- ARGS`). `--help` lists the
//! options; `--quick` is a short smoke run.
//!
//! The tool starts every server itself, on free loopback ports:
//! - ours, embedded: `packs-registry serve` over SQLite + filesystem in a temp dir;
//! - ours, production: PostgreSQL (a fresh database on the server given by
//!   `--postgres`) + S3 (a bucket on a `moto_server` it starts); skipped with a note
//!   when either is unavailable;
//! - Distribution: `docker-registry serve config.yml`, filesystem storage in a temp
//!   dir, delete enabled (the Debian service is never started).
//!
//! Each workload runs for several rounds, the servers alternating (the order rotates
//! every round), and the table shows the median of the rounds. Server CPU is read
//! from `/proc/<pid>/stat` (utime + stime) and memory from `/proc/<pid>/status`
//! (`VmRSS`, `VmHWM`). All traffic goes to 127.0.0.1; every loop is bounded in count
//! and in time. Nothing here asserts on time: it measures and prints.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use sha2::Digest as _;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Bytes of a generated blob that make it unique (its tail).
const SUFFIX: u64 = 32;

type R<T> = Result<T, String>;

fn err<E: std::fmt::Display>(context: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{context}: {e}")
}

// ---------------------------------------------------------------------------------
// Options

/// PacksRegistry vs CNCF Distribution 2.8: the same workload against each, as ratios.
#[derive(Parser, Debug, Clone)]
#[command(name = "regbench")]
struct Opts {
    /// A short smoke run: 1 round, small blobs, fewer requests, fewer packs.
    #[arg(long)]
    quick: bool,
    /// Rounds per workload (the table shows medians) [default: 5, quick: 1].
    #[arg(long)]
    rounds: Option<usize>,
    /// Blob sizes for the upload and download workloads [default: 1M,64M,1G; quick: 1M,16M].
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<String>>,
    /// Size of the constant-memory case (one upload and one download on fresh
    /// servers, peak RSS read after), e.g. 5G; off unless given.
    #[arg(long)]
    huge: Option<String>,
    /// Largest blob sent to the production configuration (moto keeps objects in
    /// memory and is itself the bottleneck there).
    #[arg(long, default_value = "64M")]
    production_max_blob: String,
    /// Workloads to run (machine, catalog, tags, mput, mget, upload, download, packs,
    /// huge) [default: all but huge, which runs when --huge is given].
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Our release binary.
    #[arg(long, default_value = "target/release/packs-registry")]
    ours: PathBuf,
    /// An earlier build of ours, run beside it on the embedded configuration, so a
    /// change is measured before and after in the same run (the report adds a
    /// before/after table).
    #[arg(long)]
    before: Option<PathBuf>,
    /// Distribution's binary.
    #[arg(long, default_value = "/usr/bin/docker-registry")]
    distribution: PathBuf,
    /// PostgreSQL server for the production configuration (a fresh database is
    /// created on it and dropped after).
    #[arg(
        long,
        env = "PACKS_TEST_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres: String,
    /// The `moto_server` command (S3) for the production configuration.
    #[arg(long, default_value = "moto_server")]
    moto: String,
    /// Skip the production configuration.
    #[arg(long)]
    no_production: bool,
    /// Number of packs seeded for the /packs workloads [default: 100000, quick: 10000].
    #[arg(long)]
    packs: Option<usize>,
    /// Also write the report (markdown) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where servers keep their data [default: a temporary directory].
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Leave the PostgreSQL databases in place (their names are printed), to look at
    /// query plans afterwards.
    #[arg(long)]
    keep_databases: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Opts {
    fn rounds(&self) -> usize {
        self.rounds
            .unwrap_or(if self.quick { 1 } else { 5 })
            .clamp(1, 50)
    }

    fn sizes(&self) -> R<Vec<u64>> {
        match &self.sizes {
            Some(s) => s.iter().map(|s| parse_size(s)).collect(),
            None if self.quick => Ok(vec![MIB, 16 * MIB]),
            None => Ok(vec![MIB, 64 * MIB, GIB]),
        }
    }

    fn runs(&self, workload: &str) -> bool {
        match &self.only {
            Some(list) => list.iter().any(|w| w == workload),
            None => workload != "huge" || self.huge.is_some(),
        }
    }

    /// Request counts scale down in quick mode.
    fn n(&self, full: usize, quick: usize) -> usize {
        if self.quick { quick } else { full }
    }
}

fn parse_size(s: &str) -> R<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], KIB),
        Some((i, 'M' | 'm')) => (&s[..i], MIB),
        Some((i, 'G' | 'g')) => (&s[..i], GIB),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let size = n * mult;
    if size < 4 * KIB {
        return Err(format!("size {s:?} is below 4K"));
    }
    Ok(size)
}

fn human(size: u64) -> String {
    if size >= GIB && size.is_multiple_of(GIB) {
        format!("{} GiB", size / GIB)
    } else if size >= MIB && size.is_multiple_of(MIB) {
        format!("{} MiB", size / MIB)
    } else if size.is_multiple_of(KIB) {
        format!("{} KiB", size / KIB)
    } else {
        format!("{size} B")
    }
}

// ---------------------------------------------------------------------------------
// Processes

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Who {
    /// Ours, embedded configuration (SQLite + filesystem).
    Ours,
    /// The earlier build given with `--before`, embedded configuration.
    Before,
    /// Ours, production configuration (PostgreSQL + S3 on moto).
    Prod,
    /// CNCF Distribution 2.8.
    Dist,
}

impl Who {
    fn label(self) -> &'static str {
        match self {
            Who::Ours => "ours (SQLite+fs)",
            Who::Before => "before (SQLite+fs)",
            Who::Prod => "ours (PostgreSQL+S3)",
            Who::Dist => "Distribution",
        }
    }
}

/// A child process killed when dropped.
struct Proc(Child);

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn exited(&mut self) -> Option<String> {
        match self.0.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where a production server's blobs live.
#[derive(Clone)]
struct S3Place {
    endpoint: String,
    bucket: String,
}

struct Server {
    who: Who,
    base: String,
    proc: Proc,
    /// Data root (ours: `--data-dir`; Distribution: its storage root).
    dir: PathBuf,
    s3: Option<S3Place>,
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(clock_ticks);
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // The command name (field 2) may hold spaces: count fields after its ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
    let stime: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
    (utime + stime) / ticks
}

/// A `/proc/<pid>/status` field in kB, as MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

impl Server {
    fn cpu(&self) -> f64 {
        cpu_seconds(self.proc.pid())
    }
    fn rss(&self) -> f64 {
        status_mib(self.proc.pid(), "VmRSS:")
    }
    fn hwm(&self) -> f64 {
        status_mib(self.proc.pid(), "VmHWM:")
    }
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Removes a blob's bytes behind the server's back (bounds disk and moto memory
    /// over many large uploads; the blob is never read again).
    async fn drop_blob_bytes(&self, http: &reqwest::Client, digest: &str) {
        let hex = digest.trim_start_matches("sha256:");
        match self.who {
            Who::Ours | Who::Before => {
                let _ = std::fs::remove_file(
                    self.dir
                        .join(format!("blobs/blobs/sha256/{}/{hex}", &hex[..2])),
                );
            }
            Who::Dist => {
                let _ = std::fs::remove_dir_all(self.dir.join(format!(
                    "docker/registry/v2/blobs/sha256/{}/{hex}",
                    &hex[..2]
                )));
            }
            Who::Prod => {
                if let Some(s3) = &self.s3 {
                    let _ = http
                        .delete(format!(
                            "{}/{}/blobs/sha256/{}/{hex}",
                            s3.endpoint,
                            s3.bucket,
                            &hex[..2]
                        ))
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await;
                }
            }
        }
    }
}

fn free_port() -> R<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(err("bind a free port"))?;
    Ok(l.local_addr().map_err(err("local addr"))?.port())
}

async fn wait_ready(http: &reqwest::Client, url: &str, proc: &mut Proc, what: &str) -> R<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(url).timeout(Duration::from_secs(2)).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if let Some(status) = proc.exited() {
            return Err(format!("{what} exited during start-up: {status}"));
        }
        if Instant::now() > deadline {
            return Err(format!("{what} did not answer {url} within 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn log_file(dir: &Path, name: &str) -> R<std::fs::File> {
    std::fs::File::create(dir.join(name)).map_err(err("create a log file"))
}

async fn start_ours(
    opts: &Opts,
    http: &reqwest::Client,
    root: &Path,
    name: &str,
    env: &[(String, String)],
    who: Who,
    s3: Option<S3Place>,
) -> R<Server> {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).map_err(err("create data dir"))?;
    let port = free_port()?;
    let mut proc = Proc(
        Command::new(&opts.ours)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(&dir)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("PACKS__LOG__LEVEL", "warn")
            .env("AWS_ACCESS_KEY_ID", "regbench")
            .env("AWS_SECRET_ACCESS_KEY", "regbench")
            .stdout(Stdio::null())
            .stderr(log_file(root, &format!("{name}.log"))?)
            .spawn()
            .map_err(|e| format!("start {}: {e}", opts.ours.display()))?,
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(http, &format!("{base}/v2/"), &mut proc, name).await?;
    Ok(Server {
        who,
        base,
        proc,
        dir,
        s3,
    })
}

async fn start_distribution(
    opts: &Opts,
    http: &reqwest::Client,
    root: &Path,
    name: &str,
) -> R<Server> {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).map_err(err("create storage dir"))?;
    let port = free_port()?;
    let debug_port = free_port()?;
    // Debian's default configuration (inmemory blob descriptor cache, delete enabled),
    // minus auth, on loopback, with a storage root of our own and quiet logs.
    let config = format!(
        "version: 0.1\n\
         log:\n  level: error\n  accesslog:\n    disabled: true\n\
         storage:\n  cache:\n    blobdescriptor: inmemory\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n  debug:\n    addr: 127.0.0.1:{debug_port}\n  headers:\n    X-Content-Type-Options: [nosniff]\n",
        dir.display()
    );
    let config_path = root.join(format!("{name}.yml"));
    std::fs::write(&config_path, config).map_err(err("write Distribution config"))?;
    let mut proc = Proc(
        Command::new(&opts.distribution)
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log_file(root, &format!("{name}.log"))?)
            .spawn()
            .map_err(|e| format!("start {}: {e}", opts.distribution.display()))?,
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(http, &format!("{base}/v2/"), &mut proc, name).await?;
    Ok(Server {
        who: Who::Dist,
        base,
        proc,
        dir,
        s3: None,
    })
}

/// Replaces the database name in a PostgreSQL URL.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

/// The production dependencies: a fresh database and a moto server with a bucket.
struct ProdDeps {
    admin_url: String,
    database: String,
    db_url: String,
    _moto: Proc,
    s3: S3Place,
}

impl ProdDeps {
    async fn start(opts: &Opts, http: &reqwest::Client, root: &Path) -> R<ProdDeps> {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&opts.postgres)
            .await
            .map_err(|e| format!("PostgreSQL at {}: {e}", opts.postgres))?;
        let database = format!("regbench_{}", uuid::Uuid::new_v4().simple());
        sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {database}").as_str())
            .await
            .map_err(err("create the benchmark database"))?;
        let _ = conn.close().await;
        let admin_url = opts.postgres.clone();
        let db_url = with_database(&admin_url, &database);
        let port = free_port()?;
        let moto = Command::new(&opts.moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log_file(root, "moto.log")?)
            .spawn();
        let mut moto = match moto {
            Ok(c) => Proc(c),
            Err(e) => {
                drop_database(&admin_url, &database).await;
                return Err(format!("start {}: {e}", opts.moto));
            }
        };
        let endpoint = format!("http://127.0.0.1:{port}");
        if let Err(e) = wait_ready(http, &format!("{endpoint}/"), &mut moto, "moto_server").await {
            drop_database(&admin_url, &database).await;
            return Err(e);
        }
        let bucket = "regbench".to_owned();
        let r = http
            .put(format!("{endpoint}/{bucket}"))
            .send()
            .await
            .map_err(err("create bucket"))?;
        if !r.status().is_success() {
            drop_database(&admin_url, &database).await;
            return Err(format!("create bucket: {}", r.status()));
        }
        Ok(ProdDeps {
            admin_url,
            database,
            db_url,
            _moto: moto,
            s3: S3Place { endpoint, bucket },
        })
    }

    fn env(&self) -> Vec<(String, String)> {
        [
            ("PACKS__METADATA__URL", self.db_url.as_str()),
            ("PACKS__STORAGE__BACKEND", "s3"),
            ("PACKS__STORAGE__S3__BUCKET", self.s3.bucket.as_str()),
            ("PACKS__STORAGE__S3__ENDPOINT", self.s3.endpoint.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }
}

async fn drop_database(admin_url: &str, database: &str) {
    use sqlx::Connection as _;
    if let Ok(mut conn) = sqlx::PgConnection::connect(admin_url).await {
        let _ = sqlx::Executor::execute(
            &mut conn,
            format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)").as_str(),
        )
        .await;
        let _ = conn.close().await;
    }
}

// ---------------------------------------------------------------------------------
// Content

/// Generates unique blobs cheaply: a random block repeated, then a unique 32-byte
/// tail. The digest of the repeated part is hashed once per size and the hasher
/// cloned for each tail.
struct BlobMaker {
    block: Bytes,
    prefixes: BTreeMap<u64, sha2::Sha256>,
    counter: u64,
}

#[derive(Clone)]
struct Blob {
    block: Bytes,
    len: u64,
    suffix: Bytes,
    digest: String,
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

impl BlobMaker {
    fn new(block_size: usize) -> Self {
        BlobMaker {
            block: Bytes::from(random_bytes(block_size, 0x9e37_79b9_7f4a_7c15)),
            prefixes: BTreeMap::new(),
            counter: 0,
        }
    }

    fn make(&mut self, len: u64) -> Blob {
        assert!(len > SUFFIX);
        self.counter += 1;
        let mut suffix = [0u8; SUFFIX as usize];
        suffix[..8].copy_from_slice(&self.counter.to_le_bytes());
        let nonce = uuid::Uuid::new_v4();
        suffix[8..24].copy_from_slice(nonce.as_bytes());
        let suffix = Bytes::copy_from_slice(&suffix);
        let block = self.block.clone();
        let prefix = self.prefixes.entry(len).or_insert_with(|| {
            let mut h = sha2::Sha256::new();
            let tmp = Blob {
                block: block.clone(),
                len,
                suffix: Bytes::new(),
                digest: String::new(),
            };
            for s in tmp.slices(0..len - SUFFIX) {
                h.update(&s);
            }
            h
        });
        let mut h = prefix.clone();
        h.update(&suffix);
        let digest = format!("sha256:{}", hex::encode(h.finalize()));
        Blob {
            block,
            len,
            suffix,
            digest,
        }
    }
}

impl Blob {
    /// The bytes of `range` as zero-copy slices (at most 1 MiB each).
    fn slices(&self, range: Range<u64>) -> Vec<Bytes> {
        let body = self.len - SUFFIX;
        let blen = self.block.len() as u64;
        let mut out = Vec::new();
        let mut pos = range.start;
        while pos < range.end {
            if pos < body {
                let off = pos % blen;
                let n = (blen - off).min(body - pos).min(range.end - pos).min(MIB);
                out.push(self.block.slice(off as usize..(off + n) as usize));
                pos += n;
            } else {
                let off = pos - body;
                let n = (SUFFIX - off).min(range.end - pos);
                out.push(self.suffix.slice(off as usize..(off + n) as usize));
                pos += n;
            }
        }
        out
    }

    fn body(&self, range: Range<u64>) -> reqwest::Body {
        let mut slices = self.slices(range);
        if slices.len() == 1 {
            return reqwest::Body::from(slices.pop().expect("one slice"));
        }
        reqwest::Body::wrap_stream(futures_util::stream::iter(
            slices.into_iter().map(Ok::<_, std::io::Error>),
        ))
    }
}

/// A config blob, a layer blob, and manifests referencing both.
struct Fixture {
    config: (Bytes, String),
    layer: (Bytes, String),
}

fn sha256_hex(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

impl Fixture {
    fn new() -> Self {
        let config = Bytes::from_static(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        );
        let layer = Bytes::from(random_bytes(2048, 42));
        Fixture {
            config: (config.clone(), sha256_hex(&config)),
            layer: (layer.clone(), sha256_hex(&layer)),
        }
    }

    /// Manifest number `i` (they differ by one annotation).
    fn manifest(&self, i: usize) -> Bytes {
        Bytes::from(
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": self.config.1, "size": self.config.0.len()},
                "layers": [{"mediaType": OCI_LAYER, "digest": self.layer.1, "size": self.layer.0.len()}],
                "annotations": {"org.example.regbench": i.to_string()},
            }))
            .expect("json"),
        )
    }

    async fn push_blobs(&self, http: &reqwest::Client, s: &Server, repo: &str) -> R<()> {
        for (bytes, digest) in [&self.config, &self.layer] {
            push_small(http, s, repo, bytes.clone(), digest).await?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// The /v2 operations, the same requests for every server

fn absolute(s: &Server, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else {
        s.url(location)
    }
}

fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

fn location(s: &Server, r: &reqwest::Response) -> R<String> {
    let loc = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Location header")?;
    Ok(absolute(s, loc))
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

/// Timeout of one request moving `bytes` (generous: the machine is shared).
fn timeout_for(bytes: u64) -> Duration {
    Duration::from_secs(30 + bytes / (10 * MIB))
}

async fn start_upload(http: &reqwest::Client, s: &Server, repo: &str) -> R<String> {
    let r = http
        .post(s.url(&format!("/v2/{repo}/blobs/uploads/")))
        .header("content-length", "0")
        .timeout(timeout_for(0))
        .send()
        .await
        .map_err(err("POST upload"))?;
    let r = expect(r, 202, "POST upload").await?;
    location(s, &r)
}

async fn push_small(
    http: &reqwest::Client,
    s: &Server,
    repo: &str,
    bytes: Bytes,
    digest: &str,
) -> R<()> {
    let loc = start_upload(http, s, repo).await?;
    let r = http
        .put(with_digest(&loc, digest))
        .header("content-type", "application/octet-stream")
        .header("content-length", bytes.len().to_string())
        .body(bytes)
        .timeout(timeout_for(0))
        .send()
        .await
        .map_err(err("PUT blob"))?;
    expect(r, 201, "PUT blob").await.map(drop)
}

/// POST then one PUT with the whole body: what clients call a monolithic upload
/// (Distribution 2.8 does not take the body on the POST).
async fn upload_monolithic(http: &reqwest::Client, s: &Server, repo: &str, blob: &Blob) -> R<()> {
    let loc = start_upload(http, s, repo).await?;
    let r = http
        .put(with_digest(&loc, &blob.digest))
        .header("content-type", "application/octet-stream")
        .header("content-length", blob.len.to_string())
        .body(blob.body(0..blob.len))
        .timeout(timeout_for(blob.len))
        .send()
        .await
        .map_err(err("PUT blob"))?;
    expect(r, 201, "PUT blob").await.map(drop)
}

/// POST, PATCH chunks with `Content-Range`, then PUT without a body.
async fn upload_chunked(
    http: &reqwest::Client,
    s: &Server,
    repo: &str,
    blob: &Blob,
    chunk: u64,
) -> R<()> {
    let mut loc = start_upload(http, s, repo).await?;
    let mut off = 0;
    while off < blob.len {
        let end = (off + chunk).min(blob.len);
        let r = http
            .patch(&loc)
            .header("content-type", "application/octet-stream")
            .header("content-length", (end - off).to_string())
            .header("content-range", format!("{off}-{}", end - 1))
            .body(blob.body(off..end))
            .timeout(timeout_for(end - off))
            .send()
            .await
            .map_err(err("PATCH chunk"))?;
        let r = expect(r, 202, "PATCH chunk").await?;
        loc = location(s, &r)?;
        off = end;
    }
    let r = http
        .put(with_digest(&loc, &blob.digest))
        .header("content-length", "0")
        .timeout(timeout_for(blob.len))
        .send()
        .await
        .map_err(err("PUT close"))?;
    expect(r, 201, "PUT close").await.map(drop)
}

/// GETs a blob (whole, or `range`), counting the bytes received.
async fn download(
    http: &reqwest::Client,
    s: &Server,
    repo: &str,
    digest: &str,
    range: Option<Range<u64>>,
    size: u64,
) -> R<u64> {
    let mut req = http
        .get(s.url(&format!("/v2/{repo}/blobs/{digest}")))
        .timeout(timeout_for(size));
    let want = match &range {
        Some(r) => {
            req = req.header("range", format!("bytes={}-{}", r.start, r.end - 1));
            r.end - r.start
        }
        None => size,
    };
    let r = req.send().await.map_err(err("GET blob"))?;
    let mut r = expect(r, if range.is_some() { 206 } else { 200 }, "GET blob").await?;
    let mut got = 0u64;
    while let Some(chunk) = r.chunk().await.map_err(err("GET blob body"))? {
        got += chunk.len() as u64;
    }
    if got != want {
        return Err(format!("GET blob: {got} bytes of {want}"));
    }
    Ok(got)
}

async fn put_manifest(
    http: &reqwest::Client,
    s: &Server,
    repo: &str,
    reference: &str,
    body: Bytes,
) -> R<()> {
    let r = http
        .put(s.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("content-type", OCI_MANIFEST)
        .body(body)
        .timeout(timeout_for(0))
        .send()
        .await
        .map_err(err("PUT manifest"))?;
    expect(r, 201, "PUT manifest").await.map(drop)
}

async fn get_ok(http: &reqwest::Client, url: &str) -> R<reqwest::Response> {
    let r = http
        .get(url)
        .header("accept", OCI_MANIFEST)
        .timeout(timeout_for(0))
        .send()
        .await
        .map_err(err("GET"))?;
    expect(r, 200, "GET").await
}

// ---------------------------------------------------------------------------------
// Measurement

/// Closed-loop load: `concurrency` workers issue requests until `total` are done or
/// `limit` has passed.
struct Load {
    done: usize,
    errors: usize,
    first_error: Option<String>,
    wall: Duration,
    latencies: Vec<Duration>,
}

impl Load {
    fn rps(&self) -> f64 {
        self.done as f64 / self.wall.as_secs_f64()
    }
    fn pct_ms(&self, q: f64) -> f64 {
        percentile(&self.latencies, q).as_secs_f64() * 1e3
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn load<F, Fut>(total: usize, concurrency: usize, limit: Duration, f: F) -> Load
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R<()>> + Send + 'static,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + limit;
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let f = f.clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || Instant::now() > deadline {
                    break;
                }
                let t0 = Instant::now();
                let r = f(i).await;
                lat.push(t0.elapsed());
                if let Err(e) = r {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
            (lat, errors, first_error)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for w in workers {
        if let Ok((lat, e, fe)) = w.await {
            latencies.extend(lat);
            errors += e;
            if first_error.is_none() {
                first_error = fe;
            }
        }
    }
    let wall = start.elapsed();
    latencies.sort();
    Load {
        done: latencies.len(),
        errors,
        first_error,
        wall,
        latencies,
    }
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[derive(Default)]
struct Results {
    samples: BTreeMap<(String, Who), Vec<f64>>,
    errors: BTreeMap<(String, Who), String>,
    /// Server CPU seconds per (workload, server), summed over rounds and set-up.
    cpu: BTreeMap<(String, Who), f64>,
    notes: Vec<String>,
}

impl Results {
    fn add(&mut self, key: &str, who: Who, v: f64) {
        self.samples
            .entry((key.to_owned(), who))
            .or_default()
            .push(v);
    }
    fn fail(&mut self, key: &str, who: Who, e: String) {
        eprintln!("  ! {key} on {}: {e}", who.label());
        self.errors.entry((key.to_owned(), who)).or_insert(e);
    }
    fn med(&self, key: &str, who: Who) -> Option<f64> {
        self.samples
            .get(&(key.to_owned(), who))
            .and_then(|v| median(v))
    }
    fn note(&mut self, s: impl Into<String>) {
        let s = s.into();
        eprintln!("  note: {s}");
        self.notes.push(s);
    }
    fn record_load(&mut self, key: &str, who: Who, l: &Load) {
        // Failed requests make no sample: their latencies are not the workload's.
        if l.errors > 0 {
            self.fail(
                key,
                who,
                format!(
                    "{} of {} requests failed, first: {}",
                    l.errors,
                    l.done,
                    l.first_error.clone().unwrap_or_default()
                ),
            );
            return;
        }
        self.add(&format!("{key}.rps"), who, l.rps());
        self.add(&format!("{key}.p50"), who, l.pct_ms(0.50));
        self.add(&format!("{key}.p99"), who, l.pct_ms(0.99));
    }
}

/// Awaits `fut`, charging the CPU time server `s` spent meanwhile to `workload`.
async fn charged<T>(
    cpu: &mut BTreeMap<(String, Who), f64>,
    s: &Server,
    workload: &str,
    fut: impl Future<Output = T>,
) -> T {
    let before = s.cpu();
    let out = fut.await;
    *cpu.entry((workload.to_owned(), s.who)).or_default() += s.cpu() - before;
    out
}

/// The servers in the order of round `r` (rotating, so nobody always goes first).
fn order(n: usize, r: usize) -> Vec<usize> {
    (0..n).map(|i| (i + r) % n).collect()
}

/// `openssl speed -evp sha256` on 1 MiB blocks, in MB/s.
fn openssl_sha256() -> Option<f64> {
    let out = Command::new("openssl")
        .args([
            "speed", "-seconds", "2", "-bytes", "1048576", "-evp", "sha256",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("sha256"))?;
    let kb: f64 = line
        .split_whitespace()
        .last()?
        .trim_end_matches('k')
        .parse()
        .ok()?;
    Some(kb * 1000.0 / 1e6)
}

fn sync_disks() {
    let _ = Command::new("sync").status();
}

struct Bench {
    opts: Opts,
    http: reqwest::Client,
    servers: Vec<Arc<Server>>,
    res: Results,
    fixture: Fixture,
    maker: BlobMaker,
    workdir: PathBuf,
    /// PostgreSQL admin URL and the S3 bucket, when the production configuration runs.
    prod: Option<(String, S3Place)>,
}

impl Bench {
    // ----- machine limits ---------------------------------------------------------

    async fn machine(&mut self) {
        eprintln!("== machine limits");
        let block = self.maker.block.clone();
        let sha_total: u64 = if self.opts.quick { 256 * MIB } else { GIB };
        // Best of three passes: the machine is shared, the best pass is its limit.
        let sha = tokio::task::spawn_blocking(move || {
            let mut best = 0f64;
            for _ in 0..3 {
                let t0 = Instant::now();
                let mut h = sha2::Sha256::new();
                let mut done = 0u64;
                while done < sha_total {
                    h.update(&block);
                    done += block.len() as u64;
                }
                let _ = h.finalize();
                best = best.max(done as f64 / t0.elapsed().as_secs_f64() / 1e6);
            }
            best
        })
        .await
        .unwrap_or(f64::NAN);
        self.res.add("machine.sha256", Who::Ours, sha);
        eprintln!("  SHA-256 single stream (sha2 crate): {sha:.0} MB/s");
        // For context: OpenSSL's assembly, when the `openssl` tool is there.
        if let Some(v) = openssl_sha256() {
            self.res.add("machine.sha256.openssl", Who::Ours, v);
            eprintln!("  SHA-256 single stream (openssl speed): {v:.0} MB/s");
        }

        // Sequential write of 8 MiB blocks then one fsync, two ways: plain (dirty pages
        // pile up until the fsync), and starting writeback after every block
        // (sync_file_range, what the registry's filesystem backend does).
        let disk_total: u64 = if self.opts.quick { 256 * MIB } else { GIB };
        for (key, early) in [("machine.disk", false), ("machine.disk.early", true)] {
            let path = self.workdir.join("disk-probe");
            let block = self.maker.block.clone();
            let disk = tokio::task::spawn_blocking(move || -> std::io::Result<f64> {
                let t0 = Instant::now();
                let mut f = std::fs::File::create(&path)?;
                let mut done = 0u64;
                while done < disk_total {
                    let n = (8 * MIB).min(block.len() as u64) as usize;
                    f.write_all(&block[..n])?;
                    if early {
                        use std::os::fd::AsRawFd;
                        // SAFETY: a plain syscall on a descriptor `f` keeps open.
                        unsafe {
                            libc::sync_file_range(
                                f.as_raw_fd(),
                                done as i64,
                                n as i64,
                                libc::SYNC_FILE_RANGE_WRITE,
                            );
                        }
                    }
                    done += n as u64;
                }
                f.sync_all()?;
                let rate = done as f64 / t0.elapsed().as_secs_f64() / 1e6;
                drop(f);
                std::fs::remove_file(&path)?;
                Ok(rate)
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
            match disk {
                Ok(d) => {
                    self.res.add(key, Who::Ours, d);
                    eprintln!(
                        "  sequential write + fsync{}: {d:.0} MB/s",
                        if early { " (early writeback)" } else { "" }
                    );
                }
                Err(e) => self.res.note(format!("disk probe failed: {e}")),
            }
            sync_disks();
        }

        let tcp_total: u64 = if self.opts.quick { GIB } else { 4 * GIB };
        match loopback(tcp_total).await {
            Ok(t) => {
                self.res.add("machine.loopback", Who::Ours, t);
                eprintln!("  loopback TCP single stream: {t:.0} MB/s");
            }
            Err(e) => self.res.note(format!("loopback probe failed: {e}")),
        }
    }

    // ----- catalog ----------------------------------------------------------------

    async fn catalog(&mut self) {
        let repos = self.opts.n(1000, 200);
        eprintln!("== catalog over {repos} repositories");
        for s in self.servers.clone() {
            let t0 = Instant::now();
            let seeded = charged(
                &mut self.res.cpu,
                &s,
                "catalog",
                seed_catalog(&s, &self.http, &self.fixture, repos),
            )
            .await;
            match seeded {
                Ok(()) => eprintln!(
                    "  seeded {} in {:.1} s",
                    s.who.label(),
                    t0.elapsed().as_secs_f64()
                ),
                Err(e) => self.res.fail("catalog", s.who, format!("seeding: {e}")),
            }
        }
        let whole_n = self.opts.n(30, 5);
        for round in 0..self.opts.rounds() {
            for i in order(self.servers.len(), round) {
                let s = self.servers[i].clone();
                if self.res.errors.contains_key(&("catalog".to_owned(), s.who)) {
                    continue;
                }
                let http = self.http.clone();
                // One request for everything: n = the number of repositories (exactly
                // what was seeded; Distribution refuses n above 1000, its maximum).
                let url = s.url(&format!("/v2/_catalog?n={repos}"));
                let whole = charged(
                    &mut self.res.cpu,
                    &s,
                    "catalog",
                    load(whole_n, 1, Duration::from_secs(120), move |k| {
                        let http = http.clone();
                        let url = url.clone();
                        async move {
                            let r = get_ok(&http, &url).await?;
                            let body = r.bytes().await.map_err(err("catalog body"))?;
                            // Checked once, after the fact: parsing is the client's time.
                            if k > 0 {
                                return Ok(());
                            }
                            let v: serde_json::Value =
                                serde_json::from_slice(&body).map_err(err("catalog json"))?;
                            let n = v["repositories"].as_array().map(Vec::len).unwrap_or(0);
                            if n < repos {
                                return Err(format!("catalog returned {n} repositories"));
                            }
                            Ok(())
                        }
                    }),
                )
                .await;
                self.res.record_load("catalog.whole", s.who, &whole);
                let pages = charged(
                    &mut self.res.cpu,
                    &s,
                    "catalog",
                    walk_pages(&self.http, &s.base, "/v2/_catalog", 100, repos + 10),
                )
                .await;
                match pages {
                    Ok(p) => {
                        self.res.add("catalog.page.p50", s.who, p.pct_ms(0.5));
                        self.res.add("catalog.page.p99", s.who, p.pct_ms(0.99));
                    }
                    Err(e) => self.res.fail("catalog.page", s.who, e),
                }
            }
        }
    }

    // ----- tags -------------------------------------------------------------------

    async fn tags(&mut self) {
        let tags = self.opts.n(10_000, 1_000);
        eprintln!("== tags/list over {tags} tags");
        for s in self.servers.clone() {
            let t0 = Instant::now();
            let seeded = charged(
                &mut self.res.cpu,
                &s,
                "tags",
                seed_tags(&s, &self.http, &self.fixture, tags),
            )
            .await;
            match seeded {
                Ok(()) => eprintln!(
                    "  seeded {} in {:.1} s",
                    s.who.label(),
                    t0.elapsed().as_secs_f64()
                ),
                Err(e) => self.res.fail("tags", s.who, format!("seeding: {e}")),
            }
        }
        let whole_n = self.opts.n(50, 5);
        for round in 0..self.opts.rounds() {
            for i in order(self.servers.len(), round) {
                let s = self.servers[i].clone();
                if self.res.errors.contains_key(&("tags".to_owned(), s.who)) {
                    continue;
                }
                let http = self.http.clone();
                let url = s.url("/v2/bench/tags/tags/list");
                let whole = charged(
                    &mut self.res.cpu,
                    &s,
                    "tags",
                    load(whole_n, 1, Duration::from_secs(120), move |k| {
                        let http = http.clone();
                        let url = url.clone();
                        async move {
                            let r = get_ok(&http, &url).await?;
                            let body = r.bytes().await.map_err(err("tags body"))?;
                            // Checked once, after the fact: parsing is the client's time.
                            if k > 0 {
                                return Ok(());
                            }
                            let v: serde_json::Value =
                                serde_json::from_slice(&body).map_err(err("tags json"))?;
                            let n = v["tags"].as_array().map(Vec::len).unwrap_or(0);
                            if n != tags {
                                return Err(format!("tags/list returned {n} tags"));
                            }
                            Ok(())
                        }
                    }),
                )
                .await;
                self.res.record_load("tags.whole", s.who, &whole);
                let pages = charged(
                    &mut self.res.cpu,
                    &s,
                    "tags",
                    walk_pages(
                        &self.http,
                        &s.base,
                        "/v2/bench/tags/tags/list",
                        100,
                        tags + 10,
                    ),
                )
                .await;
                match pages {
                    Ok(p) if p.paginated => {
                        self.res.add("tags.page.p50", s.who, p.pct_ms(0.5));
                        self.res.add("tags.page.p99", s.who, p.pct_ms(0.99));
                    }
                    // Distribution 2.8 ignores n on tags/list: one page holds everything.
                    Ok(p) => self.res.add("tags.page.unpaginated", s.who, p.pct_ms(0.5)),
                    Err(e) => self.res.fail("tags.page", s.who, e),
                }
            }
        }
    }

    // ----- manifest PUT -----------------------------------------------------------

    async fn mput(&mut self) {
        let count = self.opts.n(1000, 200);
        eprintln!("== manifest PUT x {count}");
        let bodies: Arc<Vec<Bytes>> =
            Arc::new((0..count).map(|k| self.fixture.manifest(k)).collect());
        for round in 0..self.opts.rounds() {
            for i in order(self.servers.len(), round) {
                let s = self.servers[i].clone();
                for conc in [1usize, 16] {
                    let repo = format!("bench/mput-r{round}-c{conc}");
                    let key = format!("mput.c{conc}");
                    if let Err(e) = self.fixture.push_blobs(&self.http, &s, &repo).await {
                        self.res.fail(&key, s.who, format!("set-up: {e}"));
                        continue;
                    }
                    let http = self.http.clone();
                    let base = s.base.clone();
                    let bodies = bodies.clone();
                    let l = charged(
                        &mut self.res.cpu,
                        &s,
                        "mput",
                        load(count, conc, Duration::from_secs(300), move |k| {
                            let http = http.clone();
                            let url = format!("{base}/v2/{repo}/manifests/t{k}");
                            let body = bodies[k].clone();
                            async move {
                                let r = http
                                    .put(url)
                                    .header("content-type", OCI_MANIFEST)
                                    .body(body)
                                    .timeout(timeout_for(0))
                                    .send()
                                    .await
                                    .map_err(err("PUT manifest"))?;
                                expect(r, 201, "PUT manifest").await.map(drop)
                            }
                        }),
                    )
                    .await;
                    self.res.record_load(&key, s.who, &l);
                }
            }
        }
    }

    // ----- manifest GET and blob HEAD ---------------------------------------------

    async fn mget(&mut self) {
        eprintln!("== manifest GET by tag and blob HEAD");
        for s in self.servers.clone() {
            let set_up = async {
                self.fixture.push_blobs(&self.http, &s, "bench/get").await?;
                put_manifest(
                    &self.http,
                    &s,
                    "bench/get",
                    "latest",
                    self.fixture.manifest(0),
                )
                .await
            }
            .await;
            if let Err(e) = set_up {
                self.res.fail("mget", s.who, format!("set-up: {e}"));
            }
        }
        let layer = self.fixture.layer.1.clone();
        for round in 0..self.opts.rounds() {
            for i in order(self.servers.len(), round) {
                let s = self.servers[i].clone();
                if self.res.errors.contains_key(&("mget".to_owned(), s.who)) {
                    continue;
                }
                for conc in [1usize, 64] {
                    let total = if conc == 1 {
                        self.opts.n(2_000, 300)
                    } else {
                        self.opts.n(20_000, 3_000)
                    };
                    for (kind, url) in [
                        ("mget", s.url("/v2/bench/get/manifests/latest")),
                        ("bhead", s.url(&format!("/v2/bench/get/blobs/{layer}"))),
                    ] {
                        let head = kind == "bhead";
                        let make = |http: reqwest::Client, url: String| {
                            move |_k: usize| {
                                let http = http.clone();
                                let url = url.clone();
                                async move {
                                    let req = if head {
                                        http.head(&url)
                                    } else {
                                        http.get(&url).header("accept", OCI_MANIFEST)
                                    };
                                    let r = req
                                        .timeout(timeout_for(0))
                                        .send()
                                        .await
                                        .map_err(err("request"))?;
                                    let r = expect(r, 200, "GET/HEAD").await?;
                                    let _ = r.bytes().await.map_err(err("body"))?;
                                    Ok(())
                                }
                            }
                        };
                        // Warm-up: open the connections, fill caches.
                        let _ = charged(
                            &mut self.res.cpu,
                            &s,
                            "mget",
                            load(
                                (total / 10).max(conc * 4),
                                conc,
                                Duration::from_secs(30),
                                make(self.http.clone(), url.clone()),
                            ),
                        )
                        .await;
                        let l = charged(
                            &mut self.res.cpu,
                            &s,
                            "mget",
                            load(
                                total,
                                conc,
                                Duration::from_secs(60),
                                make(self.http.clone(), url),
                            ),
                        )
                        .await;
                        self.res.record_load(&format!("{kind}.c{conc}"), s.who, &l);
                    }
                }
            }
        }
    }

    // ----- uploads ----------------------------------------------------------------

    async fn upload(&mut self) {
        let sizes = match self.opts.sizes() {
            Ok(s) => s,
            Err(e) => return self.res.note(e),
        };
        let prod_max = parse_size(&self.opts.production_max_blob).unwrap_or(64 * MIB);
        for size in sizes {
            eprintln!("== upload {}", human(size));
            // Enough repetitions to move at least 256 MiB per round (at most 16).
            let reps = (256 * MIB / size).clamp(1, 16) as usize;
            for round in 0..self.opts.rounds() {
                for i in order(self.servers.len(), round) {
                    let s = self.servers[i].clone();
                    if s.who == Who::Prod && size > prod_max {
                        continue;
                    }
                    for chunked in [false, true] {
                        let key = format!("up.{}.{size}", if chunked { "chunked" } else { "mono" });
                        let blobs: Vec<Blob> = (0..reps).map(|_| self.maker.make(size)).collect();
                        let http = &self.http;
                        let t = charged(&mut self.res.cpu, &s, "upload", async {
                            let t0 = Instant::now();
                            for b in &blobs {
                                if chunked {
                                    upload_chunked(http, &s, "bench/up", b, 8 * MIB).await?;
                                } else {
                                    upload_monolithic(http, &s, "bench/up", b).await?;
                                }
                            }
                            Ok::<_, String>(t0.elapsed())
                        })
                        .await;
                        match t {
                            Ok(t) => self.res.add(
                                &key,
                                s.who,
                                (reps as u64 * size) as f64 / t.as_secs_f64() / 1e6,
                            ),
                            Err(e) => self.res.fail(&key, s.who, e),
                        }
                        for b in &blobs {
                            s.drop_blob_bytes(&self.http, &b.digest).await;
                        }
                        // Write back what the kernel still holds dirty (Distribution
                        // does not fsync) before the next server's turn.
                        sync_disks();
                    }
                }
            }
        }
    }

    // ----- downloads --------------------------------------------------------------

    async fn download(&mut self) {
        let sizes = match self.opts.sizes() {
            Ok(s) => s,
            Err(e) => return self.res.note(e),
        };
        let prod_max = parse_size(&self.opts.production_max_blob).unwrap_or(64 * MIB);
        for size in sizes {
            eprintln!("== download {}", human(size));
            let blob = self.maker.make(size);
            let whole_key = format!("down.whole.{size}");
            let range_key = format!("down.range.{size}");
            for s in self.servers.clone() {
                if s.who == Who::Prod && size > prod_max {
                    continue;
                }
                if let Err(e) = upload_monolithic(&self.http, &s, "bench/down", &blob).await {
                    self.res.fail(&whole_key, s.who, format!("set-up: {e}"));
                }
            }
            sync_disks();
            let reps = (512 * MIB / size).clamp(1, 32);
            let range_len = (8 * MIB).min(size / 4);
            for round in 0..self.opts.rounds() {
                for i in order(self.servers.len(), round) {
                    let s = self.servers[i].clone();
                    if (s.who == Who::Prod && size > prod_max)
                        || self.res.errors.contains_key(&(whole_key.clone(), s.who))
                    {
                        continue;
                    }
                    let http = &self.http;
                    let digest = &blob.digest;
                    let whole = charged(&mut self.res.cpu, &s, "download", async {
                        let t0 = Instant::now();
                        let mut bytes = 0;
                        for _ in 0..reps {
                            bytes += download(http, &s, "bench/down", digest, None, size).await?;
                        }
                        Ok::<_, String>(bytes as f64 / t0.elapsed().as_secs_f64() / 1e6)
                    })
                    .await;
                    match whole {
                        Ok(v) => self.res.add(&whole_key, s.who, v),
                        Err(e) => self.res.fail(&whole_key, s.who, e),
                    }
                    let ranged = charged(&mut self.res.cpu, &s, "download", async {
                        let t0 = Instant::now();
                        let mut bytes = 0;
                        for _ in 0..reps.min(8) {
                            let mut off = 0;
                            while off < size {
                                let end = (off + range_len).min(size);
                                bytes +=
                                    download(http, &s, "bench/down", digest, Some(off..end), size)
                                        .await?;
                                off = end;
                            }
                        }
                        Ok::<_, String>(bytes as f64 / t0.elapsed().as_secs_f64() / 1e6)
                    })
                    .await;
                    match ranged {
                        Ok(v) => self.res.add(&range_key, s.who, v),
                        Err(e) => self.res.fail(&range_key, s.who, e),
                    }
                }
            }
            self.download_cold(size, prod_max).await;
        }
    }

    /// The first pull right after a push (what every publish-then-fan-out does):
    /// each round pushes a fresh blob to each server and times one whole download
    /// of it at once, before anything else touches it. Whatever the upload left in
    /// the page cache (Distribution writes through it; our `O_DIRECT` writes do not)
    /// is what the download finds.
    async fn download_cold(&mut self, size: u64, prod_max: u64) {
        let key = format!("down.cold.{size}");
        for round in 0..self.opts.rounds() {
            for i in order(self.servers.len(), round) {
                let s = self.servers[i].clone();
                if s.who == Who::Prod && size > prod_max {
                    continue;
                }
                let blob = self.maker.make(size);
                if let Err(e) = upload_monolithic(&self.http, &s, "bench/cold", &blob).await {
                    self.res.fail(&key, s.who, format!("set-up: {e}"));
                    continue;
                }
                let http = &self.http;
                let digest = &blob.digest;
                let first = charged(&mut self.res.cpu, &s, "download", async {
                    let t0 = Instant::now();
                    let bytes = download(http, &s, "bench/cold", digest, None, size).await?;
                    Ok::<_, String>(bytes as f64 / t0.elapsed().as_secs_f64() / 1e6)
                })
                .await;
                match first {
                    Ok(v) => self.res.add(&key, s.who, v),
                    Err(e) => self.res.fail(&key, s.who, e),
                }
                s.drop_blob_bytes(&self.http, &blob.digest).await;
                sync_disks();
            }
        }
    }

    // ----- /packs -----------------------------------------------------------------

    /// `/packs` list, search and versions over `--packs` packs, ours only, on both
    /// metadata backends. Each backend gets a server of its own, started over a
    /// database seeded beforehand through the library's metadata layer.
    async fn packs(&mut self) {
        let n = self
            .opts
            .packs
            .unwrap_or(self.opts.n(100_000, 10_000))
            .max(100);
        eprintln!("== /packs over {n} packs");
        let mut targets: Vec<PacksTarget> = vec![];
        let dir = self.workdir.join("packs-ours");
        if let Err(e) = std::fs::create_dir_all(&dir) {
            return self.res.note(format!("/packs: {e}"));
        }
        targets.push((
            Who::Ours,
            format!("sqlite://{}/metadata.db", dir.display()),
            vec![],
            None,
        ));
        let mut database = None;
        if let Some((admin, s3)) = self.prod.clone() {
            use sqlx::Connection as _;
            let name = format!("regbench_packs_{}", uuid::Uuid::new_v4().simple());
            let created = async {
                let mut conn = sqlx::PgConnection::connect(&admin).await?;
                sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
                    .await?;
                conn.close().await
            }
            .await;
            match created {
                Ok(()) => {
                    let url = with_database(&admin, &name);
                    let env = vec![
                        ("PACKS__METADATA__URL".to_owned(), url.clone()),
                        ("PACKS__STORAGE__BACKEND".to_owned(), "s3".to_owned()),
                        ("PACKS__STORAGE__S3__BUCKET".to_owned(), s3.bucket.clone()),
                        (
                            "PACKS__STORAGE__S3__ENDPOINT".to_owned(),
                            s3.endpoint.clone(),
                        ),
                        (
                            "PACKS__STORAGE__S3__PREFIX".to_owned(),
                            "packs-bench".to_owned(),
                        ),
                    ];
                    targets.push((Who::Prod, url, env, Some(s3)));
                    database = Some((admin, name));
                }
                Err(e) => self.res.note(format!("/packs on PostgreSQL skipped: {e}")),
            }
        }
        let mut servers = vec![];
        for (who, url, env, s3) in targets {
            let t0 = Instant::now();
            if let Err(e) = seed_packs(&url, n).await {
                self.res.fail("packs", who, format!("seeding: {e}"));
                continue;
            }
            eprintln!(
                "  seeded {n} packs for {} in {:.0} s",
                who.label(),
                t0.elapsed().as_secs_f64()
            );
            let name = if who == Who::Ours {
                "packs-ours"
            } else {
                "packs-prod"
            };
            match start_ours(&self.opts, &self.http, &self.workdir, name, &env, who, s3).await {
                Ok(s) => servers.push(s),
                Err(e) => self.res.fail("packs", who, e),
            }
        }
        let requests = self.opts.n(400, 60);
        let queries: [(&str, PacksQuery); 7] = [
            // A page of 100 from a random place (keyset cursor).
            ("packs.list", |r, n| {
                format!("/packs?cursor={}", pack_id((r % n as u64) as usize))
            }),
            ("packs.type", |r, n| {
                format!(
                    "/packs?type={}&cursor={}",
                    PACK_TYPES[(r % 4) as usize],
                    pack_id(((r >> 8) % n as u64) as usize)
                )
            }),
            // A word in ~12 % of packs (the id and name of 1/16, the description of 1/16).
            ("packs.search.word", |r, _| {
                format!("/packs?q={}", PACK_TOPICS[(r % 16) as usize])
            }),
            // Six digits of one pack's id: a handful of matches.
            ("packs.search.rare", |r, n| {
                format!("/packs?q={:06}", r % n as u64)
            }),
            // Three characters found in every pack's name (the shortest q accepted).
            ("packs.search.all", |r, _| {
                format!("/packs?q={}", ["pac", "ack"][(r % 2) as usize])
            }),
            // No match at all.
            ("packs.search.none", |r, _| {
                format!("/packs?q=zq{}xj", r % 1000)
            }),
            // Every 1000th pack has 20 versions, the others one.
            ("packs.versions", |r, n| {
                let i = if r % 10 == 0 {
                    ((r / 10) % (n as u64 / 1000).max(1)) * 1000
                } else {
                    r % n as u64
                };
                format!("/packs/{}/versions", pack_id(i as usize))
            }),
        ];
        for round in 0..self.opts.rounds() {
            for i in order(servers.len(), round) {
                let s = &servers[i];
                for (key, make) in queries {
                    let http = self.http.clone();
                    let base = s.base.clone();
                    let seed = (round as u64 + 1) * 0x9e37_79b9;
                    let l = charged(
                        &mut self.res.cpu,
                        s,
                        "packs",
                        load(requests, 1, Duration::from_secs(120), move |k| {
                            let http = http.clone();
                            let url = format!("{base}{}", make(mix(seed + k as u64), n));
                            async move {
                                let r = http
                                    .get(&url)
                                    .timeout(timeout_for(0))
                                    .send()
                                    .await
                                    .map_err(err("GET /packs"))?;
                                let r = expect(r, 200, "GET /packs").await?;
                                let _ = r.bytes().await.map_err(err("body"))?;
                                Ok(())
                            }
                        }),
                    )
                    .await;
                    self.res.record_load(key, s.who, &l);
                }
                // Mixed, at concurrency 16.
                let http = self.http.clone();
                let base = s.base.clone();
                let l = charged(
                    &mut self.res.cpu,
                    s,
                    "packs",
                    load(requests * 4, 16, Duration::from_secs(120), move |k| {
                        let http = http.clone();
                        let r = mix(k as u64 + 7);
                        let url = format!("{base}{}", (queries[(r % 7) as usize].1)(r >> 3, n));
                        async move {
                            let r = http
                                .get(&url)
                                .timeout(timeout_for(0))
                                .send()
                                .await
                                .map_err(err("GET /packs"))?;
                            let r = expect(r, 200, "GET /packs").await?;
                            let _ = r.bytes().await.map_err(err("body"))?;
                            Ok(())
                        }
                    }),
                )
                .await;
                self.res.record_load("packs.mixed16", s.who, &l);
            }
        }
        drop(servers);
        if let Some((admin, name)) = database {
            if self.opts.keep_databases {
                self.res.note(format!("kept the /packs database {name}"));
            } else {
                drop_database(&admin, &name).await;
            }
        }
    }

    // ----- the constant-memory case -----------------------------------------------

    async fn huge(&mut self) {
        let Some(size) = self.opts.huge.as_deref().map(parse_size) else {
            return;
        };
        let size = match size {
            Ok(s) => s,
            Err(e) => return self.res.note(e),
        };
        eprintln!(
            "== constant memory: {} upload and download on fresh servers",
            human(size)
        );
        let blob = self.maker.make(size);
        for who in [Who::Ours, Who::Dist] {
            let name = format!("huge-{}", if who == Who::Ours { "ours" } else { "dist" });
            let server = if who == Who::Ours {
                start_ours(
                    &self.opts,
                    &self.http,
                    &self.workdir,
                    &name,
                    &[],
                    Who::Ours,
                    None,
                )
                .await
            } else {
                start_distribution(&self.opts, &self.http, &self.workdir, &name).await
            };
            let s = match server {
                Ok(s) => s,
                Err(e) => {
                    self.res.fail("huge", who, e);
                    continue;
                }
            };
            let idle = s.rss();
            let cpu0 = s.cpu();
            let t0 = Instant::now();
            let up = upload_monolithic(&self.http, &s, "bench/huge", &blob).await;
            let up_t = t0.elapsed();
            let up_hwm = s.hwm();
            if let Err(e) = up {
                self.res.fail("huge", who, e);
                continue;
            }
            sync_disks();
            let t1 = Instant::now();
            let down = download(&self.http, &s, "bench/huge", &blob.digest, None, size).await;
            let down_t = t1.elapsed();
            if let Err(e) = down {
                self.res.fail("huge", who, e);
                continue;
            }
            self.res.add("huge.idle", who, idle);
            self.res.add("huge.hwm.up", who, up_hwm);
            self.res.add("huge.hwm", who, s.hwm());
            self.res
                .add("huge.up", who, size as f64 / up_t.as_secs_f64() / 1e6);
            self.res
                .add("huge.down", who, size as f64 / down_t.as_secs_f64() / 1e6);
            self.res.add("huge.cpu", who, s.cpu() - cpu0);
            eprintln!(
                "  {}: peak RSS {:.1} MiB, upload {:.0} MB/s, download {:.0} MB/s",
                who.label(),
                s.hwm(),
                size as f64 / up_t.as_secs_f64() / 1e6,
                size as f64 / down_t.as_secs_f64() / 1e6
            );
            drop(s);
            let _ = std::fs::remove_dir_all(self.workdir.join(&name));
        }
    }
}

async fn loopback(total: u64) -> R<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(err("bind"))?;
    let addr = listener.local_addr().map_err(err("addr"))?;
    let sender = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await?;
        let buf = vec![7u8; MIB as usize];
        let mut sent = 0;
        while sent < total {
            let n = (total - sent).min(MIB) as usize;
            sock.write_all(&buf[..n]).await?;
            sent += n as u64;
        }
        sock.shutdown().await
    });
    let mut sock = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(err("connect"))?;
    let mut buf = vec![0u8; MIB as usize];
    let t0 = Instant::now();
    let mut got = 0u64;
    while got < total {
        let n = tokio::time::timeout(Duration::from_secs(30), sock.read(&mut buf))
            .await
            .map_err(err("loopback read timed out"))?
            .map_err(err("read"))?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let rate = got as f64 / t0.elapsed().as_secs_f64() / 1e6;
    let _ = sender.await;
    Ok(rate)
}

async fn seed_catalog(
    s: &Arc<Server>,
    http: &reqwest::Client,
    fx: &Fixture,
    repos: usize,
) -> R<()> {
    let body = fx.manifest(0);
    let http = http.clone();
    let cfg = fx.config.clone();
    let layer = fx.layer.clone();
    let s = s.clone();
    let l = load(repos, 32, Duration::from_secs(600), move |i| {
        let http = http.clone();
        let body = body.clone();
        let cfg = cfg.clone();
        let layer = layer.clone();
        let s = s.clone();
        async move {
            let repo = format!("bench/cat/r{i:05}");
            push_small(&http, &s, &repo, cfg.0, &cfg.1).await?;
            push_small(&http, &s, &repo, layer.0, &layer.1).await?;
            put_manifest(&http, &s, &repo, "v1", body).await
        }
    })
    .await;
    check_seed(l, repos)
}

async fn seed_tags(s: &Arc<Server>, http: &reqwest::Client, fx: &Fixture, tags: usize) -> R<()> {
    fx.push_blobs(http, s, "bench/tags").await?;
    let body = fx.manifest(0);
    let http = http.clone();
    let s = s.clone();
    let l = load(tags, 32, Duration::from_secs(900), move |i| {
        let http = http.clone();
        let body = body.clone();
        let s = s.clone();
        async move { put_manifest(&http, &s, "bench/tags", &format!("t{i:05}"), body).await }
    })
    .await;
    check_seed(l, tags)
}

fn check_seed(l: Load, want: usize) -> R<()> {
    if l.errors > 0 || l.done < want {
        return Err(format!(
            "{} of {want} done, {} failed; first error: {}",
            l.done,
            l.errors,
            l.first_error.unwrap_or_default()
        ));
    }
    Ok(())
}

/// Walks a paginated listing with `?n=page`, following `Link` headers, at most
/// `max_pages` requests. Latencies are per page.
struct Pages {
    latencies: Vec<Duration>,
    /// Whether the server honoured `n` (Distribution 2.8 does not on tags/list).
    paginated: bool,
}

impl Pages {
    fn pct_ms(&self, q: f64) -> f64 {
        percentile(&self.latencies, q).as_secs_f64() * 1e3
    }
}

async fn walk_pages(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    page: usize,
    max_pages: usize,
) -> R<Pages> {
    let mut url = format!("{base}{path}?n={page}");
    let mut latencies = Vec::new();
    let mut paginated = true;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(120);
    for _ in 0..max_pages {
        let t0 = Instant::now();
        let r = get_ok(http, &url).await?;
        let link = r
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = r.bytes().await.map_err(err("page body"))?;
        latencies.push(t0.elapsed());
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(err("page json"))?;
        let items = v["tags"]
            .as_array()
            .or_else(|| v["repositories"].as_array())
            .map(Vec::len)
            .unwrap_or(0);
        if items > page {
            paginated = false;
        }
        let Some(next) = link.and_then(|l| {
            let start = l.find('<')? + 1;
            let end = l.find('>')?;
            Some(l[start..end].to_owned())
        }) else {
            break;
        };
        url = if next.starts_with("http") {
            next
        } else {
            format!("{base}{next}")
        };
        if Instant::now() > deadline {
            return Err("pagination walk exceeded 120 s".into());
        }
    }
    latencies.sort();
    Ok(Pages {
        latencies,
        paginated,
    })
}

// ---------------------------------------------------------------------------------
// /packs seeding

/// A /packs server to seed and start: who, metadata URL, environment, bucket.
type PacksTarget = (Who, String, Vec<(String, String)>, Option<S3Place>);

/// A /packs query: from a random number and the number of packs, a path.
type PacksQuery = fn(u64, usize) -> String;

const PACK_TYPES: [&str; 4] = ["policy", "analyzer", "task", "bundle"];
const PACK_TOPICS: [&str; 16] = [
    "baseline",
    "scanner",
    "secrets",
    "license",
    "kubernetes",
    "terraform",
    "docker",
    "python",
    "golang",
    "rustsec",
    "sbom",
    "vuln",
    "compliance",
    "network",
    "runtime",
    "supply",
];

fn pack_id(i: usize) -> String {
    format!("{}-{i:06}", PACK_TOPICS[i % 16])
}

/// A cheap, well-mixed function of `x` (splitmix64).
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Writes `n` packs (every 1000th with 20 versions, the others one) through the
/// library's metadata layer, the way a publish indexes them.
async fn seed_packs(url: &str, n: usize) -> R<()> {
    use packs_registry::digest::{Algorithm, Digest};
    use packs_registry::metadata::{
        self, ManifestRecord, PackVersionRecord, PoolOptions, ReferenceKind,
    };
    use packs_registry::names::{RepoName, Tag};
    use packs_registry::registry::packs as domain;

    /// The seeded blobs' bytes, which the seed never stores: as far as linking them
    /// asks, present.
    struct Seeded;

    #[async_trait::async_trait]
    impl metadata::BlobBytes for Seeded {
        async fn present(&self, _: &Digest) -> Result<bool, metadata::BoxError> {
            Ok(true)
        }

        async fn delete(&self, _: &Digest) -> Result<(), metadata::BoxError> {
            Ok(())
        }
    }

    let meta = metadata::connect(
        url,
        &PoolOptions {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(60),
        },
    )
    .await
    .map_err(err("open the metadata store"))?;
    meta.migrate().await.map_err(err("migrate"))?;
    let l = load(n, 8, Duration::from_secs(3600), move |i| {
        let meta = meta.clone();
        async move {
            let id = pack_id(i);
            let t = PACK_TYPES[i % 4];
            let topic = PACK_TOPICS[i % 16];
            let other = PACK_TOPICS[(i / 16) % 16];
            let name = format!("{} {topic} pack {i}", t.to_uppercase());
            let description = format!(
                "Rules and checks for {topic} projects, with {other} support; revision {}.",
                i % 97
            );
            let author = format!("team-{:03}", i % 200);
            let repo = RepoName::parse(&format!("packs/{id}")).map_err(err("repo"))?;
            let versions = if i % 1000 == 0 { 20 } else { 1 };
            for v in 0..versions {
                let version = format!("1.{v}.0");
                let parsed = domain::parse_version(&version).ok_or("version")?;
                let body = Bytes::from(format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/vnd.stellaops.pack.{t}.v1","config":{{"mediaType":"application/vnd.stellaops.pack.config.v1+json","digest":"{cfg}","size":64}},"layers":[{{"mediaType":"application/vnd.stellaops.pack.content.v1.tar+gzip","digest":"{content}","size":4096}}],"annotations":{{"org.opencontainers.image.version":"{version}"}}}}"#,
                    cfg = Digest::of(Algorithm::Sha256, format!("cfg {id} {version}").as_bytes()),
                    content =
                        Digest::of(Algorithm::Sha256, format!("content {id} {version}").as_bytes()),
                ));
                let digest = Digest::of(Algorithm::Sha256, &body);
                let content = Digest::of(Algorithm::Sha256, format!("content {id} {version}").as_bytes());
                let cfg = Digest::of(Algorithm::Sha256, format!("cfg {id} {version}").as_bytes());
                let tag = Tag::parse(&version).map_err(err("tag"))?;
                let manifest = ManifestRecord {
                    digest: digest.clone(),
                    media_type: OCI_MANIFEST.to_owned(),
                    artifact_type: Some(format!("application/vnd.stellaops.pack.{t}.v1")),
                    subject: None,
                    annotations: None,
                    body,
                    created_at: metadata::now_millis(),
                };
                let pack = PackVersionRecord {
                    pack_id: id.clone(),
                    version: version.clone(),
                    sort_key: domain::sort_key(&parsed),
                    prerelease: false,
                    pack_type: t.to_owned(),
                    name: name.clone(),
                    description: description.clone(),
                    author: author.clone(),
                    search_text: domain::search_text(&id, &name, &description),
                    repository: repo.clone(),
                    tag: tag.clone(),
                    manifest_digest: digest,
                    content_digest: content.clone(),
                    content_media_type: "application/vnd.stellaops.pack.content.v1.tar+gzip"
                        .to_owned(),
                    size: 4096,
                    published_at: metadata::now_millis(),
                    dependencies: "[]".to_owned(),
                    members: "[]".to_owned(),
                    metadata: "{}".to_owned(),
                };
                // The blobs are recorded (their bytes are never read here): the
                // references of a manifest must be linked.
                meta.put_pack_manifest(
                    &repo,
                    &manifest,
                    &[
                        (cfg.clone(), ReferenceKind::Config),
                        (content.clone(), ReferenceKind::Layer),
                    ],
                    &[tag],
                    &pack,
                    false,
                    &[(cfg, 64), (content, 4096)],
                    &Seeded,
                    &[],
                )
                .await
                .map_err(err("put_pack_manifest"))?;
            }
            Ok(())
        }
    })
    .await;
    check_seed(l, n)?;
    // What autovacuum does after a bulk change in a default installation (it is off on
    // some test machines, this one included): without statistics the planner takes
    // `LIKE '%word%'` for a rare match and sorts thousands of trigram hits.
    if url.starts_with("postgres") {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .map_err(err("connect for ANALYZE"))?;
        sqlx::Executor::execute(&mut conn, "ANALYZE")
            .await
            .map_err(err("ANALYZE"))?;
        let _ = conn.close().await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Report

struct Table {
    rows: Vec<[String; 8]>,
    /// Before/after rows (`--before`): metric, before, ours, ours/before.
    before_after: Vec<[String; 4]>,
    with_before: bool,
}

fn fmt(v: Option<f64>, unit: &str) -> String {
    match v {
        None => "—".into(),
        Some(v) if unit == "ms" => {
            if v < 1.0 {
                format!("{v:.3} ms")
            } else if v < 100.0 {
                format!("{v:.2} ms")
            } else {
                format!("{v:.0} ms")
            }
        }
        Some(v) if unit == "MiB" => format!("{v:.1} MiB"),
        Some(v) if unit == "s" => format!("{v:.1} s"),
        Some(v) if unit == "×" => format!("{v:.2}×"),
        Some(v) if unit == "%" => format!("{:.0} %", v * 100.0),
        Some(v) => format!("{v:.0} {unit}"),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// What a row is judged against.
#[derive(Clone, Copy)]
enum Goal {
    /// Informational.
    None,
    /// ours/Distribution at least this.
    RatioMin(f64),
    /// ours' value at most this (in the row's unit).
    Max(f64),
}

fn verdict(pass: Option<bool>) -> String {
    match pass {
        Some(true) => "pass".into(),
        Some(false) => "**miss**".into(),
        None => "—".into(),
    }
}

impl Table {
    fn cell(res: &Results, key: &str, who: Who, unit: &str, servers: &[Who]) -> String {
        let base = key.split('.').take(2).collect::<Vec<_>>().join(".");
        if !servers.contains(&who) {
            return "—".into();
        }
        match res.med(key, who) {
            Some(v) => fmt(Some(v), unit),
            None => {
                if res.errors.contains_key(&(key.to_owned(), who))
                    || res.errors.contains_key(&(base, who))
                {
                    "error".into()
                } else {
                    "—".into()
                }
            }
        }
    }

    /// A row comparing the servers on `key`.
    fn row(
        &mut self,
        res: &Results,
        servers: &[Who],
        label: &str,
        key: &str,
        unit: &str,
        goal: Goal,
    ) {
        let ours = res.med(key, Who::Ours);
        let prod = res.med(key, Who::Prod);
        let dist = res.med(key, Who::Dist);
        self.before_after(label, res.med(key, Who::Before), ours, unit);
        let base = key.split('.').take(2).collect::<Vec<_>>().join(".");
        let failed = res.errors.keys().any(|(k, _)| *k == key || *k == base);
        if ours.is_none() && prod.is_none() && dist.is_none() && !failed {
            return; // not measured in this run
        }
        let r = ratio(ours, dist);
        let rp = ratio(prod, dist);
        let (target, pass) = match goal {
            Goal::None => ("—".to_owned(), None),
            Goal::RatioMin(x) => (format!("≥ {x}× Distribution"), r.map(|r| r >= x)),
            Goal::Max(x) => (format!("< {} {unit}", trim(x)), ours.map(|v| v < x)),
        };
        let mut v = verdict(pass);
        if let (Goal::Max(x), Some(p)) = (goal, prod) {
            v = format!("{v} (prod: {})", verdict(Some(p < x)).trim_matches('*'));
        }
        self.rows.push([
            label.to_owned(),
            Self::cell(res, key, Who::Ours, unit, servers),
            Self::cell(res, key, Who::Prod, unit, servers),
            Self::cell(res, key, Who::Dist, unit, servers),
            fmt(r, "×"),
            fmt(rp, "×"),
            target,
            v,
        ]);
    }

    /// A before/after row, when `--before` ran an earlier build.
    fn before_after(&mut self, label: &str, before: Option<f64>, ours: Option<f64>, unit: &str) {
        if self.with_before && (before.is_some() || ours.is_some()) {
            self.before_after.push([
                label.to_owned(),
                fmt(before, unit),
                fmt(ours, unit),
                fmt(ratio(ours, before), "×"),
            ]);
        }
    }

    /// A row of a value derived by the caller.
    #[allow(clippy::too_many_arguments)]
    fn derived(
        &mut self,
        label: &str,
        ours: Option<f64>,
        prod: Option<f64>,
        dist: Option<f64>,
        unit: &str,
        target: &str,
        pass: Option<bool>,
    ) {
        if ours.is_none() && prod.is_none() && dist.is_none() {
            return; // not measured in this run
        }
        self.rows.push([
            label.to_owned(),
            fmt(ours, unit),
            fmt(prod, unit),
            fmt(dist, unit),
            fmt(ratio(ours, dist), "×"),
            fmt(ratio(prod, dist), "×"),
            target.to_owned(),
            verdict(pass),
        ]);
    }

    fn render(&self) -> String {
        let mut s = String::from(
            "| metric | ours (SQLite+fs) | ours (PostgreSQL+S3) | Distribution 2.8 | ours/Dist | prod/Dist | target | verdict |\n\
             |---|---:|---:|---:|---:|---:|---|---|\n",
        );
        for r in &self.rows {
            s.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        s
    }
}

fn trim(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

fn report(
    opts: &Opts,
    res: &Results,
    servers: &[Who],
    totals: &BTreeMap<Who, (f64, f64, f64, f64)>,
) -> String {
    let mut t = Table {
        rows: vec![],
        before_after: vec![],
        with_before: servers.contains(&Who::Before),
    };
    let sha = res.med("machine.sha256", Who::Ours);
    let disk = res.med("machine.disk", Who::Ours);
    let lo = res.med("machine.loopback", Who::Ours);
    let sizes = opts.sizes().unwrap_or_default();
    for &size in &sizes {
        let h = human(size);
        let big = size >= 64 * MIB;
        let mono = format!("up.mono.{size}");
        let chunked = format!("up.chunked.{size}");
        t.row(
            res,
            servers,
            &format!("upload {h}, monolithic (MB/s)"),
            &mono,
            "MB/s",
            if big { Goal::RatioMin(5.0) } else { Goal::None },
        );
        t.row(
            res,
            servers,
            &format!("upload {h}, chunked 8 MiB (MB/s)"),
            &chunked,
            "MB/s",
            if big { Goal::RatioMin(5.0) } else { Goal::None },
        );
        if big {
            let m = res.med(&mono, Who::Ours);
            t.derived(
                &format!("upload {h} monolithic / SHA-256 speed"),
                ratio(m, sha),
                ratio(res.med(&mono, Who::Prod), sha),
                ratio(res.med(&mono, Who::Dist), sha),
                "%",
                "≥ 70 %",
                ratio(m, sha).map(|r| r >= 0.7),
            );
        }
        let c = ratio(res.med(&chunked, Who::Ours), res.med(&mono, Who::Ours));
        t.derived(
            &format!("upload {h}: chunked / monolithic"),
            c,
            ratio(res.med(&chunked, Who::Prod), res.med(&mono, Who::Prod)),
            ratio(res.med(&chunked, Who::Dist), res.med(&mono, Who::Dist)),
            "%",
            "≥ 80 %",
            c.map(|c| c >= 0.8),
        );
    }
    for &size in &sizes {
        let h = human(size);
        for (kind, what) in [
            ("whole", "whole"),
            ("range", "8 MiB ranges"),
            ("cold", "first pull after push"),
        ] {
            let key = format!("down.{kind}.{size}");
            let what = if kind == "range" && size < 32 * MIB {
                format!("{} ranges", human(size / 4))
            } else {
                what.to_owned()
            };
            t.row(
                res,
                servers,
                &format!("download {h}, {what} (MB/s)"),
                &key,
                "MB/s",
                Goal::RatioMin(1.0),
            );
            if size >= 64 * MIB {
                let v = res.med(&key, Who::Ours);
                t.derived(
                    &format!("download {h} {kind} / loopback TCP"),
                    ratio(v, lo),
                    ratio(res.med(&key, Who::Prod), lo),
                    ratio(res.med(&key, Who::Dist), lo),
                    "%",
                    "≥ 70 %",
                    ratio(v, lo).map(|r| r >= 0.7),
                );
            }
        }
    }
    for (kind, what) in [("mget", "manifest GET by tag"), ("bhead", "blob HEAD")] {
        for conc in [1, 64] {
            let k = format!("{kind}.c{conc}");
            let hi = conc == 64;
            t.row(
                res,
                servers,
                &format!("{what}, c={conc} (req/s)"),
                &format!("{k}.rps"),
                "req/s",
                if hi { Goal::RatioMin(10.0) } else { Goal::None },
            );
            t.row(
                res,
                servers,
                &format!("{what}, c={conc}, p50"),
                &format!("{k}.p50"),
                "ms",
                Goal::None,
            );
            t.row(
                res,
                servers,
                &format!("{what}, c={conc}, p99"),
                &format!("{k}.p99"),
                "ms",
                if hi { Goal::Max(10.0) } else { Goal::None },
            );
        }
    }
    let count = opts.n(1000, 200);
    t.row(
        res,
        servers,
        &format!("manifest PUT x {count}, c=1 (req/s)"),
        "mput.c1.rps",
        "req/s",
        Goal::RatioMin(5.0),
    );
    t.row(
        res,
        servers,
        &format!("manifest PUT x {count}, c=16 (req/s)"),
        "mput.c16.rps",
        "req/s",
        Goal::RatioMin(5.0),
    );
    let tags = opts.n(10_000, 1_000);
    t.row(
        res,
        servers,
        &format!("tags/list, {tags} tags whole, p50"),
        "tags.whole.p50",
        "ms",
        Goal::Max(5.0),
    );
    t.row(
        res,
        servers,
        &format!("tags/list, {tags} tags whole, p99"),
        "tags.whole.p99",
        "ms",
        Goal::None,
    );
    t.row(
        res,
        servers,
        "tags/list, 100-tag page, p50",
        "tags.page.p50",
        "ms",
        Goal::Max(1.0),
    );
    t.row(
        res,
        servers,
        "tags/list, 100-tag page, p99",
        "tags.page.p99",
        "ms",
        Goal::None,
    );
    if let Some(v) = res.med("tags.page.unpaginated", Who::Dist) {
        t.derived(
            "tags/list ?n=100 (Distribution ignores n: whole list)",
            None,
            None,
            Some(v),
            "ms",
            "—",
            None,
        );
    }
    let repos = opts.n(1000, 200);
    t.row(
        res,
        servers,
        &format!("_catalog, {repos} repositories whole, p50"),
        "catalog.whole.p50",
        "ms",
        Goal::None,
    );
    t.row(
        res,
        servers,
        &format!("_catalog, {repos} repositories whole, p99"),
        "catalog.whole.p99",
        "ms",
        Goal::None,
    );
    t.row(
        res,
        servers,
        "_catalog, 100-repository page, p50",
        "catalog.page.p50",
        "ms",
        Goal::None,
    );
    t.row(
        res,
        servers,
        "_catalog, 100-repository page, p99",
        "catalog.page.p99",
        "ms",
        Goal::None,
    );
    let packs_n = opts.packs.unwrap_or(opts.n(100_000, 10_000));
    for (key, label) in [
        ("packs.list", "GET /packs?cursor=<random> (page of 100)"),
        ("packs.type", "GET /packs?type=&cursor=<random>"),
        ("packs.search.word", "GET /packs?q=<word in ~12 % of packs>"),
        ("packs.search.rare", "GET /packs?q=<6 digits: a few packs>"),
        ("packs.search.all", "GET /packs?q=<3 chars in every pack>"),
        ("packs.search.none", "GET /packs?q=<no match>"),
        ("packs.versions", "GET /packs/{id}/versions"),
    ] {
        if res.samples.keys().any(|(k, _)| k.starts_with(key)) {
            let label = format!("{label}, {packs_n} packs, c=1");
            t.row(
                res,
                servers,
                &format!("{label}, p50"),
                &format!("{key}.p50"),
                "ms",
                Goal::None,
            );
            t.row(
                res,
                servers,
                &format!("{label}, p99"),
                &format!("{key}.p99"),
                "ms",
                Goal::Max(20.0),
            );
        }
    }
    if res
        .samples
        .keys()
        .any(|(k, _)| k.starts_with("packs.mixed16"))
    {
        t.row(
            res,
            servers,
            "/packs queries mixed, c=16 (req/s)",
            "packs.mixed16.rps",
            "req/s",
            Goal::None,
        );
        t.row(
            res,
            servers,
            "/packs queries mixed, c=16, p99",
            "packs.mixed16.p99",
            "ms",
            Goal::None,
        );
    }
    let tot = |w: Who, f: fn(&(f64, f64, f64, f64)) -> f64| totals.get(&w).map(f);
    t.before_after(
        "idle RSS after start",
        tot(Who::Before, |t| t.0),
        tot(Who::Ours, |t| t.0),
        "MiB",
    );
    t.derived(
        "idle RSS after start",
        tot(Who::Ours, |t| t.0),
        tot(Who::Prod, |t| t.0),
        tot(Who::Dist, |t| t.0),
        "MiB",
        "< 15 MiB",
        tot(Who::Ours, |t| t.0).map(|v| v < 15.0),
    );
    t.before_after(
        "idle RSS after the workload",
        tot(Who::Before, |t| t.1),
        tot(Who::Ours, |t| t.1),
        "MiB",
    );
    t.derived(
        "idle RSS after the workload",
        tot(Who::Ours, |t| t.1),
        tot(Who::Prod, |t| t.1),
        tot(Who::Dist, |t| t.1),
        "MiB",
        "< 32 MiB",
        tot(Who::Ours, |t| t.1).map(|v| v < 32.0),
    );
    t.before_after(
        "peak RSS over the workload (VmHWM)",
        tot(Who::Before, |t| t.2),
        tot(Who::Ours, |t| t.2),
        "MiB",
    );
    t.derived(
        "peak RSS over the workload (VmHWM)",
        tot(Who::Ours, |t| t.2),
        tot(Who::Prod, |t| t.2),
        tot(Who::Dist, |t| t.2),
        "MiB",
        "—",
        None,
    );
    if res.samples.keys().any(|(k, _)| k.starts_with("huge")) {
        let h = opts.huge.clone().unwrap_or_default();
        let hw = res.med("huge.hwm", Who::Ours);
        t.derived(
            &format!("{h} upload + download: peak RSS"),
            hw,
            None,
            res.med("huge.hwm", Who::Dist),
            "MiB",
            "< 64 MiB",
            hw.map(|v| v < 64.0),
        );
        t.row(
            res,
            servers,
            &format!("{h} upload, monolithic (MB/s)"),
            "huge.up",
            "MB/s",
            Goal::None,
        );
        t.row(
            res,
            servers,
            &format!("{h} download (MB/s)"),
            "huge.down",
            "MB/s",
            Goal::None,
        );
    }
    let cpu_o = tot(Who::Ours, |t| t.3);
    let cpu_d = tot(Who::Dist, |t| t.3);
    t.before_after(
        "server CPU seconds, whole workload",
        tot(Who::Before, |t| t.3),
        cpu_o,
        "s",
    );
    t.derived(
        "server CPU seconds, whole workload",
        cpu_o,
        tot(Who::Prod, |t| t.3),
        cpu_d,
        "s",
        "≤ 0.25× Distribution",
        ratio(cpu_o, cpu_d).map(|r| r <= 0.25),
    );

    let mut out = String::new();
    out.push_str(&t.render());
    if t.with_before {
        out.push_str(&format!(
            "\nBefore ({}) and after (ours), same run, embedded configuration:\n\n| metric | before | ours | ours/before |\n|---|---:|---:|---:|\n",
            opts.before.as_deref().unwrap_or(Path::new("?")).display()
        ));
        for r in &t.before_after {
            out.push_str(&format!("| {} |\n", r.join(" | ")));
        }
    }
    out.push_str("\nMachine limits (same run): ");
    out.push_str(&format!(
        "single-stream SHA-256 {} (sha2 crate, what the registry hashes with; OpenSSL's assembly: {}), sequential write + fsync {} (starting writeback every 8 MiB: {}), loopback TCP single stream {}.\n",
        fmt(sha, "MB/s"),
        fmt(res.med("machine.sha256.openssl", Who::Ours), "MB/s"),
        fmt(disk, "MB/s"),
        fmt(res.med("machine.disk.early", Who::Ours), "MB/s"),
        fmt(lo, "MB/s")
    ));
    if !res.cpu.is_empty() {
        out.push_str("\nServer CPU seconds by workload (set-up included, all rounds):\n\n| workload | ours (SQLite+fs) | ours (PostgreSQL+S3) | Distribution 2.8 | ours/Dist |\n|---|---:|---:|---:|---:|\n");
        let workloads: std::collections::BTreeSet<&String> =
            res.cpu.keys().map(|(w, _)| w).collect();
        for w in workloads {
            let g = |who| res.cpu.get(&(w.clone(), who)).copied();
            out.push_str(&format!(
                "| {w} | {} | {} | {} | {} |\n",
                fmt(g(Who::Ours), "s"),
                fmt(g(Who::Prod), "s"),
                fmt(g(Who::Dist), "s"),
                fmt(ratio(g(Who::Ours), g(Who::Dist)), "×")
            ));
        }
    }
    if !res.errors.is_empty() || !res.notes.is_empty() {
        out.push_str("\nNotes:\n\n");
        for n in &res.notes {
            out.push_str(&format!("- {n}\n"));
        }
        for ((k, who), e) in &res.errors {
            out.push_str(&format!("- error in {k} on {}: {e}\n", who.label()));
        }
    }
    out
}

// ---------------------------------------------------------------------------------

fn main() -> std::process::ExitCode {
    let opts = Opts::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(opts)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("regbench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(opts: Opts) -> R<()> {
    let rounds = opts.rounds();
    let sizes = opts.sizes()?;
    if !opts.ours.exists() {
        return Err(format!(
            "{} not found: build it with `cargo build --release` (run.sh does)",
            opts.ours.display()
        ));
    }
    if !opts.distribution.exists() {
        return Err(format!(
            "{} not found: install Debian's docker-registry (run.sh does)",
            opts.distribution.display()
        ));
    }
    let tempdir;
    let workdir = match &opts.workdir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(err("create workdir"))?;
            d.clone()
        }
        None => {
            tempdir = tempfile::Builder::new()
                .prefix("regbench-")
                .tempdir()
                .map_err(err("create a temporary directory"))?;
            tempdir.path().to_owned()
        }
    };
    // Run a copy of our binary: the target directory may be rebuilt meanwhile.
    let mut opts = opts;
    let snapshot = workdir.join("packs-registry");
    std::fs::copy(&opts.ours, &snapshot).map_err(err("copy our binary"))?;
    opts.ours = snapshot;
    let before = match &opts.before {
        Some(bin) => {
            let copy = workdir.join("packs-registry-before");
            std::fs::copy(bin, &copy)
                .map_err(|e| format!("copy the --before binary {}: {e}", bin.display()))?;
            let mut o = opts.clone();
            o.ours = copy;
            Some(o)
        }
        None => None,
    };
    let http = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256)
        .build()
        .map_err(err("HTTP client"))?;
    eprintln!(
        "regbench: {rounds} round(s), blob sizes {}, data under {}",
        sizes
            .iter()
            .map(|s| human(*s))
            .collect::<Vec<_>>()
            .join(", "),
        workdir.display()
    );

    let mut res = Results::default();
    let mut servers = Vec::new();
    servers.push(Arc::new(
        start_ours(&opts, &http, &workdir, "ours", &[], Who::Ours, None).await?,
    ));
    if let Some(o) = &before {
        servers.push(Arc::new(
            start_ours(o, &http, &workdir, "before", &[], Who::Before, None).await?,
        ));
    }
    servers.push(Arc::new(
        start_distribution(&opts, &http, &workdir, "distribution").await?,
    ));
    let mut prod_deps = None;
    if opts.no_production {
        res.note("production configuration skipped (--no-production)");
    } else {
        match ProdDeps::start(&opts, &http, &workdir).await {
            Ok(deps) => {
                match start_ours(
                    &opts,
                    &http,
                    &workdir,
                    "ours-prod",
                    &deps.env(),
                    Who::Prod,
                    Some(deps.s3.clone()),
                )
                .await
                {
                    Ok(s) => servers.push(Arc::new(s)),
                    Err(e) => res.note(format!("production configuration skipped: {e}")),
                }
                prod_deps = Some(deps);
            }
            Err(e) => res.note(format!("production configuration skipped: {e}")),
        }
    }
    // Idle RSS: after start-up and two quiet seconds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle: BTreeMap<Who, f64> = servers.iter().map(|s| (s.who, s.rss())).collect();
    let cpu0: BTreeMap<Who, f64> = servers.iter().map(|s| (s.who, s.cpu())).collect();
    for s in &servers {
        eprintln!(
            "  {} at {} (pid {}), idle RSS {:.1} MiB",
            s.who.label(),
            s.base,
            s.proc.pid(),
            s.rss()
        );
    }
    let who_list: Vec<Who> = servers.iter().map(|s| s.who).collect();

    let mut bench = Bench {
        opts: opts.clone(),
        http,
        servers,
        res,
        fixture: Fixture::new(),
        maker: BlobMaker::new(if opts.quick {
            16 * MIB as usize
        } else {
            64 * MIB as usize
        }),
        workdir: workdir.clone(),
        prod: prod_deps
            .as_ref()
            .map(|d| (d.admin_url.clone(), d.s3.clone())),
    };
    let t0 = Instant::now();
    if opts.runs("machine") {
        bench.machine().await;
    }
    if opts.runs("catalog") {
        bench.catalog().await;
    }
    if opts.runs("tags") {
        bench.tags().await;
    }
    if opts.runs("mput") {
        bench.mput().await;
    }
    if opts.runs("mget") {
        bench.mget().await;
    }
    if opts.runs("upload") {
        bench.upload().await;
    }
    if opts.runs("download") {
        bench.download().await;
    }
    if opts.runs("packs") {
        bench.packs().await;
    }
    // Idle RSS after the workload: idle, that is after 25 quiet seconds. Ours hands
    // freed memory back once it has been idle for 10-20 s (src/memory.rs), and
    // tokio's blocking threads exit after 10 idle seconds; Go's scavenger returns
    // Distribution's heap on its own schedule.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let mut totals = BTreeMap::new();
    for s in &bench.servers {
        let rss = s.rss();
        eprintln!(
            "  {}: idle RSS after the workload {:.1} MiB, of which allocated {:.1} MiB \
             and file-backed (code, data, libraries) {:.1} MiB",
            s.who.label(),
            rss,
            status_mib(s.proc.pid(), "RssAnon:"),
            status_mib(s.proc.pid(), "RssFile:"),
        );
        totals.insert(s.who, (idle[&s.who], rss, s.hwm(), s.cpu() - cpu0[&s.who]));
    }
    if opts.runs("huge") {
        bench.huge().await;
    }
    let elapsed = t0.elapsed();

    let mut out = format!(
        "Rounds: {rounds} (medians shown); blob sizes: {}; wall time {:.0} s.\n\n",
        sizes
            .iter()
            .map(|s| human(*s))
            .collect::<Vec<_>>()
            .join(", "),
        elapsed.as_secs_f64()
    );
    out.push_str(&report(&opts, &bench.res, &who_list, &totals));
    drop(bench);
    if let Some(deps) = prod_deps {
        if opts.keep_databases {
            eprintln!("kept the database {}", deps.database);
        } else {
            drop_database(&deps.admin_url, &deps.database).await;
        }
    }
    println!("{out}");
    if let Some(path) = &opts.out {
        std::fs::write(path, &out).map_err(err("write --out"))?;
    }
    Ok(())
}
