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
        StorageBackend::Fs => Arc::new(FsBlobStore::open(config.storage_path())?),
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
    let blobs = open_storage(&config)?;
    let limits = Limits {
        max_manifest_bytes: config.limits.max_manifest_bytes,
        max_blob_bytes: config.limits.max_blob_bytes,
        max_page: config.limits.max_page_size,
        max_tags_per_push: config.limits.max_tags_per_push,
        max_upload_sessions: config.uploads.max_sessions,
        max_upload_sessions_per_repository: config.uploads.max_sessions_per_repository,
        bundles: config.bundles.limits(),
        ..Limits::default()
    };
    Ok(AppState {
        registry: Registry::new(blobs, meta, limits).with_pack_settings(PackSettings {
            prefix: config.packs.repository_prefix.clone(),
            max_content_bytes: config.packs.max_content_bytes,
            default_page: config.packs.default_page_size,
            max_page: config.packs.max_page_size,
        }),
        config: Arc::new(config),
        metrics: Arc::new(Metrics::default()),
    })
}

/// Starts the background sweeps of `serve` (abandoned uploads).
pub fn spawn_background(state: &AppState) {
    let uploads = state.config.uploads.clone();
    if uploads.sweep_interval_secs == 0 {
        return;
    }
    let registry = state.registry.clone();
    tokio::spawn(async move {
        let max_age = std::time::Duration::from_secs(uploads.expire_after_secs);
        let mut tick =
            tokio::time::interval(std::time::Duration::from_secs(uploads.sweep_interval_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
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

/// Serves `state` on `listener` until SIGTERM or SIGINT, then drains: the listener
/// closes, in-flight requests get `server.shutdown_timeout_secs` to finish, and what
/// is still open after that is closed (an upload cut off this way keeps the offset of
/// its last complete chunk, so the client resumes it).
pub async fn serve(listener: std::net::TcpListener, state: AppState) -> std::io::Result<()> {
    let server = state.config.server.clone();
    let workers = server.worker_count();
    let secs = |s: u64| Duration::from_secs(s);
    let keep_alive = match server.keep_alive_secs {
        0 => KeepAlive::Disabled,
        s => KeepAlive::Timeout(secs(s)),
    };
    HttpServer::new(move || http::app(state.clone()))
        .workers(workers)
        .keep_alive(keep_alive)
        // Zero turns actix's timers off, as the configuration documents.
        .client_request_timeout(secs(server.request_head_timeout_secs))
        .client_disconnect_timeout(secs(server.disconnect_timeout_secs))
        .max_connections(server.connection_limit().div_ceil(workers).max(1))
        .tcp_nodelay(true)
        .shutdown_timeout(server.shutdown_timeout_secs)
        .shutdown_signal(shutdown_signal())
        .listen(listener)?
        .run()
        .await
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
