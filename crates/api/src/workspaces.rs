//! REST v1 workspaces as the scheduler shares pools between them: list each one's weight,
//! quotas and use; set them (admin tokens).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Serialize;
use trainyard_compute::fair_share::WorkspacePolicy;
use trainyard_compute::WorkspaceView;
use trainyard_store::Principal;
use utoipa::ToSchema;

use crate::extract::ApiJson;
use crate::{ApiError, AppState, ErrorBody, ErrorCode};

/// Every workspace.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceList {
    pub workspaces: Vec<WorkspaceView>,
}

fn admin_only(who: &Principal, what: &str) -> Result<(), ApiError> {
    if who.role == "admin" {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            format!("{what} needs an admin token"),
        ))
    }
}

/// Workspaces with their weights, quotas and what they hold now.
#[utoipa::path(get, path = "/api/v1/workspaces", tag = "workspaces",
    responses((status = 200, body = WorkspaceList),
              (status = 403, body = ErrorBody, description = "not an admin token")),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<WorkspaceList>, ApiError> {
    admin_only(&who, "listing workspaces")?;
    Ok(Json(WorkspaceList {
        workspaces: state.scheduler.workspaces().await?,
    }))
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
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    ApiJson(policy): ApiJson<WorkspacePolicy>,
) -> Result<Json<WorkspaceView>, ApiError> {
    admin_only(&who, "changing a workspace's quotas")?;
    Ok(Json(
        state.scheduler.set_workspace_policy(&name, policy).await?,
    ))
}
