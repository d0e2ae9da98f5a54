//! Byte ranges of downloads (RFC 9110 §14): the `Range` request header, parsed once
//! with checked arithmetic, and the one builder of `200`/`206` content answers that
//! both `/v2` blob reads and `/packs` content downloads use. (The upload
//! `Content-Range` of the OCI spec is another grammar; it lives in `oci`.)

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::ops::Range;

use actix_web::body::SizedStream;
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{ACCEPT_RANGES, CONTENT_RANGE, RANGE};
use actix_web::{FromRequest, HttpRequest, HttpResponse, HttpResponseBuilder};

use crate::storage::ByteStream;

/// A `Range` request as sent, before the content's size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No `Range`, or one this server serves whole (another unit, several ranges,
    /// or unparsable numbers: RFC 9110 lets a server ignore those).
    Whole,
    /// `bytes=first-` or `bytes=first-last` (`last` inclusive).
    From {
        /// First byte.
        first: u64,
        /// Last byte, inclusive, if given.
        last: Option<u64>,
    },
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
    /// `bytes=first-last` with `last < first`: never satisfiable.
    Invalid,
}

/// A range that lies outside the content: answered 416.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsatisfiable;

impl RangeRequest {
    /// Parses a `Range` header value.
    pub fn parse(value: Option<&str>) -> Self {
        let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
            return RangeRequest::Whole;
        };
        if spec.contains(',') {
            return RangeRequest::Whole;
        }
        let Some((a, b)) = spec.split_once('-') else {
            return RangeRequest::Whole;
        };
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty() {
            return match b.parse::<u64>() {
                Ok(n) => RangeRequest::Suffix(n),
                Err(_) => RangeRequest::Whole,
            };
        }
        let Ok(first) = a.parse::<u64>() else {
            return RangeRequest::Whole;
        };
        if b.is_empty() {
            return RangeRequest::From { first, last: None };
        }
        match b.parse::<u64>() {
            // `last-pos < first-pos` is an invalid range (RFC 9110 14.1.1): refused
            // with 416, as the OCI conformance suite expects, rather than ignored.
            Ok(last) if last < first => RangeRequest::Invalid,
            Ok(last) => RangeRequest::From {
                first,
                last: Some(last),
            },
            Err(_) => RangeRequest::Whole,
        }
    }

    /// The bytes to serve of content of `size` bytes: `None` for all of it, else the
    /// end-exclusive range, clamped to the content (a `last` past the end, up to the
    /// largest 64-bit value, means "to the end").
    pub fn resolve(self, size: u64) -> Result<Option<Range<u64>>, Unsatisfiable> {
        match self {
            RangeRequest::Whole => Ok(None),
            RangeRequest::Invalid => Err(Unsatisfiable),
            RangeRequest::Suffix(n) => {
                if n == 0 || size == 0 {
                    return Err(Unsatisfiable);
                }
                Ok(Some(size - n.min(size)..size))
            }
            RangeRequest::From { first, last } => {
                if first >= size {
                    return Err(Unsatisfiable);
                }
                let end = last
                    .and_then(|l| l.checked_add(1))
                    .map_or(size, |e| e.min(size));
                Ok(Some(first..end))
            }
        }
    }
}

impl FromRequest for RangeRequest {
    type Error = Infallible;
    type Future = Ready<Result<Self, Infallible>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(RangeRequest::parse(
            req.headers().get(RANGE).and_then(|v| v.to_str().ok()),
        )))
    }
}

/// Content being answered: its whole size, the range served (if one was asked for),
/// and the bytes (`None` answers a `HEAD`: the same headers, no body).
pub struct Content {
    /// Size of the whole content.
    pub size: u64,
    /// The end-exclusive range served, if a range was asked for.
    pub range: Option<Range<u64>>,
    /// The bytes to send, or `None` for `HEAD`.
    pub body: Option<ByteStream>,
}

impl Content {
    /// Finishes `builder` (which carries the caller's own headers) as the `200` or
    /// `206` answer: `Accept-Ranges`, `Content-Range` for a part, and a body of known
    /// length, so `Content-Length` is exact for `GET` and `HEAD` alike.
    pub fn respond(self, mut builder: HttpResponseBuilder) -> HttpResponse {
        builder.insert_header((ACCEPT_RANGES, "bytes"));
        let len = match &self.range {
            Some(r) => {
                builder.status(StatusCode::PARTIAL_CONTENT);
                builder.insert_header((
                    CONTENT_RANGE,
                    format!("bytes {}-{}/{}", r.start, r.end - 1, self.size),
                ));
                r.end - r.start
            }
            None => self.size,
        };
        match self.body {
            Some(body) => builder.body(super::body::response(len, body)),
            None => builder.body(SizedStream::new(
                len,
                futures_util::stream::empty::<Result<bytes::Bytes, std::io::Error>>(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(v: Option<&str>, size: u64) -> Result<Option<Range<u64>>, Unsatisfiable> {
        RangeRequest::parse(v).resolve(size)
    }

    #[test]
    fn ranges() {
        let bad = Err(Unsatisfiable);
        assert_eq!(resolve(None, 10), Ok(None));
        assert_eq!(resolve(Some("bytes=0-4"), 10), Ok(Some(0..5)));
        assert_eq!(resolve(Some("bytes=5-"), 10), Ok(Some(5..10)));
        assert_eq!(resolve(Some("bytes=-3"), 10), Ok(Some(7..10)));
        assert_eq!(resolve(Some("bytes=-30"), 10), Ok(Some(0..10)));
        assert_eq!(resolve(Some("bytes=8-100"), 10), Ok(Some(8..10)));
        assert_eq!(resolve(Some("bytes=10-"), 10), bad);
        assert_eq!(resolve(Some("bytes=-0"), 10), bad);
        assert_eq!(resolve(Some("bytes=5-2"), 10), bad);
        assert_eq!(resolve(Some("items=0-1"), 10), Ok(None));
        assert_eq!(resolve(Some("bytes=0-1,3-4"), 10), Ok(None));
        assert_eq!(resolve(Some("bytes=-3"), 0), bad);
    }

    #[test]
    fn ends_at_the_largest_values_clamp_to_the_content() {
        let max = u64::MAX;
        assert_eq!(
            resolve(Some(&format!("bytes=0-{max}")), 10_240),
            Ok(Some(0..10_240))
        );
        assert_eq!(
            resolve(Some(&format!("bytes=100-{max}")), 10_240),
            Ok(Some(100..10_240))
        );
        assert_eq!(
            resolve(Some(&format!("bytes=-{max}")), 10_240),
            Ok(Some(0..10_240))
        );
        assert_eq!(
            resolve(Some(&format!("bytes={max}-{max}")), 10_240),
            Err(Unsatisfiable)
        );
        // Past the largest value: not a number we can hold, so not a range at all.
        assert_eq!(resolve(Some("bytes=0-18446744073709551616"), 10), Ok(None));
    }
}
