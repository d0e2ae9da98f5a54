//! The `/packs` error form, defined once: `{"error": {"code", "message"}}`, each code
//! tied to its HTTP status, and the one conversion from domain errors. Internal
//! failures are logged here and answered with a generic message, never a trace.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::registry::Error;

/// Error codes of the packs API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// 400: the request cannot be understood (malformed JSON or multipart, bad query).
    BadRequest,
    /// 404: no such pack or version.
    NotFound,
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
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::InvalidPack => StatusCode::UNPROCESSABLE_ENTITY,
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

/// An error answer of the packs API.
#[derive(Debug)]
pub struct ApiError {
    envelope: ErrorEnvelope,
    /// `Content-Range` for a 416.
    content_range: Option<String>,
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
            Error::PackInvalid(_) => ApiError::new(ErrorCode::InvalidPack, message),
            Error::PackConflict(_) => ApiError::new(ErrorCode::Conflict, message),
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.envelope)).into_response();
        if let Some(r) = self
            .content_range
            .and_then(|r| HeaderValue::from_str(&r).ok())
        {
            response.headers_mut().insert(header::CONTENT_RANGE, r);
        }
        response
    }
}
