//! Workspaces as the scheduler shares pools between them: each one's weight and quotas
//! (kept as JSON here; `compute::fair_share` gives it meaning).

use sqlx::Row;

use crate::{Db, StoreError};

/// A workspace's row.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceRow {
    pub id: String,
    pub name: String,
    pub weight: f64,
    /// JSON object of limits.
    pub quota: String,
    pub created_at_ms: i64,
}

/// What a workspace holds that removing it would lose: the `FROM` clause up to its
/// workspace condition, and what its rows are.
const CONTENT: &[(&str, &str)] = &[
    ("jobs WHERE", "jobs"),
    // Its own `Default` (made with it) counts only once it holds something.
    (
        "experiments e WHERE (e.name <> 'Default' \
         OR EXISTS (SELECT 1 FROM runs r WHERE r.experiment_id = e.id) \
         OR EXISTS (SELECT 1 FROM logged_models m WHERE m.experiment_id = e.id)) AND",
        "experiments",
    ),
    ("registered_models WHERE", "registered models"),
    ("dataset_versions WHERE", "dataset versions"),
    ("studies WHERE", "studies"),
    ("optuna_studies WHERE", "Optuna studies"),
];

/// How removing a workspace went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkspaceRemoval {
    /// Gone; with the blobs that were its content's alone.
    Removed(RemovedContent),
    NotFound,
    /// It still holds this (`"3 jobs"`), and no cascade was asked for.
    NotEmpty(String),
    /// A cascade cannot run now: this is still at work (`"2 jobs queued or running"`).
    Busy(String),
}

/// What a removed workspace kept in blobs: its experiments' artifact places, its jobs'
/// files, and the dataset shards no other workspace holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemovedContent {
    pub experiments: Vec<i64>,
    pub jobs: Vec<String>,
    pub orphan_shards: Vec<String>,
}

impl Db {
    /// Every workspace, by name.
    pub async fn workspaces(&self) -> Result<Vec<WorkspaceRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, weight, quota, created_at_ms FROM workspaces ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(WorkspaceRow {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    weight: row.try_get("weight")?,
                    quota: row.try_get("quota")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                })
            })
            .collect()
    }

    pub async fn workspace_exists(&self, id: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT id FROM workspaces WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Creates a workspace with the default policy; false when the id is taken.
    pub async fn create_workspace(
        &self,
        id: &str,
        name: &str,
        created_at_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO workspaces (id, name, created_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(name)
        .bind(created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Sets a workspace's weight and quotas; false when there is no such workspace.
    pub async fn set_workspace_policy(
        &self,
        id: &str,
        weight: f64,
        quota_json: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE workspaces SET weight = $1, quota = $2 WHERE id = $3")
            .bind(weight)
            .bind(quota_json)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes a workspace with its members, secrets and the tokens whose workspace it is.
    /// Without `cascade` it must be empty: `NotEmpty` names what it still holds. With
    /// `cascade` its content goes too — jobs (none may be queued or running: `Busy`),
    /// experiments with their runs, metrics and logged models, registered models,
    /// datasets — and `Removed` lists the blobs to forget (this is one transaction; blobs
    /// are the caller's to delete after it).
    pub async fn delete_workspace(
        &self,
        id: &str,
        cascade: bool,
    ) -> Result<WorkspaceRemoval, StoreError> {
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query("SELECT id FROM workspaces WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            return Ok(WorkspaceRemoval::NotFound);
        }
        if !cascade {
            for (table, what) in CONTENT {
                let row = sqlx::query(&format!(
                    "SELECT COUNT(*) AS n FROM {table} workspace_id = $1"
                ))
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
                let n: i64 = row.try_get("n")?;
                if n > 0 {
                    return Ok(WorkspaceRemoval::NotEmpty(format!("{n} {what}")));
                }
            }
        } else {
            let row = sqlx::query(
                "SELECT COUNT(*) AS n FROM jobs WHERE workspace_id = $1 \
                 AND state IN ('queued', 'running')",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            let n: i64 = row.try_get("n")?;
            if n > 0 {
                return Ok(WorkspaceRemoval::Busy(format!(
                    "{n} jobs queued or running"
                )));
            }
        }
        let mut removed = RemovedContent::default();
        for row in sqlx::query("SELECT id FROM experiments WHERE workspace_id = $1")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?
        {
            removed.experiments.push(row.try_get("id")?);
        }
        for row in sqlx::query("SELECT id FROM jobs WHERE workspace_id = $1")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?
        {
            removed.jobs.push(row.try_get("id")?);
        }
        // Shards no other workspace holds (nor names in a version from before shards were
        // recorded) are this workspace's alone.
        for row in sqlx::query(
            "SELECT sha256 FROM dataset_shards WHERE workspace_id = $1 AND sha256 NOT IN \
             (SELECT sha256 FROM dataset_shards WHERE workspace_id <> $1)",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?
        {
            let sha: String = row.try_get("sha256")?;
            let named_elsewhere = sqlx::query(
                "SELECT version FROM dataset_versions WHERE workspace_id <> $1 \
                 AND manifest LIKE $2",
            )
            .bind(id)
            .bind(format!("%\"{sha}\"%"))
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
            if !named_elsewhere {
                removed.orphan_shards.push(sha);
            }
        }
        // Children before parents, each table once: by what it hangs from.
        const RUNS: &str = "SELECT r.run_id FROM runs r JOIN experiments e \
             ON e.id = r.experiment_id WHERE e.workspace_id = $1";
        const EXPERIMENTS: &str = "SELECT id FROM experiments WHERE workspace_id = $1";
        let series = format!("SELECT id FROM metric_series WHERE run_id IN ({RUNS})");
        let models =
            format!("SELECT model_id FROM logged_models WHERE experiment_id IN ({EXPERIMENTS})");
        let jobs = "SELECT id FROM jobs WHERE workspace_id = $1";
        let by = |tables: &[&str], column: &str, within: &str| -> Vec<String> {
            tables
                .iter()
                .map(|t| format!("DELETE FROM {t} WHERE {column} IN ({within})"))
                .collect()
        };
        let mut statements = by(&["metric_points", "metric_rollups"], "series_id", &series);
        statements.extend(by(
            &[
                "metric_series",
                "run_params",
                "run_tags",
                "run_inputs",
                "run_models",
            ],
            "run_id",
            RUNS,
        ));
        statements.extend(by(
            &[
                "logged_model_metric_points",
                "logged_model_params",
                "logged_model_tags",
            ],
            "model_id",
            &models,
        ));
        statements.extend(by(
            &["logged_models", "datasets", "runs", "experiment_tags"],
            "experiment_id",
            EXPERIMENTS,
        ));
        statements.extend(by(&["job_labels"], "job_id", jobs));
        statements.extend(by(
            &["optuna_trials"],
            "study_id",
            "SELECT id FROM optuna_studies WHERE workspace_id = $1",
        ));
        statements.extend(by(
            &["study_trials"],
            "study_id",
            "SELECT id FROM studies WHERE workspace_id = $1",
        ));
        statements.extend(
            [
                "experiments",
                "model_version_tags",
                "model_versions",
                "registered_model_aliases",
                "registered_model_tags",
                "registered_models",
                "dataset_versions",
                "dataset_shards",
                "studies",
                "optuna_studies",
                "jobs",
                "workspace_secrets",
                "api_tokens",
                "workspace_members",
            ]
            .map(|t| format!("DELETE FROM {t} WHERE workspace_id = $1")),
        );
        statements.push("DELETE FROM workspaces WHERE id = $1".into());
        for sql in &statements {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        crate::access_revision::bump(&mut tx).await?;
        tx.commit().await?;
        Ok(WorkspaceRemoval::Removed(removed))
    }

    /// The ids of a workspace's jobs (for what its logs keep in the store).
    pub async fn workspace_job_ids(&self, workspace: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM jobs WHERE workspace_id = $1")
            .bind(workspace)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// How many of a workspace's jobs wait in the queue (for its queued-jobs quota).
    pub async fn count_queued_jobs(&self, workspace: &str) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM jobs WHERE workspace_id = $1 AND state = 'queued'",
        )
        .bind(workspace)
        .fetch_one(&self.pool)
        .await?;
        let n: i64 = row.try_get("n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Shows why a queued job waits (`None` clears it); a job no longer queued is left
    /// alone.
    pub async fn set_waiting_message(
        &self,
        job_id: &str,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET message = $1 WHERE id = $2 AND state = 'queued'")
            .bind(message)
            .bind(job_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
