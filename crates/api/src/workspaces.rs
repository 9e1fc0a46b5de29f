//! REST v1 workspaces: create and remove them (owners), list each one's weight, quotas and
//! use, and set them (owners: a workspace's own admins cannot raise its quotas).

use axum::extract::State;

use crate::extract::ApiPath as Path;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Serialize;
use trainyard_compute::fair_share::WorkspacePolicy;
use trainyard_compute::WorkspaceView;
use trainyard_core::Principal;
use utoipa::ToSchema;

use crate::extract::ApiJson;
use crate::{ApiError, AppState, ErrorBody, ErrorCode};

/// Every workspace.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceList {
    pub workspaces: Vec<WorkspaceView>,
}

/// Workspaces with their weights, quotas and what they hold now.
#[utoipa::path(get, path = "/api/v1/workspaces", tag = "workspaces",
    responses((status = 200, body = WorkspaceList),
              (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<WorkspaceList>, ApiError> {
    let mut workspaces = state.scheduler.workspaces().await?;
    // Owners see every workspace; others those they have a role in; a narrowed token its
    // own.
    if who.narrowed {
        workspaces.retain(|w| w.name == who.workspace);
    } else if !who.is_owner() {
        let mine = match &who.user {
            Some(user) => state.tracking.db().roles_of(user).await?,
            None => Default::default(),
        };
        workspaces.retain(|w| mine.contains_key(&w.name));
    }
    Ok(Json(WorkspaceList { workspaces }))
}

/// Sets a workspace's fair-share weight and quotas (every field at once; an absent limit
/// is none). A quota below what is in use stops no running job: it holds back what would
/// start next.
#[utoipa::path(put, path = "/api/v1/workspaces/{name}/policy", tag = "workspaces",
    params(("name" = String, Path, description = "the workspace")),
    request_body = WorkspacePolicy,
    responses((status = 200, body = WorkspaceView), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_policy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(policy): ApiJson<WorkspacePolicy>,
) -> Result<Json<WorkspaceView>, ApiError> {
    Ok(Json(
        state.scheduler.set_workspace_policy(&name, policy).await?,
    ))
}

/// A workspace to create.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWorkspace {
    /// 1-63 of a-z 0-9 - _ . (a letter or digit first).
    pub name: String,
}

/// Creates an empty workspace with the default weight and no quotas (owners).
#[utoipa::path(post, path = "/api/v1/workspaces", tag = "workspaces", request_body = NewWorkspace,
    responses((status = 201, body = WorkspaceView), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(new): ApiJson<NewWorkspace>,
) -> Result<(StatusCode, Json<WorkspaceView>), ApiError> {
    if !trainyard_core::access::valid_name(&new.name) {
        return Err(ApiError::invalid_field(
            "name",
            "1-63 of a-z 0-9 - _ . starting with a letter or digit",
        ));
    }
    let now = trainyard_core::time::now_ms();
    if !state
        .tracking
        .db()
        .create_workspace(&new.name, &new.name, now)
        .await?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::AlreadyExists,
            format!("a workspace `{}` exists", new.name),
        )
        .with_field("name"));
    }
    state.auth.forget();
    // MLflow's experiment 0 is there from the start, as in `default`.
    state
        .tracking
        .scoped(&new.name)
        .make_default_experiment()
        .await?;
    let view = state
        .scheduler
        .workspaces()
        .await?
        .into_iter()
        .find(|w| w.name == new.name)
        .ok_or_else(|| crate::users::no_workspace(&new.name))?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// How to remove a workspace.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemoveQuery {
    /// Remove its content too: finished jobs, experiments with their runs, metrics and
    /// artifacts, registered models, datasets (shards no other workspace holds).
    #[serde(default)]
    cascade: bool,
}

/// Removes a workspace with its members, secrets and tokens (owners). One that holds
/// content is refused with `workspace_not_empty` unless `cascade=true`, and one with
/// queued or running jobs always is; nothing is removed then.
#[utoipa::path(delete, path = "/api/v1/workspaces/{name}", tag = "workspaces",
    params(("name" = String, Path, description = "the workspace"), RemoveQuery),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
    crate::extract::ApiQuery(query): crate::extract::ApiQuery<RemoveQuery>,
) -> Result<StatusCode, ApiError> {
    use trainyard_store::WorkspaceRemoval;
    if name == trainyard_core::DEFAULT_WORKSPACE {
        return Err(ApiError::invalid_field(
            "name",
            "the default workspace stays",
        ));
    }
    let conflict = |message: String| {
        ApiError::new(StatusCode::CONFLICT, ErrorCode::WorkspaceNotEmpty, message)
    };
    match state
        .tracking
        .db()
        .delete_workspace(&name, query.cascade)
        .await?
    {
        WorkspaceRemoval::Removed(content) => {
            state.auth.forget();
            // The rows are gone; now the blobs that were theirs alone.
            state.tracking.remove_workspace_artifacts(&name).await?;
            state
                .tracking
                .remove_experiment_artifacts(&content.experiments)
                .await?;
            let blobs = state.tracking.blobs();
            for job in &content.jobs {
                blobs.remove_job_files(job).await?;
            }
            for sha in &content.orphan_shards {
                blobs.remove_shard(sha).await?;
            }
            Ok(StatusCode::NO_CONTENT)
        }
        WorkspaceRemoval::NotFound => Err(crate::users::no_workspace(&name)),
        WorkspaceRemoval::NotEmpty(what) => Err(conflict(format!(
            "workspace `{name}` still holds {what}; remove them first, or ask for cascade=true"
        ))),
        WorkspaceRemoval::Busy(what) => Err(conflict(format!(
            "workspace `{name}` still has {what}; cancel them first"
        ))),
    }
}
