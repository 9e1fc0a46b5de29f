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

use crate::entities::{KeyValue, LoggedModel, Run};
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

/// Whether `job` owns this run: its own (run id = job id), or one it created.
fn owns_run(job: &str, run: &Run) -> bool {
    run.info.run_id == job || owned_by(&run.data.tags, job)
}

fn not_its_run(job: &str, run_id: &str) -> TrackingError {
    forbidden(format!(
        "a job's token writes only its own run ({job}) and the runs it created; run {run_id} \
         is not one of them"
    ))
}

/// The item, or `None` when it does not exist (an unknown id is the write's own "not
/// found", answered as for anyone).
fn found<T>(got: Result<T, TrackingError>) -> Result<Option<T>, TrackingError> {
    match got {
        Ok(v) => Ok(Some(v)),
        Err(TrackingError::NotFound(_)) | Err(TrackingError::InvalidParameter(_)) => Ok(None),
        Err(e) => Err(e),
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
        match found(self.get_run(run_id).await)? {
            Some(run) if !owns_run(job, &run) => Err(not_its_run(job, run_id)),
            _ => Ok(()),
        }
    }

    /// Whether `job` may change this logged model: one it created, or one a run it owns
    /// produced.
    async fn owns_model(&self, job: &str, model: &LoggedModel) -> Result<bool, TrackingError> {
        if owned_by(&model.info.tags, job) {
            return Ok(true);
        }
        let Some(run_id) = &model.info.source_run_id else {
            return Ok(false);
        };
        Ok(found(self.get_run(run_id).await)?.is_some_and(|run| owns_run(job, &run)))
    }

    /// Whether `writer` may change logged model `model_id` (see `owns_model`). An unknown
    /// model passes, as `check_run_write` lets an unknown run pass.
    pub async fn check_logged_model_write(
        &self,
        writer: &Writer,
        model_id: &str,
    ) -> Result<(), TrackingError> {
        let Writer::Job(job) = writer else {
            return Ok(());
        };
        match found(self.get_logged_model(model_id).await)? {
            Some(model) if !self.owns_model(job, &model).await? => Err(forbidden(format!(
                "a job's token changes only the logged models it created or its runs \
                 produced; {model_id} is not one of them"
            ))),
            _ => Ok(()),
        }
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

    /// Whether `writer` may write the artifact at `path` (`<experiment>/<run>/artifacts/…`
    /// or `<experiment>/models/<model>/artifacts/…`): only inside the artifact root of a run
    /// or logged model it may write.
    pub async fn check_artifact_write(
        &self,
        writer: &Writer,
        path: &str,
    ) -> Result<(), TrackingError> {
        let Writer::Job(job) = writer else {
            return Ok(());
        };
        crate::artifacts::check_path(path)?;
        let inside = |root_uri: &str| {
            crate::artifact_path(root_uri)
                .is_some_and(|root| crate::artifacts::path_within(path, root))
        };
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for i in 0..parts.len().saturating_sub(1) {
            if parts[i + 1] != "artifacts" {
                continue;
            }
            let id = parts[i];
            if i > 0 && parts[i - 1] == "models" && id.starts_with("m-") {
                if let Some(model) = found(self.get_logged_model(id).await)? {
                    if inside(&model.info.artifact_uri) && self.owns_model(job, &model).await? {
                        return Ok(());
                    }
                }
            } else if let Some(run) = found(self.get_run(id).await)? {
                if inside(&run.info.artifact_uri) && owns_run(job, &run) {
                    return Ok(());
                }
            }
        }
        Err(forbidden(format!(
            "a job's token writes artifacts only inside its own runs and logged models; \
             '{path}' is not"
        )))
    }

    /// Whether `writer` may register this version: a job only from a run (or a logged model
    /// of a run) it owns, and every run it names must exist.
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
        let mut model_ok = true;
        if let Some(model_id) = &new.model_id {
            if let Some(model) = found(self.get_logged_model(model_id).await)? {
                model_ok = self.owns_model(job, &model).await?;
                runs.extend(model.info.source_run_id);
            }
        }
        runs.retain(|r| !r.is_empty());
        runs.sort();
        runs.dedup();
        for run_id in &runs {
            // Strict: a version must not name a run that does not exist (yet).
            if !owns_run(job, &self.get_run(run_id).await?) {
                return Err(not_its_run(job, run_id));
            }
        }
        if runs.is_empty() || !model_ok {
            return Err(forbidden(format!(
                "a job's token registers versions only from its own runs (job {job}); name \
                 the run with run_id or a runs:/ source"
            )));
        }
        Ok(())
    }

    /// Whether `writer` may tag version `version` of `name`: a job only a version registered
    /// from a run it owns.
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
        let owned = !v.run_id.is_empty()
            && (v.run_id == *job
                || found(self.get_run(&v.run_id).await)?.is_some_and(|run| owns_run(job, &run)));
        if owned {
            return Ok(());
        }
        Err(forbidden(format!(
            "a job's token changes only versions registered from its own runs (job {job}); \
             {name} version {version} is not one of them"
        )))
    }
}
