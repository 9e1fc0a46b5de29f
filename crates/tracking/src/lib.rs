//! Tracking: experiments, runs with their params, tags and metrics, logged models, the model
//! registry and run artifacts — MLflow's data model, kept in Trainyard's database and blob
//! store. The MLflow-compatible REST API in `api` is a thin layer over [`Tracking`].
//!
//! Every job is a run (its run id is the job id), so metrics logged by a job's script, or
//! parsed from its output, land next to its logs.

pub mod access;
mod artifacts;
pub mod downsample;
pub mod entities;
mod error;
mod experiments;
pub mod filter;
mod logged_models;
mod metrics;
mod python_json;
mod registry;
mod rows;
mod runs;
mod search;
mod sources;
pub mod stdout_metrics;
pub mod validate;

use trainyard_store::{Blobs, Db};

pub use access::{Writer, CREATED_BY_JOB_TAG};
pub use artifacts::{artifact_path, check_path};
pub use entities::*;
pub use error::TrackingError;
pub use experiments::NewExperiment;
pub use logged_models::NewLoggedModel;
pub use metrics::{MetricPoint, SampledMetric};
pub use registry::NewModelVersion;
pub use runs::{BatchInput, NewRun};
pub use search::{SearchRequest, ARTIFACTS_PREFIX};

/// The tracking service: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Tracking {
    db: Db,
    blobs: Blobs,
    series: std::sync::Arc<metrics::SeriesCache>,
    /// Runs known to be active (run id → experiment id) and a generation that every
    /// lifecycle change bumps (and empties the map), so a lookup that raced with a change
    /// is not cached.
    active_runs:
        std::sync::Arc<parking_lot::Mutex<(u64, std::collections::HashMap<String, ActiveRun>)>>,
    /// The workspace every call acts in: experiments, runs, metrics, artifacts and logged
    /// models of other workspaces are not there for it. `None`: the server's own handle
    /// (serving, job supervision), which finds things by id in every workspace and makes
    /// and finds named ones in `default`.
    workspace: Option<std::sync::Arc<str>>,
}

/// A run known to be active, and the workspace it is in.
#[derive(Debug, Clone)]
pub(crate) struct ActiveRun {
    pub experiment_id: i64,
    pub workspace: std::sync::Arc<str>,
}

impl Tracking {
    pub fn new(db: Db, blobs: Blobs) -> Self {
        Self {
            db,
            blobs,
            series: Default::default(),
            active_runs: Default::default(),
            workspace: None,
        }
    }

    /// The same service acting in `workspace` (cheap: caches are shared). Every request
    /// gets one for the workspace its caller acts in.
    pub fn scoped(&self, workspace: &str) -> Tracking {
        let mut scoped = self.clone();
        if scoped.workspace.as_deref() != Some(workspace) {
            scoped.workspace = Some(workspace.into());
        }
        scoped
    }

    /// The server's own handle, which finds things by id in every workspace (to tell
    /// "another workspace's" from "nobody's").
    pub(crate) fn everywhere(&self) -> Tracking {
        let mut all = self.clone();
        all.workspace = None;
        all
    }

    /// The workspace this handle acts in (`default` for the server's own).
    pub fn workspace(&self) -> &str {
        self.workspace
            .as_deref()
            .unwrap_or(trainyard_core::DEFAULT_WORKSPACE)
    }

    /// 1 for the server's own handle, which finds things by id in every workspace: bound
    /// beside [`Tracking::workspace`] in `(workspace_id = $a OR $b = 1)`.
    pub(crate) fn every_workspace(&self) -> i64 {
        i64::from(self.workspace.is_none())
    }

    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    pub fn db(&self) -> &Db {
        &self.db
    }
}
