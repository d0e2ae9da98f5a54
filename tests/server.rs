//! The HTTP server as configured for production, tested against a real `serve`
//! process (embedded configuration) with raw sockets: slow and idle clients cannot
//! pin connections, a stalled request body ends its request and leaves the upload
//! resumable, the connection limit keeps the server answering under a small
//! open-file limit, and SIGTERM drains in-flight requests.
//!
//! The bounds waited on here are generous (several times the configured timeouts):
//! they check that something happens, not how fast.

#[path = "prod/mod.rs"]
mod prod;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A `serve` process on a free port with a temporary data folder.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `serve` with these `PACKS__SERVER__*` settings (and an open-file limit
    /// when `nofile` is given), and waits until it answers.
    async fn start(settings: &[(&str, &str)], nofile: Option<u32>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = prod::free_port();
        let bin = env!("CARGO_BIN_EXE_packs-registry");
        let mut command = match nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        command
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir.path())
            .env("PACKS__LOG__LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in settings {
            command.env(format!("PACKS__SERVER__{}", k.to_uppercase()), v);
        }
        let child = command.spawn().expect("start packs-registry");
        let mut server = Server {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if server.get("/v2/").await.is_ok_and(|s| s == 200) {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("packs-registry exited during start-up: {status}");
            }
            assert!(Instant::now() < deadline, "packs-registry did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(("127.0.0.1", self.port)).await.unwrap()
    }

    /// A fresh client's `GET`, answering the status.
    async fn get(&self, path: &str) -> reqwest::Result<u16> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Ok(client.get(self.url(path)).send().await?.status().as_u16())
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the server closes `stream` (a read returns end of file or an error),
/// reading and discarding what it sends; `false` if still open after `bound`.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// A client that sends its request head one byte a second never gets to hold its
/// connection: the request-head timeout closes it, and others are served meanwhile.
#[tokio::test]
async fn slow_request_heads_are_cut_off() {
    let server = Server::start(&[("request_head_timeout_secs", "2")], None).await;
    let mut slow = Vec::new();
    for _ in 0..50 {
        slow.push(server.connect().await);
    }
    let head = b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n";
    for byte in head.iter().take(6) {
        for s in &mut slow {
            // The server may already have closed it: a failed write is fine.
            let _ = s.write_all(&[*byte]).await;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(server.get("/v2/").await.unwrap(), 200);
    }
    for s in &mut slow {
        assert!(
            closed_within(s, Duration::from_secs(20)).await,
            "a slow request head kept its connection"
        );
    }
}

/// An idle keep-alive connection is closed after `keep_alive_secs`.
#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let server = Server::start(&[("keep_alive_secs", "1")], None).await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut s = server.connect().await;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        idle.push(s);
    }
    for s in &mut idle {
        assert!(
            closed_within(s, Duration::from_secs(20)).await,
            "an idle connection stayed open"
        );
    }
}

/// Under a 256-descriptor limit, 300 connections that never send a byte do not stop
/// the server: it accepts no more than its connection limit, the head timeout frees
/// slots, and a normal client is served.
#[tokio::test]
async fn many_silent_connections_under_a_small_open_file_limit() {
    let server = Server::start(&[("request_head_timeout_secs", "2")], Some(256)).await;
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(server.connect().await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = tokio::time::timeout(Duration::from_secs(30), server.get("/v2/"))
        .await
        .expect("a normal client was served while 300 silent connections were open");
    assert_eq!(status.unwrap(), 200);
    // And the server is still answering afterwards.
    drop(silent);
    assert_eq!(server.get("/readyz").await.unwrap(), 200);
}

/// A `PATCH` whose body stops arriving ends after `body_stall_timeout_secs`; the
/// upload keeps its offset (nothing of the stalled chunk counts) and is resumed.
#[tokio::test]
async fn a_stalled_chunk_ends_and_the_upload_resumes() {
    let server = Server::start(&[("body_stall_timeout_secs", "2")], None).await;
    let http = reqwest::Client::new();
    let r = http
        .post(server.url("/v2/r/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();

    let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut s = server.connect().await;
    s.write_all(
        format!(
            "PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n\
             Content-Range: 0-99999\r\nContent-Length: 100000\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    s.write_all(&content[..5_000]).await.unwrap();
    // The client goes silent; the server must give up on the body by itself.
    assert!(
        closed_within(&mut s, Duration::from_secs(30)).await,
        "a stalled body held its request"
    );

    let r = http.get(server.url(&location)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["range"], "0-0");
    let r = http
        .patch(server.url(&location))
        .header("content-range", "0-99999")
        .body(content.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let digest = prod::sha256(&content);
    let r = http
        .put(server.url(&format!("{location}?digest={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .get(server.url(&format!("/v2/r/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &content[..]);
}

/// SIGTERM drains: the listener closes, a request in flight finishes, and the
/// process exits cleanly.
#[tokio::test]
async fn sigterm_lets_requests_in_flight_finish() {
    let mut server = Server::start(&[("shutdown_timeout_secs", "30")], None).await;
    let content: Vec<u8> = (0..4_000_000u32).map(|i| (i % 253) as u8).collect();
    let digest = prod::sha256(&content);
    let mut s = server.connect().await;
    s.write_all(
        format!(
            "POST /v2/r/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: x\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            content.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    s.write_all(&content[..1_000_000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // New connections are refused once the listener is closed.
    assert!(server.get("/v2/").await.is_err(), "still accepting");
    // The upload in flight completes.
    s.write_all(&content[1_000_000..]).await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let status = tokio::task::spawn_blocking(move || server.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}
