//! The OCI error envelope, defined once: codes from the distribution spec, each tied
//! to its HTTP status, and the one conversion from domain errors.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::registry::Error;

/// Error codes of the distribution spec (and only those).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OciErrorCode {
    /// Blob unknown to registry.
    BlobUnknown,
    /// Blob upload invalid.
    BlobUploadInvalid,
    /// Blob upload unknown to registry.
    BlobUploadUnknown,
    /// Provided digest did not match uploaded content.
    DigestInvalid,
    /// Manifest references a manifest or blob unknown to registry.
    ManifestBlobUnknown,
    /// Manifest invalid.
    ManifestInvalid,
    /// Manifest unknown to registry.
    ManifestUnknown,
    /// Invalid repository name.
    NameInvalid,
    /// Repository name not known to registry.
    NameUnknown,
    /// Provided length did not match content length.
    SizeInvalid,
    /// Authentication required.
    Unauthorized,
    /// Requested access to the resource is denied.
    Denied,
    /// The operation is unsupported.
    Unsupported,
    /// Too many requests.
    Toomanyrequests,
    /// Server-side failure. Used only on 5xx answers, whose bodies the spec leaves
    /// open; it is what CNCF Distribution sends, and what clients fall back to for
    /// any code they do not know.
    Unknown,
}

/// One entry of the envelope.
#[derive(Debug, Clone, Serialize)]
pub struct OciErrorEntry {
    /// The code.
    pub code: OciErrorCode,
    /// Human-readable message.
    pub message: String,
    /// Optional structured detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

/// `{"errors": [...]}`
#[derive(Debug, Clone, Serialize)]
pub struct OciEnvelope {
    /// The errors.
    pub errors: Vec<OciErrorEntry>,
}

/// An error response of the `/v2` API.
#[derive(Debug)]
pub struct OciError {
    status: StatusCode,
    envelope: OciEnvelope,
    /// `Range` header to add (for 416 on uploads), already formatted.
    range: Option<String>,
    /// `Content-Range` header to add (for 416 on blob reads).
    content_range: Option<String>,
    /// `Retry-After` header to add, in seconds.
    retry_after: Option<u32>,
}

impl OciError {
    /// An error with one entry.
    pub fn new(status: StatusCode, code: OciErrorCode, message: impl Into<String>) -> Self {
        OciError {
            status,
            envelope: OciEnvelope {
                errors: vec![OciErrorEntry {
                    code,
                    message: message.into(),
                    detail: None,
                }],
            },
            range: None,
            content_range: None,
            retry_after: None,
        }
    }

    fn detail(mut self, detail: serde_json::Value) -> Self {
        self.envelope.errors[0].detail = Some(detail);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

/// The `Range` value of an upload that has received `offset` bytes.
pub fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

impl From<Error> for OciError {
    fn from(e: Error) -> Self {
        use OciErrorCode as C;
        use StatusCode as S;
        let message = e.to_string();
        match e {
            Error::BlobUnknown => OciError::new(S::NOT_FOUND, C::BlobUnknown, message),
            Error::BlobUploadUnknown => OciError::new(S::NOT_FOUND, C::BlobUploadUnknown, message),
            Error::BlobUploadInvalid(_) => {
                OciError::new(S::BAD_REQUEST, C::BlobUploadInvalid, message)
            }
            Error::ChunkOutOfOrder { offset } => {
                let mut err =
                    OciError::new(S::RANGE_NOT_SATISFIABLE, C::BlobUploadInvalid, message);
                err.range = Some(upload_range(offset));
                err
            }
            Error::DigestInvalid(_) => OciError::new(S::BAD_REQUEST, C::DigestInvalid, message),
            Error::SizeInvalid(_) => OciError::new(S::BAD_REQUEST, C::SizeInvalid, message),
            Error::TooLarge { what, .. } => {
                let code = if what == "manifest" {
                    C::ManifestInvalid
                } else {
                    C::SizeInvalid
                };
                OciError::new(S::PAYLOAD_TOO_LARGE, code, message)
            }
            Error::ManifestInvalid(_) => OciError::new(S::BAD_REQUEST, C::ManifestInvalid, message),
            Error::ManifestUnknown => OciError::new(S::NOT_FOUND, C::ManifestUnknown, message),
            Error::ManifestNotAcceptable(_) => {
                OciError::new(S::NOT_FOUND, C::ManifestUnknown, message)
            }
            Error::ManifestBlobUnknown(ref digests) => {
                let list: Vec<String> = digests.iter().map(|d| d.to_string()).collect();
                OciError::new(S::BAD_REQUEST, C::ManifestBlobUnknown, message)
                    .detail(serde_json::json!({ "digests": list }))
            }
            Error::NameInvalid(_) => OciError::new(S::BAD_REQUEST, C::NameInvalid, message),
            Error::NameUnknown => OciError::new(S::NOT_FOUND, C::NameUnknown, message),
            Error::ReferenceInvalid(_) => {
                OciError::new(S::BAD_REQUEST, C::ManifestInvalid, message)
            }
            Error::RangeNotSatisfiable { size } => {
                let mut err = OciError::new(S::RANGE_NOT_SATISFIABLE, C::BlobUnknown, message);
                err.content_range = Some(format!("bytes */{size}"));
                err
            }
            Error::Unsupported(_) => OciError::new(S::METHOD_NOT_ALLOWED, C::Unsupported, message),
            Error::Body(_) => OciError::new(S::BAD_REQUEST, C::BlobUploadInvalid, message),
            // Raised by the packs domain only, which /v2 does not call.
            Error::PackMalformed(_) | Error::PackInvalid(_) => {
                OciError::new(S::BAD_REQUEST, C::ManifestInvalid, message)
            }
            Error::PackConflict(_) => OciError::new(S::CONFLICT, C::Denied, message),
            Error::PackUnknown(_) => OciError::new(S::NOT_FOUND, C::ManifestUnknown, message),
            Error::Unavailable(detail) => {
                tracing::error!(error = %detail, "dependency unavailable");
                OciError::new(
                    S::SERVICE_UNAVAILABLE,
                    C::Unknown,
                    "the registry's storage is temporarily unavailable; retry later",
                )
            }
            // Chosen over 416 with the session's `Range`: while another request writes
            // to the upload that offset is about to move, and clients retry a 503.
            Error::UploadBusy => {
                let mut err = OciError::new(S::SERVICE_UNAVAILABLE, C::Unknown, message);
                err.retry_after = Some(1);
                err
            }
            Error::InsufficientStorage(detail) => {
                tracing::error!(error = %detail, "blob storage is full");
                OciError::new(
                    S::INSUFFICIENT_STORAGE,
                    C::Unknown,
                    "the registry's storage is full; nothing was stored",
                )
            }
            Error::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                OciError::new(
                    S::INTERNAL_SERVER_ERROR,
                    C::Unknown,
                    "internal server error",
                )
            }
        }
    }
}

impl IntoResponse for OciError {
    fn into_response(self) -> Response {
        let status = self.status;
        // A 416 on a blob read carries an empty body (RFC 9110 asks for Content-Range only).
        let mut response = if self.content_range.is_some() {
            status.into_response()
        } else {
            (status, axum::Json(self.envelope)).into_response()
        };
        let headers = response.headers_mut();
        if let Some(r) = self.range.and_then(|r| HeaderValue::from_str(&r).ok()) {
            headers.insert(header::RANGE, r);
        }
        if let Some(r) = self
            .content_range
            .and_then(|r| HeaderValue::from_str(&r).ok())
        {
            headers.insert(header::CONTENT_RANGE, r);
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
