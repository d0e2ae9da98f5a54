//! Harness for tests of the production configuration: real `packs-registry serve`
//! processes on loopback ports over a fresh PostgreSQL database and a fresh S3 bucket.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest as _;

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Where the production dependencies are, from the environment.
#[derive(Clone, Debug)]
pub struct ProdEnv {
    pub postgres_url: String,
    pub s3_endpoint: String,
}

impl ProdEnv {
    /// The services named by the environment. Tests that call this are compiled
    /// with `#[ignore]` unless the variables are set (see `build.rs`), so a missing
    /// variable here means `CI` is set without them: a failure, not a skip.
    pub fn from_env() -> Option<Self> {
        match (
            std::env::var("PACKS_TEST_POSTGRES_URL"),
            std::env::var("PACKS_TEST_S3_ENDPOINT"),
        ) {
            (Ok(pg), Ok(s3)) if !pg.is_empty() && !s3.is_empty() => Some(ProdEnv {
                postgres_url: pg,
                s3_endpoint: s3,
            }),
            _ => panic!(
                "this test needs PACKS_TEST_POSTGRES_URL (a PostgreSQL server) and \
                 PACKS_TEST_S3_ENDPOINT (an S3-compatible server); .ci/run sets both"
            ),
        }
    }
}

/// Replaces the database name in a PostgreSQL URL.
pub fn with_database(url: &str, db: &str) -> String {
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

/// A database created for one test and dropped after it.
pub struct TestDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create(admin_url: &str) -> Self {
        let name = format!("packs_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(admin_url)
            .await
            .expect("connect to PACKS_TEST_POSTGRES_URL");
        sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create test database");
        TestDatabase {
            admin_url: admin_url.to_owned(),
            url: with_database(admin_url, &name),
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        // Drop in a thread of its own: Drop may run inside a runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut conn) =
                    <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await
                {
                    let _ = sqlx::Executor::execute(
                        &mut conn,
                        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str(),
                    )
                    .await;
                }
            });
        })
        .join();
    }
}

/// Creates a bucket on an S3-compatible server that accepts unsigned requests
/// (moto does), returning its name.
pub async fn create_bucket(endpoint: &str) -> String {
    let bucket = format!("packs-test-{}", uuid::Uuid::new_v4().simple());
    let r = reqwest::Client::new()
        .put(format!("{}/{bucket}", endpoint.trim_end_matches('/')))
        .send()
        .await
        .expect("S3 endpoint reachable");
    assert!(r.status().is_success(), "create bucket: {}", r.status());
    bucket
}

/// One `serve` process.
pub struct Replica {
    child: Child,
    pub base: String,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Replica {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Pushes a blob monolithically, returning its digest.
    pub async fn push_blob(&self, http: &reqwest::Client, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let r = http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::CREATED);
        digest
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `serve` with `env` (PACKS__… variables) on a free port, without waiting.
pub fn spawn(env: &[(String, String)]) -> Replica {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_packs-registry"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("PACKS__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start packs-registry");
    Replica {
        child,
        base: format!("http://127.0.0.1:{port}"),
        port,
        _dir: dir,
    }
}

/// Waits until `GET /v2/` answers 200.
pub async fn wait_ready(replica: &mut Replica) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(replica.url("/v2/")).send().await
            && r.status().is_success()
        {
            return;
        }
        if let Ok(Some(status)) = replica.child.try_wait() {
            panic!("packs-registry exited during start-up: {status}");
        }
        assert!(Instant::now() < deadline, "packs-registry did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The environment of the production configuration.
pub fn prod_vars(database_url: &str, s3_endpoint: &str, bucket: &str) -> Vec<(String, String)> {
    [
        ("PACKS__METADATA__URL", database_url),
        ("PACKS__STORAGE__BACKEND", "s3"),
        ("PACKS__STORAGE__S3__BUCKET", bucket),
        ("PACKS__STORAGE__S3__ENDPOINT", s3_endpoint),
        ("PACKS__STORAGE__S3__CONNECT_TIMEOUT_SECS", "1"),
        ("PACKS__STORAGE__S3__MAX_RETRIES", "1"),
        ("PACKS__STORAGE__S3__RETRY_TIMEOUT_SECS", "3"),
        ("PACKS__METADATA__ACQUIRE_TIMEOUT_SECS", "2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Several replicas over one fresh database and one fresh bucket.
pub struct Cluster {
    pub replicas: Vec<Replica>,
    pub bucket: String,
    pub env: ProdEnv,
    pub database: TestDatabase,
}

impl Cluster {
    /// Starts `n` replicas at once.
    pub async fn start(n: usize) -> Cluster {
        Self::start_with(n, &[]).await
    }

    /// Starts `n` replicas at once, with `extra` environment (PACKS__… variables).
    pub async fn start_with(n: usize, extra: &[(&str, &str)]) -> Cluster {
        let env = ProdEnv::from_env().expect("the production services");
        let database = TestDatabase::create(&env.postgres_url).await;
        let bucket = create_bucket(&env.s3_endpoint).await;
        let mut vars = prod_vars(&database.url, &env.s3_endpoint, &bucket);
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut replicas: Vec<Replica> = (0..n).map(|_| spawn(&vars)).collect();
        for r in &mut replicas {
            wait_ready(r).await;
        }
        Cluster {
            replicas,
            bucket,
            env,
            database,
        }
    }
}
