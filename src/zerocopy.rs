//! Zero-copy downloads: the listening socket's connections can send ranges of a local
//! file with `sendfile(2)`, page cache to socket, instead of copying them through a
//! buffer in user space.
//!
//! hyper writes what a response body yields and knows nothing of files, so a file
//! range travels through it as a *stand-in*: a [`Bytes`] over a static region that
//! nothing reads. [`FileSink::send_file`] queues the range on the connection and returns
//! the stand-in, which the body yields as its frame. hyper hands its frames, unread,
//! to [`ZeroCopyStream::poll_write_vectored`] (an `IoSlice` per buffer, as it does for
//! every connection that takes vectored writes), and there a slice that points into the
//! stand-in region is sent from the file at the front of the queue, advancing through
//! it exactly as hyper advances through the frame.
//!
//! Only HTTP/1 does this (one response at a time on a connection, frames written in the
//! order they are yielded); the handler offers the sink only then. Anything that read
//! a stand-in would see zeros, so nothing between the handler and hyper may read
//! response bodies (the metrics middleware counts their lengths only).
//!
//! On filesystems the blob store cannot tell are cached, and off Linux, no range is
//! queued and downloads are copied as before (see `storage::fs`).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use axum::extract::FromRequestParts;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::http::request::Parts;
use axum::http::{Extensions, Version};
use axum::serve::{IncomingStream, Listener};
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::storage::{DynFileSink, FileSink, SEND_FILE_MAX};

/// What stand-in frames point into. Never read: only its address range matters.
static STAND_IN: [u8; SEND_FILE_MAX] = [0; SEND_FILE_MAX];

/// Where `buf` starts inside [`STAND_IN`], if it is a stand-in.
fn stand_in_offset(buf: &[u8]) -> Option<usize> {
    let base = STAND_IN.as_ptr() as usize;
    let at = buf.as_ptr() as usize;
    (!buf.is_empty() && at >= base && at < base + SEND_FILE_MAX).then(|| at - base)
}

/// A file range queued on a connection.
struct Span {
    file: Arc<std::fs::File>,
    offset: u64,
    len: usize,
}

/// The ranges a connection has yet to send, in the order their stand-ins were yielded.
struct Queue {
    spans: Mutex<VecDeque<Span>>,
    sent: Counter,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Span>> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Accepts TCP connections that can send file ranges zero-copy (see the module docs).
pub struct ZeroCopyListener {
    inner: TcpListener,
    sent: Counter,
}

impl ZeroCopyListener {
    /// Wraps `inner`; bytes sent with `sendfile` are counted in `sent`.
    pub fn new(inner: TcpListener, sent: Counter) -> Self {
        ZeroCopyListener { inner, sent }
    }
}

impl Listener for ZeroCopyListener {
    type Io = ZeroCopyStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (tcp, addr) = Listener::accept(&mut self.inner).await;
        // A zero-copy response is two writes, the head and then the file range, and
        // with Nagle's algorithm on the second one (when smaller than a segment) waits
        // for the first's ACK, which the client delays: a cached 4 KiB range took
        // 43 ms instead of under 1. Every response goes out as soon as it is written.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        (ZeroCopyStream::new(tcp, self.sent.clone()), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Listener::local_addr(&self.inner)
    }
}

/// A connection's handle for queuing file ranges, put in each request's extensions as
/// `ConnectInfo<SendFile>` by `into_make_service_with_connect_info`.
#[derive(Clone)]
pub struct SendFile(Arc<Queue>);

/// The sink of the connection a request came on: `None` unless it is HTTP/1 on a
/// [`ZeroCopyListener`] (not HTTP/2, whose streams share the connection; not a request
/// handed to the router in process, as tests do).
pub fn sink_of(extensions: &Extensions, version: Version) -> Option<DynFileSink> {
    if version > Version::HTTP_11 {
        return None;
    }
    let ConnectInfo(send) = extensions.get::<ConnectInfo<SendFile>>()?;
    Some(send.0.clone())
}

/// Extractor of [`sink_of`].
pub struct Sink(pub Option<DynFileSink>);

impl<S: Send + Sync> FromRequestParts<S> for Sink {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Sink(sink_of(&parts.extensions, parts.version)))
    }
}

impl Connected<IncomingStream<'_, ZeroCopyListener>> for SendFile {
    fn connect_info(stream: IncomingStream<'_, ZeroCopyListener>) -> Self {
        SendFile(stream.io().queue.clone())
    }
}

impl FileSink for Queue {
    fn send_file(&self, file: Arc<std::fs::File>, offset: u64, len: usize) -> Bytes {
        assert!(
            len > 0 && len <= SEND_FILE_MAX,
            "file spans are 1..=SEND_FILE_MAX bytes"
        );
        self.lock().push_back(Span { file, offset, len });
        Bytes::from_static(&STAND_IN[..len])
    }
}

/// A TCP connection whose writes send stand-ins from their files (see the module docs).
pub struct ZeroCopyStream {
    tcp: TcpStream,
    queue: Arc<Queue>,
}

impl ZeroCopyStream {
    fn new(tcp: TcpStream, sent: Counter) -> Self {
        ZeroCopyStream {
            tcp,
            queue: Arc::new(Queue {
                spans: Mutex::new(VecDeque::new()),
                sent,
            }),
        }
    }

    /// Sends the stand-in `buf` (at `at` in the stand-in region) from the file at the
    /// front of the queue: as much as the socket takes now.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        at: usize,
    ) -> Poll<io::Result<usize>> {
        let (file, offset, rest) = {
            let spans = self.queue.lock();
            let Some(span) = spans.front() else {
                return Poll::Ready(Err(io::Error::other(
                    "a file stand-in was written with no file range queued",
                )));
            };
            if at + buf.len() > span.len {
                return Poll::Ready(Err(io::Error::other(
                    "a file stand-in does not match the range queued for it",
                )));
            }
            (span.file.clone(), span.offset + at as u64, span.len - at)
        };
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            match self.tcp.try_io(tokio::io::Interest::WRITABLE, || {
                send_file(&self.tcp, &file, offset, buf.len())
            }) {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "a file ended before the range queued from it",
                    )));
                }
                Ok(n) => {
                    if n == rest {
                        self.queue.lock().pop_front();
                    }
                    self.queue.sent.inc_by(n as u64);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// One `sendfile(2)` of up to `len` bytes of `file` at `offset` to the socket.
#[cfg(target_os = "linux")]
fn send_file(tcp: &TcpStream, file: &std::fs::File, offset: u64, len: usize) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut off = libc::off_t::try_from(offset).map_err(io::Error::other)?;
    // SAFETY: both descriptors are open for the call's duration (borrowed), and `off`
    // is a live local the kernel writes the new offset to.
    let n = unsafe { libc::sendfile(tcp.as_raw_fd(), file.as_raw_fd(), &mut off, len) };
    if n >= 0 {
        return Ok(n as usize);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        // A filesystem that cannot splice its pages: copy instead.
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => copy_range(tcp, file, offset, len),
        _ => Err(e),
    }
}

/// Reads up to `len` bytes of `file` at `offset` and sends what the socket takes now
/// (without blocking: `WouldBlock` when it takes nothing). What was read and not sent
/// is read again by the next call.
#[cfg(target_os = "linux")]
fn copy_range(tcp: &TcpStream, file: &std::fs::File, offset: u64, len: usize) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len.min(256 * 1024)];
    let n = file.read_at(&mut buf, offset)?;
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: the buffer holds `n` initialized bytes for the call's duration; the
    // descriptor is borrowed from the open stream.
    let sent = unsafe {
        libc::send(
            tcp.as_raw_fd(),
            buf.as_ptr().cast(),
            n,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

/// Off Linux no file range is ever queued: the filesystem backend cannot tell what
/// is cached there (`storage::fs::all_cached` is `None`), so it reads every chunk.
#[cfg(not(target_os = "linux"))]
fn send_file(_: &TcpStream, _: &std::fs::File, _: u64, _: usize) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "file ranges are sent only on Linux",
    ))
}

impl AsyncRead for ZeroCopyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for ZeroCopyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match stand_in_offset(buf) {
            Some(at) => this.poll_send(cx, buf, at),
            None => Pin::new(&mut this.tcp).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Plain buffers up to the first stand-in go out in one writev; a stand-in at
        // the front goes out alone.
        match bufs.iter().position(|b| stand_in_offset(b).is_some()) {
            None => Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs),
            Some(0) => {
                let at = stand_in_offset(&bufs[0]).expect("found above");
                this.poll_send(cx, &bufs[0], at)
            }
            Some(k) => Pin::new(&mut this.tcp).poll_write_vectored(cx, &bufs[..k]),
        }
    }

    fn is_write_vectored(&self) -> bool {
        // hyper then queues body frames as they are (its "queue" strategy) instead of
        // copying them into one buffer, which would read the stand-ins.
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A connected pair: our end wrapped, the peer plain.
    async fn pair() -> (ZeroCopyStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (
            ZeroCopyStream::new(server.unwrap().0, Counter::default()),
            client.unwrap(),
        )
    }

    /// Connections come with Nagle's algorithm off (see [`ZeroCopyListener::accept`]).
    #[tokio::test]
    async fn accepted_connections_send_without_delay() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let mut listener = ZeroCopyListener::new(inner, Counter::default());
        let (client, (ours, _)) = tokio::join!(TcpStream::connect(addr), listener.accept());
        assert!(ours.tcp.nodelay().unwrap());
        assert!(!client.unwrap().nodelay().unwrap(), "off unless set");
    }

    fn file_with(bytes: &[u8]) -> Arc<std::fs::File> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        Arc::new(f)
    }

    /// Plain buffers and stand-ins interleave on the wire in order, each stand-in
    /// replaced by exactly its range, through partial writes (the peer reads slowly,
    /// so the socket fills and writes come back short).
    #[tokio::test]
    async fn stand_ins_become_their_file_ranges_in_order() {
        let data: Vec<u8> = (0..16 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let file = file_with(&data);
        let (mut ours, mut peer) = pair().await;
        let queue = ours.queue.clone();
        let sent = queue.sent.clone();
        let ranges = [
            (5u64, SEND_FILE_MAX),
            (1, 1),
            (8 * 1024 * 1024 + 7, 7 * 1024 * 1024),
        ];
        let mut frames: Vec<Bytes> = Vec::new();
        let mut expected = Vec::new();
        for (i, &(offset, len)) in ranges.iter().enumerate() {
            let head = Bytes::from(format!("frame {i}:"));
            expected.extend_from_slice(&head);
            frames.push(head);
            frames.push(queue.send_file(file.clone(), offset, len));
            expected.extend_from_slice(&data[offset as usize..offset as usize + len]);
        }
        let writer = tokio::spawn(async move {
            // Like hyper's flush: a writev over what is left, advancing by what went.
            while !frames.is_empty() {
                let iovs: Vec<IoSlice<'_>> = frames.iter().map(|b| IoSlice::new(b)).collect();
                let mut n = ours.write_vectored(&iovs).await.unwrap();
                assert!(n > 0);
                while n > 0 {
                    let take = n.min(frames[0].len());
                    let _ = frames[0].split_to(take);
                    if frames[0].is_empty() {
                        frames.remove(0);
                    }
                    n -= take;
                }
            }
            ours.shutdown().await.unwrap();
            ours
        });
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = peer.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.len() % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let ours = writer.await.unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(
            got == expected,
            "bytes on the wire differ from the file ranges"
        );
        assert!(
            ours.queue.lock().is_empty(),
            "every range was sent and dropped"
        );
        let file_bytes: usize = ranges.iter().map(|r| r.1).sum();
        assert_eq!(sent.get(), file_bytes as u64);
    }

    /// The copying fallback (for filesystems `sendfile` refuses) sends the same bytes.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_copy_fallback_sends_the_range() {
        let data: Vec<u8> = (0..600_000u32).map(|i| (i % 253) as u8).collect();
        let file = file_with(&data);
        let (ours, mut peer) = pair().await;
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 500_000];
            peer.read_exact(&mut got).await.unwrap();
            got
        });
        let mut at = 0usize;
        while at < 500_000 {
            ours.tcp.writable().await.unwrap();
            match ours.tcp.try_io(tokio::io::Interest::WRITABLE, || {
                copy_range(&ours.tcp, &file, 7 + at as u64, 500_000 - at)
            }) {
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(reader.await.unwrap() == data[7..500_007]);
    }

    /// A stand-in with nothing queued for it fails the write instead of sending zeros.
    #[tokio::test]
    async fn a_stand_in_with_no_range_fails_the_write() {
        let (mut ours, _peer) = pair().await;
        let err = ours.write(&STAND_IN[..10]).await.unwrap_err();
        assert!(err.to_string().contains("no file range"), "{err}");
        let file = file_with(b"abc");
        let frame = ours.queue.send_file(file, 0, 3);
        let err = ours.write(&STAND_IN[..frame.len() + 1]).await.unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    /// A file shorter than its range ends the connection with an error.
    #[tokio::test]
    async fn a_short_file_fails_the_write() {
        let (mut ours, _peer) = pair().await;
        let frame = ours.queue.send_file(file_with(b"abc"), 3, 2);
        let err = ours.write(&frame).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
