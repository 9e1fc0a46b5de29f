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
