//! The study controller: one loop on the scheduling server that, for each running study with
//! a template, follows its trials' jobs, reads their runs' metrics, stops or promotes trials
//! by the study's rule, and submits new trials while the budget lasts.
//!
//! Every decision is made from the database and written before it is acted on: a trial's
//! row (with its job's id) is stored before the job is submitted, and submitting an id
//! twice returns the first job. A server killed at any point restarts into the same state
//! and makes the same next decisions.
//!
//! Reproducibility with parallel trials: trial `n` is suggested only once trial
//! `n − parallelism` has finished, and from what trials `0 … n − parallelism` ended with
//! (the `parallelism − 1` trials before it count as running, whatever they did since). Its
//! configuration is then the same in every run with the same seed, however the trials'
//! timings fall. A slot may wait for an older trial to finish; that is the price. The median
//! rule likewise judges trial `n` only against trials `0 … n − parallelism`. ASHA and
//! Hyperband promote whichever trial is best when a slot frees, so with more than one trial
//! at a time their course depends on timing.

use std::collections::BTreeMap;
use std::time::Duration;

use trainyard_core::job::{BuiltinTask, JobSubmission, TaskKind};
use trainyard_core::time::now_ms;
use trainyard_core::{ExitReason, InvalidField, JobState};
use trainyard_store::StudyRow;
use trainyard_tune::pruner::rung_value;
use trainyard_tune::space::Space;
use trainyard_tune::study::{render, TrialTemplate};
use trainyard_tune::{StudySpec, TrialRecord, TrialState};

use super::{suggest, Studies, Study, StudyState, Trial};
use crate::ComputeError;

/// How often the controller looks at its studies.
pub const CONTROLLER_TICK: Duration = Duration::from_millis(500);

/// Runs until the process ends: every tick, on the scheduling server only, each running or
/// stopping study with a template is brought one step forward. A study whose step fails is
/// logged and tried again next tick; the others go on.
pub async fn run_controller(studies: Studies) -> Result<(), ComputeError> {
    use futures::FutureExt;
    loop {
        for state in [StudyState::Running, StudyState::Stopping] {
            for row in studies.db().studies_in_state(state.as_str()).await? {
                // Leadership can move between two studies' steps.
                if !studies.scheduler.is_leader() {
                    break;
                }
                // One study's failure (even a panic) never holds up the others.
                match std::panic::AssertUnwindSafe(studies.step(&row))
                    .catch_unwind()
                    .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(study = %row.name, workspace = %row.workspace, error = %e, "study step failed; retrying")
                    }
                    Err(panic) => tracing::error!(
                        study = %row.name, workspace = %row.workspace,
                        "study step panicked: {}", trainyard_background::panic_message(&*panic)
                    ),
                }
            }
        }
        tokio::time::sleep(CONTROLLER_TICK).await;
    }
}

/// The message of a trial whose job the scheduler refused; such a refusal (a pool, a
/// quota, resources, secrets, a template that does not render) would meet every trial, so
/// it ends the study.
const REFUSED: &str = "its job was refused: ";
/// The message of a trial cancelled because its study was stopped (not its own failure).
const STOPPED_WITH_STUDY: &str = "stopped with its study";
/// The message of a trial whose job the platform lost, and how many times; such a job runs
/// again, up to [`MAX_LOST_RUNS`] times.
const LOST: &str = "its job was lost and runs again; times lost: ";
const MAX_LOST_RUNS: u32 = 3;

/// Failures, with none succeeding, after which a study without `max_failed_trials` stops.
fn broken_after(parallelism: u32) -> usize {
    (2 * parallelism as usize).max(10)
}

fn lost_runs(trial: &Trial) -> u32 {
    trial
        .message
        .as_deref()
        .and_then(|m| m.strip_prefix(LOST))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Most intermediate values kept per trial (the latest ones).
const MAX_INTERMEDIATE: usize = 100_000;

/// A metric's points in a run: `(step, value)` by step (the last logged value of each
/// step), and the last value logged of all.
struct Series {
    by_step: Vec<(u64, f64)>,
    last: Option<f64>,
}

impl Studies {
    /// One step of one study.
    pub(crate) async fn step(&self, row: &StudyRow) -> Result<(), ComputeError> {
        let spec = Study::spec_of(row)?;
        let Some(template) = spec.trial.clone() else {
            return Ok(());
        };
        let space = Space::new(&spec.space)?;
        let stopping = Study::state_of(row)? == StudyState::Stopping;
        let mut trials: Vec<Trial> = self
            .db()
            .trials(&row.id)
            .await?
            .iter()
            .map(Trial::from_row)
            .collect::<Result<_, _>>()?;

        let mut all_followed = true;
        for i in 0..trials.len() {
            if trials[i].state == TrialState::Running {
                // One trial's trouble (its job's store unreachable for a moment) leaves the
                // others followed; it is looked at again next tick, from what is stored.
                let before = trials[i].clone();
                if let Err(e) = self
                    .follow(row, &spec, &template, &mut trials, i, stopping)
                    .await
                {
                    tracing::warn!(study = %row.name, trial = trials[i].number, error = %e, "trial not followed this time");
                    trials[i] = before;
                    all_followed = false;
                }
            }
        }
        // Nothing is decided about the whole study (new trials, its end) from a picture
        // that may not be what is stored.
        if !all_followed {
            return Ok(());
        }
        let running = trials
            .iter()
            .filter(|t| t.state == TrialState::Running)
            .count();
        let failed = trials
            .iter()
            .filter(|t| t.state == TrialState::Failed)
            .filter(|t| t.message.as_deref() != Some(STOPPED_WITH_STUDY))
            .count();
        let refused = trials.iter().find(|t| {
            t.state == TrialState::Failed
                && t.message.as_deref().is_some_and(|m| m.starts_with(REFUSED))
        });
        // Unless the study says how many failures it takes, one whose first trials all
        // failed has a template that cannot run: it stops instead of failing for ever.
        let broken = spec.max_failed_trials.is_none()
            && failed >= broken_after(spec.parallelism)
            && !trials
                .iter()
                .any(|t| t.state.is_finished() && t.state != TrialState::Failed);
        let too_many_failed = refused.is_some()
            || broken
            || spec.max_failed_trials.is_some_and(|m| failed >= m as usize);
        if stopping || too_many_failed {
            if too_many_failed && !stopping {
                let why = match refused {
                    Some(t) => format!(
                        "trial {}'s job was refused: {}",
                        t.number,
                        t.message
                            .as_deref()
                            .unwrap_or_default()
                            .trim_start_matches(REFUSED)
                    ),
                    None if broken => format!(
                        "its first {failed} trials all failed: the template cannot run as it is \
                         (set max_failed_trials to decide how many failures a study takes)"
                    ),
                    None => format!(
                        "{failed} trials failed (max_failed_trials = {})",
                        spec.max_failed_trials.unwrap_or(0)
                    ),
                };
                self.db()
                    .set_study_state(&row.id, &["running"], "stopping", Some(&why), None)
                    .await?;
            }
            if running == 0 {
                let to = if too_many_failed {
                    StudyState::Failed
                } else {
                    StudyState::Stopped
                };
                self.close_paused(row, &mut trials).await?;
                self.db()
                    .set_study_state(
                        &row.id,
                        &["stopping", "running"],
                        to.as_str(),
                        None,
                        Some(now_ms()),
                    )
                    .await?;
            }
            return Ok(());
        }
        let more = self
            .fill(row, &spec, &space, &template, &mut trials, running)
            .await?;
        let running = trials
            .iter()
            .filter(|t| t.state == TrialState::Running)
            .count();
        if running == 0 && !more {
            self.close_paused(row, &mut trials).await?;
            self.db()
                .set_study_state(&row.id, &["running"], "done", None, Some(now_ms()))
                .await?;
        }
        Ok(())
    }

    /// Follows a running trial's job: its intermediate values, the stopping rule, and how
    /// it ended.
    async fn follow(
        &self,
        row: &StudyRow,
        spec: &StudySpec,
        template: &TrialTemplate,
        trials: &mut [Trial],
        i: usize,
        stopping: bool,
    ) -> Result<(), ComputeError> {
        let ws = row.workspace.as_str();
        let Some(job_id) = trials[i].job_id.clone() else {
            trials[i].finish(TrialState::Failed, Some("it has no job".into()), now_ms());
            return self.save(row, &trials[i]).await;
        };
        let job = match self.db().get_job(ws, &job_id).await? {
            Some(job) => job,
            None if stopping => {
                trials[i].finish(
                    TrialState::Failed,
                    Some("stopped with its study before it started".into()),
                    now_ms(),
                );
                return self.save(row, &trials[i]).await;
            }
            // Recorded but never submitted (the server stopped in between): submit it now,
            // under the id it was recorded with.
            None => {
                return self.submit_trial(row, spec, template, &mut trials[i]).await;
            }
        };
        if stopping && !job.state.is_terminal() {
            match self.scheduler.cancel(ws, &job_id).await {
                Ok(_) | Err(ComputeError::NotCancellable { .. }) => {}
                Err(e) => return Err(e),
            }
            return Ok(());
        }
        if stopping && job.state == JobState::Cancelled {
            trials[i].finish(
                TrialState::Failed,
                Some(STOPPED_WITH_STUDY.into()),
                now_ms(),
            );
            return self.save(row, &trials[i]).await;
        }
        let promotes = spec.pruner.promotes();
        let metric = self.series(ws, &job_id, &spec.objective.metric).await?;
        match job.state {
            JobState::Queued | JobState::Running => {
                if promotes || stopping {
                    return Ok(());
                }
                if metric.by_step != trials[i].intermediate {
                    trials[i].intermediate = metric.by_step;
                    let extra = trials[i]
                        .intermediate
                        .len()
                        .saturating_sub(MAX_INTERMEDIATE);
                    trials[i].intermediate.drain(..extra);
                    trials[i].resource = trials[i].intermediate.len() as u64;
                    let others = judged_against(trials, i, spec.parallelism);
                    let rule =
                        spec.pruner
                            .stop_at(spec.objective.direction, &trials[i].record(), &others);
                    if let Some(step) = rule {
                        // The signal first, then the record: a server stopped in between
                        // finds the job cancelled and the rule still stopping it (below).
                        match self.scheduler.cancel(ws, &job_id).await {
                            Ok(_) | Err(ComputeError::NotCancellable { .. }) => {}
                            Err(e) => return Err(e),
                        }
                        prune(&mut trials[i], step);
                        return self.save(row, &trials[i]).await;
                    }
                    self.save(row, &trials[i]).await?;
                }
                Ok(())
            }
            JobState::Succeeded => {
                let Some(value) = metric.last.filter(|v| v.is_finite()) else {
                    trials[i].finish(
                        TrialState::Failed,
                        Some(format!(
                            "its run logged no value of `{}`",
                            spec.objective.metric
                        )),
                        now_ms(),
                    );
                    return self.save(row, &trials[i]).await;
                };
                if let Some(c) = &spec.constraint {
                    // A constraint never reported (or not a number) is not met.
                    let reported = self.series(ws, &job_id, c).await?.last;
                    trials[i].constraint =
                        Some(reported.filter(|v| v.is_finite()).unwrap_or(f64::MAX));
                }
                trials[i].value = Some(value);
                if promotes {
                    let rungs = spec.pruner.rungs(trials[i].number);
                    let k = trials[i].rung as usize;
                    let resource = rungs.get(k).copied().unwrap_or(0);
                    let before = k.checked_sub(1).map_or(0, |j| rungs[j]);
                    trials[i].intermediate.retain(|(s, _)| *s != resource);
                    trials[i].intermediate.push((resource, value));
                    trials[i].resource += resource.saturating_sub(before);
                    if k + 1 >= rungs.len() {
                        trials[i].finish(TrialState::Complete, None, now_ms());
                    } else {
                        trials[i].state = TrialState::Paused;
                    }
                } else {
                    trials[i].intermediate = metric.by_step;
                    trials[i].resource = trials[i].intermediate.len() as u64;
                    trials[i].finish(TrialState::Complete, None, now_ms());
                }
                self.log_params(ws, &job_id, &trials[i]).await;
                self.save(row, &trials[i]).await
            }
            JobState::Cancelled if !promotes => {
                // Cancelled by the stopping rule, the record not yet written when the server
                // stopped: the rule, read again, says where.
                trials[i].intermediate = metric.by_step;
                let others = judged_against(trials, i, spec.parallelism);
                let rule =
                    spec.pruner
                        .stop_at(spec.objective.direction, &trials[i].record(), &others);
                match rule {
                    Some(step) => prune(&mut trials[i], step),
                    None => trials[i].finish(
                        TrialState::Failed,
                        Some(
                            job.message
                                .clone()
                                .unwrap_or_else(|| "its job was cancelled".into()),
                        ),
                        now_ms(),
                    ),
                }
                self.log_params(ws, &job_id, &trials[i]).await;
                self.save(row, &trials[i]).await
            }
            JobState::Failed
                if job.exit_reason == Some(ExitReason::Lost)
                    && lost_runs(&trials[i]) < MAX_LOST_RUNS =>
            {
                // The platform lost the job (a server stopped while it was starting, a
                // machine gone): not the trial's doing. It runs again, same configuration,
                // same rung, so the study goes on as it would have.
                let lost = lost_runs(&trials[i]) + 1;
                trials[i].message = Some(format!("{LOST}{lost}"));
                trials[i].job_id = Some(trainyard_core::id::new_id());
                trials[i].run_id = trials[i].job_id.clone();
                self.save(row, &trials[i]).await?;
                self.submit_trial(row, spec, template, &mut trials[i]).await
            }
            JobState::Failed | JobState::Cancelled => {
                let why = job
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("its job {}", job.state.as_str()));
                trials[i].finish(TrialState::Failed, Some(why), now_ms());
                self.log_params(ws, &job_id, &trials[i]).await;
                self.save(row, &trials[i]).await
            }
        }
    }

    /// Starts trials (promotions first) while slots and budget allow; false when the study
    /// will start no more.
    async fn fill(
        &self,
        row: &StudyRow,
        spec: &StudySpec,
        space: &Space,
        template: &TrialTemplate,
        trials: &mut Vec<Trial>,
        mut running: usize,
    ) -> Result<bool, ComputeError> {
        let parallelism = spec.parallelism as usize;
        let limit = spec.trial_limit(space);
        let now = now_ms();
        let out_of_time = spec
            .budget
            .wall_time_s
            .is_some_and(|s| now - row.created_at_ms >= (s as i64).saturating_mul(1000));
        let promotes = spec.pruner.promotes();
        let spent = |trials: &[Trial]| {
            let used: u64 = trials.iter().map(|t| t.resource).sum();
            spec.budget.resource.is_some_and(|b| used >= b)
        };
        if out_of_time || spent(trials) {
            return Ok(false);
        }
        while running < parallelism {
            if promotes {
                let records: Vec<TrialRecord> = trials.iter().map(Trial::record).collect();
                if let Some(n) = spec.pruner.promotion(spec.objective.direction, &records) {
                    let Some(t) = trials.iter_mut().find(|t| t.number == n) else {
                        return Ok(true);
                    };
                    // The promotion is stored (with the job to resume from) before the job
                    // is submitted, as a new trial is.
                    t.resume_from = t.job_id.take();
                    t.rung += 1;
                    t.state = TrialState::Running;
                    t.job_id = Some(trainyard_core::id::new_id());
                    t.run_id = t.job_id.clone();
                    self.save(row, t).await?;
                    self.submit_trial(row, spec, template, t).await?;
                    running += 1;
                    continue;
                }
            }
            let number = trials.len() as u64;
            if limit.is_some_and(|l| number >= l) {
                // No new trials; promotions were looked for above.
                return Ok(false);
            }
            if !promotes && number as usize >= parallelism {
                // Wait for the trial `parallelism` back (see the module's docs).
                if !trials[number as usize - parallelism].state.is_finished() {
                    return Ok(true);
                }
            }
            let history: Vec<TrialRecord> = trials
                .iter()
                .map(|t| {
                    let mut r = t.record();
                    if !promotes && t.number + parallelism as u64 > number {
                        r.state = TrialState::Running;
                        r.value = None;
                        r.intermediate.clear();
                    }
                    r
                })
                .collect();
            let params = match suggest(spec, space, history, number).await {
                Ok(p) => p,
                Err(ComputeError::StudyClosed(_)) => return Ok(false),
                Err(e) => return Err(e),
            };
            let mut trial =
                Trial::new(number, params, Some(trainyard_core::id::new_id()), now_ms());
            if !self.db().insert_trial(&trial.to_row(&row.id)).await? {
                // Another server recorded this number first; it is theirs.
                return Ok(true);
            }
            self.submit_trial(row, spec, template, &mut trial).await?;
            trials.push(trial);
            running += 1;
        }
        Ok(true)
    }

    /// Submits the job of a trial whose row (with the job's id) is stored. A job the
    /// scheduler refuses fails the trial with the reason.
    async fn submit_trial(
        &self,
        row: &StudyRow,
        spec: &StudySpec,
        template: &TrialTemplate,
        trial: &mut Trial,
    ) -> Result<(), ComputeError> {
        let job_id = trial
            .job_id
            .clone()
            .expect("a trial is stored with its job's id");
        let submission = trial_job(&row.id, spec, template, trial);
        let outcome = match submission {
            Ok(s) => self.scheduler.submit_as(&row.workspace, job_id, s).await,
            Err(e) => Err(ComputeError::Invalid(e)),
        };
        match outcome {
            Ok(_) => Ok(()),
            Err(
                e @ (ComputeError::Invalid(_)
                | ComputeError::Unschedulable(_)
                | ComputeError::OverQuota(_)),
            ) => {
                trial.finish(TrialState::Failed, Some(format!("{REFUSED}{e}")), now_ms());
                self.save(row, trial).await
            }
            Err(e) => Err(e),
        }
    }

    /// A metric of a run (a job's run has the job's id).
    async fn series(&self, ws: &str, run_id: &str, key: &str) -> Result<Series, ComputeError> {
        let page = self
            .scheduler
            .tracking()
            .scoped(ws)
            .metric_history(run_id, key, None, None)
            .await?;
        // The last logged: by time (a final value logged at step 0 after the epochs counts).
        let last = page
            .items
            .iter()
            .max_by_key(|m| (m.timestamp, m.step))
            .map(|m| m.value.0);
        let mut by_step: BTreeMap<u64, f64> = BTreeMap::new();
        for m in &page.items {
            by_step.insert(m.step.max(0) as u64, m.value.0);
        }
        Ok(Series {
            by_step: by_step.into_iter().filter(|(_, v)| v.is_finite()).collect(),
            last,
        })
    }

    /// Logs a finished trial's configuration as its run's parameters. Done at the end, so a
    /// script that logs the same names itself (with its own spelling of a number) wins; a
    /// name it already logged is left as it is.
    async fn log_params(&self, ws: &str, run_id: &str, trial: &Trial) {
        let tracking = self.scheduler.tracking().scoped(ws);
        for (k, v) in &trial.params {
            let kv =
                trainyard_tracking::KeyValue::new(k.clone(), trainyard_tune::study::value_text(v));
            if let Err(e) = tracking.log_param(run_id, kv).await {
                tracing::debug!(run = run_id, param = %k, error = %e, "trial parameter not logged");
            }
        }
    }

    /// At the study's end, trials paused below the top rung stay where successive halving
    /// left them: pruned, with their last rung's value.
    async fn close_paused(&self, row: &StudyRow, trials: &mut [Trial]) -> Result<(), ComputeError> {
        for t in trials.iter_mut().filter(|t| t.state == TrialState::Paused) {
            t.finish(
                TrialState::Pruned,
                Some(format!("left at rung {} by successive halving", t.rung)),
                now_ms(),
            );
            self.save(row, t).await?;
        }
        Ok(())
    }

    async fn save(&self, row: &StudyRow, trial: &Trial) -> Result<(), ComputeError> {
        // A trial is written by this loop alone (the API changes only client-run studies');
        // one that is no longer open here was changed by another server's loop (a leader
        // that lost its lease): this picture is stale, and the step stops.
        if self
            .db()
            .update_trial(&trial.to_row(&row.id), &["running", "paused"])
            .await?
        {
            Ok(())
        } else {
            Err(ComputeError::StudyClosed(format!(
                "trial {} was finished elsewhere",
                trial.number
            )))
        }
    }
}

/// The job of one trial (of one rung, with promotions): a command rendered from the
/// template, or the built-in training task on the rendered training file with its epochs set
/// to the rung's resource, its dataset pinned, resuming from the previous rung's run.
pub(super) fn trial_job(
    study_id: &str,
    spec: &StudySpec,
    template: &TrialTemplate,
    trial: &Trial,
) -> Result<JobSubmission, InvalidField> {
    let resume_from = trial.resume_from.as_deref();
    let resource = spec
        .pruner
        .rungs(trial.number)
        .get(trial.rung as usize)
        .copied();
    let experiment = spec.experiment.clone().unwrap_or_else(|| spec.name.clone());
    let mut job = template.submission(
        &spec.name,
        trial.number,
        &trial.params,
        resource,
        resume_from,
        &experiment,
        &spec.objective.metric,
        spec.constraint.as_deref(),
    );
    job.labels.insert(
        trainyard_core::job::STUDY_LABEL.into(),
        study_id.to_string(),
    );
    if template.command.is_empty() {
        // A training file: render it, set its epochs to the rung's resource, and run
        // it as the built-in training task (resuming from the previous rung's run).
        let values = TrialTemplate::values(
            &spec.name,
            trial.number,
            &trial.params,
            resource,
            resume_from,
        );
        let text = render(template.train.as_deref().unwrap_or_default(), &values);
        let mut config: toml::Value = toml::from_str(&text).map_err(|e| {
            InvalidField::new("trial.train", format!("the rendered training file: {e}"))
        })?;
        if let (Some(r), Some(table)) = (resource, config.as_table_mut()) {
            let training = table
                .entry("training")
                .or_insert_with(|| toml::Value::Table(Default::default()));
            if let Some(t) = training.as_table_mut() {
                t.insert("epochs".into(), toml::Value::Integer(r as i64));
            }
        }
        if let Some(table) = config.as_table_mut() {
            if let Some(pinned) = &template.dataset {
                if let Some(data) = table.get_mut("data").and_then(|d| d.as_table_mut()) {
                    data.insert("dataset".into(), toml::Value::String(pinned.clone()));
                }
            }
            table.insert("experiment".into(), toml::Value::String(experiment.clone()));
            table.insert(
                "name".into(),
                toml::Value::String(format!("{}-{}", spec.name, trial.number)),
            );
        }
        let json = serde_json::to_string(&config).map_err(|e| {
            InvalidField::new("trial.train", format!("the rendered training file: {e}"))
        })?;
        let mut args = vec!["--config".to_string(), json, "--no-register".to_string()];
        if let Some(prev) = resume_from {
            args.extend(["--resume-from".to_string(), prev.to_string()]);
        }
        job.task = Some(BuiltinTask {
            kind: TaskKind::Train,
            args,
        });
        let threads = job.resources.cpus.ceil().max(1.0) as u32;
        job.env
            .insert("RAYON_NUM_THREADS".into(), threads.to_string());
    }
    Ok(job)
}

/// Records a trial as stopped by the rule at `step`, with its value there; what it reported
/// after that step (read late) is not part of its record.
fn prune(trial: &mut Trial, step: u64) {
    trial.intermediate.retain(|(s, _)| *s <= step);
    trial.value = rung_value(&trial.record(), step);
    trial.finish(
        TrialState::Pruned,
        Some(format!("stopped at step {step} by the study's rule")),
        now_ms(),
    );
}

/// The trials trial `i`'s stopping rule compares it with: those numbered at least
/// `parallelism` before it, which had all finished when it started. Which trial stops at
/// which step then does not depend on how the jobs' timings fell.
fn judged_against(trials: &[Trial], i: usize, parallelism: u32) -> Vec<TrialRecord> {
    let number = trials[i].number;
    trials
        .iter()
        .filter(|t| t.number + u64::from(parallelism.max(1)) <= number)
        .map(Trial::record)
        .collect()
}
