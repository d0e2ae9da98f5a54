//! Shared harness of the conformance suites: starts the real `packs-registry`
//! binary on a free port with a temporary data folder, waits until `GET /v2/`
//! answers, and kills it when dropped. Also the small helpers every test needs:
//! digests, deterministic test content, manifests, and error-envelope checks.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};

#[path = "../../tests/prod/mod.rs"]
mod prod;
use serde_json::{Value, json};
use sha2::Digest as _;

/// A three-level repository name, as packs use.
pub const REPO: &str = "packs/team/policy-x";
/// A second repository, for mounts and isolation checks.
pub const REPO2: &str = "packs/team/analyzer-y";

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const PACK_POLICY: &str = "application/vnd.stellaops.pack.policy.v1";
pub const PACK_CONFIG: &str = "application/vnd.stellaops.pack.config.v1+json";
pub const PACK_CONTENT: &str = "application/vnd.stellaops.pack.content.v1.tar+gzip";

/// A running registry process.
pub struct Server {
    child: Child,
    log: Arc<Mutex<String>>,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// `http://127.0.0.1:<port>` (`https://` over TLS).
    pub base: String,
    /// An HTTP client (trusting only the test CA over TLS).
    pub http: reqwest::Client,
    // Declared last so the process is gone before its folder and database are removed.
    _data: tempfile::TempDir,
    _database: Option<prod::TestDatabase>,
}

/// The configuration the suites run against: `embedded` (SQLite + filesystem, the
/// default) or `production` (PostgreSQL + S3), chosen with
/// `PACKS_CONFORMANCE_BACKEND`. Production needs `PACKS_TEST_POSTGRES_URL` and
/// `PACKS_TEST_S3_ENDPOINT`; every server gets a fresh database and bucket.
async fn backend_env() -> (Vec<(String, String)>, Option<prod::TestDatabase>) {
    match std::env::var("PACKS_CONFORMANCE_BACKEND").as_deref() {
        Ok("production") => {
            let env = prod::ProdEnv::from_env()
                .expect("PACKS_CONFORMANCE_BACKEND=production needs PACKS_TEST_POSTGRES_URL and PACKS_TEST_S3_ENDPOINT");
            let database = prod::TestDatabase::create(&env.postgres_url).await;
            let bucket = prod::create_bucket(&env.s3_endpoint).await;
            let mut vars = prod::prod_vars(&database.url, &env.s3_endpoint, &bucket);
            vars.push(("AWS_ACCESS_KEY_ID".into(), "test".into()));
            vars.push(("AWS_SECRET_ACCESS_KEY".into(), "test".into()));
            (vars, Some(database))
        }
        Ok("embedded") | Err(_) => (Vec::new(), None),
        Ok(other) => panic!("PACKS_CONFORMANCE_BACKEND={other}: expected embedded or production"),
    }
}

fn drain(
    source: impl Read + Send + 'static,
    log: Arc<Mutex<String>>,
    ready: Option<mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        let mut ready = ready;
        for line in BufReader::new(source).lines() {
            let Ok(line) = line else { break };
            if let Some((_, url)) = line.split_once("listening on ")
                && let Some(tx) = ready.take()
            {
                let _ = tx.send(url.trim().to_owned());
            }
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
}

impl Server {
    /// Starts the binary on `127.0.0.1:0` and waits until `GET /v2/` is 200.
    pub async fn start() -> Server {
        Server::start_with(&[], None).await
    }

    /// Starts the binary with extra `serve` arguments (`--config FILE`); with `ca`
    /// (PEM), the server is expected to serve HTTPS with a certificate that CA signed,
    /// and [`Server::http`] trusts that CA alone. Waits until `GET /v2/` answers 200,
    /// or 401 in token mode.
    pub async fn start_with(args: &[&std::ffi::OsStr], ca: Option<&[u8]>) -> Server {
        let data = tempfile::TempDir::new().expect("temporary data folder");
        let (backend_vars, database) = backend_env().await;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_packs-registry"));
        cmd.arg("serve")
            .args(args)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data.path())
            .current_dir(data.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Keep the server hermetic: no configuration leaks in from the test's environment.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PACKS__") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(backend_vars);
        let mut child = cmd.spawn().expect("start packs-registry");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        drain(child.stdout.take().expect("stdout"), log.clone(), Some(tx));
        drain(child.stderr.take().expect("stderr"), log.clone(), None);
        // Blocks until the line is printed, or the process closes stdout (it died).
        let Ok(base) = rx.recv() else {
            let _ = child.wait();
            panic!(
                "packs-registry exited before listening:\n{}",
                log.lock().unwrap()
            );
        };
        let addr = base
            .split_once("://")
            .map(|(_, addr)| addr.to_owned())
            .expect("listening on <scheme>://<address>");
        assert_eq!(
            base.starts_with("https://"),
            ca.is_some(),
            "TLS as the test expects"
        );
        let mut http = reqwest::Client::builder().no_proxy();
        if let Some(ca) = ca {
            http =
                http.tls_certs_only([reqwest::Certificate::from_pem(ca).expect("CA certificate")]);
        }
        let http = http.build().expect("http client");
        let mut server = Server {
            child,
            log,
            base,
            addr,
            http,
            _data: data,
            _database: database,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&mut self) {
        for _ in 0..1000 {
            if let Ok(r) = self.http.get(self.url("/v2/")).send().await
                && (r.status() == StatusCode::OK || r.status() == StatusCode::UNAUTHORIZED)
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "packs-registry exited ({status}):\n{}",
                    self.log.lock().unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "packs-registry never answered GET /v2/:\n{}",
            self.log.lock().unwrap()
        );
    }

    /// An absolute URL for a path (or a `Location` value, relative or absolute).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// A request to a path or `Location`.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// Pushes a blob in one request (`POST ?digest=`) and checks the 201.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        self.push_blob_as(repo, data, &sha256(data)).await
    }

    /// Pushes a blob under a given digest in one request and checks the 201.
    pub async fn push_blob_as(&self, repo: &str, data: &[u8], digest: &str) -> String {
        let r = self
            .req(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            )
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "push blob {digest}: {}",
            text(r).await
        );
        digest.to_owned()
    }

    /// Opens an upload session and returns its `Location`.
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = self
            .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .header("Content-Length", "0")
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::ACCEPTED,
            "start upload: {}",
            text(r).await
        );
        location(&r)
    }

    /// `PUT /v2/<repo>/manifests/<reference>` with a media type.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Response {
        self.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("Content-Type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Pushes a manifest and checks the 201 and its digest header.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Response {
        let r = self.put_manifest(repo, reference, media_type, body).await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "push manifest {reference}: {}",
            text(r).await
        );
        r
    }

    /// `GET` a manifest with the usual `Accept` list.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Response {
        self.req(Method::GET, &format!("/v2/{repo}/manifests/{reference}"))
            .header("Accept", OCI_MANIFEST)
            .header("Accept", OCI_INDEX)
            .send()
            .await
            .unwrap()
    }

    /// `HEAD` a manifest with the usual `Accept` list.
    pub async fn head_manifest(&self, repo: &str, reference: &str) -> Response {
        self.req(Method::HEAD, &format!("/v2/{repo}/manifests/{reference}"))
            .header("Accept", OCI_MANIFEST)
            .header("Accept", OCI_INDEX)
            .send()
            .await
            .unwrap()
    }

    /// `GET` a blob.
    pub async fn get_blob(&self, repo: &str, digest: &str) -> Response {
        self.req(Method::GET, &format!("/v2/{repo}/blobs/{digest}"))
            .send()
            .await
            .unwrap()
    }

    /// `HEAD` a blob.
    pub async fn head_blob(&self, repo: &str, digest: &str) -> Response {
        self.req(Method::HEAD, &format!("/v2/{repo}/blobs/{digest}"))
            .send()
            .await
            .unwrap()
    }

    /// Asserts a blob is served with exactly `data`.
    pub async fn assert_blob(&self, repo: &str, digest: &str, data: &[u8]) {
        let r = self.get_blob(repo, digest).await;
        assert_eq!(r.status(), StatusCode::OK, "GET blob {digest}");
        assert_eq!(header(&r, "Docker-Content-Digest").as_deref(), Some(digest));
        assert_eq!(header(&r, "Content-Length"), Some(data.len().to_string()));
        let body = r.bytes().await.unwrap();
        assert!(
            body[..] == data[..],
            "blob {digest}: served bytes differ from pushed bytes"
        );
    }

    /// Asserts a blob is unknown to the repository (404 `BLOB_UNKNOWN`).
    pub async fn assert_no_blob(&self, repo: &str, digest: &str) {
        let r = self.get_blob(repo, digest).await;
        assert_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
        let r = self.head_blob(repo, digest).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "HEAD blob {digest}");
    }

    /// Pushes config and layers, then the manifest under `reference`.
    pub async fn push_image(&self, repo: &str, reference: &str, image: &Image) -> Response {
        for blob in image.blobs() {
            self.push_blob_as(repo, &blob.data, &blob.digest).await;
        }
        self.push_manifest(repo, reference, OCI_MANIFEST, &image.manifest)
            .await
    }

    /// The tags of a repository, following no links.
    pub async fn tags(&self, repo: &str, query: &str) -> (Vec<String>, Option<String>) {
        let r = self
            .req(Method::GET, &format!("/v2/{repo}/tags/list{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "tags/list{query}");
        let link = header(&r, "Link");
        let v = json_body(r).await;
        assert_eq!(v["name"], json!(repo));
        (strings(&v["tags"]), link)
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let r = self.req(Method::GET, "/metrics").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "/metrics");
        r.text().await.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- packs-registry output ---\n{}",
                self.log.lock().unwrap()
            );
        }
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// `sha512:<hex>` of `data`.
pub fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(data)))
}

/// Deterministic pseudo-random bytes (splitmix64), distinct per `seed`.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A header's value as text.
pub fn header(r: &Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().expect("ASCII header").to_owned())
}

/// Every value of a header, comma-separated lists split.
pub fn header_values(r: &Response, name: &str) -> Vec<String> {
    r.headers()
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().expect("ASCII header").split(','))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The `Location` header, which must be present.
pub fn location(r: &Response) -> String {
    let loc = header(r, "Location").expect("Location header");
    assert!(!loc.is_empty(), "empty Location header");
    loc
}

/// Adds a query parameter to a `Location`, which may already carry a query.
pub fn with_query(location: &str, pair: &str) -> String {
    if location.contains('?') {
        format!("{location}&{pair}")
    } else {
        format!("{location}?{pair}")
    }
}

/// A query parameter value, percent-encoded (media types carry `+`).
pub fn enc(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The target of a `Link: <...>; rel="next"` header.
pub fn next_link(link: &str) -> String {
    assert!(
        link.contains("rel=\"next\""),
        "Link without rel=\"next\": {link}"
    );
    let start = link.find('<').expect("Link has <") + 1;
    let end = link.find('>').expect("Link has >");
    link[start..end].to_owned()
}

pub async fn text(r: Response) -> String {
    let status = r.status();
    format!("{status} {}", r.text().await.unwrap_or_default())
}

pub async fn json_body(r: Response) -> Value {
    let bytes = r.bytes().await.unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

pub fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Null => vec![],
        Value::Array(items) => items
            .iter()
            .map(|s| s.as_str().expect("string item").to_owned())
            .collect(),
        other => panic!("expected a list, got {other}"),
    }
}

/// Asserts the status and that the error envelope's first code is `code`.
pub async fn assert_error(r: Response, status: StatusCode, code: &str) -> Value {
    let got = r.status();
    let bytes = r.bytes().await.unwrap();
    assert_eq!(got, status, "body: {}", String::from_utf8_lossy(&bytes));
    let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "error body is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    let errors = v["errors"].as_array().expect("errors array");
    assert!(!errors.is_empty(), "empty errors array");
    assert_eq!(errors[0]["code"], json!(code), "error envelope: {v}");
    assert!(
        errors[0]["message"].is_string(),
        "error without message: {v}"
    );
    v
}

/// A blob with its digest and the media type it is referenced with.
#[derive(Clone, Debug)]
pub struct Blob {
    pub data: Vec<u8>,
    pub digest: String,
    pub media_type: String,
}

impl Blob {
    pub fn new(data: Vec<u8>, media_type: &str) -> Blob {
        Blob {
            digest: sha256(&data),
            data,
            media_type: media_type.to_owned(),
        }
    }

    pub fn sha512(data: Vec<u8>, media_type: &str) -> Blob {
        Blob {
            digest: sha512(&data),
            data,
            media_type: media_type.to_owned(),
        }
    }

    pub fn descriptor(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.data.len() })
    }
}

/// An image manifest with its config and layers.
#[derive(Clone, Debug)]
pub struct Image {
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub manifest: Vec<u8>,
    pub digest: String,
}

impl Image {
    /// An image with a config and `layers` layers of distinct content.
    pub fn new(seed: u64, layers: usize) -> Image {
        let config = Blob::new(
            serde_json::to_vec(&json!({
                "architecture": "amd64", "os": "linux",
                "rootfs": { "type": "layers", "diff_ids": [] },
                "seed": seed,
            }))
            .unwrap(),
            OCI_CONFIG,
        );
        let layers = (0..layers)
            .map(|i| Blob::new(content(seed * 100 + i as u64, 512 + i * 97), OCI_LAYER))
            .collect();
        Image::build(config, layers, json!({}))
    }

    /// A manifest over `config` and `layers`, with `extra` fields merged in.
    pub fn build(config: Blob, layers: Vec<Blob>, extra: Value) -> Image {
        let mut m = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        });
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                m[k] = v;
            }
        }
        let manifest = serde_json::to_vec(&m).unwrap();
        Image {
            digest: sha256(&manifest),
            config,
            layers,
            manifest,
        }
    }

    /// The same image with its manifest addressed by sha512.
    pub fn with_sha512_digest(mut self) -> Image {
        self.digest = sha512(&self.manifest);
        self
    }

    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        std::iter::once(&self.config).chain(self.layers.iter())
    }

    pub fn descriptor(&self) -> Value {
        json!({ "mediaType": OCI_MANIFEST, "digest": self.digest, "size": self.manifest.len() })
    }
}

/// An artifact manifest (empty config) of `artifact_type`, optionally referring to `subject`.
pub fn artifact(
    artifact_type: &str,
    layer: Blob,
    subject: Option<&Image>,
    annotations: Value,
) -> Image {
    let config = Blob::new(b"{}".to_vec(), OCI_EMPTY);
    let mut extra = json!({ "artifactType": artifact_type, "annotations": annotations });
    if let Some(s) = subject {
        extra["subject"] = s.descriptor();
    }
    Image::build(config, vec![layer], extra)
}

/// A test CA and a server certificate it signed (for `127.0.0.1` and `localhost`),
/// made with the `openssl` command line, as PEM files in `dir`.
pub struct TestCa {
    /// The CA certificate, PEM.
    pub ca_pem: Vec<u8>,
    /// The server's certificate and key files, for `[server.tls]`.
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl TestCa {
    pub fn make(dir: &std::path::Path) -> TestCa {
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap_or_else(|e| panic!("openssl (the test CA is made with it): {e}"));
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-days", "2", "-subj", "/CN=PacksRegistry test CA"],
                &["-keyout", "ca.key", "-out", "ca.crt"],
                &["-addext", "basicConstraints=critical,CA:TRUE"],
                &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-subj",
                    "/CN=localhost",
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ]);
        TestCa {
            ca_pem: std::fs::read(dir.join("ca.crt")).unwrap(),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        }
    }
}

/// Runs the registry binary's command line (`token keygen`, `user hash`, …) with
/// `stdin`, hermetically; its standard output, trimmed.
pub fn cli(args: &[&str], stdin: &str) -> String {
    use std::io::Write as _;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_packs-registry"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PACKS__") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd.spawn().expect("packs-registry");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "packs-registry {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
