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
    active_runs: std::sync::Arc<parking_lot::Mutex<(u64, std::collections::HashMap<String, i64>)>>,
}

impl Tracking {
    pub fn new(db: Db, blobs: Blobs) -> Self {
        Self {
            db,
            blobs,
            series: Default::default(),
            active_runs: Default::default(),
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }
}
