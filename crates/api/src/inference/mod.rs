//! The Open Inference Protocol v2 (KServe V2 + Triton's extensions) over the model manager:
//! REST here, gRPC in `grpc`. Errors are `{"error": "..."}`, as tritonclient and
//! perf_analyzer expect, not the REST v1 error shape.

pub(crate) mod codec;
pub mod grpc;
pub(crate) mod grpc_codec;
mod rest;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use trainyard_serve::{ModelManager, ModelState, RuntimeKind, ServeError};

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

use trainyard_core::Need;

/// Why a caller was turned away; each protocol words and codes it its own way.
pub(crate) enum Denied {
    NoToken,
    UnknownToken,
    JobToken,
    /// The caller's role does not allow it.
    Role(String),
    /// The token store could not be asked.
    Unavailable(String),
}

impl InferenceState {
    /// Checks the `Authorization` value of a request. Inference and metadata (`admin`
    /// false) pass without one when anonymous inference is on; load and unload never do.
    pub(crate) async fn authorize(&self, header: Option<&str>, admin: bool) -> Result<(), Denied> {
        if header.is_none() && self.anonymous_inference && !admin {
            return Ok(());
        }
        let token = header
            .and_then(crate::auth::token_from_header)
            .ok_or(Denied::NoToken)?;
        use crate::auth::Refused;
        match self.auth.principal(&token, None).await {
            Ok(p) if p.job.is_some() => Err(Denied::JobToken),
            // Loading and unloading change what the server holds; inference reads.
            Ok(p) if admin && (p.read_only || !p.meets(Need::Write)) => Err(Denied::Role(format!(
                "loading and unloading need editor or more in `{}` and a token that may write",
                p.workspace
            ))),
            Ok(p) if !p.meets(Need::Read) => Err(Denied::Role(format!(
                "inference needs a role in workspace `{}`",
                p.workspace
            ))),
            Ok(_) => Ok(()),
            Err(Refused::Store(e)) => Err(Denied::Unavailable(format!(
                "cannot check the token: {}",
                e.message
            ))),
            Err(_) => Err(Denied::UnknownToken),
        }
    }
}

/// A job's token only reaches tracking.
pub(crate) const JOB_TOKEN_REFUSED: &str = "a job's token only reaches the tracking API";

/// One line of the repository index: a model never loaded has no version.
pub(crate) struct IndexRow {
    pub name: String,
    pub version: Option<u64>,
    pub state: ModelState,
    pub reason: String,
    pub runtime: Option<RuntimeKind>,
}

/// The repository index as both protocols answer it, one row per model version (only
/// ready ones with `ready_only`).
pub(crate) async fn index_rows(
    manager: &ModelManager,
    ready_only: bool,
) -> Result<Vec<IndexRow>, ServeError> {
    let mut rows = Vec::new();
    for entry in manager.index().await? {
        if entry.versions.is_empty() && !ready_only {
            rows.push(IndexRow {
                name: entry.name.clone(),
                version: None,
                state: ModelState::Unavailable,
                reason: String::new(),
                runtime: None,
            });
        }
        for (version, state, reason) in entry.versions {
            if ready_only && state != ModelState::Ready {
                continue;
            }
            rows.push(IndexRow {
                runtime: manager
                    .peek(&(entry.name.clone(), version))
                    .map(|m| m.runtime),
                name: entry.name.clone(),
                version: Some(version),
                state,
                reason,
            });
        }
    }
    Ok(rows)
}

/// The model config a load call brings in its parameters (`config`, a JSON string), if
/// any. Each parameter comes as its name and, when it is a string, its text. Model files
/// in the request (`file:…`) are refused.
pub(crate) fn load_config<'a>(
    params: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<Option<trainyard_serve::ModelConfig>, ServeError> {
    let mut config = None;
    for (key, text) in params {
        if key.starts_with("file:") {
            return Err(ServeError::Unsupported(format!(
                "load parameter '{key}': model files in the request are not supported; put them in the repository"
            )));
        }
        if key == "config" {
            let text = text.ok_or_else(|| {
                ServeError::invalid("load parameter 'config' must be a string of JSON")
            })?;
            config = Some(trainyard_serve::ModelConfig::parse(
                text,
                "load parameter 'config'",
            )?);
        }
    }
    Ok(config)
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
