//! Configuration: defaults, then a TOML file, then `PACKS__SECTION__KEY` environment
//! variables, then command-line flags, into typed structs with `deny_unknown_fields`
//! and a `validate()` step. Every key is documented in `examples/registry.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP server.
    pub server: ServerConfig,
    /// Metadata database.
    pub metadata: MetadataConfig,
    /// Blob storage.
    pub storage: StorageConfig,
    /// Request and content limits.
    pub limits: LimitsConfig,
    /// Upload sessions.
    pub uploads: UploadsConfig,
    /// The `/packs` facade and the packs index.
    pub packs: PacksConfig,
    /// Offline bundles (`/packs/import`, `packs-registry bundle`).
    pub bundles: BundlesConfig,
    /// Logging.
    pub log: LogConfig,
    /// Traces (OpenTelemetry) and metrics (Prometheus).
    pub telemetry: TelemetryConfig,
    /// Tag rules.
    pub tags: TagsConfig,
    /// Authentication and authorization.
    pub auth: AuthConfig,
    /// Garbage collection.
    pub gc: GcConfig,
    /// Retention rules (`[[retention]]`), applied by the collector in order: the first
    /// rule covering a pack applies to it.
    pub retention: Vec<RetentionConfig>,
    /// The web UI (`/ui/`).
    pub ui: UiConfig,
}

/// `[ui]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// Serve the web UI at `/ui/` (and redirect `/` to it).
    pub enabled: bool,
    /// Seconds a UI login lasts (the session token's lifetime).
    pub session_ttl_secs: u64,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            enabled: true,
            session_ttl_secs: 8 * 3600,
        }
    }
}

/// `[gc]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcConfig {
    /// Run the collector in `serve` and `worker`, every `interval_secs`; one
    /// process at a time collects (the others skip their turn).
    pub enabled: bool,
    /// Seconds between two collections.
    pub interval_secs: u64,
    /// Seconds an unreferenced upload or untagged manifest is kept before it may be
    /// collected: longer than a push takes from its first blob to its manifest.
    pub grace_secs: u64,
    /// Keep referrers (signatures, attestations) whose subject is gone.
    pub keep_orphaned_referrers: bool,
    /// Also list the blob store for bytes no row refers to (left by a crash).
    pub sweep_storage: bool,
    /// Repositories (the largest) whose storage figures `/metrics` shows.
    pub metrics_repositories: u32,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            enabled: true,
            interval_secs: 3600,
            grace_secs: 3600,
            keep_orphaned_referrers: false,
            sweep_storage: true,
            metrics_repositories: 100,
        }
    }
}

/// One `[[retention]]` rule (see `registry/retention.rs`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Covers packs of this type only (`policy`, `analyzer`, `task`, `bundle`).
    pub pack_type: Option<String>,
    /// Covers packs whose repository starts with this only.
    pub repository_prefix: Option<String>,
    /// Keep the newest this many versions of each pack.
    pub keep_newest: Option<u32>,
    /// Keep versions published less than this many days ago.
    pub keep_days: Option<u32>,
    /// Never let versions matching one of these globs go (`"1.*"`, `"*-lts"`).
    pub protect: Vec<String>,
    /// Let prereleases published more than this many days ago go.
    pub drop_prereleases_after_days: Option<u32>,
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Folder for the embedded defaults: the SQLite file and filesystem blobs.
    pub data_dir: PathBuf,
    /// HTTP worker threads; 0 means one per CPU.
    pub workers: usize,
    /// Seconds an idle keep-alive connection is kept open; 0 turns keep-alive off.
    pub keep_alive_secs: u64,
    /// Seconds a client has to send a request's head (request line and headers) once
    /// it has started one, or to start its first request on a new connection; a
    /// connection that is slower is closed. 0 means no limit (not recommended).
    pub request_head_timeout_secs: u64,
    /// Seconds a request body may stall (no bytes arriving) before the request is
    /// ended; an upload cut off this way stays resumable from its last complete chunk.
    /// 0 means no limit (not recommended).
    pub body_stall_timeout_secs: u64,
    /// Seconds given to a client to read the end of a response and close after the
    /// server has decided to close the connection.
    pub disconnect_timeout_secs: u64,
    /// Most connections served at once, across all workers; more wait in the listen
    /// backlog. 0 means derived from the process's open-file limit (three quarters of
    /// it, leaving the rest for database connections, blob files and sockets to S3).
    pub max_connections: usize,
    /// Seconds that in-flight requests get to finish after SIGTERM or SIGINT; then the
    /// remaining connections are closed.
    pub shutdown_timeout_secs: u64,
    /// Serve HTTPS with this certificate and key (`[server.tls]`); absent: plain HTTP.
    pub tls: Option<TlsConfig>,
    /// A TLS-terminating proxy is in front: token mode may listen on plain HTTP beyond
    /// loopback, challenges name an `https://` realm, and `X-Forwarded-Proto` is
    /// believed.
    pub behind_tls_proxy: bool,
}

/// `[server.tls]`: the certificate chain and key, PEM files, read again when either
/// file changes (certificate rotation without a restart).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain (leaf first), PEM.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1), PEM.
    pub key: PathBuf,
    /// Seconds between checks of the files for a new certificate.
    #[serde(default = "default_tls_reload_secs")]
    pub reload_interval_secs: u64,
}

fn default_tls_reload_secs() -> u64 {
    10
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:5000".parse().expect("valid default"),
            data_dir: PathBuf::from("./data"),
            workers: 0,
            keep_alive_secs: 60,
            request_head_timeout_secs: 10,
            body_stall_timeout_secs: 60,
            disconnect_timeout_secs: 5,
            max_connections: 0,
            shutdown_timeout_secs: 30,
            tls: None,
            behind_tls_proxy: false,
        }
    }
}

impl ServerConfig {
    /// Worker threads in force.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        }
    }

    /// The connection limit in force (see [`ServerConfig::max_connections`]).
    pub fn connection_limit(&self) -> usize {
        if self.max_connections > 0 {
            return self.max_connections;
        }
        let open_files = open_file_limit().unwrap_or(1024);
        usize::try_from(open_files / 4 * 3)
            .unwrap_or(usize::MAX)
            .clamp(16, 25_000)
    }
}

/// The soft limit on open files of this process, if the platform has one.
fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the current limits into the struct we own.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
        (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// `[metadata]`
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataConfig {
    /// `sqlite://…` or `postgres://…`; empty means `sqlite://<data_dir>/metadata.db`.
    pub url: String,
    /// Largest number of pooled connections; by default 3 per CPU of this process
    /// (see [`default_pool_size`]).
    pub max_connections: u32,
    /// Seconds to wait for a pooled connection before failing the request.
    pub acquire_timeout_secs: u64,
    /// Run pending migrations when `serve` starts.
    pub migrate_on_start: bool,
}

impl std::fmt::Debug for MetadataConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout_secs", &self.acquire_timeout_secs)
            .field("migrate_on_start", &self.migrate_on_start)
            .finish()
    }
}

/// The default pool size: 3 connections per CPU, 4 to 16. A replica keeps about as
/// many queries running as it has cores, plus those in flight on the network; more
/// connections only queue up on the database's cores. regbench, production
/// configuration on 2 cores, manifest GET by tag at c=64: 16 connections 13.3k req/s,
/// p99 10.3 ms; 6 connections 14.4k req/s, p99 7.3 ms.
pub fn default_pool_size() -> u32 {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    u32::try_from(3 * cpus).unwrap_or(u32::MAX).clamp(4, 16)
}

/// Words that make a URL query parameter a secret, matched in its lower-cased name:
/// libpq's `password` and `sslpassword`, and the passwords, secrets and tokens other
/// drivers name otherwise.
const SECRET_PARAMETER_WORDS: &[&str] = &["pass", "pwd", "secret", "token", "credential"];

/// A URL with every secret in it replaced by `***`, for logs and `Debug`: the
/// password of its userinfo, and the value of any query parameter whose name says it
/// is a secret (see `SECRET_PARAMETER_WORDS`). A URL that holds none comes back as
/// it is; one that cannot be parsed (nor, then, used: sqlx parses URLs the same way),
/// or that has an '@' but no `//`, comes back as its scheme alone.
pub fn redact_url(url: &str) -> String {
    // Without an authority, an '@' is no userinfo's end to the parser; but it may be
    // one to whoever wrote the URL without its `//` (`user:password@host`).
    let parsed = url::Url::parse(url)
        .ok()
        .filter(|u| u.has_authority() || !url.contains('@'));
    let Some(mut parsed) = parsed else {
        let scheme = url.split_once(':').map(|(scheme, _)| scheme).filter(|s| {
            s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        });
        return format!("{}:<unparsable URL, redacted>", scheme.unwrap_or("?"));
    };
    let mut redacted = false;
    if parsed.password().is_some() {
        // Fails only for URLs that cannot have a userinfo, and those have no password.
        redacted = parsed.set_password(Some("***")).is_ok();
    }
    let secret = |name: &str| {
        let name = name.to_ascii_lowercase();
        SECRET_PARAMETER_WORDS.iter().any(|w| name.contains(w))
    };
    if parsed.query_pairs().any(|(name, _)| secret(&name)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if secret(&name) { "***".into() } else { value };
                (name.into_owned(), value.into_owned())
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
        redacted = true;
    }
    if redacted {
        parsed.to_string()
    } else {
        url.to_owned()
    }
}

impl Default for MetadataConfig {
    fn default() -> Self {
        MetadataConfig {
            url: String::new(),
            max_connections: default_pool_size(),
            acquire_timeout_secs: 5,
            migrate_on_start: true,
        }
    }
}

/// Which blob backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// Files under `storage.path`.
    Fs,
    /// Process memory (lost at exit; for tests and throwaway instances).
    Memory,
    /// An S3-compatible object store (`[storage.s3]`).
    S3,
}

/// `[storage]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `fs`, `s3` or `memory`.
    pub backend: StorageBackend,
    /// Root folder of the `fs` backend; empty means `<data_dir>/blobs`.
    pub path: PathBuf,
    /// The `fs` backend writes blobs through the page cache (the default) rather than
    /// with `O_DIRECT`: the first pull after a push then reads memory, not the disk,
    /// and uploads go at the pace of the kernel's writeback, which on some disks is a
    /// third of what `O_DIRECT` writes reach (docs/benchmarks.md).
    pub cache_writes: bool,
    /// The `s3` backend.
    pub s3: S3Config,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::Fs,
            path: PathBuf::new(),
            cache_writes: true,
            s3: S3Config::default(),
        }
    }
}

/// `[storage.s3]`: an S3-compatible object store. Empty credentials fall back to
/// the usual `AWS_*` environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`, …).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// Bucket name (required with `backend = "s3"`).
    pub bucket: String,
    /// Endpoint URL for on-premise stores (`http://127.0.0.1:9000`); empty for AWS.
    pub endpoint: String,
    /// Region.
    pub region: String,
    /// Access key id; empty: from the environment.
    pub access_key_id: String,
    /// Secret access key; empty: from the environment.
    #[serde(serialize_with = "serialize_secret")]
    pub secret_access_key: secrecy::SecretString,
    /// Address buckets as `endpoint/bucket` (path style, what most on-premise stores
    /// need) rather than `bucket.endpoint`.
    pub path_style: bool,
    /// Allow plain-HTTP endpoints (implied by an `http://` endpoint).
    pub allow_http: bool,
    /// Key prefix inside the bucket, to share a bucket (`registry/`).
    pub prefix: String,
    /// Seconds to establish a connection before failing (fail fast when S3 is down).
    pub connect_timeout_secs: u64,
    /// Seconds one S3 request may take (a part upload or a ranged read).
    pub request_timeout_secs: u64,
    /// Retries of a failed S3 request.
    pub max_retries: usize,
    /// Seconds after which a request is not retried any more.
    pub retry_timeout_secs: u64,
}

fn serialize_secret<S: serde::Serializer>(
    secret: &secrecy::SecretString,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use secrecy::ExposeSecret;
    serializer.serialize_str(secret.expose_secret())
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            endpoint: String::new(),
            region: "us-east-1".into(),
            access_key_id: String::new(),
            secret_access_key: secrecy::SecretString::default(),
            path_style: true,
            allow_http: false,
            prefix: String::new(),
            connect_timeout_secs: 3,
            request_timeout_secs: 300,
            max_retries: 3,
            retry_timeout_secs: 20,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: u64,
    /// Largest blob accepted, in bytes; 0 means no limit.
    pub max_blob_bytes: u64,
    /// Longest repository name accepted (the spec allows up to 255).
    pub max_name_length: usize,
    /// Largest page of tags or repositories returned at once (also the default).
    pub max_page_size: u32,
    /// Most `?tag=` values one manifest push may name (more: 414; the distribution
    /// spec asks registries to take at least 10).
    pub max_tags_per_push: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_manifest_bytes: 4 * 1024 * 1024,
            max_blob_bytes: 0,
            max_name_length: crate::names::MAX_NAME_LEN,
            max_page_size: 10_000,
            max_tags_per_push: 100,
        }
    }
}

/// `[uploads]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadsConfig {
    /// An upload session untouched this long is abandoned: its session and parts
    /// are removed (as are parts no session owns).
    pub expire_after_secs: u64,
    /// How often each replica sweeps for abandoned uploads; 0 disables the sweep.
    pub sweep_interval_secs: u64,
    /// Most upload sessions open at once in the whole registry; a new one beyond it
    /// is answered 429 `TOOMANYREQUESTS` with `Retry-After`. 0: no cap. Sessions
    /// opened at the same moment may pass it by a few.
    pub max_sessions: u64,
    /// Most upload sessions open at once in one repository, answered the same way;
    /// 0: no cap.
    pub max_sessions_per_repository: u64,
}

impl Default for UploadsConfig {
    fn default() -> Self {
        UploadsConfig {
            expire_after_secs: 24 * 3600,
            sweep_interval_secs: 15 * 60,
            max_sessions: 100_000,
            max_sessions_per_repository: 1_000,
        }
    }
}

/// `[packs]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PacksConfig {
    /// Repository prefix of packs: pack `x` is the repository `<prefix>x`. Manifests
    /// pushed there through `/v2` are indexed too.
    pub repository_prefix: String,
    /// Largest pack content `POST /packs` accepts, in bytes (413 beyond); 0: no limit.
    pub max_content_bytes: u64,
    /// Page size of `GET /packs` when the client gives no `limit`.
    pub default_page_size: u32,
    /// Largest `limit` of `GET /packs`.
    pub max_page_size: u32,
}

impl Default for PacksConfig {
    fn default() -> Self {
        PacksConfig {
            repository_prefix: "packs/".into(),
            max_content_bytes: 1024 * 1024 * 1024,
            default_page_size: 100,
            max_page_size: 1000,
        }
    }
}

/// `[bundles]`: bounds on the archives `POST /packs/import` (and `bundle verify`)
/// reads, so that no archive, however built, costs more than they allow.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BundlesConfig {
    /// Largest tar entry (one blob), in bytes (413 beyond, before it is read).
    pub max_entry_bytes: u64,
    /// Largest archive, counted as uncompressed tar bytes (413 beyond).
    pub max_archive_bytes: u64,
    /// Most uncompressed bytes per compressed byte of a `.tar.gz` past its first
    /// 64 MiB (413 beyond): what a gzip bomb exceeds.
    pub max_gzip_ratio: u64,
    /// Most entries in an archive.
    pub max_entries: u64,
}

impl BundlesConfig {
    /// The domain's view of these bounds.
    pub fn limits(&self) -> crate::registry::bundle::BundleLimits {
        crate::registry::bundle::BundleLimits {
            max_entry_bytes: self.max_entry_bytes,
            max_archive_bytes: self.max_archive_bytes,
            max_gzip_ratio: self.max_gzip_ratio,
            max_entries: self.max_entries,
        }
    }
}

impl Default for BundlesConfig {
    fn default() -> Self {
        BundlesConfig {
            max_entry_bytes: 16 * 1024 * 1024 * 1024,
            max_archive_bytes: 64 * 1024 * 1024 * 1024,
            max_gzip_ratio: 100,
            max_entries: 100_000,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `packs_registry=debug,info`
    /// (`RUST_LOG` overrides it).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// `[tags]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TagsConfig {
    /// Repositories whose version tags (semver, `_` standing for `+`) are immutable:
    /// once a version tag points at a manifest, no push moves it (409); deleting it
    /// takes the delete grant. Each entry is a repository name, a prefix ending in
    /// `/`, or `*`. By default the packs prefix, so a released pack version never
    /// changes under a TaskRunner that pinned it; list the prefix you set in
    /// `packs.repository_prefix` if you change it.
    pub immutable: Vec<String>,
}

impl Default for TagsConfig {
    fn default() -> Self {
        TagsConfig {
            immutable: vec!["packs/".into()],
        }
    }
}

/// Where traces go: the OTLP protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (usually port 4317).
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP over HTTP with protobuf bodies (usually port 4318).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// `[telemetry]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The OTLP collector to send traces to, such as `http://collector:4318`. Empty:
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`, and when
    /// neither is set, no traces are exported.
    pub otlp_endpoint: String,
    /// `grpc` or `http/protobuf`; unset: `OTEL_EXPORTER_OTLP_PROTOCOL`, else
    /// `http/protobuf` (the OTLP default).
    pub otlp_protocol: Option<OtlpProtocol>,
    /// The `service.name` resource attribute; empty: `OTEL_SERVICE_NAME`, else
    /// `packs-registry`. Other attributes come from `OTEL_RESOURCE_ATTRIBUTES`.
    pub service_name: String,
    /// Serve `/metrics` on this address of its own instead of the main listener (for a
    /// scraper on an internal network); unset: on the main listener.
    pub metrics_listen: Option<SocketAddr>,
}

/// `auth.mode`: who may do what.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Open: anyone who reaches the port may pull, push and delete.
    #[default]
    None,
    /// Biscuit tokens behind the Docker token flow (`/token`), users and robots with
    /// passwords, tokens presented directly as `Bearer`.
    Token,
}

/// `[auth]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `none` (open) or `token`.
    pub mode: AuthMode,
    /// The `service` named in challenges and expected from `/token` requests.
    pub service: String,
    /// The token endpoint's URL given as `realm` in challenges (`https://host/token`);
    /// empty: derived from the request (`<scheme>://<host>/token`).
    pub realm: String,
    /// The root (signing) key, `ed25519-private/<hex>`; usually set as
    /// `PACKS__AUTH__ROOT_KEY`. Give this or `root_key_file`, not both.
    #[serde(serialize_with = "serialize_secret")]
    pub root_key: secrecy::SecretString,
    /// A file holding the root key (its first line that is not blank or a `#` comment).
    pub root_key_file: PathBuf,
    /// The root key's id, written into every token minted here; rotate by giving a new
    /// key a new id and listing the old public key in `trusted_keys`.
    pub key_id: u32,
    /// Other public keys whose tokens are accepted, by key id: earlier root keys, and
    /// other issuers using the same grant vocabulary.
    pub trusted_keys: Vec<TrustedKeyConfig>,
    /// Lifetime of tokens issued by `/token`, in seconds (at least 60).
    pub token_ttl_secs: u64,
    /// Lifetime of the refresh tokens `POST /token` hands out with
    /// `access_type=offline` (as `docker login` and containerd ask), in seconds.
    pub refresh_token_ttl_secs: u64,
    /// Require the `registry:catalog:*` grant to scrape `/metrics` (it names
    /// repositories and routes); off: `/metrics` is open like `/healthz`.
    pub protect_metrics: bool,
    /// A TOML file of `[[users]]` and `[[robots]]` (same fields as inline), read at start.
    pub users_file: PathBuf,
    /// Users, inline.
    pub users: Vec<AccountConfig>,
    /// Robot accounts (for automation), inline.
    pub robots: Vec<AccountConfig>,
    /// Repository patterns anyone may pull without credentials (`public/`, `packs/x`).
    pub anonymous_pull: Vec<crate::auth::RepoPattern>,
    /// Limits of one token evaluation.
    pub limits: RunLimitsConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::None,
            service: "packs-registry".into(),
            realm: String::new(),
            root_key: secrecy::SecretString::default(),
            root_key_file: PathBuf::new(),
            key_id: 0,
            trusted_keys: Vec::new(),
            token_ttl_secs: 300,
            refresh_token_ttl_secs: 7 * 24 * 3600,
            protect_metrics: false,
            users_file: PathBuf::new(),
            users: Vec::new(),
            robots: Vec::new(),
            anonymous_pull: Vec::new(),
            limits: RunLimitsConfig::default(),
        }
    }
}

impl AuthConfig {
    fn validate(&self) -> Result<(), String> {
        use secrecy::ExposeSecret;
        let has_key = !self.root_key.expose_secret().is_empty();
        let has_file = !self.root_key_file.as_os_str().is_empty();
        if has_key && has_file {
            return Err("give auth.root_key or auth.root_key_file, not both".into());
        }
        if self.mode == AuthMode::Token {
            if !has_key && !has_file {
                return Err(
                    "auth.mode = \"token\" needs a root key: auth.root_key_file or \
                            PACKS__AUTH__ROOT_KEY (make one with `packs-registry token keygen`)"
                        .into(),
                );
            }
            if self.service.is_empty() {
                return Err("auth.service must not be empty".into());
            }
        }
        if has_key {
            crate::auth::token::parse_private_key(self.root_key.expose_secret())
                .map_err(|e| format!("auth.root_key: {e}"))?;
        }
        let realm = &self.realm;
        if !(realm.is_empty() || realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(format!(
                "auth.realm {:?} must be an http:// or https:// URL",
                self.realm
            ));
        }
        let mut ids = std::collections::HashSet::from([self.key_id]);
        for k in &self.trusted_keys {
            if !ids.insert(k.key_id) {
                return Err(format!(
                    "auth.trusted_keys: key id {} is used twice (or is auth.key_id)",
                    k.key_id
                ));
            }
            crate::auth::token::parse_public_key(&k.public_key)
                .map_err(|e| format!("auth.trusted_keys {}: {e}", k.key_id))?;
        }
        if !(60..=7 * 24 * 3600).contains(&self.token_ttl_secs) {
            return Err("auth.token_ttl_secs must be between 60 and 604800".into());
        }
        if !(self.token_ttl_secs..=90 * 24 * 3600).contains(&self.refresh_token_ttl_secs) {
            return Err(
                "auth.refresh_token_ttl_secs must be between auth.token_ttl_secs and 7776000"
                    .into(),
            );
        }
        crate::auth::check_accounts(&self.users, &self.robots).map_err(|e| format!("auth: {e}"))?;
        let l = &self.limits;
        if l.max_facts < 100 || l.max_iterations < 10 || !(1..=10_000).contains(&l.max_time_ms) {
            return Err(
                "auth.limits: max_facts must be at least 100, max_iterations at \
                        least 10, max_time_ms between 1 and 10000"
                    .into(),
            );
        }
        Ok(())
    }
}

/// A public key whose tokens are accepted (`[[auth.trusted_keys]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKeyConfig {
    /// The root key id its tokens carry.
    pub key_id: u32,
    /// The public key, `ed25519/<hex>`.
    pub public_key: String,
    /// Who holds the private key (for people reading the file).
    #[serde(default)]
    pub name: String,
}

/// A user or robot account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// The login name (no `:`; unique across users and robots).
    pub name: String,
    /// The Argon2 PHC hash of its password (`packs-registry user hash`).
    #[serde(serialize_with = "serialize_secret")]
    pub password_hash: secrecy::SecretString,
    /// What it may do: `<repository pattern>:<actions>` or `registry:catalog:*`.
    #[serde(default)]
    pub grants: Vec<crate::auth::Grant>,
}

/// `[auth.limits]`: bounds on evaluating one token's datalog, so that no token can cost
/// more than this. Biscuit's own defaults (1 ms) fail valid tokens on a busy machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunLimitsConfig {
    /// Most facts, the token's and the request's together.
    pub max_facts: u64,
    /// Most rule-application rounds.
    pub max_iterations: u64,
    /// Most wall-clock milliseconds for one evaluation.
    pub max_time_ms: u64,
}

impl Default for RunLimitsConfig {
    fn default() -> Self {
        RunLimitsConfig {
            max_facts: 10_000,
            max_iterations: 100,
            max_time_ms: 50,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be read or does not match the schema.
    #[error("{0}")]
    Load(#[from] Box<figment::Error>),
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads defaults, then `file` (if any), then the `PACKS__` environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(Env::prefixed("PACKS__").split("__"));
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.limits.max_manifest_bytes < 1024 {
            return bad("limits.max_manifest_bytes must be at least 1024".into());
        }
        if !(1..=255).contains(&self.limits.max_name_length) {
            return bad("limits.max_name_length must be between 1 and 255".into());
        }
        if self.server.keep_alive_secs > 3600 {
            return bad("server.keep_alive_secs must be at most 3600".into());
        }
        if self.server.shutdown_timeout_secs > 3600 {
            return bad("server.shutdown_timeout_secs must be at most 3600".into());
        }
        for pattern in &self.tags.immutable {
            let valid = pattern == "*"
                || crate::names::RepoName::parse(pattern.trim_end_matches('/')).is_ok();
            if !valid {
                return bad(format!(
                    "tags.immutable: {pattern:?} must be a repository name, a prefix \
                     ending in '/', or *"
                ));
            }
        }
        if self.limits.max_tags_per_push < 10 {
            return bad("limits.max_tags_per_push must be at least 10".into());
        }
        if self.limits.max_page_size == 0 {
            return bad("limits.max_page_size must be at least 1".into());
        }
        if self.uploads.expire_after_secs < 60 {
            return bad("uploads.expire_after_secs must be at least 60".into());
        }
        let prefix = &self.packs.repository_prefix;
        if !prefix.is_empty()
            && (!prefix.ends_with('/')
                || crate::names::RepoName::parse(&format!("{prefix}x")).is_err())
        {
            return bad(format!(
                "packs.repository_prefix {prefix:?} must be empty or repository name \
                 components ending in '/' (like \"packs/\")"
            ));
        }
        if self.packs.max_page_size == 0
            || !(1..=self.packs.max_page_size).contains(&self.packs.default_page_size)
        {
            return bad("packs.default_page_size must be between 1 and packs.max_page_size".into());
        }
        let b = &self.bundles;
        if b.max_entry_bytes == 0 || b.max_archive_bytes < b.max_entry_bytes {
            return bad(
                "bundles.max_entry_bytes must be at least 1 and at most bundles.max_archive_bytes"
                    .into(),
            );
        }
        if b.max_gzip_ratio == 0 || b.max_entries < 3 {
            return bad(
                "bundles.max_gzip_ratio must be at least 1, bundles.max_entries at least 3".into(),
            );
        }
        if self.metadata.max_connections == 0 {
            return bad("metadata.max_connections must be at least 1".into());
        }
        let url = &self.metadata.url;
        if !url.is_empty()
            && !["sqlite:", "postgres:", "postgresql:"]
                .iter()
                .any(|s| url.starts_with(s))
        {
            return bad(format!(
                "metadata.url must start with sqlite:// or postgres:// (got {})",
                redact_url(url)
            ));
        }
        if self.storage.backend == StorageBackend::S3 && self.storage.s3.bucket.is_empty() {
            return bad("storage.s3.bucket is required when storage.backend = \"s3\"".into());
        }
        self.auth.validate().map_err(ConfigError::Invalid)?;
        if self.gc.enabled && self.gc.interval_secs == 0 {
            return bad("gc.interval_secs must be at least 1 (or gc.enabled = false)".into());
        }
        for (i, rule) in self.retention.iter().enumerate() {
            if let Some(t) = &rule.pack_type
                && !["policy", "analyzer", "task", "bundle"].contains(&t.as_str())
            {
                return bad(format!(
                    "retention[{i}].pack_type {t:?} is not policy, analyzer, task or bundle"
                ));
            }
            if rule.keep_newest.is_none()
                && rule.keep_days.is_none()
                && rule.drop_prereleases_after_days.is_none()
            {
                return bad(format!(
                    "retention[{i}] needs keep_newest, keep_days or drop_prereleases_after_days"
                ));
            }
            for p in &rule.protect {
                if let Err(e) = globset::Glob::new(p) {
                    return bad(format!("retention[{i}].protect {p:?}: {e}"));
                }
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return bad(format!("log.level {:?}: {e}", self.log.level));
        }
        Ok(())
    }

    /// The metadata URL in force.
    pub fn metadata_url(&self) -> String {
        if self.metadata.url.is_empty() {
            format!(
                "sqlite://{}",
                self.server.data_dir.join("metadata.db").display()
            )
        } else {
            self.metadata.url.clone()
        }
    }

    /// The root of the filesystem blob store in force.
    pub fn storage_path(&self) -> PathBuf {
        if self.storage.path.as_os_str().is_empty() {
            self.server.data_dir.join("blobs")
        } else {
            self.storage.path.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
        let c = MetadataConfig {
            url: "postgres://u:secret@h/db".into(),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("secret"));
    }

    /// libpq reads passwords from the query too (`password`, `sslpassword`), and
    /// start-up prints the URL: every password-like parameter is redacted, whatever
    /// its case, and the other parameters are kept.
    #[test]
    fn redacts_password_parameters() {
        assert_eq!(
            redact_url("postgres://u@h/db?password=s3cret&sslmode=require"),
            "postgres://u@h/db?password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("postgresql://h/db?sslmode=verify-full&sslpassword=s3cret"),
            "postgresql://h/db?sslmode=verify-full&sslpassword=***"
        );
        assert_eq!(
            redact_url("postgres://u:pw@h/db?user=a%40b&PassWord=s3cret&auth_token=t0k"),
            "postgres://u:***@h/db?user=a%40b&PassWord=***&auth_token=***"
        );
        // A percent-encoded password, and an '@' in the query: neither leaks.
        let r = redact_url("postgres://u:p%40ss@h/db?application_name=a@b");
        assert_eq!(r, "postgres://u:***@h/db?application_name=a@b");
        // Nothing secret: the URL as it was, byte for byte.
        for plain in [
            "sqlite::memory:",
            "sqlite:///var/lib/packs/metadata.db",
            "sqlite://./data dir/metadata.db?mode=rwc",
            "postgres://u@h:5432/db?sslmode=disable",
        ] {
            assert_eq!(redact_url(plain), plain);
        }
        // Unparsable (sqlx could not use it either): the scheme alone.
        let r = redact_url("postgres://u:s3cret@[::1/db");
        assert_eq!(r, "postgres:<unparsable URL, redacted>");
        assert!(!redact_url("u:s3cret@h").contains("s3cret"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure signature
    fn file_and_environment_layer_over_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "r.toml",
                "[server]\nlisten = \"0.0.0.0:6000\"\n[limits]\nmax_page_size = 50\n",
            )?;
            jail.set_env("PACKS__LIMITS__MAX_PAGE_SIZE", "70");
            jail.set_env("PACKS__STORAGE__BACKEND", "memory");
            let c = Config::load(Some(Path::new("r.toml"))).expect("loads");
            assert_eq!(c.server.listen.port(), 6000);
            assert_eq!(c.limits.max_page_size, 70);
            assert_eq!(c.storage.backend, StorageBackend::Memory);
            assert_eq!(c.limits.max_manifest_bytes, 4 * 1024 * 1024);
            Ok(())
        });
    }

    /// The caps on open upload sessions default to 100,000 and 1,000, and the example
    /// file, which documents every key, loads with them.
    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure signature
    fn upload_session_caps() {
        let d = UploadsConfig::default();
        assert_eq!(
            (d.max_sessions, d.max_sessions_per_repository),
            (100_000, 1_000)
        );
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/registry.toml");
        let c = Config::load(Some(Path::new(example))).expect("the example loads");
        assert_eq!(c.uploads.max_sessions, 100_000);
        assert_eq!(c.uploads.max_sessions_per_repository, 1_000);
        figment::Jail::expect_with(|jail| {
            jail.set_env("PACKS__UPLOADS__MAX_SESSIONS_PER_REPOSITORY", "0");
            let c = Config::load(None).expect("loads");
            assert_eq!(c.uploads.max_sessions_per_repository, 0);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure signature
    fn auth_section_from_file_and_environment() {
        use secrecy::ExposeSecret;
        let (key, public) = crate::auth::generate_key();
        let hash = crate::auth::hash_password("pw").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "a.toml",
                &format!(
                    "[auth]\nmode = \"token\"\nkey_id = 2\nanonymous_pull = [\"public/\"]\n\
                     [[auth.trusted_keys]]\nkey_id = 1\npublic_key = \"{public}\"\n\
                     [[auth.users]]\nname = \"alice\"\npassword_hash = '{hash}'\n\
                     grants = [\"packs/:pull,push\", \"registry:catalog:*\"]\n\
                     [auth.limits]\nmax_time_ms = 80\n"
                ),
            )?;
            jail.set_env("PACKS__AUTH__ROOT_KEY", key.expose_secret());
            let c = Config::load(Some(Path::new("a.toml"))).expect("loads");
            assert_eq!(c.auth.mode, AuthMode::Token);
            assert_eq!(c.auth.root_key.expose_secret(), key.expose_secret());
            assert_eq!(c.auth.users[0].grants.len(), 2);
            assert_eq!(c.auth.limits.max_time_ms, 80);
            assert_eq!(c.auth.limits.max_facts, 10_000);
            let shown = format!("{c:?}");
            assert!(!shown.contains(key.expose_secret()) && !shown.contains(&hash));
            // Without the environment's key, token mode has no key.
            jail.clear_env();
            let e = Config::load(Some(Path::new("a.toml"))).unwrap_err();
            assert!(e.to_string().contains("root key"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn auth_values_are_checked() {
        let (key, public) = crate::auth::generate_key();
        let token = |f: &dyn Fn(&mut AuthConfig)| {
            let mut c = Config::default();
            c.auth.mode = AuthMode::Token;
            c.auth.root_key = key.clone();
            f(&mut c.auth);
            c.validate().map_err(|e| e.to_string())
        };
        token(&|_| ()).unwrap();
        let refused = [
            token(&|a| a.root_key = "ed25519-private/00".to_string().into()),
            token(&|a| a.root_key_file = "/k".into()),
            token(&|a| a.service.clear()),
            token(&|a| a.realm = "registry.example/token".into()),
            token(&|a| a.token_ttl_secs = 30),
            token(&|a| a.limits.max_time_ms = 0),
            token(&|a| {
                a.trusted_keys = vec![TrustedKeyConfig {
                    key_id: 0,
                    public_key: public.clone(),
                    name: String::new(),
                }]
            }),
            token(&|a| {
                a.trusted_keys = vec![TrustedKeyConfig {
                    key_id: 1,
                    public_key: "ed25519/zz".into(),
                    name: String::new(),
                }]
            }),
            token(&|a| {
                a.users = vec![AccountConfig {
                    name: "anonymous".into(),
                    password_hash: crate::auth::hash_password("x").unwrap().into(),
                    grants: vec![],
                }]
            }),
        ];
        for (i, r) in refused.iter().enumerate() {
            assert!(r.is_err(), "case {i} passed");
        }
        // Mode none needs no key, but a key given is still checked.
        let mut open = Config::default();
        open.validate().unwrap();
        open.auth.root_key = "nonsense".to_string().into();
        assert!(open.validate().is_err());
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure signature
    fn bad_grants_are_refused_when_loading() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("g.toml", "[auth]\nanonymous_pull = [\"public*\"]\n")?;
            let e = Config::load(Some(Path::new("g.toml"))).unwrap_err();
            assert!(e.to_string().contains("public*"), "{e}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure signature
    fn rejects_unknown_keys_and_bad_values() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("u.toml", "[server]\nlisen = \"0.0.0.0:6000\"\n")?;
            let e = Config::load(Some(Path::new("u.toml"))).unwrap_err();
            assert!(e.to_string().contains("lisen"), "{e}");
            jail.create_file("b.toml", "[metadata]\nurl = \"mysql://x\"\n")?;
            assert!(Config::load(Some(Path::new("b.toml"))).is_err());
            Ok(())
        });
    }
}
