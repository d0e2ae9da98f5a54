//! The composition root: picks the backends once from configuration, builds the
//! domain service and the application state, configures the HTTP server, starts the
//! background tasks, and serves until a shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpServer;
use actix_web::http::KeepAlive;

use crate::config::{Config, StorageBackend};
use crate::http::{self, AppState, Metrics};
use crate::metadata::{self, DynMetadataStore, PoolOptions};
use crate::registry::gc::{GcOptions, GcReport, Unobserved};
use crate::registry::retention::RetentionRule;
use crate::registry::{Limits, PackSettings, Registry};
use crate::storage::{DynBlobStore, FsBlobStore, ObjectBlobStore};

/// Errors while starting up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The metadata database could not be opened or migrated.
    #[error("metadata: {0}")]
    Metadata(#[from] metadata::MetadataError),
    /// The blob store could not be opened.
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    /// The `[auth]` section cannot be put to use (key or users file).
    #[error("{0}")]
    Auth(#[from] crate::auth::SetupError),
    /// Anything else (listening socket, data folder).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Opens the metadata backend named by the configuration.
pub async fn open_metadata(config: &Config) -> Result<DynMetadataStore, StartError> {
    let url = config.metadata_url();
    if let Some(path) = url.strip_prefix("sqlite://")
        && let Some(parent) = std::path::Path::new(path.split('?').next().unwrap_or(path)).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    let options = PoolOptions {
        max_connections: config.metadata.max_connections,
        acquire_timeout: std::time::Duration::from_secs(config.metadata.acquire_timeout_secs),
    };
    Ok(metadata::connect(&url, &options).await?)
}

/// Opens the blob backend named by the configuration.
pub fn open_storage(config: &Config) -> Result<DynBlobStore, StartError> {
    Ok(match config.storage.backend {
        StorageBackend::Fs => Arc::new(
            FsBlobStore::open(config.storage_path())?
                .with_cached_writes(config.storage.cache_writes),
        ),
        StorageBackend::Memory => Arc::new(ObjectBlobStore::in_memory()),
        StorageBackend::S3 => Arc::new(ObjectBlobStore::s3(&config.storage.s3)?),
    })
}

/// Builds the application state from configuration, migrating when configured.
pub async fn build_state(config: Config) -> Result<AppState, StartError> {
    let meta = open_metadata(&config).await?;
    if config.metadata.migrate_on_start {
        meta.migrate().await?;
    }
    let metrics = Arc::new(Metrics::default());
    let blobs: DynBlobStore = Arc::new(crate::storage::ObservedBlobStore::new(
        open_storage(&config)?,
        metrics.clone(),
    ));
    let limits = Limits {
        max_manifest_bytes: config.limits.max_manifest_bytes,
        max_blob_bytes: config.limits.max_blob_bytes,
        max_page: config.limits.max_page_size,
        max_tags_per_push: config.limits.max_tags_per_push,
        immutable_tags: config.tags.immutable.clone(),
        max_upload_sessions: config.uploads.max_sessions,
        max_upload_sessions_per_repository: config.uploads.max_sessions_per_repository,
        bundles: config.bundles.limits(),
        ..Limits::default()
    };
    let auth = crate::auth::Authorizer::from_config(&config.auth)?;
    Ok(AppState {
        auth,
        registry: Registry::new(blobs, meta, limits).with_pack_settings(PackSettings {
            prefix: config.packs.repository_prefix.clone(),
            max_content_bytes: config.packs.max_content_bytes,
            default_page: config.packs.default_page_size,
            max_page: config.packs.max_page_size,
        }),
        config: Arc::new(config),
        metrics,
    })
}

/// The collector's options in `config` (retention rules compiled).
pub fn gc_options(config: &Config) -> Result<GcOptions, String> {
    let retention = config
        .retention
        .iter()
        .map(|r| {
            RetentionRule {
                pack_type: r.pack_type.clone(),
                repository_prefix: r.repository_prefix.clone(),
                keep_newest: r.keep_newest,
                keep_days: r.keep_days,
                protect: Vec::new(),
                drop_prereleases_after_days: r.drop_prereleases_after_days,
            }
            .protecting(&r.protect)
        })
        .collect::<Result<_, _>>()?;
    Ok(GcOptions {
        grace: Duration::from_secs(config.gc.grace_secs),
        dry_run: false,
        keep_orphaned_referrers: config.gc.keep_orphaned_referrers,
        sweep_storage: config.gc.sweep_storage,
        retention,
        usage_top: config.gc.metrics_repositories,
    })
}

/// Logs what a collection did.
pub fn log_gc(report: &GcReport) {
    let c = report.counts();
    tracing::info!(
        dry_run = report.dry_run,
        tags = c.tags,
        manifests = c.manifests,
        links = c.links,
        blobs = c.blobs,
        stray = c.stray,
        reclaimed_bytes = report.reclaimed_bytes,
        manifest_bytes = report.manifest_bytes,
        "garbage collection finished"
    );
}

/// Starts the background work of `serve` and `worker`: the sweep of abandoned
/// uploads, and (`gc.enabled`) garbage collection with retention.
pub fn spawn_background(state: &AppState) {
    if state.config.gc.enabled {
        spawn_collector(state);
    }
    let uploads = state.config.uploads.clone();
    if uploads.sweep_interval_secs == 0 {
        return;
    }
    let registry = state.registry.clone();
    let every = Duration::from_secs(uploads.sweep_interval_secs);
    let max_age = Duration::from_secs(uploads.expire_after_secs);
    supervise("upload expiry", Duration::ZERO, every, move || {
        let registry = registry.clone();
        async move {
            match registry.expire_uploads(max_age).await {
                Ok(r) if r.sessions + r.orphans > 0 => {
                    tracing::info!(
                        sessions = r.sessions,
                        orphans = r.orphans,
                        "expired abandoned uploads"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "upload expiry sweep failed; retrying next interval")
                }
            }
        }
    });
}

/// Runs `round` every `every`, for as long as the process lives. A round that panics
/// is logged and the task goes on with the next round: one bad round (a bug reached
/// by some stored data) must not stop a sweep for good.
/// The first round runs after `first`.
pub fn supervise<F, Fut>(name: &'static str, first: Duration, every: Duration, mut round: F)
where
    F: FnMut() -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    use futures_util::FutureExt;
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(panic) = std::panic::AssertUnwindSafe(round()).catch_unwind().await {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                tracing::error!(task = name, panic = %what, "background task panicked; it runs again next interval");
            }
        }
    });
}

/// Collects garbage every `gc.interval_secs` (the first time one interval after
/// start), unless another process holds the collector lock.
fn spawn_collector(state: &AppState) {
    let options = match gc_options(&state.config) {
        Ok(options) => options,
        Err(e) => {
            tracing::error!(error = %e, "garbage collection is off: its configuration is invalid");
            return;
        }
    };
    let registry = state.registry.clone();
    let every = Duration::from_secs(state.config.gc.interval_secs);
    supervise("garbage collection", every, every, move || {
        let (registry, options) = (registry.clone(), options.clone());
        async move {
            match registry.collect_garbage(&options, &Unobserved, false).await {
                Ok(Some(report)) => log_gc(&report),
                Ok(None) => tracing::debug!("another process is collecting garbage"),
                Err(e) => {
                    tracing::warn!(error = %e, "garbage collection failed; retrying next interval")
                }
            }
        }
    });
}

/// Runs the background work alone (`packs-registry worker`) until SIGTERM or SIGINT.
pub async fn work(state: AppState) {
    spawn_background(&state);
    shutdown_signal().await;
}

/// Serves `state` on `listener` until SIGTERM or SIGINT, then drains: the listener
/// closes, in-flight requests get `server.shutdown_timeout_secs` to finish, and what
/// is still open after that is closed (an upload cut off this way keeps the offset of
/// its last complete chunk, so the client resumes it).
pub async fn serve(listener: std::net::TcpListener, state: AppState) -> std::io::Result<()> {
    let server = state.config.server.clone();
    let workers = server.worker_count();
    crate::memory::spawn_trimmer();
    let secs = |s: u64| Duration::from_secs(s);
    let keep_alive = match server.keep_alive_secs {
        0 => KeepAlive::Disabled,
        s => KeepAlive::Timeout(secs(s)),
    };
    let tls = match &server.tls {
        Some(tls) => {
            let (config, cert) = http::tls::server_config(tls).map_err(std::io::Error::other)?;
            http::tls::spawn_reloader(cert, secs(tls.reload_interval_secs));
            Some(config)
        }
        None => None,
    };
    // `/metrics` on a listener of its own, stopped with the main one.
    let metrics = match state.config.telemetry.metrics_listen {
        Some(addr) => {
            let state = state.clone();
            let server = HttpServer::new(move || http::metrics_app(state.clone()))
                .workers(1)
                .disable_signals()
                .bind(addr)
                .map_err(|e| std::io::Error::new(e.kind(), format!("metrics on {addr}: {e}")))?
                .run();
            let handle = server.handle();
            actix_web::rt::spawn(server);
            Some(handle)
        }
        None => None,
    };
    let http = HttpServer::new(move || http::app(state.clone()))
        .workers(workers)
        .keep_alive(keep_alive)
        // Zero turns actix's timers off, as the configuration documents.
        .client_request_timeout(secs(server.request_head_timeout_secs))
        .client_disconnect_timeout(secs(server.disconnect_timeout_secs))
        .max_connections(server.connection_limit().div_ceil(workers).max(1))
        .tcp_nodelay(true)
        .shutdown_timeout(server.shutdown_timeout_secs)
        .shutdown_signal(shutdown_signal());
    let served = match tls {
        Some(config) => http.listen_rustls_0_23(listener, config)?.run().await,
        None => http.listen(listener)?.run().await,
    };
    if let Some(metrics) = metrics {
        metrics.stop(true).await;
    }
    served
}

/// Whether the listen address and the auth mode make a safe pair: token mode sends
/// passwords and tokens, so it needs TLS, a TLS proxy in front, or loopback only.
/// `Ok(Some(warning))` for an open registry reachable from elsewhere.
pub fn check_exposure(config: &Config) -> Result<Option<String>, String> {
    let loopback = config.server.listen.ip().is_loopback();
    let secure = config.server.tls.is_some() || config.server.behind_tls_proxy;
    match config.auth.mode {
        crate::auth::AuthMode::Token if !loopback && !secure => Err(format!(
            "auth.mode = \"token\" would send passwords and tokens in clear on {}: \
             configure [server.tls], or set server.behind_tls_proxy = true when a \
             TLS-terminating proxy is in front",
            config.server.listen
        )),
        crate::auth::AuthMode::None if !loopback => Ok(Some(format!(
            "auth.mode = \"none\" on {}: ANYONE WHO CAN REACH THIS ADDRESS CAN PUSH AND \
             DELETE. Turn authentication on (auth.mode = \"token\") before exposing it.",
            config.server.listen
        ))),
        _ => Ok(None),
    }
}

/// SIGTERM (what Kubernetes and systemd send) or SIGINT (Ctrl-C): both drain.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A round that panics does not end the task: the next round runs.
    #[actix_web::test]
    async fn a_supervised_task_outlives_a_panicking_round() {
        let rounds = std::rc::Rc::new(std::cell::Cell::new(0u32));
        let counted = rounds.clone();
        supervise(
            "test",
            Duration::ZERO,
            Duration::from_millis(5),
            move || {
                let counted = counted.clone();
                async move {
                    counted.set(counted.get() + 1);
                    if counted.get() == 1 {
                        panic!("the first round fails");
                    }
                }
            },
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while rounds.get() < 3 {
            assert!(std::time::Instant::now() < deadline, "the task stopped");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn token_mode_needs_tls_beyond_loopback_and_an_open_registry_is_warned_about() {
        let mut c = Config::default();
        assert_eq!(check_exposure(&c), Ok(None), "open on loopback: fine");
        c.server.listen = "0.0.0.0:5000".parse().unwrap();
        let warning = check_exposure(&c).unwrap().expect("a warning");
        assert!(warning.contains("ANYONE"), "{warning}");
        c.auth.mode = crate::auth::AuthMode::Token;
        let refused = check_exposure(&c).unwrap_err();
        assert!(refused.contains("in clear"), "{refused}");
        c.server.behind_tls_proxy = true;
        assert_eq!(check_exposure(&c), Ok(None));
        c.server.behind_tls_proxy = false;
        c.server.tls = Some(crate::config::TlsConfig {
            cert: "c.pem".into(),
            key: "k.pem".into(),
            reload_interval_secs: 10,
        });
        assert_eq!(check_exposure(&c), Ok(None));
        c.server.tls = None;
        c.server.listen = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(check_exposure(&c), Ok(None), "token mode on loopback");
    }
}
