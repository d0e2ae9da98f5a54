//! Upload sessions as the domain keeps them, on each metadata dialect: the caps on
//! open sessions, and the expiry sweep, which must keep up however many sessions
//! were abandoned and survive any configured age.
//!
//! Every case runs on SQLite (with the filesystem blob store). The PostgreSQL variants
//! need a server: set `PACKS_TEST_POSTGRES_URL` (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`; each test makes a database of its own
//! and drops it); without it they are ignored (see `build.rs`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use packs_registry::digest::Algorithm;
use packs_registry::metadata::{
    self, DynMetadataStore, PoolOptions, SessionCaps, UploadRecord, now_millis,
};
use packs_registry::names::RepoName;
use packs_registry::registry::{Error, Limits, Registry};
use packs_registry::storage::FsBlobStore;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

const POSTGRES_URL: &str = "PACKS_TEST_POSTGRES_URL";

/// A registry over a metadata store and a filesystem blob store in a temporary
/// folder, with `limits`; the guard drops what it lived in.
struct Env {
    registry: Registry,
    meta: DynMetadataStore,
    dir: tempfile::TempDir,
    _database: Option<PostgresDatabase>,
}

/// A PostgreSQL database made for one test, dropped with it.
struct PostgresDatabase {
    admin_url: String,
    name: String,
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // A runtime of its own on a thread of its own: the test's may be unwinding.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(async {
                    let mut admin = PgConnection::connect(&admin_url).await?;
                    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await?;
                    admin.close().await
                })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

#[derive(Clone, Copy)]
enum Dialect {
    Sqlite,
    Postgres,
}

async fn env(dialect: Dialect, limits: Limits) -> Env {
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, database) = match dialect {
        Dialect::Sqlite => (format!("sqlite://{}/m.db", dir.path().display()), None),
        Dialect::Postgres => {
            let admin_url = std::env::var(POSTGRES_URL)
                .unwrap_or_else(|_| panic!("{POSTGRES_URL} must name a PostgreSQL database"));
            let name = format!("packs_test_{}", Uuid::new_v4().simple());
            let mut admin = PgConnection::connect(&admin_url)
                .await
                .expect("connect to the PostgreSQL server");
            sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await
                .expect("create a test database");
            admin.close().await.ok();
            let url = match admin_url.rsplit_once('/') {
                Some((server, _)) => format!("{server}/{name}"),
                None => panic!("{POSTGRES_URL} must end with a database name"),
            };
            (url, Some(PostgresDatabase { admin_url, name }))
        }
    };
    let meta = metadata::connect(&url, &PoolOptions::default())
        .await
        .expect("open the metadata store");
    meta.migrate().await.expect("migrate");
    let blobs = Arc::new(FsBlobStore::open(dir.path().join("blobs")).expect("blob store"));
    Env {
        registry: Registry::new(blobs, meta.clone(), limits),
        meta,
        dir,
        _database: database,
    }
}

fn repo(name: &str) -> RepoName {
    RepoName::parse(name).expect("repository name")
}

/// A session of `repo` last touched `age` ago, as an abandoned one would be.
fn abandoned(repo_name: &str, age: Duration) -> UploadRecord {
    let then = now_millis() - i64::try_from(age.as_millis()).expect("age");
    UploadRecord {
        id: Uuid::new_v4(),
        repo: repo(repo_name),
        offset: 0,
        hash_state: Algorithm::Sha256.hasher().to_state(),
        parts: vec![],
        created_at: then,
        updated_at: then,
    }
}

// -------------------------------------------------------------------------------------
// Cases

/// Sessions beyond a cap, in one repository or in all, are refused with
/// `TooManyRequests` and a `Retry-After`, storing nothing; finishing or cancelling one
/// makes room again.
async fn session_caps(dialect: Dialect) {
    let limits = Limits {
        max_upload_sessions: 5,
        max_upload_sessions_per_repository: 3,
        ..Limits::default()
    };
    let env = env(dialect, limits).await;
    let (a, b, c) = (repo("caps/a"), repo("caps/b"), repo("caps/c"));
    let mut in_a = Vec::new();
    for _ in 0..3 {
        in_a.push(
            env.registry
                .start_upload(&a, Algorithm::Sha256)
                .await
                .unwrap(),
        );
    }
    let refused = env.registry.start_upload(&a, Algorithm::Sha256).await;
    match refused {
        Err(Error::TooManyRequests {
            message,
            retry_after_secs,
        }) => {
            assert!(message.contains("in this repository"), "{message}");
            assert!(retry_after_secs > 0);
        }
        other => panic!("{other:?}"),
    }
    for _ in 0..2 {
        env.registry
            .start_upload(&b, Algorithm::Sha256)
            .await
            .unwrap();
    }
    match env.registry.start_upload(&c, Algorithm::Sha256).await {
        Err(Error::TooManyRequests { message, .. }) => {
            assert!(message.contains("in the registry"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Refusals stored nothing: five sessions are open, none in c.
    assert_eq!(
        env.meta.stale_uploads(i64::MAX, 100).await.unwrap().len(),
        5
    );
    env.registry.cancel_upload(&a, in_a[0].id).await.unwrap();
    env.registry
        .start_upload(&c, Algorithm::Sha256)
        .await
        .unwrap();
    // 0 is no cap.
    let env = self::env(
        dialect,
        Limits {
            max_upload_sessions: 0,
            max_upload_sessions_per_repository: 0,
            ..Limits::default()
        },
    )
    .await;
    for _ in 0..10 {
        env.registry
            .start_upload(&a, Algorithm::Sha256)
            .await
            .unwrap();
    }
}

/// More abandoned sessions than one batch holds are all expired by one sweep; a live
/// session stays.
async fn expiry_sweeps_every_batch(dialect: Dialect) {
    let env = env(dialect, Limits::default()).await;
    let old = Duration::from_secs(2 * 3600);
    let caps = SessionCaps::default();
    for i in 0..2500 {
        let session = abandoned(&format!("stale/r{}", i % 7), old);
        env.meta.create_upload(&session, caps).await.unwrap();
    }
    let live = env
        .registry
        .start_upload(&repo("stale/live"), Algorithm::Sha256)
        .await
        .unwrap();
    let report = env
        .registry
        .expire_uploads(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(report.sessions, 2500);
    assert_eq!(
        env.meta.stale_uploads(i64::MAX, 10).await.unwrap(),
        [live.id]
    );
}

/// Stored upload areas no session owns are all removed, however many batches they
/// fill; the sweep stops once a batch holds no orphan.
async fn expiry_removes_every_orphan(dialect: Dialect) {
    let env = env(dialect, Limits::default()).await;
    let uploads = env.dir.path().join("blobs/uploads");
    let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    for _ in 0..1200 {
        // What a replica that died mid-push leaves: an upload area with no session.
        let area = uploads.join(Uuid::new_v4().to_string());
        std::fs::create_dir_all(&area).unwrap();
        std::fs::File::open(&area)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
    }
    let report = env
        .registry
        .expire_uploads(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(report.orphans, 1200);
    let left = std::fs::read_dir(&uploads)
        .unwrap()
        .filter_map(|e| Uuid::parse_str(e.unwrap().file_name().to_str()?).ok())
        .count();
    assert_eq!(left, 0);
}

/// A configured age further back than the clock goes (as `u64::MAX` seconds is)
/// expires nothing, and does not panic: the sweep task lives on.
async fn expiry_with_a_huge_age(dialect: Dialect) {
    let env = env(dialect, Limits::default()).await;
    let caps = SessionCaps::default();
    let session = abandoned("huge/age", Duration::from_secs(30 * 24 * 3600));
    env.meta.create_upload(&session, caps).await.unwrap();
    for age in [
        Duration::MAX,
        Duration::from_secs(u64::MAX),
        Duration::from_millis(u64::MAX),
        Duration::from_secs(400 * 365 * 24 * 3600),
    ] {
        let report = env.registry.expire_uploads(age).await.unwrap();
        assert_eq!((report.sessions, report.orphans), (0, 0), "{age:?}");
    }
    assert_eq!(
        env.meta.stale_uploads(i64::MAX, 10).await.unwrap(),
        [session.id]
    );
}

// -------------------------------------------------------------------------------------
// Backends

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Dialect::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(
                    not(packs_test_postgres),
                    ignore = "needs PostgreSQL: set PACKS_TEST_POSTGRES_URL"
                )]
                async fn $case() {
                    super::$case(super::Dialect::Postgres).await;
                }
            )*
        }
    };
}

cases!(
    session_caps,
    expiry_sweeps_every_batch,
    expiry_removes_every_orphan,
    expiry_with_a_huge_age,
);
