//! Job rows. Every state change is one conditional UPDATE (`WHERE state = …`), so two
//! writers can never both move a job, and every write starts by taking SQLite's write lock.

use std::collections::BTreeMap;

use sqlx::any::AnyRow;
use sqlx::Row;
use trainyard_core::{ExitReason, Job, JobState, Resources};

use crate::{Db, StoreError};

/// Listing criteria for `GET /api/v1/jobs`: newest first, `cursor` is the last id seen.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub label: Option<(String, String)>,
    pub cursor: Option<String>,
    pub limit: u32,
}

/// How an attempt ended, as recorded on the job.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub state: JobState,
    pub exit_code: Option<i32>,
    pub exit_reason: ExitReason,
    pub message: Option<String>,
    pub finished_at_ms: i64,
}

const COLUMNS: &str = "id, workspace_id, name, state, command, env, working_dir, cpus, memory_mb, \
    gpus, priority, max_retries, timeout_s, labels, attempt, exit_code, exit_reason, message, \
    host, gpu_ids, created_at_ms, started_at_ms, finished_at_ms, tracking, task, pool, engine_id, \
    workers, secrets";

impl Db {
    /// Stores a new job; once this returns the job is durable and may be acknowledged.
    pub async fn insert_job(&self, job: &Job) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO jobs (id, workspace_id, name, state, command, env, working_dir, cpus, \
             memory_mb, gpus, priority, max_retries, timeout_s, labels, attempt, exit_code, \
             exit_reason, message, host, gpu_ids, created_at_ms, started_at_ms, finished_at_ms, \
             tracking, task, pool, engine_id, workers, secrets) VALUES ($1, $2, $3, $4, $5, $6, \
             $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, \
             $24, $25, $26, $27, $28, $29)",
        )
        .bind(&job.id)
        .bind(&job.workspace)
        .bind(&job.name)
        .bind(job.state.as_str())
        .bind(to_json(&job.command))
        .bind(to_json(&job.env))
        .bind(job.working_dir.clone())
        .bind(job.resources.cpus)
        .bind(job.resources.memory_mb.map(|m| m as i64))
        .bind(job.resources.gpus as i64)
        .bind(job.priority as i64)
        .bind(job.max_retries as i64)
        .bind(job.timeout_s.map(|t| t as i64))
        .bind(to_json(&job.labels))
        .bind(job.attempt as i64)
        .bind(job.exit_code.map(|c| c as i64))
        .bind(job.exit_reason.map(|r| r.as_str()))
        .bind(job.message.clone())
        .bind(job.host.clone())
        .bind(to_json(&job.gpus))
        .bind(job.created_at_ms)
        .bind(job.started_at_ms)
        .bind(job.finished_at_ms)
        .bind(to_json(&job.tracking))
        .bind(job.task.as_ref().map(to_json))
        .bind(job.pool.clone())
        .bind(job.engine_id.clone())
        .bind(i64::from(job.resources.workers))
        .bind(to_json(&job.secrets))
        .execute(&mut *tx)
        .await?;
        for (key, value) in &job.labels {
            sqlx::query("INSERT INTO job_labels (job_id, key, value) VALUES ($1, $2, $3)")
                .bind(&job.id)
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_job(&self, workspace: &str, id: &str) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE workspace_id = $1 AND id = $2"
        ))
        .bind(workspace)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// One page of jobs, newest first.
    pub async fn list_jobs(
        &self,
        workspace: &str,
        filter: &JobFilter,
    ) -> Result<Vec<Job>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM jobs WHERE workspace_id = $1");
        let mut n = 1;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if filter.state.is_some() {
            sql += &format!(" AND state = {}", next());
        }
        if filter.label.is_some() {
            let (k, v) = (next(), next());
            sql += &format!(
                " AND EXISTS (SELECT 1 FROM job_labels l WHERE l.job_id = jobs.id AND l.key = {k} AND l.value = {v})"
            );
        }
        if filter.cursor.is_some() {
            sql += &format!(" AND id < {}", next());
        }
        sql += &format!(" ORDER BY id DESC LIMIT {}", next());
        let mut query = sqlx::query(&sql).bind(workspace);
        if let Some(state) = filter.state {
            query = query.bind(state.as_str());
        }
        if let Some((k, v)) = &filter.label {
            query = query.bind(k.clone()).bind(v.clone());
        }
        if let Some(cursor) = &filter.cursor {
            query = query.bind(cursor.clone());
        }
        query = query.bind(filter.limit as i64);
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Every job in `state`, across workspaces, oldest first (for the scheduler's start-up).
    pub async fn jobs_in_state(&self, state: JobState) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE state = $1 ORDER BY id"
        ))
        .bind(state.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// How many jobs are in each state (for `/metrics`).
    pub async fn count_jobs_by_state(&self) -> Result<Vec<(JobState, i64)>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::new();
        for row in rows {
            let state: String = row.try_get("state")?;
            let n: i64 = row.try_get("n")?;
            if let Some(state) = JobState::parse(&state) {
                out.push((state, n));
            }
        }
        Ok(out)
    }

    /// `queued → running` for a new attempt; false when the job was no longer queued, or
    /// when `fence` no longer holds the scheduler lease (another server leads now).
    /// Idempotent: a retry of a write whose commit succeeded but whose answer was lost
    /// (same attempt, same host) succeeds again instead of orphaning the job.
    pub async fn mark_running(
        &self,
        id: &str,
        attempt: u32,
        host: &str,
        gpus: &[u32],
        started_at_ms: i64,
        fence: &crate::Fence,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE jobs SET state = 'running', attempt = $1, host = $2, gpu_ids = $3, \
             started_at_ms = $4, finished_at_ms = NULL, exit_code = NULL, exit_reason = NULL, \
             message = NULL, engine_id = NULL \
             WHERE id = $5 AND (state = 'queued' \
                   OR (state = 'running' AND attempt = $1 AND host = $2)) \
             AND EXISTS (SELECT 1 FROM scheduler_lease \
                         WHERE name = 'scheduler' AND holder = $6 AND epoch = $7)",
        )
        .bind(attempt as i64)
        .bind(host)
        .bind(serde_json::to_string(gpus).unwrap_or_else(|_| "[]".into()))
        .bind(started_at_ms)
        .bind(id)
        .bind(&fence.holder)
        .bind(fence.epoch)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            follow_job_run(&mut tx, id, "RUNNING", None).await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Asks the scheduling server to cancel job `id` (this server does not schedule);
    /// false when the job has already ended.
    pub async fn request_cancel(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET cancel_requested_at_ms = $1 \
             WHERE id = $2 AND state IN ('queued', 'running') AND cancel_requested_at_ms IS NULL",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Jobs not yet ended whose cancel another server asked for.
    pub async fn cancel_requests(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM jobs WHERE cancel_requested_at_ms IS NOT NULL \
             AND state IN ('queued', 'running')",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Queued jobs created at or after `since_ms` (those other servers took in), oldest first.
    pub async fn queued_since(&self, since_ms: i64) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE state = 'queued' AND created_at_ms >= $1 ORDER BY id"
        ))
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Records what the pool's engine calls attempt `attempt` of a running job (and, with
    /// `note`, what the engine says of it: "PENDING (Resources)"). False when the job no
    /// longer runs that attempt. The engine id is written before the attempt counts as
    /// started, so a restarted server can find the engine's job again.
    pub async fn record_engine_job(
        &self,
        id: &str,
        attempt: u32,
        engine_id: &str,
        note: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET engine_id = $1, message = COALESCE($2, message) \
             WHERE id = $3 AND state = 'running' AND attempt = $4",
        )
        .bind(engine_id)
        .bind(note)
        .bind(id)
        .bind(attempt as i64)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records how an attempt ended and moves the job to a terminal state; only from `from`.
    pub async fn finish_job(
        &self,
        id: &str,
        from: JobState,
        outcome: &Outcome,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE jobs SET state = $1, exit_code = $2, exit_reason = $3, message = $4, \
             finished_at_ms = $5 WHERE id = $6 AND state = $7",
        )
        .bind(outcome.state.as_str())
        .bind(outcome.exit_code.map(|c| c as i64))
        .bind(outcome.exit_reason.as_str())
        .bind(outcome.message.clone())
        .bind(outcome.finished_at_ms)
        .bind(id)
        .bind(from.as_str())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            let status = match outcome.state {
                JobState::Succeeded => "FINISHED",
                JobState::Cancelled => "KILLED",
                _ => "FAILED",
            };
            follow_job_run(&mut tx, id, status, Some(outcome.finished_at_ms)).await?;
            revoke_job_tokens(&mut tx, id).await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// `running → queued` after a failed attempt that has retries left; the last outcome
    /// stays visible in `exit_code`, `exit_reason` and `message` until the next start.
    pub async fn requeue_job(&self, id: &str, outcome: &Outcome) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'queued', exit_code = $1, exit_reason = $2, message = $3, \
             finished_at_ms = $4 WHERE id = $5 AND state = 'running'",
        )
        .bind(outcome.exit_code.map(|c| c as i64))
        .bind(outcome.exit_reason.as_str())
        .bind(outcome.message.clone())
        .bind(outcome.finished_at_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            // The next attempt gets a token of its own.
            let mut tx = self.begin_write().await?;
            revoke_job_tokens(&mut tx, id).await?;
            tx.commit().await?;
        }
        Ok(done.rows_affected() == 1)
    }
}

/// Tokens handed to a job's attempts (named `job:<id>`) end with the attempt.
async fn revoke_job_tokens(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: &str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM api_tokens WHERE role = 'job' AND name = $1")
        .bind(format!("job:{id}"))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A job's run follows its state (the run of job `id` has run id `id`). The job's end
/// is the authority on how the run ended, even when its script ended the run itself.
async fn follow_job_run(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: &str,
    status: &str,
    end_time: Option<i64>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE runs SET status = $1, \
         end_time = CASE WHEN $1 = 'RUNNING' THEN NULL ELSE COALESCE($2, end_time) END \
         WHERE run_id = $3 AND job_id = $3",
    )
    .bind(status)
    .bind(end_time)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn job_from_row(row: &AnyRow) -> Result<Job, StoreError> {
    let id: String = row.try_get("id")?;
    let corrupt = |field: &str, e: &dyn std::fmt::Display| {
        StoreError::corrupt(format!("job {id}"), format!("{field}: {e}"))
    };
    let state: String = row.try_get("state")?;
    let state = JobState::parse(&state).ok_or_else(|| corrupt("state", &state))?;
    let exit_reason: Option<String> = row.try_get("exit_reason")?;
    let exit_reason = match exit_reason {
        Some(r) => Some(ExitReason::parse(&r).ok_or_else(|| corrupt("exit_reason", &r))?),
        None => None,
    };
    let command: String = row.try_get("command")?;
    let env: String = row.try_get("env")?;
    let secrets: String = row.try_get("secrets")?;
    let labels: String = row.try_get("labels")?;
    let gpu_ids: String = row.try_get("gpu_ids")?;
    let tracking: Option<String> = row.try_get("tracking")?;
    let tracking = match tracking {
        Some(t) => serde_json::from_str(&t).map_err(|e| corrupt("tracking", &e))?,
        None => Default::default(),
    };
    let task: Option<String> = row.try_get("task")?;
    let task = match task {
        Some(t) => Some(serde_json::from_str(&t).map_err(|e| corrupt("task", &e))?),
        None => None,
    };
    let memory_mb: Option<i64> = row.try_get("memory_mb")?;
    let timeout_s: Option<i64> = row.try_get("timeout_s")?;
    let exit_code: Option<i64> = row.try_get("exit_code")?;
    Ok(Job {
        workspace: row.try_get("workspace_id")?,
        name: row.try_get("name")?,
        state,
        command: serde_json::from_str(&command).map_err(|e| corrupt("command", &e))?,
        task,
        env: serde_json::from_str::<BTreeMap<String, String>>(&env)
            .map_err(|e| corrupt("env", &e))?,
        secrets: serde_json::from_str::<BTreeMap<String, String>>(&secrets)
            .map_err(|e| corrupt("secrets", &e))?,
        working_dir: row.try_get("working_dir")?,
        resources: Resources {
            cpus: row.try_get("cpus")?,
            memory_mb: memory_mb.map(|m| m as u64),
            gpus: row.try_get::<i64, _>("gpus")? as u32,
            workers: row.try_get::<i64, _>("workers")? as u32,
        },
        priority: row.try_get::<i64, _>("priority")? as i32,
        max_retries: row.try_get::<i64, _>("max_retries")? as u32,
        timeout_s: timeout_s.map(|t| t as u64),
        labels: serde_json::from_str(&labels).map_err(|e| corrupt("labels", &e))?,
        tracking,
        attempt: row.try_get::<i64, _>("attempt")? as u32,
        exit_code: exit_code.map(|c| c as i32),
        exit_reason,
        message: row.try_get("message")?,
        host: row.try_get("host")?,
        gpus: serde_json::from_str(&gpu_ids).map_err(|e| corrupt("gpu_ids", &e))?,
        pool: row.try_get("pool")?,
        engine_id: row.try_get("engine_id")?,
        created_at_ms: row.try_get("created_at_ms")?,
        started_at_ms: row.try_get("started_at_ms")?,
        finished_at_ms: row.try_get("finished_at_ms")?,
        id,
    })
}

/// The JSON-typed columns hold plain maps and lists of strings and numbers, which always serialise.
fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("maps and lists of strings serialise")
}
