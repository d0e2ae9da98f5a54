//! Logs and traces: the `tracing` subscriber every command installs, and, when an
//! OTLP collector is configured, the OpenTelemetry pipeline that exports the same
//! spans (DESIGN §12).
//!
//! - Logs: human text on a terminal or JSON lines (`log.format`), filtered by
//!   `log.level` or `RUST_LOG`. A line written inside a request carries the request's
//!   span (its request id and trace id).
//! - Traces: exported over OTLP (gRPC or HTTP/protobuf) when `telemetry.otlp_endpoint`
//!   or the standard `OTEL_EXPORTER_OTLP_*` variables say where. Spans are batched on
//!   a thread of their own and dropped, never waited for, when the collector is slow
//!   or gone: a request never waits on telemetry. W3C `traceparent`/`tracestate` on a
//!   request make its span a child of the caller's (see `http::ops::track`).
//!   Nothing is exported, and nothing is logged about it, when no endpoint is set.
//!
//! [`Telemetry::shutdown`] flushes what is batched; `main` calls it at exit.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Config, LogFormat, OtlpProtocol};

/// The installed pipeline; keep it until exit.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// The runtime the gRPC exporter's connection lives on (tonic needs one of its
    /// own, apart from the HTTP workers', so that a flush at exit can complete).
    runtime: Option<tokio::runtime::Runtime>,
}

/// Where traces go, once the configuration and environment are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Collector endpoint.
    pub endpoint: String,
    /// Protocol.
    pub protocol: OtlpProtocol,
    /// `service.name`.
    pub service_name: String,
}

impl Export {
    /// The export configured by `config` and the `OTEL_*` environment, if any.
    pub fn from_config(config: &Config, env: impl Fn(&str) -> Option<String>) -> Option<Export> {
        let t = &config.telemetry;
        let nonempty = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let endpoint = if t.otlp_endpoint.is_empty() {
            nonempty("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .or_else(|| nonempty("OTEL_EXPORTER_OTLP_ENDPOINT"))?
        } else {
            t.otlp_endpoint.clone()
        };
        let protocol = t.otlp_protocol.unwrap_or_else(|| {
            match nonempty("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                .or_else(|| nonempty("OTEL_EXPORTER_OTLP_PROTOCOL"))
                .as_deref()
            {
                Some("grpc") => OtlpProtocol::Grpc,
                _ => OtlpProtocol::HttpProtobuf,
            }
        });
        let service_name = if t.service_name.is_empty() {
            nonempty("OTEL_SERVICE_NAME").unwrap_or_else(|| "packs-registry".into())
        } else {
            t.service_name.clone()
        };
        Some(Export {
            endpoint,
            protocol,
            service_name,
        })
    }

    /// The HTTP endpoint of traces: the OTLP path appended to a base endpoint (as
    /// the OTLP specification asks of `OTEL_EXPORTER_OTLP_ENDPOINT`), unless a path
    /// is already there.
    fn traces_url(&self) -> String {
        let e = self.endpoint.trim_end_matches('/');
        let has_path = e
            .split_once("://")
            .map_or(e, |(_, rest)| rest)
            .contains('/');
        if has_path {
            e.to_owned()
        } else {
            format!("{e}/v1/traces")
        }
    }
}

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
#[error("telemetry: {0}")]
pub struct TelemetryError(String);

impl Telemetry {
    /// Installs the global subscriber (logs, and traces when configured) and the W3C
    /// propagator. Call once, early.
    pub fn init(config: &Config) -> Result<Telemetry, TelemetryError> {
        let filter = || {
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level))
        };
        // Colours only for a terminal: log files and collectors get plain text.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let fmt = match config.log.format {
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_filter(filter())
                .boxed(),
            LogFormat::Text => tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .with_filter(filter())
                .boxed(),
        };
        let export = Export::from_config(config, |k| std::env::var(k).ok());
        let mut telemetry = Telemetry {
            provider: None,
            runtime: None,
        };
        let otel = match &export {
            Some(export) => {
                let provider = telemetry.provider(export)?;
                let tracer = provider.tracer("packs-registry");
                telemetry.provider = Some(provider);
                // Spans of this crate at every level the logs would not show, and
                // nothing from the exporter's own dependencies (no feedback loop).
                let targets = tracing_subscriber::filter::Targets::new()
                    .with_target("packs_registry", tracing::Level::INFO)
                    .with_default(tracing::Level::WARN)
                    .with_target(
                        "opentelemetry",
                        tracing_subscriber::filter::LevelFilter::OFF,
                    )
                    .with_target("h2", tracing_subscriber::filter::LevelFilter::OFF)
                    .with_target("tonic", tracing_subscriber::filter::LevelFilter::OFF)
                    .with_target("hyper", tracing_subscriber::filter::LevelFilter::OFF)
                    .with_target("reqwest", tracing_subscriber::filter::LevelFilter::OFF);
                Some(
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer)
                        .with_filter(targets),
                )
            }
            None => None,
        };
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        tracing_subscriber::registry()
            .with(fmt)
            .with(otel)
            .try_init()
            .map_err(|e| TelemetryError(e.to_string()))?;
        if let Some(export) = &export {
            tracing::info!(
                endpoint = %export.endpoint,
                protocol = ?export.protocol,
                service = %export.service_name,
                "exporting traces over OTLP"
            );
        }
        Ok(telemetry)
    }

    fn provider(&mut self, export: &Export) -> Result<SdkTracerProvider, TelemetryError> {
        let fail = |e: opentelemetry_otlp::ExporterBuildError| TelemetryError(e.to_string());
        let timeout = std::time::Duration::from_secs(10);
        let exporter = match export.protocol {
            OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(export.traces_url())
                .with_timeout(timeout)
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .build()
                .map_err(fail)?,
            OtlpProtocol::Grpc => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("otlp-export")
                    .enable_all()
                    .build()
                    .map_err(|e| TelemetryError(e.to_string()))?;
                let exporter = {
                    let _entered = runtime.enter();
                    opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .with_endpoint(export.endpoint.clone())
                        .with_timeout(timeout)
                        .build()
                        .map_err(fail)?
                };
                self.runtime = Some(runtime);
                exporter
            }
        };
        let resource = Resource::builder()
            .with_service_name(export.service_name.clone())
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build())
    }

    /// Flushes batched spans (bounded by the exporter's timeout) and stops the
    /// exporter. Blocks: call it off the async runtimes' threads, or at exit.
    pub fn shutdown(mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("telemetry: flushing traces at exit failed: {e}");
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(config: &Config, env: &[(&str, &str)]) -> Option<Export> {
        Export::from_config(config, |k| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn nothing_is_exported_unless_an_endpoint_is_given() {
        assert_eq!(export(&Config::default(), &[]), None);
        assert_eq!(
            export(&Config::default(), &[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]),
            None
        );
    }

    #[test]
    fn the_environment_and_the_configuration_choose_the_export() {
        let e = export(
            &Config::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_SERVICE_NAME", "registry-eu"),
            ],
        )
        .unwrap();
        assert_eq!(e.protocol, OtlpProtocol::Grpc);
        assert_eq!(e.service_name, "registry-eu");
        let e = export(
            &Config::default(),
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")],
        )
        .unwrap();
        assert_eq!(e.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(e.traces_url(), "http://c:4318/v1/traces");
        assert_eq!(e.service_name, "packs-registry");
        let mut config = Config::default();
        config.telemetry.otlp_endpoint = "http://d:4318/custom/traces".into();
        let e = export(
            &config,
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318")],
        )
        .unwrap();
        assert_eq!(e.traces_url(), "http://d:4318/custom/traces");
    }
}
