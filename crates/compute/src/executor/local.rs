//! The local executor: runs attempts on this machine. It starts one supervisor (`trainyard task shim`) per attempt, watches it,
//! and ships the attempt's output from the local spool file to the blob store while it runs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use async_trait::async_trait;
use tokio::sync::oneshot;
use trainyard_core::time::now_ms;
use trainyard_core::{Capacity, ExitReason, Job};
use trainyard_store::Blobs;
use trainyard_tracking::Tracking;

use crate::job_user::JobUser;

use super::spool::Spools;
use super::{Attempt, Executor};
use crate::shim::{self, ExitRecord, PidRecord};
use crate::ComputeError;

/// The supervisor's own `PATH` (it runs the command through the command's environment).
const SUPERVISOR_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Clone)]
pub struct LocalExecutor {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    program: PathBuf,
    kill_grace: Duration,
    /// The account jobs run as.
    job_user: JobUser,
    /// Per-job uids held by running attempts (see `JobUser::per_job_uids`), by job id.
    job_uids: Mutex<HashMap<String, u32>>,
    /// Each job's supervisor output, shipped to blobs as it grows.
    spools: Spools,
    capacity: Capacity,
    host: String,
}

/// How the executor learns that an attempt has ended.
enum Watch {
    /// We started the supervisor: wait for it directly.
    Child(tokio::process::Child),
    /// A supervisor from before a restart: poll its pid and exit file.
    Adopted,
}

/// How the local executor is set up.
pub struct LocalOptions {
    /// Holds one folder per active job (spool, pid, exit and env files).
    pub root: PathBuf,
    /// The `trainyard` binary: supervisors run as `program task shim`, and a job that
    /// names a built-in task runs `program task run`.
    pub program: PathBuf,
    pub kill_grace: Duration,
    /// The account jobs run as.
    pub job_user: JobUser,
    /// What this machine offers to jobs.
    pub capacity: Capacity,
}

impl LocalExecutor {
    /// `tracking` is where metrics declared by a job (read from its output) are logged.
    pub fn new(
        options: LocalOptions,
        blobs: Blobs,
        tracking: Tracking,
    ) -> Result<Self, ComputeError> {
        std::fs::create_dir_all(&options.root)?;
        let host = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "localhost".into());
        let root = options.root.clone();
        Ok(Self {
            inner: Arc::new(Inner {
                root: options.root,
                program: options.program,
                kill_grace: options.kill_grace,
                job_user: options.job_user,
                capacity: options.capacity,
                host,
                job_uids: Mutex::new(HashMap::new()),
                spools: Spools::new(blobs, tracking, move |id| shim::output_path(&root.join(id))),
            }),
        })
    }

    pub fn job_dir(&self, job_id: &str) -> PathBuf {
        self.inner.root.join(job_id)
    }

    /// Starts attempt `attempt` of `job` with `gpus` visible to it.
    fn spawn(
        &self,
        job: &Job,
        attempt: u32,
        gpus: &[u32],
        extra_env: &[(String, String)],
    ) -> Result<Watch, ComputeError> {
        let dir = self.job_dir(&job.id);
        std::fs::create_dir_all(&dir)?;
        let mut cmd = std::process::Command::new(&self.inner.program);
        cmd.arg("task")
            .arg("shim")
            .arg("--dir")
            .arg(&dir)
            .arg("--attempt")
            .arg(attempt.to_string())
            .arg("--kill-grace-ms")
            .arg(self.inner.kill_grace.as_millis().to_string());
        if let Some(t) = job.timeout_s {
            cmd.arg("--timeout-s").arg(t.to_string());
        }
        if let Some(wd) = &job.working_dir {
            cmd.arg("--workdir").arg(wd);
        }
        let user = &self.inner.job_user;
        if !user.is_server_user() {
            let uid = if user.per_job_uids {
                self.take_job_uid(&job.id)
            } else {
                user.uid
            };
            cmd.arg("--uid")
                .arg(uid.to_string())
                .arg("--gid")
                .arg(user.gid.to_string())
                .arg("--groups")
                .arg(
                    user.groups
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                );
        }
        cmd.arg("--");
        // A gang's workers are started by this machine's launcher, under the supervisor.
        let workers = job.resources.workers;
        if workers > 1 {
            cmd.arg(&self.inner.program)
                .args(["task", "gang", "--workers", &workers.to_string()])
                .args(["--gpus-per-worker", &job.resources.gpus.to_string()])
                .args([
                    "--kill-grace-ms",
                    &self.inner.kill_grace.as_millis().to_string(),
                    "--",
                ]);
        }
        match &job.task {
            // A built-in task runs this machine's own program, whatever machine submitted it.
            Some(task) => cmd.arg(&self.inner.program).args(task.argv_after_program()),
            None => cmd.args(&job.command),
        };
        // The command's environment: nothing of the server's (its secrets, its
        // configuration) but the few variables `base_env` names, then the job's own. It
        // goes to the supervisor in a file, not in its own environment: the supervisor may
        // run as root, and a job's `LD_PRELOAD` must never reach a root process.
        let mut env: Vec<(String, String)> = user.base_env();
        env.extend(extra_env.iter().cloned());
        env.extend(job.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.push(("TRAINYARD_JOB_ID".into(), job.id.clone()));
        env.push(("TRAINYARD_JOB_ATTEMPT".into(), attempt.to_string()));
        env.push((
            "CUDA_VISIBLE_DEVICES".into(),
            gpus.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ));
        shim::write_json_atomic(&shim::env_path(&dir, attempt), &env)?;
        cmd.env_clear()
            .env("PATH", SUPERVISOR_PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(false);
        let child = cmd.spawn()?;
        Ok(Watch::Child(child))
    }

    /// Asks the attempt's supervisor to end the job's process tree (it records "cancelled").
    fn signal_cancel(&self, job_id: &str, attempt: u32) -> bool {
        let dir = self.job_dir(job_id);
        // The supervisor writes its pid file first thing; give a just-started one time.
        for _ in 0..500 {
            if let Some(record) = shim::read_json::<PidRecord>(&shim::pid_path(&dir, attempt)) {
                if shim::is_alive(&record) {
                    unsafe {
                        libc::kill(record.pid as i32, libc::SIGTERM);
                    }
                    return true;
                }
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// A uid no other running job holds, for `job_id`, from `PER_JOB_UIDS` (starting at a
    /// place its id picks, so restarts spread out). Jobs re-adopted after a restart are not
    /// known here; a clash with one of them shares a uid, as every job did before.
    fn take_job_uid(&self, job_id: &str) -> u32 {
        let mut held = self.inner.job_uids.lock();
        if let Some(uid) = held.get(job_id) {
            return *uid;
        }
        let range = crate::job_user::PER_JOB_UIDS;
        let size = range.end - range.start;
        let start = job_id
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
            % size;
        let in_use: std::collections::HashSet<u32> = held.values().copied().collect();
        let uid = (0..size)
            .map(|i| range.start + (start + i) % size)
            .find(|u| !in_use.contains(u))
            .unwrap_or(range.start + start);
        held.insert(job_id.to_string(), uid);
        uid
    }

    /// Waits until the attempt ends, shipping output meanwhile; returns how it ended.
    async fn watch(&self, job: &Job, attempt: u32, watch: Watch) -> ExitRecord {
        let record = self.watch_attempt(job, attempt, watch).await;
        // Its processes are gone (the supervisor reaped the whole tree): the uid is free.
        self.inner.job_uids.lock().remove(&job.id);
        record
    }

    async fn watch_attempt(&self, job: &Job, attempt: u32, watch: Watch) -> ExitRecord {
        let job_id = job.id.as_str();
        let dir = self.job_dir(job_id);
        let spools = &self.inner.spools;
        let mut shipping = spools.begin(job).await;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let ended = match watch {
            Watch::Child(mut child) => loop {
                tokio::select! {
                    status = child.wait() => break status.ok(),
                    _ = tick.tick() => spools.tick(job_id, &mut shipping).await,
                }
            },
            Watch::Adopted => loop {
                tick.tick().await;
                if shim::exit_path(&dir, attempt).exists() {
                    break None;
                }
                let alive = shim::read_json::<PidRecord>(&shim::pid_path(&dir, attempt))
                    .map(|r| shim::is_alive(&r))
                    .unwrap_or(false);
                if !alive {
                    break None;
                }
                spools.tick(job_id, &mut shipping).await;
            },
        };
        spools.end(job_id, &shipping).await;
        match shim::read_json::<ExitRecord>(&shim::exit_path(&dir, attempt)) {
            Some(record) => record,
            None => ExitRecord {
                exit_code: None,
                signal: None,
                reason: ExitReason::Lost,
                message: match ended {
                    Some(status) => format!(
                        "the job's supervisor ended ({status}) without recording an outcome"
                    ),
                    None => "the job's supervisor disappeared (was the machine restarted?); \
                             its outcome is unknown"
                        .to_string(),
                },
                finished_at_ms: now_ms(),
            },
        }
    }

    /// Forgets a finished job's local files once its log is all in the blob store.
    async fn forget(&self, job_id: &str) {
        if self.inner.spools.forget(job_id).await {
            let _ = tokio::fs::remove_dir_all(self.job_dir(job_id)).await;
        }
    }
}

#[async_trait]
impl Executor for LocalExecutor {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn capacity(&self) -> &Capacity {
        &self.inner.capacity
    }

    /// This machine and what it offers (the pool's loop fills in what is free: it alone
    /// knows what it handed out).
    async fn inventory(&self) -> Result<Vec<super::Node>, String> {
        let c = &self.inner.capacity;
        Ok(vec![super::Node {
            name: self.inner.host.clone(),
            state: "up".into(),
            cpus: c.cpus_milli as f64 / 1000.0,
            memory_mb: c.memory_mb,
            gpus: c.gpus.len() as u32,
            free_cpus: None,
            free_memory_mb: None,
            free_gpus: None,
        }])
    }

    fn host(&self) -> &str {
        &self.inner.host
    }

    async fn run(&self, attempt: Attempt, started: oneshot::Sender<()>) -> ExitRecord {
        let Attempt {
            job,
            number,
            gpus,
            env,
        } = attempt;
        match self.spawn(&job, number, &gpus, &env) {
            Ok(watch) => {
                let _ = started.send(());
                self.watch(&job, number, watch).await
            }
            Err(e) => {
                tracing::error!(job = %job.id, error = %e, "cannot start the job's supervisor");
                self.inner.spools.abandon(&job.id);
                ExitRecord {
                    exit_code: None,
                    signal: None,
                    reason: ExitReason::SpawnFailed,
                    message: format!("cannot start the job's supervisor: {e}"),
                    finished_at_ms: now_ms(),
                }
            }
        }
    }

    async fn adopt(&self, job: &Job, attempt: u32) -> ExitRecord {
        self.watch(job, attempt, Watch::Adopted).await
    }

    async fn cancel(&self, job_id: &str, attempt: u32) -> bool {
        let this = self.clone();
        let id = job_id.to_string();
        tokio::task::spawn_blocking(move || this.signal_cancel(&id, attempt))
            .await
            .unwrap_or(false)
    }

    async fn cleanup(&self, job_id: &str) {
        self.forget(job_id).await
    }

    fn log_shipped(&self, job_id: &str) -> Option<u64> {
        self.inner.spools.shipped(job_id)
    }

    fn log_spool(&self, job_id: &str) -> Option<PathBuf> {
        Some(self.inner.spools.path(job_id))
    }
}
