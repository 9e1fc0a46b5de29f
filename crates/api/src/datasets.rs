//! REST v1 datasets over [`trainyard_datasets::Datasets`]: clients (the CLI's `dataset
//! import`, a training job) build shards themselves, upload each under its SHA-256, then
//! commit a manifest naming them. Every rule lives in the service; these handlers only
//! translate HTTP.

use crate::extract::ApiPath as Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use trainyard_datasets::{Caller, CreatedVersion, DatasetInfo, DatasetVersionInfo};
use utoipa::{IntoParams, ToSchema};

use crate::extract::{ApiJson, ApiQuery};
use crate::{ApiError, ErrorBody, Scoped};

/// Largest shard upload (the body limit of its route).
pub const MAX_SHARD_BYTES: usize = trainyard_datasets::MAX_SHARD_BYTES as usize;

#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetList {
    pub datasets: Vec<DatasetInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetVersionList {
    pub name: String,
    pub versions: Vec<DatasetVersionInfo>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateVersion {
    #[schema(value_type = Object)]
    pub manifest: serde_json::Value,
}

#[utoipa::path(get, path = "/api/v1/datasets", tag = "datasets",
    responses((status = 200, body = DatasetList)), security(("bearer" = [])))]
pub async fn list(Scoped(s): Scoped) -> Result<Json<DatasetList>, ApiError> {
    Ok(Json(DatasetList {
        datasets: s.datasets.list().await?,
    }))
}

#[utoipa::path(get, path = "/api/v1/datasets/{name}", tag = "datasets",
    params(("name" = String, Path, description = "dataset name")),
    responses((status = 200, body = DatasetVersionList), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn versions(
    Scoped(s): Scoped,
    Path(name): Path<String>,
) -> Result<Json<DatasetVersionList>, ApiError> {
    let versions = s.datasets.versions(&name).await?;
    Ok(Json(DatasetVersionList { name, versions }))
}

#[utoipa::path(get, path = "/api/v1/datasets/{name}/versions/{version}", tag = "datasets",
    params(("name" = String, Path, description = "dataset name"),
           ("version" = String, Path, description = "`latest`, a version id or a unique prefix of 6+ characters")),
    responses((status = 200, body = DatasetVersionInfo), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn version(
    Scoped(s): Scoped,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<DatasetVersionInfo>, ApiError> {
    Ok(Json(s.datasets.version(&name, &version).await?))
}

/// Elements of one tensor cell a preview sends (a 3×128×128 image, a 256×256 one); larger
/// cells are left out and named in `truncated`.
const MAX_CELL_VALUES: usize = 65_536;
/// Bytes of one opaque cell (an encoded image) a preview sends.
const MAX_CELL_BYTES: usize = 1 << 20;
/// Values (tensor elements, bytes of opaque cells) one preview sends in all; cells past it
/// are left out and their columns named in `truncated`.
const MAX_HEAD_VALUES: usize = 4 << 20;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HeadQuery {
    /// Rows (1-100, default 20).
    rows: Option<usize>,
}

/// A version's first rows, for a preview.
#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetHead {
    pub name: String,
    pub version: String,
    /// Each column's name and type (`{"name", "type", "shape"}` as in the manifest).
    #[schema(value_type = Vec<Object>)]
    pub columns: Vec<trainyard_datasets::Field>,
    /// Column → value: numbers, strings, tensors as flat arrays (row-major, of the column's
    /// shape), opaque bytes (encoded images) as base64.
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Columns whose cells were too large to send, alone or together (null in `rows`).
    pub truncated: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/datasets/{name}/versions/{version}/head", tag = "datasets",
    params(("name" = String, Path, description = "dataset name"),
           ("version" = String, Path, description = "`latest`, a version id or a unique prefix of 6+ characters"),
           HeadQuery),
    responses((status = 200, body = DatasetHead), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn head(
    Scoped(s): Scoped,
    Path((name, version)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<HeadQuery>,
) -> Result<Json<DatasetHead>, ApiError> {
    use base64::Engine;
    use trainyard_datasets::Column;
    let (info, table) = s
        .datasets
        .head(&name, &version, q.rows.unwrap_or(20))
        .await?;
    let mut rows = vec![serde_json::Map::new(); table.rows()];
    let mut budget = MAX_HEAD_VALUES;
    let mut spend = |n: usize| match budget.checked_sub(n) {
        Some(left) => {
            budget = left;
            true
        }
        None => false,
    };
    let mut truncated = Vec::new();
    for (field, column) in table.schema.iter().zip(&table.columns) {
        let mut cut = false;
        for (i, row) in rows.iter_mut().enumerate() {
            let value = match column {
                Column::Float32 { shape, values } => {
                    let n: usize = shape.iter().product();
                    if n > MAX_CELL_VALUES || !spend(n) {
                        cut = true;
                        serde_json::Value::Null
                    } else if shape.is_empty() {
                        serde_json::json!(finite(values[i]))
                    } else {
                        serde_json::json!(values[i * n..(i + 1) * n]
                            .iter()
                            .map(|v| finite(*v))
                            .collect::<Vec<_>>())
                    }
                }
                Column::Int64(v) => serde_json::json!(v[i]),
                Column::String(v) => serde_json::json!(v[i]),
                Column::Bytes(v) if v[i].len() > MAX_CELL_BYTES || !spend(v[i].len()) => {
                    cut = true;
                    serde_json::Value::Null
                }
                Column::Bytes(v) => {
                    serde_json::json!(base64::engine::general_purpose::STANDARD.encode(&v[i]))
                }
            };
            row.insert(field.name.clone(), value);
        }
        if cut {
            truncated.push(field.name.clone());
        }
    }
    Ok(Json(DatasetHead {
        name: info.name,
        version: info.version,
        columns: table.schema,
        rows,
        truncated,
    }))
}

/// A float for JSON: NaN and infinities (which JSON has not) as null.
fn finite(v: f32) -> Option<f32> {
    v.is_finite().then_some(v)
}

#[utoipa::path(post, path = "/api/v1/datasets/{name}/versions", tag = "datasets",
    params(("name" = String, Path, description = "dataset name")),
    request_body = CreateVersion,
    responses((status = 201, body = CreatedVersion), (status = 200, body = CreatedVersion),
              (status = 400, body = ErrorBody, description = "a field of the manifest breaks a rule or contradicts a shard it names; `field` says which"),
              (status = 409, body = ErrorBody, description = "a named shard was never uploaded"),
              (status = 422, body = ErrorBody, description = "a named shard does not read as a shard")),
    security(("bearer" = [])))]
pub async fn create_version(
    Scoped(s): Scoped,
    axum::Extension(who): axum::Extension<trainyard_core::Principal>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<CreateVersion>,
) -> Result<Response, ApiError> {
    let caller = Caller {
        name: &who.name,
        is_job: who.job.is_some(),
    };
    let created = s.datasets.commit(&caller, &name, body.manifest).await?;
    let status = if created.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(created)).into_response())
}

#[utoipa::path(put, path = "/api/v1/datasets/shards/{sha256}", tag = "datasets",
    params(("sha256" = String, Path, description = "SHA-256 of the body, lower-case hex")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn put_shard(
    Scoped(s): Scoped,
    Path(sha): Path<String>,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    s.storage
        .check(&s)
        .await
        .map_err(|r| r.into_api(s.tracking.workspace()))?;
    s.datasets.put_shard(&sha, body.into_data_stream()).await?;
    Ok(StatusCode::CREATED)
}

/// Whether a shard is stored, without reading it (clients ask before uploading).
pub async fn has_shard(Scoped(s): Scoped, Path(sha): Path<String>) -> Result<StatusCode, ApiError> {
    if s.datasets.has_shard(&sha).await? {
        Ok(StatusCode::OK)
    } else {
        Err(trainyard_datasets::DatasetError::NotFound(format!("no shard {sha}")).into())
    }
}

#[utoipa::path(get, path = "/api/v1/datasets/shards/{sha256}", tag = "datasets",
    params(("sha256" = String, Path, description = "SHA-256 of the shard")),
    responses((status = 200, content_type = "application/octet-stream"), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_shard(Scoped(s): Scoped, Path(sha): Path<String>) -> Result<Response, ApiError> {
    let bytes = s.datasets.get_shard(&sha).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}
