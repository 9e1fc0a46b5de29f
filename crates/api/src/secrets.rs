//! REST v1 workspace secrets: set and remove them (the workspace's admins), list their
//! names (its members). A value is never returned: it reaches only the environment of the
//! jobs that name it (`JobSubmission::secrets`).

use axum::extract::State;

use crate::extract::ApiPath as Path;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use trainyard_core::Principal;
use utoipa::ToSchema;

use crate::extract::ApiJson;
use crate::{ApiError, AppState, ErrorBody, ErrorCode};

/// A secret as listed: its name and times, never its value.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretInfo {
    pub name: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SecretList {
    pub workspace: String,
    pub secrets: Vec<SecretInfo>,
}

/// A secret's value to keep.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretValue {
    /// At most 64 KiB of UTF-8, no NUL (it becomes an environment variable).
    pub value: String,
}

/// The names of the workspace's secrets.
#[utoipa::path(get, path = "/api/v1/secrets", tag = "secrets",
    responses((status = 200, body = SecretList), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<SecretList>, ApiError> {
    let secrets = state
        .tracking
        .db()
        .secrets(&who.workspace)
        .await?
        .into_iter()
        .map(|(name, created_at_ms, updated_at_ms)| SecretInfo {
            name,
            created_at_ms,
            updated_at_ms,
        })
        .collect();
    Ok(Json(SecretList {
        workspace: who.workspace,
        secrets,
    }))
}

/// Sets a secret of the workspace (its admins); 201 when new, 200 when replaced. Stored
/// encrypted with the server's secrets key.
#[utoipa::path(put, path = "/api/v1/secrets/{name}", tag = "secrets",
    params(("name" = String, Path, description = "1-63 of a-z 0-9 - _ .")),
    request_body = SecretValue,
    responses((status = 201, body = SecretInfo), (status = 200, body = SecretInfo),
              (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn put(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<SecretValue>,
) -> Result<(StatusCode, Json<SecretInfo>), ApiError> {
    if !trainyard_core::access::valid_name(&name) {
        return Err(ApiError::invalid_field(
            "name",
            "1-63 of a-z 0-9 - _ . starting with a letter or digit",
        ));
    }
    if body.value.len() > trainyard_store::MAX_SECRET_BYTES || body.value.contains('\0') {
        return Err(ApiError::invalid_field(
            "value",
            "at most 64 KiB, without NUL (it becomes an environment variable)",
        ));
    }
    let key = state.secrets_key.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StorageUnavailable,
            "this server has no secrets key",
        )
    })?;
    let now = trainyard_core::time::now_ms();
    let created = state
        .tracking
        .db()
        .put_secret(key, &who.workspace, &name, &body.value, now)
        .await?;
    let info = state
        .tracking
        .db()
        .secrets(&who.workspace)
        .await?
        .into_iter()
        .find(|(n, _, _)| *n == name)
        .map(|(name, created_at_ms, updated_at_ms)| SecretInfo {
            name,
            created_at_ms,
            updated_at_ms,
        })
        .unwrap_or(SecretInfo {
            name,
            created_at_ms: now,
            updated_at_ms: now,
        });
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(info)))
}

/// Removes a secret of the workspace (its admins). Jobs already running keep the value
/// they were given; later attempts of jobs naming it fail, saying so.
#[utoipa::path(delete, path = "/api/v1/secrets/{name}", tag = "secrets",
    params(("name" = String, Path, description = "the secret")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state
        .tracking
        .db()
        .delete_secret(&who.workspace, &name)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no secret `{name}` in workspace `{}`", who.workspace),
        ))
    }
}
