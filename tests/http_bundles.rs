//! Offline bundles over HTTP: `GET /packs/export` from one registry, `POST
//! /packs/import` into another, in process, on every backend; determinism; and every
//! refusal, each leaving the registry as it was.

mod common;

use std::io::Write;

use common::{Backend, Method, OCI_MANIFEST, StatusCode, TestApp, TestResponse, sha256};
use serde_json::{Value, json};

const BOUNDARY: &str = "bundle-test-boundary-41c9";

async fn publish(app: &TestApp, manifest: Value, content: &[u8]) -> Value {
    let m = serde_json::to_vec(&manifest).unwrap();
    let mut body = Vec::new();
    for (name, bytes) in [("manifest", &m[..]), ("content", content)] {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; \
                 filename=\"{name}\"\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    let r = app
        .req(Method::POST, "/packs")
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "publish: {}", r.text());
    r.json()
}

fn content(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(131).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

/// A registry holding `base-lib` 1.0.0 and 1.2.0, `policy-baseline` 2.1.0 (needs
/// `base-lib ^1`), a signature on it, `scanner` 0.3.0 (unrelated), and a bundle
/// `kit` 1.0.0 whose member is `scanner ~0.3`.
async fn source(backend: Backend) -> (TestApp, Value) {
    let app = TestApp::with_backend(backend).await;
    publish(
        &app,
        json!({"packId": "base-lib", "version": "1.0.0", "type": "policy", "name": "Base"}),
        &content(1, 70_000),
    )
    .await;
    publish(
        &app,
        json!({"packId": "base-lib", "version": "1.2.0", "type": "policy", "name": "Base"}),
        &content(2, 80_000),
    )
    .await;
    let baseline = publish(
        &app,
        json!({"packId": "policy-baseline", "version": "2.1.0", "type": "policy",
               "name": "Baseline", "dependencies": [{"packId": "base-lib", "version": "^1"}]}),
        &content(3, 1000),
    )
    .await;
    publish(
        &app,
        json!({"packId": "scanner", "version": "0.3.0", "type": "analyzer", "name": "Scanner"}),
        &content(4, 5000),
    )
    .await;
    publish(
        &app,
        json!({"packId": "kit", "version": "1.0.0", "type": "bundle", "name": "Kit",
               "members": [{"packId": "scanner", "version": "~0.3"}]}),
        &content(5, 10),
    )
    .await;
    let manifest = baseline["manifestDigest"].as_str().unwrap().to_owned();
    let size = app
        .get(format!("/v2/packs/policy-baseline/manifests/{manifest}"))
        .await
        .body
        .len();
    let signature = app
        .push_referrer(
            "packs/policy-baseline",
            &manifest,
            size,
            "application/vnd.dev.cosign.artifact.sig.v1+json",
            json!({"signed": "yes"}),
        )
        .await;
    (app, json!({"manifest": manifest, "signature": signature}))
}

async fn export(app: &TestApp, query: &str) -> TestResponse {
    app.get(format!("/packs/export?{query}")).await
}

async fn import(app: &TestApp, archive: &[u8]) -> TestResponse {
    app.req(Method::POST, "/packs/import")
        .header("Content-Type", "application/x-tar")
        .body(archive.to_vec())
        .send()
        .await
}

/// Files of an archive (folders left out), in order.
fn files(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(archive);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            (path, data)
        })
        .filter(|(p, _)| !p.ends_with('/') && p != "blobs" && p != "blobs/sha256")
        .collect()
}

/// An archive of `files`, as a plain tar.
fn build(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// One raw entry: a GNU header with `name` as given (no checks), `kind`, and `data`.
fn raw_entry(name: &[u8], kind: tar::EntryType, data: &[u8], link: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    h.as_gnu_mut().unwrap().linkname[..link.len()].copy_from_slice(link);
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// `text` with every run of 64 hex digits (digests, which hold publication times)
/// written `<hex>`.
fn redact(text: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_hexdigit() {
            run.push(c);
            continue;
        }
        out.push_str(if run.len() == 64 { "<hex>" } else { &run });
        run.clear();
        out.push(c);
    }
    out.pop();
    out
}

/// A `/packs` error answer: its status and `{"error": {"code", "message"}}`.
fn packs_error(r: &TestResponse, status: StatusCode) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

async fn assert_unchanged(app: &TestApp, packs_before: &Value, catalog_before: &Value) {
    assert_eq!(&app.get("/packs").await.json(), packs_before);
    assert_eq!(&app.get("/v2/_catalog").await.json(), catalog_before);
    // No staged bytes left behind either (filesystem: the upload area is empty).
    let uploads = app.storage_path().join("uploads");
    if uploads.exists() {
        let left: Vec<_> = std::fs::read_dir(&uploads).unwrap().collect();
        assert!(left.is_empty(), "staged bytes left: {left:?}");
    }
}

/// Export from one registry, import into a fresh one: `/packs` and `/v2` both serve
/// the same packs, manifests, content and referrers; importing again changes nothing;
/// and the second registry exports the very same bytes.
async fn round_trip(backend: Backend) {
    let (a, ids) = source(backend).await;
    let r = export(&a, "pack=policy-baseline@%5E2&pack=kit@1.0.0").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-tar"));
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    // policy-baseline, base-lib 1.2.0 (newest ^1), kit, scanner.
    assert_eq!(r.header("bundle-packs"), Some("4"));
    assert_eq!(r.header("bundle-referrers"), Some("1"));
    let archive = r.body.clone();
    let names: Vec<String> = files(&archive).into_iter().map(|(p, _)| p).collect();
    assert_eq!(names.last().map(String::as_str), Some("oci-layout"));
    let index: Value = serde_json::from_slice(
        &files(&archive)
            .into_iter()
            .find(|(p, _)| p == "index.json")
            .unwrap()
            .1,
    )
    .unwrap();
    let refs: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .collect();
    assert_eq!(
        refs,
        [
            "packs/base-lib:1.2.0",
            "packs/kit:1.0.0",
            "packs/policy-baseline:2.1.0",
            "packs/scanner:0.3.0"
        ]
    );

    let b = TestApp::with_backend(backend).await;
    let r = import(&b, &archive).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let report = r.json();
    assert_eq!(report["nothingNew"], false);
    assert_eq!(report["packs"].as_array().unwrap().len(), 4);
    assert_eq!(report["referrers"], 1);
    assert_eq!(report["manifestsAdded"], 5);

    // /packs sees them, with the same content.
    for (id, version, seed, len) in [
        ("base-lib", "1.2.0", 2, 80_000),
        ("policy-baseline", "2.1.0", 3, 1000),
        ("scanner", "0.3.0", 4, 5000),
        ("kit", "1.0.0", 5, 10),
    ] {
        let got = b.get(format!("/packs/{id}/{version}")).await;
        assert_eq!(got.status, StatusCode::OK, "{id}");
        assert_eq!(got.body.as_ref(), content(seed, len).as_slice(), "{id}");
    }
    assert_eq!(
        b.get("/packs/base-lib/1.0.0").await.status,
        StatusCode::NOT_FOUND,
        "only the version the requirement resolves to travels"
    );
    // /v2 serves the same manifest bytes, and the signature as a referrer.
    let manifest = ids["manifest"].as_str().unwrap();
    let path = format!("/v2/packs/policy-baseline/manifests/{manifest}");
    assert_eq!(a.get(&path).await.body, b.get(&path).await.body);
    let referrers = b
        .get(format!("/v2/packs/policy-baseline/referrers/{manifest}"))
        .await
        .json();
    assert_eq!(referrers["manifests"][0]["digest"], ids["signature"]);

    // Again: nothing new, nothing changed.
    let packs = b.get("/packs").await.json();
    let r = import(&b, &archive).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["nothingNew"], true);
    assert_eq!(b.get("/packs").await.json(), packs);

    // The same content exports to the same bytes, from either registry.
    let again = export(&a, "pack=kit@1.0.0&pack=policy-baseline@%5E2").await;
    assert_eq!(sha256(&again.body), sha256(&archive));
    let from_b = export(&b, "pack=policy-baseline@2.1.0&pack=kit@%3E%3D1").await;
    assert_eq!(sha256(&from_b.body), sha256(&archive));
}

/// `--all` and `--type` select every version (of a type); a gzip archive imports.
async fn select_all_and_by_type(backend: Backend) {
    let (a, _) = source(backend).await;
    let r = export(&a, "type=analyzer").await;
    assert_eq!(r.header("bundle-packs"), Some("1"));
    let r = export(&a, "all=true").await;
    assert_eq!(r.header("bundle-packs"), Some("5"));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&r.body).unwrap();
    let b = TestApp::with_backend(backend).await;
    let r = import(&b, &gz.finish().unwrap()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(
        b.get("/packs/base-lib/versions").await.json()["versions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[actix_web::test]
async fn export_refusals() {
    let (a, _) = source(Backend::Fs).await;
    let r = export(&a, "pack=nope@1.0.0").await;
    insta::assert_json_snapshot!(packs_error(&r, StatusCode::NOT_FOUND), @r#"
        {
          "error": {
            "code": "NOT_FOUND",
            "message": "no version of nope matches 1.0.0"
          }
        }
    "#);
    let r = export(&a, "pack=base-lib").await;
    insta::assert_json_snapshot!(packs_error(&r, StatusCode::BAD_REQUEST), @r#"
        {
          "error": {
            "code": "BAD_REQUEST",
            "message": "pack \"base-lib\" must be <id>@<version or semver requirement>"
          }
        }
    "#);
    let r = export(&a, "").await;
    insta::assert_json_snapshot!(packs_error(&r, StatusCode::NOT_FOUND), @r#"
        {
          "error": {
            "code": "NOT_FOUND",
            "message": "nothing selected: name packs (<id>@<version>), a type, or all"
          }
        }
    "#);
    let r = export(&a, "type=widget").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // `all` is the boolean the OpenAPI document says, nothing looser.
    for all in ["all=", "all", "all=1", "all=yes"] {
        let r = export(&a, all).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{all}: {}", r.text());
    }
    let r = export(&a, "all=false").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    // A dependency that no longer resolves: the bundle would be incomplete.
    assert_eq!(
        a.delete("/packs/base-lib/1.2.0").await.status,
        StatusCode::OK
    );
    assert_eq!(
        a.delete("/packs/base-lib/1.0.0").await.status,
        StatusCode::OK
    );
    let r = export(&a, "pack=policy-baseline@2.1.0").await;
    insta::assert_json_snapshot!(packs_error(&r, StatusCode::NOT_FOUND), @r#"
        {
          "error": {
            "code": "NOT_FOUND",
            "message": "policy-baseline@2.1.0 needs base-lib ^1, and no published version matches"
          }
        }
    "#);
}

/// The ids of the bundle endpoints are no pack's.
#[actix_web::test]
async fn bundle_endpoint_names_are_reserved() {
    let app = TestApp::new().await;
    let m = serde_json::to_vec(
        &json!({"packId": "export", "version": "1.0.0", "type": "policy", "name": "x"}),
    )
    .unwrap();
    let mut body = Vec::new();
    for (name, bytes) in [("manifest", &m[..]), ("content", b"x")] {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    let r = app
        .req(Method::POST, "/packs")
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await;
    insta::assert_json_snapshot!(packs_error(&r, StatusCode::UNPROCESSABLE_ENTITY), @r#"
        {
          "error": {
            "code": "INVALID_PACK",
            "message": "packId \"export\" is reserved: /packs/export is the bundle endpoint"
          }
        }
    "#);
}

/// A good archive of the source registry's `policy-baseline`, as files.
async fn good_files() -> Vec<(String, Vec<u8>)> {
    let (a, _) = source(Backend::Fs).await;
    files(&export(&a, "pack=policy-baseline@2.1.0").await.body)
}

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

/// The path of the largest blob (a pack's content).
fn largest(files: &[(String, Vec<u8>)]) -> String {
    files
        .iter()
        .max_by_key(|(_, d)| d.len())
        .map(|(p, _)| p.clone())
        .unwrap()
}

/// Each way an archive can be wrong is refused with its reason, and the registry
/// (which already holds something) is left exactly as it was.
async fn import_refusals_change_nothing(backend: Backend) {
    let good = good_files().await;
    let app = TestApp::build(backend, |c| {
        c.bundles.max_entry_bytes = 1024 * 1024;
        c.bundles.max_archive_bytes = 512 * 1024 * 1024;
        c.bundles.max_gzip_ratio = 10;
    })
    .await;
    app.push_image("other/app", "v1", b"layer").await;
    let packs = app.get("/packs").await.json();
    let catalog = app.get("/v2/_catalog").await.json();

    let mut cases: Vec<(&str, Vec<u8>, StatusCode)> = Vec::new();
    // A corrupted blob: one byte of the content changed.
    let mut f = good.clone();
    let big = largest(&f);
    let i = f.iter().position(|(p, _)| *p == big).unwrap();
    f[i].1[100] ^= 1;
    cases.push((
        "corrupted blob",
        build(&f),
        StatusCode::UNPROCESSABLE_ENTITY,
    ));
    // A missing blob: the content left out.
    let f: Vec<_> = good.iter().filter(|(p, _)| *p != big).cloned().collect();
    cases.push(("missing blob", build(&f), StatusCode::UNPROCESSABLE_ENTITY));
    // A manifest that does not parse, under its own (correct) digest.
    let index: Value =
        serde_json::from_slice(&good.iter().find(|(p, _)| p == "index.json").unwrap().1).unwrap();
    let manifest = index["manifests"][0]["digest"].as_str().unwrap();
    let bad = b"{\"schemaVersion\": 2, \"mediaType\": \"application/vnd.oci.image.manifest.v1+json\", \"layers\": 7}".to_vec();
    let mut f: Vec<_> = good
        .iter()
        .filter(|(p, _)| *p != blob_path(manifest))
        .cloned()
        .collect();
    f.push((blob_path(&sha256(&bad)), bad.clone()));
    let mut idx = index.clone();
    idx["manifests"][0]["digest"] = json!(sha256(&bad));
    idx["manifests"][0]["size"] = json!(bad.len());
    let i = f.iter().position(|(p, _)| p == "index.json").unwrap();
    f[i].1 = serde_json::to_vec(&idx).unwrap();
    cases.push((
        "unparsable manifest",
        build(&f),
        StatusCode::UNPROCESSABLE_ENTITY,
    ));
    // index.json naming what is not there.
    let mut idx = index.clone();
    idx["manifests"][0]["digest"] = json!(sha256(b"absent"));
    let mut f = good.clone();
    let i = f.iter().position(|(p, _)| p == "index.json").unwrap();
    f[i].1 = serde_json::to_vec(&idx).unwrap();
    cases.push((
        "index.json names an absent manifest",
        build(&f),
        StatusCode::UNPROCESSABLE_ENTITY,
    ));
    // No index.json at all; not a tar at all.
    let f: Vec<_> = good
        .iter()
        .filter(|(p, _)| p != "index.json")
        .cloned()
        .collect();
    cases.push(("no index.json", build(&f), StatusCode::UNPROCESSABLE_ENTITY));
    let mut text = b"plain text, not an archive".to_vec();
    text.resize(2048, b' ');
    cases.push(("not a tar", text, StatusCode::UNPROCESSABLE_ENTITY));
    // Unsafe entries, each ahead of an otherwise good archive.
    let good_tar = build(&good);
    for (what, name, kind, link) in [
        (
            "path traversal",
            &b"../../etc/cron.d/x"[..],
            tar::EntryType::Regular,
            &b""[..],
        ),
        (
            "absolute path",
            b"/etc/cron.d/x",
            tar::EntryType::Regular,
            b"",
        ),
        (
            "symbolic link",
            b"blobs/sha256/link",
            tar::EntryType::Symlink,
            b"/etc/passwd",
        ),
        (
            "hard link",
            b"index2.json",
            tar::EntryType::Link,
            b"index.json",
        ),
        ("device", b"dev", tar::EntryType::Char, b""),
        ("fifo", b"fifo", tar::EntryType::Fifo, b""),
    ] {
        let mut archive = raw_entry(name, kind, b"", link);
        archive.extend_from_slice(&good_tar);
        cases.push((what, archive, StatusCode::UNPROCESSABLE_ENTITY));
    }
    // An entry over max_entry_bytes (refused from its header).
    let mut f = good.clone();
    let huge = vec![7u8; 1024 * 1024 + 1];
    f.insert(0, (blob_path(&sha256(&huge)), huge));
    cases.push(("oversized entry", build(&f), StatusCode::PAYLOAD_TOO_LARGE));
    // Truncated: inside the content, and just before the end-of-archive blocks.
    let cut = good_tar.len() / 2;
    cases.push((
        "truncated in a blob",
        good_tar[..cut].to_vec(),
        StatusCode::UNPROCESSABLE_ENTITY,
    ));
    let files_end = good_tar.len() - good_tar.iter().rev().take_while(|b| **b == 0).count();
    let files_end = files_end.div_ceil(512) * 512;
    cases.push((
        "no end-of-archive blocks",
        good_tar[..files_end].to_vec(),
        StatusCode::UNPROCESSABLE_ENTITY,
    ));
    // The same blob twice; data after the end-of-archive blocks.
    let mut f = good.clone();
    f.push(f.iter().find(|(p, _)| *p == big).unwrap().clone());
    cases.push(("a blob twice", build(&f), StatusCode::UNPROCESSABLE_ENTITY));
    let mut trailing = good_tar.clone();
    trailing.extend_from_slice(b"more");
    cases.push((
        "data after the end",
        trailing,
        StatusCode::UNPROCESSABLE_ENTITY,
    ));
    // A gzip bomb: a good archive followed by zeros, compressed.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&good_tar).unwrap();
    for _ in 0..200 {
        gz.write_all(&[0u8; 1024 * 1024]).unwrap();
    }
    cases.push((
        "gzip bomb",
        gz.finish().unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
    ));
    // A gzip stream cut short.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&good_tar).unwrap();
    let gz = gz.finish().unwrap();
    cases.push((
        "truncated gzip",
        gz[..gz.len() - 20].to_vec(),
        StatusCode::UNPROCESSABLE_ENTITY,
    ));

    let mut messages = Vec::new();
    for (what, archive, status) in cases {
        let r = import(&app, &archive).await;
        assert_eq!(r.status, status, "{what}: {}", r.text());
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        messages.push(format!("{what}: {}", redact(&message)));
        assert_unchanged(&app, &packs, &catalog).await;
    }
    // The same answers on every backend (each backend's run checks them).
    insta::allow_duplicates! {
        insta::assert_snapshot!(messages.join("\n"), @r#"
            corrupted blob: blobs/sha256/<hex> is corrupted: its content hashes to sha256:<hex>
            missing blob: manifest sha256:<hex> (index.json manifests[0]): its layers[0] is sha256:<hex>, which is not in the archive
            unparsable manifest: index.json manifests[0]: manifest sha256:<hex> is unusable: manifest invalid: config is required
            index.json names an absent manifest: index.json manifests[0] names sha256:<hex>, which is not in the archive
            no index.json: no index.json: the archive is not an OCI image layout
            not a tar: not a readable tar archive: numeric field was not a number: when getting cksum for plain text, not an archive
            path traversal: entry "../../etc/cron.d/x": a path climbing out of the archive (..) is refused
            absolute path: entry "/etc/cron.d/x": absolute paths and backslashes are refused
            symbolic link: entry "blobs/sha256/link" is a symbolic link: only regular files and folders are accepted
            hard link: entry "index2.json" is a hard link: only regular files and folders are accepted
            device: entry "dev" is a device: only regular files and folders are accepted
            fifo: entry "fifo" is a FIFO: only regular files and folders are accepted
            oversized entry: entry "blobs/sha256/<hex>" has 1048577 bytes, more than the 1048576 allowed
            truncated in a blob: the archive is truncated in "blobs/sha256/<hex>"
            no end-of-archive blocks: the archive is truncated: it ends without its end-of-archive blocks
            a blob twice: blobs/sha256/<hex> appears twice
            data after the end: data follows the end of the archive
            gzip bomb: the gzip archive inflates to more than 10 bytes per compressed byte (a gzip bomb?)
            truncated gzip: the archive is truncated: incomplete deflate stream
        "#);
    }

    // And the good archive goes in.
    let r = import(&app, &good_tar).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

/// An import never moves a tag, nor changes a pack's type.
#[actix_web::test]
async fn import_conflicts() {
    let good = good_files().await;
    let app = TestApp::new().await;
    publish(
        &app,
        json!({"packId": "base-lib", "version": "1.2.0", "type": "policy", "name": "Other"}),
        b"different",
    )
    .await;
    let packs = app.get("/packs").await.json();
    let catalog = app.get("/v2/_catalog").await.json();
    let r = import(&app, &build(&good)).await;
    let body = packs_error(&r, StatusCode::CONFLICT);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("packs/base-lib:1.2.0"),
        "{body}"
    );
    assert_unchanged(&app, &packs, &catalog).await;
}

/// An archive `skopeo copy … oci-archive:` writes of a plain image: it goes to the
/// repository its ref name says.
#[actix_web::test]
async fn plain_image_goes_where_its_ref_name_says() {
    let src = TestApp::new().await;
    let (digest, body) = src.push_image("team/app", "v1", b"some layer").await;
    let cfg = br#"{"architecture":"amd64","os":"linux"}"#;
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": OCI_MANIFEST, "digest": digest, "size": body.len(),
        "annotations": {"org.opencontainers.image.ref.name": "team/app:v1"}}]});
    let f = vec![
        (
            "oci-layout".to_owned(),
            br#"{"imageLayoutVersion": "1.0.0"}"#.to_vec(),
        ),
        ("index.json".to_owned(), serde_json::to_vec(&index).unwrap()),
        (blob_path(&digest), body.clone()),
        (blob_path(&sha256(cfg)), cfg.to_vec()),
        (blob_path(&sha256(b"some layer")), b"some layer".to_vec()),
    ];
    let app = TestApp::new().await;
    let r = import(&app, &build(&f)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(app.get("/v2/team/app/manifests/v1").await.body, body);
    // Without a ref name, nothing says where it goes.
    let mut idx = index.clone();
    idx["manifests"][0]["annotations"] = json!({"org.opencontainers.image.ref.name": "v1"});
    let mut f = f.clone();
    f[1].1 = serde_json::to_vec(&idx).unwrap();
    let other = TestApp::new().await;
    let r = import(&other, &build(&f)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
}

/// An index travels with its children, which go to the index's repository; every
/// blob and manifest comes out as it went in.
#[actix_web::test]
async fn an_index_brings_its_children() {
    let src = TestApp::new().await;
    let (amd, amd_body) = src.push_image("team/multi", "amd", b"amd64 layer").await;
    let (arm, arm_body) = src.push_image("team/multi", "arm", b"arm64 layer").await;
    let index = common::index_manifest(
        common::OCI_INDEX,
        &[
            (OCI_MANIFEST, &amd, amd_body.len()),
            (OCI_MANIFEST, &arm, arm_body.len()),
        ],
    );
    let digest = src
        .push_manifest("team/multi", "v1", common::OCI_INDEX, &index)
        .await;
    let cfg = br#"{"architecture":"amd64","os":"linux"}"#;
    let top = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": common::OCI_INDEX, "digest": digest, "size": index.len(),
        "annotations": {"org.opencontainers.image.ref.name": "team/multi:v1"}}]});
    let mut f = vec![
        (
            "oci-layout".to_owned(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".to_owned(), serde_json::to_vec(&top).unwrap()),
        (blob_path(&digest), index.clone()),
        (blob_path(&amd), amd_body.clone()),
        (blob_path(&arm), arm_body.clone()),
        (blob_path(&sha256(cfg)), cfg.to_vec()),
    ];
    for layer in [&b"amd64 layer"[..], b"arm64 layer"] {
        f.push((blob_path(&sha256(layer)), layer.to_vec()));
    }
    let app = TestApp::new().await;
    let r = import(&app, &build(&f)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["manifestsAdded"], 3);
    assert_eq!(app.get("/v2/team/multi/manifests/v1").await.body, index);
    for (child, body) in [(&amd, &amd_body), (&arm, &arm_body)] {
        let got = app.get(format!("/v2/team/multi/manifests/{child}")).await;
        assert_eq!(&got.body, body);
    }
    let got = app
        .get(format!("/v2/team/multi/blobs/{}", sha256(b"arm64 layer")))
        .await;
    assert_eq!(got.body.as_ref(), b"arm64 layer");
    // A child missing from the archive refuses the whole.
    let without: Vec<_> = f
        .iter()
        .filter(|(p, _)| *p != blob_path(&arm))
        .cloned()
        .collect();
    let other = TestApp::new().await;
    let r = import(&other, &build(&without)).await;
    let message = packs_error(&r, StatusCode::UNPROCESSABLE_ENTITY)["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("manifests[1]") && message.contains(&arm),
        "{message}"
    );
    assert_eq!(
        other.get("/v2/_catalog").await.json()["repositories"],
        json!([])
    );
}

on_both_backends!(
    round_trip,
    select_all_and_by_type,
    import_refusals_change_nothing
);
