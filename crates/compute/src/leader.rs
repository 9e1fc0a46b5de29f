//! Which server schedules. Several servers may share one PostgreSQL database; all of them
//! answer the API, one of them runs the scheduler loops at a time: the holder of the lease
//! in the database (`trainyard_store::Fence`). A background worker takes the lease when it
//! is free or expired, renews it well before it expires, and publishes whether this server
//! leads; the loops follow. Every job start is fenced by the lease's epoch in the same
//! write, so a leader that was paused past its lease cannot start anything once another
//! server took over.
//!
//! SQLite is single-server: a second process on the same file is refused at start, naming
//! the one that runs.

use std::time::Duration;

use tokio::sync::watch;
use trainyard_background::Background;
use trainyard_core::time::now_ms;
use trainyard_store::{Db, Fence};

use crate::ComputeError;

/// How the lease is held.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    /// This server, unique among those sharing the database: `HOST/PID/RANDOM`.
    pub holder: String,
    /// This server's API URL, shown to the others.
    pub address: String,
    /// How long a lease lasts unless renewed: the longest a dead leader's jobs wait.
    pub ttl: Duration,
    /// Only one server may ever use the database (SQLite).
    pub single_server: bool,
}

impl LeaseOptions {
    /// A holder name for this process.
    pub fn holder_for_this_process() -> String {
        let host = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "localhost".into());
        format!("{host}/{}/{}", std::process::id(), trainyard_core::new_id())
    }

    /// The default: a 5 s lease (handover within about 6 s of a leader's death).
    pub fn new(address: String, single_server: bool) -> Self {
        Self {
            holder: Self::holder_for_this_process(),
            address,
            ttl: Duration::from_secs(5),
            single_server,
        }
    }
}

/// Whether this server leads, as the lease worker last saw it.
#[derive(Clone)]
pub struct Leadership {
    rx: watch::Receiver<Option<Fence>>,
    single_server: bool,
}

/// Why a holder on this machine is known to be gone: its process no longer exists.
fn holder_is_dead_here(holder: &str) -> bool {
    let mut parts = holder.split('/');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    let this_host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Ok(pid) = pid.parse::<i32>() else {
        return false;
    };
    host == this_host
        && pid != std::process::id() as i32
        && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH)
}

impl Leadership {
    /// Takes the lease if it can (at once when the last holder was a process of this
    /// machine that is gone) and starts the worker that keeps it, or keeps trying.
    pub async fn start(
        db: Db,
        options: LeaseOptions,
        background: &Background,
    ) -> Result<Self, ComputeError> {
        let first = Self::try_acquire(&db, &options).await?;
        let single_server = options.single_server;
        if first.is_none() && options.single_server {
            let other = db
                .lease_holder()
                .await?
                .map(|h| h.address)
                .unwrap_or_default();
            return Err(ComputeError::NotAlone(other));
        }
        match &first {
            Some(fence) => tracing::info!(epoch = fence.epoch, "this server schedules jobs"),
            None => {
                let other = db
                    .lease_holder()
                    .await?
                    .map(|h| h.address)
                    .unwrap_or_default();
                tracing::info!(leader = %other, "another server schedules jobs; this one serves the API and takes over if it stops");
            }
        }
        let (tx, rx) = watch::channel(first);
        background.spawn_restarting(
            "scheduler-lease",
            trainyard_background::Backoff::UNTIL_DONE,
            move || {
                let db = db.clone();
                let options = options.clone();
                let tx = tx.clone();
                async move {
                    keep(db, options, tx).await;
                    Ok::<(), std::convert::Infallible>(())
                }
            },
        );
        Ok(Self { rx, single_server })
    }

    async fn try_acquire(db: &Db, options: &LeaseOptions) -> Result<Option<Fence>, ComputeError> {
        let ttl = options.ttl.as_millis() as i64;
        if let Some(fence) = db
            .acquire_lease(&options.holder, &options.address, now_ms(), ttl)
            .await?
        {
            return Ok(Some(fence));
        }
        // A server of this machine that was killed holds it still: no need to wait.
        if let Some(held) = db.lease_holder().await? {
            if holder_is_dead_here(&held.holder) {
                tracing::info!(holder = %held.holder, "the last scheduling server of this machine is gone; taking over");
                db.release_lease(&Fence {
                    holder: held.holder,
                    epoch: held.epoch,
                })
                .await?;
                return Ok(db
                    .acquire_lease(&options.holder, &options.address, now_ms(), ttl)
                    .await?);
            }
        }
        Ok(None)
    }

    /// Whether no other server can share the database (SQLite): nothing to take in from
    /// others.
    pub fn single_server(&self) -> bool {
        self.single_server
    }

    /// The fence while this server leads.
    pub fn current(&self) -> Option<Fence> {
        self.rx.borrow().clone()
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<Option<Fence>> {
        self.rx.clone()
    }
}

/// Renews while leading (a third of the lease); tries to take over while not (every
/// second). A renewal that fails for database trouble keeps leading only until the lease
/// would have expired.
async fn keep(db: Db, options: LeaseOptions, tx: watch::Sender<Option<Fence>>) {
    let ttl = options.ttl.as_millis() as i64;
    let renew_every = (options.ttl / 3).max(Duration::from_millis(100));
    let mut renewed_at = now_ms();
    loop {
        let current = tx.borrow().clone();
        match current {
            Some(fence) => {
                tokio::time::sleep(renew_every).await;
                let now = now_ms();
                match db.renew_lease(&fence, now, ttl).await {
                    Ok(true) => renewed_at = now,
                    Ok(false) => {
                        tracing::error!(
                            epoch = fence.epoch,
                            "another server took the scheduler lease; this one stops scheduling"
                        );
                        let _ = tx.send(None);
                    }
                    Err(e) if now - renewed_at >= ttl - renew_every.as_millis() as i64 => {
                        tracing::error!(error = %e, "cannot renew the scheduler lease before it expires; this server stops scheduling");
                        let _ = tx.send(None);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot renew the scheduler lease; retrying")
                    }
                }
            }
            None => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                match Leadership::try_acquire(&db, &options).await {
                    Ok(Some(fence)) => {
                        tracing::info!(epoch = fence.epoch, "this server took over scheduling");
                        renewed_at = now_ms();
                        let _ = tx.send(Some(fence));
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot ask for the scheduler lease"),
                }
            }
        }
    }
}
