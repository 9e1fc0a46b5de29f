//! The one place where domain errors become HTTP statuses and stable codes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use trainyard_compute::ComputeError;
use trainyard_store::StoreError;
use utoipa::ToSchema;

/// `{"error": {"code": …, "message": …, "field": …}}`, the body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: clients branch on this, never on the message.
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, as a dotted path, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            format!("{field}: {message}"),
        )
        .with_field(field)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error answering a request");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has details",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code: self.code,
                    message: self.message,
                    field: self.field,
                },
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"trainyard\""),
            );
        }
        response
    }
}

impl From<ComputeError> for ApiError {
    fn from(e: ComputeError) -> Self {
        match e {
            ComputeError::Invalid(f) => ApiError::invalid_field(f.field, f.message),
            ComputeError::Unschedulable(f) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unschedulable",
                format!("{}: {} (it could never run here)", f.field, f.message),
            )
            .with_field(f.field),
            ComputeError::JobNotFound(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                "job_not_found",
                format!("no job with id `{id}`"),
            )
            .with_field("id"),
            e @ ComputeError::NotCancellable { .. } => {
                ApiError::new(StatusCode::CONFLICT, "job_not_cancellable", e.to_string())
            }
            ComputeError::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down; retry against the restarted server",
            ),
            ComputeError::Store(e) => e.into(),
            ComputeError::Tracking(e) => e.into(),
            ComputeError::Io(e) => ApiError::internal(e),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DatabaseUnreachable { .. } | StoreError::BlobsUnreachable { .. } => {
                tracing::error!(error = %e, "storage unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "storage is unavailable; retry later",
                )
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<trainyard_tracking::TrackingError> for ApiError {
    fn from(e: trainyard_tracking::TrackingError) -> Self {
        use trainyard_tracking::TrackingError as T;
        match e {
            T::InvalidParameter(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_parameter", m)
            }
            T::AlreadyExists(m) => ApiError::new(StatusCode::CONFLICT, "already_exists", m),
            T::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            T::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            T::NotImplemented(m) => {
                ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_implemented", m)
            }
            T::Store(e) => e.into(),
        }
    }
}

/// What a request whose handler panicked gets: a 500 in the error shape, not a dropped
/// connection. The panic's message goes to the log; the server goes on serving.
pub(crate) fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    ApiError::internal(format!("a request handler panicked: {what}")).into_response()
}

pub async fn route_not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        format!("no route for {}", uri.path()),
    )
}

pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}
