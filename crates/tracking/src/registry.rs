//! The model registry: named models, their numbered versions, stages, aliases and tags
//! (spec §8). Version numbers come from a per-model counter and are never reused.

use std::collections::BTreeMap;

use sqlx::any::AnyRow;
use trainyard_core::time::now_ms;

use crate::entities::*;
use crate::error::{invalid, not_found};
use crate::experiments::paginate;
use crate::filter::{self, Clause, Entity, Field, Grammar, Op};
use crate::rows::{get, key_values};
use crate::sources::{self, bad_source};
use crate::validate;
use crate::{Tracking, TrackingError};

pub struct NewModelVersion {
    pub name: String,
    pub source: String,
    pub run_id: Option<String>,
    pub model_id: Option<String>,
    pub tags: Vec<KeyValue>,
    pub run_link: Option<String>,
    pub description: Option<String>,
    pub user_id: String,
}

const STAGES: [&str; 4] = ["None", "Staging", "Production", "Archived"];
const PROMPT_TAG: &str = "mlflow.prompt.is_prompt";

const MODEL_GRAMMAR: Grammar = Grammar {
    entities: &[Entity::Attribute, Entity::Tag],
    string_attributes: &["name"],
    numeric_attributes: &["creation_timestamp", "last_updated_timestamp"],
    list_attributes: &[],
    aliases: &[("timestamp", "creation_timestamp")],
};

const VERSION_GRAMMAR: Grammar = Grammar {
    entities: &[Entity::Attribute, Entity::Tag],
    string_attributes: &["name", "run_id", "source_path", "current_stage"],
    numeric_attributes: &[
        "version_number",
        "creation_timestamp",
        "last_updated_timestamp",
    ],
    list_attributes: &["name", "run_id"],
    aliases: &[("timestamp", "creation_timestamp")],
};

fn model_not_found(name: &str) -> TrackingError {
    not_found(format!("Registered Model with name={name} not found"))
}

fn version_not_found(name: &str, version: i64) -> TrackingError {
    not_found(format!(
        "Model Version (name={name}, version={version}) not found"
    ))
}

impl Tracking {
    pub async fn create_registered_model(
        &self,
        name: &str,
        description: Option<String>,
        tags: Vec<KeyValue>,
        user_id: &str,
    ) -> Result<RegisteredModel, TrackingError> {
        validate::model_name(name)?;
        check_model_tags(&tags)?;
        let now = now_ms();
        let mut tx = self.db.begin_write().await?;
        let done = sqlx::query(
            "INSERT INTO registered_models (name, description, user_id, creation_time, \
             last_updated_time, next_version, workspace_id) VALUES ($1, $2, $3, $4, $4, 1, $5) \
             ON CONFLICT (workspace_id, name) DO NOTHING",
        )
        .bind(name)
        .bind(description.unwrap_or_default())
        .bind(user_id)
        .bind(now)
        .bind(self.workspace())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(TrackingError::AlreadyExists(format!(
                "Registered Model (name={name}) already exists."
            )));
        }
        for tag in &tags {
            upsert_model_tag(&mut tx, self.workspace(), name, tag).await?;
        }
        tx.commit().await?;
        self.get_registered_model(name).await
    }

    pub async fn get_registered_model(&self, name: &str) -> Result<RegisteredModel, TrackingError> {
        if name.contains('\0') {
            return Err(model_not_found(&name.escape_default().to_string()));
        }
        let row =
            sqlx::query("SELECT * FROM registered_models WHERE name = $1 AND workspace_id = $2")
                .bind(name)
                .bind(self.workspace())
                .fetch_optional(self.db.pool())
                .await?
                .ok_or_else(|| model_not_found(name))?;
        self.registered_model_from_row(&row).await
    }

    async fn registered_model_from_row(
        &self,
        row: &AnyRow,
    ) -> Result<RegisteredModel, TrackingError> {
        let name: String = get(row, "name")?;
        let tags = sqlx::query(
            "SELECT key, value FROM registered_model_tags WHERE name = $1 AND workspace_id = $2 \
             ORDER BY key",
        )
        .bind(&name)
        .bind(self.workspace())
        .fetch_all(self.db.pool())
        .await?;
        let aliases = self.aliases(&name).await?;
        let versions = self.versions_of(&name).await?;
        let mut latest: BTreeMap<&str, ModelVersion> = BTreeMap::new();
        for v in versions {
            let stage = STAGES
                .into_iter()
                .find(|s| *s == v.current_stage)
                .unwrap_or("None");
            latest.insert(stage, v);
        }
        Ok(RegisteredModel {
            creation_timestamp: get(row, "creation_time")?,
            last_updated_timestamp: get(row, "last_updated_time")?,
            user_id: get(row, "user_id")?,
            description: get(row, "description")?,
            latest_versions: latest.into_values().collect(),
            tags: key_values(&tags)?,
            aliases: aliases
                .into_iter()
                .map(|(alias, version)| Alias {
                    alias,
                    version: version.to_string(),
                })
                .collect(),
            name,
        })
    }

    async fn aliases(&self, name: &str) -> Result<Vec<(String, i64)>, TrackingError> {
        let rows = sqlx::query(
            "SELECT alias, version FROM registered_model_aliases WHERE name = $1 \
             AND workspace_id = $2 ORDER BY alias",
        )
        .bind(name)
        .bind(self.workspace())
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((get(r, "alias")?, get(r, "version")?)))
            .collect()
    }

    /// Every live version of a model, oldest first, with tags and aliases.
    async fn versions_of(&self, name: &str) -> Result<Vec<ModelVersion>, TrackingError> {
        let rows = sqlx::query(
            "SELECT * FROM model_versions WHERE name = $1 AND workspace_id = $2 ORDER BY version",
        )
        .bind(name)
        .bind(self.workspace())
        .fetch_all(self.db.pool())
        .await?;
        let tags = sqlx::query(
            "SELECT version, key, value FROM model_version_tags WHERE name = $1 \
             AND workspace_id = $2 ORDER BY key",
        )
        .bind(name)
        .bind(self.workspace())
        .fetch_all(self.db.pool())
        .await?;
        let aliases = self.aliases(name).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut v = version_from_row(row)?;
            let number: i64 = get(row, "version")?;
            for t in &tags {
                if get::<i64>(t, "version")? == number {
                    v.tags.push(KeyValue::new(
                        get::<String>(t, "key")?,
                        get::<String>(t, "value")?,
                    ));
                }
            }
            v.aliases = aliases
                .iter()
                .filter(|(_, n)| *n == number)
                .map(|(a, _)| a.clone())
                .collect();
            out.push(v);
        }
        Ok(out)
    }

    pub async fn update_registered_model(
        &self,
        name: &str,
        description: Option<String>,
    ) -> Result<RegisteredModel, TrackingError> {
        self.get_registered_model(name).await?;
        sqlx::query(
            "UPDATE registered_models SET description = $1, last_updated_time = $2 \
             WHERE name = $3 AND workspace_id = $4",
        )
        .bind(description.unwrap_or_default())
        .bind(now_ms())
        .bind(name)
        .bind(self.workspace())
        .execute(self.db.pool())
        .await?;
        self.get_registered_model(name).await
    }

    pub async fn rename_registered_model(
        &self,
        name: &str,
        new_name: &str,
    ) -> Result<RegisteredModel, TrackingError> {
        validate::model_name(new_name)?;
        self.get_registered_model(name).await?;
        if new_name != name && self.get_registered_model(new_name).await.is_ok() {
            return Err(TrackingError::AlreadyExists(format!(
                "Registered Model (name={new_name}) already exists."
            )));
        }
        let mut tx = self.db.begin_write().await?;
        for table in [
            "registered_models",
            "registered_model_tags",
            "registered_model_aliases",
            "model_versions",
            "model_version_tags",
        ] {
            sqlx::query(&format!(
                "UPDATE {table} SET name = $1 WHERE name = $2 AND workspace_id = $3"
            ))
            .bind(new_name)
            .bind(name)
            .bind(self.workspace())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE registered_models SET last_updated_time = $1 WHERE name = $2 \
             AND workspace_id = $3",
        )
        .bind(now_ms())
        .bind(new_name)
        .bind(self.workspace())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.get_registered_model(new_name).await
    }

    pub async fn delete_registered_model(&self, name: &str) -> Result<(), TrackingError> {
        self.get_registered_model(name).await?;
        let mut tx = self.db.begin_write().await?;
        for table in [
            "registered_models",
            "registered_model_tags",
            "registered_model_aliases",
            "model_versions",
            "model_version_tags",
        ] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE name = $1 AND workspace_id = $2"
            ))
            .bind(name)
            .bind(self.workspace())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn search_registered_models(
        &self,
        filter_text: &str,
        max_results: i64,
        order_by: &[String],
        page_token: Option<&str>,
    ) -> Result<Page<RegisteredModel>, TrackingError> {
        validate::max_results(max_results, 1000)?;
        let clauses = filter::parse_filter(&MODEL_GRAMMAR, filter_text)?;
        let order = filter::parse_order_by(&MODEL_GRAMMAR, order_by)?;
        let offset = filter::decode_page_token(page_token)?;
        let rows =
            sqlx::query("SELECT * FROM registered_models WHERE workspace_id = $1 ORDER BY name")
                .bind(self.workspace())
                .fetch_all(self.db.pool())
                .await?;
        let mut models = Vec::with_capacity(rows.len());
        for row in &rows {
            models.push(self.registered_model_from_row(row).await?);
        }
        fn field<'a>(m: &'a RegisteredModel, entity: Entity, key: &str) -> Option<Field<'a>> {
            match (entity, key) {
                (Entity::Attribute, "name") => Some(Field::Str(&m.name)),
                (Entity::Attribute, "creation_timestamp") => {
                    Some(Field::Num(m.creation_timestamp as f64))
                }
                (Entity::Attribute, "last_updated_timestamp") => {
                    Some(Field::Num(m.last_updated_timestamp as f64))
                }
                (Entity::Tag, k) => m
                    .tags
                    .iter()
                    .find(|t| t.key == k)
                    .map(|t| Field::Str(&t.value)),
                _ => None,
            }
        }
        models.retain(|m| {
            clauses.iter().all(|c| {
                if is_prompt_exclusion(c) {
                    // "not a prompt": models without the tag pass too.
                    return field(m, Entity::Tag, PROMPT_TAG) != Some(Field::Str("true"));
                }
                c.matches(field(m, c.entity, &c.key))
            })
        });
        models.sort_by(|a, b| {
            filter::order_by(a, b, &order, field).then_with(|| a.name.cmp(&b.name))
        });
        Ok(paginate(models, offset, max_results as usize))
    }

    pub async fn latest_versions(
        &self,
        name: &str,
        stages: &[String],
    ) -> Result<Vec<ModelVersion>, TrackingError> {
        self.get_registered_model(name).await?;
        let wanted: Vec<&str> = if stages.is_empty() {
            STAGES.to_vec()
        } else {
            stages
                .iter()
                .map(|s| validate::stage(s))
                .collect::<Result<_, _>>()?
        };
        let mut latest: BTreeMap<String, ModelVersion> = BTreeMap::new();
        for v in self.versions_of(name).await? {
            if wanted.contains(&v.current_stage.as_str()) {
                latest.insert(v.current_stage.clone(), v);
            }
        }
        let mut out: Vec<ModelVersion> = latest.into_values().collect();
        out.sort_by_key(|v| v.version.parse::<i64>().unwrap_or(0));
        Ok(out)
    }

    pub async fn set_registered_model_tag(
        &self,
        name: &str,
        tag: KeyValue,
    ) -> Result<(), TrackingError> {
        self.get_registered_model(name).await?;
        check_model_tags(std::slice::from_ref(&tag))?;
        let mut tx = self.db.begin_write().await?;
        upsert_model_tag(&mut tx, self.workspace(), name, &tag).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_registered_model_tag(
        &self,
        name: &str,
        key: &str,
    ) -> Result<(), TrackingError> {
        self.get_registered_model(name).await?;
        sqlx::query(
            "DELETE FROM registered_model_tags WHERE name = $1 AND key = $2 AND workspace_id = $3",
        )
        .bind(name)
        .bind(key)
        .bind(self.workspace())
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    pub async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        version: &str,
    ) -> Result<(), TrackingError> {
        validate::alias(alias)?;
        let version = validate::version(version)?;
        self.get_model_version(name, version).await?;
        sqlx::query(
            "INSERT INTO registered_model_aliases (name, alias, version, workspace_id) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (workspace_id, name, alias) DO UPDATE SET version = excluded.version",
        )
        .bind(name)
        .bind(alias)
        .bind(version)
        .bind(self.workspace())
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    pub async fn delete_alias(&self, name: &str, alias: &str) -> Result<(), TrackingError> {
        self.get_registered_model(name).await?;
        sqlx::query(
            "DELETE FROM registered_model_aliases WHERE name = $1 AND alias = $2 \
             AND workspace_id = $3",
        )
        .bind(name)
        .bind(alias)
        .bind(self.workspace())
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    pub async fn version_by_alias(
        &self,
        name: &str,
        alias: &str,
    ) -> Result<ModelVersion, TrackingError> {
        self.get_registered_model(name).await?;
        if alias.eq_ignore_ascii_case("latest") {
            let newest = self.versions_of(name).await?.pop();
            return newest
                .ok_or_else(|| invalid(format!("Registered model alias {alias} not found.")));
        }
        let version = self
            .aliases(name)
            .await?
            .into_iter()
            .find(|(a, _)| a == alias)
            .map(|(_, v)| v)
            .ok_or_else(|| invalid(format!("Registered model alias {alias} not found.")))?;
        self.get_model_version(name, version).await
    }

    pub async fn create_model_version(
        &self,
        new: NewModelVersion,
    ) -> Result<ModelVersion, TrackingError> {
        // MLflow's order: the source is judged before the model's existence.
        let storage = self.check_source(&new).await?;
        self.get_registered_model(&new.name).await?;
        check_model_tags(&new.tags)?;
        let mut new = new;
        // A version of a logged model belongs to the run that produced it.
        if new.run_id.is_none() {
            if let Some(model_id) = &new.model_id {
                if let Ok(m) = self.get_logged_model(model_id).await {
                    new.run_id = m.info.source_run_id;
                }
            }
        }
        let now = now_ms();
        let mut tx = self.db.begin_write().await?;
        let row = sqlx::query(
            "UPDATE registered_models SET next_version = next_version + 1, \
             last_updated_time = $1 WHERE name = $2 AND workspace_id = $3 RETURNING next_version",
        )
        .bind(now)
        .bind(&new.name)
        .bind(self.workspace())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| model_not_found(&new.name))?;
        let version: i64 = get::<i64>(&row, "next_version")? - 1;
        sqlx::query(
            "INSERT INTO model_versions (name, version, description, user_id, stage, source, \
             storage_location, run_id, run_link, model_id, status, creation_time, \
             last_updated_time, workspace_id) VALUES ($1, $2, $3, $4, 'None', $5, $6, $7, $8, \
             $9, 'READY', $10, $10, $11)",
        )
        .bind(&new.name)
        .bind(version)
        .bind(new.description.clone().unwrap_or_default())
        .bind(&new.user_id)
        .bind(&new.source)
        .bind(&storage)
        .bind(new.run_id.clone().unwrap_or_default())
        .bind(new.run_link.clone().unwrap_or_default())
        .bind(new.model_id.clone())
        .bind(now)
        .bind(self.workspace())
        .execute(&mut *tx)
        .await?;
        for tag in &new.tags {
            upsert_version_tag(&mut tx, self.workspace(), &new.name, version, tag).await?;
        }
        tx.commit().await?;
        if let Some(model_id) = &new.model_id {
            self.note_registration(model_id, &new.name, version).await?;
        }
        self.get_model_version(&new.name, version).await
    }

    /// Appends `{name, version}` to the logged model's `mlflow.modelVersions` tag.
    async fn note_registration(
        &self,
        model_id: &str,
        name: &str,
        version: i64,
    ) -> Result<(), TrackingError> {
        let Ok(model) = self.get_logged_model(model_id).await else {
            return Ok(());
        };
        let mut list: Vec<serde_json::Value> = model
            .info
            .tags
            .iter()
            .find(|t| t.key == "mlflow.modelVersions")
            .and_then(|t| serde_json::from_str(&t.value).ok())
            .unwrap_or_default();
        let entry = serde_json::json!({"name": name, "version": version});
        if list.contains(&entry) {
            return Ok(());
        }
        list.push(entry);
        // Byte for byte what MLflow writes (Python's json.dumps): clients compare it.
        self.set_logged_model_tags(
            model_id,
            vec![KeyValue::new(
                "mlflow.modelVersions",
                crate::python_json::dumps(&serde_json::Value::Array(list)),
            )],
        )
        .await?;
        Ok(())
    }

    /// Checks a version's source with MLflow's rules (see `sources`) and says where its
    /// files are.
    async fn check_source(&self, new: &NewModelVersion) -> Result<String, TrackingError> {
        let source = new.source.as_str();
        if source.is_empty() {
            return Err(invalid(
                "Missing value for required parameter 'source'. See the API docs for more \
                 information about request parameters.",
            ));
        }
        sources::check_not_host_addressed(source)?;
        let parts = sources::split(source);
        // `models:/<name>/<version>`: the version it names, wherever that one lives.
        if parts.scheme == "models" {
            if !parts.netloc.is_empty() {
                return Err(bad_source(
                    source,
                    "Registered model sources must use the active model registry.",
                ));
            }
            let rest = parts.path.trim_start_matches('/');
            if let Some((name, version)) = rest.rsplit_once('/') {
                let version = validate::version(version)?;
                let v = self.get_model_version(name, version).await?;
                let run_differs = new.run_id.as_deref().is_some_and(|r| r != v.run_id);
                let model_differs = new
                    .model_id
                    .as_deref()
                    .is_some_and(|m| Some(m) != v.model_id.as_deref());
                if run_differs || model_differs {
                    return Err(bad_source(
                        source,
                        "The run_id and model_id request parameters must match the referenced \
                         model version.",
                    ));
                }
                return Ok(v.storage_location);
            }
        }
        if let Some(model_id) = &new.model_id {
            return self.check_source_in_model(source, &parts, model_id).await;
        }
        if sources::is_local(source) {
            return Err(bad_source(
                source,
                "To use a local path as a model version source, the run_id request parameter \
                 has to be specified and the local path has to be contained within the \
                 artifact directory of the run specified by the run_id.",
            ));
        }
        sources::check_no_relative_references(source)?;
        match parts.scheme.as_str() {
            "runs" => {
                let rest = parts.path.trim_start_matches('/');
                let (run, path) = rest.split_once('/').unwrap_or((rest, ""));
                if !parts.netloc.is_empty() || new.run_id.as_deref() != Some(run) {
                    return Err(bad_source(source, sources::RUN_ID_MUST_MATCH));
                }
                // A run of another workspace is not one to register from: serving would
                // read its files.
                if matches!(self.get_run(run).await, Err(TrackingError::NotFound(_)))
                    && self.everywhere().get_run(run).await.is_ok()
                {
                    return Err(bad_source(source, sources::RUN_ID_MUST_MATCH));
                }
                // The path is read as an artifact path when the version is served: the same
                // rules, so no source names a place outside the run's artifacts.
                let path = path.trim_end_matches('/');
                if !path.is_empty() {
                    crate::artifacts::check_path(path)
                        .map_err(|e| bad_source(source, &e.to_string()))?;
                }
                Ok(source.to_string())
            }
            "models" => Err(bad_source(source, sources::MODEL_ID_MUST_MATCH)),
            "mlflow-artifacts" => {
                let inside = match &new.run_id {
                    Some(run_id) => match self.get_run(run_id).await {
                        Ok(run) => sources::lies_inside(source, &run.info.artifact_uri),
                        Err(_) => false,
                    },
                    None => false,
                };
                if !inside {
                    return Err(bad_source(source, sources::RUN_ID_MUST_MATCH));
                }
                Ok(source.to_string())
            }
            // Other object stores: kept as given; serving reads only this server's store.
            _ => Ok(source.to_string()),
        }
    }

    /// The source rules when the version names a logged model: its own `models:/<id>`, or a
    /// place inside its artifacts.
    async fn check_source_in_model(
        &self,
        source: &str,
        parts: &sources::Parts<'_>,
        model_id: &str,
    ) -> Result<String, TrackingError> {
        if sources::is_local(source) {
            return Err(bad_source(
                source,
                "To use a local path as a model version source, the model_id request parameter \
                 has to be specified and the local path has to be contained within the \
                 artifact directory of the logged model specified by the model_id.",
            ));
        }
        sources::check_no_relative_references(source)?;
        let model = self.get_logged_model(model_id).await?;
        match parts.scheme.as_str() {
            "models" => {
                if parts.path.trim_start_matches('/') != model_id {
                    return Err(bad_source(source, sources::MODEL_ID_MUST_MATCH));
                }
                Ok(model.info.artifact_uri)
            }
            "runs" => Err(bad_source(source, sources::MODEL_ID_MUST_MATCH)),
            "mlflow-artifacts" => {
                if !sources::lies_inside(source, &model.info.artifact_uri) {
                    return Err(bad_source(source, sources::MODEL_ID_MUST_MATCH));
                }
                Ok(source.to_string())
            }
            _ => Ok(source.to_string()),
        }
    }

    pub async fn get_model_version(
        &self,
        name: &str,
        version: i64,
    ) -> Result<ModelVersion, TrackingError> {
        self.versions_of(name)
            .await?
            .into_iter()
            .find(|v| v.version == version.to_string())
            .ok_or_else(|| version_not_found(name, version))
    }

    pub async fn update_model_version(
        &self,
        name: &str,
        version: i64,
        description: Option<String>,
    ) -> Result<ModelVersion, TrackingError> {
        self.get_model_version(name, version).await?;
        if let Some(d) = description {
            sqlx::query(
                "UPDATE model_versions SET description = $1, last_updated_time = $2 \
                 WHERE name = $3 AND version = $4 AND workspace_id = $5",
            )
            .bind(d)
            .bind(now_ms())
            .bind(name)
            .bind(version)
            .bind(self.workspace())
            .execute(self.db.pool())
            .await?;
        }
        self.get_model_version(name, version).await
    }

    pub async fn transition_stage(
        &self,
        name: &str,
        version: i64,
        stage: &str,
        archive_existing: bool,
    ) -> Result<ModelVersion, TrackingError> {
        let stage = validate::stage(stage)?;
        if archive_existing && !matches!(stage, "Staging" | "Production") {
            return Err(invalid(format!(
                "Model version transition cannot archive existing model versions because \
                 '{stage}' is not an Active stage. Valid stages are Staging and Production."
            )));
        }
        self.get_model_version(name, version).await?;
        let now = now_ms();
        let mut tx = self.db.begin_write().await?;
        if archive_existing {
            sqlx::query(
                "UPDATE model_versions SET stage = 'Archived', last_updated_time = $1 \
                 WHERE name = $2 AND stage = $3 AND version != $4 AND workspace_id = $5",
            )
            .bind(now)
            .bind(name)
            .bind(stage)
            .bind(version)
            .bind(self.workspace())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE model_versions SET stage = $1, last_updated_time = $2 \
             WHERE name = $3 AND version = $4 AND workspace_id = $5",
        )
        .bind(stage)
        .bind(now)
        .bind(name)
        .bind(version)
        .bind(self.workspace())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.get_model_version(name, version).await
    }

    pub async fn delete_model_version(
        &self,
        name: &str,
        version: i64,
    ) -> Result<(), TrackingError> {
        self.get_model_version(name, version).await?;
        let mut tx = self.db.begin_write().await?;
        for table in [
            "model_versions",
            "model_version_tags",
            "registered_model_aliases",
        ] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE name = $1 AND version = $2 AND workspace_id = $3"
            ))
            .bind(name)
            .bind(version)
            .bind(self.workspace())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn search_model_versions(
        &self,
        filter_text: &str,
        max_results: i64,
        order_by: &[String],
        page_token: Option<&str>,
    ) -> Result<Page<ModelVersion>, TrackingError> {
        validate::max_results(max_results, 200_000)?;
        let clauses = filter::parse_filter(&VERSION_GRAMMAR, filter_text)?;
        let mut order = filter::parse_order_by(&VERSION_GRAMMAR, order_by)?;
        if order.is_empty() {
            // MLflow's default: the most recently changed first.
            order.push(filter::OrderKey {
                entity: Entity::Attribute,
                key: "last_updated_timestamp".into(),
                ascending: false,
            });
        }
        let offset = filter::decode_page_token(page_token)?;
        // A name filter narrows the read to those models.
        let names: Vec<String> = match clauses
            .iter()
            .find(|c| c.entity == Entity::Attribute && c.key == "name" && c.op == Op::Eq)
        {
            Some(Clause {
                value: filter::Literal::Str(n),
                ..
            }) => vec![n.clone()],
            _ => sqlx::query(
                "SELECT name FROM registered_models WHERE workspace_id = $1 ORDER BY name",
            )
            .bind(self.workspace())
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|r| get(r, "name"))
            .collect::<Result<_, _>>()?,
        };
        let mut versions = Vec::new();
        for name in &names {
            let prompt = sqlx::query(
                "SELECT value FROM registered_model_tags WHERE name = $1 AND key = $2 \
                     AND workspace_id = $3",
            )
            .bind(name)
            .bind(PROMPT_TAG)
            .bind(self.workspace())
            .fetch_optional(self.db.pool())
            .await?
            .map(|r| get::<String>(&r, "value"))
            .transpose()?;
            if prompt.as_deref() == Some("true") {
                continue;
            }
            versions.extend(self.versions_of(name).await?);
        }
        fn field<'a>(v: &'a ModelVersion, entity: Entity, key: &str) -> Option<Field<'a>> {
            match (entity, key) {
                (Entity::Attribute, "name") => Some(Field::Str(&v.name)),
                (Entity::Attribute, "run_id") => Some(Field::Str(&v.run_id)),
                (Entity::Attribute, "source_path") => Some(Field::Str(&v.source)),
                (Entity::Attribute, "current_stage") => Some(Field::Str(&v.current_stage)),
                (Entity::Attribute, "version_number") => {
                    v.version.parse::<f64>().ok().map(Field::Num)
                }
                (Entity::Attribute, "creation_timestamp") => {
                    Some(Field::Num(v.creation_timestamp as f64))
                }
                (Entity::Attribute, "last_updated_timestamp") => {
                    Some(Field::Num(v.last_updated_timestamp as f64))
                }
                (Entity::Tag, k) => v
                    .tags
                    .iter()
                    .find(|t| t.key == k)
                    .map(|t| Field::Str(&t.value)),
                _ => None,
            }
        }
        versions.retain(|v| {
            clauses
                .iter()
                .all(|c| is_prompt_exclusion(c) || c.matches(field(v, c.entity, &c.key)))
        });
        versions.sort_by(|a, b| {
            filter::order_by(a, b, &order, field).then_with(|| {
                a.name.cmp(&b.name).then_with(|| {
                    let (x, y): (i64, i64) = (
                        a.version.parse().unwrap_or(0),
                        b.version.parse().unwrap_or(0),
                    );
                    y.cmp(&x)
                })
            })
        });
        Ok(paginate(versions, offset, max_results as usize))
    }

    /// Where a version's files are: a logged model's or version's location, or the source.
    pub async fn download_uri(&self, name: &str, version: i64) -> Result<String, TrackingError> {
        Ok(self
            .get_model_version(name, version)
            .await?
            .storage_location)
    }

    pub async fn set_model_version_tag(
        &self,
        name: &str,
        version: i64,
        tag: KeyValue,
    ) -> Result<(), TrackingError> {
        self.get_model_version(name, version).await?;
        check_model_tags(std::slice::from_ref(&tag))?;
        let mut tx = self.db.begin_write().await?;
        upsert_version_tag(&mut tx, self.workspace(), name, version, &tag).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_model_version_tag(
        &self,
        name: &str,
        version: i64,
        key: &str,
    ) -> Result<(), TrackingError> {
        self.get_model_version(name, version).await?;
        sqlx::query(
            "DELETE FROM model_version_tags WHERE name = $1 AND version = $2 AND key = $3 \
             AND workspace_id = $4",
        )
        .bind(name)
        .bind(version)
        .bind(key)
        .bind(self.workspace())
        .execute(self.db.pool())
        .await?;
        Ok(())
    }
}

/// The 3.x client's ``tag.`mlflow.prompt.is_prompt` != 'true'`` clause.
fn is_prompt_exclusion(c: &Clause) -> bool {
    c.entity == Entity::Tag
        && c.key == PROMPT_TAG
        && c.op == Op::Ne
        && c.value == filter::Literal::Str("true".into())
}

fn check_model_tags(tags: &[KeyValue]) -> Result<(), TrackingError> {
    for tag in tags {
        validate::key("key", &tag.key)?;
        validate::length("value", &tag.value, validate::MAX_MODEL_TAG_VALUE_LEN)?;
    }
    Ok(())
}

fn version_from_row(row: &AnyRow) -> Result<ModelVersion, TrackingError> {
    Ok(ModelVersion {
        name: get(row, "name")?,
        version: get::<i64>(row, "version")?.to_string(),
        creation_timestamp: get(row, "creation_time")?,
        last_updated_timestamp: get(row, "last_updated_time")?,
        user_id: get(row, "user_id")?,
        current_stage: get(row, "stage")?,
        description: get(row, "description")?,
        source: get(row, "source")?,
        run_id: get(row, "run_id")?,
        status: get(row, "status")?,
        tags: Vec::new(),
        run_link: get(row, "run_link")?,
        aliases: Vec::new(),
        model_id: get(row, "model_id")?,
        storage_location: get(row, "storage_location")?,
    })
}

async fn upsert_model_tag(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    workspace: &str,
    name: &str,
    tag: &KeyValue,
) -> Result<(), TrackingError> {
    sqlx::query(
        "INSERT INTO registered_model_tags (workspace_id, name, key, value) \
         VALUES ($4, $1, $2, $3) \
         ON CONFLICT (workspace_id, name, key) DO UPDATE SET value = excluded.value",
    )
    .bind(name)
    .bind(&tag.key)
    .bind(&tag.value)
    .bind(workspace)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn upsert_version_tag(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    workspace: &str,
    name: &str,
    version: i64,
    tag: &KeyValue,
) -> Result<(), TrackingError> {
    sqlx::query(
        "INSERT INTO model_version_tags (workspace_id, name, version, key, value) \
         VALUES ($5, $1, $2, $3, $4) \
         ON CONFLICT (workspace_id, name, version, key) DO UPDATE SET value = excluded.value",
    )
    .bind(name)
    .bind(version)
    .bind(&tag.key)
    .bind(&tag.value)
    .bind(workspace)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
