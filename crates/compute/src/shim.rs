//! The per-attempt supervisor, run as `trainyard task shim`. It is started in its own
//! session, so it outlives the server: it runs the user's command in a new process group
//! with stdout/stderr appended to the job's spool file, enforces the timeout, turns SIGTERM
//! into a cancel of the whole process tree, and records the outcome in `attempt-N.exit.json`
//! before it exits. A restarted server reads that file, so nothing is lost across a crash.
//!
//! As a child subreaper it inherits every orphan of the job; when the command ends, whatever
//! it left behind (daemonised children included) is killed and reaped.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use trainyard_core::time::now_ms;
use trainyard_core::ExitReason;

/// Files of one job's executor folder.
pub fn output_path(dir: &Path) -> PathBuf {
    dir.join("output.log")
}
pub fn pid_path(dir: &Path, attempt: u32) -> PathBuf {
    dir.join(format!("attempt-{attempt}.pid.json"))
}
pub fn exit_path(dir: &Path, attempt: u32) -> PathBuf {
    dir.join(format!("attempt-{attempt}.exit.json"))
}

/// The command's environment for one attempt, written by the executor (mode 0600) and
/// removed by the supervisor once the command has started.
pub fn env_path(dir: &Path, attempt: u32) -> PathBuf {
    dir.join(format!("attempt-{attempt}.env.json"))
}

/// Identifies a live supervisor; the start time guards against a recycled pid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidRecord {
    pub pid: u32,
    pub start_ticks: u64,
}

/// The outcome of one attempt, written once by the supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: ExitReason,
    pub message: String,
    pub finished_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct ShimOptions {
    pub dir: PathBuf,
    pub attempt: u32,
    pub timeout: Option<Duration>,
    pub kill_grace: Duration,
    pub working_dir: Option<PathBuf>,
    /// The account the command runs as (uid, gid, supplementary groups); `None` = the
    /// supervisor's own. The supervisor itself keeps its user, so the job cannot touch its
    /// files (the outcome, the pid file) nor signal it.
    pub run_as: Option<RunAs>,
    pub command: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Writes `value` as JSON to `path` atomically (temporary file, then rename): a reader
/// sees the whole file or none. No fsync: these files must survive a crash of the server,
/// which the page cache gives; after a crash of the machine the processes are gone too,
/// and the attempt is reconciled as lost and retried per policy.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    {
        // Only the owner reads these (one of them holds the job's token).
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
    }
    fs::rename(&tmp, path)
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let bytes = fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The kernel's start time of `pid` in clock ticks since boot (field 22 of `/proc/PID/stat`).
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    stat_fields(pid)?.split_whitespace().nth(19)?.parse().ok()
}

/// `/proc/PID/stat` from the state field on (field 3). The command name before it may
/// contain spaces and parentheses, so fields start after the last ')'.
fn stat_fields(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat.get(stat.rfind(')')? + 2..)?.to_string())
}

/// Whether the process a pid file names is still the same, living process.
pub fn is_alive(record: &PidRecord) -> bool {
    match process_start_ticks(record.pid) {
        Some(ticks) => ticks == record.start_ticks && !is_zombie(record.pid),
        None => false,
    }
}

fn is_zombie(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f.starts_with('Z'))
}

/// The program a command names, looked up in the command's own `PATH` (std would search the
/// supervisor's): a name with a slash is taken as it is.
fn resolve_program(name: &str, path: Option<&str>) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    if name.contains('/') {
        return PathBuf::from(name);
    }
    for dir in path
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
    {
        let candidate = Path::new(dir).join(name);
        if fs::metadata(&candidate)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        {
            return candidate;
        }
    }
    PathBuf::from(name)
}

/// Runs the supervisor to completion and returns its own exit status.
pub fn run(opts: ShimOptions) -> i32 {
    match supervise(&opts) {
        Ok(record) => match write_json_atomic(&exit_path(&opts.dir, opts.attempt), &record) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("trainyard shim: cannot record the outcome: {e}");
                2
            }
        },
        Err(e) => {
            eprintln!("trainyard shim: {e}");
            2
        }
    }
}

fn supervise(opts: &ShimOptions) -> std::io::Result<ExitRecord> {
    // A session of its own: the supervisor must outlive the server and not share its
    // terminal's signals (Ctrl-C on `trainyard up` must not cancel jobs). Done here rather
    // than between fork and exec, so the server can start supervisors with posix_spawn.
    unsafe {
        libc::setsid();
    }
    // Signals are taken synchronously with sigtimedwait: block them before anything starts.
    let mut waited: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut waited);
        for sig in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut waited, sig);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &waited, std::ptr::null_mut());
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    let me = std::process::id();
    let start_ticks = process_start_ticks(me).unwrap_or(0);
    write_json_atomic(
        &pid_path(&opts.dir, opts.attempt),
        &PidRecord {
            pid: me,
            start_ticks,
        },
    )?;
    let mut output = OpenOptions::new()
        .create(true)
        .append(true)
        .open(output_path(&opts.dir))?;
    if opts.attempt > 1 {
        writeln!(output, "--- trainyard: attempt {} ---", opts.attempt)?;
    }

    // The command's environment comes from the executor's file (see `env_path`); without
    // one (a supervisor started by hand) the command gets an empty environment.
    let env_file = env_path(&opts.dir, opts.attempt);
    let env: Vec<(String, String)> = read_json(&env_file).unwrap_or_default();
    let path_var = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone());
    let program = resolve_program(&opts.command[0], path_var.as_deref());
    let mut command = Command::new(&program);
    command
        .env_clear()
        .envs(env)
        .args(&opts.command[1..])
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output.try_clone()?);
    if let Some(dir) = &opts.working_dir {
        command.current_dir(dir);
    }
    let run_as = opts.run_as.clone();
    // std changes directory before `pre_exec` runs, still as the supervisor's user; after the
    // drop the job user changes there again, so a folder it may not enter is refused.
    let workdir_c = match &opts.working_dir {
        Some(dir) => Some(
            std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
                .map_err(std::io::Error::other)?,
        ),
        None => None,
    };
    unsafe {
        command.pre_exec(move || {
            // Own process group, so one kill reaches the whole tree; default signal state.
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(r) = &run_as {
                crate::job_user::become_user(r.uid, r.gid, &r.groups)?;
                if let Some(dir) = &workdir_c {
                    if libc::chdir(dir.as_ptr()) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            Ok(())
        });
    }
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let what = match &opts.working_dir {
                Some(dir) => format!("`{}` in {}", opts.command[0], dir.display()),
                None => format!("`{}`", opts.command[0]),
            };
            let mut message = format!("cannot start {what}: {e}");
            if let (Some(r), std::io::ErrorKind::PermissionDenied) = (&opts.run_as, e.kind()) {
                message.push_str(&format!(
                    " (the job runs as uid {}, which may not enter or run it; use a folder \
                     others can read, or start the server with --job-user)",
                    r.uid
                ));
            }
            let _ = writeln!(output, "trainyard: {message}");
            let _ = output.sync_all();
            return Ok(ExitRecord {
                exit_code: Some(127),
                signal: None,
                reason: ExitReason::SpawnFailed,
                message,
                finished_at_ms: now_ms(),
            });
        }
    };
    let _ = fs::remove_file(&env_file);
    let pgid = child.id() as i32;
    let started = Instant::now();
    // An absurd timeout (past what Instant can hold) means no deadline, never a panic.
    let deadline = opts.timeout.and_then(|t| started.checked_add(t));
    let mut ending: Option<ExitReason> = None;
    let mut kill_at: Option<Instant> = None;
    let status: i32 = loop {
        if let Some(status) = reap(pgid) {
            break status;
        }
        let now = Instant::now();
        if ending.is_none() {
            if let Some(deadline) = deadline {
                if now >= deadline {
                    ending = Some(ExitReason::Timeout);
                    signal_group(pgid, libc::SIGTERM);
                    kill_at = Some(now + opts.kill_grace);
                }
            }
        }
        if let Some(at) = kill_at {
            if now >= at {
                signal_group(pgid, libc::SIGKILL);
                kill_orphans(me, libc::SIGKILL);
                kill_at = Some(now + Duration::from_secs(3600));
            }
        }
        let next = [deadline.filter(|_| ending.is_none()), kill_at]
            .into_iter()
            .flatten()
            .min();
        let wait = next
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(60));
        match wait_signal(&waited, wait) {
            Some(libc::SIGTERM) | Some(libc::SIGINT) | Some(libc::SIGHUP) if ending.is_none() => {
                ending = Some(ExitReason::Cancelled);
                signal_group(pgid, libc::SIGTERM);
                kill_at = Some(Instant::now() + opts.kill_grace);
            }
            _ => {}
        }
    };
    // The command is done: nothing it started may outlive it.
    signal_group(pgid, libc::SIGKILL);
    reap_everything(me);

    let (exit_code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        (Some(128 + sig), Some(sig))
    } else {
        (None, None)
    };
    let (reason, message) = match ending {
        Some(ExitReason::Timeout) => (
            ExitReason::Timeout,
            format!(
                "timed out after {} s; the process tree was ended",
                opts.timeout.map(|t| t.as_secs()).unwrap_or(0)
            ),
        ),
        Some(ExitReason::Cancelled) => (ExitReason::Cancelled, "cancelled".to_string()),
        _ => match (exit_code, signal) {
            (_, Some(sig)) => (
                ExitReason::Signaled,
                format!("killed by signal {sig} ({})", signal_name(sig)),
            ),
            (Some(code), None) => (ExitReason::Exited, format!("exited with code {code}")),
            (None, None) => (ExitReason::Exited, "ended".to_string()),
        },
    };
    if matches!(reason, ExitReason::Timeout) {
        let _ = writeln!(output, "trainyard: {message}");
    }
    Ok(ExitRecord {
        exit_code,
        signal,
        reason,
        message,
        finished_at_ms: now_ms(),
    })
}

/// Reaps every exited child; returns the wait status of `main` once it has exited.
fn reap(main: i32) -> Option<i32> {
    let mut found = None;
    loop {
        let mut status = 0;
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return found;
        }
        if pid == main {
            found = Some(status);
        }
    }
}

fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

fn signal_group(pgid: i32, sig: i32) {
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// Children of `parent`, from /proc (for the supervisor: orphans of the job re-parented
/// to it as subreaper).
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            stat_fields(*pid).and_then(|f| f.split_whitespace().nth(1)?.parse::<u32>().ok())
                == Some(parent)
        })
        .collect()
}

fn kill_orphans(me: u32, sig: i32) {
    for pid in children_of(me) {
        unsafe {
            libc::kill(pid as i32, sig);
        }
    }
}

/// Kills and reaps every remaining descendant, including ones that escaped the group
/// (as subreaper, they became our children when their parents died).
fn reap_everything(me: u32) {
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let mut status = 0;
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid < 0 {
            return; // ECHILD: nothing left, the common case, with no scan of /proc
        }
        if pid == 0 {
            if Instant::now() > give_up {
                return;
            }
            kill_orphans(me, libc::SIGKILL);
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGINT => "SIGINT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_identify_this_process() {
        let me = std::process::id();
        let ticks = process_start_ticks(me).expect("own /proc entry");
        assert!(is_alive(&PidRecord {
            pid: me,
            start_ticks: ticks
        }));
        assert!(!is_alive(&PidRecord {
            pid: me,
            start_ticks: ticks + 1
        }));
    }

    #[test]
    fn exit_records_round_trip_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let record = ExitRecord {
            exit_code: Some(3),
            signal: None,
            reason: ExitReason::Exited,
            message: "exited with code 3".into(),
            finished_at_ms: 1,
        };
        let path = exit_path(dir.path(), 1);
        write_json_atomic(&path, &record).unwrap();
        assert_eq!(read_json::<ExitRecord>(&path), Some(record));
        assert!(!path.with_extension("tmp").exists());
    }
}
