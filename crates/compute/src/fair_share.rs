//! Sharing a pool between workspaces: quotas (what a workspace may hold at most) and
//! weighted dominant-resource fairness (which workspace's job starts next when several
//! wait). Pure rules, no I/O: the scheduler loop keeps the numbers and asks these.
//!
//! DRF (Ghodsi et al., NSDI 2011) gives each workspace a *dominant share*: the largest of
//! its CPU, memory and GPU use as a fraction of the pool, divided by its weight. The next
//! job to start is the best startable job of the workspace with the smallest one, so over
//! time workspaces with work waiting hold the pool in proportion to their weights, and a
//! GPU-heavy workspace is not starved by one that only uses CPUs (each is measured on the
//! resource it uses most).

use std::collections::{BTreeMap, HashMap};

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use trainyard_core::{Capacity, Resources};
use trainyard_store::{Db, StoreError};
use utoipa::ToSchema;

/// What a workspace may hold and queue at most; `None` is no limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_jobs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_jobs: Option<u32>,
    /// Bytes the workspace may keep in the blob store (artifacts of its experiments, its own
    /// artifact tree, the dataset shards it holds); uploads past it are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
}

impl Quota {
    /// The first limit `want` exceeds on its own, whatever else runs: a job that can never
    /// start. Returns the field (`quota.gpus`) and why.
    pub fn never_fits(&self, want: &Resources) -> Option<(&'static str, String)> {
        let want = want.total();
        if let Some(cpus) = self.cpus {
            if want.cpus_milli() > cpus_milli(cpus) {
                return Some((
                    "resources.cpus",
                    format!(
                        "asks for {} CPUs; the workspace's cpu quota is {cpus}",
                        want.cpus
                    ),
                ));
            }
        }
        if let Some(limit) = self.memory_mb {
            match want.memory_mb {
                None => {
                    return Some((
                        "resources.memory_mb",
                        format!(
                            "the workspace has a memory quota ({limit} MB): say how much memory the job needs"
                        ),
                    ))
                }
                Some(mem) if mem > limit => {
                    return Some((
                        "resources.memory_mb",
                        format!("asks for {mem} MB; the workspace's memory quota is {limit} MB"),
                    ))
                }
                Some(_) => {}
            }
        }
        if let Some(limit) = self.gpus {
            if want.gpus > limit {
                return Some((
                    "resources.gpus",
                    format!(
                        "asks for {} GPUs; the workspace's gpu quota is {limit}",
                        want.gpus
                    ),
                ));
            }
        }
        if self.running_jobs == Some(0) {
            return Some((
                "workspace",
                "the workspace's running-jobs quota is 0: none of its jobs may run".into(),
            ));
        }
        None
    }

    /// Why a job of `want` cannot start now with `used` held: the first quota it would
    /// pass, as shown to the user (`workspace gpu quota 4/4 in use`).
    pub fn blocks(&self, used: &Use, want: &Resources) -> Option<String> {
        let want = want.total();
        if let Some(limit) = self.running_jobs {
            if used.jobs >= limit {
                return Some(format!(
                    "workspace running-jobs quota {}/{limit} in use",
                    used.jobs
                ));
            }
        }
        if let Some(cpus) = self.cpus {
            if used.cpus_milli + want.cpus_milli() > cpus_milli(cpus) {
                return Some(format!(
                    "workspace cpu quota {}/{cpus} in use",
                    used.cpus_milli as f64 / 1000.0
                ));
            }
        }
        if let (Some(limit), Some(mem)) = (self.memory_mb, want.memory_mb) {
            if used.memory_mb + mem > limit {
                return Some(format!(
                    "workspace memory quota {}/{limit} MB in use",
                    used.memory_mb
                ));
            }
        }
        if let Some(limit) = self.gpus {
            if used.gpus + want.gpus > limit {
                return Some(format!("workspace gpu quota {}/{limit} in use", used.gpus));
            }
        }
        None
    }
}

fn cpus_milli(cpus: f64) -> u64 {
    (cpus * 1000.0).floor().max(0.0) as u64
}

/// What a workspace holds now (its running jobs added up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Use {
    pub cpus_milli: u64,
    pub memory_mb: u64,
    pub gpus: u32,
    pub jobs: u32,
}

impl std::ops::AddAssign for Use {
    fn add_assign(&mut self, other: Use) {
        self.cpus_milli += other.cpus_milli;
        self.memory_mb += other.memory_mb;
        self.gpus += other.gpus;
        self.jobs += other.jobs;
    }
}

impl Use {
    pub fn add(&mut self, r: &Resources) {
        let r = r.total();
        self.cpus_milli += r.cpus_milli();
        self.memory_mb += r.memory_mb.unwrap_or(0);
        self.gpus += r.gpus;
        self.jobs += 1;
    }

    pub fn remove(&mut self, r: &Resources) {
        let r = r.total();
        self.cpus_milli = self.cpus_milli.saturating_sub(r.cpus_milli());
        self.memory_mb = self.memory_mb.saturating_sub(r.memory_mb.unwrap_or(0));
        self.gpus = self.gpus.saturating_sub(r.gpus);
        self.jobs = self.jobs.saturating_sub(1);
    }

    /// The largest fraction of `capacity` this holds, over CPUs, memory and GPUs.
    pub fn dominant_fraction(&self, capacity: &Capacity) -> f64 {
        let part = |used: f64, total: f64| if total > 0.0 { used / total } else { 0.0 };
        part(self.cpus_milli as f64, capacity.cpus_milli as f64)
            .max(part(self.memory_mb as f64, capacity.memory_mb as f64))
            .max(part(f64::from(self.gpus), capacity.gpus.len() as f64))
    }

    /// The dominant fraction divided by the workspace's weight: who is furthest below
    /// its share has the smallest.
    pub fn dominant_share(&self, capacity: &Capacity, weight: f64) -> f64 {
        self.dominant_fraction(capacity) / weight.max(f64::MIN_POSITIVE)
    }
}

/// Weights outside this range are refused (a weight of 0 would starve a workspace).
pub const WEIGHTS: std::ops::RangeInclusive<f64> = 0.01..=1000.0;

/// A workspace's share of every pool and its limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspacePolicy {
    /// Relative share under contention (1 by default): a workspace of weight 2 gets twice
    /// the dominant share of one of weight 1 when both have work waiting.
    #[serde(default = "one")]
    #[schema(minimum = 0.01, maximum = 1000.0)]
    pub weight: f64,
    #[serde(default)]
    pub quota: Quota,
}

fn one() -> f64 {
    1.0
}

impl Default for WorkspacePolicy {
    fn default() -> Self {
        Self {
            weight: 1.0,
            quota: Quota::default(),
        }
    }
}

impl WorkspacePolicy {
    pub fn validate(&self) -> Result<(), trainyard_core::InvalidField> {
        use trainyard_core::InvalidField;
        if !self.weight.is_finite() || !WEIGHTS.contains(&self.weight) {
            return Err(InvalidField::new(
                "weight",
                format!(
                    "must be between {} and {}, got {}",
                    WEIGHTS.start(),
                    WEIGHTS.end(),
                    self.weight
                ),
            ));
        }
        if let Some(cpus) = self.quota.cpus {
            if !cpus.is_finite() || !(0.0..=1e6).contains(&cpus) {
                return Err(InvalidField::new(
                    "quota.cpus",
                    format!("must be a number of CPUs between 0 and 1000000, got {cpus}"),
                ));
            }
        }
        Ok(())
    }
}

/// Every workspace's policy; workspaces not named have the default one.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    pub by_workspace: HashMap<String, WorkspacePolicy>,
}

impl Policies {
    pub fn of(&self, workspace: &str) -> WorkspacePolicy {
        self.by_workspace
            .get(workspace)
            .cloned()
            .unwrap_or_default()
    }
}

/// What the pool loops and the scheduler's handle share about workspaces: their policies,
/// and what each pool's running jobs hold per workspace (quotas count across pools).
#[derive(Clone, Default)]
pub struct Sharing {
    policies: Arc<RwLock<Policies>>,
    in_use: Arc<Mutex<HashMap<String, HashMap<String, Use>>>>,
    /// Held by a pool loop from reading the others' use to publishing its own, so two
    /// pools cannot both start the job that fills a workspace's quota.
    planning: Arc<Mutex<()>>,
}

impl Sharing {
    /// The policies stored in `db`.
    pub async fn load(db: &Db) -> Result<Self, StoreError> {
        let this = Self::default();
        this.reload(db).await?;
        Ok(this)
    }

    /// Reads the policies again (another server may have changed them).
    pub async fn reload(&self, db: &Db) -> Result<(), StoreError> {
        let mut by_workspace = HashMap::new();
        for row in db.workspaces().await? {
            let quota = serde_json::from_str(&row.quota).unwrap_or_else(|e| {
                tracing::warn!(workspace = %row.id, error = %e, "unreadable quota; none applies");
                Quota::default()
            });
            by_workspace.insert(
                row.id,
                WorkspacePolicy {
                    weight: row.weight,
                    quota,
                },
            );
        }
        *self.policies.write() = Policies { by_workspace };
        Ok(())
    }

    pub fn planning(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.planning.lock()
    }

    pub fn policies(&self) -> Policies {
        self.policies.read().clone()
    }

    pub fn set(&self, workspace: &str, policy: WorkspacePolicy) {
        self.policies
            .write()
            .by_workspace
            .insert(workspace.to_string(), policy);
    }

    /// Records what `pool`'s running jobs hold now.
    pub fn publish(&self, pool: &str, used: &HashMap<String, Use>) {
        self.in_use.lock().insert(pool.to_string(), used.clone());
    }

    /// What every pool but `pool` holds, per workspace.
    pub fn in_use_elsewhere(&self, pool: &str) -> HashMap<String, Use> {
        let mut total: HashMap<String, Use> = HashMap::new();
        for (p, used) in self.in_use.lock().iter() {
            if p == pool {
                continue;
            }
            for (ws, u) in used {
                *total.entry(ws.clone()).or_default() += *u;
            }
        }
        total
    }

    /// What `workspace` holds in every pool.
    pub fn in_use(&self, workspace: &str) -> Use {
        let mut total = Use::default();
        for used in self.in_use.lock().values() {
            if let Some(u) = used.get(workspace) {
                total += *u;
            }
        }
        total
    }
}

/// How long fair share remembers use: past use counts with weight `2^(-age/HALF_LIFE)`
/// (Slurm's `PriorityDecayHalfLife` default).
pub const HALF_LIFE_MS: f64 = 7.0 * 86_400_000.0;
/// What is held now counts as this much time of use in [`Shares::rank`], so the starts of
/// one pass spread over workspaces instead of all going to the one ranked first.
const HOLDING_MS: f64 = 600_000.0;

/// One pool's fair-share state: what each workspace holds now, and its use so far
/// (dominant fraction × time, decaying with [`HALF_LIFE_MS`]).
///
/// Why use over time and not only what is held now: jobs hold whole GPUs, so holdings
/// move in steps. On 4 GPUs, weights 1:2 ask for 1⅓ : 2⅔ GPUs; ranking by current shares
/// settles on 2:2 (or 1:3, as ties fall) for good. Ranking by use over time alternates
/// between the two so that use follows the weights, as fair queueing does with virtual
/// time. And as there, a workspace that had nothing running or waiting joins at the
/// smallest rank of those active, so it does not bank credit while idle and then take the
/// whole pool.
#[derive(Debug, Clone, Default)]
pub struct Shares {
    pub used: HashMap<String, Use>,
    usage: HashMap<String, f64>,
    active: std::collections::HashSet<String>,
    at_ms: Option<i64>,
}

impl Shares {
    /// Counts the time since the last call at the current holdings.
    pub fn advance(&mut self, now_ms: i64, capacity: &Capacity) {
        let dt = match self.at_ms {
            Some(at) => (now_ms - at).max(0) as f64,
            None => 0.0,
        };
        self.at_ms = Some(now_ms.max(self.at_ms.unwrap_or(now_ms)));
        if dt == 0.0 {
            return;
        }
        let keep = 0.5f64.powf(dt / HALF_LIFE_MS);
        for u in self.usage.values_mut() {
            *u *= keep;
        }
        for (ws, u) in &self.used {
            // Close enough to the decayed integral for steps far shorter than the half-life.
            *self.usage.entry(ws.clone()).or_default() += u.dominant_fraction(capacity) * dt;
        }
    }

    /// Where `workspace` stands: its use so far plus what it holds now, over its weight.
    /// The next start goes to the smallest.
    pub fn rank(&self, workspace: &str, capacity: &Capacity, weight: f64) -> f64 {
        let usage = self.usage.get(workspace).copied().unwrap_or(0.0);
        let now = self
            .used
            .get(workspace)
            .map_or(0.0, |u| u.dominant_fraction(capacity));
        (usage + now * HOLDING_MS) / weight.max(f64::MIN_POSITIVE)
    }

    /// Marks `workspaces` as the ones with work now; one that joins is brought up to the
    /// smallest usage per weight of those that stay, and one that leaves is forgotten.
    fn activate(&mut self, workspaces: &[&str], policies: &Policies) {
        let weight = |ws: &str| policies.of(ws).weight;
        let now: std::collections::HashSet<String> = workspaces
            .iter()
            .map(|w| w.to_string())
            .chain(self.used.keys().cloned())
            .collect();
        let floor = self
            .active
            .iter()
            .filter(|ws| now.contains(*ws))
            .map(|ws| self.usage.get(ws).copied().unwrap_or(0.0) / weight(ws))
            .min_by(f64::total_cmp);
        if let Some(floor) = floor {
            for ws in now.iter().filter(|ws| !self.active.contains(*ws)) {
                let u = self.usage.entry(ws.clone()).or_default();
                *u = u.max(floor * weight(ws));
            }
        }
        self.usage.retain(|ws, _| now.contains(ws));
        self.active = now;
    }

    pub fn hold(&mut self, workspace: &str, r: &Resources) {
        self.used.entry(workspace.to_string()).or_default().add(r);
    }

    pub fn release(&mut self, workspace: &str, r: &Resources) {
        if let Some(u) = self.used.get_mut(workspace) {
            u.remove(r);
            if u.jobs == 0 {
                self.used.remove(workspace);
            }
        }
    }
}

/// A queued job as [`plan`] sees it.
#[derive(Debug, Clone)]
pub struct Waiting<'a> {
    pub workspace: &'a str,
    pub resources: &'a Resources,
    /// How long it has waited (for the backfill window).
    pub waited_ms: i64,
}

/// What one scheduling pass decided.
#[derive(Debug)]
pub struct Plan<R> {
    /// Index in the queue of each job to start, with what `reserve` gave it, in start order.
    pub start: Vec<(usize, R)>,
    /// Every job not started that its workspace's quota holds back now, with the reason to
    /// show.
    pub held: Vec<(usize, String)>,
}

/// Picks the jobs to start now. `queue` is in priority order (priority, then age);
/// `shares` is this pool's fair-share state, `quota_used` each workspace's use across
/// pools (quotas); both are updated for the jobs picked. `reserve` takes a job's resources
/// from what is free, or says it does not fit.
///
/// Each step starts the best startable job of the workspace of smallest
/// [`Shares::rank`] (ties: the one whose job is first in `queue`). Within a workspace, a
/// job that does not fit lets the ones behind it start (backfill) until it has waited
/// `backfill_window_ms`; after that, once its workspace's turn comes, nothing more starts
/// in this pool until it has. Its turn does come: every start raises the rank of the
/// workspace that got it. A job its quota holds back is skipped, not waited for.
pub fn plan<R>(
    queue: &[Waiting<'_>],
    shares: &mut Shares,
    quota_used: &mut HashMap<String, Use>,
    policies: &Policies,
    capacity: &Capacity,
    backfill_window_ms: i64,
    mut reserve: impl FnMut(&Resources) -> Option<R>,
) -> Plan<R> {
    let mut by_workspace: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, w) in queue.iter().enumerate() {
        by_workspace.entry(w.workspace).or_default().push(i);
    }
    let policy: HashMap<&str, WorkspacePolicy> = by_workspace
        .keys()
        .map(|ws| (*ws, policies.of(ws)))
        .collect();
    let waiting: Vec<&str> = by_workspace.keys().copied().collect();
    shares.activate(&waiting, policies);
    let mut taken = vec![false; queue.len()];
    let mut start = Vec::new();
    let mut done: std::collections::HashSet<&str> = Default::default();
    loop {
        let next = by_workspace
            .iter()
            .filter(|(ws, _)| !done.contains(*ws))
            .filter_map(|(ws, jobs)| {
                let first = *jobs.iter().find(|&&i| !taken[i])?;
                let share = shares.rank(ws, capacity, policy[ws].weight);
                Some((share, first, *ws))
            })
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let Some((_, _, ws)) = next else { break };
        let mut started = false;
        let mut drain = false;
        for &i in &by_workspace[ws] {
            if taken[i] {
                continue;
            }
            let job = &queue[i];
            let held_by = policy[ws].quota.blocks(
                &quota_used.get(ws).copied().unwrap_or_default(),
                job.resources,
            );
            if held_by.is_some() {
                continue;
            }
            match reserve(job.resources) {
                Some(r) => {
                    taken[i] = true;
                    shares.hold(ws, job.resources);
                    quota_used
                        .entry(ws.to_string())
                        .or_default()
                        .add(job.resources);
                    start.push((i, r));
                    started = true;
                    break;
                }
                None if job.waited_ms >= backfill_window_ms => {
                    drain = true;
                    break;
                }
                None => {}
            }
        }
        if drain {
            break;
        }
        if !started {
            done.insert(ws);
        }
    }
    // What the quotas hold back once these have started: every job still waiting, so the
    // caller can also clear the reason of one no longer held.
    let held = queue
        .iter()
        .enumerate()
        .filter(|(i, _)| !taken[*i])
        .filter_map(|(i, job)| {
            let used = quota_used.get(job.workspace).copied().unwrap_or_default();
            Some((i, policy[job.workspace].quota.blocks(&used, job.resources)?))
        })
        .collect();
    Plan { start, held }
}

/// When a job of a workspace below its share may end jobs of workspaces above theirs
/// (per pool; off unless the pool asks for it).
#[derive(Debug, Clone, PartialEq)]
pub struct PreemptRules {
    /// A job younger than this is never preempted (default 10 min).
    pub min_run_ms: i64,
    /// A job preempted once is not preempted again for this long (default 1 h).
    pub cooldown_ms: i64,
}

impl Default for PreemptRules {
    fn default() -> Self {
        Self {
            min_run_ms: 600_000,
            cooldown_ms: 3_600_000,
        }
    }
}

/// A running job as [`victims`] sees it.
#[derive(Debug, Clone)]
pub struct Preemptible<'a> {
    pub id: &'a str,
    pub workspace: &'a str,
    pub resources: &'a Resources,
    pub priority: i32,
    pub running_since_ms: i64,
    /// When this job was last preempted, if ever.
    pub preempted_at_ms: Option<i64>,
}

/// What is free in the pool now, in amounts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Amount {
    pub cpus_milli: u64,
    pub memory_mb: u64,
    pub gpus: u32,
}

impl Amount {
    fn fits(&self, want: &Resources) -> bool {
        let want = want.total();
        want.cpus_milli() <= self.cpus_milli
            && want.memory_mb.unwrap_or(0) <= self.memory_mb
            && want.gpus <= self.gpus
    }

    fn add(&mut self, r: &Resources) {
        let r = r.total();
        self.cpus_milli += r.cpus_milli();
        self.memory_mb += r.memory_mb.unwrap_or(0);
        self.gpus += r.gpus;
    }
}

/// The running jobs to end so that `want`, the best waiting job of `beneficiary`, can
/// start; `None` when the rules allow no such set. The rules are what keeps preemption
/// from churning:
/// - only a workspace that stays within its entitled share *after* the start gains
///   (entitled: its weight over the weights of the workspaces with work in the pool);
/// - only jobs of workspaces above their entitled share lose, and only while their
///   workspace stays at or above it once the job is gone, so the two cannot swap places
///   and preempt back;
/// - never a job younger than `min_run_ms`, never one preempted within `cooldown_ms`;
/// - as few jobs as it takes: the most over-share workspace first, then the lowest
///   priority, then the youngest (the least work lost).
#[allow(clippy::too_many_arguments)]
pub fn victims<'a>(
    want: &Resources,
    beneficiary: &str,
    free: Amount,
    running: &[Preemptible<'a>],
    used: &HashMap<String, Use>,
    active: &[&str],
    policies: &Policies,
    capacity: &Capacity,
    rules: &PreemptRules,
    now_ms: i64,
) -> Option<Vec<&'a str>> {
    if free.fits(want) {
        return None;
    }
    let total_weight: f64 = active.iter().map(|ws| policies.of(ws).weight).sum();
    if total_weight <= 0.0 {
        return None;
    }
    let entitled = |ws: &str| policies.of(ws).weight / total_weight;
    let fraction = |u: &Use| u.dominant_fraction(capacity);
    let mut gains = used.get(beneficiary).copied().unwrap_or_default();
    gains.add(want);
    if fraction(&gains) > entitled(beneficiary) + 1e-9 {
        return None;
    }
    let mut candidates: Vec<&Preemptible<'a>> = running
        .iter()
        .filter(|r| r.workspace != beneficiary)
        .filter(|r| now_ms - r.running_since_ms >= rules.min_run_ms)
        .filter(|r| {
            r.preempted_at_ms
                .is_none_or(|at| now_ms - at >= rules.cooldown_ms)
        })
        .filter(|r| {
            let u = used.get(r.workspace).copied().unwrap_or_default();
            fraction(&u) > entitled(r.workspace) + 1e-9
        })
        .collect();
    let over = |ws: &str| fraction(&used.get(ws).copied().unwrap_or_default()) - entitled(ws);
    candidates.sort_by(|a, b| {
        over(b.workspace)
            .total_cmp(&over(a.workspace))
            .then(a.priority.cmp(&b.priority))
            .then(b.running_since_ms.cmp(&a.running_since_ms))
    });
    let mut left: HashMap<&str, Use> = HashMap::new();
    let mut freed = free;
    let mut chosen = Vec::new();
    for c in candidates {
        let u = left
            .entry(c.workspace)
            .or_insert_with(|| used.get(c.workspace).copied().unwrap_or_default());
        let mut after = *u;
        after.remove(c.resources);
        if fraction(&after) + 1e-9 < entitled(c.workspace) {
            continue;
        }
        *u = after;
        freed.add(c.resources);
        chosen.push(c.id);
        if freed.fits(want) {
            return Some(chosen);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capacity(cpus: u64, memory_mb: u64, gpus: u32) -> Capacity {
        Capacity {
            cpus_milli: cpus * 1000,
            memory_mb,
            gpus: (0..gpus).collect(),
        }
    }

    fn job(cpus: f64, memory_mb: Option<u64>, gpus: u32) -> Resources {
        Resources {
            cpus,
            memory_mb,
            gpus,
            workers: 1,
        }
    }

    #[test]
    fn the_dominant_share_is_the_scarcest_resource_over_the_weight() {
        let pool = capacity(16, 64_000, 4);
        let mut gpu_heavy = Use::default();
        gpu_heavy.add(&job(1.0, Some(1000), 2));
        let mut cpu_heavy = Use::default();
        cpu_heavy.add(&job(8.0, Some(1000), 0));
        assert_eq!(gpu_heavy.dominant_fraction(&pool), 0.5);
        assert_eq!(cpu_heavy.dominant_fraction(&pool), 0.5);
        assert_eq!(gpu_heavy.dominant_share(&pool, 2.0), 0.25);
        // A pool without GPUs counts none.
        assert_eq!(cpu_heavy.dominant_fraction(&capacity(16, 64_000, 0)), 0.5);
    }

    /// Virtual time: workspaces with an endless backlog of 1-GPU jobs (20–60 min each)
    /// share a pool of 4 GPUs for `hours`; every job end frees its GPU and a pass of
    /// [`plan`] starts what it picks. Returns each workspace's GPU-hours, and checks at
    /// every instant that no quota is passed and no GPU is held twice.
    fn simulate(workspaces: &[(&str, f64, Quota)], hours: i64, seed: u64) -> HashMap<String, f64> {
        let capacity = capacity(16, 64_000, 4);
        let policies = Policies {
            by_workspace: workspaces
                .iter()
                .map(|(ws, weight, quota)| {
                    (
                        ws.to_string(),
                        WorkspacePolicy {
                            weight: *weight,
                            quota: quota.clone(),
                        },
                    )
                })
                .collect(),
        };
        let horizon = hours * 3_600_000;
        let one_gpu = job(2.0, Some(4000), 1);
        let mut seed = seed | 1;
        let mut duration = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (20 + (seed % 41) as i64) * 60_000
        };
        let mut queue: Vec<(String, i64)> = Vec::new();
        let mut running: Vec<(i64, String)> = Vec::new();
        let mut shares = Shares::default();
        let mut quota_used: HashMap<String, Use> = HashMap::new();
        let mut gpu_ms: HashMap<String, f64> = HashMap::new();
        let mut free_gpus = 4u32;
        let mut now = 0i64;
        while now < horizon {
            // Time passes at the holdings before these ends, then they are released.
            shares.advance(now, &capacity);
            running.retain(|(end, ws)| {
                if *end > now {
                    return true;
                }
                shares.release(ws, &one_gpu);
                quota_used.get_mut(ws).unwrap().remove(&one_gpu);
                free_gpus += 1;
                false
            });
            for (ws, ..) in workspaces {
                while queue.iter().filter(|(w, _)| w == ws).count() < 20 {
                    queue.push((ws.to_string(), now));
                }
            }
            let waiting: Vec<Waiting> = queue
                .iter()
                .map(|(ws, since)| Waiting {
                    workspace: ws,
                    resources: &one_gpu,
                    waited_ms: now - since,
                })
                .collect();
            let picked = plan(
                &waiting,
                &mut shares,
                &mut quota_used,
                &policies,
                &capacity,
                120_000,
                |r| (free_gpus >= r.gpus).then(|| free_gpus -= r.gpus),
            );
            let mut started: Vec<usize> = picked.start.iter().map(|(i, _)| *i).collect();
            started.sort_unstable();
            for i in started.into_iter().rev() {
                let (ws, _) = queue.remove(i);
                let end = now + duration();
                *gpu_ms.entry(ws.clone()).or_default() += (end.min(horizon) - now) as f64;
                running.push((end, ws));
            }
            for (ws, _, quota) in workspaces {
                let held = quota_used.get(*ws).copied().unwrap_or_default();
                assert!(
                    quota.gpus.is_none_or(|q| held.gpus <= q),
                    "{ws} over quota at {now}"
                );
            }
            assert_eq!(free_gpus as usize + running.len(), 4, "a GPU held twice");
            now = running.iter().map(|(end, _)| *end).min().unwrap_or(horizon);
        }
        gpu_ms
            .into_iter()
            .map(|(ws, ms)| (ws, ms / 3_600_000.0))
            .collect()
    }

    #[test]
    fn weights_1_to_2_share_4_gpus_1_to_2_over_10_hours() {
        for seed in [0x2545_f491_4f6c_dd1d, 7, 1_000_003] {
            let both = [("a", 1.0, Quota::default()), ("b", 2.0, Quota::default())];
            let hours = simulate(&both, 10, seed);
            let ratio = hours["b"] / hours["a"];
            eprintln!("seed {seed}: {hours:?}: b/a = {ratio:.3}");
            assert!((ratio - 2.0).abs() <= 0.1, "{hours:?}: b/a = {ratio:.3}");
            // The pool never idles while work waits.
            let total = hours["a"] + hours["b"];
            assert!(total > 4.0 * 10.0 * 0.99, "{hours:?}");
        }
    }

    #[test]
    fn a_quota_caps_a_workspace_and_the_rest_goes_to_the_others() {
        let capped = Quota {
            gpus: Some(1),
            ..Quota::default()
        };
        let hours = simulate(&[("a", 1.0, Quota::default()), ("b", 2.0, capped)], 10, 42);
        assert!(hours["b"] <= 10.0 + 1e-9, "{hours:?}");
        assert!(hours["a"] >= 29.0, "{hours:?}");
    }

    /// Virtual time, preemption on: workspace a (weight 1) fills 4 GPUs with 2–4 h jobs
    /// from the start; b (weight 2, at most 3 GPUs) queues 30–60 min jobs from hour 1. b
    /// gets GPUs by preemption soon after the minimum run time instead of waiting hours;
    /// no job is preempted before its minimum run time or twice within the cool-down; no
    /// quota is passed; a preempted job is queued again and finishes later.
    #[test]
    fn preemption_serves_a_workspace_below_its_share_without_churn() {
        let rules = PreemptRules::default();
        let capacity = capacity(16, 64_000, 4);
        let b_quota = Quota {
            gpus: Some(3),
            ..Quota::default()
        };
        let policies = Policies {
            by_workspace: [
                ("a".to_string(), WorkspacePolicy::default()),
                (
                    "b".to_string(),
                    WorkspacePolicy {
                        weight: 2.0,
                        quota: b_quota.clone(),
                    },
                ),
            ]
            .into_iter()
            .collect(),
        };
        let one_gpu = job(2.0, Some(4000), 1);
        let mut seed = 99u64;
        let mut minutes = move |lo: u64, hi: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ((lo + seed % (hi - lo + 1)) * 60_000) as i64
        };
        // (id, workspace, work left ms, queued since, preempted at)
        struct Queued {
            id: String,
            ws: &'static str,
            left: i64,
            since: i64,
            preempted_at: Option<i64>,
        }
        struct Running {
            id: String,
            ws: &'static str,
            started: i64,
            end: i64,
            preempted_at: Option<i64>,
        }
        let mut queue: Vec<Queued> = (0..12)
            .map(|i| Queued {
                id: format!("a{i}"),
                ws: "a",
                left: minutes(120, 240),
                since: 0,
                preempted_at: None,
            })
            .collect();
        let mut running: Vec<Running> = Vec::new();
        let mut shares = Shares::default();
        let mut quota_used: HashMap<String, Use> = HashMap::new();
        let mut free_gpus = 4u32;
        let mut finished: HashMap<String, i64> = HashMap::new();
        let mut preempted: Vec<(String, i64)> = Vec::new();
        let mut b_first_start = None;
        let horizon = 10 * 3_600_000i64;
        let mut now = 0i64;
        let mut next_b = 0;
        while now < horizon {
            shares.advance(now, &capacity);
            // Ends.
            running.retain(|r| {
                if r.end > now {
                    return true;
                }
                shares.release(r.ws, &one_gpu);
                quota_used.get_mut(r.ws).unwrap().remove(&one_gpu);
                free_gpus += 1;
                finished.insert(r.id.clone(), now);
                false
            });
            if now >= 3_600_000 {
                while queue.iter().filter(|q| q.ws == "b").count() < 8 {
                    queue.push(Queued {
                        id: format!("b{next_b}"),
                        ws: "b",
                        left: minutes(30, 60),
                        since: now,
                        preempted_at: None,
                    });
                    next_b += 1;
                }
            }
            let waiting: Vec<Waiting> = queue
                .iter()
                .map(|q| Waiting {
                    workspace: q.ws,
                    resources: &one_gpu,
                    waited_ms: now - q.since,
                })
                .collect();
            let picked = plan(
                &waiting,
                &mut shares,
                &mut quota_used,
                &policies,
                &capacity,
                120_000,
                |r| (free_gpus >= r.gpus).then(|| free_gpus -= r.gpus),
            );
            let mut started: Vec<usize> = picked.start.iter().map(|(i, _)| *i).collect();
            let held: Vec<String> = picked
                .held
                .iter()
                .map(|(i, _)| queue[*i].id.clone())
                .collect();
            started.sort_unstable();
            for i in started.into_iter().rev() {
                let q = queue.remove(i);
                if q.ws == "b" && b_first_start.is_none() {
                    b_first_start = Some(now);
                }
                running.push(Running {
                    end: now + q.left,
                    started: now,
                    id: q.id,
                    ws: q.ws,
                    preempted_at: q.preempted_at,
                });
            }
            // Preempt for the best waiting b job when b is held back by no quota.
            let candidate = queue
                .iter()
                .position(|q| q.ws == "b" && !held.contains(&q.id));
            if let Some(i) = candidate {
                let views: Vec<Preemptible> = running
                    .iter()
                    .map(|r| Preemptible {
                        id: &r.id,
                        workspace: r.ws,
                        resources: &one_gpu,
                        priority: 0,
                        running_since_ms: r.started,
                        preempted_at_ms: r.preempted_at,
                    })
                    .collect();
                let active: Vec<&str> = ["a", "b"].into_iter().collect();
                let free = Amount {
                    cpus_milli: 16_000,
                    memory_mb: 64_000,
                    gpus: free_gpus,
                };
                let chosen: Vec<String> = victims(
                    &one_gpu,
                    queue[i].ws,
                    free,
                    &views,
                    &shares.used,
                    &active,
                    &policies,
                    &capacity,
                    &rules,
                    now,
                )
                .unwrap_or_default()
                .into_iter()
                .map(String::from)
                .collect();
                for id in chosen {
                    let at = running.iter().position(|r| r.id == id).unwrap();
                    let r = running.remove(at);
                    assert!(now - r.started >= rules.min_run_ms, "{id} preempted young");
                    if let Some(before) = r.preempted_at {
                        assert!(now - before >= rules.cooldown_ms, "{id} preempted twice");
                    }
                    shares.release(r.ws, &one_gpu);
                    quota_used.get_mut(r.ws).unwrap().remove(&one_gpu);
                    free_gpus += 1;
                    preempted.push((id.clone(), now));
                    // Back in line by its age: before its workspace's younger jobs.
                    queue.insert(
                        0,
                        Queued {
                            id,
                            ws: r.ws,
                            left: r.end - now,
                            since: now,
                            preempted_at: Some(now),
                        },
                    );
                }
            }
            let b = quota_used.get("b").copied().unwrap_or_default();
            assert!(b.gpus <= 3, "b over its quota at {now}");
            assert_eq!(free_gpus as usize + running.len(), 4, "a GPU held twice");
            // Next event: an end, b's arrival, or a pending preemption becoming allowed.
            now = running
                .iter()
                .map(|r| r.end)
                .chain([3_600_000, now + 60_000].into_iter().filter(|t| *t > now))
                .min()
                .unwrap()
                .min(horizon);
        }
        // b waited for a's minimum run time at most, not for a's 2-4 h jobs to end.
        let waited = b_first_start.unwrap() - 3_600_000;
        assert!(waited <= 60_000, "b waited {waited} ms");
        assert!(!preempted.is_empty());
        // Every job a lost came back and ran to its end.
        for (id, at) in &preempted {
            if let Some(done) = finished.get(id) {
                assert!(done > at);
            }
        }
        assert!(
            preempted.iter().any(|(id, _)| finished.contains_key(id)),
            "no preempted job finished: {preempted:?}"
        );
    }

    /// A workspace that had no work joins at the rank of those that had, instead of
    /// taking the whole pool until its banked credit runs out; one that leaves is forgotten.
    #[test]
    fn a_workspace_joining_late_banks_no_credit() {
        let pool = capacity(16, 64_000, 4);
        let policies = Policies::default();
        let mut shares = Shares::default();
        shares.activate(&["a"], &policies);
        for _ in 0..4 {
            shares.hold("a", &job(1.0, None, 1));
        }
        shares.advance(0, &pool);
        shares.advance(5 * 3_600_000, &pool);
        shares.activate(&["a", "b"], &policies);
        let (a, b) = (shares.rank("a", &pool, 1.0), shares.rank("b", &pool, 1.0));
        // b starts where a's past use is (less what a holds now), not at zero.
        assert!(b > 0.9 * 5.0 * 3_600_000.0, "{b}");
        assert!(a > b, "{a} {b}");
        for _ in 0..4 {
            shares.release("a", &job(1.0, None, 1));
        }
        shares.activate(&["b"], &policies);
        assert_eq!(shares.rank("a", &pool, 1.0), 0.0);
    }

    #[test]
    fn quotas_block_what_would_pass_them_and_name_it() {
        let quota = Quota {
            gpus: Some(4),
            running_jobs: Some(3),
            ..Quota::default()
        };
        let mut used = Use::default();
        assert_eq!(quota.blocks(&used, &job(1.0, None, 4)), None);
        used.add(&job(1.0, None, 4));
        assert_eq!(
            quota.blocks(&used, &job(1.0, None, 1)).as_deref(),
            Some("workspace gpu quota 4/4 in use")
        );
        assert_eq!(quota.blocks(&used, &job(1.0, None, 0)), None);
        used.add(&job(1.0, None, 0));
        used.add(&job(1.0, None, 0));
        assert_eq!(
            quota.blocks(&used, &job(1.0, None, 0)).as_deref(),
            Some("workspace running-jobs quota 3/3 in use")
        );
        // A gang counts all its workers.
        let gang = Resources {
            workers: 5,
            ..job(1.0, None, 1)
        };
        let (field, why) = quota.never_fits(&gang).unwrap();
        assert_eq!(field, "resources.gpus");
        assert!(
            why.contains("5 GPUs") && why.contains("quota is 4"),
            "{why}"
        );
        assert_eq!(quota.never_fits(&job(64.0, None, 4)), None);
    }
}
