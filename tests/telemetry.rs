//! Telemetry against real receivers: a `serve` process exports its spans over OTLP to
//! a collector started here (HTTP/protobuf, and gRPC over h2), decoded with the
//! official protobufs; a request carrying `traceparent` joins the caller's trace; a
//! dead collector costs requests nothing; and `/metrics`, read with a Prometheus
//! parser, moves by exactly what a push and a pull did.

#[path = "prod/mod.rs"]
mod prod;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::io::AsyncReadExt;

/// Spans a receiver got, with the `service.name` of their resource.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, Span)>>>);

impl Received {
    fn add(&self, request: ExportTraceServiceRequest) {
        let mut all = self.0.lock().unwrap();
        for resource in request.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    AnyValue::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    all.push((service.clone(), span));
                }
            }
        }
    }

    /// Waits for a span matching `f`.
    async fn wait_for(&self, f: impl Fn(&Span) -> bool) -> (String, Span) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(found) = self.0.lock().unwrap().iter().find(|(_, s)| f(s)) {
                return found.clone();
            }
            assert!(Instant::now() < deadline, "no such span arrived");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            AnyValue::StringValue(s) => s.clone(),
            AnyValue::IntValue(i) => i.to_string(),
            AnyValue::DoubleValue(d) => d.to_string(),
            AnyValue::BoolValue(b) => b.to_string(),
            other => format!("{other:?}"),
        })
}

/// An OTLP/HTTP receiver: `POST /v1/traces` with a protobuf body.
async fn http_receiver() -> (u16, Received) {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let r = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let r = r.clone();
            tokio::spawn(async move {
                // HTTP/1.1 as the exporter sends it: a head, then Content-Length bytes.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n");
                    if let Some(end) = head_end {
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            let body = buf[end + 4..end + 4 + len].to_vec();
                            assert!(head.starts_with("post /v1/traces"), "{head}");
                            r.add(ExportTraceServiceRequest::decode(&body[..]).unwrap());
                            buf.drain(..end + 4 + len);
                            let answer = ExportTraceServiceResponse::default().encode_to_vec();
                            let reply = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\n\
                                 content-length: {}\r\n\r\n",
                                answer.len()
                            );
                            use tokio::io::AsyncWriteExt;
                            if stream.write_all(reply.as_bytes()).await.is_err()
                                || stream.write_all(&answer).await.is_err()
                            {
                                return;
                            }
                            continue;
                        }
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (port, received)
}

/// An OTLP/gRPC receiver: HTTP/2 requests to
/// `/opentelemetry.proto.collector.trace.v1.TraceService/Export`, gRPC framing.
async fn grpc_receiver() -> (u16, Received) {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let r = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let r = r.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(stream).await else {
                    return;
                };
                // The connection must keep being polled (by `accept`) while a
                // request's body arrives: each request is handled in a task.
                while let Some(Ok((request, respond))) = conn.accept().await {
                    tokio::spawn(export(request, respond, r.clone()));
                }
            });
        }
    });
    (port, received)
}

/// Answers one gRPC `Export` call.
async fn export(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<bytes::Bytes>,
    received: Received,
) {
    assert_eq!(
        request.uri().path(),
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    );
    let mut body = request.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    // One length-prefixed message: 1 byte of flags, 4 of length.
    assert_eq!(data[0], 0, "uncompressed");
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    received.add(ExportTraceServiceRequest::decode(&data[5..5 + len]).unwrap());
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(answer.len() as u32).to_be_bytes());
    framed.extend_from_slice(&answer);
    let response = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let mut send = respond.send_response(response, false).unwrap();
    send.send_data(framed.into(), false).unwrap();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    send.send_trailers(trailers).unwrap();
}

/// A `serve` process with `env`.
struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(env: &[(&str, String)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = prod::free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_packs-registry"));
        command
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir.path())
            .env("PACKS__LOG__LEVEL", "warn")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
            // Export batches every 200 ms rather than every 5 s.
            .env("OTEL_BSP_SCHEDULE_DELAY", "200")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().unwrap();
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !http
            .get(server.url("/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < deadline, "did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// Pushes a blob with a `traceparent` and checks its span at the receiver.
async fn push_joins_the_callers_trace(server: &Server, received: &Received) {
    let http = reqwest::Client::new();
    let blob = b"traced bytes".to_vec();
    let digest = prod::sha256(&blob);
    let r = http
        .post(server.url(&format!("/v2/team/app/blobs/uploads/?digest={digest}")))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .header("x-request-id", "req-42")
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-request-id"], "req-42");
    let (service, span) = received
        .wait_for(|s| attribute(s, "request_id").as_deref() == Some("req-42"))
        .await;
    assert_eq!(service, "registry-under-test");
    assert_eq!(hex(&span.trace_id), TRACE_ID, "joins the caller's trace");
    assert_eq!(
        hex(&span.parent_span_id),
        PARENT_ID,
        "child of the caller's span"
    );
    assert_eq!(span.name, "POST /v2/{name:.+}/blobs/uploads/");
    assert_eq!(attribute(&span, "repository").as_deref(), Some("team/app"));
    assert_eq!(attribute(&span, "status").as_deref(), Some("201"));
    assert_eq!(
        attribute(&span, "bytes_in").as_deref(),
        Some(blob.len().to_string().as_str())
    );
    assert_eq!(attribute(&span, "trace_id").as_deref(), Some(TRACE_ID));
    assert!(attribute(&span, "duration_ms").is_some());
    // The store and the database calls it made are its children: a slow push shows
    // which of the two was slow.
    for prefix in ["storage.put_blob", "db.link_blob"] {
        let (_, child) = received
            .wait_for(|s| s.parent_span_id == span.span_id && s.name.starts_with(prefix))
            .await;
        assert_eq!(hex(&child.trace_id), TRACE_ID, "{prefix}");
    }
    // A request without trace context starts a trace of its own.
    let r = http
        .get(server.url("/v2/"))
        .header("x-request-id", "req-43")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, span) = received
        .wait_for(|s| attribute(s, "request_id").as_deref() == Some("req-43"))
        .await;
    assert_ne!(hex(&span.trace_id), TRACE_ID);
    assert!(span.parent_span_id.is_empty(), "a root span");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn spans_reach_an_otlp_http_collector() {
    let (port, received) = http_receiver().await;
    let server = Server::start(&[
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
        ("OTEL_SERVICE_NAME", "registry-under-test".into()),
    ])
    .await;
    push_joins_the_callers_trace(&server, &received).await;
}

#[tokio::test]
async fn spans_reach_an_otlp_grpc_collector() {
    let (port, received) = grpc_receiver().await;
    let server = Server::start(&[
        (
            "PACKS__TELEMETRY__OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        ),
        ("PACKS__TELEMETRY__OTLP_PROTOCOL", "grpc".into()),
        (
            "PACKS__TELEMETRY__SERVICE_NAME",
            "registry-under-test".into(),
        ),
    ])
    .await;
    push_joins_the_callers_trace(&server, &received).await;
}

/// A collector that accepts connections and never answers (the worst kind of dead)
/// holds no request up: each answers long before the exporter's 10 s timeout would
/// have let it, and none fails.
#[tokio::test]
async fn a_dead_collector_holds_no_request_up() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            h.lock().unwrap().push(s);
        }
    });
    let server = Server::start(&[(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://127.0.0.1:{port}"),
    )])
    .await;
    let http = reqwest::Client::new();
    for i in 0..300 {
        let started = Instant::now();
        let r = http
            .get(server.url(&format!("/v2/r/manifests/t{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a request waited on the collector"
        );
    }
}

/// `/metrics`, parsed: counters move by exactly what one push and one pull did.
#[tokio::test]
async fn metrics_move_by_what_requests_did() {
    let server = Server::start(&[]).await;
    let http = reqwest::Client::new();
    let scrape = || async {
        let text = http
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
    };
    let value = |s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]| -> f64 {
        s.samples
            .iter()
            .filter(|m| m.metric == name)
            .filter(|m| labels.iter().all(|(k, v)| m.labels.get(k) == Some(*v)))
            .map(|m| match m.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    let before = scrape().await;
    let blob = vec![7u8; 100_000];
    let digest = prod::sha256(&blob);
    let r = http
        .post(server.url(&format!("/v2/r/blobs/uploads/?digest={digest}")))
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .get(server.url(&format!("/v2/r/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), blob.len());
    let after = scrape().await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let requests = "packs_registry_http_requests_total";
    assert_eq!(
        moved(requests, &[("route", "v2_upload_start"), ("status", "201")]),
        1.0
    );
    assert_eq!(
        moved(
            requests,
            &[("route", "v2_blob"), ("method", "GET"), ("status", "200")]
        ),
        1.0
    );
    // The first scrape is counted too.
    assert_eq!(moved(requests, &[("route", "metrics")]), 1.0);
    assert_eq!(
        moved("packs_registry_http_request_body_bytes_total", &[]),
        blob.len() as f64
    );
    // Out: the blob, plus the first scrape's body.
    assert!(moved("packs_registry_http_response_body_bytes_total", &[]) > blob.len() as f64);
    assert_eq!(
        moved(
            "packs_registry_http_request_duration_seconds_count",
            &[("route", "v2_blob"), ("method", "GET")]
        ),
        1.0
    );
    assert_eq!(
        value(&after, "packs_registry_uploads_in_progress", &[]),
        0.0
    );
    assert_eq!(
        value(
            &after,
            "packs_registry_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
}

/// With `telemetry.metrics_listen`, `/metrics` is served on that address and no
/// longer on the main listener.
#[tokio::test]
async fn metrics_on_a_listener_of_their_own() {
    let port = prod::free_port();
    let server = Server::start(&[(
        "PACKS__TELEMETRY__METRICS_LISTEN",
        format!("127.0.0.1:{port}"),
    )])
    .await;
    let http = reqwest::Client::new();
    let r = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("packs_registry_build_info")
    );
    let r = http.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}
