//! What a writer may change. A user's token may change anything; a job's token (a job is
//! somebody else's code) only what its job owns: its own run (run id = job id), the runs and
//! logged models it created, their artifacts, and versions registered from those. It may
//! read everything, create experiments, registered models and datasets, and never delete,
//! rename, or move a registry alias or stage — otherwise one job could rewrite another's
//! results or point `production` at its own model.
//!
//! Ownership of created things is recorded as the [`CREATED_BY_JOB_TAG`] tag, written by the
//! server at creation (whatever the request says), so it survives restarts and needs no
//! table of its own. Tenancy (workspaces, roles) will add its rules beside these.

use crate::entities::KeyValue;
use crate::registry::NewModelVersion;
use crate::{Tracking, TrackingError};

/// Set on runs and logged models created with a job's token: the job's id.
pub const CREATED_BY_JOB_TAG: &str = "trainyard.createdByJob";

/// Who is writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writer {
    /// A user's (or the admin's) token.
    User,
    /// The token of the job with this id (its run has the same id).
    Job(String),
}

fn forbidden(message: String) -> TrackingError {
    TrackingError::Forbidden(message)
}

fn owned_by(tags: &[KeyValue], job: &str) -> bool {
    tags.iter()
        .any(|t| t.key == CREATED_BY_JOB_TAG && t.value == job)
}

impl Writer {
    /// What the server adds to the tags of a run or logged model this writer creates; a
    /// client's own value of the tag is dropped, so no job can claim another's.
    pub fn stamp(&self, tags: &mut Vec<KeyValue>) {
        tags.retain(|t| t.key != CREATED_BY_JOB_TAG);
        if let Writer::Job(job) = self {
            tags.push(KeyValue::new(CREATED_BY_JOB_TAG, job.clone()));
        }
    }

    /// Experiments a job creates take the server's default artifact location: a location
    /// of its choosing could lie inside another run's artifacts.
    pub fn check_experiment_create(
        &self,
        artifact_location: Option<&str>,
    ) -> Result<(), TrackingError> {
        match (self, artifact_location) {
            (Writer::Job(_), Some(l)) if !l.is_empty() => Err(forbidden(
                "a job's token creates experiments with the default artifact location only"
                    .to_string(),
            )),
            _ => Ok(()),
        }
    }

    /// For what no job may do at all (deletes, renames, aliases, stages, experiment changes).
    pub fn check_not_job(&self, what: &str) -> Result<(), TrackingError> {
        match self {
            Writer::User => Ok(()),
            Writer::Job(job) => Err(forbidden(format!(
                "a job's token may not {what} (job {job}); use a user's token"
            ))),
        }
    }
}

impl Tracking {
    /// Whether `writer` may write to run `run_id`. An unknown run passes, so the write
    /// itself answers "not found" as it would for anyone.
    pub async fn check_run_write(
        &self,
        writer: &Writer,
        run_id: &str,
    ) -> Result<(), TrackingError> {
        let Writer::Job(job) = writer else {
            return Ok(());
        };
        if run_id == job {
            return Ok(());
        }
        match self.get_run(run_id).await {
            Ok(run) if owned_by(&run.data.tags, job) => Ok(()),
            Ok(_) => Err(forbidden(format!(
                "a job's token writes only its own run ({job}) and the runs it created; run \
                 {run_id} is not one of them"
            ))),
            Err(TrackingError::NotFound(_)) | Err(TrackingError::InvalidParameter(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether `writer` may change logged model `model_id`: one it created, or one its
    /// runs produced.
    pub async fn check_logged_model_write(
        &self,
        writer: &Writer,
        model_id: &str,
    ) -> Result<(), TrackingError> {
        let Writer::Job(job) = writer else {
            return Ok(());
        };
        let model = match self.get_logged_model(model_id).await {
            Ok(m) => m,
            Err(TrackingError::NotFound(_)) | Err(TrackingError::InvalidParameter(_)) => {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        if owned_by(&model.info.tags, job) {
            return Ok(());
        }
        if let Some(run) = &model.info.source_run_id {
            if self.check_run_write(writer, run).await.is_ok() && self.run_exists(run).await {
                return Ok(());
            }
        }
        Err(forbidden(format!(
            "a job's token changes only the logged models it created or its runs produced; \
             {model_id} is not one of them"
        )))
    }

    /// Whether `writer` may log these points: one naming a logged model (`model_id`) writes
    /// into that model's metrics, so it needs the same right as changing the model.
    pub async fn check_metric_models(
        &self,
        writer: &Writer,
        points: &[crate::MetricPoint],
    ) -> Result<(), TrackingError> {
        if *writer == Writer::User {
            return Ok(());
        }
        let mut models: Vec<&str> = points
            .iter()
            .filter_map(|p| p.model_id.as_deref())
            .collect();
        models.sort_unstable();
        models.dedup();
        for model_id in models {
            self.check_logged_model_write(writer, model_id).await?;
        }
        Ok(())
    }

    async fn run_exists(&self, run_id: &str) -> bool {
        self.get_run(run_id).await.is_ok()
    }

    /// Whether `writer` may write the artifact at `path` (`<experiment>/<run>/artifacts/…`
    /// or `<experiment>/models/<model>/artifacts/…`): only inside the artifact root of a run
    /// or logged model it may write.
    pub async fn check_artifact_write(
        &self,
        writer: &Writer,
        path: &str,
    ) -> Result<(), TrackingError> {
        if *writer == Writer::User {
            return Ok(());
        }
        crate::artifacts::check_path(path)?;
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let inside = |root: &str| {
            let root = root.trim_matches('/');
            !root.is_empty() && (path == root || path.starts_with(&format!("{root}/")))
        };
        for i in 0..parts.len().saturating_sub(1) {
            if parts[i + 1] != "artifacts" {
                continue;
            }
            let id = parts[i];
            let is_model = i > 0 && parts[i - 1] == "models" && id.starts_with("m-");
            if is_model {
                if self.check_logged_model_write(writer, id).await.is_ok() {
                    if let Ok(m) = self.get_logged_model(id).await {
                        if crate::artifact_path(&m.info.artifact_uri).is_some_and(inside) {
                            return Ok(());
                        }
                    }
                }
            } else if self.check_run_write(writer, id).await.is_ok() {
                if let Ok(run) = self.get_run(id).await {
                    if crate::artifact_path(&run.info.artifact_uri).is_some_and(inside) {
                        return Ok(());
                    }
                }
            }
        }
        Err(forbidden(format!(
            "a job's token writes artifacts only inside its own runs and logged models; \
             '{path}' is not"
        )))
    }

    /// Whether `writer` may register this version: a job only from a run (or a logged model
    /// of a run) it may write.
    pub async fn check_version_create(
        &self,
        writer: &Writer,
        new: &NewModelVersion,
    ) -> Result<(), TrackingError> {
        let Writer::Job(job) = writer else {
            return Ok(());
        };
        let from_source = new
            .source
            .strip_prefix("runs:/")
            .map(|rest| rest.split('/').next().unwrap_or_default().to_string());
        let mut runs: Vec<String> = new.run_id.iter().cloned().chain(from_source).collect();
        let mut models_ok = true;
        if let Some(model_id) = &new.model_id {
            models_ok = self
                .check_logged_model_write(writer, model_id)
                .await
                .is_ok();
            if let Ok(m) = self.get_logged_model(model_id).await {
                runs.extend(m.info.source_run_id);
            }
        }
        let mut any = false;
        for run in &runs {
            if run.is_empty() {
                continue;
            }
            any = true;
            // Strict here: a version must not name a run that does not exist (yet).
            self.get_run(run).await?;
            self.check_run_write(writer, run).await?;
        }
        if !any || !models_ok {
            return Err(forbidden(format!(
                "a job's token registers versions only from its own runs (job {job}); name \
                 the run with run_id or a runs:/ source"
            )));
        }
        Ok(())
    }

    /// Whether `writer` may tag version `version` of `name`: a job only a version registered
    /// from a run it may write.
    pub async fn check_version_write(
        &self,
        writer: &Writer,
        name: &str,
        version: i64,
    ) -> Result<(), TrackingError> {
        let Writer::Job(job) = writer else {
            return Ok(());
        };
        // Strict: version numbers are predictable, so a version that does not exist yet
        // must not pass (a job could tag the next one before its owner registers it).
        let v = self.get_model_version(name, version).await?;
        if !v.run_id.is_empty() && self.check_run_write(writer, &v.run_id).await.is_ok() {
            return Ok(());
        }
        Err(forbidden(format!(
            "a job's token changes only versions registered from its own runs (job {job}); \
             {name} version {version} is not one of them"
        )))
    }
}
