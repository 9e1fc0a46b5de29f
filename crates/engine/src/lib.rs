//! The built-in deep-learning engine: model specs with shape checks, the training loop,
//! optimizers and learning-rate schedules, checkpoints with exact resume, and evaluation
//! metrics. A pure library: it takes batches and reports through [`train::Observer`]; the
//! CLI's task commands connect it to datasets, tracking and the registry.
//!
//! burn is used only inside this crate (its API changes between releases), behind
//! [`network`], [`train`] and [`device`].

pub mod checkpoint;
pub mod config;
pub mod dataset;
pub mod device;
pub mod export;
pub mod metrics;
pub mod model;
pub mod native;
pub mod network;
pub mod norms;
pub mod spec;
pub mod train;
pub mod weights;

pub use checkpoint::Checkpoint;
pub use config::TrainConfig;
pub use spec::{LayerSpec, ModelSpec, ResolvedSpec};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A spec or training file is wrong; the message names the field.
    #[error("{0}")]
    Spec(String),
    /// The data does not fit the spec (missing column, wrong type, class out of range).
    #[error("{0}")]
    Data(String),
    #[error("loss became {kind} at step {step}", kind = if value.is_nan() { "NaN" } else { "infinite" })]
    NonFinite { step: u64, value: f64 },
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("stopped: {0}")]
    Stopped(String),
}

impl EngineError {
    pub(crate) fn record(e: burn::store::RecordError) -> Self {
        EngineError::Checkpoint(e.to_string())
    }
}

impl From<trainyard_data::DataError> for EngineError {
    fn from(e: trainyard_data::DataError) -> Self {
        EngineError::Data(e.to_string())
    }
}
