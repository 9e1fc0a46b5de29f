//! The MLflow-compatible REST API (`/api/2.0/mlflow/…`, also under `/ajax-api/2.0/mlflow`),
//! the proxied artifact service (`/api/2.0/mlflow-artifacts/…`) and the capability probe,
//! over [`trainyard_tracking::Tracking`]. Errors use MLflow's body and codes
//! (`{"error_code", "message"}`); a caller's mistake is never a 5xx (the client would retry
//! it for minutes).

mod artifacts;
mod params;
mod registry;
mod tracking;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use trainyard_core::Principal;
use trainyard_tracking::{TrackingError, Writer};

pub use params::Params;

use crate::AppState;

/// An error in MLflow's shape.
#[derive(Debug)]
pub struct MlflowError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl MlflowError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "INVALID_PARAMETER_VALUE",
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "RESOURCE_DOES_NOT_EXIST",
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "BAD_REQUEST",
            message: message.into(),
        }
    }

    pub fn too_large() -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "INVALID_PARAMETER_VALUE",
            message: format!("the body is larger than {} bytes", crate::MAX_BODY_BYTES),
        }
    }

    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            code: "PERMISSION_DENIED",
            message: message.into(),
        }
    }

    fn not_implemented(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_IMPLEMENTED,
            code: "NOT_IMPLEMENTED",
            message: message.into(),
        }
    }
}

impl From<TrackingError> for MlflowError {
    fn from(e: TrackingError) -> Self {
        let message = e.to_string();
        let (status, code) = match e {
            TrackingError::Store(store) => {
                // Storage faults are ours: the shared mapping logs them and hides details.
                let api: crate::ApiError = store.into();
                let code = if api.status == StatusCode::SERVICE_UNAVAILABLE {
                    "TEMPORARILY_UNAVAILABLE"
                } else {
                    "INTERNAL_ERROR"
                };
                return Self {
                    status: api.status,
                    code,
                    message: api.message,
                };
            }
            TrackingError::InvalidParameter(_) => {
                (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE")
            }
            TrackingError::AlreadyExists(_) => (StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS"),
            TrackingError::NotFound(_) => (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST"),
            TrackingError::Forbidden(_) => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
            TrackingError::NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, "NOT_IMPLEMENTED"),
        };
        Self {
            status,
            code,
            message,
        }
    }
}

impl IntoResponse for MlflowError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error_code": self.code, "message": self.message})),
        )
            .into_response()
    }
}

pub type Reply = Result<Json<Value>, MlflowError>;

/// Who is writing, from the request's principal: a job's token is
/// [`Writer::Job`](trainyard_tracking::Writer) and may change only what its job owns
/// (`trainyard_tracking::access`). A request without a principal (none reaches these routes)
/// gets the least: a job that owns nothing.
pub struct By(pub Writer);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for By {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(By(match parts.extensions.get::<Principal>() {
            Some(p) => writer_of(p),
            None => Writer::Job(String::new()),
        }))
    }
}

/// A job's token writes as its job; every other token as a user.
pub fn writer_of(p: &Principal) -> Writer {
    match &p.job {
        Some(job) => Writer::Job(job.clone()),
        None => Writer::User,
    }
}

/// Whether `path` is one of MLflow's (whose clients read MLflow's error shape).
pub fn is_mlflow_path(path: &str) -> bool {
    path.starts_with("/api/2.0/mlflow")
        || path.starts_with("/ajax-api/")
        || path.starts_with("/api/3.0/mlflow")
}

/// Whether a job's token may call this route at all (default deny): every read, and the
/// writes whose handlers check what the job owns. Everything else (deletes, renames,
/// aliases, stages, experiment changes) is refused here, before any handler runs.
pub fn job_may_call(method: &axum::http::Method, path: &str) -> bool {
    use axum::http::Method;
    let tail = ["/api/2.0/mlflow/", "/ajax-api/2.0/mlflow/"]
        .iter()
        .find_map(|p| path.strip_prefix(p));
    if let Some(tail) = tail {
        const SCOPED_WRITES: &[&str] = &[
            "experiments/create",
            "experiments/search",
            "experiments/search-datasets",
            "runs/create",
            "runs/update",
            "runs/log-parameter",
            "runs/set-tag",
            "runs/delete-tag",
            "runs/log-metric",
            "runs/log-batch",
            "runs/log-inputs",
            "runs/outputs",
            "runs/log-model",
            "runs/search",
            "logged-models",
            "logged-models/search",
            "registered-models/create",
            "registered-models/get-latest-versions",
            "model-versions/create",
            "model-versions/set-tag",
            "upload-artifact",
        ];
        if *method == Method::GET || *method == Method::HEAD {
            return true;
        }
        if SCOPED_WRITES.contains(&tail) {
            return *method == Method::POST;
        }
        // logged-models/{id} (finalize), …/tags (set), …/tags/{key} (delete), …/params.
        if let Some(rest) = tail.strip_prefix("logged-models/") {
            let segments: Vec<&str> = rest.split('/').collect();
            return matches!(
                (method.as_str(), segments.as_slice()),
                ("PATCH", [_] | [_, "tags"]) | ("DELETE", [_, "tags", _]) | ("POST", [_, "params"])
            );
        }
        return false;
    }
    if let Some(tail) = path.strip_prefix("/api/2.0/mlflow-artifacts/") {
        return match method.as_str() {
            "GET" | "HEAD" => true,
            "PUT" => tail.starts_with("artifacts/") || tail.starts_with("mpu/upload/"),
            "POST" => ["mpu/create/", "mpu/complete/", "mpu/abort/"]
                .iter()
                .any(|p| tail.starts_with(p)),
            _ => false,
        };
    }
    // The capability probe, the UI's file route, dataset reads, and the two dataset writes
    // (a shard, a new version: the handler checks the dataset is the job's own).
    if let Some(tail) = path.strip_prefix("/api/v1/datasets") {
        return match method.as_str() {
            "GET" | "HEAD" => true,
            "PUT" => tail.starts_with("/shards/") && tail.matches('/').count() == 2,
            "POST" => tail.ends_with("/versions") && tail.matches('/').count() == 2,
            _ => false,
        };
    }
    matches!(method.as_str(), "GET" | "HEAD")
        && (path == "/api/3.0/mlflow/server-info" || path == "/get-artifact")
}

async fn endpoint_not_found(uri: axum::http::Uri) -> MlflowError {
    MlflowError {
        status: StatusCode::NOT_FOUND,
        code: "ENDPOINT_NOT_FOUND",
        message: format!("No endpoint for {}", uri.path()),
    }
}

async fn server_info() -> Json<Value> {
    Json(json!({
        "store_type": "SqlStore",
        "workspaces_enabled": false,
        "trace_archival_enabled": false,
        "multipart_uploads_enabled": true,
        "multipart_downloads_enabled": false,
        "presigned_upload_run_id_supported": false,
        "presigned_upload_model_id_supported": false,
        "features_enabled": {"gateway": false}
    }))
}

/// The tracking, registry and logged-model endpoints (mounted under two prefixes).
fn api_routes() -> Router<AppState> {
    use registry as reg;
    use tracking as tr;
    Router::new()
        .route("/experiments/create", post(tr::create_experiment))
        .route("/experiments/get", get(tr::get_experiment))
        .route("/experiments/get-by-name", get(tr::get_experiment_by_name))
        .route(
            "/experiments/search",
            post(tr::search_experiments).get(tr::search_experiments),
        )
        .route("/experiments/update", post(tr::update_experiment))
        .route("/experiments/delete", post(tr::delete_experiment))
        .route("/experiments/restore", post(tr::restore_experiment))
        .route(
            "/experiments/set-experiment-tag",
            post(tr::set_experiment_tag),
        )
        .route(
            "/experiments/delete-experiment-tag",
            post(tr::delete_experiment_tag),
        )
        .route("/experiments/search-datasets", post(tr::search_datasets))
        .route("/runs/create", post(tr::create_run))
        .route("/runs/get", get(tr::get_run))
        .route("/runs/update", post(tr::update_run))
        .route("/runs/delete", post(tr::delete_run))
        .route("/runs/restore", post(tr::restore_run))
        .route("/runs/log-parameter", post(tr::log_param))
        .route("/runs/set-tag", post(tr::set_tag))
        .route("/runs/delete-tag", post(tr::delete_tag))
        .route("/runs/log-metric", post(tr::log_metric))
        .route("/runs/log-batch", post(tr::log_batch))
        .route("/runs/log-inputs", post(tr::log_inputs))
        .route("/runs/outputs", post(tr::log_outputs))
        .route("/runs/log-model", post(tr::log_model))
        .route("/runs/search", post(tr::search_runs).get(tr::search_runs))
        .route("/metrics/get-history", get(tr::metric_history))
        .route(
            "/metrics/get-history-bulk-interval",
            get(tr::metric_history_bulk_interval),
        )
        .route("/artifacts/list", get(tr::list_run_artifacts))
        .route("/logged-models", post(reg::create_logged_model))
        .route("/logged-models/search", post(reg::search_logged_models))
        .route(
            "/logged-models/{model_id}",
            get(reg::get_logged_model)
                .patch(reg::finalize_logged_model)
                .delete(reg::delete_logged_model),
        )
        .route(
            "/logged-models/{model_id}/tags",
            patch(reg::set_logged_model_tags),
        )
        .route(
            "/logged-models/{model_id}/tags/{key}",
            delete(reg::delete_logged_model_tag),
        )
        .route(
            "/logged-models/{model_id}/params",
            post(reg::log_logged_model_params),
        )
        .route(
            "/logged-models/{model_id}/artifacts/directories",
            get(reg::list_logged_model_artifacts),
        )
        .route(
            "/logged-models/{model_id}/artifacts/files",
            get(artifacts::logged_model_file),
        )
        .route("/upload-artifact", post(artifacts::upload_run_artifact))
        .route("/metrics/get-history-bulk", get(tr::metric_history_bulk))
        .route(
            "/registered-models/create",
            post(reg::create_registered_model),
        )
        .route("/registered-models/get", get(reg::get_registered_model))
        .route(
            "/registered-models/update",
            patch(reg::update_registered_model),
        )
        .route(
            "/registered-models/rename",
            post(reg::rename_registered_model),
        )
        .route(
            "/registered-models/delete",
            delete(reg::delete_registered_model),
        )
        .route(
            "/registered-models/search",
            get(reg::search_registered_models),
        )
        .route(
            "/registered-models/get-latest-versions",
            post(reg::latest_versions).get(reg::latest_versions),
        )
        .route(
            "/registered-models/set-tag",
            post(reg::set_registered_model_tag),
        )
        .route(
            "/registered-models/delete-tag",
            delete(reg::delete_registered_model_tag),
        )
        .route(
            "/registered-models/alias",
            post(reg::set_alias)
                .delete(reg::delete_alias)
                .get(reg::get_by_alias),
        )
        .route("/model-versions/create", post(reg::create_model_version))
        .route("/model-versions/get", get(reg::get_model_version))
        .route("/model-versions/update", patch(reg::update_model_version))
        .route(
            "/model-versions/transition-stage",
            post(reg::transition_stage),
        )
        .route("/model-versions/delete", delete(reg::delete_model_version))
        .route("/model-versions/search", get(reg::search_model_versions))
        .route("/model-versions/get-download-uri", get(reg::download_uri))
        .route("/model-versions/set-tag", post(reg::set_model_version_tag))
        .route(
            "/model-versions/delete-tag",
            delete(reg::delete_model_version_tag),
        )
        .fallback(endpoint_not_found)
        .method_not_allowed_fallback(endpoint_not_found)
}

/// Every MLflow route; all of them need a token.
pub fn routes() -> Router<AppState> {
    let artifacts = Router::new()
        .route("/artifacts", get(artifacts::list))
        .route(
            "/artifacts/{*path}",
            get(artifacts::download)
                .put(artifacts::upload)
                .delete(artifacts::remove),
        )
        .route("/mpu/create/{*path}", post(artifacts::multipart_create))
        .route(
            "/mpu/upload/{id}/{part}",
            axum::routing::put(artifacts::multipart_part),
        )
        .route("/mpu/complete/{*path}", post(artifacts::multipart_complete))
        .route("/mpu/abort/{*path}", post(artifacts::multipart_abort))
        .route("/presigned/{*rest}", get(artifacts::presigned_unsupported))
        .fallback(endpoint_not_found)
        .method_not_allowed_fallback(endpoint_not_found);
    Router::new()
        .nest("/api/2.0/mlflow", api_routes())
        .nest("/ajax-api/2.0/mlflow", api_routes())
        .nest("/api/2.0/mlflow-artifacts", artifacts)
        .route("/api/3.0/mlflow/server-info", get(server_info))
        .route("/get-artifact", get(artifacts::get_run_artifact))
}
