//! Running jobs: a scheduler loop per resource pool that decides what starts when, and the
//! executors that run attempts: the local one under a supervisor process of its own per
//! attempt (`trainyard task shim`), so a job's outcome and log survive a crash or restart
//! of the server, and the cluster ones that hand each attempt to Slurm or Ray.

mod capacity;
mod error;
pub mod executor;
pub mod fair_share;
pub mod gang;
mod job_env;
mod job_metrics;
mod job_user;
mod leader;
mod logs;
mod pools;
mod scheduler;
pub mod shim;
pub mod studies;

pub use capacity::{detect_capacity, CapacityOverrides};
pub use error::ComputeError;
pub use executor::local::{LocalExecutor, LocalOptions};
pub use executor::{Attempt, Executor, ExitRecord, Node};
pub use job_env::JobTracking;
pub use job_user::{JobUser, DEFAULT_JOB_USER, PER_JOB_UIDS};
pub use leader::{Leadership, LeaseOptions};
pub use logs::{JobLogs, LogPiece, LogReader};
pub use pools::{build_pools, ExecutorKind, PoolContext, PoolError, PoolSettings};
pub use scheduler::{
    Amounts, Pool, PoolUsage, Scheduler, SchedulerHandle, SchedulerMetrics, SchedulerOptions,
    Usage, WorkspaceUse, WorkspaceView,
};
