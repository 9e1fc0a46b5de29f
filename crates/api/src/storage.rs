//! Stored-bytes quotas. What a workspace keeps in the blob store (its experiments'
//! artifacts, its own artifact tree, the dataset shards it holds, its jobs' logs) is
//! measured by listing
//! the store, at most once per [`MEASURE_EVERY`] per workspace, and counted up by each
//! upload in between; an upload that starts while the workspace is at or past its quota is
//! refused. A workspace can so go past it by the uploads of one measuring period.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::AppState;

/// How long a measurement is trusted.
pub const MEASURE_EVERY: Duration = Duration::from_secs(30);

/// Per workspace: bytes measured (plus uploads since) and when measured.
#[derive(Clone, Default)]
pub struct StorageMeter {
    measured: Arc<Mutex<HashMap<String, (u64, Instant)>>>,
}

/// A workspace at its stored-bytes quota.
#[derive(Debug)]
pub struct StorageFull {
    pub used: u64,
    pub limit: u64,
}

impl StorageFull {
    pub fn message(&self, workspace: &str) -> String {
        format!(
            "workspace `{workspace}` stores {} of its {} bytes quota (quota.stored_bytes): \
             remove artifacts or datasets, or ask an owner for more",
            self.used, self.limit
        )
    }
}

/// Why an upload may not start.
#[derive(Debug)]
pub enum Refusal {
    Full(StorageFull),
    /// The store could not be measured.
    Store(crate::ApiError),
}

impl StorageMeter {
    /// Whether the workspace `state`'s services are scoped to may store more.
    pub async fn check(&self, state: &AppState) -> Result<(), Refusal> {
        let workspace = state.tracking.workspace().to_string();
        let Some(limit) = state.scheduler.workspace_quota(&workspace).stored_bytes else {
            return Ok(());
        };
        let cached = self
            .measured
            .lock()
            .get(&workspace)
            .filter(|(_, at)| at.elapsed() < MEASURE_EVERY)
            .map(|(used, _)| *used);
        let used = match cached {
            Some(used) => used,
            None => {
                let artifacts = state
                    .tracking
                    .stored_bytes()
                    .await
                    .map_err(|e| Refusal::Store(e.into()))?;
                let shards = state
                    .datasets
                    .stored_bytes()
                    .await
                    .map_err(|e| Refusal::Store(e.into()))?;
                let mut logs = 0u64;
                let store = |e: trainyard_store::StoreError| Refusal::Store(e.into());
                for job in state
                    .tracking
                    .db()
                    .workspace_job_ids(&workspace)
                    .await
                    .map_err(store)?
                {
                    logs = logs.saturating_add(
                        state
                            .tracking
                            .blobs()
                            .job_bytes(&job)
                            .await
                            .map_err(store)?,
                    );
                }
                let used = artifacts.saturating_add(shards).saturating_add(logs);
                self.measured
                    .lock()
                    .insert(workspace.clone(), (used, Instant::now()));
                used
            }
        };
        if used >= limit {
            return Err(Refusal::Full(StorageFull { used, limit }));
        }
        Ok(())
    }

    /// Counts an upload of `bytes` into `workspace` until the next measurement.
    pub fn add(&self, workspace: &str, bytes: u64) {
        if let Some((used, _)) = self.measured.lock().get_mut(workspace) {
            *used = used.saturating_add(bytes);
        }
    }
}

impl Refusal {
    /// In REST v1's shape: 429 `quota_exceeded` naming `quota.stored_bytes`.
    pub fn into_api(self, workspace: &str) -> crate::ApiError {
        match self {
            Refusal::Full(full) => crate::ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                crate::ErrorCode::QuotaExceeded,
                full.message(workspace),
            )
            .with_field("quota.stored_bytes"),
            Refusal::Store(e) => e,
        }
    }

    /// In MLflow's shape: 429 `RESOURCE_EXHAUSTED`.
    pub fn into_mlflow(self, workspace: &str) -> crate::mlflow::MlflowError {
        match self {
            Refusal::Full(full) => crate::mlflow::MlflowError {
                status: axum::http::StatusCode::TOO_MANY_REQUESTS,
                code: "RESOURCE_EXHAUSTED",
                message: full.message(workspace),
            },
            Refusal::Store(e) => crate::mlflow::MlflowError {
                status: e.status,
                code: "TEMPORARILY_UNAVAILABLE",
                message: e.message,
            },
        }
    }
}
