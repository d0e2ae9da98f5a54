//! `/packs` and the web UI at 100,000 packs: seeds the index (repositories,
//! manifests, tags and pack versions, through the real migrations and triggers) and
//! times the listing, search, version and page queries through the whole
//! application, in process. A measurement, not
//! a test with timed assertions: it is `#[ignore]`d and prints its numbers.
//!
//! ```sh
//! cargo test --release --test packs_scale -- --ignored --nocapture
//! PACKS_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo test --release --test packs_scale -- --ignored --nocapture
//! ```
//! `PACKS_SCALE_PACKS` changes the number of packs (default 100000).

use std::time::{Duration, Instant};

use actix_web::dev::Service;
use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use packs_registry::config::{Config, StorageBackend};
use sqlx::Connection;

const WORDS: &[&str] = &[
    "baseline",
    "secret",
    "scanner",
    "license",
    "policy",
    "container",
    "runtime",
    "network",
    "kubernetes",
    "terraform",
    "python",
    "golang",
    "java",
    "node",
    "rust",
    "docker",
    "sbom",
    "vulnerability",
    "compliance",
    "audit",
    "crypto",
    "token",
    "supply",
    "chain",
    "signature",
    "provenance",
    "malware",
    "drift",
    "cost",
    "quota",
    "backup",
    "restore",
    "deploy",
    "release",
    "canary",
    "rollback",
    "lint",
    "format",
    "coverage",
    "fuzz",
];
const TYPES: &[&str] = &["policy", "analyzer", "task", "bundle"];
/// The pack that gets many versions.
const MANY: usize = 4242;
const MANY_VERSIONS: usize = 300;

fn packs() -> usize {
    std::env::var("PACKS_SCALE_PACKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000)
}

/// Rows of one pack version, as SQL literals both dialects read.
fn version_rows(i: usize, version: (u64, u64, u64), postgres: bool) -> [String; 4] {
    let id = format!("pack-{i:06}");
    let repo = format!("packs/{id}");
    let w = |k: usize| WORDS[(i * 7 + k * 13) % WORDS.len()];
    let name = format!("{} {} {}", w(0), w(1), TYPES[i % TYPES.len()]);
    let description = format!(
        "Checks {} and {} for {} projects (pack number {i})",
        w(2),
        w(3),
        w(4)
    );
    let author = format!("team-{:02}", i % 50);
    let (ma, mi, pa) = version;
    let v = format!("{ma}.{mi}.{pa}");
    let sort_key = format!("{ma:020}.{mi:020}.{pa:020}.1");
    let digest = |what: &str| {
        let mut hex = format!("{:x}", (i as u64) << 24 | ma << 16 | mi << 8 | pa);
        hex.push_str(what);
        format!("sha256:{hex:0>64}")
    };
    let manifest = digest("1");
    let search = format!("{id}\n{name}\n{description}").to_lowercase();
    let body = if postgres {
        "'\\x7b7d'::bytea"
    } else {
        "X'7b7d'"
    };
    [
        format!("('{repo}', 0)"),
        format!(
            "('{repo}', '{manifest}', 'application/vnd.oci.image.manifest.v1+json', NULL, NULL, NULL, 2, {body}, 0, 0)"
        ),
        format!("('{repo}', '{v}', '{manifest}', 0)"),
        format!(
            "('{id}', '{v}', '{sort_key}', FALSE, '{}', '{name}', '{description}', '{author}', \
             '{search}', '{repo}', '{v}', '{manifest}', '{}', \
             'application/vnd.stellaops.pack.content.v1.tar+gzip', 12345, 1736937000000, '[]', \
             '[]', '{{}}')",
            TYPES[i % TYPES.len()],
            digest("2"),
        ),
    ]
}

/// SQL statements inserting every pack in batches.
fn seed_sql(n: usize, postgres: bool) -> Vec<String> {
    let mut rows: Vec<[String; 4]> = Vec::with_capacity(n + MANY_VERSIONS);
    for i in 0..n {
        rows.push(version_rows(i, (1, (i % 7) as u64, 0), postgres));
    }
    for k in 0..MANY_VERSIONS as u64 {
        rows.push(version_rows(MANY, (2 + k / 100, k % 100, k % 3), postgres));
    }
    let mut statements = Vec::new();
    for chunk in rows.chunks(1000) {
        let col = |c: usize| {
            chunk
                .iter()
                .map(|r| r[c].clone())
                .collect::<Vec<_>>()
                .join(",\n")
        };
        statements.push(format!(
            "INSERT INTO repositories (name, created_at) VALUES {} ON CONFLICT DO NOTHING;\n\
             INSERT INTO manifests (repo, digest, media_type, artifact_type, subject_digest, \
             annotations, size, body, created_at, pushed_at) VALUES {};\n\
             INSERT INTO tags (repo, name, manifest_digest, updated_at) VALUES {};\n\
             INSERT INTO pack_versions (pack_id, version, sort_key, prerelease, type, name, \
             description, author, search_text, repository, tag, manifest_digest, content_digest, \
             content_media_type, size, published_at, dependencies, members, metadata) VALUES {};",
            col(0),
            col(1),
            col(2),
            col(3)
        ));
    }
    statements
}

struct Timing {
    name: String,
    samples: Vec<Duration>,
    results: usize,
}

impl Timing {
    fn quantile(&self, q: f64) -> Duration {
        let mut s = self.samples.clone();
        s.sort();
        s[((s.len() as f64 * q).ceil() as usize).clamp(1, s.len()) - 1]
    }
}

async fn time_query<S, B>(router: &S, name: &str, uris: &[String]) -> Timing
where
    S: Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    B: actix_web::body::MessageBody,
{
    let mut samples = Vec::with_capacity(uris.len());
    let mut results = 0;
    // One warm-up round: caches and prepared statements, as on a running server.
    for uri in uris.iter().take(20) {
        let _ = call(router, uri).await;
    }
    for uri in uris {
        let start = Instant::now();
        let (status, body) = call(router, uri).await;
        samples.push(start.elapsed());
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        results += body.matches("\"packId\"").count() + body.matches("\"version\"").count();
    }
    Timing {
        name: name.to_owned(),
        samples,
        results,
    }
}

async fn call<S, B>(router: &S, uri: &str) -> (StatusCode, String)
where
    S: Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    B: actix_web::body::MessageBody,
{
    let response =
        actix_web::test::call_service(router, TestRequest::get().uri(uri).to_request()).await;
    let status = response.status();
    let body = actix_web::test::read_body(response).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn measure(label: &str, config: Config) {
    let state = packs_registry::server::build_state(config)
        .await
        .expect("app state");
    let router = actix_web::test::init_service(packs_registry::http::app(state)).await;
    let n = packs();
    let rounds = 300;
    let pick = |k: usize| format!("pack-{:06}", (k * 7919) % n);
    let cursors: Vec<String> = (0..rounds).map(pick).collect();
    let mut timings = Vec::new();
    let q = |name: &str, f: &dyn Fn(usize) -> String| {
        (name.to_owned(), (0..rounds).map(f).collect::<Vec<_>>())
    };
    let cases = vec![
        q("list first page (limit 100)", &|_| {
            "/packs?limit=100".into()
        }),
        q("list deep page (cursor, limit 100)", &|k| {
            format!("/packs?limit=100&cursor={}", cursors[k])
        }),
        q("type filter + cursor", &|k| {
            format!(
                "/packs?type={}&cursor={}",
                TYPES[k % TYPES.len()],
                cursors[k]
            )
        }),
        q("author filter + cursor", &|k| {
            format!("/packs?author=team-{:02}&cursor={}", k % 50, cursors[k])
        }),
        q("q common word (~15% match)", &|k| {
            format!("/packs?q={}", WORDS[k % WORDS.len()])
        }),
        q("q rare text (1 match)", &|k| {
            format!("/packs?q=number%20{}%29", (k * 7919) % n)
        }),
        q("q no match", &|k| format!("/packs?q=zzz{k}qqq")),
        q("q 3 chars, no match", &|k| format!("/packs?q=z{}q", k % 10)),
        q("q 3 chars, common", &|k| {
            format!("/packs?q={}", &WORDS[k % WORDS.len()][..3])
        }),
        q("q + type filter", &|k| {
            format!(
                "/packs?q={}&type={}",
                WORDS[k % WORDS.len()],
                TYPES[k % TYPES.len()]
            )
        }),
        q("get pack (latest)", &|k| format!("/packs/{}", cursors[k])),
        q("versions (1-7 per pack)", &|k| {
            format!("/packs/{}/versions", cursors[k])
        }),
        q("versions (300)", &|_| {
            format!("/packs/pack-{MANY:06}/versions")
        }),
        q("web UI: pack page", &|k| {
            format!("/ui/packs/{}", cursors[k])
        }),
        q("web UI: pack page (300 versions)", &|_| {
            format!("/ui/packs/pack-{MANY:06}")
        }),
        q("web UI: list, q common word", &|k| {
            format!("/ui/?q={}", WORDS[k % WORDS.len()])
        }),
        q("web UI: list, deep page", &|k| {
            format!("/ui/?cursor={}", cursors[k])
        }),
    ];
    for (name, uris) in cases {
        timings.push(time_query(&router, &name, &uris).await);
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\n{label}: {n} packs, {rounds} requests per query, in process through the router \
         (load average {})",
        load.split(' ').take(3).collect::<Vec<_>>().join(" ")
    );
    println!(
        "{:<40} {:>9} {:>9} {:>9} {:>9}",
        "query", "p50 ms", "p99 ms", "max ms", "items"
    );
    for t in &timings {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{:<40} {:>9.2} {:>9.2} {:>9.2} {:>9}",
            t.name,
            ms(t.quantile(0.5)),
            ms(t.quantile(0.99)),
            ms(t.quantile(1.0)),
            t.results / rounds
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: cargo test --release --test packs_scale -- --ignored --nocapture"]
async fn sqlite_100k_packs() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    // PACKS_SCALE_KEEP=DIR keeps the seeded database (DIR/metadata.db) for a look.
    config.server.data_dir = std::env::var("PACKS_SCALE_KEEP")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().to_path_buf());
    config.storage.backend = StorageBackend::Memory;
    let url = config.metadata_url();
    {
        // Migrate through the application, then seed through a connection of our own.
        packs_registry::server::build_state(config.clone())
            .await
            .expect("migrate");
        let started = Instant::now();
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::raw_sql("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL")
            .execute(&mut conn)
            .await
            .unwrap();
        let mut tx = conn.begin().await.unwrap();
        for sql in seed_sql(packs(), false) {
            sqlx::raw_sql(&sql).execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
        sqlx::raw_sql("ANALYZE").execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        println!("sqlite: seeded in {:.1?}", started.elapsed());
    }
    measure("SQLite", config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: cargo test --release --test packs_scale -- --ignored --nocapture"]
async fn postgres_100k_packs() {
    let Ok(admin) = std::env::var("PACKS_TEST_POSTGRES_URL") else {
        eprintln!("PACKS_TEST_POSTGRES_URL is not set: skipping the PostgreSQL measurement");
        return;
    };
    let db = format!("packs_scale_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE {db}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    let url = format!("{base}/{db}");
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.data_dir = dir.path().to_path_buf();
    config.storage.backend = StorageBackend::Memory;
    config.metadata.url = url.clone();
    packs_registry::server::build_state(config.clone())
        .await
        .expect("migrate");
    let started = Instant::now();
    {
        let mut seed = sqlx::PgConnection::connect(&url).await.unwrap();
        let mut tx = seed.begin().await.unwrap();
        for sql in seed_sql(packs(), true) {
            sqlx::raw_sql(&sql).execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
        sqlx::raw_sql("VACUUM ANALYZE")
            .execute(&mut seed)
            .await
            .unwrap();
        seed.close().await.unwrap();
    }
    println!("postgres: seeded in {:.1?}", started.elapsed());
    measure("PostgreSQL", config).await;
    sqlx::raw_sql(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();
}
