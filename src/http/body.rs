//! The one place a request body crosses from actix-web into the domain.
//!
//! actix's request payload is tied to its worker thread (not `Send`), while the blob
//! store and the multipart parser take `Send` streams that may be polled from any
//! thread. [`stream`] moves the payload into a task on the request's own worker that
//! forwards its chunks through a bounded channel: memory stays bounded (at most
//! [`CHANNEL_CHUNKS`] chunks of at most actix's read buffer each wait in the channel),
//! a slow consumer slows the client through TCP flow control, and a client that sends
//! nothing for the configured stall timeout ends the stream with an error.

use std::time::Duration;

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
