//! Executors that hand attempts to a cluster engine (Slurm, Ray) instead of running them
//! here. What they share lives here: the engine is asked to start an attempt under a name
//! derived from the job (so a server that crashed before it stored the engine's id finds the
//! job again by name), the engine's id is stored before the attempt counts as started, the
//! engine's state is polled and mapped to Trainyard's with the engine's reason kept, the
//! time limit is enforced from here (engines count in minutes or not at all), and the
//! attempt's output goes through the same spool → blob shipping as local jobs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use trainyard_core::time::now_ms;
use trainyard_core::{Capacity, ExitReason, InvalidField, Job, Resources};
use trainyard_store::{Blobs, Db};
use trainyard_tracking::Tracking;

use super::poller::StatePoller;
use super::spool::Spools;
use super::{Attempt, Executor, ExitRecord, Node};

/// How often a running attempt's output is pulled and shipped (its state is asked more
/// often, in the pool's [`StatePoller`] rounds).
const SHIP_EVERY: Duration = Duration::from_secs(1);
/// For engines that give a job's output only whole ([`Engine::reads_output_whole`]): the
/// bytes per second pulling may cost on average. A pull of `n` bytes waits `n / rate`
/// before the next (at most [`PULL_AT_LEAST_EVERY`]), so a job that has printed 30 MiB is
/// read every 30 s instead of every second; its last output is read when it ends.
const WHOLE_OUTPUT_BYTES_PER_S: f64 = 1024.0 * 1024.0;
/// The longest wait between two pulls of a running attempt's output, however long it is
/// (past 300 MiB a pull costs more than 1 MiB/s: a job printing that much is rare, and its
/// output should still show up).
const PULL_AT_LEAST_EVERY: Duration = Duration::from_secs(300);

/// How long to wait before pulling a running attempt's output again, after `pulled` bytes.
fn next_pull_after(reads_whole: bool, pulled: u64) -> Duration {
    if !reads_whole {
        return SHIP_EVERY;
    }
    Duration::from_secs_f64(pulled as f64 / WHOLE_OUTPUT_BYTES_PER_S)
        .clamp(SHIP_EVERY, PULL_AT_LEAST_EVERY)
}
/// How long an engine may fail to answer about an attempt before the attempt is given up
/// as lost (the engine job may still run; it is stopped if reachable).
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
/// State calls in flight at once in the default [`Engine::states`].
const STATE_CALLS_AT_ONCE: usize = 8;

/// Why a call to an engine failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The engine could not be reached or answered nonsense: worth retrying.
    #[error("{0}")]
    Unavailable(String),
    /// The engine refused the request (its own words): retrying will not help.
    #[error("{0}")]
    Rejected(String),
}

/// What an attempt looks like to an engine: everything resolved, nothing of Trainyard's
/// types. The program is a shell-free argv; engines that take a script or an entrypoint
/// string quote it themselves.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineJob {
    /// Unique per attempt and derived from it (`trainyard-<job>-<attempt>`), so the engine's
    /// job can be found again by name.
    pub name: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// Each worker's share.
    pub cpus: u32,
    pub memory_mb: Option<u64>,
    pub gpus: u32,
    /// Workers of a gang, started all at once (1: a plain job).
    pub workers: u32,
    /// The engine's own limit, a backstop behind the one enforced from here.
    pub time_limit_s: Option<u64>,
    /// Where the engine writes the attempt's output, when it writes a file (Slurm).
    pub output: PathBuf,
}

/// Where an engine's job is.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineState {
    /// Waiting in the engine's queue, with the engine's reason ("Resources", …).
    Pending(String),
    /// Running, with where (when the engine says).
    Running(Option<String>),
    /// Ended: how, as Trainyard records it.
    Ended(Ended),
}

/// How an engine's job ended, in Trainyard's terms, with the engine's own words.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub reason: ExitReason,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The engine's state and reason, verbatim ("FAILED", "NODE_FAIL", "STOPPED: …").
    pub engine_says: String,
}

/// One cluster engine, as the executor needs it.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    fn kind(&self) -> &'static str;

    /// Whether a job's environment is only what Trainyard gives it (Slurm through its REST
    /// API), so it needs a `PATH`; engines that add their nodes' own do not (Ray).
    fn needs_path(&self) -> bool {
        false
    }

    /// Whether the engine can run a gang (`resources.workers > 1`).
    fn supports_gangs(&self) -> bool {
        true
    }

    /// Starts `job`; returns the engine's id for it.
    async fn submit(&self, job: &EngineJob) -> Result<String, EngineError>;

    /// The id of the job named `name`, when the engine still knows one.
    async fn find(&self, name: &str) -> Result<Option<String>, EngineError>;

    /// Where job `id` is; `None` when the engine no longer knows it.
    async fn state(&self, id: &str) -> Result<Option<EngineState>, EngineError>;

    /// Where each of `ids` is, in their order: what [`StatePoller`] asks each round for
    /// every attempt the pool watches. By default one [`Engine::state`] call per id, a few
    /// at a time; an engine that can list its jobs in one call overrides it.
    async fn states(&self, ids: &[String]) -> Vec<Result<Option<EngineState>, EngineError>> {
        use futures::StreamExt;
        let calls: Vec<_> = ids.iter().map(|id| self.state(id)).collect();
        futures::stream::iter(calls)
            .buffered(STATE_CALLS_AT_ONCE)
            .collect()
            .await
    }

    /// Asks job `id` to end.
    async fn stop(&self, id: &str) -> Result<(), EngineError>;

    /// Whether [`Engine::pull_output`] reads the job's whole output each time (the Ray logs
    /// endpoint and the Kubernetes pod log call used here take no byte offset), so pulling a
    /// long log must be paced by its size.
    fn reads_output_whole(&self) -> bool {
        false
    }

    /// Appends to `spool` what job `id` printed beyond its first `pulled` bytes, when the
    /// engine keeps a job's output itself (Ray); engines that write the output file
    /// directly (Slurm, on shared storage) do nothing.
    async fn pull_output(
        &self,
        _id: &str,
        _spool: &std::path::Path,
        _pulled: u64,
    ) -> Result<(), EngineError> {
        Ok(())
    }

    /// The engine's nodes now.
    async fn nodes(&self) -> Result<Vec<Node>, EngineError>;
}

/// What every cluster pool is configured with besides its engine.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The pool's name (also in engine job names and its host column).
    pub pool: String,
    /// The `trainyard` program on the engine's nodes (for built-in tasks).
    pub program: PathBuf,
    /// The URL by which jobs on the engine's nodes reach this server.
    pub server_url: String,
    /// Holds one folder per active job: its output (Slurm writes it there, so for Slurm
    /// this must be storage the nodes share with the server).
    pub spool_dir: PathBuf,
    /// Attempts handed over beyond what fits, to wait in the engine's queue.
    pub engine_queue: u32,
}

/// An [`Executor`] over one cluster engine.
pub struct ClusterExecutor<E: Engine> {
    engine: Arc<E>,
    options: ClusterOptions,
    db: Db,
    spools: Spools,
    /// What the scheduler hands out: the engine's total at start.
    capacity: Capacity,
    /// The largest node: an attempt runs on one node, so one that fits no node never runs.
    largest_node: Capacity,
    host: String,
    /// Engine ids of attempts running now, by job id (for cancel).
    active: Mutex<HashMap<String, (u32, String)>>,
    /// Asks the engine about every watched attempt at once.
    poller: StatePoller,
}

impl<E: Engine> ClusterExecutor<E> {
    /// Asks the engine for its nodes (an unreachable engine is an error naming it) and
    /// takes their total as the pool's capacity.
    pub async fn connect(
        engine: E,
        options: ClusterOptions,
        db: Db,
        blobs: Blobs,
        tracking: Tracking,
    ) -> Result<Self, EngineError> {
        let nodes = engine.nodes().await?;
        let usable: Vec<&Node> = nodes.iter().filter(|n| node_usable(&n.state)).collect();
        if usable.is_empty() {
            return Err(EngineError::Rejected(format!(
                "the {} engine reports no usable node ({} in all)",
                engine.kind(),
                nodes.len()
            )));
        }
        let capacity = Capacity {
            cpus_milli: usable.iter().map(|n| (n.cpus * 1000.0) as u64).sum(),
            memory_mb: usable.iter().map(|n| n.memory_mb).sum(),
            gpus: (0..usable.iter().map(|n| n.gpus).sum()).collect(),
        };
        let largest_node = Capacity {
            cpus_milli: usable
                .iter()
                .map(|n| (n.cpus * 1000.0) as u64)
                .max()
                .unwrap_or(0),
            memory_mb: usable.iter().map(|n| n.memory_mb).max().unwrap_or(0),
            gpus: (0..usable.iter().map(|n| n.gpus).max().unwrap_or(0)).collect(),
        };
        std::fs::create_dir_all(&options.spool_dir)
            .map_err(|e| EngineError::Rejected(format!("{}: {e}", options.spool_dir.display())))?;
        let spool_dir = options.spool_dir.clone();
        let engine = Arc::new(engine);
        Ok(Self {
            host: format!("{}:{}", engine.kind(), options.pool),
            poller: StatePoller::start(engine.clone()),
            engine,
            spools: Spools::new(blobs, tracking, move |id| spool_dir.join(id).join("output")),
            options,
            db,
            capacity,
            largest_node,
            active: Mutex::new(HashMap::new()),
        })
    }

    /// The engine's name for attempt `attempt` of job `job_id`.
    pub fn engine_name(job_id: &str, attempt: u32) -> String {
        format!("trainyard-{job_id}-{attempt}")
    }

    /// The attempt as the engine gets it.
    fn engine_job(&self, attempt: &Attempt) -> EngineJob {
        let job = &attempt.job;
        let argv = match &job.task {
            Some(task) => std::iter::once(self.options.program.display().to_string())
                .chain(task.argv_after_program().map(str::to_string))
                .collect(),
            None => job.command.clone(),
        };
        let mut env: Vec<(String, String)> = Vec::new();
        if self.engine.needs_path() {
            env.push((
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ));
        }
        // The job reaches this server by the pool's URL, not by the one local jobs use.
        env.extend(attempt.env.iter().map(|(k, v)| {
            if k == "MLFLOW_TRACKING_URI" {
                (k.clone(), self.options.server_url.clone())
            } else {
                (k.clone(), v.clone())
            }
        }));
        env.extend(job.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.push(("TRAINYARD_JOB_ID".into(), job.id.clone()));
        env.push(("TRAINYARD_JOB_ATTEMPT".into(), attempt.number.to_string()));
        // Later entries win, as they would in an environment.
        let mut seen = std::collections::HashSet::new();
        let mut env: Vec<_> = env
            .into_iter()
            .rev()
            .filter(|(k, _)| seen.insert(k.clone()))
            .collect();
        env.reverse();
        EngineJob {
            name: Self::engine_name(&job.id, attempt.number),
            argv,
            env,
            working_dir: job.working_dir.clone(),
            cpus: job.resources.cpus.ceil().max(1.0) as u32,
            memory_mb: job.resources.memory_mb,
            gpus: job.resources.gpus,
            workers: job.resources.workers.max(1),
            // One minute more than ours (engines count whole minutes): ours acts first.
            time_limit_s: job.timeout_s.map(|t| t + 60),
            output: self.spools.path(&job.id),
        }
    }

    /// Where attempt `attempt`'s output starts in the job's spool (earlier attempts' output
    /// comes before it), written before the attempt is submitted so a restart knows it.
    fn attempt_start_path(&self, job_id: &str, attempt: u32) -> PathBuf {
        self.options
            .spool_dir
            .join(job_id)
            .join(format!("attempt-{attempt}.start"))
    }

    /// Bytes of this attempt's own output already in the spool.
    fn pulled(&self, job_id: &str, attempt: u32) -> u64 {
        let start = std::fs::read_to_string(self.attempt_start_path(job_id, attempt))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        self.spools.len(job_id).saturating_sub(start)
    }

    /// Polls the engine's job until it ends, shipping output and enforcing the time limit:
    /// from when the engine is first seen running it (time in the engine's queue does not
    /// count). For an attempt re-adopted after a restart (`from_running` false) that the
    /// engine already runs, from its recorded start: the time it ran while no server
    /// watched counts (with whatever it waited in the engine's queue before, which is not
    /// recorded).
    async fn watch(
        &self,
        job: &Job,
        attempt: u32,
        engine_id: &str,
        from_running: bool,
    ) -> ExitRecord {
        let mut shipping = self.spools.begin(job).await;
        let spool = self.spools.path(&job.id);
        let pull = || async {
            let pulled = self.pulled(&job.id, attempt);
            self.engine.pull_output(engine_id, &spool, pulled).await
        };
        let limit_ms = job.timeout_s.map(|t| (t as i64).saturating_mul(1000));
        let mut deadline = None;
        let mut first_look = true;
        let mut timed_out = false;
        let mut failing_since: Option<std::time::Instant> = None;
        let mut last_note = String::new();
        let mut shipped_at: Option<std::time::Instant> = None;
        let mut pulled_at: Option<std::time::Instant> = None;
        let mut pull_every = SHIP_EVERY;
        let ended = loop {
            if shipped_at.is_none_or(|at| at.elapsed() >= SHIP_EVERY) {
                if pulled_at.is_none_or(|at| at.elapsed() >= pull_every) {
                    if let Err(e) = pull().await {
                        tracing::debug!(job = %job.id, error = %e, "cannot pull output yet");
                    }
                    pulled_at = Some(std::time::Instant::now());
                    // The spool's size is read only where it paces the next pull.
                    let whole = self.engine.reads_output_whole();
                    let pulled = if whole {
                        self.pulled(&job.id, attempt)
                    } else {
                        0
                    };
                    pull_every = next_pull_after(whole, pulled);
                }
                // Shipping and the metric scan run every second on what has arrived.
                self.spools.tick(&job.id, &mut shipping).await;
                shipped_at = Some(std::time::Instant::now());
            }
            match self.poller.state(engine_id).await {
                Ok(Some(EngineState::Ended(ended))) => break Some(ended),
                Ok(None) => break None,
                Ok(Some(state)) => {
                    failing_since = None;
                    if deadline.is_none() && matches!(state, EngineState::Running(_)) {
                        let since = match (from_running, first_look) {
                            (false, true) => job.started_at_ms.unwrap_or_else(now_ms),
                            _ => now_ms(),
                        };
                        deadline = limit_ms.map(|l| since + l);
                    }
                    first_look = false;
                    let note = match &state {
                        EngineState::Pending(why) => {
                            format!("{}: pending ({why})", self.engine.kind())
                        }
                        EngineState::Running(Some(node)) => {
                            format!("{}: running on {node}", self.engine.kind())
                        }
                        EngineState::Running(None) => format!("{}: running", self.engine.kind()),
                        EngineState::Ended(_) => unreachable!("handled above"),
                    };
                    if note != last_note {
                        let _ = self
                            .db
                            .record_engine_job(&job.id, attempt, engine_id, Some(&note))
                            .await;
                        last_note = note;
                    }
                }
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                    tracing::warn!(job = %job.id, engine_id, error = %e, "cannot ask the engine about a job");
                    if since.elapsed() >= GIVE_UP_AFTER {
                        let _ = self.engine.stop(engine_id).await;
                        self.spools.end(&job.id, &shipping).await;
                        return lost(format!(
                            "the {} engine did not answer about job {engine_id} for a minute: {e}",
                            self.engine.kind()
                        ));
                    }
                }
            }
            if !timed_out && deadline.is_some_and(|d| now_ms() >= d) {
                timed_out = true;
                tracing::info!(job = %job.id, engine_id, "time limit reached; stopping");
                if let Err(e) = self.engine.stop(engine_id).await {
                    tracing::warn!(job = %job.id, error = %e, "cannot stop a job past its time limit");
                }
            }
            if failing_since.is_some() {
                // The round answered at once with an error: don't spin on it.
                tokio::time::sleep(SHIP_EVERY).await;
            }
        };
        let _ = pull().await;
        self.spools.end(&job.id, &shipping).await;
        let kind = self.engine.kind();
        match ended {
            // Stopped at its time limit and already gone from the engine.
            None if timed_out => ExitRecord {
                exit_code: None,
                signal: None,
                reason: ExitReason::Timeout,
                message: format!(
                    "timed out after {} s ({kind} job {engine_id} stopped)",
                    job.timeout_s.unwrap_or_default()
                ),
                finished_at_ms: now_ms(),
            },
            None => lost(format!(
                "the {kind} engine no longer knows job {engine_id}; its outcome is unknown"
            )),
            Some(ended) => {
                let reason = if timed_out && ended.reason != ExitReason::Exited {
                    ExitReason::Timeout
                } else {
                    ended.reason
                };
                let what = match (reason, ended.exit_code, ended.signal) {
                    (ExitReason::Timeout, ..) => {
                        format!("timed out after {} s", job.timeout_s.unwrap_or_default())
                    }
                    (ExitReason::Cancelled, ..) => "cancelled".to_string(),
                    (_, Some(code), _) => format!("exited with code {code}"),
                    (_, None, Some(signal)) => format!("killed by signal {signal}"),
                    _ => "ended".to_string(),
                };
                ExitRecord {
                    exit_code: ended.exit_code,
                    signal: ended.signal,
                    reason,
                    message: format!("{what} ({kind} job {engine_id}: {})", ended.engine_says),
                    finished_at_ms: now_ms(),
                }
            }
        }
    }
}

fn lost(message: String) -> ExitRecord {
    ExitRecord {
        exit_code: None,
        signal: None,
        reason: ExitReason::Lost,
        message,
        finished_at_ms: now_ms(),
    }
}

/// Whether a node in this engine state takes work (not down, drained or dead).
fn node_usable(state: &str) -> bool {
    let s = state.to_ascii_lowercase();
    ![
        "down", "drain", "fail", "dead", "future", "inval", "unknown",
    ]
    .iter()
    .any(|bad| s.contains(bad))
}

#[async_trait]
impl<E: Engine> Executor for ClusterExecutor<E> {
    fn kind(&self) -> &'static str {
        self.engine.kind()
    }

    fn capacity(&self) -> &Capacity {
        &self.capacity
    }

    fn never_fits(&self, want: &Resources) -> Option<InvalidField> {
        if want.workers > 1 && !self.engine.supports_gangs() {
            return Some(InvalidField::new(
                "resources.workers",
                format!(
                    "gangs are not built for {} pools yet; use this machine, Slurm or Ray",
                    self.engine.kind()
                ),
            ));
        }
        let one_worker = Resources {
            workers: 1,
            ..want.clone()
        };
        self.capacity.never_fits(&want.total()).or_else(|| {
            self.largest_node.never_fits(&one_worker).map(|why| {
                InvalidField::new(
                    why.field,
                    format!(
                        "{} (a worker runs on one node; the largest {} node is too small)",
                        why.message,
                        self.engine.kind()
                    ),
                )
            })
        })
    }

    async fn inventory(&self) -> Result<Vec<Node>, String> {
        self.engine.nodes().await.map_err(|e| e.to_string())
    }

    fn engine_queue(&self) -> u32 {
        self.options.engine_queue
    }

    fn host(&self) -> &str {
        &self.host
    }

    async fn run(&self, attempt: Attempt, started: oneshot::Sender<()>) -> ExitRecord {
        let job_id = attempt.job.id.clone();
        let number = attempt.number;
        let engine_job = self.engine_job(&attempt);
        let dir = self.options.spool_dir.join(&job_id);
        let start = self.spools.len(&job_id).to_string();
        if let Err(e) = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(self.attempt_start_path(&job_id, number), start))
        {
            return spawn_failed(format!("cannot prepare {}: {e}", dir.display()));
        }
        let engine_id = match self.engine.submit(&engine_job).await {
            Ok(id) => id,
            Err(EngineError::Rejected(e)) => {
                return spawn_failed(format!(
                    "the {} engine refused the job: {e}",
                    self.engine.kind()
                ))
            }
            // The request may have arrived all the same (only its answer was lost).
            Err(EngineError::Unavailable(e)) => match self.engine.find(&engine_job.name).await {
                Ok(Some(id)) => id,
                _ => {
                    return spawn_failed(format!(
                        "the {} engine did not take the job: {e}",
                        self.engine.kind()
                    ))
                }
            },
        };
        // Stored before the attempt counts as started: a restart finds the engine's job.
        for pause in [0u64, 250, 1000, 4000] {
            tokio::time::sleep(Duration::from_millis(pause)).await;
            match self
                .db
                .record_engine_job(&job_id, number, &engine_id, None)
                .await
            {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(job = %job_id, error = %e, "cannot record the engine's job id")
                }
            }
        }
        self.active
            .lock()
            .insert(job_id.clone(), (number, engine_id.clone()));
        let _ = started.send(());
        let mut job = attempt.job;
        job.engine_id = Some(engine_id.clone());
        let record = self.watch(&job, number, &engine_id, true).await;
        self.active.lock().remove(&job_id);
        record
    }

    async fn adopt(&self, job: &Job, attempt: u32) -> ExitRecord {
        let engine_id = match &job.engine_id {
            Some(id) => id.clone(),
            // Started, but the server died before it stored the engine's id: find it by name.
            None => match self
                .engine
                .find(&Self::engine_name(&job.id, attempt))
                .await
            {
                Ok(Some(id)) => {
                    let _ = self
                        .db
                        .record_engine_job(&job.id, attempt, &id, None)
                        .await;
                    id
                }
                Ok(None) => {
                    return lost(format!(
                        "the {} engine has no job for attempt {attempt} (the server stopped while starting it)",
                        self.engine.kind()
                    ))
                }
                Err(e) => {
                    return lost(format!(
                        "cannot ask the {} engine about attempt {attempt}: {e}",
                        self.engine.kind()
                    ))
                }
            },
        };
        self.active
            .lock()
            .insert(job.id.clone(), (attempt, engine_id.clone()));
        let record = self.watch(job, attempt, &engine_id, false).await;
        self.active.lock().remove(&job.id);
        record
    }

    async fn cancel(&self, job_id: &str, attempt: u32) -> bool {
        let engine_id = match self.active.lock().get(job_id) {
            Some((a, id)) if *a == attempt => id.clone(),
            _ => return false,
        };
        match self.engine.stop(&engine_id).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(job = job_id, engine_id, error = %e, "cannot stop the engine's job");
                false
            }
        }
    }

    async fn cleanup(&self, job_id: &str) {
        if self.spools.forget(job_id).await {
            let _ = tokio::fs::remove_dir_all(self.options.spool_dir.join(job_id)).await;
        }
    }

    fn log_shipped(&self, job_id: &str) -> Option<u64> {
        self.spools.shipped(job_id)
    }

    fn log_spool(&self, job_id: &str) -> Option<PathBuf> {
        Some(self.spools.path(job_id))
    }
}

fn spawn_failed(message: String) -> ExitRecord {
    ExitRecord {
        exit_code: None,
        signal: None,
        reason: ExitReason::SpawnFailed,
        message,
        finished_at_ms: now_ms(),
    }
}

/// Appends to `spool` what an engine's whole log `log` holds beyond the `pulled` bytes of
/// it already there (for engines that keep logs themselves and hand them out whole).
pub fn append_new_output(spool: &Path, log: &[u8], pulled: u64) -> Result<(), EngineError> {
    use std::io::Write;
    let have = usize::try_from(pulled).unwrap_or(usize::MAX);
    if log.len() <= have {
        return Ok(());
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(spool)
        .and_then(|mut f| f.write_all(&log[have..]).map(|()| f))
        .map_err(|e| EngineError::Unavailable(format!("{}: {e}", spool.display())))?;
    let _ = file.flush();
    Ok(())
}

/// `argv` as one POSIX shell command line (for engines that take a script or a string),
/// starting in `working_dir` when given. Fails on a NUL byte, which no shell can carry.
pub fn shell_command(argv: &[String], working_dir: Option<&str>) -> Result<String, EngineError> {
    let quote = |s: &str| {
        shlex::try_quote(s)
            .map(|q| q.into_owned())
            .map_err(|_| EngineError::Rejected("an argument contains a NUL byte".into()))
    };
    let mut line = String::new();
    if let Some(dir) = working_dir {
        line += &format!("cd -- {} || exit 1; ", quote(dir)?);
    }
    line += "exec";
    for arg in argv {
        line.push(' ');
        line += &quote(arg)?;
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_line_keeps_every_argument_as_given() {
        let argv: Vec<String> = ["/bin/echo", "a b", "it's", "$HOME", "`x`", ";rm -rf /"]
            .map(String::from)
            .to_vec();
        let line = shell_command(&argv, Some("/tmp/a dir")).unwrap();
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(line.replace("cd -- '/tmp/a dir' || exit 1; ", ""))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "a b it's $HOME `x` ;rm -rf /\n"
        );
        assert!(shell_command(&["a\0b".to_string()], None).is_err());
    }

    #[test]
    fn a_long_output_read_whole_is_pulled_less_often() {
        assert_eq!(next_pull_after(false, 500 << 20), SHIP_EVERY);
        assert_eq!(next_pull_after(true, 0), SHIP_EVERY);
        assert_eq!(next_pull_after(true, 512 << 10), SHIP_EVERY);
        // 30 MiB printed: read every 30 s, about 1 MiB/s on average; never rarer than 5 minutes.
        assert_eq!(next_pull_after(true, 30 << 20), Duration::from_secs(30));
        assert_eq!(next_pull_after(true, 5 << 30), PULL_AT_LEAST_EVERY);
    }

    #[test]
    fn down_and_drained_nodes_take_no_work() {
        for bad in ["down", "DOWN+DRAIN", "drained", "DEAD", "IDLE+DRAIN"] {
            assert!(!node_usable(bad), "{bad}");
        }
        for good in ["idle", "mixed", "allocated", "ALIVE", "MIXED+COMPLETING"] {
            assert!(node_usable(good), "{good}");
        }
    }
}
