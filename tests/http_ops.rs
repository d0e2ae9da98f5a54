//! Operations endpoints: liveness, readiness (with a dependency really failing),
//! and the Prometheus metrics the middleware feeds.

mod common;

use common::{Backend, Method, StatusCode, TestApp, sha256};
use insta::{allow_duplicates, assert_json_snapshot};

crate::on_both_backends!(ready_when_both_dependencies_are);

#[actix_web::test]
async fn healthz() {
    let app = TestApp::new().await;
    let r = app.get("/healthz").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_json_snapshot!(r.json(), @r#"
        {
          "status": "ok"
        }
    "#);
}

async fn ready_when_both_dependencies_are(backend: Backend) {
    let app = TestApp::with_backend(backend).await;
    let r = app.get("/readyz").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/json"));
    allow_duplicates! {
        assert_json_snapshot!(r.json(), @r#"
            {
              "checks": {
                "database": {
                  "status": "ok"
                },
                "storage": {
                  "status": "ok"
                }
              },
              "status": "ready"
            }
        "#);
    }
}

/// The answer names no path, host or user: only each dependency and its state (the
/// reason goes to the log).
fn no_detail(body: serde_json::Value, secret: &str) -> serde_json::Value {
    assert!(!body.to_string().contains(secret), "{body}");
    body
}

#[actix_web::test]
async fn not_ready_when_the_blob_folder_is_removed() {
    let app = TestApp::new().await;
    let blobs = app.storage_path();
    std::fs::remove_dir_all(&blobs).unwrap();

    let r = app.get("/readyz").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = no_detail(r.json(), &blobs.display().to_string());
    assert_json_snapshot!(body, @r#"
        {
          "checks": {
            "database": {
              "status": "ok"
            },
            "storage": {
              "status": "unavailable"
            }
          },
          "status": "unavailable"
        }
    "#);

    // Back once the folder is.
    std::fs::create_dir_all(blobs.join("uploads")).unwrap();
    assert_eq!(app.get("/readyz").await.status, StatusCode::OK);
}

/// As root, permission bits do not stop writes; a file where the uploads folder
/// should be does.
#[actix_web::test]
async fn not_ready_when_the_blob_folder_is_unwritable() {
    let app = TestApp::new().await;
    let uploads = app.storage_path().join("uploads");
    std::fs::remove_dir_all(&uploads).unwrap();
    std::fs::write(&uploads, b"not a folder").unwrap();

    let r = app.get("/readyz").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = no_detail(r.json(), "Not a directory");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["storage"]["status"], "unavailable");
    assert_eq!(
        body["checks"]["database"],
        serde_json::json!({ "status": "ok" })
    );
    // Liveness is not readiness.
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
}

#[actix_web::test]
async fn metrics_count_requests_and_bytes() {
    let app = TestApp::new().await;
    let blob = b"twelve bytes".to_vec();
    assert_eq!(app.get("/v2/").await.status, StatusCode::OK);
    app.push_blob("r", &blob).await;
    let r = app.get(format!("/v2/r/blobs/{}", sha256(&blob))).await;
    assert_eq!(r.status, StatusCode::OK);
    let missing = sha256(b"missing");
    for _ in 0..2 {
        assert_eq!(
            app.get(format!("/v2/r/blobs/{missing}")).await.status,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(
        app.req(Method::GET, "/nowhere").send().await.status,
        StatusCode::NOT_FOUND
    );
    // A method nobody serves is counted, under `other`: clients cannot grow the
    // label set.
    let purge = Method::from_bytes(b"PURGE").unwrap();
    assert_eq!(
        app.req(purge, format!("/v2/r/blobs/{missing}"))
            .send()
            .await
            .status,
        StatusCode::METHOD_NOT_ALLOWED
    );

    let r = app.get("/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        r.header("content-type")
    );
    let text = r.text();
    for line in [
        "# TYPE packs_registry_http_requests counter",
        r#"packs_registry_http_requests_total{route="v2_base",method="GET",status="200"} 1"#,
        r#"packs_registry_http_requests_total{route="v2_upload_start",method="POST",status="201"} 1"#,
        r#"packs_registry_http_requests_total{route="v2_blob",method="GET",status="200"} 1"#,
        r#"packs_registry_http_requests_total{route="v2_blob",method="GET",status="404"} 2"#,
        r#"packs_registry_http_requests_total{route="v2_blob",method="other",status="405"} 1"#,
        r#"packs_registry_http_requests_total{route="healthz",method="GET",status="200"} 1"#,
        r#"packs_registry_http_requests_total{route="unmatched",method="GET",status="404"} 1"#,
        "# TYPE packs_registry_http_request_duration_seconds histogram",
        "# EOF",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let counter = |name: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    // In: the pushed blob. Out: at least the blob read back and the error bodies.
    assert_eq!(
        counter("packs_registry_http_request_body_bytes_total"),
        blob.len() as u64
    );
    assert!(counter("packs_registry_http_response_body_bytes_total") >= blob.len() as u64 + 2);
    assert!(text.contains(
        r#"packs_registry_http_request_duration_seconds_count{route="v2_blob",method="GET"} 3"#
    ));

    // The scrape itself is counted by the next one.
    let text = app.get("/metrics").await.text();
    assert!(
        text.contains(
            r#"packs_registry_http_requests_total{route="metrics",method="GET",status="200"} 1"#
        ),
        "{text}"
    );
}
