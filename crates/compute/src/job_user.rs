//! The account jobs run as. A job is somebody else's code: run as the server's own user it
//! could read the server's secrets (`/proc/<server>/environ`, `<data-dir>/admin-token`, the
//! database) whatever their file modes say. So a server started as root runs jobs as a
//! dedicated unprivileged account, and the supervisor drops to it just before `exec`.

use std::ffi::CString;
use std::path::PathBuf;

use nix::unistd::{Gid, Uid, User};

use crate::ComputeError;

/// The account a root server runs jobs as unless told otherwise; created on first start.
pub const DEFAULT_JOB_USER: &str = "trainyard-job";

/// Variables of the server's environment a job may see; everything else is dropped (the
/// server's environment holds its secrets and configuration). A job's own `env` and the
/// tracking variables are added on top.
///
/// `TRAINYARD_ORT_LIB` (a path, no secret) goes along so that a built-in task checks its
/// ONNX export on the ONNX Runtime library the server serves with.
const PASSED_ENV: &[&str] = &[
    "PATH",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TERM",
    "TMPDIR",
    "TRAINYARD_ORT_LIB",
];

/// Uids given to jobs one each (systemd's range for dynamic users): jobs of one account
/// could read each other's `/proc/<pid>/environ` (their tokens) and signal each other.
pub const PER_JOB_UIDS: std::ops::Range<u32> = 61184..65520;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups of the account, set along with the uid.
    pub groups: Vec<u32>,
    pub home: PathBuf,
    /// Each running job gets a uid of its own from [`PER_JOB_UIDS`] (with this account's
    /// group), instead of the account's uid: the default account under root.
    pub per_job_uids: bool,
}

impl JobUser {
    /// The account this process runs as.
    pub fn current() -> Result<Self, ComputeError> {
        let uid = Uid::effective();
        let user = User::from_uid(uid)
            .map_err(|e| ComputeError::Io(std::io::Error::other(e)))?
            .ok_or_else(|| {
                ComputeError::Io(std::io::Error::other(format!(
                    "uid {uid} has no entry in the user database"
                )))
            })?;
        Self::from_user(user)
    }

    /// The account named `name`; an error when it does not exist.
    pub fn lookup(name: &str) -> Result<Self, ComputeError> {
        let user = User::from_name(name)
            .map_err(|e| ComputeError::Io(std::io::Error::other(e)))?
            .ok_or_else(|| {
                ComputeError::Io(std::io::Error::other(format!(
                    "job user `{name}` does not exist (create it, or pass --job-user NAME)"
                )))
            })?;
        Self::from_user(user)
    }

    fn from_user(user: User) -> Result<Self, ComputeError> {
        let name = CString::new(user.name.clone())
            .map_err(|e| ComputeError::Io(std::io::Error::other(e)))?;
        let groups = nix::unistd::getgrouplist(&name, user.gid)
            .map_err(|e| ComputeError::Io(std::io::Error::other(e)))?;
        Ok(Self {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups: groups.into_iter().map(Gid::as_raw).collect(),
            home: user.dir,
            per_job_uids: false,
        })
    }

    /// Whether jobs run as the server's own user (and so can read what it can).
    pub fn is_server_user(&self) -> bool {
        self.uid == Uid::effective().as_raw()
    }

    /// The account jobs run as: the one named; else, for a root server, the dedicated
    /// [`DEFAULT_JOB_USER`] (created with `useradd` when missing); else the server's own
    /// user, which can read the server's secrets (the caller warns).
    pub fn resolve(requested: Option<&str>) -> Result<Self, ComputeError> {
        let name = match requested {
            Some(name) => name,
            None if Uid::effective().is_root() => DEFAULT_JOB_USER,
            None => return Self::current(),
        };
        // The dedicated account under root: one uid per job.
        let per_job_uids = name == DEFAULT_JOB_USER && Uid::effective().is_root();
        // The dedicated account is made on first use; any other must exist already.
        if name == DEFAULT_JOB_USER
            && Uid::effective().is_root()
            && User::from_name(name).ok().flatten().is_none()
        {
            create_system_user(name)?;
        }
        let mut user = Self::lookup(name)?;
        user.per_job_uids = per_job_uids;
        // Only root can start processes as another user: say so now, not at every job.
        if !user.is_server_user() && !Uid::effective().is_root() {
            return Err(ComputeError::Io(std::io::Error::other(format!(
                "jobs cannot run as `{name}`: only a server started as root can run them as \
                 another user (leave --job-user out to run them as this user)"
            ))));
        }
        Ok(user)
    }

    /// The environment a job starts from: [`PASSED_ENV`] from the server's, and the account's
    /// own `HOME`, `USER` and `LOGNAME`.
    pub fn base_env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = PASSED_ENV
            .iter()
            .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?)))
            .chain(std::env::vars().filter(|(k, _)| k.starts_with("LC_")))
            .collect();
        env.push(("HOME".into(), self.home.display().to_string()));
        env.push(("USER".into(), self.name.clone()));
        env.push(("LOGNAME".into(), self.name.clone()));
        env
    }
}

/// `useradd --system`: no login shell, no home of its own.
fn create_system_user(name: &str) -> Result<(), ComputeError> {
    let out = std::process::Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ])
        .output()
        .map_err(|e| {
            ComputeError::Io(std::io::Error::other(format!(
                "cannot create the job user `{name}` (useradd: {e}); create it yourself or pass --job-user NAME"
            )))
        })?;
    if !out.status.success() && User::from_name(name).ok().flatten().is_none() {
        return Err(ComputeError::Io(std::io::Error::other(format!(
            "cannot create the job user `{name}`: useradd says {}; create it yourself or pass --job-user NAME",
            String::from_utf8_lossy(&out.stderr).trim()
        ))));
    }
    tracing::info!(user = name, "created the system account jobs run as");
    Ok(())
}

/// Turns this process into `user` (groups, then gid, then uid: the order in which each
/// step is still allowed). Called by the supervisor between fork and exec; async-signal-safe.
///
/// # Safety
/// Only between fork and exec (or in a single-threaded process).
pub(crate) unsafe fn become_user(uid: u32, gid: u32, groups: &[u32]) -> std::io::Result<()> {
    if libc::setgroups(groups.len(), groups.as_ptr()) != 0
        || libc::setgid(gid) != 0
        || libc::setuid(uid) != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    // A job that could get root back would have gained nothing by the drop.
    if uid != 0 && libc::setuid(0) == 0 {
        return Err(std::io::Error::other("the job could regain root"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_user_resolves_and_its_env_leaves_server_variables_out() {
        let me = JobUser::current().unwrap();
        assert!(me.is_server_user());
        assert!(me.groups.contains(&me.gid));
        let env = me.base_env();
        assert!(env.iter().any(|(k, _)| k == "HOME"));
        assert!(env.iter().all(|(k, _)| !k.starts_with("TRAINYARD_")));
        assert!(JobUser::lookup("no-such-user-trainyard-test").is_err());
    }
}
