//! Stateless replicas: two `packs-registry serve` processes on two loopback ports
//! sharing one PostgreSQL database and one S3 bucket, as production runs them
//! behind a load balancer.
//!
//! Needs `PACKS_TEST_POSTGRES_URL` (a database to connect to; each test creates and
//! drops its own database next to it) and `PACKS_TEST_S3_ENDPOINT` (an S3-compatible
//! server accepting any credentials, such as `moto_server`; each test creates its
//! own bucket). Skipped, with a note, when either is unset. `.ci/run` sets both.

mod prod;

use futures_util::future::join_all;
use prod::{Cluster, sha256};
use reqwest::StatusCode;

fn blob(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[actix_web::test]
#[cfg_attr(
    not(all(packs_test_postgres, packs_test_s3)),
    ignore = "needs PostgreSQL and S3: set PACKS_TEST_POSTGRES_URL and PACKS_TEST_S3_ENDPOINT"
)]
async fn chunked_upload_hops_between_replicas() {
    let cluster = Cluster::start(2).await;
    let (a, b) = (&cluster.replicas[0], &cluster.replicas[1]);
    let http = reqwest::Client::new();
    let data = blob(1, 3 * 1024 * 1024 + 17);
    let digest = sha256(&data);
    let chunks: Vec<&[u8]> = data.chunks(1024 * 1024 + 3).collect();

    // Start on A; every response's Location is relative, so each request may go to
    // any replica, as a load balancer would send it.
    let r = http
        .post(a.url("/v2/packs/team/hop/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut location = r.headers()["location"].to_str().unwrap().to_owned();
    let mut offset = 0usize;
    for (i, chunk) in chunks.iter().enumerate() {
        let replica = if i % 2 == 0 { b } else { a };
        let r = http
            .patch(replica.url(&location))
            .header("content-type", "application/octet-stream")
            .header(
                "content-range",
                format!("{}-{}", offset, offset + chunk.len() - 1),
            )
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "chunk {i}");
        offset += chunk.len();
        assert_eq!(r.headers()["range"], format!("0-{}", offset - 1).as_str());
        location = r.headers()["location"].to_str().unwrap().to_owned();
    }
    // Status from the other replica agrees.
    let r = http.get(a.url(&location)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        r.headers()["range"],
        format!("0-{}", data.len() - 1).as_str()
    );
    // Finish on A.
    let r = http
        .put(a.url(&format!("{location}?digest={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    for replica in [a, b] {
        let got = http
            .get(replica.url(&format!("/v2/packs/team/hop/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), StatusCode::OK);
        assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
    }
}

#[actix_web::test]
#[cfg_attr(
    not(all(packs_test_postgres, packs_test_s3)),
    ignore = "needs PostgreSQL and S3: set PACKS_TEST_POSTGRES_URL and PACKS_TEST_S3_ENDPOINT"
)]
async fn same_blob_pushed_to_both_at_once() {
    let cluster = Cluster::start(2).await;
    let http = reqwest::Client::new();
    let data = blob(2, 6 * 1024 * 1024);
    let digest = sha256(&data);
    let pushes = (0..6).map(|i| {
        let replica = &cluster.replicas[i % 2];
        http.post(replica.url(&format!("/v2/packs/race/blobs/uploads/?digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(data.clone())
            .send()
    });
    for r in join_all(pushes).await {
        assert_eq!(r.unwrap().status(), StatusCode::CREATED);
    }
    for replica in &cluster.replicas {
        let got = http
            .get(replica.url(&format!("/v2/packs/race/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            got.headers()["content-length"],
            data.len().to_string().as_str()
        );
        assert_eq!(sha256(&got.bytes().await.unwrap()), digest);
    }
}

#[actix_web::test]
#[cfg_attr(
    not(all(packs_test_postgres, packs_test_s3)),
    ignore = "needs PostgreSQL and S3: set PACKS_TEST_POSTGRES_URL and PACKS_TEST_S3_ENDPOINT"
)]
async fn same_tag_moved_from_both_at_once() {
    let cluster = Cluster::start(2).await;
    let http = reqwest::Client::new();
    let a = &cluster.replicas[0];
    let config = b"{}".to_vec();
    let config_digest = a.push_blob(&http, "packs/tagrace", &config).await;
    let mut manifests = Vec::new();
    for i in 0..4 {
        let layer = blob(10 + i, 1000 + i as usize);
        let layer_digest = a.push_blob(&http, "packs/tagrace", &layer).await;
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{config_digest}","size":2}},"layers":[{{"mediaType":"application/octet-stream","digest":"{layer_digest}","size":{}}}]}}"#,
            layer.len()
        );
        manifests.push(m);
    }
    for round in 0..5 {
        let puts = manifests.iter().enumerate().map(|(i, m)| {
            let replica = &cluster.replicas[(i + round) % 2];
            http.put(replica.url("/v2/packs/tagrace/manifests/latest"))
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body(m.clone())
                .send()
        });
        for r in join_all(puts).await {
            assert_eq!(r.unwrap().status(), StatusCode::CREATED);
        }
        // Whatever won, both replicas agree and the tag names a whole manifest.
        let mut seen = Vec::new();
        for replica in &cluster.replicas {
            let r = http
                .get(replica.url("/v2/packs/tagrace/manifests/latest"))
                .header("accept", "application/vnd.oci.image.manifest.v1+json")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let header = r.headers()["docker-content-digest"]
                .to_str()
                .unwrap()
                .to_owned();
            let body = r.bytes().await.unwrap();
            assert_eq!(sha256(&body), header);
            assert!(manifests.iter().any(|m| m.as_bytes() == body.as_ref()));
            seen.push(header);
        }
        assert_eq!(seen[0], seen[1]);
    }
    let tags: serde_json::Value = http
        .get(cluster.replicas[1].url("/v2/packs/tagrace/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["latest"]));
}

#[actix_web::test]
#[cfg_attr(
    not(all(packs_test_postgres, packs_test_s3)),
    ignore = "needs PostgreSQL and S3: set PACKS_TEST_POSTGRES_URL and PACKS_TEST_S3_ENDPOINT"
)]
async fn pull_from_b_what_was_pushed_to_a() {
    let cluster = Cluster::start(2).await;
    let (a, b) = (&cluster.replicas[0], &cluster.replicas[1]);
    let http = reqwest::Client::new();
    let content = blob(3, 2 * 1024 * 1024 + 5);
    let config = br#"{"packId":"policy-x","version":"1.0.0","type":"policy"}"#.to_vec();
    let content_digest = a.push_blob(&http, "packs/policy-x", &content).await;
    let config_digest = a.push_blob(&http, "packs/policy-x", &config).await;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.stellaops.pack.policy.v1","config":{{"mediaType":"application/vnd.stellaops.pack.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.stellaops.pack.content.v1.tar+gzip","digest":"{content_digest}","size":{}}}]}}"#,
        config.len(),
        content.len()
    );
    let r = http
        .put(a.url("/v2/packs/policy-x/manifests/1.0.0"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let r = http
        .get(b.url("/v2/packs/policy-x/manifests/1.0.0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), manifest.as_bytes());
    for (digest, bytes) in [(&content_digest, &content), (&config_digest, &config)] {
        let r = http
            .get(b.url(&format!("/v2/packs/policy-x/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());
    }
    let r = http
        .get(b.url(&format!("/v2/packs/policy-x/blobs/{content_digest}")))
        .header("range", "bytes=1048576-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &content[1048576..]);
    let catalog: serde_json::Value = http
        .get(b.url("/v2/_catalog"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["packs/policy-x"])
    );
}

#[actix_web::test]
#[cfg_attr(
    not(all(packs_test_postgres, packs_test_s3)),
    ignore = "needs PostgreSQL and S3: set PACKS_TEST_POSTGRES_URL and PACKS_TEST_S3_ENDPOINT"
)]
async fn replicas_started_together_migrate_once() {
    // Four replicas race to migrate one fresh database at start-up.
    let cluster = Cluster::start(4).await;
    let http = reqwest::Client::new();
    for replica in &cluster.replicas {
        let r = http.get(replica.url("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
}
