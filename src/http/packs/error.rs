//! The `/packs` error form, defined once: `{"error": {"code", "message"}}`, each code
//! tied to its HTTP status, and the one conversion from domain errors. Internal
//! failures are logged here and answered with a generic message, never a trace.

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_RANGE, RETRY_AFTER};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::registry::Error;

/// Error codes of the packs API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// 400: the request cannot be understood (malformed JSON or multipart, bad query).
    BadRequest,
    /// 401: credentials are missing or invalid (the answer carries a
    /// `WWW-Authenticate` challenge).
    Unauthorized,
    /// 403: the caller may not do this.
    Forbidden,
    /// 404: no such pack or version.
    NotFound,
    /// 405: the method is not served on this path.
    MethodNotAllowed,
    /// 409: the version exists with other content, or its tag is taken.
    Conflict,
    /// 413: the content exceeds the configured limit.
    TooLarge,
    /// 415: the request body is not `multipart/form-data`.
    UnsupportedMediaType,
    /// 416: the byte range lies outside the content.
    RangeNotSatisfiable,
    /// 422: the pack manifest breaks a rule (id, semver, type, dependencies).
    InvalidPack,
    /// 422: an offline bundle refused (corrupted, incomplete, or unsafe to unpack).
    InvalidBundle,
    /// 503: the database or object store is unreachable; retry.
    Unavailable,
    /// 507: the blob storage is full; nothing was stored.
    InsufficientStorage,
    /// 500: a failure on the registry's side.
    Internal,
}

impl ErrorCode {
    fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::InvalidPack | ErrorCode::InvalidBundle => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The inside of an error answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What kind of error.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

/// `{"error": {...}}`
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// An error answer of the packs API: what every `/packs` handler and extractor
/// returns on failure. Its `Display` is the message (for logs).
#[derive(Debug, Clone)]
pub struct ApiError {
    envelope: ErrorEnvelope,
    /// `Content-Range` for a 416.
    content_range: Option<String>,
    /// `WWW-Authenticate` for a 401.
    challenge: Option<String>,
    /// `Retry-After` (seconds) for a 503 that says when.
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            envelope: ErrorEnvelope {
                error: ErrorBody {
                    code,
                    message: message.into(),
                },
            },
            content_range: None,
            challenge: None,
            retry_after: None,
        }
    }

    /// A request the authorizer refused: 401, 403, or 500.
    pub fn refused(refusal: &crate::http::auth::Refusal) -> Self {
        match refusal.status().as_u16() {
            401 => ApiError::new(ErrorCode::Unauthorized, refusal.error.to_string()),
            403 => ApiError::new(ErrorCode::Forbidden, refusal.error.to_string()),
            _ => ApiError::new(ErrorCode::Internal, "internal server error"),
        }
    }

    /// A 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::BadRequest, message)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.envelope.error.code.status()
    }

    /// What went wrong, for people.
    pub fn message(&self) -> &str {
        &self.envelope.error.message
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::PackMalformed(_) | Error::Body(_) | Error::DigestInvalid(_) => {
                ApiError::bad_request(message)
            }
            Error::NameInvalid(_) | Error::ReferenceInvalid(_) => {
                ApiError::new(ErrorCode::InvalidPack, message)
            }
            // A pack whose OCI manifest cannot be built or stored as the rules ask
            // is the publisher's error, never a 500.
            Error::PackInvalid(_) | Error::ManifestInvalid(_) | Error::ManifestBlobUnknown(_) => {
                ApiError::new(ErrorCode::InvalidPack, message)
            }
            Error::PackConflict(_) | Error::TagImmutable(_) => {
                ApiError::new(ErrorCode::Conflict, message)
            }
            Error::BundleInvalid(_) => ApiError::new(ErrorCode::InvalidBundle, message),
            Error::BundleTooLarge(_) => ApiError::new(ErrorCode::TooLarge, message),
            Error::PackUnknown(_) => ApiError::new(ErrorCode::NotFound, message),
            Error::TooLarge { .. } => ApiError::new(ErrorCode::TooLarge, message),
            Error::RangeNotSatisfiable { size } => {
                let mut err = ApiError::new(ErrorCode::RangeNotSatisfiable, message);
                err.content_range = Some(format!("bytes */{size}"));
                err
            }
            Error::Unavailable(detail) => {
                tracing::error!(error = %detail, "dependency unavailable");
                ApiError::new(
                    ErrorCode::Unavailable,
                    "the registry's storage is temporarily unavailable; retry later",
                )
            }
            // `/packs` opens no upload session, the one thing with a cap; were a cap
            // ever reached here, it passes like a busy database.
            Error::Busy {
                detail: _,
                retry_after_secs,
            }
            | Error::TooManyRequests {
                message: _,
                retry_after_secs,
            } => {
                tracing::warn!(error = %message, "busy after retries");
                let mut err =
                    ApiError::new(ErrorCode::Unavailable, "the registry is busy; retry later");
                err.retry_after = Some(retry_after_secs);
                err
            }
            Error::UploadBusy => {
                let mut err =
                    ApiError::new(ErrorCode::Unavailable, "the registry is busy; retry later");
                err.retry_after = Some(1);
                err
            }
            Error::InsufficientStorage(detail) => {
                tracing::error!(error = %detail, "blob storage is full");
                ApiError::new(
                    ErrorCode::InsufficientStorage,
                    "the registry's storage is full; nothing was stored",
                )
            }
            other => {
                tracing::error!(error = %other, "internal error in /packs");
                ApiError::new(ErrorCode::Internal, "internal server error")
            }
        }
    }
}

impl From<crate::http::auth::Refusal> for ApiError {
    fn from(refusal: crate::http::auth::Refusal) -> Self {
        let mut err = ApiError::refused(&refusal);
        err.challenge = refusal.challenge;
        err
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?}: {}",
            self.envelope.error.code, self.envelope.error.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status());
        if let Some(r) = &self.content_range {
            response.insert_header((CONTENT_RANGE, r.as_str()));
        }
        if let Some(secs) = self.retry_after {
            response.insert_header((RETRY_AFTER, secs.to_string()));
        }
        if let Some(c) = &self.challenge {
            response.insert_header((actix_web::http::header::WWW_AUTHENTICATE, c.as_str()));
        }
        response.json(&self.envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A busy database is a 503 with the `Retry-After` the domain chose.
    #[test]
    fn busy_says_when_to_retry() {
        let busy = ApiError::from(Error::Busy {
            detail: "deadlock detected".into(),
            retry_after_secs: 1,
        })
        .error_response();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers().get(RETRY_AFTER).unwrap(), "1");
    }
}
