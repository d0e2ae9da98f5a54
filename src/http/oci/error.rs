//! The OCI error envelope, defined once: codes from the distribution spec, each tied
//! to its HTTP status, and the one conversion from domain errors.

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_RANGE, RANGE, RETRY_AFTER};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::registry::Error;

/// Error codes of the distribution spec (and only those), plus `UNKNOWN` for 5xx
/// answers. `oci_spec::distribution::ErrorCode` lists the spec's codes too, but has no
/// `UNKNOWN`; a test checks that the two spell every shared code the same.
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

/// An error response of the `/v2` API: what every `/v2` handler and extractor
/// returns on failure. Its `Display` is the first message (for logs), never the body.
#[derive(Debug, Clone)]
pub struct OciError {
    status: StatusCode,
    envelope: OciEnvelope,
    /// `Range` header to add (for 416 on uploads), already formatted.
    range: Option<String>,
    /// `Content-Range` header to add (for 416 on blob reads).
    content_range: Option<String>,
    /// `Retry-After` header to add (seconds), for 429 and a busy 503.
    retry_after: Option<u64>,
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

    /// The answer to a request that panicked: logged where it is caught.
    pub fn internal() -> Self {
        OciError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            OciErrorCode::Unknown,
            "internal server error",
        )
    }

    /// A request the authorizer refused: 401 `UNAUTHORIZED`, 403 `DENIED`, or 500.
    pub fn refused(refusal: &crate::http::auth::Refusal) -> Self {
        let status = refusal.status();
        let code = match status.as_u16() {
            401 => OciErrorCode::Unauthorized,
            403 => OciErrorCode::Denied,
            _ => OciErrorCode::Unknown,
        };
        let message = if refusal.error.is_internal() {
            "internal server error".to_owned()
        } else {
            refusal.error.to_string()
        };
        OciError::new(status, code, message)
    }

    /// The 405 of a method an endpoint does not serve.
    pub fn unsupported_method() -> Self {
        OciError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            OciErrorCode::Unsupported,
            "the method is not supported on this endpoint",
        )
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
            // The distribution spec's answer to too many `?tag=` values (414).
            Error::TooManyTags { .. } => {
                OciError::new(S::URI_TOO_LONG, C::ManifestInvalid, message)
            }
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
            Error::PackMalformed(_)
            | Error::PackInvalid(_)
            | Error::BundleInvalid(_)
            | Error::BundleTooLarge(_) => {
                OciError::new(S::BAD_REQUEST, C::ManifestInvalid, message)
            }
            Error::PackConflict(_) | Error::TagImmutable(_) => {
                OciError::new(S::CONFLICT, C::Denied, message)
            }
            Error::PackUnknown(_) => OciError::new(S::NOT_FOUND, C::ManifestUnknown, message),
            Error::Unavailable(detail) => {
                tracing::error!(error = %detail, "dependency unavailable");
                OciError::new(
                    S::SERVICE_UNAVAILABLE,
                    C::Unknown,
                    "the registry's storage is temporarily unavailable; retry later",
                )
            }
            Error::Busy {
                detail,
                retry_after_secs,
            } => {
                tracing::warn!(error = %detail, "database busy after retries");
                let mut err = OciError::new(
                    S::SERVICE_UNAVAILABLE,
                    C::Unknown,
                    "the registry is busy; retry later",
                );
                err.retry_after = Some(retry_after_secs);
                err
            }
            Error::TooManyRequests {
                retry_after_secs, ..
            } => {
                let mut err = OciError::new(S::TOO_MANY_REQUESTS, C::Toomanyrequests, message);
                err.retry_after = Some(retry_after_secs);
                err
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

impl std::fmt::Display for OciError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.envelope.errors.first() {
            Some(e) => write!(f, "{}: {:?}: {}", self.status, e.code, e.message),
            None => write!(f, "{}", self.status),
        }
    }
}

impl ResponseError for OciError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(r) = &self.range {
            response.insert_header((RANGE, r.as_str()));
        }
        if let Some(secs) = self.retry_after {
            response.insert_header((RETRY_AFTER, secs.to_string()));
        }
        match &self.content_range {
            // A 416 on a blob read carries an empty body (RFC 9110 asks for
            // Content-Range only).
            Some(r) => response.insert_header((CONTENT_RANGE, r.as_str())).finish(),
            None => response.json(&self.envelope),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_spelled_as_oci_spec_spells_them() {
        use oci_spec::distribution::ErrorCode as Spec;
        let pairs = [
            (OciErrorCode::BlobUnknown, Spec::BlobUnknown),
            (OciErrorCode::BlobUploadInvalid, Spec::BlobUploadInvalid),
            (OciErrorCode::BlobUploadUnknown, Spec::BlobUploadUnknown),
            (OciErrorCode::DigestInvalid, Spec::DigestInvalid),
            (OciErrorCode::ManifestBlobUnknown, Spec::ManifestBlobUnknown),
            (OciErrorCode::ManifestInvalid, Spec::ManifestInvalid),
            (OciErrorCode::ManifestUnknown, Spec::ManifestUnknown),
            (OciErrorCode::NameInvalid, Spec::NameInvalid),
            (OciErrorCode::NameUnknown, Spec::NameUnknown),
            (OciErrorCode::SizeInvalid, Spec::SizeInvalid),
            (OciErrorCode::Unauthorized, Spec::Unauthorized),
            (OciErrorCode::Denied, Spec::Denied),
            (OciErrorCode::Unsupported, Spec::Unsupported),
            (OciErrorCode::Toomanyrequests, Spec::TooManyRequests),
        ];
        for (ours, spec) in pairs {
            assert_eq!(
                serde_json::to_value(ours).unwrap(),
                serde_json::to_value(spec).unwrap()
            );
        }
    }

    /// A busy database is a 503 and a session cap a 429 `TOOMANYREQUESTS`, each with
    /// the `Retry-After` the domain chose.
    #[test]
    fn busy_and_too_many_requests_say_when_to_retry() {
        let busy = OciError::from(Error::Busy {
            detail: "deadlock detected".into(),
            retry_after_secs: 1,
        })
        .error_response();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers().get(RETRY_AFTER).unwrap(), "1");
        let capped = OciError::from(Error::TooManyRequests {
            message: "too many upload sessions".into(),
            retry_after_secs: 30,
        });
        assert_eq!(
            capped.envelope.errors[0].code,
            OciErrorCode::Toomanyrequests
        );
        let capped = capped.error_response();
        assert_eq!(capped.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(capped.headers().get(RETRY_AFTER).unwrap(), "30");
    }
}
