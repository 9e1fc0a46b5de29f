//! REST v1 datasets: the catalog of versions and the content-addressed shards they are
//! made of. Clients (the CLI's `dataset import`, a training job) build shards themselves,
//! upload each under its SHA-256, then commit a manifest naming them; the server checks
//! the checksums and that every shard is there before the version exists.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use trainyard_data::Manifest;
use trainyard_store::{DatasetSummary, DatasetVersion};
use utoipa::ToSchema;

use crate::extract::ApiJson;
use crate::{ApiError, AppState, ErrorBody};

/// Largest shard upload.
pub const MAX_SHARD_BYTES: usize = 512 << 20;

#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetVersionView {
    pub name: String,
    /// SHA-256 of the manifest: the same content always gets the same version.
    pub version: String,
    pub created_ms: i64,
    pub rows: i64,
    pub bytes: i64,
    pub parent: Option<String>,
    /// Schema, shards, per-column statistics and lineage.
    #[schema(value_type = Object)]
    pub manifest: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetView {
    pub name: String,
    pub versions: i64,
    pub latest: DatasetVersionView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetList {
    pub datasets: Vec<DatasetView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetVersionList {
    pub name: String,
    pub versions: Vec<DatasetVersionView>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateVersion {
    #[schema(value_type = Object)]
    pub manifest: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedVersion {
    pub name: String,
    pub version: String,
    /// False when this exact content was already a version.
    pub created: bool,
}

fn view(v: DatasetVersion) -> Result<DatasetVersionView, ApiError> {
    let manifest = serde_json::from_str(&v.manifest).map_err(|e| {
        ApiError::from(trainyard_store::StoreError::Corrupt {
            what: format!("dataset {}:{}", v.name, v.version),
            message: e.to_string(),
        })
    })?;
    Ok(DatasetVersionView {
        name: v.name,
        version: v.version,
        created_ms: v.created_ms,
        rows: v.rows,
        bytes: v.bytes,
        parent: v.parent,
        manifest,
    })
}

fn summary(s: DatasetSummary) -> Result<DatasetView, ApiError> {
    Ok(DatasetView {
        name: s.name,
        versions: s.versions,
        latest: view(s.latest)?,
    })
}

/// Dataset names: letters, digits, `-`, `_`, `.`; up to 128 characters.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            "name",
            "a dataset name is 1-128 letters, digits, '-', '_' or '.', not starting with '.'",
        ))
    }
}

fn check_sha(sha: &str) -> Result<(), ApiError> {
    if sha.len() == 64
        && sha
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            "sha256",
            "a shard is named by the 64 lower-case hex digits of its SHA-256",
        ))
    }
}

/// What a committed manifest must hold together: a known format, a valid schema, statistics
/// only for its columns, and shard row counts that add up.
fn check_manifest(manifest: &Manifest) -> Result<(), ApiError> {
    if manifest.format != trainyard_data::manifest::FORMAT {
        return Err(ApiError::invalid_field(
            "manifest.format",
            format!(
                "this server reads format {}",
                trainyard_data::manifest::FORMAT
            ),
        ));
    }
    trainyard_data::schema::validate_schema(&manifest.schema)
        .map_err(|e| ApiError::invalid_field("manifest.schema", e.to_string()))?;
    let shard_rows: u64 = manifest.shards.iter().map(|s| s.rows).sum();
    if shard_rows != manifest.rows {
        return Err(ApiError::invalid_field(
            "manifest.rows",
            format!(
                "the shards hold {shard_rows} rows, the manifest says {}",
                manifest.rows
            ),
        ));
    }
    if let Some(name) = manifest.stats.keys().find(|k| manifest.field(k).is_none()) {
        return Err(ApiError::invalid_field(
            format!("manifest.stats.{name}"),
            "statistics for a column the schema does not have",
        ));
    }
    Ok(())
}

fn not_found(what: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
}

#[utoipa::path(get, path = "/api/v1/datasets", tag = "datasets",
    responses((status = 200, body = DatasetList)), security(("bearer" = [])))]
pub async fn list(State(s): State<AppState>) -> Result<Json<DatasetList>, ApiError> {
    let datasets = s.tracking.db().datasets().await?;
    Ok(Json(DatasetList {
        datasets: datasets
            .into_iter()
            .map(summary)
            .collect::<Result<_, _>>()?,
    }))
}

#[utoipa::path(get, path = "/api/v1/datasets/{name}", tag = "datasets",
    params(("name" = String, Path, description = "dataset name")),
    responses((status = 200, body = DatasetVersionList), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn versions(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<DatasetVersionList>, ApiError> {
    let versions = s.tracking.db().dataset_versions(&name).await?;
    if versions.is_empty() {
        return Err(not_found(format!("no dataset `{name}`")));
    }
    Ok(Json(DatasetVersionList {
        name,
        versions: versions.into_iter().map(view).collect::<Result<_, _>>()?,
    }))
}

#[utoipa::path(get, path = "/api/v1/datasets/{name}/versions/{version}", tag = "datasets",
    params(("name" = String, Path, description = "dataset name"),
           ("version" = String, Path, description = "`latest`, a version id or a unique prefix of 6+ characters")),
    responses((status = 200, body = DatasetVersionView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn version(
    State(s): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<DatasetVersionView>, ApiError> {
    let found = s.tracking.db().dataset_version(&name, &version).await?;
    let found =
        found.ok_or_else(|| not_found(format!("no version `{version}` of dataset `{name}`")))?;
    Ok(Json(view(found)?))
}

#[utoipa::path(post, path = "/api/v1/datasets/{name}/versions", tag = "datasets",
    params(("name" = String, Path, description = "dataset name")),
    request_body = CreateVersion,
    responses((status = 201, body = CreatedVersion), (status = 200, body = CreatedVersion),
              (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_version(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<trainyard_store::Principal>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<CreateVersion>,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    // A job's token adds versions only to datasets it created: otherwise a job could make
    // its own data the `latest` version that other people's training reads.
    if who.role == "job" {
        let existing = s.tracking.db().dataset_versions(&name).await?;
        if existing
            .iter()
            .any(|v| v.created_by.as_deref() != Some(who.name.as_str()))
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "a job's token adds versions only to datasets it created; `{name}` was made \
                     by someone else (write the job's output under a new name)"
                ),
            )
            .with_field("name"));
        }
    }
    let manifest: Manifest = serde_json::from_value(body.manifest)
        .map_err(|e| ApiError::invalid_field("manifest", format!("not a dataset manifest: {e}")))?;
    check_manifest(&manifest)?;
    for (i, shard) in manifest.shards.iter().enumerate() {
        check_sha(&shard.sha256).map_err(|_| {
            ApiError::invalid_field(
                format!("manifest.shards[{i}].sha256"),
                "not a SHA-256 hex digest",
            )
        })?;
        if !s.scheduler.store().blobs.has_shard(&shard.sha256).await? {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "shard_missing",
                format!(
                    "manifest.shards[{i}]: shard {} was never uploaded (PUT /api/v1/datasets/shards/{})",
                    shard.sha256, shard.sha256
                ),
            )
            .with_field(format!("manifest.shards[{i}].sha256")));
        }
    }
    let version = manifest.version_id();
    let row = DatasetVersion {
        name: name.clone(),
        version: version.clone(),
        created_ms: trainyard_core::time::now_ms(),
        rows: manifest.rows as i64,
        bytes: manifest.shards.iter().map(|s| s.bytes as i64).sum(),
        parent: manifest.lineage.parent.clone(),
        manifest: serde_json::to_string(&manifest).expect("a manifest serialises"),
        created_by: Some(who.name.clone()),
    };
    let created = s.tracking.db().insert_dataset_version(&row).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(CreatedVersion {
            name,
            version,
            created,
        }),
    )
        .into_response())
}

#[utoipa::path(put, path = "/api/v1/datasets/shards/{sha256}", tag = "datasets",
    params(("sha256" = String, Path, description = "SHA-256 of the body, lower-case hex")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn put_shard(
    State(s): State<AppState>,
    Path(sha): Path<String>,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    check_sha(&sha)?;
    // Each upload holds only the store's write buffer, and at most this many run at once.
    let busy = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "uploads_busy",
            "as many shard uploads as the server takes at once are running; retry shortly",
        )
    };
    let _slot = tokio::time::timeout(std::time::Duration::from_secs(30), UPLOAD_SLOTS.acquire())
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
    let blobs = &s.scheduler.store().blobs;
    let staged = blobs
        .stage_shard(
            body.into_data_stream(),
            trainyard_data::shard::layout_prefix_len,
            MAX_SHARD_BYTES as u64,
        )
        .await?
        .map_err(|why| {
            if why.starts_with("the body is larger") {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", why)
                    .with_field("body")
            } else {
                ApiError::invalid_field("body", why)
            }
        })?;
    if staged.sha256 != sha {
        let actual = staged.sha256.clone();
        blobs.discard_shard(staged).await?;
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "checksum_mismatch",
            format!("the body's SHA-256 is {actual}, the URL says {sha}"),
        )
        .with_field("sha256"));
    }
    if let Err(e) = trainyard_data::shard::check_layout(&staged.start, staged.size) {
        blobs.discard_shard(staged).await?;
        return Err(ApiError::invalid_field(
            "body",
            format!("not a dataset shard: {e}"),
        ));
    }
    blobs.commit_shard(staged).await?;
    Ok(StatusCode::CREATED)
}

/// Shard uploads streaming at once; more wait their turn.
static UPLOAD_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// Whether a shard is stored, without reading it (clients ask before uploading).
pub async fn has_shard(
    State(s): State<AppState>,
    Path(sha): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_sha(&sha)?;
    if s.scheduler.store().blobs.has_shard(&sha).await? {
        Ok(StatusCode::OK)
    } else {
        Err(not_found(format!("no shard {sha}")))
    }
}

#[utoipa::path(get, path = "/api/v1/datasets/shards/{sha256}", tag = "datasets",
    params(("sha256" = String, Path, description = "SHA-256 of the shard")),
    responses((status = 200, content_type = "application/octet-stream"), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_shard(
    State(s): State<AppState>,
    Path(sha): Path<String>,
) -> Result<Response, ApiError> {
    check_sha(&sha)?;
    let bytes = s
        .scheduler
        .store()
        .blobs
        .get_shard(&sha)
        .await?
        .ok_or_else(|| not_found(format!("no shard {sha}")))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}
