//! The Open Inference Protocol v2 (KServe V2 + Triton's extensions) over the model manager:
//! REST here, gRPC in `grpc`. Errors are `{"error": "..."}`, as tritonclient and
//! perf_analyzer expect, not the REST v1 error shape.

pub(crate) mod codec;
pub mod grpc;
mod rest;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use trainyard_serve::{ModelManager, ServeError};

use crate::Auth;

/// What the inference routes share.
#[derive(Clone)]
pub struct InferenceState {
    pub manager: ModelManager,
    pub auth: Auth,
    /// Largest request body (after inflating a compressed one).
    pub max_body: usize,
    /// Inference and metadata without a token (load and unload still need one), for clients
    /// that cannot send one — perf_analyzer sends no gRPC metadata.
    pub anonymous_inference: bool,
}

/// Extensions this server implements, as `GET /v2` lists them.
pub const EXTENSIONS: &[&str] = &[
    "model_repository",
    "model_configuration",
    "binary_tensor_data",
    "statistics",
];

pub const SERVER_NAME: &str = "trainyard";

/// The `/v2` routes (health and readiness open, the rest behind the token).
pub fn router(state: InferenceState) -> Router {
    rest::router(state)
}

/// `{"error": message}` with the status of the error's kind.
pub struct V2Error(pub StatusCode, pub String);

impl From<ServeError> for V2Error {
    fn from(e: ServeError) -> Self {
        let status = match &e {
            ServeError::Invalid(_) => StatusCode::BAD_REQUEST,
            ServeError::NotFound(_) => StatusCode::NOT_FOUND,
            ServeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ServeError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            ServeError::Internal(m) => {
                tracing::error!("inference failed: {m}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        V2Error(status, e.to_string())
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({"error": self.1}))).into_response()
    }
}
