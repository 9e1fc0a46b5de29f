//! Supervised background work. Every loop and every "retry until it lands" write in the
//! server runs through a [`Background`], so that none of them can end, panic or fall behind
//! silently: each worker's state, its restarts and errors, and the work waiting for a retry
//! are kept here, logged, and exported in `/metrics`.
//!
//! Three shapes cover what the server runs:
//! - [`Background::spawn_essential`]: a loop that owns state it cannot rebuild (the
//!   scheduler's queue). It is never restarted; if it ends or panics it is marked
//!   `failed`, logged as an error, and [`Background::is_running`] turns false (which is
//!   what `/readyz` reads).
//! - [`Background::spawn_restarting`]: a loop that can be rebuilt from nothing (a shipper, a
//!   poller); after a panic or an error it starts again after a growing pause.
//! - [`Background::spawn_task`] and [`Background::retry`]: one-off work, with panics contained
//!   and counted, and writes retried with exponential backoff while they are counted as
//!   pending.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Where a named worker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    Running,
    /// Waiting to be started again after a panic or an error.
    Restarting,
    /// Ended for good (an essential worker that stopped, or one that gave up).
    Failed,
    /// Ended because its work was done.
    Finished,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Failed => "failed",
            Self::Finished => "finished",
        }
    }
}

/// One worker as `/metrics` and `/readyz` see it.
#[derive(Debug, Clone)]
pub struct WorkerStatus {
    pub name: String,
    pub state: WorkerState,
    pub restarts: u64,
    pub last_error: Option<String>,
}

/// How a retried operation waits between tries.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    /// Give up after this many tries (`None`: until it succeeds).
    pub max_tries: Option<u32>,
}

impl Backoff {
    /// For writes that must land (an outcome acknowledged to nobody yet): forever, 250 ms
    /// doubling to 30 s.
    pub const UNTIL_DONE: Backoff = Backoff {
        first: Duration::from_millis(250),
        max: Duration::from_secs(30),
        max_tries: None,
    };

    /// The pause before try `n + 1` (n counts from 1), with ±20 % jitter so that many
    /// retrying writers do not hit a recovering database in step.
    pub fn pause(&self, n: u32) -> Duration {
        let doubled = self
            .first
            .saturating_mul(1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX));
        let base = doubled.min(self.max);
        let jitter = 0.8 + 0.4 * (pseudo_random() as f64 / u32::MAX as f64);
        base.mul_f64(jitter)
    }
}

/// A cheap, non-cryptographic number for jitter (no RNG crate for this).
fn pseudo_random() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish() as u32
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    worker: String,
    state: String,
}

#[derive(Default)]
struct Metrics {
    state: Family<StateLabels, Gauge>,
    restarts: Family<WorkerLabels, Counter>,
    errors: Family<WorkerLabels, Counter>,
    panics: Family<WorkerLabels, Counter>,
    pending: Family<WorkerLabels, Gauge>,
}

#[derive(Default)]
struct Inner {
    workers: Mutex<BTreeMap<String, WorkerStatus>>,
    metrics: Metrics,
}

/// The registry of the process's background work. Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct Background {
    inner: Arc<Inner>,
}

impl Background {
    pub fn new() -> Self {
        Self::default()
    }

    /// Exposes worker states, restarts, errors, panics and pending retries, under
    /// `background_*` in the registry's prefix.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let m = &self.inner.metrics;
        registry.register(
            "background_worker_state",
            "Background workers by state (1 where the worker is in that state)",
            m.state.clone(),
        );
        registry.register(
            "background_worker_restarts",
            "Restarts of background workers after a panic or an error",
            m.restarts.clone(),
        );
        registry.register(
            "background_errors",
            "Errors of background work (failed tries included)",
            m.errors.clone(),
        );
        registry.register(
            "background_panics",
            "Panics contained in background work",
            m.panics.clone(),
        );
        registry.register(
            "background_pending",
            "Operations waiting for a retry",
            m.pending.clone(),
        );
    }

    /// Whether the named worker runs now.
    pub fn is_running(&self, name: &str) -> bool {
        self.inner
            .workers
            .lock()
            .get(name)
            .is_some_and(|w| w.state == WorkerState::Running)
    }

    pub fn status(&self, name: &str) -> Option<WorkerStatus> {
        self.inner.workers.lock().get(name).cloned()
    }

    pub fn statuses(&self) -> Vec<WorkerStatus> {
        self.inner.workers.lock().values().cloned().collect()
    }

    /// Operations under `name` waiting for a retry now.
    pub fn pending(&self, name: &str) -> i64 {
        self.inner
            .metrics
            .pending
            .get_or_create(&WorkerLabels {
                worker: name.to_string(),
            })
            .get()
    }

    fn set_state(&self, name: &str, state: WorkerState, error: Option<String>) {
        let mut workers = self.inner.workers.lock();
        let status = workers
            .entry(name.to_string())
            .or_insert_with(|| WorkerStatus {
                name: name.to_string(),
                state,
                restarts: 0,
                last_error: None,
            });
        let m = &self.inner.metrics;
        m.state
            .get_or_create(&StateLabels {
                worker: name.to_string(),
                state: status.state.as_str().to_string(),
            })
            .set(0);
        status.state = state;
        if error.is_some() {
            status.last_error = error;
        }
        m.state
            .get_or_create(&StateLabels {
                worker: name.to_string(),
                state: state.as_str().to_string(),
            })
            .set(1);
    }

    fn count(&self, family: &Family<WorkerLabels, Counter>, name: &str) {
        family
            .get_or_create(&WorkerLabels {
                worker: name.to_string(),
            })
            .inc();
    }

    /// Runs a loop that cannot be rebuilt. When it returns or panics it is `failed`, and
    /// that is logged as an error: such a loop ending means part of the server stopped.
    pub fn spawn_essential<F>(&self, name: &str, work: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let this = self.clone();
        let name = name.to_string();
        this.set_state(&name, WorkerState::Running, None);
        tokio::spawn(async move {
            let ended = std::panic::AssertUnwindSafe(work).catch_unwind().await;
            let why = match ended {
                Ok(()) => "it returned".to_string(),
                Err(panic) => {
                    this.count(&this.inner.metrics.panics, &name);
                    format!("it panicked: {}", panic_message(&*panic))
                }
            };
            tracing::error!(worker = %name, "the {name} worker stopped ({why}); the server needs a restart");
            this.set_state(&name, WorkerState::Failed, Some(why));
        })
    }

    /// Runs a loop that `make` can build afresh. A panic or an `Err` restarts it after a
    /// growing pause (`backoff`); `Ok(())` means its work is done.
    pub fn spawn_restarting<M, F, E>(
        &self,
        name: &str,
        backoff: Backoff,
        mut make: M,
    ) -> tokio::task::JoinHandle<()>
    where
        M: FnMut() -> F + Send + 'static,
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let this = self.clone();
        let name = name.to_string();
        this.set_state(&name, WorkerState::Running, None);
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let ended = std::panic::AssertUnwindSafe(make()).catch_unwind().await;
                let why = match ended {
                    Ok(Ok(())) => {
                        this.set_state(&name, WorkerState::Finished, None);
                        return;
                    }
                    Ok(Err(e)) => {
                        this.count(&this.inner.metrics.errors, &name);
                        e.to_string()
                    }
                    Err(panic) => {
                        this.count(&this.inner.metrics.panics, &name);
                        format!("panicked: {}", panic_message(&*panic))
                    }
                };
                failures += 1;
                if backoff.max_tries.is_some_and(|max| failures >= max) {
                    tracing::error!(worker = %name, error = %why, "the {name} worker failed {failures} times; giving up");
                    this.set_state(&name, WorkerState::Failed, Some(why));
                    return;
                }
                let pause = backoff.pause(failures);
                tracing::warn!(worker = %name, error = %why, ?pause, "the {name} worker stopped; restarting");
                this.set_state(&name, WorkerState::Restarting, Some(why));
                {
                    let mut workers = this.inner.workers.lock();
                    if let Some(w) = workers.get_mut(&name) {
                        w.restarts += 1;
                    }
                }
                this.count(&this.inner.metrics.restarts, &name);
                tokio::time::sleep(pause).await;
                this.set_state(&name, WorkerState::Running, None);
            }
        })
    }

    /// Runs one-off work; a panic in it is logged and counted under `name` instead of
    /// vanishing with the task.
    pub fn spawn_task<F>(&self, name: &'static str, work: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(panic) = std::panic::AssertUnwindSafe(work).catch_unwind().await {
                this.count(&this.inner.metrics.panics, name);
                tracing::error!(
                    worker = name,
                    "background task panicked: {}",
                    panic_message(&*panic)
                );
            }
        })
    }

    /// Tries `op` until it succeeds (or `backoff.max_tries` is spent), pausing with
    /// backoff between tries. While it waits for a retry it counts as pending under `name`;
    /// each failed try counts as an error and is logged with `what`.
    pub async fn retry<T, E, F, Fut>(
        &self,
        name: &str,
        what: &str,
        backoff: &Backoff,
        mut op: F,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Display,
    {
        let pending = self
            .inner
            .metrics
            .pending
            .get_or_create(&WorkerLabels {
                worker: name.to_string(),
            })
            .clone();
        /// Takes the operation off `pending` however `retry` ends, a dropped future included.
        struct Pending(Option<Gauge>);
        impl Drop for Pending {
            fn drop(&mut self) {
                if let Some(g) = self.0.take() {
                    g.dec();
                }
            }
        }
        let mut tries = 0u32;
        let mut waiting = Pending(None);
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    tries += 1;
                    self.count(&self.inner.metrics.errors, name);
                    if backoff.max_tries.is_some_and(|max| tries >= max) {
                        tracing::error!(worker = name, error = %e, tries, "{what}: giving up");
                        return Err(e);
                    }
                    let pause = backoff.pause(tries);
                    tracing::warn!(worker = name, error = %e, tries, ?pause, "{what}; will retry");
                    if waiting.0.is_none() {
                        pending.inc();
                        waiting.0 = Some(pending.clone());
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

/// The message a panic carried (`panic!` with a literal or a formatted string), for logs
/// and error answers wherever a panic is caught.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    const QUICK: Backoff = Backoff {
        first: Duration::from_millis(1),
        max: Duration::from_millis(5),
        max_tries: None,
    };

    async fn wait_for(mut ok: impl FnMut() -> bool) {
        for _ in 0..500 {
            if ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("condition not reached in time");
    }

    #[tokio::test]
    async fn an_essential_worker_that_panics_is_failed_and_says_why() {
        let bg = Background::new();
        let handle = bg.spawn_essential("loop", async { panic!("boom") });
        handle.await.unwrap();
        assert!(!bg.is_running("loop"));
        let status = bg.status("loop").unwrap();
        assert_eq!(status.state, WorkerState::Failed);
        assert!(status.last_error.unwrap().contains("boom"));
        let mut registry = Registry::with_prefix("t");
        bg.register_metrics(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"t_background_panics_total{worker="loop"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"t_background_worker_state{worker="loop",state="failed"} 1"#));
        assert!(text.contains(r#"t_background_worker_state{worker="loop",state="running"} 0"#));
    }

    #[tokio::test]
    async fn a_restarting_worker_comes_back_after_panics_and_errors() {
        let bg = Background::new();
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        bg.spawn_restarting("poller", QUICK, move || {
            let n = r.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => panic!("first"),
                    1 => Err("second"),
                    _ => std::future::pending::<Result<(), &str>>().await,
                }
            }
        });
        wait_for(|| runs.load(Ordering::SeqCst) == 3 && bg.is_running("poller")).await;
        let status = bg.status("poller").unwrap();
        assert_eq!(status.restarts, 2);
        assert_eq!(status.last_error.as_deref(), Some("second"));
    }

    #[tokio::test]
    async fn retry_counts_pending_until_the_operation_lands() {
        let bg = Background::new();
        let tries = AtomicU32::new(0);
        let gate = Arc::new(tokio::sync::Notify::new());
        let bg2 = bg.clone();
        let g = gate.clone();
        let watcher = tokio::spawn(async move {
            wait_for(|| bg2.pending("outcome") == 1).await;
            g.notify_one();
        });
        let result: Result<u32, String> = bg
            .retry("outcome", "writing", &QUICK, || {
                let n = tries.fetch_add(1, Ordering::SeqCst);
                let gate = gate.clone();
                async move {
                    if n < 2 {
                        return Err(format!("try {n} failed"));
                    }
                    gate.notified().await;
                    Ok(n)
                }
            })
            .await;
        watcher.await.unwrap();
        assert_eq!(result.unwrap(), 2);
        assert_eq!(bg.pending("outcome"), 0);
    }

    #[tokio::test]
    async fn retry_gives_up_after_max_tries() {
        let bg = Background::new();
        let backoff = Backoff {
            max_tries: Some(3),
            ..QUICK
        };
        let tries = AtomicU32::new(0);
        let result: Result<(), &str> = bg
            .retry("ship", "shipping", &backoff, || {
                tries.fetch_add(1, Ordering::SeqCst);
                async { Err("no") }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 3);
        assert_eq!(bg.pending("ship"), 0);
    }

    #[tokio::test]
    async fn a_retry_dropped_while_waiting_is_no_longer_pending() {
        let bg = Background::new();
        let slow = Backoff {
            first: Duration::from_secs(60),
            max: Duration::from_secs(60),
            max_tries: None,
        };
        let bg2 = bg.clone();
        let task = tokio::spawn(async move {
            let _: Result<(), &str> = bg2
                .retry("w", "writing", &slow, || async { Err("down") })
                .await;
        });
        wait_for(|| bg.pending("w") == 1).await;
        task.abort();
        let _ = task.await;
        assert_eq!(bg.pending("w"), 0);
    }

    #[tokio::test]
    async fn a_panicking_task_is_contained() {
        let bg = Background::new();
        bg.spawn_task("t", async { panic!("inside") })
            .await
            .unwrap();
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_secs(1),
            max_tries: None,
        };
        assert!(b.pause(1) <= Duration::from_millis(120));
        assert!(b.pause(3) >= Duration::from_millis(320));
        assert!(b.pause(40) <= Duration::from_millis(1200));
    }
}
