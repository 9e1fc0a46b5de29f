use trainyard_core::{InvalidField, JobState};
use trainyard_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    /// The request is well-formed but this machine can never satisfy it.
    #[error("cannot be scheduled: {0}")]
    Unschedulable(InvalidField),
    #[error("job {0} not found")]
    JobNotFound(String),
    #[error("job {id} is already {state:?} and cannot be cancelled")]
    NotCancellable { id: String, state: JobState },
    #[error("the scheduler is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tracking(#[from] trainyard_tracking::TrackingError),
    #[error("executor I/O error: {0}")]
    Io(#[from] std::io::Error),
}
