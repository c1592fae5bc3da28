//! Error answers in Kiali's shape: `{"error": "<message>"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, axum::Json(serde_json::json!({"error": msg.into()}))).into_response()
}
