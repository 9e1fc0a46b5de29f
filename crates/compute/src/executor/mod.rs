//! What runs a job's attempts. The scheduler decides *what* starts *when*; an [`Executor`]
//! decides *how*: the local one starts a supervisor process per attempt on this machine,
//! and the cluster executors to come hand the attempt to Slurm, Ray or Kubernetes. The
//! scheduler only ever talks to this trait, so its decisions can be tested against an
//! executor in the test's own process.

pub mod cluster;
pub mod kubernetes;
pub mod local;
pub(crate) mod poller;
pub mod ray;
pub mod slurm;
pub(crate) mod spool;

use std::path::PathBuf;

use async_trait::async_trait;
use trainyard_core::{Capacity, Job};

pub use crate::shim::ExitRecord;

/// One attempt to start: the job as it is now, its attempt number (from 1), the GPU
/// indices reserved for it, and the variables it gets besides its own (`MLFLOW_*`).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub job: Job,
    pub number: u32,
    pub gpus: Vec<u32>,
    pub env: Vec<(String, String)>,
}

/// Runs attempts somewhere and reports how each ended.
///
/// Every method is called from the scheduler's tasks, never from its loop, so any of them
/// may take time. None returns an error: an attempt that cannot start ends with
/// `ExitReason::SpawnFailed`, one whose fate is unknown with `ExitReason::Lost`, so the
/// scheduler always learns an outcome and always gives the resources back.
/// A machine of a pool, as its engine reports it now (`trainyard status`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Node {
    pub name: String,
    /// The engine's word for it (`idle`, `mixed`, `down`, `ALIVE`, …), with its reason.
    pub state: String,
    pub cpus: f64,
    pub memory_mb: u64,
    pub gpus: u32,
    /// What is not allocated on it now, where the engine says per node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_cpus: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_memory_mb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_gpus: Option<u32>,
}

#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// What kind of engine runs the attempts: `local`, `slurm`, `ray`, …
    fn kind(&self) -> &'static str;

    /// What this executor can run at once; the scheduler never hands out more.
    fn capacity(&self) -> &Capacity;

    /// Why `want` (all its workers together) can never run here (refused at submit);
    /// `None` when it can.
    fn never_fits(&self, want: &trainyard_core::Resources) -> Option<trainyard_core::InvalidField> {
        self.capacity().never_fits(&want.total())
    }

    /// How many attempts beyond what fits the scheduler may hand over, to wait in the
    /// engine's own queue (cluster engines; none here).
    fn engine_queue(&self) -> u32 {
        0
    }

    /// The engine's nodes and what is free on each, asked now; an error says why the
    /// engine could not be asked (it is shown, never fatal).
    async fn inventory(&self) -> Result<Vec<Node>, String> {
        Ok(Vec::new())
    }

    /// The host each attempt is recorded as running on.
    fn host(&self) -> &str;

    /// Runs one attempt to its end. `started` is sent once the attempt exists where it runs,
    /// so a cancel asked for during the launch can reach it.
    async fn run(&self, attempt: Attempt, started: tokio::sync::oneshot::Sender<()>) -> ExitRecord;

    /// Watches, to its end, an attempt that an earlier server process started (after a
    /// restart of the server).
    async fn adopt(&self, job: &Job, attempt: u32) -> ExitRecord;

    /// Asks a running attempt to end; it then ends `cancelled`. False when there was
    /// nothing to ask (it had ended already).
    async fn cancel(&self, job_id: &str, attempt: u32) -> bool;

    /// Drops what the executor keeps for a job that has finished for good (its log is in
    /// the blob store by then, or stays where readers still find it).
    async fn cleanup(&self, job_id: &str);

    /// Bytes of an active job's log already in the blob store (`None`: not active here).
    fn log_shipped(&self, _job_id: &str) -> Option<u64> {
        None
    }

    /// The local file that holds the part of a job's log not yet shipped, when there is one.
    fn log_spool(&self, _job_id: &str) -> Option<PathBuf> {
        None
    }
}
