//! Dependencies going away and coming back: the S3 server and the PostgreSQL server
//! are really stopped and restarted during the test. While one is down, requests
//! that need it fail fast with 503 and `/readyz` names it; when it returns, the
//! replica recovers by itself, with no restart.
//!
//! Each test runs its own S3 server (`moto_server`, PyPI `moto[server]`) or its own
//! PostgreSQL cluster (Debian's binaries under `/usr/lib/postgresql/*/bin`, run as
//! the `postgres` user), so stopping it disturbs nothing else. Skipped, with a note,
//! when those programs are absent.

mod prod;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prod::{free_port, sha256, spawn, wait_ready};
use reqwest::StatusCode;
use serde_json::Value;

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

struct Moto {
    child: Child,
    port: u16,
    program: PathBuf,
}

impl Moto {
    fn start(program: &Path, port: u16) -> Moto {
        let child = Command::new(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        Moto {
            child,
            port,
            program: program.to_owned(),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn create_bucket(&self, bucket: &str) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http
                .put(format!("{}/{bucket}", self.endpoint()))
                .send()
                .await
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "moto_server did not come up");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.stop();
        *self = Moto::start(&self.program.clone(), self.port);
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn readiness(http: &reqwest::Client, base: &str) -> (StatusCode, Value) {
    let r = http.get(format!("{base}/readyz")).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

async fn wait_until_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _) = readiness(http, base).await;
        if status == StatusCode::OK {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the replica did not recover by itself"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn push(http: &reqwest::Client, base: &str, repo: &str, bytes: &[u8]) -> StatusCode {
    http.post(format!(
        "{base}/v2/{repo}/blobs/uploads/?digest={}",
        sha256(bytes)
    ))
    .header("content-type", "application/octet-stream")
    .body(bytes.to_vec())
    .send()
    .await
    .unwrap()
    .status()
}

#[actix_web::test]
#[cfg_attr(
    not(packs_test_s3),
    ignore = "needs moto_server (pip install 'moto[server]'); runs when PACKS_TEST_S3_ENDPOINT or CI is set"
)]
async fn s3_outage_answers_503_and_recovers() {
    let program =
        which("moto_server").expect("moto_server on the PATH (pip install 'moto[server]')");
    let mut moto = Moto::start(&program, free_port());
    moto.create_bucket("outage").await;
    let vars: Vec<(String, String)> = [
        ("PACKS__STORAGE__BACKEND", "s3"),
        ("PACKS__STORAGE__S3__BUCKET", "outage"),
        ("PACKS__STORAGE__S3__ENDPOINT", &moto.endpoint()),
        ("PACKS__STORAGE__S3__CONNECT_TIMEOUT_SECS", "1"),
        ("PACKS__STORAGE__S3__MAX_RETRIES", "1"),
        ("PACKS__STORAGE__S3__RETRY_TIMEOUT_SECS", "2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut replica = spawn(&vars);
    wait_ready(&mut replica).await;
    let http = reqwest::Client::new();
    assert_eq!(
        push(&http, &replica.base, "packs/a", b"before").await,
        StatusCode::CREATED
    );

    moto.stop();
    assert_eq!(
        push(&http, &replica.base, "packs/a", b"during").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let r = http
        .get(replica.url(&format!("/v2/packs/a/blobs/{}", sha256(b"before"))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNKNOWN");
    let (status, ready) = readiness(&http, &replica.base).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["checks"]["storage"]["status"], "unavailable");
    assert_eq!(ready["checks"]["database"]["status"], "ok");

    // moto keeps everything in memory: the restarted server has an empty bucket,
    // as a store restored from nothing would. Recovery is about the replica.
    moto.restart();
    moto.create_bucket("outage").await;
    wait_until_ready(&http, &replica.base).await;
    assert_eq!(
        push(&http, &replica.base, "packs/a", b"after").await,
        StatusCode::CREATED
    );
    let r = http
        .get(replica.url(&format!("/v2/packs/a/blobs/{}", sha256(b"after"))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"after");
}

/// A private PostgreSQL cluster in a temporary folder, owned by `postgres`.
struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Postgres {
    fn find_bin() -> Option<PathBuf> {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").is_file())
            .collect();
        versions.sort();
        versions.pop()
    }

    fn as_postgres(&self, program: &str, args: &[&str]) -> bool {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn init(bin: PathBuf) -> Option<Postgres> {
        let dir = tempfile::tempdir().ok()?;
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .ok()?;
        if !chown.success() {
            return None;
        }
        let pg = Postgres {
            bin,
            dir,
            port: free_port(),
        };
        let data = pg.data();
        pg.as_postgres("initdb", &["-A", "trust", "-U", "postgres", "-D", &data])
            .then_some(pg)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        assert!(
            self.as_postgres(
                "pg_ctl",
                &["-D", &self.data(), "-w", "-o", &options, "start"]
            ),
            "pg_ctl start"
        );
    }

    fn stop(&self) {
        self.as_postgres("pg_ctl", &["-D", &self.data(), "-w", "-m", "fast", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

#[actix_web::test]
#[cfg_attr(
    not(packs_test_postgres),
    ignore = "needs PostgreSQL's server binaries; runs when PACKS_TEST_POSTGRES_URL or CI is set"
)]
async fn database_outage_answers_503_and_recovers() {
    let pg = Postgres::find_bin()
        .and_then(Postgres::init)
        .expect("PostgreSQL server binaries under /usr/lib/postgresql and a postgres user");
    pg.start();
    let vars = vec![
        ("PACKS__METADATA__URL".to_owned(), pg.url()),
        (
            "PACKS__METADATA__ACQUIRE_TIMEOUT_SECS".to_owned(),
            "2".to_owned(),
        ),
    ];
    let mut replica = spawn(&vars);
    wait_ready(&mut replica).await;
    let http = reqwest::Client::new();
    assert_eq!(
        push(&http, &replica.base, "packs/db", b"before").await,
        StatusCode::CREATED
    );

    pg.stop();
    assert_eq!(
        push(&http, &replica.base, "packs/db", b"during").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let r = http
        .get(replica.url("/v2/packs/db/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (status, ready) = readiness(&http, &replica.base).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["checks"]["database"]["status"], "unavailable");
    assert_eq!(ready["checks"]["storage"]["status"], "ok");

    pg.start();
    wait_until_ready(&http, &replica.base).await;
    assert_eq!(
        push(&http, &replica.base, "packs/db", b"after").await,
        StatusCode::CREATED
    );
    // What was stored before the outage is all still there.
    let r = http
        .get(replica.url(&format!("/v2/packs/db/blobs/{}", sha256(b"before"))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"before");
}
