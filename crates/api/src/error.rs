//! The one place where domain errors become HTTP statuses and stable codes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use trainyard_compute::ComputeError;
use trainyard_store::StoreError;
use utoipa::ToSchema;

/// Every stable error code REST v1 answers with, in one place: clients branch on these,
/// OpenAPI lists them, and a new one is added here or nowhere. (The MLflow and inference
/// APIs keep their own protocols' codes.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A field of the request breaks a rule; `field` names it.
    InvalidField,
    /// The body is not JSON.
    MalformedJson,
    /// The body is not of a type the route takes.
    UnsupportedMediaType,
    /// A query-string parameter is missing or malformed.
    InvalidQuery,
    /// A request the server cannot read otherwise.
    BadRequest,
    /// No or an unknown token.
    Unauthorized,
    /// The token may not do this (a job's token outside its job's reach).
    Forbidden,
    /// The call needs a role in the workspace it acts on, at least viewer.
    NeedsViewer,
    /// The call changes the workspace: it needs editor or more.
    NeedsEditor,
    /// The call manages the workspace's members or tokens: it needs admin.
    NeedsAdmin,
    /// A cluster-wide change (users, workspaces, quotas): it needs owner.
    NeedsOwner,
    /// The call needs a user's token, not a job's.
    NeedsUser,
    /// A read-only token cannot change anything.
    ReadOnlyToken,
    /// The token is narrowed to another workspace than the one the call names.
    TokenNarrowed,
    NotFound,
    RouteNotFound,
    MethodNotAllowed,
    JobNotFound,
    JobNotCancellable,
    /// A job still queued or running cannot be run again.
    JobNotFinished,
    /// A study's trial job is run again by its study, not by hand.
    JobOfStudy,
    /// The job asks for more than the executor could ever give.
    Unschedulable,
    /// The job asks for more than its workspace's quota ever allows; `field` names what.
    OverQuota,
    /// A quota that is full now (the workspace's queued jobs); retry later.
    QuotaExceeded,
    /// Too many password checks for one user since its last success; `Retry-After` says
    /// when the next one is taken.
    TooManyAttempts,
    WorkspaceNotFound,
    StudyNotFound,
    TrialNotFound,
    /// The trial has finished; finished trials never change.
    TrialFinished,
    /// The study takes no new trials (stopped, done, budget spent, space exhausted, or run
    /// by its template).
    StudyClosed,
    /// A single best trial was asked of a study with several objectives.
    SeveralObjectives,
    /// The workspace still holds content; nothing was removed.
    WorkspaceNotEmpty,
    /// The change would leave the workspace without an admin (an owner may make it).
    LastAdmin,
    UserNotFound,
    TokenNotFound,
    AlreadyExists,
    /// A tracking parameter breaks one of MLflow's rules.
    InvalidParameter,
    NotImplemented,
    /// A dataset manifest names a shard that was never uploaded.
    ShardMissing,
    /// A stored shard is not one the shard format reads.
    ShardUnreadable,
    /// A stored model file that is not a model the server reads.
    InvalidModel,
    /// An upload's SHA-256 is not the one its URL names.
    ChecksumMismatch,
    BodyTooLarge,
    /// Every upload slot is taken; retry shortly.
    UploadsBusy,
    /// The database or blob store cannot be reached; retry later.
    StorageUnavailable,
    ShuttingDown,
    /// A fault of the server (its log has the details).
    Internal,
}

impl ErrorCode {
    /// Every code, for OpenAPI and for tests.
    pub const ALL: [ErrorCode; 47] = [
        Self::InvalidField,
        Self::MalformedJson,
        Self::UnsupportedMediaType,
        Self::InvalidQuery,
        Self::BadRequest,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NeedsViewer,
        Self::NeedsEditor,
        Self::NeedsAdmin,
        Self::NeedsOwner,
        Self::NeedsUser,
        Self::ReadOnlyToken,
        Self::TokenNarrowed,
        Self::NotFound,
        Self::RouteNotFound,
        Self::MethodNotAllowed,
        Self::JobNotFound,
        Self::JobNotCancellable,
        Self::JobNotFinished,
        Self::JobOfStudy,
        Self::Unschedulable,
        Self::OverQuota,
        Self::QuotaExceeded,
        Self::TooManyAttempts,
        Self::WorkspaceNotFound,
        Self::StudyNotFound,
        Self::TrialNotFound,
        Self::TrialFinished,
        Self::StudyClosed,
        Self::SeveralObjectives,
        Self::WorkspaceNotEmpty,
        Self::LastAdmin,
        Self::UserNotFound,
        Self::TokenNotFound,
        Self::AlreadyExists,
        Self::InvalidParameter,
        Self::NotImplemented,
        Self::ShardMissing,
        Self::ShardUnreadable,
        Self::InvalidModel,
        Self::ChecksumMismatch,
        Self::BodyTooLarge,
        Self::UploadsBusy,
        Self::StorageUnavailable,
        Self::ShuttingDown,
        Self::Internal,
    ];

    /// The code as it appears in the body.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidField => "invalid_field",
            Self::MalformedJson => "malformed_json",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::InvalidQuery => "invalid_query",
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NeedsViewer => "needs_viewer",
            Self::NeedsEditor => "needs_editor",
            Self::NeedsAdmin => "needs_admin",
            Self::NeedsOwner => "needs_owner",
            Self::NeedsUser => "needs_user",
            Self::ReadOnlyToken => "read_only_token",
            Self::TokenNarrowed => "token_narrowed",
            Self::NotFound => "not_found",
            Self::RouteNotFound => "route_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::JobNotFound => "job_not_found",
            Self::JobNotCancellable => "job_not_cancellable",
            Self::JobNotFinished => "job_not_finished",
            Self::JobOfStudy => "job_of_study",
            Self::Unschedulable => "unschedulable",
            Self::OverQuota => "over_quota",
            Self::QuotaExceeded => "quota_exceeded",
            Self::TooManyAttempts => "too_many_attempts",
            Self::WorkspaceNotFound => "workspace_not_found",
            Self::StudyNotFound => "study_not_found",
            Self::TrialNotFound => "trial_not_found",
            Self::TrialFinished => "trial_finished",
            Self::StudyClosed => "study_closed",
            Self::SeveralObjectives => "several_objectives",
            Self::WorkspaceNotEmpty => "workspace_not_empty",
            Self::LastAdmin => "last_admin",
            Self::UserNotFound => "user_not_found",
            Self::TokenNotFound => "token_not_found",
            Self::AlreadyExists => "already_exists",
            Self::InvalidParameter => "invalid_parameter",
            Self::NotImplemented => "not_implemented",
            Self::ShardMissing => "shard_missing",
            Self::ShardUnreadable => "shard_unreadable",
            Self::InvalidModel => "invalid_model",
            Self::ChecksumMismatch => "checksum_mismatch",
            Self::BodyTooLarge => "body_too_large",
            Self::UploadsBusy => "uploads_busy",
            Self::StorageUnavailable => "storage_unavailable",
            Self::ShuttingDown => "shutting_down",
            Self::Internal => "internal",
        }
    }
}

/// `{"error": {"code": …, "message": …, "field": …}}`, the body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: clients branch on this, never on the message.
    pub code: ErrorCode,
    pub message: String,
    /// The request field at fault, as a dotted path, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
    /// Seconds after which a retry may succeed, sent as `Retry-After`.
    pub retry_after_s: Option<u64>,
}

/// A wait in whole seconds, rounded up (at least 1): a client that waits what it was told
/// is let in. What `Retry-After` carries, and what messages quote.
pub(crate) fn retry_after_s(wait: std::time::Duration) -> u64 {
    u64::try_from(wait.as_millis().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after_s: None,
        }
    }

    pub fn with_retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after_s = Some(retry_after_s(wait));
        self
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
            ErrorCode::InvalidField,
            format!("{field}: {message}"),
        )
        .with_field(field)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    pub(crate) fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error answering a request");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
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
        if let Some(s) = self.retry_after_s {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
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
                ErrorCode::Unschedulable,
                format!("{}: {} (it could never run here)", f.field, f.message),
            )
            .with_field(f.field),
            ComputeError::OverQuota(f) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::OverQuota,
                format!(
                    "{}: {} (raise the quota or ask for less)",
                    f.field, f.message
                ),
            )
            .with_field(f.field),
            ComputeError::QuotaFull(message) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::QuotaExceeded,
                message,
            )
            .with_field("quota.queued_jobs"),
            ComputeError::WorkspaceNotFound(name) => ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::WorkspaceNotFound,
                format!("no workspace named `{name}`"),
            )
            .with_field("name"),
            ComputeError::JobNotFound(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::JobNotFound,
                format!("no job with id `{id}`"),
            )
            .with_field("id"),
            e @ ComputeError::NotFinished { .. } => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::JobNotFinished,
                e.to_string(),
            ),
            e @ ComputeError::TrialOfStudy { .. } => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::JobOfStudy, e.to_string())
            }
            e @ ComputeError::NotCancellable { .. } => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::JobNotCancellable,
                e.to_string(),
            ),
            ComputeError::StudyNotFound(name) => ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::StudyNotFound,
                format!("no study named `{name}`"),
            )
            .with_field("name"),
            e @ ComputeError::StudyExists(_) => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::AlreadyExists,
                e.to_string(),
            )
            .with_field("name"),
            e @ ComputeError::TrialNotFound { .. } => ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::TrialNotFound,
                e.to_string(),
            )
            .with_field("number"),
            e @ ComputeError::TrialFinished { .. } => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::TrialFinished,
                e.to_string(),
            )
            .with_field("number"),
            ComputeError::StudyClosed(message) => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::StudyClosed, message)
            }
            ComputeError::SeveralObjectives(_) => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::SeveralObjectives,
                e.to_string(),
            ),
            ComputeError::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::ShuttingDown,
                "the server is shutting down; retry against the restarted server",
            ),
            ComputeError::Store(e) => e.into(),
            ComputeError::Tracking(e) => e.into(),
            ComputeError::Io(e) => ApiError::internal(e),
            // Only at start-up; never from a request.
            e @ ComputeError::NotAlone(_) => ApiError::internal(e),
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
                    ErrorCode::StorageUnavailable,
                    "storage is unavailable; retry later",
                )
            }
            StoreError::Migration(_)
            | StoreError::Database(_)
            | StoreError::BadUrl { .. }
            | StoreError::Blob(_)
            | StoreError::Corrupt { .. } => ApiError::internal(e),
        }
    }
}

impl From<trainyard_tracking::TrackingError> for ApiError {
    fn from(e: trainyard_tracking::TrackingError) -> Self {
        use trainyard_tracking::TrackingError as T;
        match e {
            T::InvalidParameter(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidParameter, m)
            }
            T::AlreadyExists(m) => ApiError::new(StatusCode::CONFLICT, ErrorCode::AlreadyExists, m),
            T::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, m),
            T::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, m),
            T::NotImplemented(m) => {
                ApiError::new(StatusCode::NOT_IMPLEMENTED, ErrorCode::NotImplemented, m)
            }
            T::Store(e) => e.into(),
        }
    }
}

impl From<trainyard_datasets::DatasetError> for ApiError {
    fn from(e: trainyard_datasets::DatasetError) -> Self {
        use trainyard_datasets::DatasetError as D;
        match e {
            D::Invalid { field, message } => ApiError::invalid_field(field, message),
            D::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, m),
            D::Forbidden { field, message } => {
                ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
                    .with_field(field)
            }
            e @ D::ShardMissing { index, .. } => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::ShardMissing, e.to_string())
                    .with_field(format!("manifest.shards[{index}].sha256"))
            }
            e @ D::Unreadable { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::ShardUnreadable,
                e.to_string(),
            ),
            e @ D::ChecksumMismatch { .. } => ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::ChecksumMismatch,
                e.to_string(),
            )
            .with_field("sha256"),
            e @ D::TooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::BodyTooLarge,
                e.to_string(),
            )
            .with_field("body"),
            e @ D::UploadsBusy => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::UploadsBusy,
                e.to_string(),
            ),
            D::Store(e) => e.into(),
        }
    }
}

/// What a request whose handler panicked gets: a 500 in the error shape, not a dropped
/// connection. The panic's message goes to the log; the server goes on serving.
pub(crate) fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = trainyard_background::panic_message(&*panic);
    ApiError::internal(format!("a request handler panicked: {what}")).into_response()
}

pub async fn route_not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::RouteNotFound,
        format!("no route for {}", uri.path()),
    )
}

pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_serialises_as_its_name_once() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::json!(code.as_str())
            );
            assert!(seen.insert(code.as_str()), "{} twice", code.as_str());
        }
    }
}
