//! Experiments: named groups of runs with an artifact location (spec §3).

use sqlx::any::AnyRow;

use crate::entities::{Experiment, KeyValue, Lifecycle, Page, ViewType};
use crate::error::{invalid, not_found};
use crate::filter::{self, Entity, Field, Grammar};
use crate::rows::{get, key_values};
use crate::validate;
use crate::{Tracking, TrackingError};
use trainyard_core::time::now_ms;

pub struct NewExperiment {
    pub name: String,
    pub artifact_location: Option<String>,
    pub tags: Vec<KeyValue>,
}

const GRAMMAR: Grammar = Grammar {
    entities: &[Entity::Attribute, Entity::Tag],
    string_attributes: &["name"],
    numeric_attributes: &["experiment_id", "creation_time", "last_update_time"],
    list_attributes: &[],
    aliases: &[],
};

/// Most experiments one search page returns.
pub const MAX_EXPERIMENTS_PAGE: i64 = 50_000;

impl Tracking {
    pub async fn create_experiment(&self, new: NewExperiment) -> Result<String, TrackingError> {
        let name = new.name.trim();
        if name.is_empty() {
            return Err(invalid(
                "Invalid experiment name: '' (it must not be empty)",
            ));
        }
        validate::length("name", name, validate::MAX_EXPERIMENT_NAME_LEN)?;
        for tag in &new.tags {
            validate::key("key", &tag.key)?;
            validate::length("value", &tag.value, validate::MAX_EXPERIMENT_TAG_VALUE_LEN)?;
        }
        // On PostgreSQL two creates can pick the same next id (or name) at once: the
        // loser's insert fails on the unique constraint, and it tries again.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_create_experiment(name, &new).await {
                Err(TrackingError::Store(trainyard_store::StoreError::Database(e)))
                    if trainyard_store::Db::is_unique_violation(&e) && attempt < 5 => {}
                other => return other,
            }
        }
    }

    async fn try_create_experiment(
        &self,
        name: &str,
        new: &NewExperiment,
    ) -> Result<String, TrackingError> {
        let now = now_ms();
        let mut tx = self.db.begin_write().await?;
        let exists =
            sqlx::query("SELECT id FROM experiments WHERE name = $1 AND workspace_id = $2")
                .bind(name)
                .bind(self.workspace())
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_some() {
            return Err(TrackingError::AlreadyExists(format!(
                "Experiment '{name}' already exists."
            )));
        }
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) + 1 AS next FROM experiments")
            .fetch_one(&mut *tx)
            .await?;
        let id: i64 = get(&row, "next")?;
        let location = match new.artifact_location.as_deref().filter(|l| !l.is_empty()) {
            // Outside `default`, artifacts this server keeps are kept in the experiment's
            // own place, so no workspace can name a place that another's data is in.
            Some(given)
                if crate::artifacts::artifact_path(given).is_some()
                    && self.workspace() != trainyard_core::DEFAULT_WORKSPACE =>
            {
                return Err(invalid(format!(
                    "'artifact_location' {given}: in a workspace other than default, an \
                     experiment's artifacts kept by this server are in its own place; leave \
                     the location out"
                )))
            }
            Some(given) => resolve_artifact_location(given)?,
            None => format!("{}{id}", crate::ARTIFACTS_PREFIX),
        };
        sqlx::query(
            "INSERT INTO experiments (id, name, artifact_location, lifecycle_stage, \
             creation_time, last_update_time, workspace_id) \
             VALUES ($1, $2, $3, 'active', $4, $4, $5)",
        )
        .bind(id)
        .bind(name)
        .bind(&location)
        .bind(now)
        .bind(self.workspace())
        .execute(&mut *tx)
        .await?;
        for tag in &new.tags {
            upsert_tag(&mut tx, id, tag).await?;
        }
        tx.commit().await?;
        Ok(id.to_string())
    }

    pub async fn get_experiment(&self, id: &str) -> Result<Experiment, TrackingError> {
        let id = self.experiment_key(id).await?;
        let row = sqlx::query(
            "SELECT * FROM experiments WHERE id = $1 AND (workspace_id = $2 OR $3 = 1)",
        )
        .bind(id)
        .bind(self.workspace())
        .bind(self.every_workspace())
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| not_found(format!("No Experiment with id={id} exists")))?;
        self.experiment_from_row(&row).await
    }

    pub async fn get_experiment_by_name(&self, name: &str) -> Result<Experiment, TrackingError> {
        if name.contains('\0') {
            return Err(invalid("Experiment names cannot contain NUL bytes"));
        }
        let row = sqlx::query("SELECT * FROM experiments WHERE name = $1 AND workspace_id = $2")
            .bind(name)
            .bind(self.workspace())
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| not_found(format!("Could not find experiment with name '{name}'")))?;
        self.experiment_from_row(&row).await
    }

    /// An experiment id as a caller gives it, as stored: MLflow's experiment `0` (where its
    /// clients log when none is chosen) is, outside `default`, the workspace's own
    /// `Default` experiment (made by the first write that names it: [`Self::make_default`]).
    pub(crate) async fn experiment_key(&self, id: &str) -> Result<i64, TrackingError> {
        let key = validate::experiment_id(id)?;
        if !self.maps_zero(key) {
            return Ok(key);
        }
        match self.get_experiment_by_name(DEFAULT_EXPERIMENT).await {
            Ok(own) => validate::experiment_id(&own.experiment_id),
            Err(TrackingError::NotFound(_)) => {
                Err(not_found(format!("No Experiment with id={id} exists")))
            }
            Err(e) => Err(e),
        }
    }

    /// Makes the workspace's own `Default` when a write names experiment `0` outside
    /// `default` and it is not there yet (reads never make it).
    pub(crate) async fn make_default(&self, id: &str) -> Result<(), TrackingError> {
        if validate::experiment_id(id).is_ok_and(|key| self.maps_zero(key)) {
            self.experiment_for_name(DEFAULT_EXPERIMENT).await?;
        }
        Ok(())
    }

    /// Makes this workspace's own `Default` (MLflow's experiment `0` in it).
    pub async fn make_default_experiment(&self) -> Result<(), TrackingError> {
        self.make_default("0").await
    }

    fn maps_zero(&self, key: i64) -> bool {
        key == 0
            && self.workspace.is_some()
            && self.workspace() != trainyard_core::DEFAULT_WORKSPACE
    }

    /// Of the experiment ids a search names (as callers give them), those of this
    /// workspace's experiments, stored form, in the order given; others are left out as
    /// MLflow leaves out ids that do not exist.
    pub(crate) async fn own_experiments(&self, ids: &[String]) -> Result<Vec<i64>, TrackingError> {
        let mut keys = Vec::with_capacity(ids.len());
        for id in ids {
            match self.experiment_key(id).await {
                Ok(key) => keys.push(key),
                // This workspace's `Default` that nothing made yet holds nothing.
                Err(TrackingError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let mut own = std::collections::HashSet::new();
        for chunk in keys.chunks(500) {
            let sql = format!(
                "SELECT id FROM experiments WHERE (workspace_id = $1 OR $2 = 1) AND id IN ({})",
                crate::rows::placeholders(3, chunk.len())
            );
            let mut q = sqlx::query(&sql)
                .bind(self.workspace())
                .bind(self.every_workspace());
            for k in chunk {
                q = q.bind(*k);
            }
            for row in q.fetch_all(self.db.pool()).await? {
                own.insert(get::<i64>(&row, "id")?);
            }
        }
        keys.retain(|k| own.contains(k));
        keys.dedup();
        Ok(keys)
    }

    /// The id of the experiment called `name`, created when missing (jobs name theirs).
    pub async fn experiment_for_name(&self, name: &str) -> Result<String, TrackingError> {
        match self.get_experiment_by_name(name).await {
            Ok(e) if e.lifecycle_stage == Lifecycle::Deleted => Err(invalid(format!(
                "Experiment '{name}' is deleted; restore it or choose another name"
            ))),
            Ok(e) => Ok(e.experiment_id),
            Err(TrackingError::NotFound(_)) => {
                match self
                    .create_experiment(NewExperiment {
                        name: name.to_string(),
                        artifact_location: None,
                        tags: Vec::new(),
                    })
                    .await
                {
                    // Two jobs naming a new experiment at once: the loser reads the winner's.
                    Err(TrackingError::AlreadyExists(_)) => {
                        Ok(self.get_experiment_by_name(name).await?.experiment_id)
                    }
                    other => other,
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn experiment_from_row(&self, row: &AnyRow) -> Result<Experiment, TrackingError> {
        let id: i64 = get(row, "id")?;
        let tags = sqlx::query(
            "SELECT key, value FROM experiment_tags WHERE experiment_id = $1 ORDER BY key",
        )
        .bind(id)
        .fetch_all(self.db.pool())
        .await?;
        Ok(Experiment {
            experiment_id: id.to_string(),
            name: get(row, "name")?,
            artifact_location: get(row, "artifact_location")?,
            lifecycle_stage: Lifecycle::parse(&get::<String>(row, "lifecycle_stage")?),
            creation_time: get(row, "creation_time")?,
            last_update_time: get(row, "last_update_time")?,
            tags: key_values(&tags)?,
        })
    }

    pub async fn search_experiments(
        &self,
        view: ViewType,
        filter: &str,
        order_by: &[String],
        max_results: i64,
        page_token: Option<&str>,
    ) -> Result<Page<Experiment>, TrackingError> {
        validate::max_results(max_results, MAX_EXPERIMENTS_PAGE)?;
        let clauses = filter::parse_filter(&GRAMMAR, filter)?;
        let order = filter::parse_order_by(&GRAMMAR, order_by)?;
        if order.iter().any(|o| o.entity != Entity::Attribute) {
            return Err(invalid("Experiments can only be ordered by attributes"));
        }
        let offset = filter::decode_page_token(page_token)?;
        let rows = sqlx::query("SELECT * FROM experiments WHERE workspace_id = $1")
            .bind(self.workspace())
            .fetch_all(self.db.pool())
            .await?;
        let mut all = Vec::with_capacity(rows.len());
        for row in &rows {
            let e = self.experiment_from_row(row).await?;
            if view.admits(e.lifecycle_stage) {
                all.push(e);
            }
        }
        fn field<'a>(e: &'a Experiment, entity: Entity, key: &str) -> Option<Field<'a>> {
            match (entity, key) {
                (Entity::Attribute, "name") => Some(Field::Str(&e.name)),
                (Entity::Attribute, "experiment_id") => {
                    Some(Field::Num(e.experiment_id.parse().unwrap_or(0.0)))
                }
                (Entity::Attribute, "creation_time") => Some(Field::Num(e.creation_time as f64)),
                (Entity::Attribute, "last_update_time") => {
                    Some(Field::Num(e.last_update_time as f64))
                }
                (Entity::Tag, k) => e
                    .tags
                    .iter()
                    .find(|t| t.key == k)
                    .map(|t| Field::Str(&t.value)),
                _ => None,
            }
        }
        all.retain(|e| {
            clauses
                .iter()
                .all(|c| c.matches(field(e, c.entity, &c.key)))
        });
        all.sort_by(|a, b| {
            let ord = filter::order_by(a, b, &order, field);
            if ord.is_ne() {
                return ord;
            }
            if order.is_empty() {
                let ord = b.creation_time.cmp(&a.creation_time);
                if ord.is_ne() {
                    return ord;
                }
            }
            let ida: i64 = a.experiment_id.parse().unwrap_or(0);
            let idb: i64 = b.experiment_id.parse().unwrap_or(0);
            ida.cmp(&idb)
        });
        Ok(paginate(all, offset, max_results as usize))
    }

    pub async fn rename_experiment(&self, id: &str, new_name: &str) -> Result<(), TrackingError> {
        let e = self.get_experiment(id).await?;
        if e.lifecycle_stage == Lifecycle::Deleted {
            return Err(invalid(format!(
                "Cannot rename a non-active experiment {id}: it is deleted."
            )));
        }
        let new_name = new_name.trim();
        if new_name.is_empty() {
            return Err(invalid(
                "Invalid experiment name: '' (it must not be empty)",
            ));
        }
        validate::length("new_name", new_name, validate::MAX_EXPERIMENT_NAME_LEN)?;
        let mut tx = self.db.begin_write().await?;
        let key = key_of(&e)?;
        let taken = sqlx::query(
            "SELECT id FROM experiments WHERE name = $1 AND id != $2 AND workspace_id = $3",
        )
        .bind(new_name)
        .bind(key)
        .bind(self.workspace())
        .fetch_optional(&mut *tx)
        .await?;
        if taken.is_some() {
            return Err(TrackingError::AlreadyExists(format!(
                "Experiment '{new_name}' already exists."
            )));
        }
        sqlx::query("UPDATE experiments SET name = $1, last_update_time = $2 WHERE id = $3")
            .bind(new_name)
            .bind(now_ms())
            .bind(key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Soft-deletes (or restores) an experiment and all its runs.
    pub async fn set_experiment_lifecycle(
        &self,
        id: &str,
        to: Lifecycle,
    ) -> Result<(), TrackingError> {
        let e = self.get_experiment(id).await?;
        if e.lifecycle_stage == to {
            return Err(not_found(format!(
                "Experiment {id} is already {}; only a {} experiment can be {}",
                to.as_str(),
                if to == Lifecycle::Deleted {
                    "active"
                } else {
                    "deleted"
                },
                if to == Lifecycle::Deleted {
                    "deleted"
                } else {
                    "restored"
                },
            )));
        }
        let id = key_of(&e)?;
        let now = now_ms();
        let deleted_time = (to == Lifecycle::Deleted).then_some(now);
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "UPDATE experiments SET lifecycle_stage = $1, last_update_time = $2 WHERE id = $3",
        )
        .bind(to.as_str())
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE runs SET lifecycle_stage = $1, deleted_time = $2 WHERE experiment_id = $3",
        )
        .bind(to.as_str())
        .bind(deleted_time)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.forget_active_runs();
        Ok(())
    }

    pub async fn set_experiment_tag(&self, id: &str, tag: KeyValue) -> Result<(), TrackingError> {
        let e = self.get_experiment(id).await?;
        if e.lifecycle_stage != Lifecycle::Active {
            return Err(invalid(format!(
                "The experiment {id} must be in the 'active' state. Current state is deleted."
            )));
        }
        validate::key("key", &tag.key)?;
        validate::length("value", &tag.value, validate::MAX_EXPERIMENT_TAG_VALUE_LEN)?;
        let mut tx = self.db.begin_write().await?;
        upsert_tag(&mut tx, key_of(&e)?, &tag).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_experiment_tag(&self, id: &str, key: &str) -> Result<(), TrackingError> {
        let e = self.get_experiment(id).await?;
        if e.lifecycle_stage != Lifecycle::Active {
            return Err(invalid(format!(
                "The experiment {id} must be in the 'active' state. Current state is deleted."
            )));
        }
        sqlx::query("DELETE FROM experiment_tags WHERE experiment_id = $1 AND key = $2")
            .bind(key_of(&e)?)
            .bind(key)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }
}

/// What MLflow calls the experiment its clients log into when none is chosen.
pub const DEFAULT_EXPERIMENT: &str = "Default";

/// The stored id of an experiment read back.
pub(crate) fn key_of(e: &Experiment) -> Result<i64, TrackingError> {
    validate::experiment_id(&e.experiment_id)
}

async fn upsert_tag(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: i64,
    tag: &KeyValue,
) -> Result<(), TrackingError> {
    sqlx::query(
        "INSERT INTO experiment_tags (experiment_id, key, value) VALUES ($1, $2, $3) \
         ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value",
    )
    .bind(id)
    .bind(&tag.key)
    .bind(&tag.value)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One page of an already ordered list; the token says where the next page starts.
pub(crate) fn paginate<T>(mut all: Vec<T>, offset: usize, max: usize) -> Page<T> {
    let total = all.len();
    let start = offset.min(total);
    let end = start.saturating_add(max).min(total);
    let items: Vec<T> = all.drain(start..end).collect();
    Page {
        items,
        next_page_token: (end < total).then(|| filter::encode_page_token(end)),
    }
}

/// An experiment's `artifact_location` as MLflow takes it: never a `runs:/` URI, a host it
/// would connect to, fragments or parameters; a relative local path is made absolute against
/// the server's working directory (`./` dropped), a relative `file:` path likewise.
fn resolve_artifact_location(given: &str) -> Result<String, TrackingError> {
    if given.starts_with("runs:") {
        return Err(invalid(format!(
            "Artifact location cannot be a runs:/ URI. Given: '{given}'"
        )));
    }
    if given.contains('#') || given.contains(';') {
        return Err(invalid(
            "'artifact_location' URL can't include fragments or params.",
        ));
    }
    // `mlflow-artifacts:/<number>/…` is where experiment <number> keeps its artifacts by
    // default; one of another workspace could be reached through such a location.
    if let Some(path) = crate::artifacts::artifact_path(given) {
        let first = path.split('/').next().unwrap_or_default();
        if first == "_ws" || (!first.is_empty() && first.bytes().all(|b| b.is_ascii_digit())) {
            return Err(invalid(format!(
                "'artifact_location' {given} is kept for an experiment's own artifacts; \
                 choose a location whose first segment is not a number"
            )));
        }
    }
    crate::sources::check_not_host_addressed(given)
        .map_err(|e| invalid(e.to_string().replacen("'source'", "'artifact_location'", 1)))?;
    let parts = crate::sources::split(given);
    let local = match parts.scheme.as_str() {
        "" => Some(("", given)),
        "file" if parts.netloc.is_empty() && !given.starts_with("file:/") => {
            Some(("file:", &given["file:".len()..]))
        }
        _ => None,
    };
    let Some((scheme, path)) = local else {
        return Ok(given.to_string());
    };
    if path.starts_with('/') {
        return Ok(given.to_string());
    }
    let cwd = std::env::current_dir().map_err(|e| {
        TrackingError::Store(trainyard_store::StoreError::Blob(
            object_store::Error::Generic {
                store: "local",
                source: Box::new(e),
            },
        ))
    })?;
    let mut out = cwd.to_string_lossy().trim_end_matches('/').to_string();
    for segment in path.split('/') {
        if !segment.is_empty() && segment != "." {
            out.push('/');
            out.push_str(segment);
        }
    }
    Ok(format!("{scheme}{out}"))
}

#[cfg(test)]
mod location_tests {
    use super::resolve_artifact_location;

    #[test]
    fn relative_locations_become_absolute_like_mlflow_makes_them() {
        let cwd = std::env::current_dir().unwrap();
        let cwd = cwd.to_string_lossy();
        assert_eq!(
            resolve_artifact_location("rel/path").unwrap(),
            format!("{cwd}/rel/path")
        );
        assert_eq!(
            resolve_artifact_location("./rel2").unwrap(),
            format!("{cwd}/rel2")
        );
        assert_eq!(resolve_artifact_location("/abs/p").unwrap(), "/abs/p");
        assert_eq!(resolve_artifact_location("s3://b/x").unwrap(), "s3://b/x");
        assert_eq!(
            resolve_artifact_location("mlflow-artifacts:/custom").unwrap(),
            "mlflow-artifacts:/custom"
        );
        assert!(resolve_artifact_location("runs:/abc/x").is_err());
        assert!(resolve_artifact_location("http://host/x").is_err());
    }
}
