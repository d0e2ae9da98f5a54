//! Typed request inputs of the `/v2` API that are not path segments: the upload
//! `Content-Range`, digests given as query parameters. Bad input is turned into an
//! [`OciError`] here.

use actix_web::HttpRequest;
use actix_web::http::header;

use super::OciError;
use crate::digest::Digest;
use crate::http::QueryPairs;
use crate::registry::{ChunkRange, Error};

/// A digest query parameter (`?digest=`, `?mount=`), parsed.
pub fn query_digest(query: &QueryPairs, key: &str) -> Result<Option<Digest>, OciError> {
    query
        .get(key)
        .map(|d| Digest::parse(d).map_err(|e| Error::from(e).into()))
        .transpose()
}

/// Parses `Content-Range` of an upload chunk: `start-end` (inclusive), also accepting
/// the `bytes start-end[/total]` and `bytes=start-end` forms some clients send. Every
/// sum a later step makes of these numbers (`end - start + 1`, `start + length`) fits
/// in 64 bits: a range ending at the largest value is refused here.
pub fn content_range(req: &HttpRequest) -> Result<Option<ChunkRange>, OciError> {
    let Some(value) = req.headers().get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| "not visible ASCII");
    text.and_then(parse_content_range).map(Some).map_err(|why| {
        OciError::from(Error::BlobUploadInvalid(format!(
            "malformed Content-Range: {why}"
        )))
    })
}

/// The grammar of [`content_range`], on the header's text; the error says what is
/// wrong.
pub fn parse_content_range(text: &str) -> Result<ChunkRange, &'static str> {
    let text = text.trim();
    let text = text
        .strip_prefix("bytes=")
        .or_else(|| text.strip_prefix("bytes "))
        .unwrap_or(text);
    let text = text.split('/').next().unwrap_or_default();
    let (a, b) = text.split_once('-').ok_or("expected start-end")?;
    let start: u64 = a.trim().parse().map_err(|_| "start is not a number")?;
    let end: u64 = b.trim().parse().map_err(|_| "end is not a number")?;
    if end < start {
        return Err("end is before start");
    }
    if end == u64::MAX {
        return Err("the range ends past the largest blob size");
    }
    Ok(ChunkRange { start, end })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn parse(value: Option<&str>) -> Result<Option<(u64, u64)>, OciError> {
        let mut req = TestRequest::default();
        if let Some(v) = value {
            req = req.insert_header((header::CONTENT_RANGE, v));
        }
        content_range(&req.to_http_request()).map(|r| r.map(|r| (r.start, r.end)))
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse(None).unwrap(), None);
        for (v, want) in [
            ("0-9", (0, 9)),
            ("bytes 10-19/*", (10, 19)),
            ("bytes=5-5", (5, 5)),
            ("0-18446744073709551614", (0, u64::MAX - 1)),
        ] {
            assert_eq!(parse(Some(v)).unwrap(), Some(want), "{v}");
        }
        for bad in [
            "x",
            "5-2",
            "-3",
            "a-b",
            "0-18446744073709551615",
            "0-18446744073709551616",
        ] {
            assert!(parse(Some(bad)).is_err(), "{bad}");
        }
    }
}
