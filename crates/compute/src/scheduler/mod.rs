//! The scheduler: one loop per resource pool, owning the pool's queue and free resources.
//! It is woken by submissions, cancels and completions; it starts the best queued jobs that
//! fit (highest priority, then oldest) and never hands out more than the pool has. A pool
//! is a name and an executor (this machine, a Slurm or Ray cluster); the handle routes each
//! job to its pool's loop.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{mpsc, oneshot};
use trainyard_core::time::now_ms;
use trainyard_core::{
    new_id, Capacity, ExitReason, InvalidField, Job, JobState, JobSubmission, Resources,
};
use trainyard_store::{Fence, Outcome, Store};

use trainyard_background::{Background, Backoff};

use crate::executor::{Attempt, Executor, ExitRecord};
use crate::fair_share::{self, PreemptRules, Shares, Sharing, Use, Waiting};
use crate::{ComputeError, JobLogs, JobTracking, Leadership, LeaseOptions};

/// How often a leading loop looks for jobs submitted through other servers and cancels
/// asked of them. The window covers clocks that differ and commits that land late.
const TAKE_IN_EVERY: Duration = Duration::from_millis(500);
/// How often workspaces' weights and quotas are read again when several servers share the
/// database (one server applies its own changes at once).
const POLICIES_EVERY: Duration = Duration::from_secs(5);
const TAKE_IN_WINDOW_MS: i64 = 120_000;

/// The scheduler loop's name among background workers.
pub const SCHEDULER_WORKER: &str = "scheduler";
/// Where outcome writes that wait for the database are counted.
const OUTCOME_WRITER: &str = "job-outcome";

/// Scheduler figures for `/metrics`; plain atomics, registered by the API layer.
pub struct SchedulerMetrics {
    /// Seconds from entering the queue to the start of an attempt.
    pub submit_to_start: Histogram,
    pub attempts_started: Counter,
    pub attempts_finished: Counter,
}

impl Default for SchedulerMetrics {
    fn default() -> Self {
        let buckets = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            60.0, 300.0, 900.0, 3600.0,
        ];
        Self {
            submit_to_start: Histogram::new(buckets),
            attempts_started: Counter::default(),
            attempts_finished: Counter::default(),
        }
    }
}

/// A resource pool: jobs that name it run on its executor.
pub struct Pool {
    /// As `[[pools]] name` gives it (see `trainyard_core::job::is_pool_name`).
    pub name: String,
    pub executor: Arc<dyn Executor>,
    /// Whether, and by which rules, a job of a workspace below its fair share may end
    /// jobs of workspaces above theirs (off by default).
    pub preempt: Option<PreemptRules>,
}

/// What the API holds: submit, cancel and read jobs; every change goes through the loop
/// of the job's pool.
#[derive(Clone)]
pub struct SchedulerHandle {
    /// In configuration order; the first is the default.
    pools: Arc<[PoolHandle]>,
    store: Store,
    logs: JobLogs,
    tracking: trainyard_tracking::Tracking,
    metrics: Arc<SchedulerMetrics>,
    leadership: Leadership,
    sharing: Sharing,
}

/// A workspace as the scheduler shares pools with it: its weight and quotas, what it holds
/// now across pools and how many of its jobs wait.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct WorkspaceView {
    pub name: String,
    pub weight: f64,
    pub quota: fair_share::Quota,
    /// Held by its running jobs, in every pool this server schedules.
    pub in_use: WorkspaceUse,
    pub queued_jobs: u64,
    pub created_at_ms: i64,
}

/// What a workspace's running jobs hold.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct WorkspaceUse {
    pub cpus: f64,
    pub memory_mb: u64,
    pub gpus: u32,
    pub running_jobs: u32,
}

#[derive(Clone)]
struct PoolHandle {
    name: String,
    tx: mpsc::UnboundedSender<Command>,
    executor: Arc<dyn Executor>,
    queue_len: Arc<AtomicUsize>,
}

enum Command {
    /// A job just submitted through this server.
    Enqueue(Box<Job>),
    /// A job that comes back to the queue: a retry after a failed attempt, or a cancel
    /// whose write failed.
    Return(Box<Job>),
    Cancel {
        id: String,
        reply: oneshot::Sender<Result<(), ComputeError>>,
    },
    Finished {
        id: String,
        attempt: u32,
        record: ExitRecord,
    },
    LaunchAborted {
        id: String,
        attempt: u32,
        retry: bool,
    },
    /// The attempt's supervisor exists now (a cancel asked for earlier can reach it).
    Started {
        id: String,
        attempt: u32,
    },
    Usage(oneshot::Sender<LoopUsage>),
    Wake,
}

/// What the default pool has, what is free in it right now, and how much work there is;
/// then the same for every pool, with the nodes its engine reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub capacity: Amounts,
    pub free: Amounts,
    /// Jobs waiting for resources.
    pub queued: usize,
    /// Attempts holding resources.
    pub running: usize,
    /// Every pool, the default first.
    pub pools: Vec<PoolUsage>,
    /// Whether this server runs the scheduler now (one of the servers sharing a database
    /// does; the others serve the API and take over if it stops).
    pub leading: bool,
    /// The API URL of the server that schedules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

/// One pool's resources and work, as its scheduler loop and its engine see them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct PoolUsage {
    pub name: String,
    /// `local`, `slurm`, `ray`, …
    pub executor: String,
    /// What Trainyard hands out in this pool (taken from the engine at start).
    pub capacity: Amounts,
    pub free: Amounts,
    pub queued: usize,
    pub running: usize,
    /// The engine's nodes as it reports them now (for this machine: itself).
    pub nodes: Vec<crate::executor::Node>,
    /// Why `nodes` is empty when the engine could not be asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory_error: Option<String>,
}

/// A pool loop's own figures (the handle adds the engine's view).
struct LoopUsage {
    capacity: Amounts,
    free: Amounts,
    queued: usize,
    running: usize,
}

/// An amount of resources, in the units users ask in.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Amounts {
    pub cpus: f64,
    pub memory_mb: u64,
    /// GPU indices, as `CUDA_VISIBLE_DEVICES` names them.
    pub gpus: Vec<u32>,
}

impl SchedulerHandle {
    /// Whether this server schedules now (holds the lease); background work that must run
    /// once per cluster, such as the study controller, runs only here.
    pub fn is_leader(&self) -> bool {
        self.leadership.current().is_some()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether every pool's scheduler loop still runs. A loop owns the receiving end of its
    /// channel, so a loop that ended, panicked or was aborted has dropped it: nothing would
    /// start or finish jobs any more, and `/readyz` must say so.
    pub fn loop_running(&self) -> bool {
        self.pools.iter().all(|p| !p.tx.is_closed())
    }

    /// The pools' names, the default first.
    pub fn pool_names(&self) -> Vec<String> {
        self.pools.iter().map(|p| p.name.clone()).collect()
    }

    /// The pool a job runs in: the one it names, else the first.
    fn pool(&self, name: Option<&str>) -> Result<&PoolHandle, ComputeError> {
        match name {
            None => Ok(&self.pools[0]),
            Some(name) => self.pools.iter().find(|p| p.name == name).ok_or_else(|| {
                ComputeError::Invalid(InvalidField::new(
                    "pool",
                    format!(
                        "there is no pool named {name:?}; the pools are {}",
                        self.pool_names().join(", ")
                    ),
                ))
            }),
        }
    }

    pub fn logs(&self) -> &JobLogs {
        &self.logs
    }

    pub fn tracking(&self) -> &trainyard_tracking::Tracking {
        &self.tracking
    }

    pub fn metrics(&self) -> &Arc<SchedulerMetrics> {
        &self.metrics
    }

    /// A snapshot of every pool's resources (taken by its loop) and nodes (asked of its
    /// engine, all pools at once).
    pub async fn usage(&self) -> Result<Usage, ComputeError> {
        let pools = futures::future::try_join_all(self.pools.iter().map(|pool| async move {
            let (reply, answer) = oneshot::channel();
            pool.tx
                .send(Command::Usage(reply))
                .map_err(|_| ComputeError::ShuttingDown)?;
            let (own, inventory) = tokio::join!(
                async { answer.await.map_err(|_| ComputeError::ShuttingDown) },
                pool.executor.inventory()
            );
            let own = own?;
            let (nodes, inventory_error) = match inventory {
                Ok(mut nodes) if pool.executor.kind() == "local" => {
                    for node in &mut nodes {
                        node.free_cpus = Some(own.free.cpus);
                        node.free_memory_mb = Some(own.free.memory_mb);
                        node.free_gpus = Some(own.free.gpus.len() as u32);
                    }
                    (nodes, None)
                }
                Ok(nodes) => (nodes, None),
                Err(e) => (Vec::new(), Some(e)),
            };
            Ok::<_, ComputeError>(PoolUsage {
                name: pool.name.clone(),
                executor: pool.executor.kind().to_string(),
                capacity: own.capacity,
                free: own.free,
                queued: own.queued,
                running: own.running,
                nodes,
                inventory_error,
            })
        }))
        .await?;
        let first = &pools[0];
        let leader = self.store.db.lease_holder().await?.map(|h| h.address);
        Ok(Usage {
            capacity: first.capacity.clone(),
            free: first.free.clone(),
            queued: first.queued,
            running: first.running,
            leading: self.leadership.current().is_some(),
            leader,
            pools,
        })
    }

    /// Jobs waiting for resources right now, in all pools.
    pub fn queue_len(&self) -> usize {
        self.pools
            .iter()
            .map(|p| p.queue_len.load(Ordering::Relaxed))
            .sum()
    }

    /// Validates, stores durably, then queues. A request that can never fit is refused here,
    /// and so is one past its workspace's quota of queued jobs.
    pub async fn submit(
        &self,
        workspace: &str,
        submission: JobSubmission,
    ) -> Result<Job, ComputeError> {
        self.submit_as(workspace, new_id(), submission).await
    }

    /// Everything [`submit`](Self::submit) checks of a submission that does not change
    /// from one moment to the next: its fields, its pool, whether it could ever fit the pool
    /// and the workspace's quota, its metric regex, its secrets. A study checks its trials'
    /// job this way before it exists.
    pub async fn check(
        &self,
        workspace: &str,
        submission: &JobSubmission,
    ) -> Result<(), ComputeError> {
        submission.validate()?;
        let pool = self.pool(submission.pool.as_deref())?;
        if let Some(why) = pool.executor.never_fits(&submission.resources) {
            return Err(ComputeError::Unschedulable(why));
        }
        let quota = self.sharing.policies().of(workspace).quota;
        if let Some((field, why)) = quota.never_fits(&submission.resources) {
            return Err(ComputeError::OverQuota(InvalidField::new(field, why)));
        }
        if let Some(re) = &submission.tracking.metric_regex {
            trainyard_tracking::stdout_metrics::MetricCollector::new(Vec::new(), Some(re))
                .map_err(|e| InvalidField::new("tracking.metric_regex", e))?;
        }
        // Every secret a job names must be there when it is submitted (one removed later
        // fails the attempt that needs it, saying which).
        if !submission.secrets.is_empty() {
            let held: std::collections::HashSet<String> = self
                .store
                .db
                .secrets(workspace)
                .await?
                .into_iter()
                .map(|(name, _, _)| name)
                .collect();
            for (var, name) in &submission.secrets {
                if !held.contains(name) {
                    return Err(ComputeError::Invalid(InvalidField::new(
                        format!("secrets.{var}"),
                        format!("workspace `{workspace}` has no secret `{name}`"),
                    )));
                }
            }
        }
        Ok(())
    }

    /// [`submit`](Self::submit) with the job's id chosen by the caller, who recorded it
    /// first (a study's trial): submitting the same id again returns the job that has it, so
    /// a caller that crashed between recording and submitting can simply submit again.
    pub async fn submit_as(
        &self,
        workspace: &str,
        id: String,
        submission: JobSubmission,
    ) -> Result<Job, ComputeError> {
        if let Some(job) = self.store.db.get_job(workspace, &id).await? {
            return Ok(job);
        }
        self.check(workspace, &submission).await?;
        let pool = self.pool(submission.pool.as_deref())?;
        if let Some(limit) = self.sharing.policies().of(workspace).quota.queued_jobs {
            let queued = self.store.db.count_queued_jobs(workspace).await?;
            if queued >= u64::from(limit) {
                return Err(ComputeError::QuotaFull(format!(
                    "workspace queued-jobs quota {queued}/{limit} in use: wait for some to start or cancel some"
                )));
            }
        }
        // The job's run is in its workspace's experiment.
        let tracking = self.tracking.scoped(workspace);
        let experiment = tracking
            .experiment_for_name(
                submission
                    .tracking
                    .experiment
                    .as_deref()
                    .unwrap_or("Default"),
            )
            .await
            .map_err(|e| match e {
                trainyard_tracking::TrackingError::InvalidParameter(m) => {
                    ComputeError::Invalid(InvalidField::new("tracking.experiment", m))
                }
                other => other.into(),
            })?;
        let job = Job {
            id,
            workspace: workspace.to_string(),
            name: submission.display_name(),
            state: JobState::Queued,
            command: submission.command,
            task: submission.task,
            env: submission.env,
            secrets: submission.secrets,
            working_dir: submission.working_dir,
            resources: submission.resources,
            priority: submission.priority,
            max_retries: submission.max_retries,
            timeout_s: submission.timeout_s,
            labels: submission.labels,
            tracking: submission.tracking,
            attempt: 0,
            exit_code: None,
            exit_reason: None,
            message: None,
            host: None,
            gpus: Vec::new(),
            pool: Some(pool.name.clone()),
            engine_id: None,
            created_at_ms: now_ms(),
            started_at_ms: None,
            finished_at_ms: None,
        };
        // The run first: a job is never visible without its run. A caller submitting an id
        // again after a crash between the two finds the run already there.
        let made = tracking
            .create_run(trainyard_tracking::NewRun {
                experiment_id: experiment,
                user_id: workspace.to_string(),
                run_name: Some(job.name.clone()),
                start_time: Some(job.created_at_ms),
                tags: vec![trainyard_tracking::KeyValue::new(
                    "trainyard.job_id",
                    job.id.clone(),
                )],
                job_id: Some(job.id.clone()),
                status: trainyard_tracking::RunStatus::Scheduled,
            })
            .await;
        if let Err(e) = made {
            if tracking.get_run(&job.id).await.is_err() {
                return Err(e.into());
            }
        }
        self.store.db.insert_job(&job).await?;
        pool.tx
            .send(Command::Enqueue(Box::new(job.clone())))
            .map_err(|_| ComputeError::ShuttingDown)?;
        Ok(job)
    }

    /// Every workspace with its policy and use.
    pub async fn workspaces(&self) -> Result<Vec<WorkspaceView>, ComputeError> {
        let mut views = Vec::new();
        for row in self.store.db.workspaces().await? {
            let policy = self.sharing.policies().of(&row.id);
            let used = self.sharing.in_use(&row.id);
            views.push(WorkspaceView {
                queued_jobs: self.store.db.count_queued_jobs(&row.id).await?,
                name: row.name,
                weight: policy.weight,
                quota: policy.quota,
                in_use: WorkspaceUse {
                    cpus: used.cpus_milli as f64 / 1000.0,
                    memory_mb: used.memory_mb,
                    gpus: used.gpus,
                    running_jobs: used.jobs,
                },
                created_at_ms: row.created_at_ms,
            });
        }
        Ok(views)
    }

    /// Sets a workspace's weight and quotas. Lowering a quota below what is in use stops
    /// nothing that runs: it only holds back what would start next.
    /// A workspace's quotas as this server holds them now.
    pub fn workspace_quota(&self, workspace: &str) -> fair_share::Quota {
        self.sharing.policies().of(workspace).quota
    }

    pub async fn set_workspace_policy(
        &self,
        workspace: &str,
        policy: fair_share::WorkspacePolicy,
    ) -> Result<WorkspaceView, ComputeError> {
        policy.validate()?;
        let quota = serde_json::to_string(&policy.quota).expect("a quota serialises");
        if !self
            .store
            .db
            .set_workspace_policy(workspace, policy.weight, &quota)
            .await?
        {
            return Err(ComputeError::WorkspaceNotFound(
                workspace.escape_default().to_string(),
            ));
        }
        self.sharing.set(workspace, policy);
        for pool in self.pools.iter() {
            let _ = pool.tx.send(Command::Wake);
        }
        self.workspaces()
            .await?
            .into_iter()
            .find(|w| w.name == workspace)
            .ok_or_else(|| ComputeError::WorkspaceNotFound(workspace.to_string()))
    }

    pub async fn get(&self, workspace: &str, id: &str) -> Result<Job, ComputeError> {
        // Not the shape of an id: nothing to look up (and no odd bytes reach the database).
        if !trainyard_core::id::is_valid_id(id) {
            return Err(ComputeError::JobNotFound(id.escape_default().to_string()));
        }
        self.store
            .db
            .get_job(workspace, id)
            .await?
            .ok_or_else(|| ComputeError::JobNotFound(id.to_string()))
    }

    /// Runs a finished job again as a new job ([`Job::resubmission`]); a live job or a
    /// study's trial is refused.
    pub async fn retry(&self, workspace: &str, id: &str) -> Result<Job, ComputeError> {
        let job = self.get(workspace, id).await?;
        if !job.state.is_terminal() {
            return Err(ComputeError::NotFinished {
                id: id.to_string(),
                state: job.state,
            });
        }
        if let Some(study) = job.study() {
            return Err(ComputeError::TrialOfStudy {
                id: id.to_string(),
                study: study.to_string(),
            });
        }
        self.submit(workspace, job.resubmission()).await
    }

    /// Cancels a queued job at once, or asks a running one's process tree to end; the job
    /// shows `cancelled` once its processes are gone.
    pub async fn cancel(&self, workspace: &str, id: &str) -> Result<Job, ComputeError> {
        let job = self.get(workspace, id).await?;
        if job.state.is_terminal() {
            return Err(ComputeError::NotCancellable {
                id: id.to_string(),
                state: job.state,
            });
        }
        let Ok(pool) = self.pool(job.pool.as_deref()) else {
            // Its pool is no longer configured, so no loop holds it: it can only be queued.
            let outcome = Outcome {
                state: JobState::Cancelled,
                exit_code: None,
                exit_reason: ExitReason::Cancelled,
                message: Some("cancelled while its pool was not configured".into()),
                finished_at_ms: now_ms(),
            };
            self.store
                .db
                .finish_job(id, JobState::Queued, &outcome)
                .await?;
            return self.get(workspace, id).await;
        };
        let (reply, answer) = oneshot::channel();
        pool.tx
            .send(Command::Cancel {
                id: id.to_string(),
                reply,
            })
            .map_err(|_| ComputeError::ShuttingDown)?;
        answer.await.map_err(|_| ComputeError::ShuttingDown)??;
        self.get(workspace, id).await
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct QueueKey {
    priority: Reverse<i32>,
    created_at_ms: i64,
    id: String,
}

struct Queued {
    job: Job,
    queued_since_ms: i64,
}

struct Running {
    job: Job,
    attempt: u32,
    gpus: Vec<u32>,
    cancel_requested: bool,
    /// Being ended to make room for a workspace below its fair share: it is queued again.
    preempting: bool,
    /// Handed over beyond what fits: it holds an engine-queue slot, not resources, until
    /// resources free up (the engine starts it then).
    on_engine_queue: bool,
    /// When it was handed over (the oldest waiting in the engine's queue takes resources
    /// first).
    launched_at_ms: i64,
}

struct Free {
    cpus_milli: u64,
    memory_mb: u64,
    gpus: BTreeSet<u32>,
    /// Attempts that may still be handed to the engine beyond what fits, to wait in its
    /// queue (`Executor::engine_queue`).
    engine_queue: u32,
}

impl Free {
    fn reserve(&mut self, r: &Resources) -> Option<Vec<u32>> {
        let mem = r.memory_mb.unwrap_or(0);
        if r.cpus_milli() > self.cpus_milli
            || mem > self.memory_mb
            || r.gpus as usize > self.gpus.len()
        {
            return None;
        }
        self.cpus_milli -= r.cpus_milli();
        self.memory_mb -= mem;
        let gpus: Vec<u32> = self.gpus.iter().take(r.gpus as usize).copied().collect();
        for g in &gpus {
            self.gpus.remove(g);
        }
        Some(gpus)
    }

    /// Takes what an adopted job already holds, even past capacity (it is running anyway).
    fn force_reserve(&mut self, r: &Resources, gpus: &[u32]) {
        self.cpus_milli = self.cpus_milli.saturating_sub(r.cpus_milli());
        self.memory_mb = self.memory_mb.saturating_sub(r.memory_mb.unwrap_or(0));
        for g in gpus {
            self.gpus.remove(g);
        }
    }

    fn release(&mut self, r: &Resources, gpus: &[u32], capacity: &Capacity) {
        self.cpus_milli = (self.cpus_milli + r.cpus_milli()).min(capacity.cpus_milli);
        self.memory_mb = (self.memory_mb + r.memory_mb.unwrap_or(0)).min(capacity.memory_mb);
        for g in gpus {
            if capacity.gpus.contains(g) {
                self.gpus.insert(*g);
            }
        }
    }
}

/// Policy knobs of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// How long a queued job that does not fit lets smaller jobs behind it start first.
    pub backfill_window: Duration,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            backfill_window: Duration::from_secs(120),
        }
    }
}

pub struct Scheduler {
    /// The pool this loop schedules, and whether it is the default one (which also runs
    /// jobs from before pools existed).
    pool: String,
    is_default_pool: bool,
    /// Whether this server leads (the lease worker's view) and the fence it leads with;
    /// a loop without a fence is dormant: it starts nothing and holds no queue.
    leadership: tokio::sync::watch::Receiver<Option<Fence>>,
    fence: Option<Fence>,
    /// Jobs this loop has taken in while leading, with their creation time (pruned past
    /// the take-in window): a job is taken in once, by submission or by the poll.
    seen: HashMap<String, i64>,
    /// Whether leading still waits for a successful reconcile.
    must_reconcile: bool,
    /// Whether other servers may take jobs in (not on SQLite): then the leading loop
    /// looks for their submissions and cancels.
    take_in: bool,
    options: SchedulerOptions,
    rx: mpsc::UnboundedReceiver<Command>,
    tx: mpsc::UnboundedSender<Command>,
    store: Store,
    executor: Arc<dyn Executor>,
    job_tracking: JobTracking,
    background: Background,
    capacity: Capacity,
    free: Free,
    host: String,
    queue: BTreeMap<QueueKey, Queued>,
    queue_keys: HashMap<String, QueueKey>,
    running: HashMap<String, Running>,
    /// Jobs between a failed attempt and their return to the queue (the write is pending).
    retrying: HashSet<String>,
    /// Of those, the ones a user cancelled meanwhile: they end instead of re-entering.
    cancel_when_requeued: HashSet<String>,
    queue_len: Arc<AtomicUsize>,
    metrics: Arc<SchedulerMetrics>,
    /// Workspaces' weights and quotas, and what each pool holds for each.
    sharing: Sharing,
    /// What this pool's running jobs hold per workspace, and their recent use.
    shares: Shares,
    /// Queued jobs a quota holds back, with the reason written to their `message`.
    held: HashMap<String, String>,
    /// What attempts waiting in the engine's queue hold per workspace: counted by quotas,
    /// not by fair share (they use nothing yet).
    engine_queued: HashMap<String, Use>,
    /// Preemption rules of this pool (none: never preempts).
    preempt: Option<PreemptRules>,
    /// When each job was last preempted, and how many of its attempts were (they do not
    /// count against its retries). Kept in memory: a restart forgets them, and then only
    /// the minimum run time protects a job.
    preempted: HashMap<String, (i64, u32)>,
}

impl Scheduler {
    /// One pool (named `local`) on `executor`: see [`Scheduler::start_pools`].
    pub async fn start(
        store: Store,
        executor: Arc<dyn Executor>,
        job_tracking: JobTracking,
        options: SchedulerOptions,
        background: &Background,
    ) -> Result<(SchedulerHandle, tokio::task::JoinHandle<()>), ComputeError> {
        let pools = vec![Pool {
            name: "local".into(),
            executor,
            preempt: None,
        }];
        let leadership = Leadership::start(
            store.db.clone(),
            LeaseOptions::new("in-process".into(), true),
            background,
        )
        .await?;
        let (handle, mut loops) =
            Self::start_pools(store, pools, job_tracking, options, background, leadership).await?;
        Ok((handle, loops.remove(0)))
    }

    /// Reconciles, per pool, what the database says with what is really running, then
    /// starts one loop per pool (in `pools` order; the first is the default). Each runs as
    /// an essential background worker (`scheduler`, then `scheduler:<pool>` for the rest):
    /// if one ever ends, `background` marks it failed and says so in the log.
    pub async fn start_pools(
        store: Store,
        pools: Vec<Pool>,
        job_tracking: JobTracking,
        options: SchedulerOptions,
        background: &Background,
        leadership: Leadership,
    ) -> Result<(SchedulerHandle, Vec<tokio::task::JoinHandle<()>>), ComputeError> {
        if pools.is_empty() {
            return Err(ComputeError::Invalid(InvalidField::new(
                "pools",
                "at least one pool is needed",
            )));
        }
        let names: HashSet<&str> = pools.iter().map(|p| p.name.as_str()).collect();
        if names.len() != pools.len() {
            return Err(ComputeError::Invalid(InvalidField::new(
                "pools",
                "two pools have the same name",
            )));
        }
        for state in [JobState::Queued, JobState::Running] {
            for job in store.db.jobs_in_state(state).await? {
                if let Some(pool) = job.pool.as_deref().filter(|p| !names.contains(p)) {
                    tracing::warn!(
                        job = %job.id,
                        pool,
                        state = state.as_str(),
                        "this job's pool is not configured: it waits until the pool is back (or is cancelled)"
                    );
                }
            }
        }
        let metrics = Arc::new(SchedulerMetrics::default());
        let sharing = Sharing::load(&store.db).await?;
        if !leadership.single_server() {
            // Another server may change a workspace's policy.
            let (sharing, db) = (sharing.clone(), store.db.clone());
            background.spawn_restarting(
                "workspace-policies",
                trainyard_background::Backoff::UNTIL_DONE,
                move || {
                    let (sharing, db) = (sharing.clone(), db.clone());
                    async move {
                        loop {
                            tokio::time::sleep(POLICIES_EVERY).await;
                            sharing.reload(&db).await?;
                        }
                        #[allow(unreachable_code)]
                        Ok::<(), trainyard_store::StoreError>(())
                    }
                },
            );
        }
        let mut handles = Vec::new();
        let mut loops = Vec::new();
        for (i, pool) in pools.into_iter().enumerate() {
            let worker = if i == 0 {
                SCHEDULER_WORKER.to_string()
            } else {
                format!("{SCHEDULER_WORKER}:{}", pool.name)
            };
            let (handle, scheduler) = Self::new_loop(
                store.clone(),
                pool,
                i == 0,
                job_tracking.clone(),
                options.clone(),
                background,
                metrics.clone(),
                &leadership,
                sharing.clone(),
            );
            handles.push(handle);
            loops.push((worker, scheduler));
        }
        let executors = handles.iter().map(|h| h.executor.clone()).collect();
        let handle = SchedulerHandle {
            pools: handles.into(),
            logs: JobLogs::new(store.blobs.clone(), executors),
            store,
            tracking: job_tracking.tracking,
            metrics,
            leadership,
            sharing,
        };
        let tasks = loops
            .into_iter()
            .map(|(worker, scheduler)| background.spawn_essential(&worker, scheduler.run()))
            .collect();
        Ok((handle, tasks))
    }

    #[allow(clippy::too_many_arguments)]
    fn new_loop(
        store: Store,
        pool: Pool,
        is_default_pool: bool,
        job_tracking: JobTracking,
        options: SchedulerOptions,
        background: &Background,
        metrics: Arc<SchedulerMetrics>,
        leadership: &Leadership,
        sharing: Sharing,
    ) -> (PoolHandle, Scheduler) {
        let executor = pool.executor;
        let (tx, rx) = mpsc::unbounded_channel();
        let host = executor.host().to_string();
        let capacity = executor.capacity().clone();
        let scheduler = Scheduler {
            pool: pool.name.clone(),
            is_default_pool,
            leadership: leadership.subscribe(),
            fence: None,
            seen: HashMap::new(),
            must_reconcile: false,
            take_in: !leadership.single_server(),
            options,
            rx,
            tx: tx.clone(),
            store: store.clone(),
            executor: executor.clone(),
            job_tracking: job_tracking.clone(),
            background: background.clone(),
            free: Free {
                cpus_milli: capacity.cpus_milli,
                memory_mb: capacity.memory_mb,
                gpus: capacity.gpus.iter().copied().collect(),
                engine_queue: executor.engine_queue(),
            },
            capacity: capacity.clone(),
            host,
            queue: BTreeMap::new(),
            queue_keys: HashMap::new(),
            running: HashMap::new(),
            retrying: HashSet::new(),
            cancel_when_requeued: HashSet::new(),
            queue_len: Arc::new(AtomicUsize::new(0)),
            metrics,
            sharing,
            shares: Shares::default(),
            held: HashMap::new(),
            engine_queued: HashMap::new(),
            preempt: pool.preempt.clone(),
            preempted: HashMap::new(),
        };
        let handle = PoolHandle {
            name: pool.name,
            tx,
            executor,
            queue_len: scheduler.queue_len.clone(),
        };
        (handle, scheduler)
    }

    /// Whether `job` is this loop's to run.
    fn owns(&self, job: &Job) -> bool {
        match job.pool.as_deref() {
            Some(pool) => pool == self.pool,
            None => self.is_default_pool,
        }
    }

    /// Jobs left `running` by an earlier server are re-adopted: their supervisors either
    /// still run (watched again), have recorded an outcome (taken as is), or vanished
    /// (failed as lost and retried per policy). Queued jobs go back in the queue.
    async fn reconcile(&mut self) -> Result<(), ComputeError> {
        let running = self.store.db.jobs_in_state(JobState::Running).await?;
        let queued = self.store.db.jobs_in_state(JobState::Queued).await?;
        for job in running {
            if !self.owns(&job) {
                continue;
            }
            self.seen.insert(job.id.clone(), job.created_at_ms);
            let attempt = job.attempt;
            tracing::info!(job = %job.id, attempt, "re-adopting a job left running");
            self.free.force_reserve(&job.resources.total(), &job.gpus);
            self.hold(&job);
            self.running.insert(
                job.id.clone(),
                Running {
                    gpus: job.gpus.clone(),
                    attempt,
                    cancel_requested: false,
                    preempting: false,
                    on_engine_queue: false,
                    launched_at_ms: job.started_at_ms.unwrap_or(0),
                    job: job.clone(),
                },
            );
            self.adopt(job, attempt);
        }
        for job in queued {
            if !self.owns(&job) {
                continue;
            }
            self.seen.insert(job.id.clone(), job.created_at_ms);
            let since = job.finished_at_ms.unwrap_or(job.created_at_ms);
            self.enqueue(job, since);
        }
        Ok(())
    }

    async fn run(mut self) {
        let mut take_in = tokio::time::interval(TAKE_IN_EVERY);
        take_in.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leadership_open = true;
        self.follow_leadership().await;
        loop {
            tokio::select! {
                command = self.rx.recv() => {
                    let Some(command) = command else { break };
                    self.handle(command).await;
                    // Take everything already waiting before the next pass, so bursts batch.
                    while let Ok(command) = self.rx.try_recv() {
                        self.handle(command).await;
                    }
                }
                changed = self.leadership.changed(), if leadership_open => {
                    match changed {
                        Ok(()) => self.follow_leadership().await,
                        // The lease worker is gone for good: keep the last word.
                        Err(_) => leadership_open = false,
                    }
                }
                _ = take_in.tick() => {
                    if self.must_reconcile {
                        self.lead().await;
                    } else if self.fence.is_some() && self.take_in {
                        self.take_in_from_others().await;
                    }
                }
            }
            if self.fence.is_some() && !self.must_reconcile {
                self.schedule().await;
            }
        }
    }

    /// Follows the lease worker: takes the queue and the running jobs over from the
    /// database when this server starts leading, drops them when it stops.
    async fn follow_leadership(&mut self) {
        let now = self.leadership.borrow_and_update().clone();
        if now == self.fence {
            return;
        }
        if self.fence.is_some() {
            tracing::warn!(pool = %self.pool, "no longer leading: this loop stops scheduling");
            self.go_dormant();
        }
        self.fence = now;
        if self.fence.is_some() {
            self.lead().await;
        }
    }

    /// Takes over what the database says (retried at every tick until it succeeds).
    async fn lead(&mut self) {
        self.go_dormant();
        match self.reconcile().await {
            Ok(()) => self.must_reconcile = false,
            Err(e) => {
                tracing::error!(pool = %self.pool, error = %e, "cannot read the jobs to take over; retrying");
                self.go_dormant();
                self.must_reconcile = true;
            }
        }
    }

    /// Forgets the queue and the running jobs (another server has them now, or will).
    fn go_dormant(&mut self) {
        self.queue.clear();
        self.queue_keys.clear();
        self.running.clear();
        self.shares = Shares::default();
        self.engine_queued.clear();
        self.held.clear();
        self.publish();
        self.retrying.clear();
        self.cancel_when_requeued.clear();
        self.seen.clear();
        self.free = Free {
            cpus_milli: self.capacity.cpus_milli,
            memory_mb: self.capacity.memory_mb,
            gpus: self.capacity.gpus.iter().copied().collect(),
            engine_queue: self.executor.engine_queue(),
        };
        self.queue_len.store(0, Ordering::Relaxed);
    }

    /// Jobs submitted through other servers, and cancels asked of them.
    async fn take_in_from_others(&mut self) {
        let since = now_ms() - TAKE_IN_WINDOW_MS;
        self.seen.retain(|_, created| *created >= since);
        match self.store.db.queued_since(since).await {
            Ok(jobs) => {
                for job in jobs {
                    if self.owns(&job) && !self.seen.contains_key(&job.id) {
                        self.seen.insert(job.id.clone(), job.created_at_ms);
                        let since = job.finished_at_ms.unwrap_or(job.created_at_ms);
                        self.enqueue(job, since);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(pool = %self.pool, error = %e, "cannot look for jobs other servers took in")
            }
        }
        match self.store.db.cancel_requests().await {
            Ok(ids) => {
                for id in ids {
                    let asked = match self.running.get(&id) {
                        Some(running) => !running.cancel_requested,
                        None => self.queue_keys.contains_key(&id) || self.retrying.contains(&id),
                    };
                    if asked {
                        let (reply, _) = oneshot::channel();
                        self.cancel(&id, reply);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(pool = %self.pool, error = %e, "cannot look for cancels other servers took in")
            }
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            // Not leading: the job waits in the database for the leader to take it in.
            Command::Enqueue(_) | Command::Return(_) if self.fence.is_none() => {}
            Command::Enqueue(job) => {
                // Taken in already (the leader's poll can see it before this arrives).
                if self.seen.contains_key(&job.id) {
                    return;
                }
                self.seen.insert(job.id.clone(), job.created_at_ms);
                let since = job.created_at_ms;
                self.enqueue(*job, since);
            }
            Command::Return(job) => {
                if self.retrying.remove(&job.id) && self.cancel_when_requeued.remove(&job.id) {
                    self.finish_cancelled_queued(*job, "cancelled while waiting for a retry", None);
                    return;
                }
                // A retry waits from the end of its failed attempt.
                let since = job.finished_at_ms.unwrap_or(job.created_at_ms);
                self.enqueue(*job, since);
            }
            // Not leading: the leader carries the cancel out.
            Command::Cancel { id, reply } if self.fence.is_none() => {
                let store = self.store.clone();
                self.background.spawn_task("job-cancel", async move {
                    let asked = store.db.request_cancel(&id, now_ms()).await;
                    let _ = reply.send(asked.map(|_| ()).map_err(ComputeError::from));
                });
            }
            Command::Cancel { id, reply } => self.cancel(&id, reply),
            Command::Started { id, attempt } => {
                if let Some(running) = self.running.get(&id) {
                    if running.attempt == attempt && running.cancel_requested {
                        self.signal_cancel(&id, attempt);
                    }
                }
            }
            Command::Finished {
                id,
                attempt,
                record,
            } => self.finished(id, attempt, record).await,
            Command::LaunchAborted { id, attempt, retry } => {
                self.launch_aborted(id, attempt, retry)
            }
            Command::Usage(reply) => {
                let _ = reply.send(LoopUsage {
                    capacity: Amounts {
                        cpus: self.capacity.cpus_milli as f64 / 1000.0,
                        memory_mb: self.capacity.memory_mb,
                        gpus: self.capacity.gpus.clone(),
                    },
                    free: Amounts {
                        cpus: self.free.cpus_milli as f64 / 1000.0,
                        memory_mb: self.free.memory_mb,
                        gpus: self.free.gpus.iter().copied().collect(),
                    },
                    queued: self.queue.len(),
                    running: self.running.len(),
                });
            }
            Command::Wake => {}
        }
    }

    fn enqueue(&mut self, job: Job, queued_since_ms: i64) {
        let key = QueueKey {
            priority: Reverse(job.priority),
            created_at_ms: job.created_at_ms,
            id: job.id.clone(),
        };
        self.queue_keys.insert(job.id.clone(), key.clone());
        self.queue.insert(
            key,
            Queued {
                job,
                queued_since_ms,
            },
        );
        self.queue_len.store(self.queue.len(), Ordering::Relaxed);
    }

    fn dequeue(&mut self, id: &str) -> Option<Queued> {
        self.held.remove(id);
        let key = self.queue_keys.remove(id)?;
        let entry = self.queue.remove(&key);
        self.queue_len.store(self.queue.len(), Ordering::Relaxed);
        entry
    }

    /// Starts the queued jobs that fit, in fair-share order (`fair_share::plan`): each
    /// next start goes to the workspace furthest below its weighted share, its best job
    /// that fits and that its quotas allow.
    async fn schedule(&mut self) {
        if self.queue.is_empty() {
            return;
        }
        // One pool plans at a time: quotas count across pools.
        let sharing = self.sharing.clone();
        let _planning = sharing.planning();
        let now = now_ms();
        let ids: Vec<&str> = self.queue.keys().map(|k| k.id.as_str()).collect();
        let waiting: Vec<Waiting> = self
            .queue
            .values()
            .map(|q| Waiting {
                workspace: &q.job.workspace,
                resources: &q.job.resources,
                waited_ms: now - q.queued_since_ms,
            })
            .collect();
        self.shares.advance(now, &self.capacity);
        let mut quota_used = self.sharing.in_use_elsewhere(&self.pool);
        for (ws, u) in self.shares.used.iter().chain(&self.engine_queued) {
            *quota_used.entry(ws.clone()).or_default() += *u;
        }
        let free = &mut self.free;
        let picked = fair_share::plan(
            &waiting,
            &mut self.shares,
            &mut quota_used,
            &self.sharing.policies(),
            &self.capacity,
            self.options.backfill_window.as_millis() as i64,
            // What does not fit may still wait in the engine's queue, while it has room.
            |r| match free.reserve(&r.total()) {
                Some(gpus) => Some((gpus, false)),
                None if free.engine_queue > 0 => {
                    free.engine_queue -= 1;
                    Some((Vec::new(), true))
                }
                None => None,
            },
        );
        let to_start: Vec<(String, Vec<u32>, bool)> = picked
            .start
            .into_iter()
            .map(|(i, (gpus, queued))| (ids[i].to_string(), gpus, queued))
            .collect();
        let held: Vec<(String, String)> = picked
            .held
            .into_iter()
            .map(|(i, why)| (ids[i].to_string(), format!("waiting: {why}")))
            .collect();
        drop(waiting);
        let still: HashSet<&str> = held.iter().map(|(id, _)| id.as_str()).collect();
        let released: Vec<String> = self
            .held
            .keys()
            .filter(|id| !still.contains(id.as_str()))
            .cloned()
            .collect();
        for id in released {
            self.held.remove(&id);
            if self.queue_keys.contains_key(&id) {
                self.write_waiting_message(id, None);
            }
        }
        for (id, why) in held {
            if self.held.get(&id) != Some(&why) {
                self.held.insert(id.clone(), why.clone());
                self.write_waiting_message(id, Some(why));
            }
        }
        // What only waits in the engine's queue counts for quotas, not for fair share.
        for (id, _, on_engine_queue) in &to_start {
            if !on_engine_queue {
                continue;
            }
            if let Some(key) = self.queue_keys.get(id) {
                let job = &self.queue[key].job;
                self.shares.release(&job.workspace, &job.resources);
                self.engine_queued
                    .entry(job.workspace.clone())
                    .or_default()
                    .add(&job.resources);
            }
        }
        let started: HashSet<String> = to_start.iter().map(|(id, ..)| id.clone()).collect();
        for (id, gpus, on_engine_queue) in to_start {
            if let Some(queued) = self.dequeue(&id) {
                self.launch(queued, gpus, on_engine_queue);
            }
        }
        self.preempt_for_fair_share(&started);
    }

    /// With preemption on and none in flight: when the best waiting job of the workspace
    /// ranked first by fair share does not fit, ends the running jobs `fair_share::victims`
    /// picks (SIGTERM, then the kill grace), which are queued again when they end.
    fn preempt_for_fair_share(&mut self, started: &HashSet<String>) {
        let Some(rules) = self.preempt.clone() else {
            return;
        };
        if self.running.values().any(|r| r.preempting) {
            return;
        }
        let policies = self.sharing.policies();
        let waiting = self
            .queue
            .values()
            .filter(|q| !started.contains(&q.job.id) && !self.held.contains_key(&q.job.id))
            .min_by(|a, b| {
                let rank = |q: &Queued| {
                    self.shares.rank(
                        &q.job.workspace,
                        &self.capacity,
                        policies.of(&q.job.workspace).weight,
                    )
                };
                rank(a).total_cmp(&rank(b))
            });
        let Some(waiting) = waiting else { return };
        let mut active: Vec<&str> = self
            .queue
            .values()
            .map(|q| q.job.workspace.as_str())
            .chain(self.shares.used.keys().map(String::as_str))
            .collect();
        active.sort_unstable();
        active.dedup();
        let now = now_ms();
        let running: Vec<fair_share::Preemptible> = self
            .running
            .values()
            .filter(|r| !r.cancel_requested && !r.on_engine_queue)
            .map(|r| fair_share::Preemptible {
                id: &r.job.id,
                workspace: &r.job.workspace,
                resources: &r.job.resources,
                priority: r.job.priority,
                running_since_ms: r.launched_at_ms,
                preempted_at_ms: self.preempted.get(&r.job.id).map(|(at, _)| *at),
            })
            .collect();
        let free = fair_share::Amount {
            cpus_milli: self.free.cpus_milli,
            memory_mb: self.free.memory_mb,
            gpus: self.free.gpus.len() as u32,
        };
        let Some(chosen) = fair_share::victims(
            &waiting.job.resources,
            &waiting.job.workspace,
            free,
            &running,
            &self.shares.used,
            &active,
            &policies,
            &self.capacity,
            &rules,
            now,
        ) else {
            return;
        };
        let chosen: Vec<String> = chosen.into_iter().map(String::from).collect();
        let beneficiary = waiting.job.workspace.clone();
        drop(running);
        for id in chosen {
            let Some(running) = self.running.get_mut(&id) else {
                continue;
            };
            running.preempting = true;
            let attempt = running.attempt;
            tracing::info!(job = %id, attempt, for_workspace = %beneficiary, "preempting for fair share");
            self.signal_cancel(&id, attempt);
        }
    }

    /// Counts `job` as held by its workspace in this pool (for fair share and quotas).
    fn hold(&mut self, job: &Job) {
        self.shares.advance(now_ms(), &self.capacity);
        self.shares.hold(&job.workspace, &job.resources);
        self.publish();
    }

    /// Counts an ended attempt as no longer held.
    fn unhold(&mut self, ended: &Running) {
        self.shares.advance(now_ms(), &self.capacity);
        if ended.on_engine_queue {
            if let Some(u) = self.engine_queued.get_mut(&ended.job.workspace) {
                u.remove(&ended.job.resources);
                if u.jobs == 0 {
                    self.engine_queued.remove(&ended.job.workspace);
                }
            }
        } else {
            self.shares
                .release(&ended.job.workspace, &ended.job.resources);
        }
        self.publish();
    }

    /// Tells the other pools (for quotas) what this one's attempts hold: those running and
    /// those waiting in the engine's queue.
    fn publish(&self) {
        let mut held = self.shares.used.clone();
        for (ws, u) in &self.engine_queued {
            *held.entry(ws.clone()).or_default() += *u;
        }
        self.sharing.publish(&self.pool, &held);
    }

    /// Shows (or clears) why a queued job waits, off the loop.
    fn write_waiting_message(&self, id: String, why: Option<String>) {
        let db = self.store.db.clone();
        self.background
            .spawn_task("job-waiting-message", async move {
                if let Err(e) = db.set_waiting_message(&id, why.as_deref()).await {
                    tracing::warn!(job = %id, error = %e, "cannot show why a job waits");
                }
            });
    }

    /// Starts an attempt without blocking the loop: a task records the start, runs the
    /// supervisor and reports back. The resources stay reserved from now until it reports.
    fn launch(&mut self, queued: Queued, gpus: Vec<u32>, on_engine_queue: bool) {
        let mut job = queued.job;
        let attempt = job.attempt + 1;
        job.state = JobState::Running;
        job.attempt = attempt;
        self.held.remove(&job.id);
        // `plan` counted it already.
        self.publish();
        self.running.insert(
            job.id.clone(),
            Running {
                job: job.clone(),
                attempt,
                gpus: gpus.clone(),
                cancel_requested: false,
                preempting: false,
                on_engine_queue,
                launched_at_ms: now_ms(),
            },
        );
        let store = self.store.clone();
        let executor = self.executor.clone();
        let job_tracking = self.job_tracking.clone();
        let tx = self.tx.clone();
        let host = self.host.clone();
        let metrics = self.metrics.clone();
        let fence = self.fence.clone().expect("only a leading loop launches");
        self.background.spawn_task("job-launch", async move {
            let id = job.id.clone();
            let started = now_ms();
            // The start is durable before any process exists, so a restart never runs an
            // attempt twice; a crash in between leaves an attempt that is reconciled as lost.
            match store
                .db
                .mark_running(&id, attempt, &host, &gpus, started, &fence)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    let _ = tx.send(Command::LaunchAborted {
                        id,
                        attempt,
                        retry: false,
                    });
                    return;
                }
                Err(e) => {
                    tracing::error!(job = %id, error = %e, "cannot record job start; will retry");
                    let _ = tx.send(Command::LaunchAborted {
                        id,
                        attempt,
                        retry: true,
                    });
                    return;
                }
            }
            metrics
                .submit_to_start
                .observe((started - queued.queued_since_ms).max(0) as f64 / 1000.0);
            metrics.attempts_started.inc();
            let record = match job_tracking.attempt_env(&job).await {
                Ok(env) => {
                    let (started, on_start) = oneshot::channel();
                    let started_tx = tx.clone();
                    let started_id = id.clone();
                    tokio::spawn(async move {
                        if on_start.await.is_ok() {
                            let _ = started_tx.send(Command::Started {
                                id: started_id,
                                attempt,
                            });
                        }
                    });
                    let attempt = Attempt {
                        job,
                        number: attempt,
                        gpus,
                        env,
                    };
                    executor.run(attempt, started).await
                }
                Err(e) => {
                    tracing::error!(job = %id, error = %e, "cannot give the job its environment");
                    ExitRecord {
                        exit_code: None,
                        signal: None,
                        reason: ExitReason::SpawnFailed,
                        message: format!("cannot give the job its environment: {e}"),
                        finished_at_ms: now_ms(),
                    }
                }
            };
            let _ = tx.send(Command::Finished {
                id,
                attempt,
                record,
            });
        });
    }

    /// Removes `id` from the running set if it is running `attempt` (a stale report about
    /// an earlier attempt leaves it alone).
    fn take_running(&mut self, id: &str, attempt: u32) -> Option<Running> {
        match self.running.get(id) {
            Some(running) if running.attempt == attempt => {
                let running = self.running.remove(id)?;
                self.unhold(&running);
                Some(running)
            }
            _ => None,
        }
    }

    /// Frees what an ended attempt held. Resources freed go first to the attempt that has
    /// waited longest in the engine's queue: the engine starts it on them.
    fn give_back(&mut self, ended: &Running) {
        if ended.on_engine_queue {
            self.free.engine_queue += 1;
            return;
        }
        self.free
            .release(&ended.job.resources.total(), &ended.gpus, &self.capacity);
        let mut waiting: Vec<(i64, String)> = self
            .running
            .iter()
            .filter(|(_, r)| r.on_engine_queue)
            .map(|(id, r)| (r.launched_at_ms, id.clone()))
            .collect();
        waiting.sort();
        for (_, id) in waiting {
            let Some(running) = self.running.get_mut(&id) else {
                continue;
            };
            match self.free.reserve(&running.job.resources.total()) {
                Some(gpus) => {
                    running.on_engine_queue = false;
                    running.gpus = gpus;
                    self.free.engine_queue += 1;
                    let (ws, r) = (running.job.workspace.clone(), running.job.resources.clone());
                    if let Some(u) = self.engine_queued.get_mut(&ws) {
                        u.remove(&r);
                        if u.jobs == 0 {
                            self.engine_queued.remove(&ws);
                        }
                    }
                    self.shares.advance(now_ms(), &self.capacity);
                    self.shares.hold(&ws, &r);
                }
                None => break,
            }
        }
    }

    /// A launch that never started a process gives its resources back.
    fn launch_aborted(&mut self, id: String, attempt: u32, retry: bool) {
        let Some(running) = self.take_running(&id, attempt) else {
            return;
        };
        self.give_back(&running);
        if retry {
            let mut job = running.job;
            job.state = JobState::Queued;
            job.attempt = attempt - 1;
            if running.cancel_requested {
                self.finish_cancelled_queued(job, "cancelled before it started", None);
                return;
            }
            self.enqueue(job, now_ms());
            self.wake_later(Duration::from_secs(1));
        }
    }

    /// Watches an attempt an earlier server started until it ends.
    fn adopt(&self, job: Job, attempt: u32) {
        let executor = self.executor.clone();
        let tx = self.tx.clone();
        self.background.spawn_task("job-watch", async move {
            let record = executor.adopt(&job, attempt).await;
            let _ = tx.send(Command::Finished {
                id: job.id,
                attempt,
                record,
            });
        });
    }

    fn wake_later(&self, after: Duration) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(Command::Wake);
        });
    }

    /// Answers `reply` once the cancel is recorded (queued jobs) or sent (running ones).
    fn cancel(&mut self, id: &str, reply: oneshot::Sender<Result<(), ComputeError>>) {
        if let Some(queued) = self.dequeue(id) {
            let message = if queued.job.attempt == 0 {
                "cancelled before it started"
            } else {
                "cancelled while waiting for a retry"
            };
            self.finish_cancelled_queued(queued.job, message, Some(reply));
            return;
        }
        if self.retrying.contains(id) {
            self.cancel_when_requeued.insert(id.to_string());
            let _ = reply.send(Ok(()));
            return;
        }
        if let Some(running) = self.running.get_mut(id) {
            running.cancel_requested = true;
            let attempt = running.attempt;
            self.signal_cancel(id, attempt);
        }
        // Otherwise it ended between the caller's read and now: nothing left to cancel.
        let _ = reply.send(Ok(()));
    }

    /// Asks the attempt's supervisor to end the process tree (it records "cancelled").
    fn signal_cancel(&self, id: &str, attempt: u32) {
        let executor = self.executor.clone();
        let id = id.to_string();
        self.background.spawn_task("job-cancel", async move {
            executor.cancel(&id, attempt).await;
        });
    }

    /// Records a job that is not running as cancelled, off the loop. If the write fails the
    /// job goes back in the queue (the database still says `queued`).
    fn finish_cancelled_queued(
        &self,
        job: Job,
        message: &str,
        reply: Option<oneshot::Sender<Result<(), ComputeError>>>,
    ) {
        let outcome = Outcome {
            state: JobState::Cancelled,
            exit_code: None,
            exit_reason: ExitReason::Cancelled,
            message: Some(message.to_string()),
            finished_at_ms: now_ms(),
        };
        let store = self.store.clone();
        let executor = self.executor.clone();
        let tx = self.tx.clone();
        self.background.spawn_task("job-cancel", async move {
            match store
                .db
                .finish_job(&job.id, JobState::Queued, &outcome)
                .await
            {
                Ok(_) => {
                    executor.cleanup(&job.id).await;
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(()));
                    }
                }
                Err(e) => {
                    tracing::error!(job = %job.id, error = %e, "cannot record a cancel; job stays queued");
                    let _ = tx.send(Command::Return(Box::new(job)));
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
        });
    }

    async fn finished(&mut self, id: String, attempt: u32, record: ExitRecord) {
        let Some(running) = self.take_running(&id, attempt) else {
            return;
        };
        let job = &running.job;
        let succeeded = record.reason == ExitReason::Exited && record.exit_code == Some(0);
        // A job that finished well before a cancel reached it keeps its true outcome; one
        // that failed after a cancel was asked for is not retried.
        // Preempted: queued again, and the attempt does not count against its retries.
        let preempted = running.preempting && !running.cancel_requested && !succeeded;
        if preempted {
            let entry = self.preempted.entry(id.clone()).or_insert((0, 0));
            *entry = (now_ms(), entry.1 + 1);
        }
        let cancelled = !preempted
            && (record.reason == ExitReason::Cancelled || (running.cancel_requested && !succeeded));
        let preemptions = self.preempted.get(&id).map_or(0, |(_, n)| *n);
        let retry = preempted
            || (!cancelled && !succeeded && attempt.saturating_sub(preemptions) <= job.max_retries);
        if !retry {
            self.preempted.remove(&id);
        }
        let state = if cancelled {
            JobState::Cancelled
        } else if succeeded {
            JobState::Succeeded
        } else {
            JobState::Failed
        };
        let reason = if cancelled {
            ExitReason::Cancelled
        } else {
            record.reason
        };
        let message = if preempted {
            format!(
                "attempt {attempt} preempted to make room for another workspace's fair share; queued again (not counted against its retries)"
            )
        } else if retry {
            format!(
                "attempt {attempt} {}; retrying ({attempt} of {} retries used)",
                record.message, job.max_retries
            )
        } else {
            record.message.clone()
        };
        let outcome = Outcome {
            state,
            exit_code: record.exit_code,
            exit_reason: reason,
            message: Some(message),
            finished_at_ms: record.finished_at_ms,
        };
        // The processes are gone: the resources are free now. The outcome is written by a
        // task (retrying until the database takes it); a retry re-enters the queue only
        // once the database says `queued` again.
        self.metrics.attempts_finished.inc();
        self.give_back(&running);
        tracing::info!(job = %id, attempt, state = state.as_str(), retry, "attempt ended");
        if retry {
            self.retrying.insert(id.clone());
        }
        let store = self.store.clone();
        let executor = self.executor.clone();
        let tx = self.tx.clone();
        let mut job = running.job;
        let background = self.background.clone();
        self.background.spawn_task(OUTCOME_WRITER, async move {
            // Until the database takes it; meanwhile it counts as pending in /metrics.
            let what = format!("cannot record the outcome of job {id}");
            let _ = background
                .retry(OUTCOME_WRITER, &what, &Backoff::UNTIL_DONE, || async {
                    if retry {
                        store.db.requeue_job(&id, &outcome).await
                    } else {
                        store.db.finish_job(&id, JobState::Running, &outcome).await
                    }
                })
                .await;
            if retry {
                job.state = JobState::Queued;
                job.finished_at_ms = Some(outcome.finished_at_ms);
                let _ = tx.send(Command::Return(Box::new(job)));
            } else {
                executor.cleanup(&id).await;
            }
        });
    }
}

#[cfg(test)]
mod tests;
