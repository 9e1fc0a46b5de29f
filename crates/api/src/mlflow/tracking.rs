//! Experiments, runs, params, tags, metrics and run artifact listings.

use axum::{Extension, Json};
use serde_json::{json, Value};
use trainyard_core::Principal;
use trainyard_tracking::{
    BatchInput, Dataset, DatasetInput, KeyValue, Lifecycle, MetricPoint, ModelOutput,
    NewExperiment, NewRun, RunStatus, SearchRequest, ViewType,
};

use super::params::missing;
use super::{By, MlflowError, Params, Reply};
use crate::Scoped;

fn view_type(p: &Params, name: &str) -> Result<ViewType, MlflowError> {
    match p.str(name)? {
        None => match p.i64(name)? {
            None => Ok(ViewType::default()),
            Some(n) => ViewType::parse(&n.to_string()).ok_or_else(|| {
                MlflowError::invalid(format!("Invalid value {n} for parameter '{name}'"))
            }),
        },
        Some(s) => ViewType::parse(&s).ok_or_else(|| {
            MlflowError::invalid(format!("Invalid value \"{s}\" for parameter '{name}'"))
        }),
    }
}

fn ok() -> Reply {
    Ok(Json(json!({})))
}

pub async fn create_experiment(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    let name = p.req_str("name")?;
    let artifact_location = p.str("artifact_location")?;
    w.check_experiment_create(artifact_location.as_deref())?;
    let id = s
        .tracking
        .create_experiment(NewExperiment {
            name,
            artifact_location,
            tags: p.key_values("tags")?,
        })
        .await?;
    Ok(Json(json!({ "experiment_id": id })))
}

pub async fn get_experiment(Scoped(s): Scoped, p: Params) -> Reply {
    let e = s
        .tracking
        .get_experiment(&p.req_str("experiment_id")?)
        .await?;
    Ok(Json(json!({ "experiment": e })))
}

pub async fn get_experiment_by_name(Scoped(s): Scoped, p: Params) -> Reply {
    let e = s
        .tracking
        .get_experiment_by_name(&p.req_str("experiment_name")?)
        .await?;
    Ok(Json(json!({ "experiment": e })))
}

pub async fn search_experiments(Scoped(s): Scoped, p: Params) -> Reply {
    let page = s
        .tracking
        .search_experiments(
            view_type(&p, "view_type")?,
            &p.str("filter")?.unwrap_or_default(),
            &p.strs("order_by")?,
            {
                let n = p.max_results(
                    None,
                    Some("Invalid value {n} for parameter 'max_results' supplied. It must be a positive integer"),
                    1000,
                )?;
                if n > 50_000 {
                    return Err(MlflowError::invalid(format!(
                        "Invalid value {n} for parameter 'max_results' supplied. It must be at most 50000"
                    )));
                }
                n
            },
            p.str("page_token")?.as_deref(),
        )
        .await?;
    let mut out = json!({});
    if !page.items.is_empty() {
        out["experiments"] = json!(page.items);
    }
    if let Some(t) = page.next_page_token {
        out["next_page_token"] = json!(t);
    }
    Ok(Json(out))
}

pub async fn update_experiment(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    w.check_not_job("update experiment")?;
    let id = p.req_str("experiment_id")?;
    if let Some(name) = p.str("new_name")? {
        s.tracking.rename_experiment(&id, &name).await?;
    } else {
        s.tracking.get_experiment(&id).await?;
    }
    ok()
}

pub async fn delete_experiment(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    w.check_not_job("delete experiment")?;
    let id = p.req_str("experiment_id")?;
    s.tracking
        .set_experiment_lifecycle(&id, Lifecycle::Deleted)
        .await?;
    ok()
}

pub async fn restore_experiment(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    w.check_not_job("restore experiment")?;
    let id = p.req_str("experiment_id")?;
    s.tracking
        .set_experiment_lifecycle(&id, Lifecycle::Active)
        .await?;
    ok()
}

pub async fn set_experiment_tag(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    w.check_not_job("set experiment tag")?;
    let id = p.req_str("experiment_id")?;
    let tag = KeyValue::new(p.req_str("key")?, p.req_str_or_empty("value")?);
    s.tracking.set_experiment_tag(&id, tag).await?;
    ok()
}

pub async fn delete_experiment_tag(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    w.check_not_job("delete experiment tag")?;
    let id = p.req_str("experiment_id")?;
    s.tracking
        .delete_experiment_tag(&id, &p.req_str("key")?)
        .await?;
    ok()
}

/// The datasets the runs of up to 20 experiments logged as inputs, once per (experiment,
/// name, digest, context); unknown experiments have none.
pub async fn search_datasets(Scoped(s): Scoped, p: Params) -> Reply {
    let ids = p.strs("experiment_ids").unwrap_or_default();
    if ids.is_empty() {
        return Err(MlflowError::invalid(
            "SearchDatasets request must specify at least one experiment_id.",
        ));
    }
    if ids.len() > 20 {
        return Err(MlflowError::invalid(format!(
            "SearchDatasets request cannot specify more than 20 experiment_ids. Received {} \
             experiment_ids.",
            ids.len()
        )));
    }
    let mut known = Vec::new();
    for id in ids {
        if id.parse::<i64>().is_err() {
            return Err(MlflowError::invalid(format!(
                "Invalid experiment ID '{id}'. Experiment ID must be a valid integer."
            )));
        }
        match s.tracking.get_experiment(&id).await {
            Ok(_) => known.push(id),
            Err(trainyard_tracking::TrackingError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if known.is_empty() {
        return Ok(Json(json!({})));
    }
    let mut summaries = Vec::new();
    let page = s
        .tracking
        .search_runs(SearchRequest {
            experiment_ids: known,
            filter: String::new(),
            view: ViewType::ActiveOnly,
            max_results: 50_000,
            order_by: Vec::new(),
            page_token: None,
        })
        .await?;
    for run in page.items {
        for input in run.inputs.dataset_inputs {
            let context = input
                .tags
                .iter()
                .find(|t| t.key == "mlflow.data.context")
                .map(|t| t.value.clone());
            let mut entry = json!({
                "experiment_id": run.info.experiment_id,
                "name": input.dataset.name,
                "digest": input.dataset.digest,
            });
            if let Some(context) = context {
                entry["context"] = json!(context);
            }
            if !summaries.contains(&entry) {
                summaries.push(entry);
            }
        }
    }
    if summaries.is_empty() {
        return Ok(Json(json!({})));
    }
    Ok(Json(json!({ "dataset_summaries": summaries })))
}

pub async fn create_run(
    Scoped(s): Scoped,
    Extension(who): Extension<Principal>,
    By(w): By,
    p: Params,
) -> Reply {
    let mut tags = p.key_values("tags")?;
    w.stamp(&mut tags);
    let run = s
        .tracking
        .create_run(NewRun {
            experiment_id: p.str("experiment_id")?.unwrap_or_else(|| "0".into()),
            user_id: p.str("user_id")?.unwrap_or(who.name),
            run_name: p.str("run_name")?,
            start_time: p.i64("start_time")?,
            tags,
            job_id: None,
            status: RunStatus::Running,
        })
        .await?;
    Ok(Json(json!({ "run": run })))
}

pub async fn get_run(Scoped(s): Scoped, p: Params) -> Reply {
    let run = s.tracking.get_run(&p.run_id()?).await?;
    Ok(Json(json!({ "run": run })))
}

fn run_status(p: &Params) -> Result<Option<RunStatus>, MlflowError> {
    let raw = match p.str("status") {
        Ok(s) => s,
        Err(_) => p.i64("status")?.map(|n| n.to_string()),
    };
    raw.map(|s| {
        RunStatus::parse(&s).ok_or_else(|| {
            MlflowError::invalid(format!(
                "Invalid value \"{s}\" for parameter 'status' supplied"
            ))
        })
    })
    .transpose()
}

pub async fn update_run(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    let run_id = p.run_id()?;
    s.tracking.check_run_write(&w, &run_id).await?;
    let info = s
        .tracking
        .update_run(
            &run_id,
            run_status(&p)?,
            p.i64("end_time")?,
            p.str("run_name")?,
        )
        .await?;
    Ok(Json(json!({ "run_info": info })))
}

pub async fn delete_run(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    w.check_not_job("delete run")?;
    s.tracking
        .set_run_lifecycle(&p.run_id()?, Lifecycle::Deleted)
        .await?;
    ok()
}

pub async fn restore_run(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    w.check_not_job("restore run")?;
    s.tracking
        .set_run_lifecycle(&p.run_id()?, Lifecycle::Active)
        .await?;
    ok()
}

pub async fn log_param(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    let param = KeyValue::new(p.req_str("key")?, p.str("value")?.unwrap_or_default());
    let run_id = p.run_id()?;
    s.tracking.check_run_write(&w, &run_id).await?;
    s.tracking.log_param(&run_id, param).await?;
    ok()
}

pub async fn set_tag(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    let tag = KeyValue::new(p.req_str("key")?, p.str("value")?.unwrap_or_default());
    let run_id = p.run_id()?;
    s.tracking.check_run_write(&w, &run_id).await?;
    s.tracking.set_run_tag(&run_id, tag).await?;
    ok()
}

pub async fn delete_tag(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    let run_id = p.run_id()?;
    s.tracking.check_run_write(&w, &run_id).await?;
    s.tracking
        .delete_run_tag(&run_id, &p.req_str("key")?)
        .await?;
    ok()
}

/// One metric from a request object; `at` prefixes field names in errors (`metrics[3].`).
fn metric_point(m: &Params, at: &str) -> Result<MetricPoint, MlflowError> {
    let named = |e: MlflowError, field: &str| MlflowError {
        message: e
            .message
            .replace(&format!("'{field}'"), &format!("'{at}{field}'")),
        ..e
    };
    let key = m.req_str("key").map_err(|e| named(e, "key"))?;
    let value = m
        .f64("value")
        .map_err(|e| named(e, "value"))?
        .ok_or_else(|| named(missing("value"), "value"))?;
    let timestamp = m
        .i64("timestamp")
        .map_err(|e| named(e, "timestamp"))?
        .ok_or_else(|| named(missing("timestamp"), "timestamp"))?;
    let step = m.i64("step").map_err(|e| named(e, "step"))?.unwrap_or(0);
    let (dataset_name, dataset_digest) = (m.str("dataset_name")?, m.str("dataset_digest")?);
    if dataset_name.is_some() != dataset_digest.is_some() {
        return Err(MlflowError::invalid(
            "Both dataset_name and dataset_digest must be provided if one is provided",
        ));
    }
    Ok(MetricPoint {
        key,
        value,
        timestamp,
        step,
        model_id: m.str("model_id")?.filter(|s| !s.is_empty()),
        dataset_name,
        dataset_digest,
    })
}

pub async fn log_metric(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    // MLflow's schema order: run_id, then the metric's fields.
    let run_id = p.run_id()?;
    let point = metric_point(&p, "")?;
    s.tracking.check_run_write(&w, &run_id).await?;
    s.tracking
        .check_metric_models(&w, std::slice::from_ref(&point))
        .await?;
    s.tracking.log_metric(&run_id, point).await?;
    ok()
}

pub async fn log_batch(Scoped(s): Scoped, By(w): By, mut p: Params) -> Reply {
    let run_id = p.run_id()?;
    s.tracking.check_run_write(&w, &run_id).await?;
    let metrics = p
        .take_objects("metrics")?
        .iter()
        .enumerate()
        .map(|(i, m)| metric_point(m, &format!("metrics[{i}].")))
        .collect::<Result<Vec<_>, _>>()?;
    s.tracking.check_metric_models(&w, &metrics).await?;
    let batch = BatchInput {
        metrics,
        params: p.key_values("params")?,
        tags: p.key_values("tags")?,
    };
    s.tracking.log_batch(&run_id, batch).await?;
    ok()
}

pub async fn log_inputs(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    let run_id = p.run_id()?;
    s.tracking.check_run_write(&w, &run_id).await?;
    let mut datasets = Vec::new();
    for input in p.objects("datasets")? {
        let d = input.object("dataset")?.ok_or_else(|| missing("dataset"))?;
        datasets.push(DatasetInput {
            tags: input.key_values("tags")?,
            dataset: Dataset {
                name: d.req_str("name")?,
                digest: d.req_str("digest")?,
                source_type: d.req_str("source_type")?,
                source: d.req_str("source")?,
                schema: d.str("schema")?,
                profile: d.str("profile")?,
            },
        });
    }
    let models = p
        .objects("models")?
        .iter()
        .map(|m| m.req_str("model_id"))
        .collect::<Result<Vec<_>, _>>()?;
    s.tracking.log_inputs(&run_id, datasets, models).await?;
    ok()
}

pub async fn log_outputs(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    let run_id = p.run_id()?;
    s.tracking.check_run_write(&w, &run_id).await?;
    let models = p
        .objects("models")?
        .iter()
        .map(|m| {
            Ok(ModelOutput {
                model_id: m.req_str("model_id")?,
                step: m.i64("step")?.unwrap_or(0),
            })
        })
        .collect::<Result<Vec<_>, MlflowError>>()?;
    s.tracking.log_outputs(&run_id, models).await?;
    ok()
}

pub async fn log_model(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    let run_id = p.run_id()?;
    s.tracking.check_run_write(&w, &run_id).await?;
    s.tracking
        .append_model_history(&run_id, &p.req_str("model_json")?)
        .await?;
    ok()
}

pub async fn search_runs(
    Scoped(s): Scoped,
    p: Params,
) -> Result<axum::response::Response, MlflowError> {
    use axum::response::IntoResponse;
    let page = s
        .tracking
        .search_runs(SearchRequest {
            experiment_ids: p.strs("experiment_ids")?,
            filter: p.str("filter")?.unwrap_or_default(),
            view: view_type(&p, "run_view_type")?,
            max_results: p.max_results(
                Some(50_000),
                Some("Invalid value {n} for parameter 'max_results' supplied. It must be a positive integer"),
                1000,
            )?,
            order_by: p.strs("order_by")?,
            page_token: p.str("page_token")?,
        })
        .await?;
    Ok(Json(RunsPage {
        runs: page.items,
        next_page_token: page.next_page_token,
    })
    .into_response())
}

/// `{metrics, next_page_token}` serialised straight from the entities (no JSON tree).
#[derive(serde::Serialize)]
struct HistoryPage {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    metrics: Vec<trainyard_tracking::Metric>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

#[derive(serde::Serialize)]
struct RunsPage {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    runs: Vec<trainyard_tracking::Run>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

pub async fn metric_history(
    Scoped(s): Scoped,
    p: Params,
) -> Result<axum::response::Response, MlflowError> {
    use axum::response::IntoResponse;
    let page = s
        .tracking
        .metric_history(
            &p.run_id()?,
            &p.req_str("metric_key")?,
            match p.i64("max_results")? {
                Some(n) if n < 1 => {
                    return Err(MlflowError::invalid(format!(
                        "Invalid value {n} for parameter 'max_results' supplied. It must be a positive integer."
                    )))
                }
                other => other,
            },
            p.str("page_token")?.as_deref(),
        )
        .await?;
    Ok(Json(HistoryPage {
        metrics: page.items,
        next_page_token: page.next_page_token,
    })
    .into_response())
}

/// Points per run `get-history-bulk-interval` answers at most (MLflow's `MAX_RESULTS_PER_RUN`).
const MAX_POINTS_PER_RUN: i64 = 2500;

/// Sampled histories of one metric for up to 100 runs, optionally within a step range.
pub async fn metric_history_bulk_interval(Scoped(s): Scoped, p: Params) -> Reply {
    let run_ids = p.strs("run_ids")?;
    if run_ids.is_empty() {
        return Err(missing("run_ids"));
    }
    if run_ids.len() > 100 {
        return Err(MlflowError::invalid(format!(
            "GetMetricHistoryBulkInterval request must specify at most 100 run_ids. Received {} run_ids. See the API docs for more information about request parameters.",
            run_ids.len()
        )));
    }
    let key = p.req_str("metric_key")?;
    let (start, end) = (p.i64("start_step")?, p.i64("end_step")?);
    let max_results = p.i64("max_results")?.unwrap_or(MAX_POINTS_PER_RUN);
    if !(1..=MAX_POINTS_PER_RUN).contains(&max_results) {
        return Err(MlflowError::invalid(format!(
            "max_results must be between 1 and {MAX_POINTS_PER_RUN}. See the API docs for more \
             information about request parameters."
        )));
    }
    match (start, end) {
        (Some(a), Some(b)) if a > b => {
            return Err(MlflowError::invalid(format!(
                "end_step must be greater than start_step. Found start_step={a} and end_step={b}."
            )))
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(MlflowError::invalid(
                "If either start step or end step are specified, both must be specified.",
            ))
        }
        _ => {}
    }
    let window = start.zip(end);
    let mut metrics: Vec<Value> = Vec::new();
    // Runs in the order asked (a repeated id repeats); unknown runs add nothing.
    for run_id in run_ids {
        let points = s
            .tracking
            .interval_sample(&run_id, &key, max_results as usize, window)
            .await?;
        for mut m in points {
            m.run_id = Some(run_id.clone());
            metrics.push(json!(m));
        }
    }
    if metrics.is_empty() {
        return Ok(Json(json!({})));
    }
    Ok(Json(json!({ "metrics": metrics })))
}

/// `GET /ajax-api/…/metrics/get-history-bulk`: the whole history of one metric for up to
/// 100 runs, ordered by run id, then timestamp, step and value; `max_results` (at most
/// 25,000) caps the total, not each run.
pub async fn metric_history_bulk(Scoped(s): Scoped, p: Params) -> Reply {
    let run_ids = p.strs("run_id")?;
    if run_ids.is_empty() {
        return Err(MlflowError::invalid(
            "GetMetricHistoryBulk request must specify at least one run_id.",
        ));
    }
    if run_ids.len() > 100 {
        return Err(MlflowError::invalid(format!(
            "GetMetricHistoryBulk request cannot specify more than 100 run_ids. Received {} run_ids.",
            run_ids.len()
        )));
    }
    let Some(key) = p.str("metric_key")?.filter(|k| !k.is_empty()) else {
        return Err(MlflowError::invalid(
            "GetMetricHistoryBulk request must specify a metric_key.",
        ));
    };
    let max_results = p.i64("max_results")?.unwrap_or(25_000).clamp(0, 25_000) as usize;
    let mut ids = run_ids;
    ids.sort();
    ids.dedup();
    let mut out: Vec<Value> = Vec::new();
    for run_id in ids {
        if out.len() >= max_results {
            break;
        }
        let left = (max_results - out.len()) as i64;
        let page = s
            .tracking
            .metric_history_by_time(&run_id, &key, left)
            .await?;
        for m in page {
            // Flask's jsonify: keys sorted.
            out.push(json!({
                "key": m.key,
                "run_id": run_id,
                "step": m.step,
                "timestamp": m.timestamp,
                "value": m.value,
            }));
        }
    }
    Ok(Json(json!({ "metrics": out })))
}

pub async fn list_run_artifacts(Scoped(s): Scoped, p: Params) -> Reply {
    let (root_uri, files) = s
        .tracking
        .list_run_artifacts(&p.run_id()?, &p.str("path")?.unwrap_or_default())
        .await?;
    let mut out = json!({ "root_uri": root_uri });
    if !files.is_empty() {
        out["files"] = json!(files);
    }
    Ok(Json(out))
}
