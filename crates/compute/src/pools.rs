//! Resource pools as `trainyard.toml` declares them (`[[pools]]`), and turning them into
//! executors at start. Without any, the server has one pool, `local`: this machine.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use trainyard_core::job::is_pool_name;
use trainyard_store::{Blobs, Db};
use trainyard_tracking::Tracking;

use crate::executor::cluster::{ClusterExecutor, ClusterOptions, Engine, EngineError};
use crate::executor::kubernetes::{Kubernetes, KubernetesSettings};
use crate::executor::ray::{Ray, RaySettings};
use crate::executor::slurm::{SlurmCommands, SlurmRest, SlurmSettings};
use crate::fair_share::PreemptRules;
use crate::{Executor, LocalExecutor, Pool};

/// Which engine runs a pool's jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// This machine, one supervisor process per attempt.
    Local,
    /// A Slurm cluster, through slurmrestd or Slurm's commands on this host.
    Slurm,
    /// A Ray cluster, through its Jobs REST API.
    Ray,
    /// A Kubernetes cluster: a `batch/v1` Job per attempt (tested against recorded API
    /// exchanges only).
    Kubernetes,
}

/// One `[[pools]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSettings {
    /// What jobs name (`trainyard run --pool NAME`); the first pool is the default.
    pub name: String,
    pub executor: ExecutorKind,
    /// `[pools.slurm]`: for `executor = "slurm"`.
    #[serde(default)]
    pub slurm: Option<SlurmSettings>,
    /// `[pools.ray]`: for `executor = "ray"`.
    #[serde(default)]
    pub ray: Option<RaySettings>,
    /// `[pools.kubernetes]`: for `executor = "kubernetes"`.
    #[serde(default)]
    pub kubernetes: Option<KubernetesSettings>,
    /// The `trainyard` program on the engine's nodes, for built-in tasks [default: the
    /// server's own path].
    #[serde(default)]
    pub program: Option<PathBuf>,
    /// The URL by which jobs on the engine's nodes reach this server [default: the
    /// address it listens on].
    #[serde(default)]
    pub server_url: Option<String>,
    /// Where each job's output is spooled before it is shipped to blobs. Slurm writes it
    /// there from its nodes: this must be storage they share with the server [default:
    /// `<data-dir>/pools/<name>`, which only a single-machine cluster shares].
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// Attempts handed to the engine beyond what fits now, to wait in its own queue (0-64)
    /// [default: 1 for a cluster engine, 0 for this machine]. One keeps the engine from
    /// idling between the end of a job and Trainyard's next round; each more lets the
    /// engine, not Trainyard's fair share and priorities, order that many jobs.
    #[serde(default)]
    pub engine_queue: Option<u32>,
    /// Whether a job of a workspace below its fair share may end jobs of workspaces above
    /// theirs in this pool (SIGTERM, the kill grace, then queued again) [default: false].
    #[serde(default)]
    pub preempt: bool,
    /// A job younger than this is never preempted [default: 600].
    #[serde(default)]
    pub preempt_min_run_s: Option<u64>,
    /// A job preempted once is not preempted again for this long [default: 3600].
    #[serde(default)]
    pub preempt_cooldown_s: Option<u64>,
}

/// What the server passes to every pool it builds.
pub struct PoolContext {
    /// This machine's executor (for a `local` pool, or the implicit one).
    pub local: Arc<LocalExecutor>,
    pub db: Db,
    pub blobs: Blobs,
    pub tracking: Tracking,
    pub data_dir: PathBuf,
    /// The server's own program.
    pub program: PathBuf,
    /// The URL the server listens on.
    pub server_url: String,
}

/// Why a pool could not be built at start.
#[derive(Debug, thiserror::Error)]
#[error("pool {pool:?}: {message}")]
pub struct PoolError {
    pub pool: String,
    pub message: String,
}

/// Checks the declared pools (names, one `local` at most, the settings each executor
/// needs) and connects to their engines; an engine that cannot be reached is an error
/// naming the pool and the engine's URL.
pub async fn build_pools(
    settings: &[PoolSettings],
    ctx: PoolContext,
) -> Result<Vec<Pool>, PoolError> {
    if settings.is_empty() {
        return Ok(vec![Pool {
            name: "local".into(),
            executor: ctx.local,
            preempt: None,
        }]);
    }
    let mut pools: Vec<Pool> = Vec::new();
    for pool in settings {
        let fail = |message: String| PoolError {
            pool: pool.name.clone(),
            message,
        };
        if !is_pool_name(&pool.name) {
            return Err(fail(
                "pool names are 1-63 lowercase letters, digits, '-' and '_'".into(),
            ));
        }
        if pools.iter().any(|p| p.name == pool.name) {
            return Err(fail("two pools have this name".into()));
        }
        if pool.engine_queue.is_some_and(|n| n > 64) {
            return Err(fail("engine_queue must be between 0 and 64".into()));
        }
        if pool.executor == ExecutorKind::Local && pool.engine_queue.is_some_and(|n| n > 0) {
            return Err(fail(
                "a local pool has no engine queue: engine_queue is for cluster pools".into(),
            ));
        }
        let options = ClusterOptions {
            engine_queue: pool.engine_queue.unwrap_or(1),
            pool: pool.name.clone(),
            program: pool.program.clone().unwrap_or_else(|| ctx.program.clone()),
            server_url: pool
                .server_url
                .clone()
                .unwrap_or_else(|| ctx.server_url.clone()),
            spool_dir: pool
                .spool_dir
                .clone()
                .unwrap_or_else(|| ctx.data_dir.join("pools").join(&pool.name)),
        };
        let engine_error = |e: EngineError| fail(e.to_string());
        let executor: Arc<dyn Executor> = match pool.executor {
            ExecutorKind::Local => {
                if pool.slurm.is_some() || pool.ray.is_some() || pool.kubernetes.is_some() {
                    return Err(fail(
                        "a local pool takes no [pools.slurm], [pools.ray] or [pools.kubernetes]"
                            .into(),
                    ));
                }
                if pools.iter().any(|p| p.executor.kind() == "local") {
                    return Err(fail(
                        "only one pool may be this machine (it would be handed out twice)".into(),
                    ));
                }
                ctx.local.clone()
            }
            ExecutorKind::Slurm => {
                let slurm = pool.slurm.clone().unwrap_or_default();
                if slurm.url.is_some() {
                    let engine = SlurmRest::connect(&slurm).await.map_err(engine_error)?;
                    tracing::info!(pool = %pool.name, version = engine.version(), "slurmrestd answers");
                    on_engine(engine, options, &ctx)
                        .await
                        .map_err(engine_error)?
                } else {
                    let engine = SlurmCommands::connect(&slurm).await.map_err(engine_error)?;
                    on_engine(engine, options, &ctx)
                        .await
                        .map_err(engine_error)?
                }
            }
            ExecutorKind::Kubernetes => {
                let settings = pool.kubernetes.clone().ok_or_else(|| {
                    fail("a kubernetes pool needs [pools.kubernetes] with the jobs' image".into())
                })?;
                let engine = Kubernetes::connect(&settings).await.map_err(engine_error)?;
                on_engine(engine, options, &ctx)
                    .await
                    .map_err(engine_error)?
            }
            ExecutorKind::Ray => {
                let ray = pool.ray.clone().ok_or_else(|| {
                    fail("a ray pool needs [pools.ray] with the dashboard's url".into())
                })?;
                let engine = Ray::connect(&ray).await.map_err(engine_error)?;
                on_engine(engine, options, &ctx)
                    .await
                    .map_err(engine_error)?
            }
        };
        let c = executor.capacity();
        tracing::info!(
            pool = %pool.name,
            executor = executor.kind(),
            cpus = c.cpus_milli as f64 / 1000.0,
            memory_mb = c.memory_mb,
            gpus = c.gpus.len(),
            "pool ready"
        );
        pools.push(Pool {
            name: pool.name.clone(),
            executor,
            preempt: pool.preempt.then(|| PreemptRules {
                min_run_ms: pool.preempt_min_run_s.unwrap_or(600).saturating_mul(1000) as i64,
                cooldown_ms: pool.preempt_cooldown_s.unwrap_or(3600).saturating_mul(1000) as i64,
            }),
        });
    }
    Ok(pools)
}

/// The executor of a pool on `engine`.
async fn on_engine<E: Engine>(
    engine: E,
    options: ClusterOptions,
    ctx: &PoolContext,
) -> Result<Arc<dyn Executor>, EngineError> {
    let executor = ClusterExecutor::connect(
        engine,
        options,
        ctx.db.clone(),
        ctx.blobs.clone(),
        ctx.tracking.clone(),
    )
    .await?;
    Ok(Arc::new(executor))
}
