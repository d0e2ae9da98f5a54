//! Operations endpoints and telemetry: `/healthz` (liveness), `/readyz` (database and
//! object store reachable), `/metrics` (Prometheus text), and the request metrics
//! middleware that feeds it. Knows no OCI or pack semantics.

use std::pin::Pin;
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
        Metrics {
            registry,
            requests,
            latency,
            bytes_in,
            bytes_out,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encode to String");
        out
    }
}

/// Registers `/healthz`, `/readyz` and `/metrics`.
pub fn routes(cfg: &mut web::ServiceConfig) {
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
    )
    .service(web::resource("/metrics").name("metrics").get(metrics));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn readyz(state: State) -> HttpResponse {
    let checks = state.registry.readiness().await;
    let ready = checks.iter().all(|c| c.error.is_none());
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": checks.iter().map(|c| (c.name.to_owned(), match &c.error {
            None => json!({ "status": "ok" }),
            Some(e) => json!({ "status": "unavailable", "error": e }),
        })).collect::<serde_json::Map<_, _>>(),
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics(state: State) -> HttpResponse {
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

/// Middleware: counts requests by route (the matched resource's name), method and
/// status, times them to the response head, counts body bytes both ways, and runs
/// each request in a `request` span.
pub async fn track(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<CountedBody>, actix_web::Error> {
    let start = Instant::now();
    let metrics = req
        .app_data::<State>()
        .map(|s| s.metrics.clone())
        .expect("the application state is registered");
    let method = method_label(req.method());
    let bytes_in = metrics.bytes_in.clone();
    let payload = req.take_payload().map(move |chunk| {
        if let Ok(bytes) = &chunk {
            bytes_in.inc_by(bytes.len() as u64);
        }
        chunk
    });
    req.set_payload(Payload::Stream {
        payload: Box::pin(payload),
    });
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.path(),
        route = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let result = next.call(req).instrument(span.clone()).await;
    let (route, status) = match &result {
        Ok(response) => (
            response
                .request()
                .match_name()
                .and_then(route_label)
                .unwrap_or("unmatched"),
            response.status(),
        ),
        // An error that escaped the handlers (a caught panic): actix answers it.
        Err(e) => ("unmatched", e.as_response_error().status_code()),
    };
    let status_code = status;
    let status = status.as_u16();
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status,
        })
        .inc();
    let elapsed = start.elapsed();
    metrics
        .latency
        .get_or_create(&RouteLabels { route, method })
        .observe(elapsed.as_secs_f64());
    span.record("route", route);
    span.record("status", status);
    span.in_scope(|| {
        if status_code.is_server_error() {
            tracing::warn!(elapsed_ms = elapsed.as_millis() as u64, "request failed");
        } else {
            tracing::debug!(elapsed_ms = elapsed.as_millis() as u64, "request");
        }
    });
    let bytes_out = metrics.bytes_out.clone();
    Ok(result?
        .map_into_boxed_body()
        .map_body(|_, body| CountedBody {
            inner: body,
            counter: bytes_out,
        }))
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
        "healthz",
        "readyz",
        "metrics",
    ];
    ROUTES.iter().copied().find(|r| *r == name)
}

/// A response body that counts the bytes it yields; its size is the inner body's,
/// so `Content-Length` answers (and `HEAD`) are unchanged.
pub struct CountedBody {
    inner: BoxBody,
    counter: Counter,
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
                Poll::Ready(Some(Ok(bytes)))
            }
            other => other,
        }
    }

    fn try_into_bytes(self) -> Result<Bytes, Self>
    where
        Self: Sized,
    {
        match self.inner.try_into_bytes() {
            Ok(bytes) => {
                self.counter.inc_by(bytes.len() as u64);
                Ok(bytes)
            }
            Err(inner) => Err(CountedBody {
                inner,
                counter: self.counter,
            }),
        }
    }
}
