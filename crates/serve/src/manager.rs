//! The model manager: which model versions are loaded, loading them on first use (once, however
//! many requests ask at the same time), and keeping their memory within a budget by unloading
//! the least recently used idle ones. A model with requests in flight holds a lease and is
//! never evicted under them; models named as pinned are never evicted at all.
//!
//! Every copy is tied to the revision of the source's version it was loaded from
//! ([`crate::source::ModelFiles::revision`]). Each listing of the source is compared with
//! what is held: a version the source no longer has, or has under another revision (deleted
//! and registered again, its file replaced), is dropped with its statistics, its measured
//! footprint and its load-time config, and the next request loads the version the source
//! has now.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use std::time::{Duration, Instant};

use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::{oneshot, watch, Notify};

use crate::config::ModelConfig;
use crate::memory::{allocated_bytes, release_free_memory, resident_bytes, PeakSampler};
use crate::metrics::{ModelLabels, ServeMetrics};
use crate::runtime::{RuntimeKind, Runtimes, Signature};
use crate::source::{shown_name, ModelSource, SourceModel};
use crate::stats::ModelStats;
use crate::tensor::Tensor;
use crate::worker::{self, BatchPolicy, Context, Job};
use crate::ServeError;

/// How a request for a model that is not loaded is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlMode {
    /// The request loads it.
    OnDemand,
    /// Only the load API loads; requests get "unavailable".
    Explicit,
}

#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// Bytes loaded models may hold; `None` = no limit.
    pub memory_limit: Option<u64>,
    /// Never evicted (and loaded at start).
    pub pinned: HashSet<String>,
    pub control: ControlMode,
    /// How long a load waits for busy models to become evictable.
    pub room_timeout: Duration,
    /// How long a failed load is remembered before a request tries again.
    pub retry_failed_after: Duration,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        Self {
            memory_limit: None,
            pinned: HashSet::new(),
            control: ControlMode::OnDemand,
            room_timeout: Duration::from_secs(30),
            retry_failed_after: Duration::from_secs(30),
        }
    }
}

pub type ModelKey = (String, u64);

/// What a model version was seen to need, the largest over its loads.
#[derive(Debug, Clone, Copy, Default)]
struct Footprint {
    /// Memory it holds once loaded.
    held: u64,
    /// Memory its load needed at the peak (parsing, weight copies), at least `held`.
    peak: u64,
}

/// Before a model's first load, its peak is guessed at this many times its file: ONNX
/// Runtime holds the parsed graph and up to two copies of the weights while it builds a
/// session.
const FIRST_LOAD_PEAK_PER_FILE_BYTE: u64 = 4;

/// A loaded model version.
pub struct LoadedModel {
    /// The manager's key (`workspace/name` outside `default`); callers see [`shown_name`].
    pub name: String,
    pub version: u64,
    /// The revision of the source's version these files came from.
    pub revision: String,
    pub config: ModelConfig,
    pub signature: Signature,
    pub runtime: RuntimeKind,
    /// What loading cost: growth of the resident set, at least the model file's size.
    pub memory_bytes: u64,
    queue: crossbeam_channel::Sender<Job>,
    in_flight: AtomicUsize,
    last_used: AtomicU64,
}

/// A model in use by one request; while any lease exists the model is not evicted.
pub struct Lease {
    model: Arc<LoadedModel>,
    inner: Arc<Inner>,
}

impl std::ops::Deref for Lease {
    type Target = LoadedModel;
    fn deref(&self) -> &LoadedModel {
        &self.model
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.model.in_flight.fetch_sub(1, Relaxed) == 1 {
            self.inner.released.notify_waiters();
        }
    }
}

/// State of one model version, as the repository index reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelState {
    Loading,
    Ready,
    Unavailable,
}

impl ModelState {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelState::Loading => "LOADING",
            ModelState::Ready => "READY",
            ModelState::Unavailable => "UNAVAILABLE",
        }
    }
}

/// One line of the repository index: a model the source has, and where each of its versions
/// stands (`versions` empty = never loaded).
#[derive(Debug, Clone)]
pub struct IndexEntry {
    pub name: String,
    pub versions: Vec<(u64, ModelState, String)>,
}

type LoadResult = Option<Result<Arc<LoadedModel>, String>>;

enum Slot {
    Loading {
        result: watch::Receiver<LoadResult>,
        /// The revision the load was asked for (the listing's when it started).
        revision: String,
    },
    Ready(Arc<LoadedModel>),
    Unavailable {
        reason: String,
        since: Instant,
        failed: bool,
        revision: String,
    },
}

impl Slot {
    /// Which revision of the source's version this slot stands for.
    fn revision(&self) -> &str {
        match self {
            Slot::Loading { revision, .. } | Slot::Unavailable { revision, .. } => revision,
            Slot::Ready(m) => &m.revision,
        }
    }
}

/// What [`ModelManager::acquire_key`] came back with.
enum Acquired {
    Lease(Lease),
    /// The slot holds another revision than the request was resolved to: the listing the
    /// request used, or the one the slot was made under, is out of date.
    Stale,
    /// A load this request started or waited for failed.
    LoadFailed(ServeError),
}

/// A config given with a load call, and the revisions the model's versions had then (carried
/// forward by every listing that still has one of them): a model whose versions all changed
/// at once was deleted and made again, and the config was not given for it.
struct Override {
    config: ModelConfig,
    revisions: HashSet<String>,
}

struct Catalog {
    models: Vec<SourceModel>,
    read_at: Option<Instant>,
}

struct Inner {
    source: Arc<dyn ModelSource>,
    runtimes: Runtimes,
    options: ManagerOptions,
    slots: Mutex<HashMap<ModelKey, Slot>>,
    /// Loads run one at a time so the resident-set growth of each is its own.
    load_lock: tokio::sync::Mutex<()>,
    /// Signalled when a model may have become evictable.
    released: Notify,
    clock: AtomicU64,
    /// Per version, with the revision they were counted for.
    stats: Mutex<HashMap<ModelKey, (String, Arc<ModelStats>)>>,
    /// Measured footprint of earlier loads (per revision), to make room before loading again.
    known_cost: Mutex<HashMap<ModelKey, (String, Footprint)>>,
    /// Configs given with a load call, used instead of the source's.
    overrides: Mutex<HashMap<String, Override>>,
    catalog: tokio::sync::Mutex<Catalog>,
    metrics: ServeMetrics,
}

/// Cheap to clone; all clones share one set of models.
#[derive(Clone)]
pub struct ModelManager {
    inner: Arc<Inner>,
}

/// How long a listing of the source is trusted before a request reads it again (and, while
/// anything is loaded, before [`ModelManager::follow_source`] does).
pub const CATALOG_TTL: Duration = Duration::from_secs(2);

fn labels(key: &ModelKey) -> ModelLabels {
    ModelLabels {
        model: key.0.clone(),
        version: key.1.to_string(),
    }
}

impl ModelManager {
    pub fn new(source: Arc<dyn ModelSource>, runtimes: Runtimes, options: ManagerOptions) -> Self {
        let metrics = ServeMetrics::default();
        metrics
            .budget_bytes
            .set(options.memory_limit.unwrap_or(0) as i64);
        Self {
            inner: Arc::new(Inner {
                source,
                runtimes,
                options,
                slots: Mutex::default(),
                load_lock: tokio::sync::Mutex::new(()),
                released: Notify::new(),
                clock: AtomicU64::new(1),
                stats: Mutex::default(),
                known_cost: Mutex::default(),
                overrides: Mutex::default(),
                catalog: tokio::sync::Mutex::new(Catalog {
                    models: Vec::new(),
                    read_at: None,
                }),
                metrics,
            }),
        }
    }

    pub fn metrics(&self) -> &ServeMetrics {
        &self.inner.metrics
    }

    /// Loads the pinned models (their failures are logged and shown in the index).
    pub async fn load_pinned(&self) {
        let mut pinned: Vec<String> = self.inner.options.pinned.iter().cloned().collect();
        pinned.sort();
        for name in pinned {
            if let Err(e) = self.load(&name, None).await {
                tracing::warn!(model = %name, "pinned model did not load: {e}");
            }
        }
    }

    /// The source's listing, read again when asked to or when older than `CATALOG_TTL`.
    /// Every new listing is reconciled with what is held ([`Self::reconcile`]).
    async fn catalog(
        &self,
        refresh: bool,
    ) -> Result<tokio::sync::MutexGuard<'_, Catalog>, ServeError> {
        let mut c = self.inner.catalog.lock().await;
        if refresh || c.read_at.is_none_or(|at| at.elapsed() > CATALOG_TTL) {
            c.models = self.inner.source.list().await?;
            c.read_at = Some(Instant::now());
            self.reconcile(&c.models);
        }
        Ok(c)
    }

    /// While any version is loaded or loading, reads the source's listing again whenever the
    /// last one is older than `CATALOG_TTL`, so a version deleted from the source gives its
    /// memory back within seconds even when no request comes. Returns only when a listing
    /// fails (the caller starts it again).
    pub async fn follow_source(&self) -> Result<(), ServeError> {
        loop {
            tokio::time::sleep(CATALOG_TTL).await;
            let holds = self
                .inner
                .slots
                .lock()
                .values()
                .any(|s| !matches!(s, Slot::Unavailable { .. }));
            if holds {
                drop(self.catalog(false).await?);
            }
        }
    }

    /// Drops what is held for every version `models` does not list with the same revision:
    /// its copy (requests already in flight finish on it, and its memory goes when the last
    /// of them ends), a load in progress (its copy is dropped when it ends), its state,
    /// statistics and measured footprint; and a load-time config whose model was made again.
    fn reconcile(&self, models: &[SourceModel]) {
        let listed: HashMap<(&str, u64), &str> = models
            .iter()
            .flat_map(|m| {
                m.versions
                    .iter()
                    .map(move |v| ((m.name.as_str(), *v), m.revision(*v)))
            })
            .collect();
        let current = |key: &ModelKey, revision: &str| {
            listed.get(&(key.0.as_str(), key.1)) == Some(&revision)
        };
        let mut released = false;
        {
            let mut slots = self.inner.slots.lock();
            let gone: Vec<ModelKey> = slots
                .iter()
                .filter(|(key, slot)| !current(key, slot.revision()))
                .map(|(key, _)| key.clone())
                .collect();
            for key in gone {
                let replaced = listed.contains_key(&(key.0.as_str(), key.1));
                released |= self.drop_slot(&mut slots, &key);
                tracing::info!(
                    model = %key.0,
                    version = key.1,
                    "{} the {}: unloaded",
                    if replaced { "replaced in" } else { "no longer in" },
                    self.inner.source.describe()
                );
            }
            self.update_used(&slots);
        }
        self.inner
            .stats
            .lock()
            .retain(|key, (revision, _)| current(key, revision));
        self.inner
            .known_cost
            .lock()
            .retain(|key, (revision, _)| current(key, revision));
        self.inner.overrides.lock().retain(|name, o| {
            let now = revisions_of(models, name);
            let same_model = !now.is_disjoint(&o.revisions);
            if same_model {
                o.revisions = now;
            }
            same_model
        });
        if released {
            release_free_memory();
        }
    }

    /// Removes a version's slot; a loaded copy counts as unloaded. Says whether it was one.
    fn drop_slot(&self, slots: &mut HashMap<ModelKey, Slot>, key: &ModelKey) -> bool {
        let was_ready = matches!(slots.remove(key), Some(Slot::Ready(_)));
        if was_ready {
            self.inner.metrics.unloads.get_or_create(&labels(key)).inc();
        }
        self.inner.metrics.model_bytes.remove(&labels(key));
        was_ready
    }

    /// Which version a request means: the one named, else the source's default. A name or
    /// version missing from the cached listing reads the source again before it is unknown.
    pub async fn resolve(&self, name: &str, version: Option<u64>) -> Result<ModelKey, ServeError> {
        Ok(self.resolve_in(name, version, false).await?.0)
    }

    /// [`Self::resolve`] with the revision the listing has for the version, from a listing
    /// read afresh when `fresh`.
    async fn resolve_in(
        &self,
        name: &str,
        version: Option<u64>,
        fresh: bool,
    ) -> Result<(ModelKey, String), ServeError> {
        let shown = shown_name(name);
        let mut known_name = false;
        let passes: &[bool] = if fresh { &[true] } else { &[false, true] };
        for &refresh in passes {
            let catalog = self.catalog(refresh).await?;
            let Some(m) = catalog.models.iter().find(|m| m.name == name) else {
                continue;
            };
            known_name = true;
            let found = match version {
                None if !m.versions.is_empty() => Some(m.default_version),
                Some(v) if m.versions.contains(&v) => Some(v),
                _ => None,
            };
            if let Some(v) = found {
                return Ok(((name.to_string(), v), m.revision(v).to_string()));
            }
            let broken = m
                .unservable
                .iter()
                .find(|(v, _)| version.is_none_or(|want| *v == want));
            if let (true, Some((v, why))) = (refresh, broken) {
                return Err(ServeError::unavailable(format!(
                    "model '{shown}' version {v} cannot be served: {why}"
                )));
            }
        }
        Err(ServeError::not_found(match (known_name, version) {
            (true, Some(v)) => {
                format!("Request for unknown model: '{shown}' version {v} is not found")
            }
            _ => format!("Request for unknown model: '{shown}' is not found"),
        }))
    }

    /// A lease on a ready model version, loading it first when the control mode allows.
    pub async fn acquire(&self, name: &str, version: Option<u64>) -> Result<Lease, ServeError> {
        let may_load = self.inner.options.control == ControlMode::OnDemand;
        let mut fresh = false;
        loop {
            let (key, revision) = self.resolve_in(name, version, fresh).await?;
            match self.acquire_key(&key, &revision, may_load, fresh).await? {
                Acquired::Lease(lease) => return Ok(lease),
                // The slot holds another revision, or the load failed: the version may have
                // been deleted or made again since the listing was read. Once more, from a
                // listing read now (which drops what it no longer has).
                Acquired::Stale | Acquired::LoadFailed(_) if !fresh => fresh = true,
                Acquired::LoadFailed(e) => return Err(e),
                Acquired::Stale => {
                    return Err(ServeError::unavailable(format!(
                        "model '{}' version {} changed while it was asked for; try again",
                        shown_name(name),
                        key.1
                    )))
                }
            }
        }
    }

    /// The version if it is ready now, without a lease: asking does not count as use, so
    /// readiness probes and statistics do not keep a model from being evicted.
    pub fn peek(&self, key: &ModelKey) -> Option<Arc<LoadedModel>> {
        match self.inner.slots.lock().get(key) {
            Some(Slot::Ready(m)) => Some(m.clone()),
            _ => None,
        }
    }

    fn lease(&self, model: &Arc<LoadedModel>) -> Lease {
        model.in_flight.fetch_add(1, Relaxed);
        model
            .last_used
            .store(self.inner.clock.fetch_add(1, Relaxed), Relaxed);
        Lease {
            model: model.clone(),
            inner: self.inner.clone(),
        }
    }

    /// A lease on `key` at `revision`, loading it when `may_load`. A slot of another revision
    /// is `Stale`, or, with `replace` (the revision comes from a listing read just now), is
    /// dropped and the version loaded afresh. A copy this request waited for is leased
    /// whatever its revision: a load reads what the source has when it runs, never older.
    async fn acquire_key(
        &self,
        key: &ModelKey,
        revision: &str,
        may_load: bool,
        replace: bool,
    ) -> Result<Acquired, ServeError> {
        let shown = shown_name(&key.0);
        let mut waiting = {
            let mut slots = self.inner.slots.lock();
            if slots.get(key).is_some_and(|s| s.revision() != revision) {
                if !replace {
                    return Ok(Acquired::Stale);
                }
                tracing::info!(model = %key.0, version = key.1, "replaced in the source: loaded afresh");
                self.drop_slot(&mut slots, key);
                self.update_used(&slots);
            }
            match slots.get(key) {
                    Some(Slot::Ready(m)) => return Ok(Acquired::Lease(self.lease(m))),
                    Some(Slot::Loading { result, .. }) => result.clone(),
                    Some(Slot::Unavailable {
                        reason,
                        since,
                        failed,
                        ..
                    }) => {
                        let retry =
                            *failed && since.elapsed() >= self.inner.options.retry_failed_after;
                        if !may_load || (*failed && !retry) {
                            return Err(ServeError::unavailable(format!(
                                "model '{shown}' version {} is not available: {reason}",
                                key.1
                            )));
                        }
                        self.start_load(&mut slots, key, revision)
                    }
                    None if may_load => self.start_load(&mut slots, key, revision),
                    None => {
                        return Err(ServeError::unavailable(format!(
                            "model '{shown}' version {} is not loaded; load it with POST /v2/repository/models/{shown}/load",
                            key.1
                        )))
                    }
                }
        };
        let result = waiting
            .wait_for(|r| r.is_some())
            .await
            .map(|r| r.clone())
            .ok()
            .flatten();
        match result {
            Some(Ok(model)) => {
                let slots = self.inner.slots.lock();
                match slots.get(key) {
                    Some(Slot::Ready(m)) if Arc::ptr_eq(m, &model) => {
                        Ok(Acquired::Lease(self.lease(m)))
                    }
                    // Unloaded, or dropped by a listing that has another revision, while it
                    // loaded. Loading again under this request's revision could be dropped
                    // the same way for ever (a load slower than the listing's refresh): the
                    // caller resolves the version again from a listing read now.
                    _ => Ok(Acquired::Stale),
                }
            }
            Some(Err(reason)) => Ok(Acquired::LoadFailed(ServeError::unavailable(format!(
                "failed to load '{shown}' version {}: {reason}",
                key.1
            )))),
            None => Err(ServeError::internal("the model load was abandoned")),
        }
    }

    /// Puts a `Loading` slot in place and starts the load task; returns its result channel.
    fn start_load(
        &self,
        slots: &mut HashMap<ModelKey, Slot>,
        key: &ModelKey,
        revision: &str,
    ) -> watch::Receiver<LoadResult> {
        let (tx, rx) = watch::channel(None);
        slots.insert(
            key.clone(),
            Slot::Loading {
                result: rx.clone(),
                revision: revision.to_string(),
            },
        );
        let this = self.clone();
        let key = key.clone();
        let revision = revision.to_string();
        let ours = rx.clone();
        tokio::spawn(async move {
            // A panic in a loader (a runtime's bug on a strange file) is this model's failed
            // load, never a slot stuck in `Loading` for every later request.
            let result = match std::panic::AssertUnwindSafe(this.load_now(&key))
                .catch_unwind()
                .await
            {
                Ok(result) => result,
                Err(panic) => {
                    let what = trainyard_background::panic_message(&*panic);
                    tracing::error!(model = %key.0, version = key.1, "the loader panicked: {what}");
                    Err(format!("the loader failed unexpectedly ({what})"))
                }
            };
            let mut slots = this.inner.slots.lock();
            // An unload while this load ran wins, and so does a listing that no longer has
            // this revision: the new copy is dropped, and waiters see the version as
            // unloaded (on demand, their next try loads it again).
            let still_wanted = matches!(
                slots.get(&key),
                Some(Slot::Loading { result: current, .. }) if current.same_channel(&ours)
            );
            match &result {
                Ok(_) if !still_wanted => {
                    tracing::info!(model = %key.0, version = key.1, "unloaded while it loaded; the new copy is dropped");
                    if !matches!(slots.get(&key), Some(Slot::Ready(_))) {
                        this.inner.metrics.model_bytes.remove(&labels(&key));
                    }
                }
                Ok(model) => {
                    slots.insert(key.clone(), Slot::Ready(model.clone()));
                }
                Err(reason) => {
                    this.inner
                        .metrics
                        .load_failures
                        .get_or_create(&labels(&key))
                        .inc();
                    tracing::warn!(model = %key.0, version = key.1, "load failed: {reason}");
                    if !still_wanted {
                        drop(slots);
                        let _ = tx.send(Some(result));
                        return;
                    }
                    slots.insert(
                        key.clone(),
                        Slot::Unavailable {
                            reason: reason.clone(),
                            since: Instant::now(),
                            failed: true,
                            revision,
                        },
                    );
                }
            }
            this.update_used(&slots);
            let _ = tx.send(Some(result));
        });
        rx
    }

    /// The load-time config given for `name`, when it was given for this model. One given for
    /// a model since deleted and made again under the name is not: when the revision being
    /// loaded is not among those the config was given for, a listing read now decides (it
    /// keeps the config for a new version of the same model and drops it for another model).
    async fn override_for(&self, name: &str, revision: &str) -> Option<ModelConfig> {
        let given = |this: &Self| {
            this.inner
                .overrides
                .lock()
                .get(name)
                .map(|o| (o.revisions.contains(revision), o.config.clone()))
        };
        match given(self)? {
            (true, config) => Some(config),
            (false, _) => {
                drop(self.catalog(true).await.ok()?);
                match given(self)? {
                    (true, config) => Some(config),
                    (false, _) => None,
                }
            }
        }
    }

    fn update_used(&self, slots: &HashMap<ModelKey, Slot>) {
        self.inner
            .metrics
            .budget_used_bytes
            .set(used_bytes(slots) as i64);
    }

    /// Loads (or reloads) a model version through the load API. A ready version keeps serving
    /// until the new copy is ready; a failed reload keeps the old one.
    pub async fn load(&self, name: &str, config: Option<ModelConfig>) -> Result<(), ServeError> {
        let shown = shown_name(name);
        // What the source has now: a load never brings back a copy of what it no longer has.
        let (key, revision) = self.resolve_in(name, None, true).await?;
        if let Some(config) = config {
            let revisions = revisions_of(&self.catalog(false).await?.models, name);
            self.inner
                .overrides
                .lock()
                .insert(name.to_string(), Override { config, revisions });
        }
        let serving = match self.inner.slots.lock().get(&key) {
            Some(Slot::Ready(m)) if m.revision == revision => Some(m.clone()),
            _ => None,
        };
        if let Some(old) = serving {
            let model = self.load_now(&key).await.map_err(|r| {
                ServeError::invalid(format!("load failed for model '{shown}': {r}"))
            })?;
            let mut slots = self.inner.slots.lock();
            // Unloaded, or dropped by a listing, while it reloaded: that wins.
            if !matches!(slots.get(&key), Some(Slot::Ready(m)) if Arc::ptr_eq(m, &old)) {
                if !matches!(slots.get(&key), Some(Slot::Ready(_))) {
                    self.inner.metrics.model_bytes.remove(&labels(&key));
                }
                return Err(ServeError::unavailable(format!(
                    "model '{shown}' was unloaded or changed while it reloaded"
                )));
            }
            slots.insert(key, Slot::Ready(model));
            self.update_used(&slots);
            return Ok(());
        }
        // A failed or unloaded version is tried again now.
        {
            let mut slots = self.inner.slots.lock();
            if matches!(slots.get(&key), Some(Slot::Unavailable { .. })) {
                slots.remove(&key);
            }
        }
        let refused = |e: ServeError| match e {
            ServeError::Unavailable(m) => {
                ServeError::invalid(format!("load failed for model '{shown}': {m}"))
            }
            other => other,
        };
        match self.acquire_key(&key, &revision, true, true).await {
            Ok(Acquired::Lease(_)) => Ok(()),
            Ok(Acquired::LoadFailed(e)) | Err(e) => Err(refused(e)),
            Ok(Acquired::Stale) => Err(refused(ServeError::unavailable(
                "it changed in the repository while it loaded; try again",
            ))),
        }
    }

    /// Unloads every version of `name`. Requests in flight finish; later ones load it again
    /// (on demand) or are refused (explicit mode).
    pub async fn unload(&self, name: &str) -> Result<(), ServeError> {
        let mut slots = self.inner.slots.lock();
        let keys: Vec<ModelKey> = slots.keys().filter(|k| k.0 == name).cloned().collect();
        for key in keys {
            let counter = match slots.get(&key) {
                Some(Slot::Ready(_)) => Some(&self.inner.metrics.unloads),
                _ => None,
            };
            self.retire(&mut slots, key, "unloaded", counter);
        }
        self.update_used(&slots);
        drop(slots);
        release_free_memory();
        Ok(())
    }

    /// Takes a version out of service (its copy goes when the last lease ends), counting
    /// it on `counter` when it was loaded.
    fn retire(
        &self,
        slots: &mut HashMap<ModelKey, Slot>,
        key: ModelKey,
        reason: &str,
        counter: Option<
            &prometheus_client::metrics::family::Family<
                ModelLabels,
                prometheus_client::metrics::counter::Counter,
            >,
        >,
    ) {
        if let Some(counter) = counter {
            counter.get_or_create(&labels(&key)).inc();
        }
        self.inner.metrics.model_bytes.remove(&labels(&key));
        let revision = slots
            .get(&key)
            .map(|s| s.revision().to_string())
            .unwrap_or_default();
        slots.insert(
            key,
            Slot::Unavailable {
                reason: reason.to_string(),
                since: Instant::now(),
                failed: false,
                revision,
            },
        );
    }

    /// Reads, builds and starts a model version; returns the error text on failure.
    async fn load_now(&self, key: &ModelKey) -> Result<Arc<LoadedModel>, String> {
        let started = Instant::now();
        // One load at a time: the memory each one takes is measured alone, and waiting loads
        // do not hold their model files in memory meanwhile.
        let _one_at_a_time = self.inner.load_lock.lock().await;
        let files = self
            .inner
            .source
            .fetch(&key.0, key.1)
            .await
            .map_err(|e| e.to_string())?;
        let revision = files.revision;
        let config = self
            .override_for(&key.0, &revision)
            .await
            .unwrap_or(files.config);
        let runtime = self
            .inner
            .runtimes
            .get(config.runtime().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let kind = runtime.kind();
        let instances = config.instances();
        let file_bytes = files.onnx.len() as u64;
        // Room for the load's peak, so the resident set stays within the budget while it runs.
        let peak_estimate = self
            .inner
            .known_cost
            .lock()
            .get(key)
            .filter(|(seen_for, _)| *seen_for == revision)
            .map(|(_, f)| f.peak)
            .unwrap_or(file_bytes * FIRST_LOAD_PEAK_PER_FILE_BYTE * instances as u64);
        self.make_room(key, peak_estimate)
            .await
            .map_err(|e| e.to_string())?;
        let (rss_before, heap_before) = (resident_bytes(), allocated_bytes());
        let sampler = PeakSampler::start();
        let onnx = files.onnx;
        let loaded = tokio::task::spawn_blocking(move || {
            let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // Runtimes evaluate constants while they load: a file whose constants build a
                // huge tensor would fill the server's memory (trainyard_models::folding).
                if let Some(why) = trainyard_models::folding::oversized_constant_in(&onnx) {
                    return Err(ServeError::invalid(format!("model refused: {why}")));
                }
                runtime.load(&onnx, instances)
            }));
            drop(onnx);
            made
        })
        .await
        .map_err(|e| format!("the load task failed: {e}"))?
        .map_err(|_| "the runtime panicked while loading the model".to_string())?;
        let peak_grew = sampler.finish().saturating_sub(rss_before);
        let (signature, instances) = loaded.map_err(|e| e.to_string())?;
        // What the model holds: the growth of the resident set or of the heap, whichever is
        // larger; never less than its file.
        let rss_grew = resident_bytes().saturating_sub(rss_before);
        let heap_grew = match (heap_before, allocated_bytes()) {
            (Some(before), Some(after)) => after.saturating_sub(before),
            _ => 0,
        };
        tracing::debug!(model = %key.0, rss_grew, heap_grew, peak_grew, file_bytes, "load measured");
        release_free_memory();
        // A load that reuses memory an evicted model gave back shows less growth than it
        // holds, so the largest cost seen for this model is the one that counts.
        let cost = {
            let mut known = self.inner.known_cost.lock();
            let entry = known
                .entry(key.clone())
                .or_insert_with(|| (revision.clone(), Footprint::default()));
            if entry.0 != revision {
                *entry = (revision.clone(), Footprint::default());
            }
            let seen = &mut entry.1;
            seen.held = seen.held.max(rss_grew).max(heap_grew).max(file_bytes);
            seen.peak = seen.peak.max(peak_grew).max(seen.held);
            seen.held
        };
        if let Some(limit) = self.inner.options.memory_limit {
            if cost > limit {
                return Err(format!(
                    "the model needs {cost} bytes, more than the whole memory budget of {limit} bytes"
                ));
            }
        }
        let config = config
            .complete(shown_name(&key.0), kind, &signature)
            .map_err(|e| format!("{}: {e}", files.origin))?;
        // Statistics go on across loads of one revision; another revision starts afresh.
        let stats = {
            let mut all = self.inner.stats.lock();
            let entry = all
                .entry(key.clone())
                .or_insert_with(|| (revision.clone(), Arc::default()));
            if entry.0 != revision {
                *entry = (revision.clone(), Arc::default());
            }
            entry.1.clone()
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let policy = BatchPolicy {
            max_rows: config.max_batch_size as usize,
            max_delay: config.queue_delay(),
            preferred: config
                .dynamic_batching
                .iter()
                .flat_map(|b| b.preferred_batch_size.iter().map(|n| *n as usize))
                .collect(),
        };
        worker::spawn(
            &key.0,
            instances,
            rx,
            Arc::new(Context {
                policy,
                stats,
                metrics: self.inner.metrics.clone(),
                labels: labels(key),
            }),
        )
        .map_err(|e| e.to_string())?;
        let l = labels(key);
        self.inner.metrics.loads.get_or_create(&l).inc();
        self.inner
            .metrics
            .model_bytes
            .get_or_create(&l)
            .set(cost as i64);
        self.inner
            .metrics
            .load_seconds
            .get_or_create(&l)
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(
            model = %key.0,
            version = key.1,
            runtime = kind.as_str(),
            memory_bytes = cost,
            ms = started.elapsed().as_millis() as u64,
            "model loaded from {}",
            files.origin
        );
        Ok(Arc::new(LoadedModel {
            name: key.0.clone(),
            version: key.1,
            revision,
            config,
            signature,
            runtime: kind,
            memory_bytes: cost,
            queue: tx,
            in_flight: AtomicUsize::new(0),
            last_used: AtomicU64::new(self.inner.clock.fetch_add(1, Relaxed)),
        }))
    }

    /// Evicts least-recently-used idle models until `needed` more bytes fit the budget,
    /// waiting (up to `room_timeout`) for busy models to become idle.
    async fn make_room(&self, loading: &ModelKey, needed: u64) -> Result<(), ServeError> {
        let Some(limit) = self.inner.options.memory_limit else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + self.inner.options.room_timeout;
        loop {
            let notified = self.inner.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut evicted = false;
            {
                let mut slots = self.inner.slots.lock();
                let mut used = 0u64;
                let mut victim: Option<(u64, ModelKey)> = None;
                for (key, slot) in slots.iter() {
                    if let Slot::Ready(m) = slot {
                        if key == loading {
                            continue;
                        }
                        used += m.memory_bytes;
                        let idle = m.in_flight.load(Relaxed) == 0;
                        let pinned = self.inner.options.pinned.contains(&key.0);
                        let age = m.last_used.load(Relaxed);
                        if idle && !pinned && victim.as_ref().is_none_or(|(a, _)| age < *a) {
                            victim = Some((age, key.clone()));
                        }
                    }
                }
                if used + needed <= limit {
                    return Ok(());
                }
                if let Some((_, key)) = victim {
                    tracing::info!(model = %key.0, version = key.1, "evicted to stay within the memory budget");
                    self.retire(
                        &mut slots,
                        key,
                        "evicted",
                        Some(&self.inner.metrics.evictions),
                    );
                    self.update_used(&slots);
                    evicted = true;
                }
            }
            if evicted {
                release_free_memory();
                continue;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(ServeError::unavailable(format!(
                    "the memory budget ({limit} bytes) is held by models that are in use or pinned; {} more bytes do not fit",
                    needed
                )));
            }
        }
    }

    /// Runs one request: checks the inputs against the model, queues it for an instance
    /// (where it may be batched with others) and returns the requested outputs.
    pub async fn infer(
        &self,
        model: &Lease,
        inputs: Vec<Tensor>,
        outputs: Option<&[String]>,
    ) -> Result<Vec<Tensor>, ServeError> {
        let (inputs, rows) = check_inputs(model, inputs)?;
        if let Some(wanted) = outputs {
            for w in wanted {
                if !model.signature.outputs.iter().any(|o| &o.name == w) {
                    return Err(ServeError::invalid(format!(
                        "unexpected inference output '{w}' for model '{}'; it has {}",
                        shown_name(&model.name),
                        names(&model.signature.outputs)
                    )));
                }
            }
        }
        let (tx, rx) = oneshot::channel();
        model
            .queue
            .send(Job {
                inputs,
                rows,
                enqueued: Instant::now(),
                reply: tx,
            })
            .map_err(|_| {
                ServeError::unavailable(format!(
                    "model '{}' is shutting down",
                    shown_name(&model.name)
                ))
            })?;
        let mut result = rx
            .await
            .map_err(|_| ServeError::internal("the instance stopped before answering"))??;
        if let Some(wanted) = outputs {
            result.retain(|t| wanted.contains(&t.name));
            result.sort_by_key(|t| wanted.iter().position(|w| w == &t.name));
        }
        Ok(result)
    }

    /// Every model the source has and the state of each version that was ever loaded (of the
    /// revision the source has now: the listing is read for it).
    pub async fn index(&self) -> Result<Vec<IndexEntry>, ServeError> {
        let models = self.catalog(true).await?.models.clone();
        let slots = self.inner.slots.lock();
        let mut out: Vec<IndexEntry> = models
            .iter()
            .map(|m| IndexEntry {
                name: m.name.clone(),
                versions: m
                    .unservable
                    .iter()
                    .filter(|(v, _)| !slots.contains_key(&(m.name.clone(), *v)))
                    .map(|(v, why)| (*v, ModelState::Unavailable, why.clone()))
                    .collect(),
            })
            .collect();
        let mut keys: Vec<&ModelKey> = slots.keys().collect();
        keys.sort();
        for key in keys {
            let (state, reason) = match &slots[key] {
                Slot::Loading { .. } => (ModelState::Loading, String::new()),
                Slot::Ready(_) => (ModelState::Ready, String::new()),
                Slot::Unavailable { reason, .. } => (ModelState::Unavailable, reason.clone()),
            };
            match out.iter_mut().find(|e| e.name == key.0) {
                Some(e) => e.versions.push((key.1, state, reason)),
                None => out.push(IndexEntry {
                    name: key.0.clone(),
                    versions: vec![(key.1, state, reason)],
                }),
            }
        }
        for entry in &mut out {
            entry.versions.sort_by_key(|v| v.0);
        }
        Ok(out)
    }

    /// Versions of `name` that are ready now.
    pub fn ready_versions(&self, name: &str) -> Vec<u64> {
        let slots = self.inner.slots.lock();
        let mut v: Vec<u64> = slots
            .iter()
            .filter(|(k, s)| k.0 == name && matches!(s, Slot::Ready(_)))
            .map(|(k, _)| k.1)
            .collect();
        v.sort_unstable();
        v
    }

    /// Statistics of the versions that have any, filtered by name and version: those of the
    /// revisions of the listing (read again when older than `CATALOG_TTL`: a statistics
    /// call, open to any viewer, does not make the source list every model each time).
    pub async fn statistics(
        &self,
        name: Option<&str>,
        version: Option<u64>,
    ) -> Result<Vec<(ModelKey, Arc<ModelStats>)>, ServeError> {
        drop(self.catalog(false).await?);
        let stats = self.inner.stats.lock();
        let mut out: Vec<(ModelKey, Arc<ModelStats>)> = stats
            .iter()
            .filter(|(k, _)| name.is_none_or(|n| k.0 == n) && version.is_none_or(|v| k.1 == v))
            .map(|(k, (_, s))| (k.clone(), s.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Bytes held by ready models.
    pub fn memory_used(&self) -> u64 {
        used_bytes(&self.inner.slots.lock())
    }
}

/// The revisions `models` lists for the versions of `name`.
fn revisions_of(models: &[SourceModel], name: &str) -> HashSet<String> {
    models
        .iter()
        .filter(|m| m.name == name)
        .flat_map(|m| m.versions.iter().map(|v| m.revision(*v).to_string()))
        .collect()
}

fn used_bytes(slots: &HashMap<ModelKey, Slot>) -> u64 {
    slots
        .values()
        .filter_map(|s| match s {
            Slot::Ready(m) => Some(m.memory_bytes),
            _ => None,
        })
        .sum()
}

fn names(specs: &[crate::runtime::TensorSpec]) -> String {
    specs
        .iter()
        .map(|s| format!("'{}'", s.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Orders the inputs as the model declares them and checks names, datatypes, shapes and
/// sizes; returns them with the number of batch rows.
fn check_inputs(
    model: &LoadedModel,
    mut inputs: Vec<Tensor>,
) -> Result<(Vec<Tensor>, usize), ServeError> {
    let sig = &model.signature;
    let max_batch = model.config.max_batch_size as usize;
    for t in &inputs {
        if !sig.inputs.iter().any(|s| s.name == t.name) {
            return Err(ServeError::invalid(format!(
                "unexpected inference input '{}' for model '{}'; it expects {}",
                t.name,
                shown_name(&model.name),
                names(&sig.inputs)
            )));
        }
        if inputs.iter().filter(|o| o.name == t.name).count() > 1 {
            return Err(ServeError::invalid(format!(
                "input '{}' is given twice",
                t.name
            )));
        }
    }
    let mut ordered = Vec::with_capacity(sig.inputs.len());
    let mut rows = 1;
    for spec in &sig.inputs {
        let Some(pos) = inputs.iter().position(|t| t.name == spec.name) else {
            return Err(ServeError::invalid(format!(
                "expected {} inputs but got {} inputs for model '{}': input '{}' is missing",
                sig.inputs.len(),
                inputs.len(),
                shown_name(&model.name),
                spec.name
            )));
        };
        let t = inputs.swap_remove(pos);
        if t.datatype != spec.datatype {
            return Err(ServeError::invalid(format!(
                "input '{}': datatype {} but model '{}' expects {}",
                t.name,
                t.datatype,
                shown_name(&model.name),
                spec.datatype
            )));
        }
        let fits = t.shape.len() == spec.shape.len()
            && t.shape
                .iter()
                .zip(&spec.shape)
                .all(|(got, want)| *want < 0 || *got as i64 == *want);
        if !fits {
            return Err(ServeError::invalid(format!(
                "input '{}': shape {:?} does not match the model's {:?} (-1 = any)",
                t.name, t.shape, spec.shape
            )));
        }
        if max_batch > 0 {
            let batch = t.shape[0];
            if batch == 0 || batch > max_batch {
                return Err(ServeError::invalid(format!(
                    "input '{}': batch size {batch} is outside 1..={max_batch} (max_batch_size of model '{}')",
                    t.name, shown_name(&model.name)
                )));
            }
            if ordered.is_empty() {
                rows = batch;
            } else if batch != rows {
                return Err(ServeError::invalid(format!(
                    "input '{}' has batch size {batch} but an earlier input has {rows}",
                    t.name
                )));
            }
        }
        t.check_size()?;
        ordered.push(t);
    }
    Ok((ordered, rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ModelFiles;

    struct NoSource;

    #[async_trait::async_trait]
    impl ModelSource for NoSource {
        fn describe(&self) -> String {
            "nothing".into()
        }
        async fn list(&self) -> Result<Vec<SourceModel>, ServeError> {
            Ok(Vec::new())
        }
        async fn fetch(&self, name: &str, _: u64) -> Result<ModelFiles, ServeError> {
            Err(ServeError::not_found(name))
        }
    }

    fn manager(limit: u64, pinned: &[&str]) -> ModelManager {
        ModelManager::new(
            Arc::new(NoSource),
            Runtimes::new(None, Some(RuntimeKind::Tract)).unwrap(),
            ManagerOptions {
                memory_limit: Some(limit),
                pinned: pinned.iter().map(|s| s.to_string()).collect(),
                room_timeout: Duration::from_millis(50),
                ..ManagerOptions::default()
            },
        )
    }

    /// A ready model of `bytes` with no instances behind it (nothing is run here).
    fn put(m: &ModelManager, name: &str, bytes: u64) -> ModelKey {
        let key = (name.to_string(), 1);
        let (queue, _) = crossbeam_channel::unbounded();
        let model = Arc::new(LoadedModel {
            name: name.into(),
            version: 1,
            revision: String::new(),
            config: ModelConfig::default(),
            signature: Signature::default(),
            runtime: RuntimeKind::Tract,
            memory_bytes: bytes,
            queue,
            in_flight: AtomicUsize::new(0),
            last_used: AtomicU64::new(m.inner.clock.fetch_add(1, Relaxed)),
        });
        m.inner.slots.lock().insert(key.clone(), Slot::Ready(model));
        key
    }

    /// A lease on a ready version, as a request holds one.
    fn lease(m: &ModelManager, key: &ModelKey) -> Lease {
        m.lease(&m.peek(key).unwrap())
    }

    fn state(m: &ModelManager, key: &ModelKey) -> (ModelState, String) {
        match &m.inner.slots.lock()[key] {
            Slot::Ready(_) => (ModelState::Ready, String::new()),
            Slot::Loading { .. } => (ModelState::Loading, String::new()),
            Slot::Unavailable { reason, .. } => (ModelState::Unavailable, reason.clone()),
        }
    }

    /// A source whose model files panic the loader.
    struct Panicky;

    #[async_trait::async_trait]
    impl ModelSource for Panicky {
        fn describe(&self) -> String {
            "panicky".into()
        }
        async fn list(&self) -> Result<Vec<SourceModel>, ServeError> {
            Ok(vec![SourceModel {
                name: "boom".into(),
                versions: vec![1],
                default_version: 1,
                unservable: Vec::new(),
                ..SourceModel::default()
            }])
        }
        async fn fetch(&self, _: &str, _: u64) -> Result<ModelFiles, ServeError> {
            panic!("a loader bug")
        }
    }

    #[tokio::test]
    async fn a_panicking_load_fails_that_model_and_never_leaves_it_loading() {
        let m = ModelManager::new(
            Arc::new(Panicky),
            Runtimes::new(None, Some(RuntimeKind::Tract)).unwrap(),
            ManagerOptions::default(),
        );
        for _ in 0..2 {
            let err = m.acquire("boom", None).await.err().expect("no model");
            assert!(err.to_string().contains("a loader bug"), "{err}");
        }
        let (state, reason) = state(&m, &("boom".to_string(), 1));
        assert_eq!(state, ModelState::Unavailable);
        assert!(reason.contains("failed unexpectedly"), "{reason}");
    }

    /// One model with a good version 1 and an unresolvable version 2; one with nothing good.
    struct HalfBroken;

    #[async_trait::async_trait]
    impl ModelSource for HalfBroken {
        fn describe(&self) -> String {
            "half broken".into()
        }
        async fn list(&self) -> Result<Vec<SourceModel>, ServeError> {
            Ok(vec![
                SourceModel {
                    name: "ok".into(),
                    versions: vec![1],
                    default_version: 1,
                    unservable: vec![(2, "cannot read runs:/r/..%2f..".into())],
                    ..SourceModel::default()
                },
                SourceModel {
                    name: "bad".into(),
                    versions: vec![],
                    default_version: 0,
                    unservable: vec![(1, "no such run".into())],
                    ..SourceModel::default()
                },
            ])
        }
        async fn fetch(&self, name: &str, _: u64) -> Result<ModelFiles, ServeError> {
            Err(ServeError::not_found(name))
        }
    }

    #[tokio::test]
    async fn an_unservable_version_is_listed_unavailable_and_the_rest_resolve() {
        let m = ModelManager::new(
            Arc::new(HalfBroken),
            Runtimes::new(None, Some(RuntimeKind::Tract)).unwrap(),
            ManagerOptions::default(),
        );
        let index = m.index().await.unwrap();
        let ok = index.iter().find(|e| e.name == "ok").unwrap();
        assert_eq!(ok.versions.len(), 1);
        assert_eq!(ok.versions[0].0, 2);
        assert_eq!(ok.versions[0].1, ModelState::Unavailable);
        assert!(ok.versions[0].2.contains("..%2f"));
        assert_eq!(m.resolve("ok", None).await.unwrap(), ("ok".into(), 1));
        assert!(matches!(
            m.resolve("ok", Some(2)).await,
            Err(ServeError::Unavailable(_))
        ));
        match m.resolve("bad", None).await {
            Err(ServeError::Unavailable(why)) => assert!(why.contains("no such run"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    const TINY: &[u8] = include_bytes!("../tests/fixtures/repo/tiny/1/model.onnx");

    /// `tiny` with its bias 1.5, -1.5 instead of 0.5, -0.5: [1, 2, 3, 4] gives [4, 6], not
    /// [3, 7].
    fn other_tiny() -> Vec<u8> {
        let bias = [0, 0, 0, 0x3f, 0, 0, 0, 0xbf];
        let at = TINY.windows(8).position(|w| w == bias).unwrap();
        let mut file = TINY.to_vec();
        file[at..at + 8].copy_from_slice(&[0, 0, 0xc0, 0x3f, 0, 0, 0xc0, 0xbf]);
        file
    }

    /// One model, `clf` version 1, whose revision and file the test changes.
    struct Changing(Mutex<(String, Vec<u8>)>);

    #[async_trait::async_trait]
    impl ModelSource for Changing {
        fn describe(&self) -> String {
            "changing".into()
        }
        async fn list(&self) -> Result<Vec<SourceModel>, ServeError> {
            let revision = self.0.lock().0.clone();
            Ok(vec![SourceModel {
                name: "clf".into(),
                versions: vec![1],
                revisions: [(1, revision)].into(),
                default_version: 1,
                ..SourceModel::default()
            }])
        }
        async fn fetch(&self, _: &str, _: u64) -> Result<ModelFiles, ServeError> {
            let (revision, onnx) = self.0.lock().clone();
            Ok(ModelFiles {
                onnx,
                config: ModelConfig::default(),
                origin: "changing".into(),
                revision,
            })
        }
    }

    async fn outputs(m: &ModelManager) -> Vec<f32> {
        let lease = m.acquire("clf", Some(1)).await.unwrap();
        let input = Tensor::from_vec("input", vec![1, 4], &[1f32, 2.0, 3.0, 4.0]);
        m.infer(&lease, vec![input], None).await.unwrap()[0].to_vec::<f32>()
    }

    #[tokio::test]
    async fn a_copy_answers_only_for_the_revision_it_was_loaded_from() {
        let source = Arc::new(Changing(Mutex::new(("a".into(), TINY.to_vec()))));
        let m = ModelManager::new(
            source.clone(),
            Runtimes::new(None, Some(RuntimeKind::Tract)).unwrap(),
            ManagerOptions::default(),
        );
        let key: ModelKey = ("clf".into(), 1);
        m.load("clf", Some(ModelConfig::default())).await.unwrap();
        assert_eq!(outputs(&m).await, vec![3.0, 7.0]);
        let before = m.acquire("clf", None).await.unwrap();

        // Made again with other weights: the next listing drops the old copy, its
        // statistics and the load's config; a request in flight finishes on it.
        *source.0.lock() = ("b".into(), other_tiny());
        m.index().await.unwrap();
        assert!(m.peek(&key).is_none());
        assert!(m.statistics(None, None).await.unwrap().is_empty());
        assert!(m.inner.overrides.lock().is_empty());
        let input = Tensor::from_vec("input", vec![1, 4], &[1f32, 2.0, 3.0, 4.0]);
        let old = m.infer(&before, vec![input], None).await.unwrap();
        assert_eq!(old[0].to_vec::<f32>(), vec![3.0, 7.0]);
        drop(before);
        assert_eq!(outputs(&m).await, vec![4.0, 6.0]);
        assert_eq!(m.peek(&key).unwrap().revision, "b");

        // A copy of a revision the cached listing does not have (loaded from a listing
        // older or newer than it) is not served on the cached listing's word: the request
        // reads the listing again and loads what the source has.
        *source.0.lock() = ("c".into(), TINY.to_vec());
        assert_eq!(
            outputs(&m).await,
            vec![4.0, 6.0],
            "within the listing's 2 s"
        );
        put(&m, "clf", 1);
        assert_eq!(m.peek(&key).unwrap().revision, "");
        assert_eq!(outputs(&m).await, vec![3.0, 7.0]);
        assert_eq!(m.peek(&key).unwrap().revision, "c");
        let stats = m.statistics(Some("clf"), None).await.unwrap();
        assert_eq!(stats[0].1.snapshot().inference_count, 1, "counted afresh");
    }

    #[tokio::test]
    async fn evicts_least_recently_used_idle_models_first() {
        let m = manager(100, &[]);
        let a = put(&m, "a", 40);
        let b = put(&m, "b", 40);
        // `a` is used after `b`, so `b` is the least recently used.
        drop(lease(&m, &a));
        m.make_room(&("new".into(), 1), 40).await.unwrap();
        assert_eq!(state(&m, &b), (ModelState::Unavailable, "evicted".into()));
        assert_eq!(state(&m, &a).0, ModelState::Ready);
        assert_eq!(m.memory_used(), 40);
    }

    #[tokio::test]
    async fn never_evicts_under_a_request_or_a_pin() {
        let m = manager(100, &["pinned"]);
        let busy = put(&m, "busy", 40);
        let pinned = put(&m, "pinned", 40);
        let lease = lease(&m, &busy);
        let err = m.make_room(&("new".into(), 1), 40).await.unwrap_err();
        assert!(matches!(err, ServeError::Unavailable(_)), "{err:?}");
        assert_eq!(state(&m, &busy).0, ModelState::Ready);
        assert_eq!(state(&m, &pinned).0, ModelState::Ready);
        // Once the request ends, a waiting load gets its room.
        let waiting = {
            let m = m.clone();
            tokio::spawn(async move { m.make_room(&("new".into(), 1), 40).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(lease);
        waiting.await.unwrap().unwrap();
        assert_eq!(
            state(&m, &busy),
            (ModelState::Unavailable, "evicted".into())
        );
        assert_eq!(state(&m, &pinned).0, ModelState::Ready);
    }
}
