//! Operations endpoints and telemetry: `/healthz` (liveness), `/readyz` (database and
//! object store reachable), `/metrics` (Prometheus text), and the request metrics
//! middleware that feeds it. Knows no OCI or pack semantics.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::BodyExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry as PromRegistry;
use serde_json::json;
use tracing::Instrument;

use crate::app::{AppState, RouteLabel};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
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
            "Time to the response head, by route",
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

/// Routes of this module.
pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> Response {
    let mut r = axum::Json(json!({ "status": "ok" })).into_response();
    r.extensions_mut().insert(RouteLabel("healthz"));
    r
}

async fn readyz(State(state): State<AppState>) -> Response {
    let checks = state.registry.readiness().await;
    let ready = checks.iter().all(|c| c.error.is_none());
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": checks.iter().map(|c| (c.name.to_owned(), match &c.error {
            None => json!({ "status": "ok" }),
            Some(e) => json!({ "status": "unavailable", "error": e }),
        })).collect::<serde_json::Map<_, _>>(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut r = (status, axum::Json(body)).into_response();
    r.extensions_mut().insert(RouteLabel("readyz"));
    r
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut r = (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response();
    r.extensions_mut().insert(RouteLabel("metrics"));
    r
}

/// Middleware: counts requests, times them, and counts body bytes both ways.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().as_str().to_owned();
    let bytes_in = metrics.bytes_in.clone();
    let request = request.map(|b| {
        Body::new(b.map_frame(move |f| {
            if let Some(d) = f.data_ref() {
                bytes_in.inc_by(d.len() as u64);
            }
            f
        }))
    });
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        route = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let response = next.run(request).instrument(span.clone()).await;
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map(|r| r.0)
        .unwrap_or("other");
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: response.status().as_u16(),
        })
        .inc();
    let elapsed = start.elapsed();
    metrics
        .latency
        .get_or_create(&RouteLabels { route })
        .observe(elapsed.as_secs_f64());
    span.record("route", route);
    span.record("status", response.status().as_u16());
    span.in_scope(|| {
        if response.status().is_server_error() {
            tracing::warn!(elapsed_ms = elapsed.as_millis() as u64, "request failed");
        } else {
            tracing::debug!(elapsed_ms = elapsed.as_millis() as u64, "request");
        }
    });
    let bytes_out = metrics.bytes_out.clone();
    response.map(|b| {
        Body::new(b.map_frame(move |f| {
            if let Some(d) = f.data_ref() {
                bytes_out.inc_by(d.len() as u64);
            }
            f
        }))
    })
}
