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

    // An orphan: parts stored for an upload whose session row is gone (a replica
    // died between removing the row and the parts). Made on every backend the same
    // way: a second session gets a chunk, then its row is deleted behind the
    // registry's back.
    let (_, orphan) = call(&app, Method::POST, "/v2/packs/x/blobs/uploads/", vec![]).await;
    let (status, _) = call(&app, Method::PATCH, &orphan, b"left behind".to_vec()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let orphan_id = orphan.rsplit('/').next().unwrap().to_owned();
    let mut db = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        app.data_dir().join("metadata.db").display()
    ))
    .await
    .unwrap();
    let removed = sqlx::query("DELETE FROM uploads WHERE id = ?")
        .bind(&orphan_id)
        .execute(&mut db)
        .await
        .unwrap();
    assert_eq!(removed.rows_affected(), 1);
    let orphan_dir = app.storage_path().join("uploads").join(&orphan_id);
    assert_eq!(
        orphan_dir.exists(),
        backend == StorageBackend::Fs,
        "the parts are stored"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;

    let report = state
        .registry
        .expire_uploads(Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(report.sessions, 1);
    assert_eq!(report.orphans, 1, "the orphaned parts were swept");
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
