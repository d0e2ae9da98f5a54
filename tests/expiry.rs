//! Abandoned uploads are swept: sessions untouched past the expiry lose their row
//! and their stored parts, and parts no session owns are removed too, on every
//! blob backend. Live sessions and finished blobs are left alone.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use packs_registry::app::{AppState, build_state, router};
use packs_registry::config::{Config, StorageBackend};
use sha2::Digest as _;
use tower::ServiceExt;

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

async fn app(backend: StorageBackend) -> (AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.data_dir = dir.path().to_path_buf();
    config.storage.backend = backend;
    (build_state(config).await.unwrap(), dir)
}

async fn call(state: &AppState, method: Method, uri: &str, body: Vec<u8>) -> (StatusCode, String) {
    let response = router(state.clone())
        .oneshot(
            Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, location)
}

async fn sweeps_abandoned_sessions(backend: StorageBackend) {
    let (state, dir) = app(backend).await;
    // A session with a stored chunk, and a finished blob.
    let (status, location) = call(&state, Method::POST, "/v2/packs/x/blobs/uploads/", vec![]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = call(&state, Method::PATCH, &location, b"partial".to_vec()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let digest = sha256(b"kept");
    let (status, _) = call(
        &state,
        Method::POST,
        &format!("/v2/packs/x/blobs/uploads/?digest={digest}"),
        b"kept".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    // Nothing is old enough yet.
    let report = state
        .registry
        .expire_uploads(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!((report.sessions, report.orphans), (0, 0));
    assert_eq!(
        call(&state, Method::GET, &location, vec![]).await.0,
        StatusCode::NO_CONTENT
    );

    // An orphan: parts on disk with no session (a replica died mid-push).
    let orphan_dir = dir
        .path()
        .join("blobs/uploads")
        .join(uuid::Uuid::new_v4().to_string());
    if backend == StorageBackend::Fs {
        std::fs::create_dir_all(&orphan_dir).unwrap();
        std::fs::write(orphan_dir.join("000000.x"), b"left behind").unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;

    let report = state
        .registry
        .expire_uploads(Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(report.sessions, 1);
    assert_eq!(
        report.orphans,
        usize::from(backend == StorageBackend::Fs),
        "only the filesystem case planted an orphan"
    );
    assert_eq!(
        call(&state, Method::GET, &location, vec![]).await.0,
        StatusCode::NOT_FOUND
    );
    assert!(!orphan_dir.exists());
    if backend == StorageBackend::Fs {
        let uploads: Vec<_> = std::fs::read_dir(dir.path().join("blobs/uploads"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| uuid::Uuid::parse_str(e.file_name().to_str().unwrap()).is_ok())
            .collect();
        assert!(uploads.is_empty(), "parts left: {uploads:?}");
    }
    // The finished blob is untouched.
    let (status, _) = call(
        &state,
        Method::HEAD,
        &format!("/v2/packs/x/blobs/{digest}"),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // A second sweep finds nothing.
    let report = state
        .registry
        .expire_uploads(Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!((report.sessions, report.orphans), (0, 0));
}

#[tokio::test]
async fn sweeps_abandoned_sessions_fs() {
    sweeps_abandoned_sessions(StorageBackend::Fs).await;
}

#[tokio::test]
async fn sweeps_abandoned_sessions_memory() {
    sweeps_abandoned_sessions(StorageBackend::Memory).await;
}
