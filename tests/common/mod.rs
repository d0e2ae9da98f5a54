//! The one helper every HTTP test uses: the real application
//! ([`packs_registry::http::app`]), built from a [`Config`] over a temporary data
//! folder (SQLite file, and filesystem or in-memory blobs), driven in process with
//! `actix_web::test`. Tests run on actix's runtime (`#[actix_web::test]`).
//!
//! Each test binary uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::rc::Rc;

use actix_web::body::BoxBody;
use actix_web::dev::{Service, ServiceResponse};
pub use actix_web::http::header::HeaderMap;
pub use actix_web::http::{Method, StatusCode};
use actix_web::test::TestRequest;
use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use packs_registry::config::{Config, StorageBackend};
use packs_registry::digest::{Algorithm, Digest};
use serde_json::{Value, json};
use tempfile::TempDir;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// Runs each named `async fn name(backend: Backend)` of the calling file once per
/// configuration, as `fs::name` and `memory::name` (SQLite metadata), and
/// `production::name` (PostgreSQL + S3: ignored unless `PACKS_TEST_POSTGRES_URL` and
/// `PACKS_TEST_S3_ENDPOINT` are set or `CI` is; see `build.rs`).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod fs {
            $(
                #[actix_web::test]
                async fn $name() {
                    super::$name($crate::common::Backend::Fs).await
                }
            )*
        }
        mod memory {
            $(
                #[actix_web::test]
                async fn $name() {
                    super::$name($crate::common::Backend::Memory).await
                }
            )*
        }
        mod production {
            $(
                #[actix_web::test]
                #[cfg_attr(
                    not(all(packs_test_postgres, packs_test_s3)),
                    ignore = "needs PostgreSQL and S3: set PACKS_TEST_POSTGRES_URL and PACKS_TEST_S3_ENDPOINT"
                )]
                async fn $name() {
                    super::$name($crate::common::Backend::Production).await
                }
            )*
        }
    };
}

#[path = "../prod/mod.rs"]
mod prod;

/// Which configuration the app runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file, blobs as files under `<data_dir>/blobs`.
    Fs,
    /// SQLite file, blobs in `object_store`'s in-memory store.
    Memory,
    /// A fresh PostgreSQL database and a fresh S3 bucket.
    Production,
}

/// The initialized application, as one function from request to response.
type AppService = Rc<dyn Fn(actix_http::Request) -> LocalBoxFuture<'static, TestResponse>>;

/// The application under test and the folder it keeps its data in.
pub struct TestApp {
    service: AppService,
    state: packs_registry::http::AppState,
    config: Config,
    dir: TempDir,
    _database: Option<prod::TestDatabase>,
}

impl TestApp {
    /// The app with default configuration on the filesystem backend.
    pub async fn new() -> Self {
        Self::with_backend(Backend::Fs).await
    }

    /// The app with default configuration on `backend`.
    pub async fn with_backend(backend: Backend) -> Self {
        Self::build(backend, |_| {}).await
    }

    /// The app on `backend`, with `tweak` applied to the default configuration
    /// (after the data folder is set).
    pub async fn build(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temporary data folder");
        let mut config = Config::default();
        config.server.data_dir = dir.path().to_path_buf();
        let mut database = None;
        config.storage.backend = match backend {
            Backend::Fs => StorageBackend::Fs,
            Backend::Memory => StorageBackend::Memory,
            Backend::Production => {
                let env = prod::ProdEnv::from_env().expect("production test environment");
                let db = prod::TestDatabase::create(&env.postgres_url).await;
                config.metadata.url = db.url.clone();
                config.storage.s3.bucket = prod::create_bucket(&env.s3_endpoint).await;
                config.storage.s3.endpoint = env.s3_endpoint.clone();
                config.storage.s3.access_key_id = "test".into();
                config.storage.s3.secret_access_key = "test".to_owned().into();
                database = Some(db);
                StorageBackend::S3
            }
        };
        tweak(&mut config);
        config.validate().expect("test configuration is valid");
        let state = packs_registry::server::build_state(config.clone())
            .await
            .expect("app state builds");
        TestApp {
            service: service(state.clone()).await,
            state,
            config,
            dir,
            _database: database,
        }
    }

    /// The data folder.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The filesystem blob store's root.
    pub fn storage_path(&self) -> PathBuf {
        self.config.storage_path()
    }

    /// The application state (to reach the domain directly).
    pub fn state(&self) -> &packs_registry::http::AppState {
        &self.state
    }

    /// Sends one request through the whole app.
    pub async fn send(&self, request: actix_http::Request) -> TestResponse {
        (self.service)(request).await
    }

    /// A request to build, then `.send()`.
    pub fn req(&self, method: Method, uri: impl Into<String>) -> Call<'_> {
        Call {
            app: self,
            builder: TestRequest::default().method(method).uri(&uri.into()),
            body: Bytes::new(),
            has_length: false,
        }
    }

    pub async fn get(&self, uri: impl Into<String>) -> TestResponse {
        self.req(Method::GET, uri).send().await
    }

    pub async fn head(&self, uri: impl Into<String>) -> TestResponse {
        self.req(Method::HEAD, uri).send().await
    }

    pub async fn delete(&self, uri: impl Into<String>) -> TestResponse {
        self.req(Method::DELETE, uri).send().await
    }

    /// Pushes `bytes` as a blob in one `POST ?digest=`; returns its digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let r = self
            .req(
                Method::POST,
                format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            )
            .header("Content-Type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "push_blob: {}", r.text());
        digest
    }

    /// Opens an upload session; returns its `Location`.
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = self
            .req(Method::POST, format!("/v2/{repo}/blobs/uploads/"))
            .header("Content-Length", "0")
            .send()
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "start_upload: {}", r.text());
        r.header("location").expect("Location").to_owned()
    }

    /// `PUT`s a manifest as given, returning the raw answer.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> TestResponse {
        let mut call = self
            .req(Method::PUT, format!("/v2/{repo}/manifests/{reference}"))
            .body(body.to_vec());
        if let Some(ct) = content_type {
            call = call.header("Content-Type", ct);
        }
        call.send().await
    }

    /// Pushes a manifest, insisting on `201`; returns its digest.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        content_type: &str,
        body: &[u8],
    ) -> String {
        let r = self
            .put_manifest(repo, reference, Some(content_type), body)
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "push_manifest: {}", r.text());
        let digest = sha256(body);
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
        digest
    }

    /// Pushes a small OCI image (config `cfg`, one layer of `layer` bytes) and its
    /// manifest under `reference`; returns the manifest's digest and exact bytes.
    pub async fn push_image(&self, repo: &str, reference: &str, layer: &[u8]) -> (String, Vec<u8>) {
        let cfg = br#"{"architecture":"amd64","os":"linux"}"#;
        let config = self.push_blob(repo, cfg).await;
        let layer_digest = self.push_blob(repo, layer).await;
        let body = image_manifest(
            OCI_MANIFEST,
            (OCI_CONFIG, &config, cfg.len()),
            &[(OCI_LAYER, &layer_digest, layer.len())],
        );
        let digest = self
            .push_manifest(repo, reference, OCI_MANIFEST, &body)
            .await;
        (digest, body)
    }

    /// Pushes the empty config blob `{}` into `repo` and returns its descriptor.
    pub async fn push_empty_config(&self, repo: &str) -> Value {
        let digest = self.push_blob(repo, b"{}").await;
        json!({ "mediaType": OCI_EMPTY, "digest": digest, "size": 2 })
    }

    /// Pushes an artifact manifest (empty config, no layers) whose `subject` is
    /// `subject`; returns its digest.
    pub async fn push_referrer(
        &self,
        repo: &str,
        subject: &str,
        subject_size: usize,
        artifact_type: &str,
        annotations: Value,
    ) -> String {
        let config = self.push_empty_config(repo).await;
        let body = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": config,
            "layers": [],
            "subject": { "mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size },
            "annotations": annotations,
        }))
        .unwrap();
        let digest = sha256(&body);
        self.push_manifest(repo, &digest, OCI_MANIFEST, &body).await
    }
}

impl TestApp {
    /// `POST /packs` with a `manifest` part and a `content` part.
    pub async fn publish_pack(&self, manifest: &Value, content: &[u8]) -> TestResponse {
        self.publish_request(manifest, content).send().await
    }

    /// [`TestApp::publish_pack`]'s request, for headers of its own.
    pub fn publish_request(&self, manifest: &Value, content: &[u8]) -> Call<'_> {
        const BOUNDARY: &str = "test-pack-boundary";
        let mut body = Vec::new();
        let m = serde_json::to_vec(manifest).unwrap();
        for (name, kind, bytes) in [
            ("manifest", "application/json", &m[..]),
            ("content", "application/octet-stream", content),
        ] {
            body.extend_from_slice(
                format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\
                     Content-Type: {kind}\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        self.req(Method::POST, "/packs")
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body)
    }
}

/// Builds the application once and returns it as a function.
async fn service(state: packs_registry::http::AppState) -> AppService {
    let app = Rc::new(actix_web::test::init_service(packs_registry::http::app(state)).await);
    Rc::new(move |request| {
        let app = app.clone();
        Box::pin(async move {
            match app.call(request).await {
                Ok(response) => read_response(response.map_into_boxed_body()).await,
                Err(e) => {
                    let response = e.error_response();
                    let status = response.status();
                    let headers = response.headers().clone();
                    let body = actix_web::body::to_bytes(response.into_body())
                        .await
                        .unwrap_or_default();
                    TestResponse {
                        status,
                        headers,
                        body,
                    }
                }
            }
        })
    })
}

async fn read_response(response: ServiceResponse<BoxBody>) -> TestResponse {
    use actix_web::body::{BodySize, MessageBody};
    let status = response.status();
    let mut headers = response.headers().clone();
    // What actix's HTTP/1 encoder writes on the wire from the body's size.
    if let BodySize::Sized(n) = response.response().body().size()
        && status != StatusCode::NO_CONTENT
        && !status.is_informational()
    {
        headers.insert(
            actix_web::http::header::CONTENT_LENGTH,
            actix_web::http::header::HeaderValue::from(n),
        );
    }
    let body = match actix_web::body::to_bytes(response.into_body()).await {
        Ok(b) => b,
        Err(e) => panic!("response body reads: {e}"),
    };
    TestResponse {
        status,
        headers,
        body,
    }
}

/// A request being built.
pub struct Call<'a> {
    app: &'a TestApp,
    builder: TestRequest,
    body: Bytes,
    has_length: bool,
}

impl Call<'_> {
    pub fn header(mut self, name: &str, value: impl AsRef<str>) -> Self {
        if name.eq_ignore_ascii_case("content-length") {
            self.has_length = true;
        }
        self.builder = self
            .builder
            .append_header((name.to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Sets the body, and a matching `Content-Length` as an HTTP client would.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    pub async fn send(self) -> TestResponse {
        let mut builder = self.builder;
        if !self.has_length && !self.body.is_empty() {
            builder = builder.insert_header(("content-length", self.body.len().to_string()));
        }
        self.app
            .send(builder.set_payload(self.body).to_request())
            .await
    }

    /// Sends the body as a stream of `chunks`, without a `Content-Length` (as a
    /// client sending `Transfer-Encoding: chunked` does).
    pub async fn send_chunks(self, chunks: Vec<Bytes>) -> TestResponse {
        let request = self.builder.to_request();
        let stream = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(Ok::<_, actix_web::error::PayloadError>),
        );
        let (request, _) = request.replace_payload(actix_web::dev::Payload::Stream {
            payload: Box::pin(stream) as actix_http::BoxedPayloadStream,
        });
        self.app.send(request).await
    }
}

/// A response, read to the end.
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    /// The header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a header.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The body as JSON (panics with the text if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Checks an error answer: the status, a JSON `Content-Type`, and the
    /// registry's version header; returns the body for a snapshot.
    pub fn error(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert_eq!(
            self.header("docker-distribution-api-version"),
            Some("registry/2.0")
        );
        self.json()
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    Digest::of(Algorithm::Sha256, bytes).to_string()
}

/// An image manifest's exact bytes: `(mediaType, digest, size)` of the config and
/// of each layer.
pub fn image_manifest(
    media_type: &str,
    config: (&str, &str, usize),
    layers: &[(&str, &str, usize)],
) -> Vec<u8> {
    let descriptor =
        |(mt, d, s): (&str, &str, usize)| json!({ "mediaType": mt, "digest": d, "size": s });
    serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(config),
        "layers": layers.iter().copied().map(descriptor).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// An index's exact bytes over `(mediaType, digest, size)` children.
pub fn index_manifest(media_type: &str, children: &[(&str, &str, usize)]) -> Vec<u8> {
    let manifests: Vec<Value> = children
        .iter()
        .map(|(mt, d, s)| {
            json!({
                "mediaType": mt,
                "digest": d,
                "size": s,
                "platform": { "architecture": "amd64", "os": "linux" },
            })
        })
        .collect();
    serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": manifests,
    }))
    .unwrap()
}
