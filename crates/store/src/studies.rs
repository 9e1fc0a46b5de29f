//! Studies and their trials. Rows carry the specification, configurations and intermediate
//! values as JSON text; `compute::studies` gives them their types. Trial numbers are the
//! primary key within a study, so two servers asking for the same number cannot both get it.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{Db, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct StudyRow {
    pub id: String,
    pub workspace: String,
    pub name: String,
    /// The specification as JSON.
    pub spec: String,
    pub state: String,
    pub message: Option<String>,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrialRow {
    pub study_id: String,
    pub number: i64,
    /// The configuration as a JSON object.
    pub params: String,
    pub state: String,
    pub value: Option<f64>,
    pub constraint_value: Option<f64>,
    /// `[[step, value], …]` as JSON.
    pub intermediate: String,
    pub rung: i64,
    /// Resource (steps, epochs) used over all its rungs.
    pub resource: i64,
    pub job_id: Option<String>,
    /// The job of its previous rung, whose checkpoint it resumes from.
    pub resume_from: Option<String>,
    pub message: Option<String>,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

/// Trials of a study per state.
pub type TrialCounts = Vec<(String, i64)>;

const STUDY_COLUMNS: &str =
    "id, workspace_id, name, spec, state, message, created_at_ms, finished_at_ms";
const TRIAL_COLUMNS: &str = "study_id, number, params, state, value, constraint_value, \
     intermediate, rung, resource, job_id, resume_from, message, started_at_ms, finished_at_ms";

fn study(r: &AnyRow) -> Result<StudyRow, StoreError> {
    Ok(StudyRow {
        id: r.try_get("id")?,
        workspace: r.try_get("workspace_id")?,
        name: r.try_get("name")?,
        spec: r.try_get("spec")?,
        state: r.try_get("state")?,
        message: r.try_get("message")?,
        created_at_ms: r.try_get("created_at_ms")?,
        finished_at_ms: r.try_get("finished_at_ms")?,
    })
}

fn trial(r: &AnyRow) -> Result<TrialRow, StoreError> {
    Ok(TrialRow {
        study_id: r.try_get("study_id")?,
        number: r.try_get("number")?,
        params: r.try_get("params")?,
        state: r.try_get("state")?,
        value: r.try_get("value")?,
        constraint_value: r.try_get("constraint_value")?,
        intermediate: r.try_get("intermediate")?,
        rung: r.try_get("rung")?,
        resource: r.try_get("resource")?,
        job_id: r.try_get("job_id")?,
        resume_from: r.try_get("resume_from")?,
        message: r.try_get("message")?,
        started_at_ms: r.try_get("started_at_ms")?,
        finished_at_ms: r.try_get("finished_at_ms")?,
    })
}

impl Db {
    /// Stores a new study; `Ok(false)` when its workspace already has one of that name.
    pub async fn insert_study(&self, s: &StudyRow) -> Result<bool, StoreError> {
        let done = sqlx::query(&format!(
            "INSERT INTO studies ({STUDY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&s.id)
        .bind(&s.workspace)
        .bind(&s.name)
        .bind(&s.spec)
        .bind(&s.state)
        .bind(&s.message)
        .bind(s.created_at_ms)
        .bind(s.finished_at_ms)
        .execute(&self.pool)
        .await;
        match done {
            Ok(_) => Ok(true),
            Err(e) if Db::is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get_study(
        &self,
        workspace: &str,
        name: &str,
    ) -> Result<Option<StudyRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {STUDY_COLUMNS} FROM studies WHERE workspace_id = $1 AND name = $2"
        ))
        .bind(workspace)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(study).transpose()
    }

    /// A workspace's studies, newest first.
    pub async fn list_studies(&self, workspace: &str) -> Result<Vec<StudyRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {STUDY_COLUMNS} FROM studies WHERE workspace_id = $1 \
             ORDER BY created_at_ms DESC, name"
        ))
        .bind(workspace)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(study).collect()
    }

    /// Every study in a state, in all workspaces (the controller's work list).
    pub async fn studies_in_state(&self, state: &str) -> Result<Vec<StudyRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {STUDY_COLUMNS} FROM studies WHERE state = $1 ORDER BY created_at_ms"
        ))
        .bind(state)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(study).collect()
    }

    /// Moves a study from `from` to `to`; false when it was no longer in `from`.
    pub async fn set_study_state(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
        message: Option<&str>,
        finished_at_ms: Option<i64>,
    ) -> Result<bool, StoreError> {
        let placeholders: Vec<String> = (0..from.len()).map(|i| format!("${}", i + 5)).collect();
        let sql = format!(
            "UPDATE studies SET state = $1, message = COALESCE($2, message), \
             finished_at_ms = $3 WHERE id = $4 AND state IN ({})",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql)
            .bind(to)
            .bind(message)
            .bind(finished_at_ms)
            .bind(id);
        for f in from {
            q = q.bind(*f);
        }
        Ok(q.execute(&self.pool).await?.rows_affected() > 0)
    }

    /// Every trial of a study, by number.
    pub async fn trials(&self, study_id: &str) -> Result<Vec<TrialRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TRIAL_COLUMNS} FROM study_trials WHERE study_id = $1 ORDER BY number"
        ))
        .bind(study_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(trial).collect()
    }

    /// Up to `limit` trials numbered above `after`, by number.
    pub async fn trials_page(
        &self,
        study_id: &str,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<TrialRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TRIAL_COLUMNS} FROM study_trials WHERE study_id = $1 AND number > $2 \
             ORDER BY number LIMIT $3"
        ))
        .bind(study_id)
        .bind(after.unwrap_or(-1))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(trial).collect()
    }

    pub async fn get_trial(
        &self,
        study_id: &str,
        number: i64,
    ) -> Result<Option<TrialRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TRIAL_COLUMNS} FROM study_trials WHERE study_id = $1 AND number = $2"
        ))
        .bind(study_id)
        .bind(number)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(trial).transpose()
    }

    /// The best finished trial: feasible ones (constraint at most 0, or none) first, then by
    /// value, lowest or highest; ties to the earliest.
    pub async fn best_trial(
        &self,
        study_id: &str,
        maximize: bool,
    ) -> Result<Option<TrialRow>, StoreError> {
        let order = if maximize { "DESC" } else { "ASC" };
        let row = sqlx::query(&format!(
            "SELECT {TRIAL_COLUMNS} FROM study_trials \
             WHERE study_id = $1 AND state = 'complete' AND value IS NOT NULL \
             ORDER BY CASE WHEN constraint_value > 0 THEN 1 ELSE 0 END, value {order}, number \
             LIMIT 1"
        ))
        .bind(study_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(trial).transpose()
    }

    pub async fn trial_counts(&self, study_id: &str) -> Result<TrialCounts, StoreError> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM study_trials WHERE study_id = $1 GROUP BY state",
        )
        .bind(study_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }

    /// The number the next trial takes.
    pub async fn next_trial_number(&self, study_id: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COALESCE(MAX(number) + 1, 0) AS n FROM study_trials WHERE study_id = $1",
        )
        .bind(study_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Stores a new trial; `Ok(false)` when its number is taken (another asker was first).
    pub async fn insert_trial(&self, t: &TrialRow) -> Result<bool, StoreError> {
        let done = sqlx::query(&format!(
            "INSERT INTO study_trials ({TRIAL_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ))
        .bind(&t.study_id)
        .bind(t.number)
        .bind(&t.params)
        .bind(&t.state)
        .bind(t.value)
        .bind(t.constraint_value)
        .bind(&t.intermediate)
        .bind(t.rung)
        .bind(t.resource)
        .bind(&t.job_id)
        .bind(&t.resume_from)
        .bind(&t.message)
        .bind(t.started_at_ms)
        .bind(t.finished_at_ms)
        .execute(&self.pool)
        .await;
        match done {
            Ok(_) => Ok(true),
            Err(e) if Db::is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes a trial's changing fields, only while it is in one of `from` (so a finished
    /// trial never changes); false when it was not.
    pub async fn update_trial(&self, t: &TrialRow, from: &[&str]) -> Result<bool, StoreError> {
        let placeholders: Vec<String> = (0..from.len()).map(|i| format!("${}", i + 13)).collect();
        let sql = format!(
            "UPDATE study_trials SET state = $1, value = $2, constraint_value = $3, \
             intermediate = $4, rung = $5, resource = $6, job_id = $7, resume_from = $8, \
             message = $9, finished_at_ms = $10 WHERE study_id = $11 AND number = $12 \
             AND state IN ({})",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql)
            .bind(&t.state)
            .bind(t.value)
            .bind(t.constraint_value)
            .bind(&t.intermediate)
            .bind(t.rung)
            .bind(t.resource)
            .bind(&t.job_id)
            .bind(&t.resume_from)
            .bind(&t.message)
            .bind(t.finished_at_ms)
            .bind(&t.study_id)
            .bind(t.number);
        for f in from {
            q = q.bind(*f);
        }
        Ok(q.execute(&self.pool).await?.rows_affected() > 0)
    }
}
