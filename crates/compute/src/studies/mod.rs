//! Hyper-parameter studies: the service the API calls (create, list, ask, tell, stop) and
//! the controller that runs a study's trials as jobs.
//!
//! A study lives in the database: its specification (with the sampler's seed fixed at
//! creation) and its trials (configuration, state, values). `trainyard_tune` computes every
//! suggestion from those alone, so nothing of a study is lost when a server stops, and a
//! restarted server continues with exactly the suggestions the old one would have made.

mod controller;
pub mod optuna;
mod view;

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use trainyard_core::time::now_ms;
use trainyard_store::StudyRow;
use trainyard_tune::sampler::{self, SamplerConfig};
use trainyard_tune::space::Space;
use trainyard_tune::{StudySpec, TrialRecord, TrialState, TuneError};

pub use controller::{run_controller, CONTROLLER_TICK};
pub use view::{Study, StudyState, Trial};

use crate::{ComputeError, SchedulerHandle};
use trainyard_core::InvalidField;

/// What a client tells of a trial it ran (`PUT /api/v1/studies/{name}/trials/{number}`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tell {
    /// `complete` (with a value), `pruned` or `failed`.
    pub state: TrialState,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub constraint: Option<f64>,
    #[serde(default)]
    pub message: Option<String>,
}

/// An intermediate value a client reports (`POST …/trials/{number}/report`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// 0 to 2^63 - 1 (an int64 that is not negative).
    pub step: u64,
    pub value: f64,
}

/// Most trials one page lists.
pub const MAX_PAGE: i64 = 1000;

#[derive(Clone)]
pub struct Studies {
    scheduler: SchedulerHandle,
    history: Arc<HistoryCache>,
}

/// The finished trials of recently asked studies, kept between asks: a finished trial never
/// changes (the store refuses it), so an ask reads back only the trials after the longest
/// run of finished ones it already holds instead of the whole study.
#[derive(Default)]
struct HistoryCache {
    /// Study id → (when last asked, its prefix).
    studies: parking_lot::Mutex<HashMap<String, (u64, SharedPrefix)>>,
    uses: std::sync::atomic::AtomicU64,
}

type SharedPrefix = Arc<tokio::sync::Mutex<Prefix>>;

/// Trials `0 … watermark` of a study, all finished.
#[derive(Default)]
struct Prefix {
    watermark: Option<i64>,
    finished: Vec<TrialRecord>,
}

/// Studies whose history is kept at once (the least recently asked go first).
const CACHED_STUDIES: usize = 64;

impl HistoryCache {
    fn prefix(&self, study_id: &str) -> SharedPrefix {
        let now = self.uses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut studies = self.studies.lock();
        if !studies.contains_key(study_id) && studies.len() >= CACHED_STUDIES {
            if let Some(oldest) = studies
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(k, _)| k.clone())
            {
                studies.remove(&oldest);
            }
        }
        let entry = studies
            .entry(study_id.to_string())
            .or_insert_with(|| (now, Arc::default()));
        entry.0 = now;
        entry.1.clone()
    }
}

impl Studies {
    pub fn new(scheduler: SchedulerHandle) -> Self {
        Studies {
            scheduler,
            history: Arc::default(),
        }
    }

    /// Every trial of a study, for its sampler: the cached finished prefix, then what the
    /// store holds after it (the prefix grows by the trials found finished in order).
    async fn history(&self, study_id: &str) -> Result<Vec<TrialRecord>, ComputeError> {
        let prefix = self.history.prefix(study_id);
        let mut prefix = prefix.lock().await;
        let rows = self
            .db()
            .trials_page(study_id, prefix.watermark, i64::MAX)
            .await?;
        let mut rest = Vec::new();
        for row in &rows {
            let record = Trial::from_row(row)?.record();
            let next = prefix.watermark.map_or(0, |w| w + 1);
            if rest.is_empty() && row.number == next && record.state.is_finished() {
                prefix.finished.push(record);
                prefix.watermark = Some(row.number);
            } else {
                rest.push(record);
            }
        }
        let mut all = prefix.finished.clone();
        all.extend(rest);
        Ok(all)
    }

    fn db(&self) -> &trainyard_store::Db {
        &self.scheduler.store().db
    }

    /// Checks and stores a study. Its sampler's seed is fixed now (a random one when none
    /// was given), and its experiment made, so its trials' runs have a home.
    pub async fn create(&self, workspace: &str, spec: StudySpec) -> Result<Study, ComputeError> {
        let space = spec.check()?;
        let mut spec = spec;
        let seed = spec.sampler.seed().unwrap_or_else(random_seed);
        spec.sampler = spec.sampler.clone().with_seed(seed);
        if spec.trial.is_some() {
            let experiment = spec.experiment.clone().unwrap_or_else(|| spec.name.clone());
            self.scheduler
                .tracking()
                .scoped(workspace)
                .experiment_for_name(&experiment)
                .await
                .map_err(|e| match e {
                    trainyard_tracking::TrackingError::InvalidParameter(m) => {
                        ComputeError::Invalid(InvalidField::new("experiment", m))
                    }
                    other => other.into(),
                })?;
        }
        if let Some(template) = spec.trial.clone() {
            spec.trial = Some(
                self.check_template(workspace, &spec, &space, template)
                    .await?,
            );
        }
        let row = StudyRow {
            id: trainyard_core::id::new_id(),
            workspace: workspace.to_string(),
            name: spec.name.clone(),
            spec: serde_json::to_string(&spec).expect("a study spec serialises"),
            state: StudyState::Running.as_str().to_string(),
            message: None,
            created_at_ms: now_ms(),
            finished_at_ms: None,
        };
        if !self.db().insert_study(&row).await? {
            return Err(ComputeError::StudyExists(spec.name));
        }
        self.view(row).await
    }

    /// Renders the template with a real configuration and checks the job as the scheduler
    /// will (pool, resources against the pool and the quota, secrets, the training file and
    /// its dataset), so a template no trial could run is refused now, naming the field.
    /// Returns the template with a training file's dataset pinned to a version.
    async fn check_template(
        &self,
        workspace: &str,
        spec: &StudySpec,
        space: &Space,
        mut template: trainyard_tune::study::TrialTemplate,
    ) -> Result<trainyard_tune::study::TrialTemplate, ComputeError> {
        let in_trial = |e: ComputeError| {
            let under = |f: InvalidField| InvalidField {
                field: if f.field.starts_with("trial.") {
                    f.field
                } else {
                    format!("trial.{}", f.field)
                },
                message: f.message,
            };
            match e {
                ComputeError::Invalid(f) => ComputeError::Invalid(under(f)),
                ComputeError::Unschedulable(f) => ComputeError::Unschedulable(under(f)),
                ComputeError::OverQuota(f) => ComputeError::OverQuota(under(f)),
                other => other,
            }
        };
        if let Some(text) = &template.train {
            let probe = sampler::probe(space);
            let values = trainyard_tune::study::TrialTemplate::values(
                &spec.name,
                0,
                &probe,
                spec.pruner.rungs(0).first().copied(),
                None,
            );
            let rendered = trainyard_tune::study::render(text, &values);
            let config: toml::Value = toml::from_str(&rendered).map_err(|e| {
                InvalidField::new("trial.train", format!("the training file, rendered: {e}"))
            })?;
            let named = config
                .get("data")
                .and_then(|d| d.get("dataset"))
                .and_then(|d| d.as_str())
                .ok_or_else(|| InvalidField::new("trial.train", "no `data.dataset`"))?;
            let (name, version) = named.split_once(':').unwrap_or((named, "latest"));
            let pinned = self
                .db()
                .dataset_version(workspace, name, version)
                .await?
                .ok_or_else(|| {
                    InvalidField::new(
                        "trial.train",
                        format!("dataset `{named}` has no such version in workspace `{workspace}`"),
                    )
                })?;
            template.dataset = Some(format!("{}:{}", pinned.name, pinned.version));
        }
        let probe = Trial::new(
            0,
            sampler::probe(space),
            Some(trainyard_core::id::new_id()),
            0,
        );
        let job = controller::trial_job("probe", spec, &template, &probe)?;
        self.scheduler
            .check(workspace, &job)
            .await
            .map_err(in_trial)?;
        Ok(template)
    }

    async fn row(&self, workspace: &str, name: &str) -> Result<StudyRow, ComputeError> {
        match self.db().get_study(workspace, name).await? {
            Some(row) => Ok(row),
            None if self
                .db()
                .optuna_study_by_name(workspace, name)
                .await?
                .is_some() =>
            {
                Err(ComputeError::StudyClosed(format!(
                    "study `{name}` is kept for an Optuna client, which runs its trials"
                )))
            }
            None => Err(ComputeError::StudyNotFound(
                name.escape_default().to_string(),
            )),
        }
    }

    /// A study an Optuna client keeps here, with its trials.
    async fn optuna(
        &self,
        workspace: &str,
        name: &str,
    ) -> Result<Option<(Study, Vec<Trial>)>, ComputeError> {
        match self.db().optuna_study_by_name(workspace, name).await? {
            Some(row) => Ok(Some(optuna::view(self.db(), &row).await?)),
            None => Ok(None),
        }
    }

    async fn view(&self, row: StudyRow) -> Result<Study, ComputeError> {
        let spec = Study::spec_of(&row)?;
        let maximize = spec.objective.direction == trainyard_tune::Direction::Maximize;
        let best = self.db().best_trial(&row.id, maximize).await?;
        let counts: BTreeMap<String, i64> =
            self.db().trial_counts(&row.id).await?.into_iter().collect();
        Ok(Study {
            state: Study::state_of(&row)?,
            best: best.as_ref().map(Trial::from_row).transpose()?,
            directions: None,
            pareto_front: None,
            id: row.id,
            name: row.name,
            workspace: row.workspace,
            message: row.message,
            spec,
            counts,
            created_at_ms: row.created_at_ms,
            finished_at_ms: row.finished_at_ms,
        })
    }

    pub async fn get(&self, workspace: &str, name: &str) -> Result<Study, ComputeError> {
        if let Some((study, _)) = self.optuna(workspace, name).await? {
            if self.db().get_study(workspace, name).await?.is_none() {
                return Ok(study);
            }
        }
        let row = self.row(workspace, name).await?;
        self.view(row).await
    }

    /// The workspace's studies, newest first, then those Optuna clients keep here.
    pub async fn list(&self, workspace: &str) -> Result<Vec<Study>, ComputeError> {
        let mut out = Vec::new();
        for row in self.db().list_studies(workspace).await? {
            out.push(self.view(row).await?);
        }
        for row in self.db().optuna_studies(workspace).await? {
            if out.iter().all(|s| s.name != row.name) {
                out.push(optuna::view(self.db(), &row).await?.0);
            }
        }
        Ok(out)
    }

    /// Trials numbered after `after`, at most `limit`, and the number to continue after
    /// when there are more.
    pub async fn trials(
        &self,
        workspace: &str,
        name: &str,
        after: Option<u64>,
        limit: i64,
    ) -> Result<(Vec<Trial>, Option<u64>), ComputeError> {
        let limit = limit.clamp(1, MAX_PAGE);
        if self.db().get_study(workspace, name).await?.is_none() {
            if let Some((_, all)) = self.optuna(workspace, name).await? {
                let mut page: Vec<Trial> = all
                    .into_iter()
                    .filter(|t| after.is_none_or(|a| t.number > a))
                    .take(limit as usize + 1)
                    .collect();
                let next = if page.len() as i64 > limit {
                    page.truncate(limit as usize);
                    page.last().map(|t| t.number)
                } else {
                    None
                };
                return Ok((page, next));
            }
        }
        let row = self.row(workspace, name).await?;
        let rows = self
            .db()
            .trials_page(
                &row.id,
                after.map(|a| a.min(i64::MAX as u64) as i64),
                limit + 1,
            )
            .await?;
        let mut trials = rows
            .iter()
            .map(Trial::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if trials.len() as i64 > limit {
            trials.truncate(limit as usize);
            trials.last().map(|t| t.number)
        } else {
            None
        };
        Ok((trials, next))
    }

    pub async fn trial(
        &self,
        workspace: &str,
        name: &str,
        number: u64,
    ) -> Result<Trial, ComputeError> {
        if self.db().get_study(workspace, name).await?.is_none() {
            if let Some((_, all)) = self.optuna(workspace, name).await? {
                return all.into_iter().find(|t| t.number == number).ok_or_else(|| {
                    ComputeError::TrialNotFound {
                        study: name.to_string(),
                        number,
                    }
                });
            }
        }
        let row = self.row(workspace, name).await?;
        self.trial_of(&row, number).await
    }

    async fn trial_of(&self, row: &StudyRow, number: u64) -> Result<Trial, ComputeError> {
        let t = match i64::try_from(number) {
            Ok(n) => self.db().get_trial(&row.id, n).await?,
            Err(_) => None,
        };
        t.as_ref()
            .map(Trial::from_row)
            .transpose()?
            .ok_or_else(|| ComputeError::TrialNotFound {
                study: row.name.clone(),
                number,
            })
    }

    pub async fn best(&self, workspace: &str, name: &str) -> Result<Option<Trial>, ComputeError> {
        let study = self.get(workspace, name).await?;
        if study.directions.is_some() {
            return Err(ComputeError::SeveralObjectives(study.name));
        }
        Ok(study.best)
    }

    /// A new trial for a client to run: the sampler's suggestion for the next number.
    /// Only for studies without a template (a template's trials are the controller's).
    pub async fn ask(&self, workspace: &str, name: &str) -> Result<Trial, ComputeError> {
        let row = self.row(workspace, name).await?;
        let spec = Study::spec_of(&row)?;
        if spec.trial.is_some() {
            return Err(ComputeError::StudyClosed(format!(
                "study `{name}` runs its trials from its template; it takes none through the API"
            )));
        }
        let state = Study::state_of(&row)?;
        if state != StudyState::Running {
            return Err(ComputeError::StudyClosed(format!(
                "study `{name}` is {}",
                state.as_str()
            )));
        }
        if let Some(s) = spec.budget.wall_time_s {
            if now_ms() - row.created_at_ms >= (s as i64).saturating_mul(1000) {
                return Err(ComputeError::StudyClosed(format!(
                    "study `{name}` has run out of its wall time ({s} s)"
                )));
            }
        }
        let space = Space::new(&spec.space)?;
        let limit = spec.trial_limit(&space);
        let needs_history = needs_history(&spec.sampler, &space);
        // Two clients asking at once race for the number; the loser asks again.
        for _ in 0..20 {
            let number = self.db().next_trial_number(&row.id).await? as u64;
            if limit.is_some_and(|l| number >= l) {
                return Err(ComputeError::StudyClosed(format!(
                    "study `{name}` has started all {} of its trials",
                    number
                )));
            }
            let history: Vec<TrialRecord> = if needs_history {
                self.history(&row.id).await?
            } else {
                Vec::new()
            };
            let params = match suggest(&spec, &space, history, number).await {
                // Every configuration has been tried: once none is still running (a
                // running one may yet be told), the study is done rather than `running`
                // with nothing left to ask.
                Err(ComputeError::StudyClosed(why)) => {
                    self.finish_if_idle(&row, &why).await?;
                    return Err(ComputeError::StudyClosed(why));
                }
                other => other?,
            };
            let trial = Trial::new(number, params, None, now_ms());
            if self.db().insert_trial(&trial.to_row(&row.id)).await? {
                return Ok(trial);
            }
        }
        Err(ComputeError::StudyClosed(
            "too many clients asking at once; ask again".into(),
        ))
    }

    /// Records how a client's trial ended. A finished trial never changes.
    pub async fn tell(
        &self,
        workspace: &str,
        name: &str,
        number: u64,
        tell: Tell,
    ) -> Result<Trial, ComputeError> {
        let row = self.row(workspace, name).await?;
        let spec = Study::spec_of(&row)?;
        if spec.trial.is_some() {
            return Err(ComputeError::StudyClosed(format!(
                "study `{name}` reads its trials' values from their runs"
            )));
        }
        let mut trial = self.trial_of(&row, number).await?;
        if trial.state.is_finished() {
            return Err(ComputeError::TrialFinished {
                number,
                state: trial.state.as_str(),
            });
        }
        for (field, v) in [("value", tell.value), ("constraint", tell.constraint)] {
            if v.is_some_and(|v| !v.is_finite()) {
                return Err(InvalidField::new(field, "must be a finite number").into());
            }
        }
        if let Some(m) = &tell.message {
            if m.len() > 10_000 || m.contains('\0') {
                return Err(
                    InvalidField::new("message", "at most 10000 characters, no NUL").into(),
                );
            }
        }
        match tell.state {
            TrialState::Complete if tell.value.is_none() => {
                return Err(InvalidField::new("value", "a complete trial has a value").into())
            }
            TrialState::Complete | TrialState::Pruned | TrialState::Failed => {}
            TrialState::Running | TrialState::Paused => {
                return Err(
                    InvalidField::new("state", "tell `complete`, `pruned` or `failed`").into(),
                )
            }
        }
        trial.value = tell
            .value
            .or_else(|| trial.intermediate.last().map(|(_, v)| *v));
        trial.constraint = tell.constraint;
        trial.finish(tell.state, tell.message, now_ms());
        if !self
            .db()
            .update_trial(&trial.to_row(&row.id), &["running", "paused"])
            .await?
        {
            let now = self.trial_of(&row, number).await?;
            return Err(ComputeError::TrialFinished {
                number,
                state: now.state.as_str(),
            });
        }
        self.finish_if_spent(&row, &spec).await?;
        Ok(trial)
    }

    /// Records an intermediate value of a client's trial and says whether the study's rule
    /// would stop it there.
    pub async fn report(
        &self,
        workspace: &str,
        name: &str,
        number: u64,
        report: Report,
    ) -> Result<(Trial, bool), ComputeError> {
        let row = self.row(workspace, name).await?;
        let spec = Study::spec_of(&row)?;
        if spec.trial.is_some() {
            return Err(ComputeError::StudyClosed(format!(
                "study `{name}` reads its trials' values from their runs"
            )));
        }
        if !report.value.is_finite() {
            return Err(InvalidField::new("value", "must be a finite number").into());
        }
        if i64::try_from(report.step).is_err() {
            return Err(
                InvalidField::new("step", format!("must be 0 to {} (an int64)", i64::MAX)).into(),
            );
        }
        let mut trial = self.trial_of(&row, number).await?;
        if trial.state.is_finished() {
            return Err(ComputeError::TrialFinished {
                number,
                state: trial.state.as_str(),
            });
        }
        match trial
            .intermediate
            .iter_mut()
            .find(|(s, _)| *s == report.step)
        {
            Some(point) => point.1 = report.value,
            None => {
                trial.intermediate.push((report.step, report.value));
                trial.intermediate.sort_by_key(|(s, _)| *s);
            }
        }
        if trial.intermediate.len() > 100_000 {
            return Err(InvalidField::new("step", "at most 100000 steps per trial").into());
        }
        if !self
            .db()
            .update_trial(&trial.to_row(&row.id), &["running"])
            .await?
        {
            let now = self.trial_of(&row, number).await?;
            return Err(ComputeError::TrialFinished {
                number,
                state: now.state.as_str(),
            });
        }
        let others: Vec<TrialRecord> = self
            .db()
            .trials(&row.id)
            .await?
            .iter()
            .map(|r| Trial::from_row(r).map(|t| t.record()))
            .collect::<Result<_, _>>()?;
        let stop = spec
            .pruner
            .stop_at(spec.objective.direction, &trial.record(), &others)
            .is_some();
        Ok((trial, stop))
    }

    /// Stops a study: no new trials; a template's running trials are cancelled by the
    /// controller (the study shows `stopping` until they are gone).
    pub async fn stop(&self, workspace: &str, name: &str) -> Result<Study, ComputeError> {
        let row = self.row(workspace, name).await?;
        let spec = Study::spec_of(&row)?;
        let (to, finished) = if spec.trial.is_some() {
            (StudyState::Stopping, None)
        } else {
            (StudyState::Stopped, Some(now_ms()))
        };
        let changed = self
            .db()
            .set_study_state(
                &row.id,
                &["running"],
                to.as_str(),
                Some("stopped by a user"),
                finished,
            )
            .await?;
        if !changed && Study::state_of(&row)? != StudyState::Stopping {
            return Err(ComputeError::StudyClosed(format!(
                "study `{name}` is already {}",
                row.state
            )));
        }
        self.get(workspace, name).await
    }

    /// A client-run study with nothing more to ask is done once none of its trials is open.
    async fn finish_if_idle(&self, row: &StudyRow, why: &str) -> Result<(), ComputeError> {
        let (_, open) = open_of(&self.db().trial_counts(&row.id).await?);
        if open == 0 {
            self.db()
                .set_study_state(&row.id, &["running"], "done", Some(why), Some(now_ms()))
                .await?;
        }
        Ok(())
    }

    /// A client-run study whose trial budget is spent and whose trials have all finished
    /// is done.
    async fn finish_if_spent(&self, row: &StudyRow, spec: &StudySpec) -> Result<(), ComputeError> {
        let Some(limit) = spec.trial_limit(&Space::new(&spec.space)?) else {
            return Ok(());
        };
        let (total, open) = open_of(&self.db().trial_counts(&row.id).await?);
        if total as u64 >= limit && open == 0 {
            self.db()
                .set_study_state(&row.id, &["running"], "done", None, Some(now_ms()))
                .await?;
        }
        Ok(())
    }
}

/// Of trial counts by state: all trials, and those still open (running or paused).
fn open_of(counts: &[(String, i64)]) -> (i64, i64) {
    let total = counts.iter().map(|(_, n)| n).sum();
    let open = counts
        .iter()
        .filter(|(s, _)| s == "running" || s == "paused")
        .map(|(_, n)| n)
        .sum();
    (total, open)
}

/// Whether the sampler reads the trials so far: TPE always; random on a finite space, to
/// skip configurations already tried; grid and Sobol never (their order is fixed).
fn needs_history(config: &SamplerConfig, space: &Space) -> bool {
    match config {
        SamplerConfig::Tpe { .. } => true,
        SamplerConfig::Random { .. } => space.params.iter().all(|p| p.dist.grid_values().is_some()),
        SamplerConfig::Grid { .. } | SamplerConfig::Sobol { .. } | SamplerConfig::External => false,
    }
}

/// The sampler's suggestion for trial `number`, computed off the async threads (TPE over
/// thousands of trials is milliseconds of arithmetic).
async fn suggest(
    spec: &StudySpec,
    space: &Space,
    history: Vec<TrialRecord>,
    number: u64,
) -> Result<trainyard_tune::Params, ComputeError> {
    let (sampler, space, direction) = (
        spec.sampler.clone(),
        space.clone(),
        spec.objective.direction,
    );
    let suggested = tokio::task::spawn_blocking(move || {
        sampler::suggest(&sampler, &space, direction, &history, number)
    })
    .await
    .map_err(|e| ComputeError::Io(std::io::Error::other(format!("the sampler failed: {e}"))))?;
    suggested.map_err(|e| match e {
        TuneError::Exhausted => ComputeError::StudyClosed(format!(
            "study `{}` has tried every configuration of its space",
            spec.name
        )),
        TuneError::Invalid(f) => ComputeError::Invalid(f),
    })
}

/// A seed for a study that named none: from the process's random hasher keys.
fn random_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(now_ms());
    // 53 bits, so the seed survives a JavaScript client.
    h.finish() >> 11
}
