//! `packs-registry bundle export|import|verify`, run as the real binary against real
//! `serve` processes on loopback: export from one registry, verify offline, import
//! into a second, fresh one, in the embedded configuration (SQLite + filesystem) and
//! the production one (PostgreSQL + S3); and a 2 GiB pack through both ways with the
//! peak memory of every process measured.

mod prod;

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use futures_util::StreamExt;
use prod::{Replica, TestDatabase, create_bucket, prod_vars, sha256, spawn, wait_ready};
use serde_json::{Value, json};

const BOUNDARY: &str = "bundle-cli-boundary-0b7e";

/// Runs `packs-registry ARGS`, without any inherited `PACKS__` variable.
fn run(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_packs-registry"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("PACKS__") || k == "PACKS_REGISTRY_TOKEN" {
            command.env_remove(k);
        }
    }
    command.output().expect("run packs-registry")
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn refused(args: &[&str]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

/// The `sha256 …` line a command printed.
fn printed_sha(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("sha256 "))
        .unwrap_or_else(|| panic!("no sha256 line in {stdout:?}"))
        .to_owned()
}

fn file_sha(path: &Path) -> String {
    sha256(&std::fs::read(path).unwrap())
}

/// `POST /packs` of `manifest` with `content`.
async fn publish(base: &str, manifest: Value, content: Vec<u8>) -> Value {
    let mut body = Vec::new();
    for (name, bytes) in [
        ("manifest", serde_json::to_vec(&manifest).unwrap()),
        ("content", content),
    ] {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(&bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    let r = reqwest::Client::new()
        .post(format!("{base}/packs"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    r.json().await.unwrap()
}

fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed) ^ (i >> 11) as u8)
        .collect()
}

/// Two registries, `a` holding packs (a dependency, a signature), `b` empty: export
/// with the CLI, verify, import, import again, and refusals of a damaged copy.
async fn round_trip(a: &Replica, b: &Replica) {
    let http = reqwest::Client::new();
    publish(
        &a.base,
        json!({"packId": "base-lib", "version": "1.4.0", "type": "policy", "name": "Base"}),
        bytes(1, 300_000),
    )
    .await;
    let top = publish(
        &a.base,
        json!({"packId": "policy-baseline", "version": "2.1.0+build.7", "type": "policy",
               "name": "Baseline", "dependencies": [{"packId": "base-lib", "version": "^1.2"}]}),
        bytes(2, 4096),
    )
    .await;
    // A signature attached to the top pack, as cosign or notation would.
    let manifest_digest = top["manifestDigest"].as_str().unwrap();
    let subject = http
        .get(a.url(&format!(
            "/v2/packs/policy-baseline/manifests/{manifest_digest}"
        )))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let repo = "packs/policy-baseline";
    let empty = a.push_blob(&http, repo, b"{}").await;
    let sig = a.push_blob(&http, repo, b"signature bytes").await;
    let referrer = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": sig, "size": 15}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest, "size": subject.len()},
    }))
    .unwrap();
    let referrer_digest = sha256(&referrer);
    let r = http
        .put(a.url(&format!("/v2/{repo}/manifests/{referrer_digest}")))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(referrer.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);

    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one.tar");
    let two = dir.path().join("two.tar");
    let out = ok(&[
        "bundle",
        "export",
        "--registry",
        &a.base,
        "--pack",
        "policy-baseline@^2",
        "-o",
        one.to_str().unwrap(),
    ]);
    assert!(out.contains("2 packs, 1 referrers"), "{out}");
    assert_eq!(printed_sha(&out), file_sha(&one));
    // Deterministic: the same content, the same bytes.
    let out = ok(&[
        "bundle",
        "export",
        "--registry",
        &a.base,
        "--pack",
        "policy-baseline@2.1.0+build.7",
        "--token",
        "ignored-by-an-open-registry",
        "-o",
        two.to_str().unwrap(),
    ]);
    assert_eq!(printed_sha(&out), file_sha(&one));
    assert_eq!(file_sha(&two), file_sha(&one));
    assert!(!dir.path().join("two.tar.partial").exists());

    // Offline verification lists the packs.
    let table = ok(&["bundle", "verify", one.to_str().unwrap()]);
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("PACK "), "{table}");
    assert!(
        table.contains("policy-baseline  2.1.0+build.7  policy"),
        "{table}"
    );
    assert!(table.contains("base-lib ^1.2"), "{table}");
    let listed: Value =
        serde_json::from_str(&ok(&["bundle", "verify", "--json", one.to_str().unwrap()])).unwrap();
    assert_eq!(listed["sha256"], file_sha(&one));
    assert_eq!(listed["referrers"], 1);
    let packs: Vec<(&str, &str)> = listed["packs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["packId"].as_str().unwrap(),
                p["version"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        packs,
        [("base-lib", "1.4.0"), ("policy-baseline", "2.1.0+build.7")]
    );
    assert_eq!(listed["packs"][1]["dependencies"][0]["packId"], "base-lib");

    // A damaged copy is refused, offline and by the registry, which stays empty.
    let mut damaged = std::fs::read(&one).unwrap();
    let at = damaged.len() / 2;
    damaged[at] ^= 0x55;
    let bad = dir.path().join("damaged.tar");
    std::fs::write(&bad, &damaged).unwrap();
    let why = refused(&["bundle", "verify", bad.to_str().unwrap()]);
    assert!(why.contains("corrupted"), "{why}");
    let why = refused(&[
        "bundle",
        "import",
        "--registry",
        &b.base,
        bad.to_str().unwrap(),
    ]);
    assert!(
        why.contains("422") && why.contains("INVALID_BUNDLE"),
        "{why}"
    );
    let packs: Value = http
        .get(b.url("/packs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(packs["packs"], json!([]));

    // Import, then again.
    let out = ok(&[
        "bundle",
        "import",
        "--registry",
        &b.base,
        one.to_str().unwrap(),
    ]);
    assert!(out.contains("imported 2 of 2 packs"), "{out}");
    assert_eq!(printed_sha(&out), file_sha(&one));
    let out = ok(&[
        "bundle",
        "import",
        "--registry",
        &b.base,
        one.to_str().unwrap(),
    ]);
    assert!(out.contains("nothing new"), "{out}");

    // The second registry serves the same bytes, by /packs and by /v2.
    for (id, version, content) in [
        ("base-lib", "1.4.0", bytes(1, 300_000)),
        ("policy-baseline", "2.1.0_build.7", bytes(2, 4096)),
    ] {
        let got = http
            .get(b.url(&format!("/packs/{id}/{version}")))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), reqwest::StatusCode::OK, "{id}");
        assert_eq!(
            got.bytes().await.unwrap().as_ref(),
            content.as_slice(),
            "{id}"
        );
    }
    let got = http
        .get(b.url(&format!("/v2/{repo}/manifests/{referrer_digest}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), referrer.as_slice());
    // And exports the very same archive.
    let three = dir.path().join("three.tar");
    ok(&[
        "bundle",
        "export",
        "--registry",
        &b.base,
        "--all",
        "-o",
        three.to_str().unwrap(),
    ]);
    assert_eq!(file_sha(&three), file_sha(&one));
}

#[actix_web::test]
async fn embedded_configuration() {
    let mut a = spawn(&[]);
    let mut b = spawn(&[]);
    wait_ready(&mut a).await;
    wait_ready(&mut b).await;
    round_trip(&a, &b).await;
}

#[actix_web::test]
#[cfg_attr(
    not(all(packs_test_postgres, packs_test_s3)),
    ignore = "needs PostgreSQL and S3: set PACKS_TEST_POSTGRES_URL and PACKS_TEST_S3_ENDPOINT"
)]
async fn production_configuration() {
    let env = prod::ProdEnv::from_env().expect("the production services");
    let (db_a, db_b) = (
        TestDatabase::create(&env.postgres_url).await,
        TestDatabase::create(&env.postgres_url).await,
    );
    let (bucket_a, bucket_b) = (
        create_bucket(&env.s3_endpoint).await,
        create_bucket(&env.s3_endpoint).await,
    );
    let mut a = spawn(&prod_vars(&db_a.url, &env.s3_endpoint, &bucket_a));
    let mut b = spawn(&prod_vars(&db_b.url, &env.s3_endpoint, &bucket_b));
    wait_ready(&mut a).await;
    wait_ready(&mut b).await;
    round_trip(&a, &b).await;
}

/// `--token` is sent as a bearer token, and a refusal is reported in the registry's
/// words.
#[test]
fn token_is_sent_and_refusals_reported() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push(line.trim_end().to_owned());
        }
        let body = r#"{"error":{"code":"NOT_FOUND","message":"no version of x matches 9"}}"#;
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        head
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.tar");
    let why = refused(&[
        "bundle",
        "export",
        "--registry",
        &format!("http://127.0.0.1:{port}"),
        "--token",
        "T0KEN",
        "--pack",
        "x@9",
        "-o",
        out.to_str().unwrap(),
    ]);
    let head = server.join().unwrap();
    assert!(
        head[0].starts_with("GET /packs/export?pack=x%409 "),
        "{head:?}"
    );
    assert!(
        head.iter()
            .any(|h| h.eq_ignore_ascii_case("authorization: Bearer T0KEN")),
        "{head:?}"
    );
    assert!(
        why.contains("404") && why.contains("no version of x matches 9"),
        "{why}"
    );
    assert!(!out.exists() && !dir.path().join("x.tar.partial").exists());
}

/// The peak resident memory of a process (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        / 1024
}

/// The peak resident memory of the largest child waited for so far, in MiB.
fn children_peak_rss_mib() -> u64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage struct.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss as u64 / 1024
}

/// A 2 GiB pack published, exported to a file, verified and imported into a second
/// registry; no process's peak memory grows with it.
#[actix_web::test]
#[ignore = "moves 2 GiB three times (6 GiB of disk, about a minute): run with --ignored"]
async fn two_gib_pack_in_bounded_memory() {
    const SIZE: u64 = 2 * 1024 * 1024 * 1024;
    const CHUNK: usize = 1024 * 1024;
    let big = [(
        "PACKS__PACKS__MAX_CONTENT_BYTES".to_owned(),
        (3 * SIZE).to_string(),
    )];
    let mut a = spawn(&big);
    let mut b = spawn(&[]);
    wait_ready(&mut a).await;
    wait_ready(&mut b).await;

    // The content: a deterministic stream of distinct chunks.
    let base = bytes(7, CHUNK);
    let chunk = move |i: u64| -> Vec<u8> {
        let mut c = base.clone();
        c[..8].copy_from_slice(&i.to_le_bytes());
        c
    };
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    for i in 0..SIZE / CHUNK as u64 {
        sha2::Digest::update(&mut hasher, chunk(i));
    }
    let content_digest = format!("sha256:{}", hex::encode(sha2::Digest::finalize(hasher)));
    let manifest = serde_json::to_vec(&json!({
        "packId": "huge", "version": "1.0.0", "type": "analyzer", "name": "Huge"
    }))
    .unwrap();
    let head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"manifest\"\r\n\r\n{}\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"content\"\r\n\r\n",
        String::from_utf8(manifest).unwrap()
    );
    let tail = format!("\r\n--{BOUNDARY}--\r\n");
    let body = futures_util::stream::iter(
        std::iter::once(head.into_bytes())
            .chain((0..SIZE / CHUNK as u64).map(chunk))
            .chain(std::iter::once(tail.into_bytes()))
            .map(Ok::<_, std::io::Error>),
    );
    let r = reqwest::Client::new()
        .post(a.url("/packs"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let published: Value = r.json().await.unwrap();
    assert_eq!(published["digest"], content_digest.as_str());

    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let archive = dir.path().join("huge.tar");
    let archive = archive.to_str().unwrap();
    ok(&[
        "bundle",
        "export",
        "--registry",
        &a.base,
        "--pack",
        "huge@1.0.0",
        "-o",
        archive,
    ]);
    let listed: Value =
        serde_json::from_str(&ok(&["bundle", "verify", "--json", archive])).unwrap();
    assert_eq!(listed["packs"][0]["digest"], content_digest.as_str());
    let out = ok(&["bundle", "import", "--registry", &b.base, archive]);
    assert!(out.contains("imported 1 of 1 packs"), "{out}");
    let cli_peak = children_peak_rss_mib();
    let (peak_a, peak_b) = (peak_rss_mib(a.pid()), peak_rss_mib(b.pid()));

    // The second registry serves the whole content, hashed as it streams.
    let r = reqwest::Client::new()
        .get(b.url("/packs/huge/1.0.0"))
        .send()
        .await
        .unwrap();
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut got = 0u64;
    let mut stream = r.bytes_stream();
    while let Some(c) = stream.next().await {
        let c = c.unwrap();
        got += c.len() as u64;
        sha2::Digest::update(&mut hasher, &c);
    }
    assert_eq!(got, SIZE);
    assert_eq!(
        format!("sha256:{}", hex::encode(sha2::Digest::finalize(hasher))),
        content_digest
    );

    let peak_b_served = peak_rss_mib(b.pid());
    eprintln!(
        "peak RSS: exporting server {peak_a} MiB (publish and export), importing server \
         {peak_b} MiB (import; {peak_b_served} MiB after serving the content), CLI {cli_peak} MiB"
    );
    for (who, peak) in [
        ("exporting server", peak_a),
        ("importing server", peak_b_served),
        ("CLI", cli_peak),
    ] {
        assert!(peak < 128, "{who}: peak RSS {peak} MiB for a 2 GiB pack");
    }
}
