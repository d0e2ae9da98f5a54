//! Typed request inputs of the `/v2` API: query parameters, `Range`,
//! `Content-Range`, and upload ids. Bad input is turned into an [`OciError`] here.

use std::ops::Range;

use axum::http::{HeaderMap, header};
use uuid::Uuid;

use super::OciError;
use crate::digest::Digest;
use crate::registry::{ChunkRange, Error};

/// Query parameters, repeated keys kept in order (`?tag=a&tag=b`).
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses a raw query string.
    pub fn parse(raw: Option<&str>) -> Self {
        Query(
            raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default(),
        )
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `n`, the page size, if given.
    pub fn page_size(&self) -> Result<Option<u32>, OciError> {
        match self.get("n") {
            None | Some("") => Ok(None),
            Some(n) => n.parse::<u32>().map(Some).map_err(|_| {
                OciError::new(
                    axum::http::StatusCode::BAD_REQUEST,
                    super::OciErrorCode::Unsupported,
                    format!("n must be a non-negative integer, got {n:?}"),
                )
            }),
        }
    }

    /// A digest parameter, parsed.
    pub fn digest(&self, key: &str) -> Result<Option<Digest>, OciError> {
        self.get(key)
            .map(|d| Digest::parse(d).map_err(|e| Error::from(e).into()))
            .transpose()
    }
}

/// Parses a digest from the path.
pub fn path_digest(s: &str) -> Result<Digest, OciError> {
    Digest::parse(s).map_err(|e| Error::from(e).into())
}

/// Parses an upload id from the path; an id that is not a UUID names no upload.
pub fn upload_id(s: &str) -> Result<Uuid, OciError> {
    Uuid::parse_str(s).map_err(|_| Error::BlobUploadUnknown.into())
}

/// Parses `Content-Range` of an upload chunk: `start-end`, also accepting the
/// `bytes start-end[/total]` and `bytes=start-end` forms some clients send.
pub fn content_range(headers: &HeaderMap) -> Result<Option<ChunkRange>, OciError> {
    let Some(value) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let invalid = || OciError::from(Error::BlobUploadInvalid("malformed Content-Range".into()));
    let text = value.to_str().map_err(|_| invalid())?.trim();
    let text = text
        .strip_prefix("bytes=")
        .or_else(|| text.strip_prefix("bytes "))
        .unwrap_or(text);
    let text = text.split('/').next().unwrap_or_default();
    let (a, b) = text.split_once('-').ok_or_else(invalid)?;
    let start: u64 = a.trim().parse().map_err(|_| invalid())?;
    let end: u64 = b.trim().parse().map_err(|_| invalid())?;
    if end < start {
        return Err(invalid());
    }
    Ok(Some(ChunkRange { start, end }))
}

/// The declared `Content-Length`, if any.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// A resolved `Range` request: `None` = whole blob, `Some(r)` = that part.
/// Returns `Err(())` when the range cannot be satisfied.
pub fn resolve_range(value: Option<&str>, size: u64) -> Result<Option<Range<u64>>, ()> {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return Ok(None); // no Range, or a unit we do not serve: whole content
    };
    if spec.contains(',') {
        return Ok(None); // several ranges: serve the whole (RFC 9110 allows ignoring)
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix range: the last `b` bytes.
        let Ok(n) = b.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 || size == 0 {
            return Err(());
        }
        return Ok(Some(size.saturating_sub(n)..size));
    }
    let Ok(start) = a.parse::<u64>() else {
        return Ok(None);
    };
    let end = if b.is_empty() {
        size
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => (e + 1).min(size),
            // `last-pos < first-pos` is an invalid range (RFC 9110 14.1.1): rejected
            // with 416, as the conformance suite expects, rather than ignored.
            Ok(_) => return Err(()),
            Err(_) => return Ok(None),
        }
    };
    if start >= size {
        return Err(());
    }
    Ok(Some(start..end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(resolve_range(None, 10), Ok(None));
        assert_eq!(resolve_range(Some("bytes=0-4"), 10), Ok(Some(0..5)));
        assert_eq!(resolve_range(Some("bytes=5-"), 10), Ok(Some(5..10)));
        assert_eq!(resolve_range(Some("bytes=-3"), 10), Ok(Some(7..10)));
        assert_eq!(resolve_range(Some("bytes=-30"), 10), Ok(Some(0..10)));
        assert_eq!(resolve_range(Some("bytes=8-100"), 10), Ok(Some(8..10)));
        assert_eq!(resolve_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(resolve_range(Some("bytes=-0"), 10), Err(()));
        assert_eq!(resolve_range(Some("bytes=5-2"), 10), Err(()));
        assert_eq!(resolve_range(Some("items=0-1"), 10), Ok(None));
        assert_eq!(resolve_range(Some("bytes=0-1,3-4"), 10), Ok(None));
    }

    #[test]
    fn content_ranges() {
        let mut h = HeaderMap::new();
        assert_eq!(content_range(&h).unwrap(), None);
        for (v, want) in [
            ("0-9", (0, 9)),
            ("bytes 10-19/*", (10, 19)),
            ("bytes=5-5", (5, 5)),
        ] {
            h.insert(header::CONTENT_RANGE, v.parse().unwrap());
            let r = content_range(&h).unwrap().unwrap();
            assert_eq!((r.start, r.end), want, "{v}");
        }
        for bad in ["x", "5-2", "-3", "a-b"] {
            h.insert(header::CONTENT_RANGE, bad.parse().unwrap());
            assert!(content_range(&h).is_err(), "{bad}");
        }
    }
}
