//! Abandoned uploads are swept: sessions untouched past the expiry lose their row
//! and their stored parts, and parts no session owns are removed too, on every
//! blob backend. Live sessions and finished blobs are left alone.

mod common;

use std::time::Duration;

use common::{Backend, Method, StatusCode, TestApp, sha256};
use packs_registry::config::StorageBackend;

async fn call(app: &TestApp, method: Method, uri: &str, body: Vec<u8>) -> (StatusCode, String) {
    let r = app.req(method, uri).body(body).send().await;
    (
        r.status,
        r.header("location").unwrap_or_default().to_owned(),
    )
}

async fn sweeps_abandoned_sessions(backend: StorageBackend) {
    let app = TestApp::with_backend(match backend {
        StorageBackend::Fs => Backend::Fs,
        _ => Backend::Memory,
    })
    .await;
    let state = app.state().clone();
    // A session with a stored chunk, and a finished blob.
    let (status, location) = call(&app, Method::POST, "/v2/packs/x/blobs/uploads/", vec![]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = call(&app, Method::PATCH, &location, b"partial".to_vec()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let digest = sha256(b"kept");
    let (status, _) = call(
        &app,
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
        call(&app, Method::GET, &location, vec![]).await.0,
        StatusCode::NO_CONTENT
    );

    // An orphan: parts on disk with no session (a replica died mid-push).
    let orphan_dir = app
        .storage_path()
        .join("uploads")
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
        call(&app, Method::GET, &location, vec![]).await.0,
        StatusCode::NOT_FOUND
    );
    assert!(!orphan_dir.exists());
    if backend == StorageBackend::Fs {
        let uploads: Vec<_> = std::fs::read_dir(app.storage_path().join("uploads"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| uuid::Uuid::parse_str(e.file_name().to_str().unwrap()).is_ok())
            .collect();
        assert!(uploads.is_empty(), "parts left: {uploads:?}");
    }
    // The finished blob is untouched.
    let (status, _) = call(
        &app,
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

#[actix_web::test]
async fn sweeps_abandoned_sessions_fs() {
    sweeps_abandoned_sessions(StorageBackend::Fs).await;
}

#[actix_web::test]
async fn sweeps_abandoned_sessions_memory() {
    sweeps_abandoned_sessions(StorageBackend::Memory).await;
}
