//! The API's error responses: `{"error":"<code>","message":"<text>"}`, never internals.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::was::db::DbError;
use crate::was::model::{PageError, ValidationError};

/// Every way a request can fail, each with its status and short code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error(transparent)]
    Paging(#[from] PageError),
    #[error("{0}")]
    InvalidJson(String),
    #[error("expected a JSON body with `Content-Type: application/json`")]
    UnsupportedMediaType,
    #[error("request body is larger than the {0} byte limit")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the database is unavailable; try again later")]
    DbUnavailable,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_)
            | ApiError::Paging(_)
            | ApiError::InvalidJson(_)
            | ApiError::UnsupportedMediaType
            | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::DbUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The short machine-readable code of the body's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "validation_failed",
            ApiError::Paging(_) => "invalid_paging",
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::DbUnavailable => "db_unavailable",
            ApiError::Internal => "internal_error",
        }
    }

    pub(crate) fn post_not_found() -> Self {
        ApiError::NotFound("no such post".into())
    }

    /// Maps an axum JSON rejection; `limit` is the configured body limit.
    pub(crate) fn from_json_rejection(rejection: JsonRejection, limit: usize) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
            JsonRejection::JsonSyntaxError(e) => {
                ApiError::InvalidJson(format!("malformed JSON: {}", inner_text(&e.body_text())))
            }
            JsonRejection::JsonDataError(e) => ApiError::InvalidJson(format!(
                "JSON does not match the expected shape: {}",
                inner_text(&e.body_text())
            )),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge(limit)
            }
            other => {
                tracing::debug!(rejection = %other.body_text(), "could not read the request body");
                ApiError::BadRequest("could not read the request body".into())
            }
        }
    }

    pub(crate) fn from_query_rejection(rejection: QueryRejection) -> Self {
        ApiError::BadRequest(format!(
            "invalid query string: {}",
            inner_text(&rejection.body_text())
        ))
    }
}

/// axum's rejection texts read "Failed to ...: <detail>"; keep the detail, bounded.
fn inner_text(text: &str) -> String {
    let detail = text.split_once(": ").map(|(_, d)| d).unwrap_or(text);
    detail.chars().take(200).collect()
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Unavailable(_) | DbError::ConnectTimeout(_) | DbError::GaveUp { .. } => {
                tracing::warn!(error = %err, "database unavailable");
                ApiError::DbUnavailable
            }
            other => {
                tracing::error!(error = %other, "database error");
                ApiError::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code(), "message": self.to_string() });
        (self.status(), Json(body)).into_response()
    }
}
