//! Runs and what is logged into them: params, tags, metrics (through `metrics`), dataset and
//! model inputs, model outputs (spec §4).

use std::collections::{HashMap, HashSet};

use sqlx::any::AnyRow;
use trainyard_core::time::now_ms;

use crate::entities::*;
use crate::error::{invalid, not_found};
use crate::metrics::{self, MetricPoint};
use crate::rows::{get, placeholders, IN_CHUNK};
use crate::validate::{self, json_str};
use crate::{Tracking, TrackingError};

pub struct NewRun {
    pub experiment_id: String,
    pub user_id: String,
    pub run_name: Option<String>,
    pub start_time: Option<i64>,
    pub tags: Vec<KeyValue>,
    /// Set for a job's run: the job's id is the run's id.
    pub job_id: Option<String>,
    pub status: RunStatus,
}

/// One `log-batch` request.
#[derive(Default)]
pub struct BatchInput {
    pub metrics: Vec<MetricPoint>,
    pub params: Vec<KeyValue>,
    pub tags: Vec<KeyValue>,
}

pub(crate) const RUN_NAME_TAG: &str = "mlflow.runName";

/// What every write needs to know about the run it targets.
pub(crate) struct RunHead {
    pub experiment_id: i64,
}

impl Tracking {
    pub async fn create_run(&self, new: NewRun) -> Result<Run, TrackingError> {
        self.make_default(&new.experiment_id).await?;
        let experiment = self.get_experiment(&new.experiment_id).await?;
        if experiment.lifecycle_stage != Lifecycle::Active {
            return Err(invalid(format!(
                "The experiment {} must be in the 'active' state. Current state is deleted.",
                experiment.experiment_id
            )));
        }
        let tag_name = new
            .tags
            .iter()
            .find(|t| t.key == RUN_NAME_TAG)
            .map(|t| t.value.clone());
        let name = match (new.run_name.filter(|n| !n.is_empty()), tag_name) {
            (Some(a), Some(b)) if a != b => {
                return Err(invalid(format!(
                    "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with \
                     different values (run_name='{a}', mlflow.runName='{b}')."
                )))
            }
            (Some(a), _) => a,
            (None, Some(b)) if !b.is_empty() => b,
            _ => generate_run_name(),
        };
        let mut tags = Vec::with_capacity(new.tags.len() + 1);
        for (i, tag) in new.tags.into_iter().enumerate() {
            validate::key(&format!("tags[{i}].key"), &tag.key)?;
            if tag.key != RUN_NAME_TAG {
                tags.push(KeyValue::new(
                    tag.key,
                    validate::truncate(tag.value, validate::MAX_RUN_TAG_VALUE_LEN),
                ));
            }
        }
        tags.push(KeyValue::new(RUN_NAME_TAG, name.clone()));
        let run_id = new.job_id.clone().unwrap_or_else(trainyard_core::new_id);
        let artifact_uri = format!(
            "{}/{run_id}/artifacts",
            experiment.artifact_location.trim_end_matches('/')
        );
        let start_time = new.start_time.unwrap_or_else(now_ms);
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO runs (run_id, experiment_id, name, user_id, status, start_time, \
             end_time, lifecycle_stage, artifact_uri, deleted_time, job_id) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL, 'active', $7, NULL, $8)",
        )
        .bind(&run_id)
        .bind(validate::experiment_id(&experiment.experiment_id)?)
        .bind(&name)
        .bind(&new.user_id)
        .bind(new.status.as_str())
        .bind(start_time)
        .bind(&artifact_uri)
        .bind(new.job_id.clone())
        .execute(&mut *tx)
        .await?;
        for tag in &tags {
            upsert_run_tag(&mut tx, &run_id, tag).await?;
        }
        tx.commit().await?;
        self.get_run(&run_id).await
    }

    pub async fn get_run(&self, run_id: &str) -> Result<Run, TrackingError> {
        self.load_runs(&[run_id.to_string()])
            .await?
            .pop()
            .ok_or_else(|| not_found(format!("Run with id={run_id} not found")))
    }

    /// Full runs (info, latest metrics, params, tags, inputs, outputs) in the order asked.
    pub(crate) async fn load_runs(&self, ids: &[String]) -> Result<Vec<Run>, TrackingError> {
        let ids: Vec<&String> = ids.iter().filter(|id| validate::is_run_id(id)).collect();
        let mut infos: HashMap<String, RunInfo> = HashMap::new();
        let mut data: HashMap<String, RunData> = HashMap::new();
        let mut inputs: HashMap<String, RunInputs> = HashMap::new();
        let mut outputs: HashMap<String, RunOutputs> = HashMap::new();
        for chunk in ids.chunks(IN_CHUNK) {
            // Only runs of this workspace's experiments exist for it.
            let list = placeholders(1, chunk.len());
            let sql = format!(
                "SELECT r.* FROM runs r JOIN experiments e ON e.id = r.experiment_id \
                 WHERE r.run_id IN ({list}) AND (e.workspace_id = ${} OR ${} = 1)",
                chunk.len() + 1,
                chunk.len() + 2
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind((*id).clone());
            }
            let q = q.bind(self.workspace()).bind(self.every_workspace());
            for row in q.fetch_all(self.db.pool()).await? {
                let info = run_info(&row)?;
                infos.insert(info.run_id.clone(), info);
            }
            let chunk: Vec<&String> = chunk
                .iter()
                .copied()
                .filter(|id| infos.contains_key(id.as_str()))
                .collect();
            if chunk.is_empty() {
                continue;
            }
            let chunk = chunk.as_slice();
            let list = placeholders(1, chunk.len());
            for row in fetch_in(
                self,
                &format!(
                    "SELECT run_id, key, value, is_nan, timestamp, step FROM metric_series \
                 WHERE run_id IN ({list}) ORDER BY key"
                ),
                chunk,
            )
            .await?
            {
                let m = metrics::latest_from_row(&row)?;
                data.entry(get(&row, "run_id")?)
                    .or_default()
                    .metrics
                    .push(m);
            }
            for table in ["run_params", "run_tags"] {
                let sql = format!(
                    "SELECT run_id, key, value FROM {table} WHERE run_id IN ({list}) ORDER BY key"
                );
                for row in fetch_in(self, &sql, chunk).await? {
                    let kv =
                        KeyValue::new(get::<String>(&row, "key")?, get::<String>(&row, "value")?);
                    let run = data.entry(get(&row, "run_id")?).or_default();
                    if table == "run_params" {
                        run.params.push(kv);
                    } else {
                        run.tags.push(kv);
                    }
                }
            }
            for row in fetch_in(
                self,
                &format!(
                    "SELECT i.run_id, i.tags, d.name, d.digest, d.source_type, d.source, \
                 d.schema_json, d.profile FROM run_inputs i JOIN runs r ON r.run_id = i.run_id \
                 JOIN datasets d ON d.experiment_id = r.experiment_id AND d.name = i.dataset_name \
                 AND d.digest = i.dataset_digest WHERE i.run_id IN ({list}) ORDER BY d.name"
                ),
                chunk,
            )
            .await?
            {
                let tags: String = get(&row, "tags")?;
                let tags: Vec<(String, String)> = serde_json::from_str(&tags).unwrap_or_default();
                inputs
                    .entry(get(&row, "run_id")?)
                    .or_default()
                    .dataset_inputs
                    .push(DatasetInput {
                        tags: tags.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect(),
                        dataset: Dataset {
                            name: get(&row, "name")?,
                            digest: get(&row, "digest")?,
                            source_type: get(&row, "source_type")?,
                            source: get(&row, "source")?,
                            schema: get(&row, "schema_json")?,
                            profile: get(&row, "profile")?,
                        },
                    });
            }
            for row in fetch_in(
                self,
                &format!(
                    "SELECT run_id, model_id, direction, step FROM run_models \
                 WHERE run_id IN ({list}) ORDER BY model_id"
                ),
                chunk,
            )
            .await?
            {
                let run_id: String = get(&row, "run_id")?;
                let model_id: String = get(&row, "model_id")?;
                if get::<String>(&row, "direction")? == "output" {
                    outputs
                        .entry(run_id)
                        .or_default()
                        .model_outputs
                        .push(ModelOutput {
                            model_id,
                            step: get(&row, "step")?,
                        });
                } else {
                    inputs
                        .entry(run_id)
                        .or_default()
                        .model_inputs
                        .push(ModelInput { model_id });
                }
            }
        }
        Ok(ids
            .iter()
            .filter_map(|id| {
                let info = infos.remove(*id)?;
                Some(Run {
                    data: data.remove(*id).unwrap_or_default(),
                    inputs: inputs.remove(*id).unwrap_or_default(),
                    outputs: outputs.remove(*id),
                    info,
                })
            })
            .collect())
    }

    /// The run, refusing deleted ones (logging into them is not allowed).
    pub(crate) async fn active_run(&self, run_id: &str) -> Result<RunHead, TrackingError> {
        if !validate::is_run_id(run_id) {
            return Err(not_found(format!("Run with id={run_id} not found")));
        }
        let generation = {
            let cache = self.active_runs.lock();
            if let Some(known) = cache.1.get(run_id) {
                if self.every_workspace() == 0 && *known.workspace != *self.workspace() {
                    return Err(not_found(format!("Run with id={run_id} not found")));
                }
                return Ok(RunHead {
                    experiment_id: known.experiment_id,
                });
            }
            cache.0
        };
        let row = sqlx::query(
            "SELECT r.experiment_id, r.lifecycle_stage, e.workspace_id FROM runs r \
             JOIN experiments e ON e.id = r.experiment_id \
             WHERE r.run_id = $1 AND (e.workspace_id = $2 OR $3 = 1)",
        )
        .bind(run_id)
        .bind(self.workspace())
        .bind(self.every_workspace())
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| not_found(format!("Run with id={run_id} not found")))?;
        let stage: String = get(&row, "lifecycle_stage")?;
        if stage != "active" {
            return Err(invalid(format!(
                "The run {run_id} must be in the 'active' state. Current state is {stage}."
            )));
        }
        let experiment_id: i64 = get(&row, "experiment_id")?;
        let workspace: String = get(&row, "workspace_id")?;
        let mut cache = self.active_runs.lock();
        if cache.0 == generation {
            if cache.1.len() >= 100_000 {
                cache.1.clear();
            }
            cache.1.insert(
                run_id.to_string(),
                crate::ActiveRun {
                    experiment_id,
                    workspace: workspace.into(),
                },
            );
        }
        Ok(RunHead { experiment_id })
    }

    pub async fn update_run(
        &self,
        run_id: &str,
        status: Option<RunStatus>,
        end_time: Option<i64>,
        run_name: Option<String>,
    ) -> Result<RunInfo, TrackingError> {
        self.active_run(run_id).await?;
        let mut tx = self.db.begin_write().await?;
        if let Some(status) = status {
            sqlx::query("UPDATE runs SET status = $1 WHERE run_id = $2")
                .bind(status.as_str())
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(end) = end_time {
            sqlx::query("UPDATE runs SET end_time = $1 WHERE run_id = $2")
                .bind(end)
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(name) = run_name.filter(|n| !n.is_empty()) {
            upsert_run_tag(&mut tx, run_id, &KeyValue::new(RUN_NAME_TAG, name)).await?;
        }
        tx.commit().await?;
        Ok(self.get_run(run_id).await?.info)
    }

    pub async fn set_run_lifecycle(
        &self,
        run_id: &str,
        to: Lifecycle,
    ) -> Result<(), TrackingError> {
        self.get_run(run_id).await?;
        sqlx::query("UPDATE runs SET lifecycle_stage = $1, deleted_time = $2 WHERE run_id = $3")
            .bind(to.as_str())
            .bind((to == Lifecycle::Deleted).then(now_ms))
            .bind(run_id)
            .execute(self.db.pool())
            .await?;
        self.forget_active_runs();
        Ok(())
    }

    pub async fn log_param(&self, run_id: &str, param: KeyValue) -> Result<(), TrackingError> {
        let batch = BatchInput {
            params: vec![param],
            ..BatchInput::default()
        };
        self.log_one(run_id, batch, "params[0].").await
    }

    pub async fn set_run_tag(&self, run_id: &str, tag: KeyValue) -> Result<(), TrackingError> {
        let batch = BatchInput {
            tags: vec![tag],
            ..BatchInput::default()
        };
        self.log_one(run_id, batch, "tags[0].").await
    }

    pub async fn log_metric(&self, run_id: &str, point: MetricPoint) -> Result<(), TrackingError> {
        let batch = BatchInput {
            metrics: vec![point],
            ..BatchInput::default()
        };
        self.log_one(run_id, batch, "metrics[0].").await
    }

    /// A one-item batch, its errors naming the field as the single-item endpoints do
    /// (`key`, not `metrics[0].key`).
    async fn log_one(
        &self,
        run_id: &str,
        batch: BatchInput,
        prefix: &str,
    ) -> Result<(), TrackingError> {
        self.log_batch(run_id, batch).await.map_err(|e| match e {
            TrackingError::InvalidParameter(m) => {
                TrackingError::InvalidParameter(m.replace(prefix, ""))
            }
            other => other,
        })
    }

    pub async fn delete_run_tag(&self, run_id: &str, key: &str) -> Result<(), TrackingError> {
        self.active_run(run_id).await?;
        let done = sqlx::query("DELETE FROM run_tags WHERE run_id = $1 AND key = $2")
            .bind(run_id)
            .bind(key)
            .execute(self.db.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found(format!(
                "No tag with name: {key} in run with id {run_id}"
            )));
        }
        Ok(())
    }

    /// Params, tags and metrics in one transaction: all of it is stored, or none.
    pub async fn log_batch(&self, run_id: &str, batch: BatchInput) -> Result<(), TrackingError> {
        let (m, p, t) = (batch.metrics.len(), batch.params.len(), batch.tags.len());
        let limit = |what: &str, n: usize, max: usize| {
            if n > max {
                Err(invalid(format!(
                    "A batch logging request can contain at most {max} {what}. Got {n} {what}. \
                     Please split up {what} across multiple requests and try again."
                )))
            } else {
                Ok(())
            }
        };
        // MLflow's order: every item, then the batch's size, then duplicate params, then
        // the run.
        for (i, point) in batch.metrics.iter().enumerate() {
            validate::key(&format!("metrics[{i}].name"), &point.key)?;
            if point.timestamp < 0 {
                return Err(invalid(format!(
                    "Invalid value {} for parameter 'metrics[{i}].timestamp' supplied: metric \
                     '{}' (value={}). Timestamp must be a nonnegative long (64-bit integer) ",
                    point.timestamp,
                    point.key,
                    validate::python_float(point.value)
                )));
            }
        }
        for (i, param) in batch.params.iter().enumerate() {
            validate::key(&format!("params[{i}].key"), &param.key)?;
        }
        for (i, tag) in batch.tags.iter().enumerate() {
            validate::key(&format!("tags[{i}].key"), &tag.key)?;
        }
        limit("metrics", m, validate::MAX_BATCH_METRICS)?;
        limit("params", p, validate::MAX_BATCH_PARAMS)?;
        limit("tags", t, validate::MAX_BATCH_TAGS)?;
        limit(
            "metrics, params, and tags",
            m + p + t,
            validate::MAX_BATCH_TOTAL,
        )?;
        let mut seen = HashSet::new();
        let mut params = Vec::with_capacity(p);
        for param in batch.params {
            if !seen.insert(param.key.clone()) {
                return Err(invalid(format!(
                    "Duplicate parameter keys have been submitted: [{}]. Please ensure the \
                     request contains only one param value per param key.",
                    json_str(&param.key)
                )));
            }
            params.push(KeyValue::new(
                param.key,
                validate::truncate(param.value, validate::MAX_PARAM_VALUE_LEN),
            ));
        }
        let tags: Vec<KeyValue> = batch
            .tags
            .into_iter()
            .map(|tag| {
                KeyValue::new(
                    tag.key,
                    validate::truncate(tag.value, validate::MAX_RUN_TAG_VALUE_LEN),
                )
            })
            .collect();
        self.active_run(run_id).await?;
        // A point for a logged model that does not exist is refused, and the batch with it.
        let mut models: Vec<&str> = batch
            .metrics
            .iter()
            .filter_map(|m| m.model_id.as_deref())
            .collect();
        models.sort_unstable();
        models.dedup();
        for model_id in models {
            self.get_logged_model(model_id).await?;
        }
        // The common case, metrics into existing series on SQLite: one round trip.
        if params.is_empty() && tags.is_empty() && self.db.is_sqlite() && !batch.metrics.is_empty()
        {
            if let Some(script) = metrics::sqlite_script(&self.series, run_id, &batch.metrics) {
                self.db.run_script(script).await?;
                return Ok(());
            }
        }
        let mut tx = self.db.begin_write().await?;
        for param in &params {
            sqlx::query(
                "INSERT INTO run_params (run_id, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (run_id, key) DO NOTHING",
            )
            .bind(run_id)
            .bind(&param.key)
            .bind(&param.value)
            .execute(&mut *tx)
            .await?;
            let stored: String = get(
                &sqlx::query("SELECT value FROM run_params WHERE run_id = $1 AND key = $2")
                    .bind(run_id)
                    .bind(&param.key)
                    .fetch_one(&mut *tx)
                    .await?,
                "value",
            )?;
            if stored != param.value {
                return Err(invalid(format!(
                    "Changing param values is not allowed. Param with key='{}' was already \
                     logged with value='{stored}' for run ID='{run_id}'. Attempted logging new \
                     value '{}'.",
                    param.key, param.value
                )));
            }
        }
        for tag in &tags {
            upsert_run_tag(&mut tx, run_id, tag).await?;
        }
        metrics::insert_points(&mut tx, &self.series, run_id, &batch.metrics).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn log_inputs(
        &self,
        run_id: &str,
        datasets: Vec<DatasetInput>,
        models: Vec<String>,
    ) -> Result<(), TrackingError> {
        let head = self.active_run(run_id).await?;
        for (i, d) in datasets.iter().enumerate() {
            let ds = &d.dataset;
            for (what, value, max) in [
                ("name", &ds.name, 500),
                ("digest", &ds.digest, 36),
                ("source", &ds.source, 65535),
            ] {
                validate::length(&format!("datasets[{i}].dataset.{what}"), value, max)?;
            }
            for tag in &d.tags {
                validate::length("key", &tag.key, 255)?;
                validate::length("value", &tag.value, 500)?;
            }
        }
        let mut tx = self.db.begin_write().await?;
        for d in &datasets {
            let ds = &d.dataset;
            sqlx::query(
                "INSERT INTO datasets (experiment_id, name, digest, source_type, source, \
                 schema_json, profile) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (experiment_id, name, digest) DO NOTHING",
            )
            .bind(head.experiment_id)
            .bind(&ds.name)
            .bind(&ds.digest)
            .bind(&ds.source_type)
            .bind(&ds.source)
            .bind(ds.schema.clone())
            .bind(ds.profile.clone())
            .execute(&mut *tx)
            .await?;
            let tags: Vec<(&str, &str)> = d
                .tags
                .iter()
                .map(|t| (t.key.as_str(), t.value.as_str()))
                .collect();
            sqlx::query(
                "INSERT INTO run_inputs (run_id, dataset_name, dataset_digest, tags) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (run_id, dataset_name, dataset_digest) \
                 DO UPDATE SET tags = excluded.tags",
            )
            .bind(run_id)
            .bind(&ds.name)
            .bind(&ds.digest)
            .bind(serde_json::to_string(&tags).unwrap_or_else(|_| "[]".into()))
            .execute(&mut *tx)
            .await?;
        }
        for model_id in &models {
            link_model(&mut tx, run_id, model_id, "input", 0).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn log_outputs(
        &self,
        run_id: &str,
        models: Vec<ModelOutput>,
    ) -> Result<(), TrackingError> {
        self.active_run(run_id).await?;
        let mut tx = self.db.begin_write().await?;
        for m in &models {
            link_model(&mut tx, run_id, &m.model_id, "output", m.step).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Legacy `runs/log-model`: appends the model's JSON to the run's
    /// `mlflow.log-model.history` tag.
    pub async fn append_model_history(
        &self,
        run_id: &str,
        model_json: &str,
    ) -> Result<(), TrackingError> {
        let model: serde_json::Value = serde_json::from_str(model_json).map_err(|e| {
            invalid(format!(
                "Invalid value for parameter 'model_json': not JSON ({e})"
            ))
        })?;
        let run = self.get_run(run_id).await?;
        let mut history: Vec<serde_json::Value> = run
            .data
            .tags
            .iter()
            .find(|t| t.key == "mlflow.log-model.history")
            .and_then(|t| serde_json::from_str(&t.value).ok())
            .unwrap_or_default();
        history.push(model);
        self.set_run_tag(
            run_id,
            KeyValue::new(
                "mlflow.log-model.history",
                serde_json::to_string(&history).unwrap_or_default(),
            ),
        )
        .await
    }
}

async fn fetch_in(
    tracking: &Tracking,
    sql: &str,
    ids: &[&String],
) -> Result<Vec<AnyRow>, TrackingError> {
    let mut q = sqlx::query(sql);
    for id in ids {
        q = q.bind((*id).clone());
    }
    Ok(q.fetch_all(tracking.db.pool()).await?)
}

impl Tracking {
    /// Drops the active-run cache; called after every lifecycle change is written, so
    /// the next write to a run reads its state from the database.
    pub(crate) fn forget_active_runs(&self) {
        let mut cache = self.active_runs.lock();
        cache.0 += 1;
        cache.1.clear();
    }
}

async fn link_model(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    run_id: &str,
    model_id: &str,
    direction: &str,
    step: i64,
) -> Result<(), TrackingError> {
    sqlx::query(
        "INSERT INTO run_models (run_id, model_id, direction, step) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (run_id, model_id, direction) DO UPDATE SET step = excluded.step",
    )
    .bind(run_id)
    .bind(model_id)
    .bind(direction)
    .bind(step)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Upserts a run tag; `mlflow.runName` also renames the run.
pub(crate) async fn upsert_run_tag(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    run_id: &str,
    tag: &KeyValue,
) -> Result<(), TrackingError> {
    sqlx::query(
        "INSERT INTO run_tags (run_id, key, value) VALUES ($1, $2, $3) \
         ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value",
    )
    .bind(run_id)
    .bind(&tag.key)
    .bind(&tag.value)
    .execute(&mut **tx)
    .await?;
    if tag.key == RUN_NAME_TAG {
        sqlx::query("UPDATE runs SET name = $1 WHERE run_id = $2")
            .bind(&tag.value)
            .bind(run_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

pub(crate) fn run_info(row: &AnyRow) -> Result<RunInfo, TrackingError> {
    let run_id: String = get(row, "run_id")?;
    let status: String = get(row, "status")?;
    Ok(RunInfo {
        run_uuid: run_id.clone(),
        run_name: get(row, "name")?,
        experiment_id: get::<i64>(row, "experiment_id")?.to_string(),
        user_id: get(row, "user_id")?,
        status: RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
        start_time: get(row, "start_time")?,
        end_time: get(row, "end_time")?,
        artifact_uri: get(row, "artifact_uri")?,
        lifecycle_stage: Lifecycle::parse(&get::<String>(row, "lifecycle_stage")?),
        job_id: get(row, "job_id")?,
        run_id,
    })
}

/// `adjective-noun-NNN`, like MLflow's generated names.
fn generate_run_name() -> String {
    use rand::seq::SliceRandom;
    use rand::Rng;
    const ADJECTIVES: &[&str] = &[
        "amber", "brisk", "calm", "daring", "eager", "gentle", "hardy", "keen", "lively", "mellow",
        "nimble", "quiet", "rapid", "steady", "sunny", "tidy", "vivid", "witty",
    ];
    const NOUNS: &[&str] = &[
        "badger", "crane", "dolphin", "falcon", "gecko", "heron", "ibex", "koala", "lynx",
        "marten", "otter", "panda", "quail", "raven", "stoat", "tapir", "walrus", "yak",
    ];
    let mut rng = rand::thread_rng();
    format!(
        "{}-{}-{}",
        ADJECTIVES.choose(&mut rng).unwrap_or(&"calm"),
        NOUNS.choose(&mut rng).unwrap_or(&"otter"),
        rng.gen_range(100..1000)
    )
}
