use trainyard_core::{InvalidField, JobState};
use trainyard_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    /// The request is well-formed but this machine can never satisfy it.
    #[error("cannot be scheduled: {0}")]
    Unschedulable(InvalidField),
    /// The request is more than its workspace's quota allows, ever.
    #[error("over the workspace's quota: {0}")]
    OverQuota(InvalidField),
    /// A quota that is full now (queued jobs): retry later.
    #[error("{0}")]
    QuotaFull(String),
    #[error("job {0} not found")]
    JobNotFound(String),
    #[error("workspace {0} not found")]
    WorkspaceNotFound(String),
    #[error("job {id} is already {state:?} and cannot be cancelled")]
    NotCancellable { id: String, state: JobState },
    /// Only a finished job is run again.
    #[error("job {id} is {}: only a finished job is run again (cancel it first)", state.as_str())]
    NotFinished { id: String, state: JobState },
    /// A study's trial is its study's to run again (a promotion, a lost job): a copy would
    /// report into a trial that has ended.
    #[error("job {id} runs a trial of study {study}: its study decides what runs again (a promotion, a lost job), and a copy would report into a trial that has ended; start a new study or ask for more trials")]
    TrialOfStudy { id: String, study: String },
    /// SQLite is single-server and another live server uses this database.
    #[error("another trainyard server ({0}) uses this SQLite database; SQLite is single-server: stop that one, or use PostgreSQL to run several")]
    NotAlone(String),
    #[error("study `{0}` not found")]
    StudyNotFound(String),
    #[error("a study named `{0}` already exists in this workspace")]
    StudyExists(String),
    #[error("study `{study}` has no trial {number}")]
    TrialNotFound { study: String, number: u64 },
    /// The trial has already finished; finished trials never change.
    #[error("trial {number} is already {state}")]
    TrialFinished { number: u64, state: &'static str },
    /// The study takes no new trials (stopped, done, its budget spent, its trials run by
    /// its template, or its space exhausted).
    #[error("{0}")]
    StudyClosed(String),
    /// A single best trial was asked of a study with several objectives (its best trials are
    /// its Pareto front).
    #[error("study `{0}` has several objectives: no single trial is best; its Pareto front is `pareto_front` in the study")]
    SeveralObjectives(String),
    #[error("the scheduler is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tracking(#[from] trainyard_tracking::TrackingError),
    #[error("executor I/O error: {0}")]
    Io(#[from] std::io::Error),
}
