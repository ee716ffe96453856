//! The one error type of the API: every failure answers `application/problem+json`
//! (RFC 9457) with a stable snake_case `code`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flowline_core::validation::{FieldError, ValidationErrors};
use flowline_store::StoreError;
use serde::Serialize;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (bad JSON, bad query, bad path).
    #[error("{detail}")]
    BadRequest {
        /// Stable code.
        code: &'static str,
        /// For a person.
        detail: String,
    },
    /// No valid bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// The token's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such entity in this workspace.
    #[error("{0} not found")]
    NotFound(String),
    /// No such route or method.
    #[error("{0}")]
    NoRoute(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The body is over the size limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The body is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The input is well-formed but invalid.
    #[error("{0}")]
    Validation(ValidationErrors),
    /// The database cannot be reached.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A fault inside Flowline; the cause is logged, never returned.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A problem+json body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:flowline:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong this time.
    pub detail: String,
    /// A stable snake_case code.
    pub code: &'static str,
    /// For validation failures: each field and what is wrong with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldErrorBody>>,
}

/// One field's problem.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FieldErrorBody {
    /// The field's path (`actionConfig.tagColor`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl From<FieldError> for FieldErrorBody {
    fn from(e: FieldError) -> Self {
        Self {
            field: e.field,
            message: e.message,
        }
    }
}

impl ApiError {
    /// A 400 with a code.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            detail: detail.into(),
        }
    }

    /// A 422 for one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(ValidationErrors::single(field, message))
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code, "Bad request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", "Not found"),
            ApiError::NoRoute(_) => (StatusCode::NOT_FOUND, "no_route", "Not found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            ApiError::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
            ),
            ApiError::Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "Validation failed",
            ),
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => ApiError::NotFound(what.to_owned()),
            StoreError::Conflict(detail) => ApiError::Conflict(detail),
            StoreError::Invalid(errors) => ApiError::Validation(errors),
            StoreError::Backend(cause) => ApiError::Internal(cause.to_string()),
        }
    }
}

/// Builds the problem response for a status, code and detail.
pub fn problem_response(
    status: StatusCode,
    code: &'static str,
    title: &'static str,
    detail: String,
    errors: Option<Vec<FieldErrorBody>>,
) -> Response {
    let body = Problem {
        kind: format!("urn:flowline:problem:{code}"),
        title,
        status: status.as_u16(),
        detail,
        code,
        errors,
    };
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title) = self.parts();
        let (detail, errors) = match self {
            ApiError::Validation(errors) => {
                let detail = match errors.0.as_slice() {
                    [one] if one.field.is_empty() => one.message.clone(),
                    [one] => format!("{}: {}", one.field, one.message),
                    many => format!("{} fields are invalid", many.len()),
                };
                (
                    detail,
                    Some(errors.0.into_iter().map(FieldErrorBody::from).collect()),
                )
            }
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "request failed inside Flowline");
                (
                    "Flowline failed to handle this request; the cause is in its log.".to_owned(),
                    None,
                )
            }
            ApiError::Unavailable(cause) => {
                tracing::warn!(%cause, "database unavailable");
                ("The database is not answering.".to_owned(), None)
            }
            ApiError::NotFound(what) => (format!("{what} not found"), None),
            other => (other.to_string(), None),
        };
        problem_response(status, code, title, detail, errors)
    }
}

/// What handlers return.
pub type ApiResult<T> = Result<T, ApiError>;
