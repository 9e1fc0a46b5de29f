//! Rows of the studies Optuna clients keep here (`compute::studies::optuna` gives them their
//! meaning). Every lookup is within one workspace.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{Db, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct OptunaStudyRow {
    pub id: i64,
    pub workspace: String,
    pub name: String,
    /// `["minimize", …]` as JSON.
    pub directions: String,
    /// Key → JSON text, as a JSON object of strings.
    pub user_attrs: String,
    pub system_attrs: String,
    /// Parameter name → the distribution JSON last declared for it.
    pub distributions: String,
    pub experiment_id: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OptunaTrialRow {
    pub id: i64,
    pub study_id: i64,
    pub number: i64,
    pub state: String,
    /// Everything else of the trial, as JSON.
    pub body: String,
    pub run_id: Option<String>,
}

const STUDY: &str = "s.id, s.workspace_id, s.name, s.directions, s.user_attrs, s.system_attrs, \
     s.distributions, s.experiment_id, s.created_at_ms";
const TRIAL: &str = "t.id, t.study_id, t.number, t.state, t.body, t.run_id";

fn study(r: &AnyRow) -> Result<OptunaStudyRow, StoreError> {
    Ok(OptunaStudyRow {
        id: r.try_get("id")?,
        workspace: r.try_get("workspace_id")?,
        name: r.try_get("name")?,
        directions: r.try_get("directions")?,
        user_attrs: r.try_get("user_attrs")?,
        system_attrs: r.try_get("system_attrs")?,
        distributions: r.try_get("distributions")?,
        experiment_id: r.try_get("experiment_id")?,
        created_at_ms: r.try_get("created_at_ms")?,
    })
}

fn trial(r: &AnyRow) -> Result<OptunaTrialRow, StoreError> {
    Ok(OptunaTrialRow {
        id: r.try_get("id")?,
        study_id: r.try_get("study_id")?,
        number: r.try_get("number")?,
        state: r.try_get("state")?,
        body: r.try_get("body")?,
        run_id: r.try_get("run_id")?,
    })
}

/// Which attribute map of a study to write.
#[derive(Debug, Clone, Copy)]
pub enum StudyColumn {
    UserAttrs,
    SystemAttrs,
    Distributions,
}

impl StudyColumn {
    fn name(self) -> &'static str {
        match self {
            StudyColumn::UserAttrs => "user_attrs",
            StudyColumn::SystemAttrs => "system_attrs",
            StudyColumn::Distributions => "distributions",
        }
    }
}

impl Db {
    /// Stores a new study with the next id; `Ok(None)` when the workspace has one of that name.
    pub async fn optuna_create_study(&self, s: &OptunaStudyRow) -> Result<Option<i64>, StoreError> {
        let mut tx = self.begin_write().await?;
        let id: i64 = sqlx::query(
            "UPDATE optuna_counters SET value = value + 1 WHERE name = 'study' RETURNING value",
        )
        .fetch_one(&mut *tx)
        .await?
        .try_get("value")?;
        let done = sqlx::query(
            "INSERT INTO optuna_studies (id, workspace_id, name, directions, user_attrs, \
             system_attrs, distributions, experiment_id, next_number, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9)",
        )
        .bind(id)
        .bind(&s.workspace)
        .bind(&s.name)
        .bind(&s.directions)
        .bind(&s.user_attrs)
        .bind(&s.system_attrs)
        .bind(&s.distributions)
        .bind(&s.experiment_id)
        .bind(s.created_at_ms)
        .execute(&mut *tx)
        .await;
        match done {
            Ok(_) => {
                tx.commit().await?;
                Ok(Some(id))
            }
            Err(e) if Db::is_unique_violation(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn optuna_study(
        &self,
        workspace: &str,
        id: i64,
    ) -> Result<Option<OptunaStudyRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {STUDY} FROM optuna_studies s WHERE s.id = $1 AND s.workspace_id = $2"
        ))
        .bind(id)
        .bind(workspace)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(study).transpose()
    }

    pub async fn optuna_study_by_name(
        &self,
        workspace: &str,
        name: &str,
    ) -> Result<Option<OptunaStudyRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {STUDY} FROM optuna_studies s WHERE s.name = $1 AND s.workspace_id = $2"
        ))
        .bind(name)
        .bind(workspace)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(study).transpose()
    }

    pub async fn optuna_studies(&self, workspace: &str) -> Result<Vec<OptunaStudyRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {STUDY} FROM optuna_studies s WHERE s.workspace_id = $1 ORDER BY s.id"
        ))
        .bind(workspace)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(study).collect()
    }

    /// Removes a study and its trials; false when the workspace has no such study.
    pub async fn optuna_delete_study(&self, workspace: &str, id: i64) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let found =
            sqlx::query("SELECT id FROM optuna_studies WHERE id = $1 AND workspace_id = $2")
                .bind(id)
                .bind(workspace)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
        if !found {
            return Ok(false);
        }
        sqlx::query("DELETE FROM optuna_trials WHERE study_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM optuna_studies WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Read-modify-write of one of a study's maps, in one transaction; false when the
    /// workspace has no such study.
    pub async fn optuna_update_study(
        &self,
        workspace: &str,
        id: i64,
        column: StudyColumn,
        change: impl FnOnce(&str) -> Result<String, StoreError>,
    ) -> Result<bool, StoreError> {
        let c = column.name();
        let mut tx = self.begin_write().await?;
        let Some(row) = sqlx::query(&format!(
            "SELECT {c} FROM optuna_studies WHERE id = $1 AND workspace_id = $2"
        ))
        .bind(id)
        .bind(workspace)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(false);
        };
        let new = change(&row.try_get::<String, _>(c)?)?;
        sqlx::query(&format!("UPDATE optuna_studies SET {c} = $1 WHERE id = $2"))
            .bind(new)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Stores a new trial with the next id and its study's next number, in one transaction
    /// that holds the study's row: trials become visible in the order of their ids.
    pub async fn optuna_create_trial(
        &self,
        study_id: i64,
        state: &str,
        body: &str,
        run_id: Option<&str>,
    ) -> Result<(i64, i64), StoreError> {
        let mut tx = self.begin_write().await?;
        let number: i64 = sqlx::query(
            "UPDATE optuna_studies SET next_number = next_number + 1 WHERE id = $1 \
             RETURNING next_number",
        )
        .bind(study_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get::<i64, _>("next_number")?
            - 1;
        let id: i64 = sqlx::query(
            "UPDATE optuna_counters SET value = value + 1 WHERE name = 'trial' RETURNING value",
        )
        .fetch_one(&mut *tx)
        .await?
        .try_get("value")?;
        sqlx::query(
            "INSERT INTO optuna_trials (id, study_id, number, state, body, run_id) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(study_id)
        .bind(number)
        .bind(state)
        .bind(body)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((id, number))
    }

    pub async fn optuna_set_trial_run(&self, id: i64, run_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE optuna_trials SET run_id = $1 WHERE id = $2")
            .bind(run_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A trial of the workspace's studies.
    pub async fn optuna_trial(
        &self,
        workspace: &str,
        id: i64,
    ) -> Result<Option<OptunaTrialRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TRIAL} FROM optuna_trials t JOIN optuna_studies s ON s.id = t.study_id \
             WHERE t.id = $1 AND s.workspace_id = $2"
        ))
        .bind(id)
        .bind(workspace)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(trial).transpose()
    }

    pub async fn optuna_trial_id(
        &self,
        study_id: i64,
        number: i64,
    ) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT id FROM optuna_trials WHERE study_id = $1 AND number = $2")
            .bind(study_id)
            .bind(number)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    /// A study's trials with an id above `greater_than` or among `included`, by number.
    pub async fn optuna_trials(
        &self,
        study_id: i64,
        greater_than: i64,
        included: &[i64],
    ) -> Result<Vec<OptunaTrialRow>, StoreError> {
        let mut sql =
            format!("SELECT {TRIAL} FROM optuna_trials t WHERE t.study_id = $1 AND (t.id > $2");
        for i in 0..included.len() {
            sql.push_str(&format!(" OR t.id = ${}", i + 3));
        }
        sql.push_str(") ORDER BY t.number");
        let mut q = sqlx::query(&sql).bind(study_id).bind(greater_than);
        for id in included {
            q = q.bind(*id);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(trial).collect()
    }

    /// Writes a trial's state and body while its state is one of `from`; false when it was
    /// not (another writer changed it first, or it finished).
    pub async fn optuna_update_trial(
        &self,
        id: i64,
        from: &str,
        state: &str,
        body: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE optuna_trials SET state = $1, body = $2 WHERE id = $3 AND state = $4",
        )
        .bind(state)
        .bind(body)
        .bind(id)
        .bind(from)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}
