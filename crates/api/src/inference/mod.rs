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
    /// Checks the `Authorization` value of a request and says which workspace's models it
    /// reaches (`workspace`: the `X-Trainyard-Workspace` value, if sent). Inference and
    /// metadata (`admin` false) pass without a token when anonymous inference is on, and
    /// reach `default`'s models; load and unload never pass without one.
    pub(crate) async fn authorize(
        &self,
        header: Option<&str>,
        workspace: Option<&str>,
        admin: bool,
    ) -> Result<ModelScope, Denied> {
        if header.is_none() && self.anonymous_inference && !admin {
            return Ok(ModelScope::of(trainyard_core::DEFAULT_WORKSPACE));
        }
        let token = header
            .and_then(crate::auth::token_from_header)
            .ok_or(Denied::NoToken)?;
        use crate::auth::Refused;
        match self.auth.principal(&token, workspace).await {
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
            Ok(p) => Ok(ModelScope {
                workspace: p.workspace.clone(),
                caller: Some(p),
            }),
            Err(Refused::Store(e)) => Err(Denied::Unavailable(format!(
                "cannot check the token: {}",
                e.message
            ))),
            Err(Refused::Narrowed(m, _)) => Err(Denied::Role(m)),
            Err(Refused::BadWorkspace(m)) | Err(Refused::NoWorkspace(m)) => Err(Denied::Role(m)),
            Err(Refused::Unauthenticated(_)) => Err(Denied::UnknownToken),
        }
    }
}

/// Which workspace's models a call reaches. The manager keys a model of `default` by its
/// name and one of another workspace as `workspace/name`
/// ([`trainyard_serve::source::model_key`]); callers only ever see names.
#[derive(Debug, Clone)]
pub(crate) struct ModelScope {
    workspace: String,
    /// Who called, when a token was sent (for the audit trail).
    pub(crate) caller: Option<trainyard_core::Principal>,
}

impl ModelScope {
    /// The models of `workspace`, for a call without a token.
    pub(crate) fn of(workspace: &str) -> Self {
        Self {
            workspace: workspace.to_string(),
            caller: None,
        }
    }

    /// The manager's key for the model a caller names; a name holding `/` is nobody's (it
    /// would name another workspace's key).
    pub(crate) fn key(&self, name: &str) -> Result<String, ServeError> {
        if name.contains('/') {
            return Err(ServeError::not_found(format!(
                "Request for unknown model: '{name}' is not found"
            )));
        }
        Ok(trainyard_serve::source::model_key(&self.workspace, name))
    }

    /// The name a caller knows `key` by; `None` when it is another workspace's model.
    pub(crate) fn shown<'a>(&self, key: &'a str) -> Option<&'a str> {
        let (workspace, name) = trainyard_serve::source::split_model_key(key);
        (workspace == self.workspace).then_some(name)
    }

    /// [`ModelScope::shown`] for a key this scope made.
    pub(crate) fn show<'a>(&self, key: &'a str) -> &'a str {
        self.shown(key).unwrap_or(key)
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
