//! MLflow 3 logged models: a model's files and metadata, created before its files are
//! uploaded and finalised after (spec §7).

use sqlx::any::AnyRow;
use trainyard_core::time::now_ms;

use crate::entities::*;
use crate::error::{invalid, not_found};
use crate::experiments::paginate;
use crate::filter::{self, Entity, Field, Grammar};
use crate::rows::{get, key_values};
use crate::validate;
use crate::{Tracking, TrackingError};

pub struct NewLoggedModel {
    pub experiment_id: String,
    pub name: Option<String>,
    pub model_type: Option<String>,
    pub source_run_id: Option<String>,
    pub params: Vec<KeyValue>,
    pub tags: Vec<KeyValue>,
}

const GRAMMAR: Grammar = Grammar {
    entities: &[
        Entity::Attribute,
        Entity::Metric,
        Entity::Param,
        Entity::Tag,
    ],
    string_attributes: &["name", "model_id", "model_type", "status", "source_run_id"],
    numeric_attributes: &["creation_timestamp", "last_updated_timestamp"],
    list_attributes: &[],
    aliases: &[
        ("creation_time", "creation_timestamp"),
        ("last_updated_time", "last_updated_timestamp"),
    ],
};

impl Tracking {
    pub async fn create_logged_model(
        &self,
        new: NewLoggedModel,
    ) -> Result<LoggedModel, TrackingError> {
        self.make_default(&new.experiment_id).await?;
        let experiment = self.get_experiment(&new.experiment_id).await?;
        if experiment.lifecycle_stage != Lifecycle::Active {
            return Err(invalid(format!(
                "The experiment {} must be in the 'active' state. Current state is deleted.",
                experiment.experiment_id
            )));
        }
        for kv in new.params.iter().chain(&new.tags) {
            validate::key("key", &kv.key)?;
        }
        let model_id = format!("m-{}", trainyard_core::new_id());
        let name = new
            .name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| model_id.clone());
        let artifact_uri = format!(
            "{}/models/{model_id}/artifacts",
            experiment.artifact_location.trim_end_matches('/')
        );
        let now = now_ms();
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO logged_models (model_id, experiment_id, name, artifact_uri, status, \
             status_message, model_type, source_run_id, creation_time, last_updated_time, \
             deleted) VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, $8, $8, 0)",
        )
        .bind(&model_id)
        .bind(validate::experiment_id(&experiment.experiment_id)?)
        .bind(&name)
        .bind(&artifact_uri)
        .bind(LoggedModelStatus::Pending.as_str())
        .bind(new.model_type.clone())
        .bind(new.source_run_id.clone())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for (table, items) in [
            ("logged_model_params", &new.params),
            ("logged_model_tags", &new.tags),
        ] {
            for kv in items {
                upsert(&mut tx, table, &model_id, kv).await?;
            }
        }
        tx.commit().await?;
        self.get_logged_model(&model_id).await
    }

    pub async fn get_logged_model(&self, model_id: &str) -> Result<LoggedModel, TrackingError> {
        if model_id.contains('\0') {
            return Err(not_found("Logged model ids never contain NUL bytes."));
        }
        let row = sqlx::query(
            "SELECT m.* FROM logged_models m JOIN experiments e ON e.id = m.experiment_id \
             WHERE m.model_id = $1 AND m.deleted = 0 AND (e.workspace_id = $2 OR $3 = 1)",
        )
        .bind(model_id)
        .bind(self.workspace())
        .bind(self.every_workspace())
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| not_found(format!("Logged model with ID '{model_id}' not found.")))?;
        self.logged_model_from_row(&row).await
    }

    async fn logged_model_from_row(&self, row: &AnyRow) -> Result<LoggedModel, TrackingError> {
        let model_id: String = get(row, "model_id")?;
        let kvs = |table: &str| {
            format!("SELECT key, value FROM {table} WHERE model_id = $1 ORDER BY key")
        };
        let tags = sqlx::query(&kvs("logged_model_tags"))
            .bind(&model_id)
            .fetch_all(self.db.pool())
            .await?;
        let params = sqlx::query(&kvs("logged_model_params"))
            .bind(&model_id)
            .fetch_all(self.db.pool())
            .await?;
        let metric_rows = sqlx::query(
            "SELECT key, value, is_nan, timestamp, step, run_id, dataset_name, dataset_digest \
             FROM logged_model_metric_points WHERE model_id = $1 ORDER BY key, timestamp, step",
        )
        .bind(&model_id)
        .fetch_all(self.db.pool())
        .await?;
        let mut metrics = Vec::new();
        for r in &metric_rows {
            let mut m = crate::metrics::latest_from_row(r)?;
            m.run_id = get(r, "run_id")?;
            m.model_id = Some(model_id.clone());
            m.dataset_name = get(r, "dataset_name")?;
            m.dataset_digest = get(r, "dataset_digest")?;
            metrics.push(m);
        }
        let tags = key_values(&tags)?;
        let registrations = tags
            .iter()
            .find(|t| t.key == "mlflow.modelVersions")
            .and_then(|t| serde_json::from_str::<Vec<serde_json::Value>>(&t.value).ok())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| {
                Some(Registration {
                    name: v.get("name")?.as_str()?.to_string(),
                    version: match v.get("version")? {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    },
                })
            })
            .collect();
        let status: String = get(row, "status")?;
        Ok(LoggedModel {
            info: LoggedModelInfo {
                experiment_id: get::<i64>(row, "experiment_id")?.to_string(),
                name: get(row, "name")?,
                creation_timestamp_ms: get(row, "creation_time")?,
                last_updated_timestamp_ms: get(row, "last_updated_time")?,
                artifact_uri: get(row, "artifact_uri")?,
                status: LoggedModelStatus::parse(&status).unwrap_or(LoggedModelStatus::Unspecified),
                model_type: get(row, "model_type")?,
                source_run_id: get(row, "source_run_id")?,
                status_message: get(row, "status_message")?,
                tags,
                registrations,
                model_id,
            },
            data: LoggedModelData {
                params: key_values(&params)?,
                metrics,
            },
        })
    }

    pub async fn finalize_logged_model(
        &self,
        model_id: &str,
        status: LoggedModelStatus,
    ) -> Result<LoggedModel, TrackingError> {
        self.get_logged_model(model_id).await?;
        sqlx::query(
            "UPDATE logged_models SET status = $1, last_updated_time = $2 WHERE model_id = $3",
        )
        .bind(status.as_str())
        .bind(now_ms())
        .bind(model_id)
        .execute(self.db.pool())
        .await?;
        self.get_logged_model(model_id).await
    }

    pub async fn delete_logged_model(&self, model_id: &str) -> Result<(), TrackingError> {
        self.get_logged_model(model_id).await?;
        sqlx::query("UPDATE logged_models SET deleted = 1 WHERE model_id = $1")
            .bind(model_id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    pub async fn set_logged_model_tags(
        &self,
        model_id: &str,
        tags: Vec<KeyValue>,
    ) -> Result<LoggedModel, TrackingError> {
        self.write_logged_model_kvs(model_id, "logged_model_tags", tags)
            .await?;
        self.get_logged_model(model_id).await
    }

    pub async fn log_logged_model_params(
        &self,
        model_id: &str,
        params: Vec<KeyValue>,
    ) -> Result<(), TrackingError> {
        self.write_logged_model_kvs(model_id, "logged_model_params", params)
            .await
    }

    async fn write_logged_model_kvs(
        &self,
        model_id: &str,
        table: &str,
        items: Vec<KeyValue>,
    ) -> Result<(), TrackingError> {
        self.get_logged_model(model_id).await?;
        for kv in &items {
            validate::key("key", &kv.key)?;
        }
        let mut tx = self.db.begin_write().await?;
        for kv in &items {
            upsert(&mut tx, table, model_id, kv).await?;
        }
        sqlx::query("UPDATE logged_models SET last_updated_time = $1 WHERE model_id = $2")
            .bind(now_ms())
            .bind(model_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_logged_model_tag(
        &self,
        model_id: &str,
        key: &str,
    ) -> Result<(), TrackingError> {
        self.get_logged_model(model_id).await?;
        if key.contains('\0') {
            return Err(not_found(format!(
                "No tag with key '{}' found for logged model '{model_id}'.",
                key.escape_default()
            )));
        }
        let done = sqlx::query("DELETE FROM logged_model_tags WHERE model_id = $1 AND key = $2")
            .bind(model_id)
            .bind(key)
            .execute(self.db.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found(format!(
                "No tag with key '{key}' found for logged model '{model_id}'."
            )));
        }
        Ok(())
    }

    /// Logged models of the experiments that pass the filter, in `order` (each
    /// `(field_name, ascending)`: an attribute or `metrics.<key>`, nulls last), then newest
    /// first and by id, as MLflow orders them.
    pub async fn search_logged_models(
        &self,
        experiment_ids: &[String],
        filter_text: &str,
        order: &[(String, bool)],
        max_results: i64,
        page_token: Option<&str>,
    ) -> Result<Page<LoggedModel>, TrackingError> {
        let clauses = filter::parse_filter(&GRAMMAR, filter_text)?;
        for (field, _) in order {
            if model_order_field(field).is_none() && !field.starts_with("metrics.") {
                return Err(invalid(if field.contains('.') {
                    format!("Invalid order by field name: {field}. Only metrics are supported.")
                } else {
                    format!("Invalid order by field name: {field}")
                }));
            }
        }
        let offset = filter::decode_page_token(page_token)?;
        let mut models = Vec::new();
        for id in self.own_experiments(experiment_ids).await? {
            let rows = sqlx::query(
                "SELECT * FROM logged_models WHERE experiment_id = $1 AND deleted = 0 \
                 ORDER BY creation_time DESC, model_id",
            )
            .bind(id)
            .fetch_all(self.db.pool())
            .await?;
            for row in &rows {
                models.push(self.logged_model_from_row(row).await?);
            }
        }
        models.retain(|m| {
            clauses.iter().all(|c| {
                let i = &m.info;
                let value = match (c.entity, c.key.as_str()) {
                    (Entity::Attribute, "name") => Some(Field::Str(&i.name)),
                    (Entity::Attribute, "model_id") => Some(Field::Str(&i.model_id)),
                    (Entity::Attribute, "model_type") => i.model_type.as_deref().map(Field::Str),
                    (Entity::Attribute, "status") => Some(Field::Str(i.status.as_str())),
                    (Entity::Attribute, "source_run_id") => {
                        i.source_run_id.as_deref().map(Field::Str)
                    }
                    (Entity::Attribute, "creation_timestamp") => {
                        Some(Field::Num(i.creation_timestamp_ms as f64))
                    }
                    (Entity::Attribute, "last_updated_timestamp") => {
                        Some(Field::Num(i.last_updated_timestamp_ms as f64))
                    }
                    (Entity::Tag, k) => i
                        .tags
                        .iter()
                        .find(|t| t.key == k)
                        .map(|t| Field::Str(&t.value)),
                    (Entity::Param, k) => m
                        .data
                        .params
                        .iter()
                        .find(|t| t.key == k)
                        .map(|t| Field::Str(&t.value)),
                    // The points are in time order: the last one is the latest value.
                    (Entity::Metric, k) => m
                        .data
                        .metrics
                        .iter()
                        .rev()
                        .find(|t| t.key == k)
                        .map(|t| Field::Num(t.value.0)),
                    _ => None,
                };
                c.matches(value)
            })
        });
        models.sort_by(|a, b| {
            for (field, ascending) in order {
                let (x, y) = (order_value(a, field), order_value(b, field));
                let ord = match (x, y) {
                    (None, None) => std::cmp::Ordering::Equal,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (Some(x), Some(y)) => {
                        let o = x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal);
                        if *ascending {
                            o
                        } else {
                            o.reverse()
                        }
                    }
                };
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
            }
            b.info
                .creation_timestamp_ms
                .cmp(&a.info.creation_timestamp_ms)
                .then_with(|| a.info.model_id.cmp(&b.info.model_id))
        });
        Ok(paginate(
            models,
            offset,
            max_results.clamp(1, 10_000) as usize,
        ))
    }
}

/// The attribute a logged-model `order_by` field names (MLflow's names and aliases).
fn model_order_field(field: &str) -> Option<&'static str> {
    Some(match field {
        "name" => "name",
        "model_id" => "model_id",
        "model_type" => "model_type",
        "status" => "status",
        "source_run_id" => "source_run_id",
        "experiment_id" => "experiment_id",
        "creation_time" | "creation_timestamp" | "creation_timestamp_ms" => "creation",
        "last_updated_timestamp" | "last_updated_timestamp_ms" => "updated",
        _ => return None,
    })
}

/// A value to order by: text or a number; `None` sorts last.
#[derive(PartialEq, PartialOrd)]
enum OrderValue<'a> {
    Num(f64),
    Text(&'a str),
}

fn order_value<'a>(m: &'a LoggedModel, field: &str) -> Option<OrderValue<'a>> {
    let i = &m.info;
    if let Some(key) = field.strip_prefix("metrics.") {
        return m
            .data
            .metrics
            .iter()
            .rev()
            .find(|p| p.key == key)
            .map(|p| OrderValue::Num(p.value.0));
    }
    Some(match model_order_field(field)? {
        "name" => OrderValue::Text(&i.name),
        "model_id" => OrderValue::Text(&i.model_id),
        "model_type" => OrderValue::Text(i.model_type.as_deref()?),
        "status" => OrderValue::Text(i.status.as_str()),
        "source_run_id" => OrderValue::Text(i.source_run_id.as_deref()?),
        "experiment_id" => OrderValue::Num(i.experiment_id.parse().ok()?),
        "creation" => OrderValue::Num(i.creation_timestamp_ms as f64),
        _ => OrderValue::Num(i.last_updated_timestamp_ms as f64),
    })
}

async fn upsert(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    table: &str,
    model_id: &str,
    kv: &KeyValue,
) -> Result<(), TrackingError> {
    sqlx::query(&format!(
        "INSERT INTO {table} (model_id, key, value) VALUES ($1, $2, $3) \
         ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value"
    ))
    .bind(model_id)
    .bind(&kv.key)
    .bind(&kv.value)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
