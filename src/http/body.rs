//! The one place a request body crosses from actix-web into the domain, and a
//! stored body goes back out ([`response`]).
//!
//! actix's request payload is tied to its worker thread (not `Send`), while the blob
//! store and the multipart parser take `Send` streams that may be polled from any
//! thread. [`stream`] moves the payload into a task on the request's own worker that
//! forwards its chunks through a bounded channel: memory stays bounded (at most
//! [`CHANNEL_CHUNKS`] chunks of at most actix's read buffer each wait in the channel),
//! a slow consumer slows the client through TCP flow control, and a client that sends
//! nothing for the configured stall timeout ends the stream with an error.

use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::web;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::storage::ByteStream;

/// Chunks that may wait between the socket and the consumer.
pub const CHANNEL_CHUNKS: usize = 16;

/// The request body as the domain's `Send` byte stream. With `stall`, a body that
/// delivers no byte for that long fails with [`std::io::ErrorKind::TimedOut`].
pub fn stream(payload: web::Payload, stall: Option<Duration>) -> ByteStream {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(CHANNEL_CHUNKS);
    actix_web::rt::spawn(async move {
        let mut payload = payload;
        loop {
            let next: Option<std::io::Result<Bytes>> = match stall {
                Some(limit) => match tokio::time::timeout(limit, payload.next()).await {
                    Ok(next) => next.map(|r| r.map_err(std::io::Error::other)),
                    Err(_) => Some(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the request body sent nothing for {} s", limit.as_secs()),
                    ))),
                },
                None => payload
                    .next()
                    .await
                    .map(|r| r.map_err(std::io::Error::other)),
            };
            match next {
                None => break,
                Some(Ok(chunk)) if chunk.is_empty() => {}
                Some(item) => {
                    let failed = item.is_err();
                    // The consumer went away (it failed or finished early): stop reading.
                    if tx.send(item).await.is_err() || failed {
                        break;
                    }
                }
            }
        }
    });
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// Largest piece of a response body handed to actix-web at a time.
///
/// actix-web copies each piece into its connection's write buffer, and the buffer
/// keeps the capacity it grew to for as long as the connection lives. With the
/// store's 2 MiB chunks, every keep-alive connection that had served a download held
/// 2-4 MiB while idle (two such connections were a quarter of the server's memory
/// after the benchmark workload). Pieces are slices of the chunk read (no copy), so
/// a read still costs one trip to a blocking thread per 2 MiB.
pub const RESPONSE_PIECE: usize = 256 * 1024;

/// A stored body of `len` bytes as a response body, in pieces of at most
/// [`RESPONSE_PIECE`] bytes.
pub fn response(
    len: u64,
    body: ByteStream,
) -> SizedStream<impl futures_util::Stream<Item = std::io::Result<Bytes>> + 'static> {
    SizedStream::new(
        len,
        body.flat_map(|item| futures_util::stream::iter(pieces(item))),
    )
}

fn pieces(item: std::io::Result<Bytes>) -> Vec<std::io::Result<Bytes>> {
    match item {
        Ok(mut chunk) => {
            let mut out = Vec::with_capacity(chunk.len().div_ceil(RESPONSE_PIECE));
            while chunk.len() > RESPONSE_PIECE {
                out.push(Ok(chunk.split_to(RESPONSE_PIECE)));
            }
            out.push(Ok(chunk));
            out
        }
        Err(e) => vec![Err(e)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk goes out as slices of itself, in order, none larger than a piece; an
    /// error stays an error.
    #[test]
    fn chunks_go_out_in_pieces_of_themselves() {
        let chunk = Bytes::from(
            (0..(2 * RESPONSE_PIECE + 5))
                .map(|i| i as u8)
                .collect::<Vec<_>>(),
        );
        let out: Vec<Bytes> = pieces(Ok(chunk.clone()))
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            out.iter().map(Bytes::len).collect::<Vec<_>>(),
            [RESPONSE_PIECE, RESPONSE_PIECE, 5]
        );
        assert_eq!(out.concat(), chunk);
        assert_eq!(
            out[1].as_ptr(),
            chunk[RESPONSE_PIECE..].as_ptr(),
            "a slice, not a copy"
        );
        assert_eq!(pieces(Ok(Bytes::from_static(b"small"))).len(), 1);
        assert!(
            pieces(Err(std::io::Error::other("disk")))
                .pop()
                .unwrap()
                .is_err()
        );
    }
}
