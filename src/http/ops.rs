//! Operations endpoints and telemetry: `/healthz` (liveness), `/readyz` (database and
//! object store reachable), `/metrics` (Prometheus text), and the request metrics
//! middleware that feeds it. Knows no OCI or pack semantics.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, web};
use bytes::Bytes;
use futures_util::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry as PromRegistry;
use serde_json::json;
use tracing::Instrument;

use super::State;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    method: &'static str,
}

/// The registry's Prometheus metrics.
pub struct Metrics {
    registry: PromRegistry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    bytes_in: Counter,
    bytes_out: Counter,
    uploads: Gauge,
    auth_failures: Family<Vec<(&'static str, &'static str)>, Counter>,
    storage_ops: Family<Vec<(&'static str, &'static str)>, Counter>,
    storage_seconds: Family<Vec<(&'static str, &'static str)>, Histogram>,
    db_connections: Family<Vec<(&'static str, &'static str)>, Gauge>,
    db_waiting: Gauge,
    db_acquires: Counter,
    db_wait_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Storage figures and garbage collection results, from the database.
    figures: Arc<super::figures::Figures>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = PromRegistry::with_prefix("packs_registry");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let bytes_in = Counter::default();
        let bytes_out = Counter::default();
        let uploads = Gauge::default();
        let storage_ops = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        let storage_seconds =
            Family::<Vec<(&'static str, &'static str)>, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            });
        let db_connections = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
        let db_waiting = Gauge::default();
        let db_acquires = Counter::default();
        let db_wait_seconds = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "storage_operations",
            "Blob store operations by operation and outcome (ok or error; a missing \
             blob is ok)",
            storage_ops.clone(),
        );
        registry.register(
            "storage_operation_duration_seconds",
            "Blob store operation time, by operation (a download's until it is opened)",
            storage_seconds.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Database connections in the pool, by state (in_use, idle)",
            db_connections.clone(),
        );
        registry.register(
            "db_pool_waiting",
            "Requests waiting for a database connection right now",
            db_waiting.clone(),
        );
        registry.register(
            "db_pool_acquires",
            "Database connections taken from the pool (PostgreSQL)",
            db_acquires.clone(),
        );
        registry.register(
            "db_pool_wait_seconds",
            "Time spent waiting for a database connection, in all (PostgreSQL)",
            db_wait_seconds.clone(),
        );
        let auth_failures = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        registry.register(
            "auth_failures",
            "Refused credentials and tokens (failed logins among them), by reason",
            auth_failures.clone(),
        );
        let build = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
        build
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register(
            "build_info",
            "The running build: its version as a label, value 1",
            build,
        );
        registry.register(
            "uploads_in_progress",
            "Requests streaming blob or pack content in right now",
            uploads.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to the response head, by route and method",
            latency.clone(),
        );
        registry.register(
            "http_request_body_bytes",
            "Request body bytes received",
            bytes_in.clone(),
        );
        registry.register(
            "http_response_body_bytes",
            "Response body bytes sent",
            bytes_out.clone(),
        );
        let figures = Arc::new(super::figures::Figures::default());
        registry.register_collector(Box::new(figures.clone()));
        Metrics {
            figures,
            registry,
            requests,
            latency,
            bytes_in,
            bytes_out,
            uploads,
            auth_failures,
            storage_ops,
            storage_seconds,
            db_connections,
            db_waiting,
            db_acquires,
            db_wait_seconds,
        }
    }
}

impl Metrics {
    /// Counts a refused credential or token.
    pub fn auth_failure(&self, error: &crate::auth::AuthError) {
        use crate::auth::AuthError as E;
        let reason = match error {
            E::Missing => "missing",
            E::BadCredentials => "bad_credentials",
            E::Malformed => "malformed",
            E::UnknownKey => "unknown_key",
            E::Expired => "expired",
            E::Limits => "limits",
            E::Denied => "denied",
            E::Disabled => "disabled",
            E::Internal(_) => "internal",
        };
        self.auth_failures
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    /// Counts an upload request in progress until the guard is dropped.
    pub fn upload_in_progress(&self) -> UploadInProgress {
        self.uploads.inc();
        UploadInProgress(self.uploads.clone())
    }

    /// Sets the database pool figures (read at scrape time).
    pub fn pool(&self, stats: &crate::metadata::PoolStats) {
        let idle = stats.idle.min(stats.size);
        self.db_connections
            .get_or_create(&vec![("state", "in_use")])
            .set((stats.size - idle) as i64);
        self.db_connections
            .get_or_create(&vec![("state", "idle")])
            .set(idle as i64);
        self.db_waiting.set(stats.waiting as i64);
        let acquires = stats.acquires.saturating_sub(self.db_acquires.get());
        self.db_acquires.inc_by(acquires);
        let waited = stats.wait_seconds - self.db_wait_seconds.get();
        if waited > 0.0 {
            self.db_wait_seconds.inc_by(waited);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encode to String");
        out
    }
}

impl crate::storage::Observer for Metrics {
    fn storage_operation(&self, op: &'static str, ok: bool, elapsed: std::time::Duration) {
        let op = op.trim_start_matches("storage.");
        self.storage_ops
            .get_or_create(&vec![
                ("op", op),
                ("outcome", if ok { "ok" } else { "error" }),
            ])
            .inc();
        self.storage_seconds
            .get_or_create(&vec![("op", op)])
            .observe(elapsed.as_secs_f64());
    }
}

/// An upload request in progress (see [`Metrics::upload_in_progress`]).
pub struct UploadInProgress(Gauge);

impl Drop for UploadInProgress {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Registers `/healthz`, `/readyz` and, when `with_metrics` (no listener of its own,
/// `telemetry.metrics_listen`), `/metrics`.
pub fn routes(cfg: &mut web::ServiceConfig, with_metrics: bool) {
    // Load balancers probe with GET or HEAD.
    cfg.service(
        web::resource("/healthz")
            .name("healthz")
            .get(healthz)
            .route(web::head().to(healthz)),
    )
    .service(
        web::resource("/readyz")
            .name("readyz")
            .get(readyz)
            .route(web::head().to(readyz)),
    );
    if with_metrics {
        cfg.configure(metrics_routes);
    }
}

/// Registers `/metrics` alone (the main application, or the listener of
/// `telemetry.metrics_listen`).
pub fn metrics_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/metrics")
            .name("metrics")
            .wrap(actix_web::middleware::from_fn(guard_metrics))
            .get(metrics),
    );
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Readiness: each dependency's name and state. Why one is unavailable (paths, hosts,
/// database users) goes to the log only: the probe is often reachable by anyone.
async fn readyz(state: State) -> HttpResponse {
    let checks = state.registry.readiness().await;
    let ready = checks.iter().all(|c| c.error.is_none());
    for c in &checks {
        if let Some(e) = &c.error {
            tracing::warn!(dependency = c.name, error = %e, "not ready");
        }
    }
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": checks.iter().map(|c| (c.name.to_owned(), json!({
            "status": if c.error.is_none() { "ok" } else { "unavailable" },
        }))).collect::<serde_json::Map<_, _>>(),
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// `/metrics` needs the catalog grant when `auth.protect_metrics` is on (it names
/// repositories' routes and the registry's activity); else it is open.
async fn guard_metrics(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    super::auth::guard(
        req,
        next,
        |req| {
            let protect = req
                .app_data::<State>()
                .is_some_and(|s| s.config.auth.protect_metrics);
            if protect {
                super::auth::Guard::Needs(super::auth::Needs::catalog())
            } else {
                super::auth::Guard::Open
            }
        },
        |refusal| {
            HttpResponse::build(refusal.status())
                .json(json!({ "error": refusal.error.to_string() }))
        },
    )
    .await
}

async fn metrics(state: State) -> HttpResponse {
    state.metrics.pool(&state.registry.pool_stats());
    let top = state.config.gc.metrics_repositories;
    match tokio::try_join!(
        state.registry.storage_usage(top),
        state.registry.gc_totals()
    ) {
        Ok((usage, totals)) => state.metrics.figures.set(usage, totals),
        Err(e) => tracing::warn!(error = %e, "storage figures unavailable for /metrics"),
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.render())
}

/// The `method` label: the standard methods by name, anything else `other` (a
/// client choosing methods must not grow the label set).
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method as M;
    match *method {
        M::GET => "GET",
        M::HEAD => "HEAD",
        M::POST => "POST",
        M::PUT => "PUT",
        M::PATCH => "PATCH",
        M::DELETE => "DELETE",
        M::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The request id of a request: the client's `X-Request-Id` when it is a sensible
/// token (visible ASCII, at most 128 characters), else a fresh one.
fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned)
}

/// Reads W3C trace context from request headers.
struct HeaderExtractor<'a>(&'a actix_web::http::header::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Middleware around every request: a `request` span (method, route template,
/// repository, reference, status, bytes both ways, duration, request id, trace id;
/// a child of the caller's trace when the request carries `traceparent`), the
/// `X-Request-Id` echoed, and the Prometheus request metrics (count by route name,
/// method and status; latency to the response head; body bytes). The span and the
/// completion log line end with the response body, so a download's span covers its
/// transfer.
pub async fn track(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<CountedBody>, actix_web::Error> {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let start = Instant::now();
    crate::memory::request_started();
    let metrics = req
        .app_data::<State>()
        .map(|s| s.metrics.clone())
        .expect("the application state is registered");
    let method = method_label(req.method());
    let id = request_id(&req);
    let received = Arc::new(AtomicU64::new(0));
    let bytes_in = metrics.bytes_in.clone();
    let counted = received.clone();
    let payload = req.take_payload().map(move |chunk| {
        if let Ok(bytes) = &chunk {
            bytes_in.inc_by(bytes.len() as u64);
            counted.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        chunk
    });
    req.set_payload(Payload::Stream {
        payload: Box::pin(payload),
    });
    let span = tracing::info_span!(
        "request",
        otel.kind = "server",
        method = %req.method(),
        path = %req.path(),
        route = tracing::field::Empty,
        repository = tracing::field::Empty,
        reference = tracing::field::Empty,
        status = tracing::field::Empty,
        bytes_in = tracing::field::Empty,
        bytes_out = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
        request_id = %id,
        trace_id = tracing::field::Empty,
    );
    let parent = opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .extract(&HeaderExtractor(req.headers()));
    let _ = span.set_parent(parent.clone());
    let own = span.context().span().span_context().trace_id();
    let caller = parent.span().span_context().trace_id();
    let trace_id = [own, caller]
        .into_iter()
        .find(|t| *t != opentelemetry::trace::TraceId::INVALID);
    if let Some(t) = trace_id {
        span.record("trace_id", tracing::field::display(t));
    }

    let result = next.call(req).instrument(span.clone()).await;
    let (route, status) = match &result {
        Ok(response) => {
            let request = response.request();
            if let Some(pattern) = request.match_pattern() {
                // The exported span's name: method and route template (the span
                // was started before routing, so it is renamed, not recorded).
                span.context()
                    .span()
                    .update_name(format!("{} {pattern}", request.method()));
                span.record("route", pattern.as_str());
            }
            let info = request.match_info();
            if let Some(name) = info.get("name") {
                span.record("repository", name);
            }
            if let Some(reference) = info
                .get("reference")
                .or_else(|| info.get("digest"))
                .or_else(|| info.get("version"))
            {
                span.record("reference", reference);
            }
            (
                request
                    .match_name()
                    .and_then(route_label)
                    .unwrap_or("unmatched"),
                response.status(),
            )
        }
        // An error that escaped the handlers (a caught panic): actix answers it.
        Err(e) => ("unmatched", e.as_response_error().status_code()),
    };
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: status.as_u16(),
        })
        .inc();
    metrics
        .latency
        .get_or_create(&RouteLabels { route, method })
        .observe(start.elapsed().as_secs_f64());
    span.record("status", status.as_u16());
    let mut response = result?.map_into_boxed_body();
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&id) {
        response.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("x-request-id"),
            value,
        );
    }
    let bytes_out = metrics.bytes_out.clone();
    Ok(response.map_body(|_, body| CountedBody {
        inner: body,
        counter: bytes_out,
        sent: 0,
        end: Some(RequestEnd {
            span,
            start,
            received,
            server_error: status.is_server_error(),
        }),
    }))
}

/// What closes a request's span when its response body ends (or is dropped).
struct RequestEnd {
    span: tracing::Span,
    start: Instant,
    received: Arc<AtomicU64>,
    server_error: bool,
}

impl RequestEnd {
    fn finish(self, sent: u64) {
        let elapsed = self.start.elapsed();
        let span = self.span;
        span.record("bytes_out", sent);
        span.record("bytes_in", self.received.load(Ordering::Relaxed));
        span.record("duration_ms", elapsed.as_secs_f64() * 1e3);
        span.in_scope(|| {
            if self.server_error {
                tracing::warn!("request failed");
            } else {
                tracing::debug!("request");
            }
        });
    }
}

/// The route names of [`super::app`]'s resources, as `'static` labels.
fn route_label(name: &str) -> Option<&'static str> {
    const ROUTES: &[&str] = &[
        "v2_base",
        "v2_catalog",
        "v2_tags_list",
        "v2_manifest",
        "v2_referrers",
        "v2_upload_start",
        "v2_upload",
        "v2_blob",
        "packs_list",
        "packs_openapi",
        "packs_get",
        "packs_versions",
        "packs_content",
        "packs_export",
        "packs_import",
        "healthz",
        "readyz",
        "metrics",
        "token",
    ];
    ROUTES.iter().copied().find(|r| *r == name)
}

/// A response body that counts the bytes it yields and ends its request's span when
/// it ends; its size is the inner body's, so `Content-Length` answers (and `HEAD`)
/// are unchanged.
pub struct CountedBody {
    inner: BoxBody,
    counter: Counter,
    sent: u64,
    end: Option<RequestEnd>,
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        if let Some(end) = self.end.take() {
            end.finish(self.sent);
        }
    }
}

impl MessageBody for CountedBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                this.counter.inc_by(bytes.len() as u64);
                this.sent += bytes.len() as u64;
                Poll::Ready(Some(Ok(bytes)))
            }
            Poll::Ready(None) => {
                if let Some(end) = this.end.take() {
                    end.finish(this.sent);
                }
                Poll::Ready(None)
            }
            other => other,
        }
    }

    fn try_into_bytes(mut self) -> Result<Bytes, Self>
    where
        Self: Sized,
    {
        // actix's fast path for bodies already in memory (manifests, JSON).
        let inner = std::mem::replace(&mut self.inner, BoxBody::new(()));
        match inner.try_into_bytes() {
            Ok(bytes) => {
                self.counter.inc_by(bytes.len() as u64);
                self.sent += bytes.len() as u64;
                Ok(bytes)
            }
            Err(inner) => {
                self.inner = inner;
                Err(self)
            }
        }
    }
}
