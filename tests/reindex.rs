//! `reindex`: the database is lost, the blob store kept; the metadata rebuilt from
//! the store's recovery journal lists the same repositories, tags, manifests (byte
//! for byte), referrers and packs as before. On the filesystem (SQLite) and on S3
//! (PostgreSQL).

mod common;

use common::{Backend, Method, OCI_INDEX, OCI_MANIFEST, StatusCode, TestApp, index_manifest};
use serde_json::{Value, json};

/// Everything the APIs list, read through `app`.
async fn listings(app: &TestApp) -> Value {
    let catalog = app.get("/v2/_catalog").await.json();
    let mut out = serde_json::Map::new();
    out.insert("catalog".into(), catalog.clone());
    for repo in catalog["repositories"].as_array().unwrap() {
        let repo = repo.as_str().unwrap();
        let tags = app.get(format!("/v2/{repo}/tags/list")).await.json();
        let mut manifests = serde_json::Map::new();
        for tag in tags["tags"].as_array().into_iter().flatten() {
            let tag = tag.as_str().unwrap();
            let r = app.get(format!("/v2/{repo}/manifests/{tag}")).await;
            let digest = r.header("docker-content-digest").unwrap().to_owned();
            let referrers = app
                .get(format!("/v2/{repo}/referrers/{digest}"))
                .await
                .json();
            manifests.insert(
                tag.to_owned(),
                json!({ "digest": digest, "body": r.text(), "referrers": referrers }),
            );
        }
        out.insert(
            repo.to_owned(),
            json!({ "tags": tags, "manifests": manifests }),
        );
    }
    let mut packs = app.get("/packs").await.json();
    // When the summary last changed: at the reindex, for a rebuilt one.
    for p in packs["packs"].as_array_mut().into_iter().flatten() {
        p.as_object_mut().unwrap().remove("updatedAt");
    }
    for p in packs["packs"].as_array().into_iter().flatten() {
        let id = p["packId"].as_str().unwrap();
        out.insert(
            format!("pack {id}"),
            app.get(format!("/packs/{id}/versions")).await.json(),
        );
    }
    out.insert("packs".into(), packs);
    Value::Object(out)
}

async fn publish(app: &TestApp, id: &str, version: &str) {
    let manifest = json!({
        "packId": id, "version": version, "type": "policy", "name": id,
        "description": "d", "author": "a",
    });
    let boundary = "XrX";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"manifest\"\r\n\
         Content-Type: application/json\r\n\r\n{manifest}\r\n--{boundary}\r\n\
         Content-Disposition: form-data; name=\"content\"; filename=\"c.tgz\"\r\n\
         Content-Type: application/gzip\r\n\r\ncontent {id} {version}"
    )
    .into_bytes();
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = app
        .req(Method::POST, "/packs")
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

async fn rebuilds_the_metadata_from_the_store(backend: Backend) {
    if backend == Backend::Memory {
        return; // the store goes with the process
    }
    let app = TestApp::with_backend(backend).await;
    let (image, _) = app.push_image("team/app", "v1", b"layer one").await;
    app.push_image("team/app", "v2", b"layer two").await;
    app.push_image("team/app", "moved", b"layer three").await;
    // A tag moved away, a tag deleted, a manifest deleted with its tags.
    app.push_image("team/app", "moved", b"layer four").await;
    app.push_image("team/app", "gone", b"layer five").await;
    assert_eq!(
        app.delete("/v2/team/app/manifests/gone").await.status,
        StatusCode::ACCEPTED
    );
    let (dropped, _) = app.push_image("team/app", "dropped", b"layer six").await;
    let r = app
        .delete(format!("/v2/team/app/manifests/{dropped}"))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let len = app
        .get(format!("/v2/team/app/manifests/{image}"))
        .await
        .body
        .len();
    app.push_referrer(
        "team/app",
        &image,
        len,
        "application/x-sig",
        json!({"k": "v"}),
    )
    .await;
    let index = index_manifest(OCI_INDEX, &[(OCI_MANIFEST, &image, len)]);
    app.push_manifest("team/app", "multi", OCI_INDEX, &index)
        .await;
    app.push_image("other/repo", "latest", b"layer one").await;
    publish(&app, "baseline", "1.0.0").await;
    publish(&app, "baseline", "1.1.0").await;
    publish(&app, "extra", "0.1.0").await;
    assert!(app.delete("/packs/extra/0.1.0").await.status.is_success());
    let before = listings(&app).await;

    // A fresh database beside the same blob store.
    let old = app.state().config.clone();
    let rebuilt = TestApp::build(backend, |c| {
        c.storage.path = old.storage_path();
        c.storage.s3.bucket = old.storage.s3.bucket.clone();
    })
    .await;
    assert_eq!(
        rebuilt.get("/v2/_catalog").await.json()["repositories"],
        json!([])
    );
    let report = rebuilt.state().registry.reindex().await.unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(listings(&rebuilt).await, before);
    let (status, bytes) = {
        let r = rebuilt
            .get(format!(
                "/v2/team/app/blobs/{}",
                common::sha256(b"layer one")
            ))
            .await;
        (r.status, r.body.to_vec())
    };
    assert_eq!((status, bytes), (StatusCode::OK, b"layer one".to_vec()));
    // Again: nothing changes.
    rebuilt.state().registry.reindex().await.unwrap();
    assert_eq!(listings(&rebuilt).await, before);
}

on_both_backends!(rebuilds_the_metadata_from_the_store);
