//! REST v1 views of tracking for people and the UI: experiments, runs, downsampled metric
//! histories and registered models, in Trainyard's own shapes (maps instead of MLflow's
//! key/value lists, numbers for ids) and error format.

use std::collections::BTreeMap;

use crate::extract::ApiPath as Path;
use axum::Json;
use serde::{Deserialize, Serialize};
use trainyard_tracking::{Lifecycle, ModelVersion, RegisteredModel, Run, SearchRequest, ViewType};
use utoipa::{IntoParams, ToSchema};

use crate::extract::{ApiJson, ApiQuery};
use crate::Scoped;
use crate::{ApiError, ErrorBody, ErrorCode};
use axum::http::StatusCode;

#[derive(Debug, Serialize, ToSchema)]
pub struct ExperimentView {
    pub experiment_id: String,
    pub name: String,
    pub artifact_location: String,
    pub deleted: bool,
    pub creation_time: i64,
    pub last_update_time: i64,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExperimentList {
    pub experiments: Vec<ExperimentView>,
}

/// A metric's latest point (greatest step). `value` is null for NaN.
#[derive(Debug, Serialize, ToSchema)]
pub struct LatestMetric {
    pub value: Option<f64>,
    pub step: i64,
    pub timestamp: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    pub run_id: String,
    pub experiment_id: String,
    pub name: String,
    /// RUNNING, SCHEDULED, FINISHED, FAILED or KILLED.
    pub status: String,
    pub user_id: String,
    pub start_time: i64,
    pub end_time: Option<i64>,
    pub deleted: bool,
    pub artifact_uri: String,
    /// The job this run records, when a job made it.
    pub job_id: Option<String>,
    pub params: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub metrics: BTreeMap<String, LatestMetric>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<RunView>,
    /// Pass as `page_token` for the next page; absent on the last page.
    pub next_page_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MetricPointView {
    pub step: i64,
    pub timestamp: i64,
    /// Null for NaN.
    pub value: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MetricSeriesView {
    pub key: String,
    /// Points the history really has.
    pub total_points: i64,
    /// True when `points` is a downsampled view (every bucket's minimum and maximum).
    pub sampled: bool,
    pub points: Vec<MetricPointView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelVersionView {
    pub version: i64,
    pub stage: String,
    pub source: String,
    pub run_id: String,
    pub description: String,
    pub aliases: Vec<String>,
    pub tags: BTreeMap<String, String>,
    pub creation_time: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelView {
    pub name: String,
    pub description: String,
    pub creation_time: i64,
    pub last_updated_time: i64,
    pub tags: BTreeMap<String, String>,
    pub aliases: BTreeMap<String, i64>,
    /// Newest first (all versions on `GET /api/v1/models/{name}`, the newest on listings).
    pub versions: Vec<ModelVersionView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub models: Vec<ModelView>,
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn run_view(run: Run) -> RunView {
    let i = run.info;
    RunView {
        run_id: i.run_id,
        experiment_id: i.experiment_id,
        name: i.run_name,
        status: i.status.as_str().to_string(),
        user_id: i.user_id,
        start_time: i.start_time,
        end_time: i.end_time,
        deleted: i.lifecycle_stage == Lifecycle::Deleted,
        artifact_uri: i.artifact_uri,
        job_id: i.job_id,
        params: run
            .data
            .params
            .into_iter()
            .map(|p| (p.key, p.value))
            .collect(),
        tags: run
            .data
            .tags
            .into_iter()
            .map(|t| (t.key, t.value))
            .collect(),
        metrics: run
            .data
            .metrics
            .into_iter()
            .map(|m| {
                (
                    m.key,
                    LatestMetric {
                        value: finite(m.value.0),
                        step: m.step,
                        timestamp: m.timestamp,
                    },
                )
            })
            .collect(),
    }
}

fn version_view(v: ModelVersion) -> ModelVersionView {
    ModelVersionView {
        version: v.version.parse().unwrap_or(0),
        stage: v.current_stage,
        source: v.source,
        run_id: v.run_id,
        description: v.description,
        aliases: v.aliases,
        tags: v.tags.into_iter().map(|t| (t.key, t.value)).collect(),
        creation_time: v.creation_timestamp,
    }
}

fn model_view(m: RegisteredModel, mut versions: Vec<ModelVersion>) -> ModelView {
    versions.sort_by_key(|v| std::cmp::Reverse(v.version.parse::<i64>().unwrap_or(0)));
    ModelView {
        name: m.name,
        description: m.description,
        creation_time: m.creation_timestamp,
        last_updated_time: m.last_updated_timestamp,
        tags: m.tags.into_iter().map(|t| (t.key, t.value)).collect(),
        aliases: m
            .aliases
            .into_iter()
            .map(|a| (a.alias, a.version.parse().unwrap_or(0)))
            .collect(),
        versions: versions.into_iter().map(version_view).collect(),
    }
}

/// Experiments, newest first.
#[utoipa::path(get, path = "/api/v1/experiments", tag = "tracking",
    responses((status = 200, body = ExperimentList)), security(("bearer" = [])))]
pub async fn list_experiments(Scoped(s): Scoped) -> Result<Json<ExperimentList>, ApiError> {
    let page = s
        .tracking
        .search_experiments(ViewType::ActiveOnly, "", &[], 50_000, None)
        .await?;
    Ok(Json(ExperimentList {
        experiments: page
            .items
            .into_iter()
            .map(|e| ExperimentView {
                experiment_id: e.experiment_id,
                name: e.name,
                artifact_location: e.artifact_location,
                deleted: e.lifecycle_stage == Lifecycle::Deleted,
                creation_time: e.creation_time,
                last_update_time: e.last_update_time,
                tags: e.tags.into_iter().map(|t| (t.key, t.value)).collect(),
            })
            .collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Only runs of this experiment (its id); default: every active experiment.
    experiment_id: Option<String>,
    /// MLflow search syntax, e.g. `metrics.loss < 0.1 AND params.lr = '0.01'`.
    filter: Option<String>,
    /// e.g. `metrics.loss ASC`; default newest first.
    order_by: Option<String>,
    /// At most this many runs (1-1000, default 100).
    limit: Option<u32>,
    page_token: Option<String>,
}

/// Runs, searched and ordered like MLflow's `runs/search`.
#[utoipa::path(get, path = "/api/v1/runs", tag = "tracking", params(RunsQuery),
    responses((status = 200, body = RunList), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_runs(
    Scoped(s): Scoped,
    ApiQuery(q): ApiQuery<RunsQuery>,
) -> Result<Json<RunList>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            "must be between 1 and 1000",
        ));
    }
    let experiment_ids = match q.experiment_id {
        Some(id) => vec![id],
        None => s
            .tracking
            .search_experiments(ViewType::ActiveOnly, "", &[], 50_000, None)
            .await?
            .items
            .into_iter()
            .map(|e| e.experiment_id)
            .collect(),
    };
    let page = s
        .tracking
        .search_runs(SearchRequest {
            experiment_ids,
            filter: q.filter.unwrap_or_default(),
            view: ViewType::ActiveOnly,
            max_results: limit as i64,
            order_by: q.order_by.into_iter().collect(),
            page_token: q.page_token,
        })
        .await?;
    Ok(Json(RunList {
        runs: page.items.into_iter().map(run_view).collect(),
        next_page_token: page.next_page_token,
    }))
}

/// One run with its params, tags and latest metric values.
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "tracking",
    params(("id" = String, Path, description = "run id (a job's run id is the job id)")),
    responses((status = 200, body = RunView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_run(Scoped(s): Scoped, Path(id): Path<String>) -> Result<Json<RunView>, ApiError> {
    Ok(Json(run_view(s.tracking.get_run(&id).await?)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricQuery {
    /// At most about this many points (2-100000, default 1000): longer histories are
    /// downsampled keeping each bucket's minimum and maximum.
    max_points: Option<u32>,
}

/// A metric's history for charts: the whole history when short, else a downsampled view
/// that keeps every bucket's extremes, at a cost independent of the history's length.
#[utoipa::path(get, path = "/api/v1/runs/{id}/metrics/{key}", tag = "tracking",
    params(("id" = String, Path, description = "run id"),
           ("key" = String, Path, description = "metric key"), MetricQuery),
    responses((status = 200, body = MetricSeriesView), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn metric(
    Scoped(s): Scoped,
    Path((id, key)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<MetricQuery>,
) -> Result<Json<MetricSeriesView>, ApiError> {
    let max_points = q.max_points.unwrap_or(1000);
    if !(2..=100_000).contains(&max_points) {
        return Err(ApiError::invalid_field(
            "max_points",
            "must be between 2 and 100000",
        ));
    }
    s.tracking.get_run(&id).await?;
    let m = s
        .tracking
        .sampled_metric(&id, &key, max_points as usize)
        .await?;
    Ok(Json(MetricSeriesView {
        key: m.key,
        total_points: m.total_points,
        sampled: m.sampled,
        points: points_view(m.points),
    }))
}

/// Most runs one [`metric_histories`] call reads.
const MAX_RUNS_PER_QUERY: usize = 1000;
/// Most points one [`metric_histories`] answer may hold (runs × `max_points`): what a page
/// can draw, and a bound on the memory one call takes.
const MAX_POINTS_PER_QUERY: u64 = 2_000_000;
/// Largest model file [`model_graph`] reads and analyses.
const MAX_GRAPH_BYTES: usize = 256 << 20;
/// Runs whose histories are read at once.
const HISTORY_READS: usize = 8;

/// One metric of many runs, for overlaid charts.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoriesRequest {
    /// 1-1000 run ids (each read once; the answer keeps their first order).
    pub run_ids: Vec<String>,
    /// The metric key.
    pub key: String,
    /// About this many points per run at most (2-100000, default 500): longer histories are
    /// downsampled keeping each bucket's minimum and maximum. Runs × points may not pass
    /// 2,000,000.
    pub max_points: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunSeriesView {
    pub run_id: String,
    /// Points the history really has (0 when the run has no such metric).
    pub total_points: i64,
    pub sampled: bool,
    pub points: Vec<MetricPointView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Histories {
    pub key: String,
    /// In the order of `run_ids`.
    pub series: Vec<RunSeriesView>,
}

/// One metric's history for up to 1,000 runs in one call, each downsampled on the server
/// like `GET /api/v1/runs/{id}/metrics/{key}`: what a chart overlaying many runs needs,
/// without a request per run. A POST because a thousand ids do not fit in a URL; it changes
/// nothing.
#[utoipa::path(post, path = "/api/v1/runs/metric-histories", tag = "tracking",
    request_body = HistoriesRequest,
    responses((status = 200, body = Histories), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn metric_histories(
    Scoped(s): Scoped,
    ApiJson(body): ApiJson<HistoriesRequest>,
) -> Result<Json<Histories>, ApiError> {
    use futures::{StreamExt, TryStreamExt};
    if body.run_ids.is_empty() || body.run_ids.len() > MAX_RUNS_PER_QUERY {
        return Err(ApiError::invalid_field("run_ids", "give 1 to 1000 run ids"));
    }
    if body.key.is_empty() {
        return Err(ApiError::invalid_field("key", "name a metric"));
    }
    let max_points = body.max_points.unwrap_or(500);
    if !(2..=100_000).contains(&max_points) {
        return Err(ApiError::invalid_field(
            "max_points",
            "must be between 2 and 100000",
        ));
    }
    // Each run once, in the order given.
    let mut seen = std::collections::HashSet::new();
    let run_ids: Vec<String> = body
        .run_ids
        .iter()
        .filter(|id| seen.insert(id.as_str()))
        .cloned()
        .collect();
    if run_ids.len() as u64 * u64::from(max_points) > MAX_POINTS_PER_QUERY {
        return Err(ApiError::invalid_field(
            "max_points",
            format!(
                "{} runs × {max_points} points is more than {MAX_POINTS_PER_QUERY} in one answer: ask fewer points per run",
                run_ids.len()
            ),
        ));
    }
    let series: Vec<RunSeriesView> = futures::stream::iter(run_ids)
        .map(|id| {
            let (tracking, key) = (s.tracking.clone(), body.key.clone());
            async move { one_history(&tracking, id, &key, max_points).await }
        })
        .buffered(HISTORY_READS)
        .try_collect()
        .await?;
    Ok(Json(Histories {
        key: body.key,
        series,
    }))
}

/// One run's series for [`metric_histories`].
async fn one_history(
    tracking: &trainyard_tracking::Tracking,
    id: String,
    key: &str,
    max_points: u32,
) -> Result<RunSeriesView, ApiError> {
    // The run must be this workspace's: an unknown id is a 404 naming it.
    tracking.get_run(&id).await?;
    let m = match tracking.sampled_metric(&id, key, max_points as usize).await {
        Ok(m) => m,
        // A run without this metric has an empty series, not an error for all.
        Err(trainyard_tracking::TrackingError::NotFound(_)) => {
            return Ok(RunSeriesView {
                run_id: id,
                total_points: 0,
                sampled: false,
                points: Vec::new(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    Ok(RunSeriesView {
        run_id: id,
        total_points: m.total_points,
        sampled: m.sampled,
        points: points_view(m.points),
    })
}

fn points_view(points: Vec<trainyard_tracking::Metric>) -> Vec<MetricPointView> {
    points
        .into_iter()
        .map(|p| MetricPointView {
            step: p.step,
            timestamp: p.timestamp,
            value: finite(p.value.0),
        })
        .collect()
}

/// A registered version's ONNX file as layers: each node's operator, inputs, outputs with
/// the shapes tract infers, and weight count; what the UI's model page draws. The file is
/// read like the model server reads it (the version's `model.onnx`, external data
/// inlined) and analysed off the async threads.
#[utoipa::path(get, path = "/api/v1/models/{name}/versions/{version}/graph", tag = "tracking",
    params(("name" = String, Path, description = "registered model"),
           ("version" = String, Path, description = "version number")),
    responses((status = 200, description = "`{inputs, outputs, layers: [{name, op, inputs, outputs: [{name, shape, dtype}], parameters}], parameters}`"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn model_graph(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    axum::Extension(who): axum::Extension<trainyard_core::Principal>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<trainyard_models::layers::LayerGraph>, ApiError> {
    use trainyard_serve::source::{model_key, ModelSource, RegistrySource};
    use trainyard_serve::ServeError;
    let number: u64 = version
        .parse()
        .map_err(|_| ApiError::invalid_field("version", "a version number"))?;
    // A registered name has no `/`: with one, the serving key would name a model of another
    // workspace (`team-b/secret`).
    if name.contains('/') {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no registered model `{name}`"),
        ));
    }
    // Reading and analysing a model file takes memory of its size: one at a time.
    static ANALYSES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    let _turn = ANALYSES.acquire().await.map_err(ApiError::internal)?;
    let source = RegistrySource::new(state.tracking.clone());
    let files = source
        .fetch(&model_key(&who.workspace, &name), number)
        .await
        .map_err(|e| match e {
            ServeError::NotFound(m) | ServeError::Unavailable(m) => {
                ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, m)
            }
            ServeError::Invalid(m) | ServeError::Unsupported(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidModel, m)
            }
            ServeError::Internal(m) => ApiError::internal(m),
        })?;
    if files.onnx.len() > MAX_GRAPH_BYTES {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidModel,
            format!(
                "{name}:{number}: its ONNX file is {} bytes; layers are shown for files up to {MAX_GRAPH_BYTES}",
                files.onnx.len()
            ),
        ));
    }
    let graph =
        tokio::task::spawn_blocking(move || trainyard_models::layers::layer_graph(&files.onnx))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::InvalidModel,
                    format!("{name}:{number}: {e}"),
                )
            })?;
    Ok(Json(graph))
}

/// Registered models with their newest version.
#[utoipa::path(get, path = "/api/v1/models", tag = "tracking",
    responses((status = 200, body = ModelList)), security(("bearer" = [])))]
pub async fn list_models(Scoped(s): Scoped) -> Result<Json<ModelList>, ApiError> {
    let mut models = Vec::new();
    let mut token = None;
    loop {
        let page = s
            .tracking
            .search_registered_models("", 1000, &[], token.as_deref())
            .await?;
        for m in page.items {
            let newest = m
                .latest_versions
                .iter()
                .max_by_key(|v| v.version.parse::<i64>().unwrap_or(0))
                .cloned();
            models.push(model_view(m, newest.into_iter().collect()));
        }
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    Ok(Json(ModelList { models }))
}

/// One registered model with all its versions.
#[utoipa::path(get, path = "/api/v1/models/{name}", tag = "tracking",
    params(("name" = String, Path, description = "registered model name")),
    responses((status = 200, body = ModelView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_model(
    Scoped(s): Scoped,
    Path(name): Path<String>,
) -> Result<Json<ModelView>, ApiError> {
    let model = s.tracking.get_registered_model(&name).await?;
    let versions = s
        .tracking
        .search_model_versions(
            &format!("name = '{}'", name.replace('\'', "''")),
            200_000,
            &[],
            None,
        )
        .await?
        .items;
    Ok(Json(model_view(model, versions)))
}
