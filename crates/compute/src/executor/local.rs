//! The local executor: runs attempts on this machine. It starts one supervisor (`trainyard task shim`) per attempt, watches it,
//! and ships the attempt's output from the local spool file to the blob store while it runs.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::oneshot;
use trainyard_core::time::now_ms;
use trainyard_core::{Capacity, ExitReason, Job};
use trainyard_store::{log_end, Blobs};
use trainyard_tracking::Tracking;

use crate::job_metrics::MetricScanner;
use crate::job_user::JobUser;

use super::{Attempt, Executor};
use crate::shim::{self, ExitRecord, PidRecord};
use crate::ComputeError;

/// Largest piece of log read into memory and uploaded at once.
pub(crate) const SHIP_CHUNK: u64 = 4 << 20;
/// Upload at least this often while output is pending, so blobs lag the process little…
const SHIP_INTERVAL: Duration = Duration::from_secs(2);
/// …but for attempts running longer than `SHIP_SETTLE`, only this often, so a long job
/// that prints slowly leaves thousands, not tens of thousands, of chunks a day. Live
/// readers lose nothing: they read the unshipped tail from the spool.
const SHIP_INTERVAL_LONG: Duration = Duration::from_secs(30);
const SHIP_SETTLE: Duration = Duration::from_secs(60);

/// The supervisor's own `PATH` (it runs the command through the command's environment).
const SUPERVISOR_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Clone)]
pub struct LocalExecutor {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    program: PathBuf,
    blobs: Blobs,
    kill_grace: Duration,
    /// The account jobs run as.
    job_user: JobUser,
    /// Per-job uids held by running attempts (see `JobUser::per_job_uids`), by job id.
    job_uids: Mutex<HashMap<String, u32>>,
    /// Bytes of each active job's log already in the blob store.
    shipped: Mutex<HashMap<String, Arc<AtomicU64>>>,
    tracking: Tracking,
    capacity: Capacity,
    host: String,
    /// Jobs whose output is scanned for metrics.
    scanners: Mutex<HashMap<String, Arc<tokio::sync::Mutex<MetricScanner>>>>,
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
        Ok(Self {
            inner: Arc::new(Inner {
                root: options.root,
                program: options.program,
                blobs,
                kill_grace: options.kill_grace,
                job_user: options.job_user,
                capacity: options.capacity,
                host,
                job_uids: Mutex::new(HashMap::new()),
                shipped: Mutex::new(HashMap::new()),
                tracking,
                scanners: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn job_dir(&self, job_id: &str) -> PathBuf {
        self.inner.root.join(job_id)
    }

    fn tracking(&self) -> &Tracking {
        &self.inner.tracking
    }

    /// Starts reading `job`'s output for its declared metrics (from what is already shipped,
    /// after a restart).
    async fn collect_metrics(&self, job: &Job) {
        let from = self.shipped_counter(&job.id).await.load(Ordering::Acquire);
        if let Some(scanner) = MetricScanner::for_job(job, from) {
            self.inner
                .scanners
                .lock()
                .insert(job.id.clone(), Arc::new(tokio::sync::Mutex::new(scanner)));
        }
    }

    async fn scan_metrics(&self, job_id: &str, finished: bool) {
        let scanner = self.inner.scanners.lock().get(job_id).cloned();
        if let Some(scanner) = scanner {
            let len = self.spool_len(job_id);
            let spool = self.spool_path(job_id);
            scanner
                .lock()
                .await
                .scan(&spool, len, finished, self.tracking())
                .await;
            if finished {
                self.inner.scanners.lock().remove(job_id);
            }
        }
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
    async fn watch(&self, job_id: &str, attempt: u32, watch: Watch) -> ExitRecord {
        let record = self.watch_attempt(job_id, attempt, watch).await;
        // Its processes are gone (the supervisor reaped the whole tree): the uid is free.
        self.inner.job_uids.lock().remove(job_id);
        record
    }

    async fn watch_attempt(&self, job_id: &str, attempt: u32, watch: Watch) -> ExitRecord {
        let dir = self.job_dir(job_id);
        let shipped = self.shipped_counter(job_id).await;
        let started = Instant::now();
        let mut last_ship = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let ended = match watch {
            Watch::Child(mut child) => loop {
                tokio::select! {
                    status = child.wait() => break status.ok(),
                    _ = tick.tick() => {
                        self.scan_metrics(job_id, false).await;
                        self.ship_if_due(job_id, &shipped, started, &mut last_ship).await
                    }
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
                self.scan_metrics(job_id, false).await;
                self.ship_if_due(job_id, &shipped, started, &mut last_ship)
                    .await;
            },
        };
        self.scan_metrics(job_id, true).await;
        if !self.ship_rest(job_id, &shipped).await {
            tracing::error!(
                job = job_id,
                "the end of this job's log could not be shipped; it stays in the local spool"
            );
        }
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

    /// Forgets a finished job's local files, but only once every byte of its log is in
    /// the blob store: until then the spool is the only copy, and readers keep using it.
    async fn forget(&self, job_id: &str) {
        let shipped = self.shipped_counter(job_id).await;
        if !self.ship_rest(job_id, &shipped).await {
            tracing::error!(
                job = job_id,
                "keeping the local log of a finished job: the blob store does not take it"
            );
            return;
        }
        self.inner.shipped.lock().remove(job_id);
        let _ = tokio::fs::remove_dir_all(self.job_dir(job_id)).await;
    }

    /// Bytes of `job_id`'s log already shipped, when the job is active on this executor.
    fn shipped(&self, job_id: &str) -> Option<u64> {
        self.inner
            .shipped
            .lock()
            .get(job_id)
            .map(|c| c.load(Ordering::Acquire))
    }

    fn spool_path(&self, job_id: &str) -> PathBuf {
        shim::output_path(&self.job_dir(job_id))
    }

    /// Bytes in the job's local spool (0 when it has none).
    fn spool_len(&self, job_id: &str) -> u64 {
        std::fs::metadata(self.spool_path(job_id))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    async fn shipped_counter(&self, job_id: &str) -> Arc<AtomicU64> {
        if let Some(c) = self.inner.shipped.lock().get(job_id) {
            return c.clone();
        }
        // After a restart the blob store is the truth about what was shipped. If it cannot
        // be listed, shipping again from 0 is safe: chunks hold the same bytes at the same
        // offsets, and readers accept overlapping chunks.
        let mut end = None;
        for attempt in 0..3 {
            match self.inner.blobs.log_chunks(job_id).await {
                Ok(chunks) => {
                    end = Some(log_end(&chunks));
                    break;
                }
                Err(e) => {
                    tracing::warn!(job = job_id, error = %e, attempt, "cannot list shipped log");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        let end = end.unwrap_or(0);
        self.inner
            .shipped
            .lock()
            .entry(job_id.to_string())
            .or_insert_with(|| Arc::new(AtomicU64::new(end)))
            .clone()
    }

    async fn ship_if_due(
        &self,
        job_id: &str,
        shipped: &AtomicU64,
        started: Instant,
        last: &mut Instant,
    ) {
        let interval = if started.elapsed() < SHIP_SETTLE {
            SHIP_INTERVAL
        } else {
            SHIP_INTERVAL_LONG
        };
        let pending = self
            .spool_len(job_id)
            .saturating_sub(shipped.load(Ordering::Acquire));
        if pending >= SHIP_CHUNK || (pending > 0 && last.elapsed() >= interval) {
            self.ship_all(job_id, shipped).await;
            *last = Instant::now();
        }
    }

    /// Uploads everything in the spool beyond what was shipped, one bounded piece at a
    /// time; true when nothing is left to ship.
    async fn ship_all(&self, job_id: &str, shipped: &AtomicU64) -> bool {
        let path = self.spool_path(job_id);
        loop {
            let from = shipped.load(Ordering::Acquire);
            if self.spool_len(job_id) <= from {
                return true; // nothing new (or no spool at all): no need to open it
            }
            let piece = match read_piece(&path, from, SHIP_CHUNK).await {
                Ok(piece) if !piece.is_empty() => piece,
                Ok(_) => return true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
                Err(e) => {
                    tracing::warn!(job = job_id, error = %e, "cannot read job output");
                    return false;
                }
            };
            let n = piece.len() as u64;
            if let Err(e) = self.inner.blobs.put_log_chunk(job_id, from, piece).await {
                tracing::warn!(job = job_id, error = %e, "cannot ship log chunk; will retry");
                return false;
            }
            shipped.store(from + n, Ordering::Release);
        }
    }

    /// Ships the rest of a finished attempt's output, retrying a blob store that fails
    /// for a while (about a minute) before giving up; false when some is still unshipped.
    async fn ship_rest(&self, job_id: &str, shipped: &AtomicU64) -> bool {
        let mut pause = Duration::from_millis(250);
        for _ in 0..10 {
            if self.ship_all(job_id, shipped).await {
                return true;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(15));
        }
        false
    }
}

#[async_trait]
impl Executor for LocalExecutor {
    fn capacity(&self) -> &Capacity {
        &self.inner.capacity
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
        self.collect_metrics(&job).await;
        match self.spawn(&job, number, &gpus, &env) {
            Ok(watch) => {
                let _ = started.send(());
                self.watch(&job.id, number, watch).await
            }
            Err(e) => {
                tracing::error!(job = %job.id, error = %e, "cannot start the job's supervisor");
                self.inner.scanners.lock().remove(&job.id);
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
        self.collect_metrics(job).await;
        self.watch(&job.id, attempt, Watch::Adopted).await
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
        self.shipped(job_id)
    }

    fn log_spool(&self, job_id: &str) -> Option<PathBuf> {
        Some(self.spool_path(job_id))
    }
}

/// Reads at most `max` bytes of `path` from `offset` on a blocking thread.
pub(crate) async fn read_piece(path: &Path, offset: u64, max: u64) -> std::io::Result<Bytes> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&path)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::new();
        f.take(max).read_to_end(&mut buf)?;
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(std::io::Error::other)?
}
