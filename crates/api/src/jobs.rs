//! REST v1 jobs: submit, list, get, cancel, logs.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;

use crate::extract::ApiPath as Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use trainyard_core::Principal;
use trainyard_core::{Job, JobState, JobSubmission};
use trainyard_store::JobFilter;
use utoipa::{IntoParams, ToSchema};

use crate::extract::{ApiJson, ApiQuery};
use crate::{ApiError, AppState, ErrorBody};

/// Largest piece of log sent in one write.
const LOG_PIECE: u64 = 256 * 1024;
const MAX_PAGE: u32 = 500;

/// Submit a job. Answered once the job is durably queued.
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = JobSubmission,
    responses((status = 201, body = Job, description = "queued"),
              (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 422, body = ErrorBody, description = "could never fit this machine or the workspace's quota"),
              (status = 429, body = ErrorBody, description = "the workspace's queued-jobs quota is full")),
    security(("bearer" = [])))]
pub async fn submit(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(submission): ApiJson<JobSubmission>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    // The submission's own rules first (a task and a command together is `task`'s fault).
    submission
        .validate()
        .map_err(|f| ApiError::invalid_field(f.field, f.message))?;
    if let (Some(task), Some(check)) = (&submission.task, &state.task_args) {
        check(task).map_err(|why| ApiError::invalid_field("task.args", why))?;
    }
    let job = state.scheduler.submit(&who.workspace, submission).await?;
    Ok((StatusCode::CREATED, Json(job)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs in this state.
    state: Option<String>,
    /// Only jobs with this label, as `key=value`.
    label: Option<String>,
    /// At most this many jobs (1-500, default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// One page of jobs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// List jobs, newest first, with cursor pagination.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = JobPage), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<JobPage>, ApiError> {
    let state_filter = match &query.state {
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            ApiError::invalid_field(
                "state",
                format!("unknown state `{s}`; use queued, running, succeeded, failed or cancelled"),
            )
        })?),
        None => None,
    };
    let label = match &query.label {
        Some(l) => Some(
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| ApiError::invalid_field("label", "use `key=value`"))?,
        ),
        None => None,
    };
    crate::page::check_cursor(query.cursor.as_deref())?;
    let limit = crate::page::limit(query.limit, 50, MAX_PAGE)?;
    let filter = JobFilter {
        state: state_filter,
        label,
        cursor: query.cursor.clone(),
        limit: limit + 1,
    };
    let mut jobs = state
        .scheduler
        .store()
        .db
        .list_jobs(&who.workspace, &filter)
        .await?;
    let next_cursor = crate::page::cut(&mut jobs, limit, |j| &j.id);
    Ok(Json(JobPage { jobs, next_cursor }))
}

/// One job.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(state.scheduler.get(&who.workspace, &id).await?))
}

/// Run a finished job again, as a new job with the same command or task, resources,
/// environment, secrets' names, pool and tracking, labelled `retry_of=ID`. A job still
/// queued or running is refused (cancel it first).
#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", tag = "jobs",
    params(("id" = String, Path, description = "job id")),
    responses((status = 201, body = Job), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "not finished yet, or a study's trial")),
    security(("bearer" = [])))]
pub async fn retry(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    let again = state.scheduler.retry(&who.workspace, &id).await?;
    Ok((StatusCode::CREATED, Json(again)))
}

/// Cancel a job: a queued one at once; a running one's whole process tree is ended
/// (SIGTERM, then SIGKILL after the grace period) and it then shows `cancelled`.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "already finished")),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(state.scheduler.cancel(&who.workspace, &id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Start at this byte offset.
    offset: Option<u64>,
    /// Only the last N lines (ignored when `offset` is given).
    tail: Option<u64>,
    /// Keep the response open and stream new output until the job ends.
    follow: Option<bool>,
}

/// A job's combined stdout and stderr as plain text. The `X-Log-Size` header tells how
/// many bytes exist so far; pass an offset to continue from where you stopped.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/logs", tag = "jobs",
    params(("id" = String, Path, description = "job id"), LogQuery),
    responses((status = 200, content_type = "text/plain", body = String),
              (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn logs(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> Result<Response, ApiError> {
    let job = state.scheduler.get(&who.workspace, &id).await?;
    let logs = state.scheduler.logs().clone();
    let size = logs.size(&job.id).await?;
    let start = match (query.offset, query.tail) {
        (Some(offset), _) => offset,
        (None, Some(lines)) => logs.tail_offset(&job.id, lines).await?,
        (None, None) => 0,
    };
    let follow = query.follow.unwrap_or(false);
    let scheduler = state.scheduler.clone();
    let workspace = who.workspace.clone();
    let reader = logs.reader(&job.id);
    // When the last open stream ends (or its client goes), the buffers go back to the system.
    let trim = TrimOnDrop::new();
    let stream =
        futures::stream::unfold((reader, start, false), move |(mut reader, offset, done)| {
            let _trim = &trim;
            let scheduler = scheduler.clone();
            let workspace = workspace.clone();
            let id = id.clone();
            async move {
                if done {
                    return None;
                }
                let mut job_ended = false;
                // Idle followers (a queued job, a quiet one) ask less and less often.
                let mut pause = Duration::from_millis(100);
                loop {
                    let piece = match reader.read(offset, LOG_PIECE).await {
                        Ok(piece) => piece,
                        Err(e) => {
                            tracing::warn!(job = %id, error = %e, "log read failed mid-stream");
                            return None;
                        }
                    };
                    if !piece.data.is_empty() {
                        let next = piece.next_offset;
                        return Some((
                            Ok::<Bytes, std::io::Error>(piece.data),
                            (reader, next, false),
                        ));
                    }
                    if !follow || job_ended {
                        return None;
                    }
                    // Read once more after the job is seen ended, then stop.
                    job_ended = match scheduler.get(&workspace, &id).await {
                        Ok(job) => job.state.is_terminal(),
                        Err(_) => true,
                    };
                    if !job_ended {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(1));
                    }
                }
            }
        });
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::HeaderName::from_static("x-log-size"),
                size.to_string(),
            ),
            (
                header::HeaderName::from_static("x-job-state"),
                job.state.as_str().to_string(),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Log streams open now.
static OPEN_LOG_STREAMS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts an open log stream; when the last one is dropped, freed memory goes back to the
/// system: hundreds of followed logs otherwise leave their buffers resident in the
/// allocator's arenas.
struct TrimOnDrop;

impl TrimOnDrop {
    fn new() -> Self {
        OPEN_LOG_STREAMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        TrimOnDrop
    }
}

impl Drop for TrimOnDrop {
    fn drop(&mut self) {
        if OPEN_LOG_STREAMS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) == 1 {
            trainyard_serve::memory::release_free_memory();
        }
    }
}

/// The machine's resources: capacity, what is free now, queued and running counts.
#[utoipa::path(get, path = "/api/v1/resources", tag = "jobs",
    responses((status = 200, body = trainyard_compute::Usage)),
    security(("bearer" = [])))]
pub async fn resources(
    State(state): State<AppState>,
) -> Result<Json<trainyard_compute::Usage>, ApiError> {
    Ok(Json(state.scheduler.usage().await?))
}
