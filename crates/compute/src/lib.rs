//! Running jobs: the scheduler loop that decides what starts when, and the local executor
//! that runs each attempt under its own supervisor process (`trainyard task shim`), so a
//! job's outcome and log survive a crash or restart of the server.

mod capacity;
mod error;
pub mod executor;
mod job_env;
mod job_metrics;
mod job_user;
mod logs;
mod scheduler;
pub mod shim;

pub use capacity::{detect_capacity, CapacityOverrides};
pub use error::ComputeError;
pub use executor::local::{LocalExecutor, LocalOptions};
pub use executor::{Attempt, Executor, ExitRecord};
pub use job_env::JobTracking;
pub use job_user::{JobUser, DEFAULT_JOB_USER, PER_JOB_UIDS};
pub use logs::{JobLogs, LogPiece, LogReader};
pub use scheduler::{
    Amounts, Scheduler, SchedulerHandle, SchedulerMetrics, SchedulerOptions, Usage,
};
