//! Everything that knows HTTP: the actix-web application, its shared plumbing, and
//! the three APIs served over it.
//!
//! - [`oci`]: the `/v2` wire format of the OCI distribution spec (only it knows OCI
//!   headers and the OCI error envelope);
//! - [`packs`]: the `/packs` JSON facade (only it knows the facade's JSON);
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics`, and the request-metrics middleware;
//! - [`ui`]: the web UI at `/ui/` (HTML over the same domain calls as `/packs`).
//!
//! This module holds what they share: the application state, the query parser, the
//! `Range` header and partial-content answers ([`range`]), and the one bridge that
//! turns actix's request payload (not `Send`) into the `Send` byte stream the domain
//! takes ([`body`]). `oci` and `packs` import from here, never from each other.
//!
//! Handlers are extractors → one call on [`Registry`] → an answer; they return
//! `Result<HttpResponse, E>` where `E` is their API's error envelope, a
//! [`ResponseError`](actix_web::ResponseError). Nothing here touches storage or
//! metadata directly.

pub mod auth;
pub mod body;
pub mod figures;
pub mod oci;
pub mod ops;
pub mod packs;
pub mod range;
pub mod tls;
pub mod ui;

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, HttpRequest, web};

use crate::config::Config;
use crate::registry::Registry;
pub use ops::Metrics;

/// Shared state of every handler, registered once as `web::Data<AppState>`.
#[derive(Clone)]
pub struct AppState {
    /// The domain service.
    pub registry: Registry,
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Who may do what (`[auth]`).
    pub auth: crate::auth::Authorizer,
}

/// The handlers' view of the state.
pub type State = web::Data<AppState>;

/// The listener of `telemetry.metrics_listen`: `/metrics` alone.
pub fn metrics_app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(web::Data::new(state))
        .configure(ops::metrics_routes)
        .wrap(actix_web::middleware::from_fn(ops::track))
}

/// The whole application: `/v2`, `/packs`, the operations endpoints, and the
/// middleware every request passes (metrics and logging outermost, then panic
/// recovery inside each API's scope). The server and the in-process tests both build
/// exactly this.
pub fn app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let metrics_here = state.config.telemetry.metrics_listen.is_none();
    let ui = state.config.ui.enabled;
    let data = web::Data::new(state);
    App::new()
        .app_data(data.clone())
        .configure(oci::routes)
        .configure(packs::routes)
        .configure(move |cfg| ops::routes(cfg, metrics_here))
        .configure(auth::routes)
        .configure(move |cfg| ui::routes(cfg, ui))
        .wrap(actix_web::middleware::from_fn(ops::track))
}

/// Query parameters in order, repeated keys kept (`?tag=a&tag=b`). The one query
/// parser of every API; each API turns its values into typed inputs.
#[derive(Debug, Default, Clone)]
pub struct QueryPairs(Vec<(String, String)>);

impl QueryPairs {
    /// Parses the query string of `req`.
    pub fn of(req: &HttpRequest) -> Self {
        Self::parse(req.query_string())
    }

    /// Parses a raw query string (percent-decoding, `+` as space).
    pub fn parse(raw: &str) -> Self {
        QueryPairs(
            form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every pair, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// The declared `Content-Length` of a request, if any.
pub fn content_length(req: &HttpRequest) -> Option<u64> {
    req.headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// A header's value as text, if present and visible ASCII.
pub fn header_text<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Runs the rest of the chain, turning a panic into the error `on_panic` builds (each
/// API's internal-error envelope, answered 500) and a log line, instead of a dropped
/// connection. (The request cannot be kept for a response of our own: routing needs
/// it unshared, so the error travels out as an `Err` that actix answers.)
pub async fn recover_panics<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: actix_web::middleware::Next<B>,
    on_panic: impl FnOnce() -> actix_web::Error,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    use futures_util::FutureExt;
    let method = req.method().clone();
    let path = req.path().to_owned();
    match std::panic::AssertUnwindSafe(next.call(req))
        .catch_unwind()
        .await
    {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            tracing::error!(%method, %path, panic = %what, "request handler panicked");
            Err(on_panic())
        }
    }
}
