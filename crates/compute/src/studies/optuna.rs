//! Studies kept for Optuna's own clients (`optuna.storages.GrpcStorageProxy`): the rules of
//! Optuna's storage protocol, over the database, in one workspace.
//!
//! Optuna samples on the client; this side keeps what it is told, the way Optuna's own
//! storages do: finished trials never change; a WAITING trial is claimed by exactly one
//! worker; trial ids only grow and become visible in order (the client caches on that);
//! attribute values are opaque JSON texts kept byte for byte. Each trial is also a run in an
//! experiment named after its study, with its parameters, intermediate values and values as
//! the run's parameters and metrics, so the MLflow API and the UI show Optuna's trials like
//! any others. Mirroring into the run is best effort: the storage answer never waits on it
//! failing.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use trainyard_core::time::now_ms;
use trainyard_core::InvalidField;
use trainyard_store::{Db, OptunaStudyRow, OptunaTrialRow, StudyColumn};
use trainyard_tracking::{KeyValue, MetricPoint, NewRun, RunStatus, Tracking};
use trainyard_tune::pruner::PrunerConfig;
use trainyard_tune::sampler::SamplerConfig;
use trainyard_tune::space::{ParamKind, ParamSpec, Params};
use trainyard_tune::study::{Budget, Objective};
use trainyard_tune::{Direction, StudySpec, TrialState};

use super::{Study, StudyState, Trial};
use crate::{ComputeError, SchedulerHandle};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptunaState {
    Running,
    Complete,
    Pruned,
    Fail,
    Waiting,
}

impl OptunaState {
    pub const ALL: [OptunaState; 5] = [
        OptunaState::Running,
        OptunaState::Complete,
        OptunaState::Pruned,
        OptunaState::Fail,
        OptunaState::Waiting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OptunaState::Running => "running",
            OptunaState::Complete => "complete",
            OptunaState::Pruned => "pruned",
            OptunaState::Fail => "fail",
            OptunaState::Waiting => "waiting",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            OptunaState::Complete | OptunaState::Pruned | OptunaState::Fail
        )
    }

    /// As a Trainyard trial state (a waiting trial shows as running).
    fn view(self) -> TrialState {
        match self {
            OptunaState::Running | OptunaState::Waiting => TrialState::Running,
            OptunaState::Complete => TrialState::Complete,
            OptunaState::Pruned => TrialState::Pruned,
            OptunaState::Fail => TrialState::Failed,
        }
    }
}

/// A double that may be NaN or infinite (Optuna allows both), kept in JSON as a number or as
/// `"NaN"`, `"Infinity"`, `"-Infinity"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Double(pub f64);

impl Serialize for Double {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            v if v.is_nan() => s.serialize_str("NaN"),
            v if v == f64::INFINITY => s.serialize_str("Infinity"),
            v if v == f64::NEG_INFINITY => s.serialize_str("-Infinity"),
            v => s.serialize_f64(v),
        }
    }
}

impl<'de> Deserialize<'de> for Double {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => Ok(Double(n.as_f64().unwrap_or(f64::NAN))),
            Value::String(s) if s == "Infinity" => Ok(Double(f64::INFINITY)),
            Value::String(s) if s == "-Infinity" => Ok(Double(f64::NEG_INFINITY)),
            _ => Ok(Double(f64::NAN)),
        }
    }
}

/// Everything of a trial but its id, number and state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrialBody {
    pub values: Vec<Double>,
    /// ISO 8601 with offset; empty when unset.
    pub datetime_start: String,
    pub datetime_complete: String,
    /// Parameter → its value in Optuna's internal form (a categorical's index).
    pub params: BTreeMap<String, Double>,
    /// Parameter → its distribution JSON.
    pub distributions: BTreeMap<String, String>,
    /// Key → JSON text, as the client wrote it.
    pub user_attrs: BTreeMap<String, String>,
    pub system_attrs: BTreeMap<String, String>,
    pub intermediate: BTreeMap<i64, Double>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OptunaTrial {
    pub id: i64,
    pub study_id: i64,
    pub number: i64,
    pub state: OptunaState,
    pub body: TrialBody,
    pub run_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OptunaStudy {
    pub id: i64,
    pub name: String,
    pub directions: Vec<Direction>,
    pub user_attrs: BTreeMap<String, String>,
    pub system_attrs: BTreeMap<String, String>,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> ComputeError {
    ComputeError::Store(trainyard_store::StoreError::Corrupt {
        what: what.to_string(),
        message: e.to_string(),
    })
}

fn study_of(row: &OptunaStudyRow) -> Result<OptunaStudy, ComputeError> {
    let what = format!("Optuna study {}", row.id);
    Ok(OptunaStudy {
        id: row.id,
        name: row.name.clone(),
        directions: serde_json::from_str(&row.directions).map_err(|e| corrupt(&what, e))?,
        user_attrs: serde_json::from_str(&row.user_attrs).map_err(|e| corrupt(&what, e))?,
        system_attrs: serde_json::from_str(&row.system_attrs).map_err(|e| corrupt(&what, e))?,
    })
}

fn trial_of(row: &OptunaTrialRow) -> Result<OptunaTrial, ComputeError> {
    let what = format!("Optuna trial {}", row.id);
    Ok(OptunaTrial {
        id: row.id,
        study_id: row.study_id,
        number: row.number,
        state: OptunaState::parse(&row.state)
            .ok_or_else(|| corrupt(&what, format!("state `{}`", row.state)))?,
        body: serde_json::from_str(&row.body).map_err(|e| corrupt(&what, e))?,
        run_id: row.run_id.clone(),
    })
}

/// Now, as Optuna writes datetimes: microseconds and an explicit UTC offset (Python 3.10's
/// `fromisoformat` takes neither `Z` nor other fractions).
pub fn optuna_now() -> String {
    let text = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    format!("{}+00:00", text.trim_end_matches('Z'))
}

/// A distribution JSON read far enough to check compatibility and make values readable.
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    pub kind: ParamKind,
    pub low: Option<f64>,
    pub high: Option<f64>,
    pub log: bool,
    pub step: Option<f64>,
    pub choices: Vec<Value>,
}

impl Distribution {
    /// Reads `{"name": "FloatDistribution", "attributes": {…}}` (and the older class names).
    pub fn parse(text: &str) -> Result<Distribution, InvalidField> {
        let bad = |m: &str| InvalidField::new("distribution", m.to_string());
        let v: Value = serde_json::from_str(text).map_err(|_| bad("not JSON"))?;
        let name = v["name"].as_str().ok_or_else(|| bad("no `name`"))?;
        let a = &v["attributes"];
        let num = |k: &str| a[k].as_f64();
        let (kind, log, step) = match name {
            "FloatDistribution" => (ParamKind::Float, a["log"] == true, num("step")),
            "UniformDistribution" => (ParamKind::Float, false, None),
            "LogUniformDistribution" => (ParamKind::Float, true, None),
            "DiscreteUniformDistribution" => (ParamKind::Float, false, num("q")),
            "IntDistribution" => (ParamKind::Int, a["log"] == true, num("step")),
            "IntUniformDistribution" => (ParamKind::Int, false, num("step")),
            "IntLogUniformDistribution" => (ParamKind::Int, true, num("step")),
            "CategoricalDistribution" => (ParamKind::Categorical, false, None),
            _ => return Err(bad("an unknown distribution")),
        };
        let choices = match kind {
            ParamKind::Categorical => a["choices"]
                .as_array()
                .cloned()
                .ok_or_else(|| bad("a categorical distribution has `choices`"))?,
            _ => Vec::new(),
        };
        if kind != ParamKind::Categorical && (num("low").is_none() || num("high").is_none()) {
            return Err(bad("a numeric distribution has `low` and `high`"));
        }
        Ok(Distribution {
            kind,
            low: num("low"),
            high: num("high"),
            log,
            step,
            choices,
        })
    }

    /// Optuna's compatibility rule for one name declared twice in a study: same kind, same
    /// scale, same choices (with Python's equality: `1 == 1.0 == True`).
    pub fn compatible(&self, other: &Distribution) -> bool {
        if self.kind != other.kind {
            return false;
        }
        match self.kind {
            ParamKind::Categorical => {
                self.choices.len() == other.choices.len()
                    && self
                        .choices
                        .iter()
                        .zip(&other.choices)
                        .all(|(a, b)| python_eq(a, b))
            }
            _ => self.log == other.log,
        }
    }

    /// A value in its user-facing form (a categorical's choice), or `None` when the
    /// internal value does not fit.
    pub fn external(&self, internal: f64) -> Option<Value> {
        match self.kind {
            ParamKind::Categorical => {
                if internal < 0.0 || internal.fract() != 0.0 {
                    return None;
                }
                self.choices.get(internal as usize).cloned()
            }
            ParamKind::Int => Some(Value::from(internal.round() as i64)),
            ParamKind::Float => serde_json::Number::from_f64(internal).map(Value::Number),
        }
    }

    /// As a Trainyard parameter, for the study's view.
    fn spec(&self) -> ParamSpec {
        ParamSpec {
            kind: self.kind,
            low: self.low,
            high: self.high,
            log: self.log,
            step: self.step,
            choices: self.choices.clone(),
            when: BTreeMap::new(),
        }
    }
}

fn python_eq(a: &Value, b: &Value) -> bool {
    let num = |v: &Value| match v {
        Value::Bool(x) => Some(f64::from(u8::from(*x))),
        Value::Number(n) => n.as_f64(),
        _ => None,
    };
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// The storage one Optuna endpoint serves: one workspace's studies.
#[derive(Clone)]
pub struct OptunaStorage {
    db: Db,
    tracking: Tracking,
    workspace: String,
}

impl OptunaStorage {
    pub fn new(scheduler: &SchedulerHandle, workspace: &str) -> Self {
        OptunaStorage {
            db: scheduler.store().db.clone(),
            tracking: scheduler.tracking().scoped(workspace),
            workspace: workspace.to_string(),
        }
    }

    fn no_study(id: impl std::fmt::Display) -> ComputeError {
        ComputeError::StudyNotFound(format!("Optuna study {id}"))
    }

    fn no_trial(id: i64) -> ComputeError {
        ComputeError::TrialNotFound {
            study: "an Optuna study".into(),
            number: id.max(0) as u64,
        }
    }

    pub async fn create_study(
        &self,
        name: &str,
        directions: Vec<Direction>,
    ) -> Result<i64, ComputeError> {
        if name.is_empty() || name.len() > 500 || name.contains('\0') {
            return Err(InvalidField::new("study_name", "1 to 500 characters, no NUL").into());
        }
        if directions.is_empty() {
            return Err(InvalidField::new("directions", "at least one direction").into());
        }
        if self
            .db
            .optuna_study_by_name(&self.workspace, name)
            .await?
            .is_some()
        {
            return Err(ComputeError::StudyExists(name.to_string()));
        }
        let experiment = self.tracking.experiment_for_name(name).await?;
        let row = OptunaStudyRow {
            id: 0,
            workspace: self.workspace.clone(),
            name: name.to_string(),
            directions: serde_json::to_string(&directions).expect("directions serialise"),
            user_attrs: "{}".into(),
            system_attrs: "{}".into(),
            distributions: "{}".into(),
            experiment_id: experiment,
            created_at_ms: now_ms(),
        };
        self.db
            .optuna_create_study(&row)
            .await?
            .ok_or_else(|| ComputeError::StudyExists(name.to_string()))
    }

    pub async fn delete_study(&self, id: i64) -> Result<(), ComputeError> {
        if self.db.optuna_delete_study(&self.workspace, id).await? {
            Ok(())
        } else {
            Err(Self::no_study(id))
        }
    }

    pub async fn set_study_attr(
        &self,
        id: i64,
        system: bool,
        key: &str,
        value: &str,
    ) -> Result<(), ComputeError> {
        let column = if system {
            StudyColumn::SystemAttrs
        } else {
            StudyColumn::UserAttrs
        };
        let found = self
            .db
            .optuna_update_study(&self.workspace, id, column, |text| {
                let mut map: BTreeMap<String, String> =
                    serde_json::from_str(text).unwrap_or_default();
                map.insert(key.to_string(), value.to_string());
                Ok(serde_json::to_string(&map).expect("strings serialise"))
            })
            .await?;
        if found {
            Ok(())
        } else {
            Err(Self::no_study(id))
        }
    }

    pub async fn study(&self, id: i64) -> Result<OptunaStudy, ComputeError> {
        let row = self
            .db
            .optuna_study(&self.workspace, id)
            .await?
            .ok_or_else(|| Self::no_study(id))?;
        study_of(&row)
    }

    pub async fn study_id(&self, name: &str) -> Result<i64, ComputeError> {
        self.db
            .optuna_study_by_name(&self.workspace, name)
            .await?
            .map(|r| r.id)
            .ok_or_else(|| Self::no_study(name))
    }

    pub async fn all_studies(&self) -> Result<Vec<OptunaStudy>, ComputeError> {
        self.db
            .optuna_studies(&self.workspace)
            .await?
            .iter()
            .map(study_of)
            .collect()
    }

    /// A new trial: RUNNING and empty, or a copy of the client's template (its id and
    /// number ignored). Its run is made with it.
    pub async fn create_trial(
        &self,
        study_id: i64,
        template: Option<(OptunaState, TrialBody)>,
    ) -> Result<i64, ComputeError> {
        let study = self
            .db
            .optuna_study(&self.workspace, study_id)
            .await?
            .ok_or_else(|| Self::no_study(study_id))?;
        let (state, body) = template.unwrap_or_else(|| {
            (
                OptunaState::Running,
                TrialBody {
                    datetime_start: optuna_now(),
                    ..TrialBody::default()
                },
            )
        });
        for (name, d) in &body.distributions {
            Distribution::parse(d).map_err(|e| {
                InvalidField::new(format!("template_trial.distributions.{name}"), e.message)
            })?;
        }
        let text = serde_json::to_string(&body).expect("a trial body serialises");
        let (id, number) = self
            .db
            .optuna_create_trial(study_id, state.as_str(), &text, None)
            .await?;
        // Its run, with what the template already holds.
        let run = self
            .tracking
            .create_run(NewRun {
                experiment_id: study.experiment_id.clone(),
                user_id: "optuna".into(),
                run_name: Some(format!("{}-{number}", study.name)),
                start_time: Some(now_ms()),
                tags: vec![
                    KeyValue::new("trainyard.optuna.study", study.name.clone()),
                    KeyValue::new("trainyard.optuna.trial_number", number.to_string()),
                ],
                job_id: None,
                status: RunStatus::Running,
            })
            .await;
        match run {
            Ok(run) => {
                let run_id = run.info.run_id.clone();
                self.db.optuna_set_trial_run(id, &run_id).await?;
                let trial = OptunaTrial {
                    id,
                    study_id,
                    number,
                    state,
                    body,
                    run_id: Some(run_id),
                };
                for (name, v) in &trial.body.params {
                    self.mirror_param(&trial, name, v.0).await;
                }
                for (step, v) in &trial.body.intermediate {
                    self.mirror_intermediate(&trial, *step, v.0).await;
                }
                if state.is_finished() {
                    self.mirror_end(&trial).await;
                }
            }
            Err(e) => tracing::warn!(trial = id, error = %e, "Optuna trial has no run"),
        }
        Ok(id)
    }

    pub async fn trial(&self, id: i64) -> Result<OptunaTrial, ComputeError> {
        let row = self
            .db
            .optuna_trial(&self.workspace, id)
            .await?
            .ok_or_else(|| Self::no_trial(id))?;
        trial_of(&row)
    }

    /// The trial, for a write: unknown → not found, finished → refused.
    async fn open_trial(&self, id: i64) -> Result<OptunaTrial, ComputeError> {
        let t = self.trial(id).await?;
        if t.state.is_finished() {
            return Err(ComputeError::TrialFinished {
                number: t.number.max(0) as u64,
                state: t.state.as_str(),
            });
        }
        Ok(t)
    }

    /// Writes a trial read by [`open_trial`]; another writer changing its state in between
    /// makes this write fail as Optuna's would (finished) or retry.
    async fn save(&self, before: OptunaState, t: &OptunaTrial) -> Result<bool, ComputeError> {
        let text = serde_json::to_string(&t.body).expect("a trial body serialises");
        Ok(self
            .db
            .optuna_update_trial(t.id, before.as_str(), t.state.as_str(), &text)
            .await?)
    }

    /// Applies `change` to an unfinished trial, retrying when another writer got between
    /// the read and the write.
    async fn update(
        &self,
        id: i64,
        mut change: impl FnMut(&mut OptunaTrial) -> Result<(), ComputeError>,
    ) -> Result<OptunaTrial, ComputeError> {
        for _ in 0..20 {
            let mut t = self.open_trial(id).await?;
            let before = t.state;
            change(&mut t)?;
            if self.save(before, &t).await? {
                return Ok(t);
            }
        }
        Err(ComputeError::StudyClosed(format!(
            "trial {id} keeps changing under this write; try again"
        )))
    }

    pub async fn set_param(
        &self,
        trial_id: i64,
        name: &str,
        internal: f64,
        distribution: &str,
    ) -> Result<(), ComputeError> {
        let t = self.open_trial(trial_id).await?;
        let d = Distribution::parse(distribution)?;
        if d.external(internal).is_none() {
            return Err(InvalidField::new(
                "param_value_internal",
                format!("{internal} is not a value of `{name}`'s distribution"),
            )
            .into());
        }
        // The study's record of the name: a different kind, scale or choices is refused.
        let mut incompatible = false;
        self.db
            .optuna_update_study(
                &self.workspace,
                t.study_id,
                StudyColumn::Distributions,
                |text| {
                    let mut map: BTreeMap<String, String> =
                        serde_json::from_str(text).unwrap_or_default();
                    if let Some(known) = map.get(name).and_then(|k| Distribution::parse(k).ok()) {
                        if !known.compatible(&d) {
                            incompatible = true;
                            return Ok(text.to_string());
                        }
                    }
                    map.insert(name.to_string(), distribution.to_string());
                    Ok(serde_json::to_string(&map).expect("strings serialise"))
                },
            )
            .await?;
        if incompatible {
            return Err(InvalidField::new(
                "distribution",
                format!("`{name}` was declared with an incompatible distribution in this study"),
            )
            .into());
        }
        let t = self
            .update(trial_id, |t| {
                t.body.params.insert(name.to_string(), Double(internal));
                t.body
                    .distributions
                    .insert(name.to_string(), distribution.to_string());
                Ok(())
            })
            .await?;
        self.mirror_param(&t, name, internal).await;
        Ok(())
    }

    pub async fn trial_id(&self, study_id: i64, number: i64) -> Result<i64, ComputeError> {
        self.study(study_id).await?;
        self.db
            .optuna_trial_id(study_id, number)
            .await?
            .ok_or_else(|| Self::no_trial(number))
    }

    /// Sets a trial's state (and values, when given). Claiming a trial (`running`) succeeds
    /// only from WAITING, for exactly one caller; `Ok(false)` for the others.
    pub async fn set_state_values(
        &self,
        trial_id: i64,
        state: OptunaState,
        values: &[f64],
    ) -> Result<bool, ComputeError> {
        let mut t = self.open_trial(trial_id).await?;
        if state == OptunaState::Running && t.state != OptunaState::Waiting {
            return Ok(false);
        }
        let before = t.state;
        t.state = state;
        if !values.is_empty() {
            t.body.values = values.iter().map(|v| Double(*v)).collect();
        }
        if state == OptunaState::Running {
            t.body.datetime_start = optuna_now();
        }
        if state.is_finished() {
            t.body.datetime_complete = optuna_now();
        }
        if !self.save(before, &t).await? {
            // Someone else changed it first: a claim lost, or a write to a finished trial.
            let now = self.trial(trial_id).await?;
            if now.state.is_finished() {
                return Err(ComputeError::TrialFinished {
                    number: now.number.max(0) as u64,
                    state: now.state.as_str(),
                });
            }
            return Ok(false);
        }
        if state.is_finished() {
            self.mirror_end(&t).await;
        }
        Ok(true)
    }

    pub async fn set_intermediate(
        &self,
        trial_id: i64,
        step: i64,
        value: f64,
    ) -> Result<(), ComputeError> {
        let t = self
            .update(trial_id, |t| {
                t.body.intermediate.insert(step, Double(value));
                Ok(())
            })
            .await?;
        self.mirror_intermediate(&t, step, value).await;
        Ok(())
    }

    pub async fn set_trial_attr(
        &self,
        trial_id: i64,
        system: bool,
        key: &str,
        value: &str,
    ) -> Result<(), ComputeError> {
        self.update(trial_id, |t| {
            let map = if system {
                &mut t.body.system_attrs
            } else {
                &mut t.body.user_attrs
            };
            map.insert(key.to_string(), value.to_string());
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// A study's trials with an id above `greater_than` or among `included`.
    pub async fn trials(
        &self,
        study_id: i64,
        greater_than: i64,
        included: &[i64],
    ) -> Result<Vec<OptunaTrial>, ComputeError> {
        self.study(study_id).await?;
        self.db
            .optuna_trials(study_id, greater_than, included)
            .await?
            .iter()
            .map(trial_of)
            .collect()
    }

    async fn mirror_param(&self, t: &OptunaTrial, name: &str, internal: f64) {
        let (Some(run), Some(d)) = (
            &t.run_id,
            t.body
                .distributions
                .get(name)
                .and_then(|d| Distribution::parse(d).ok()),
        ) else {
            return;
        };
        let text = match d.external(internal) {
            Some(Value::String(s)) => s,
            Some(v) => v.to_string(),
            None => return,
        };
        if let Err(e) = self
            .tracking
            .log_param(run, KeyValue::new(name, text))
            .await
        {
            tracing::debug!(run = %run, param = name, error = %e, "Optuna parameter not mirrored");
        }
    }

    async fn mirror_metric(&self, t: &OptunaTrial, key: &str, step: i64, value: f64) {
        let Some(run) = &t.run_id else { return };
        if !value.is_finite() {
            return;
        }
        let point = MetricPoint {
            key: key.to_string(),
            value,
            timestamp: now_ms(),
            step,
            model_id: None,
            dataset_name: None,
            dataset_digest: None,
        };
        if let Err(e) = self.tracking.log_metric(run, point).await {
            tracing::debug!(run = %run, metric = key, error = %e, "Optuna value not mirrored");
        }
    }

    async fn mirror_intermediate(&self, t: &OptunaTrial, step: i64, value: f64) {
        self.mirror_metric(t, "intermediate_value", step, value)
            .await;
    }

    async fn mirror_end(&self, t: &OptunaTrial) {
        let Some(run) = &t.run_id else { return };
        let step = t.body.intermediate.keys().next_back().copied().unwrap_or(0);
        match t.body.values.as_slice() {
            [one] => self.mirror_metric(t, "value", step, one.0).await,
            many => {
                for (i, v) in many.iter().enumerate() {
                    self.mirror_metric(t, &format!("value_{i}"), step, v.0)
                        .await;
                }
            }
        }
        let status = match t.state {
            OptunaState::Complete => RunStatus::Finished,
            OptunaState::Pruned => RunStatus::Killed,
            _ => RunStatus::Failed,
        };
        if let Err(e) = self
            .tracking
            .update_run(run, Some(status), Some(now_ms()), None)
            .await
        {
            tracing::debug!(run = %run, error = %e, "Optuna trial's end not mirrored");
        }
    }
}

/// An Optuna study as `/api/v1/studies` shows it: its space from the distributions its
/// trials declared, its first objective, the client as the sampler.
pub(crate) async fn view(
    db: &Db,
    row: &OptunaStudyRow,
) -> Result<(Study, Vec<Trial>), ComputeError> {
    let study = study_of(row)?;
    let distributions: BTreeMap<String, String> =
        serde_json::from_str(&row.distributions).map_err(|e| corrupt(&row.name, e))?;
    let space: BTreeMap<String, ParamSpec> = distributions
        .iter()
        .filter_map(|(k, d)| Some((k.clone(), Distribution::parse(d).ok()?.spec())))
        .collect();
    let direction = study.directions.first().copied().unwrap_or_default();
    let trials: Vec<Trial> = db
        .optuna_trials(row.id, -1, &[])
        .await?
        .iter()
        .map(|r| trial_of(r).map(|t| trial_view(&t)))
        .collect::<Result<_, _>>()?;
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for t in &trials {
        *counts.entry(t.state.as_str().to_string()).or_default() += 1;
    }
    let several = study.directions.len() > 1;
    let best = if several {
        None
    } else {
        trials
            .iter()
            .filter(|t| t.state == TrialState::Complete)
            .filter(|t| t.value.is_some_and(f64::is_finite))
            .fold(None::<&Trial>, |best, t| match best {
                Some(b) if !direction.better(t.value.unwrap_or(0.0), b.value.unwrap_or(0.0)) => {
                    Some(b)
                }
                _ => Some(t),
            })
            .cloned()
    };
    let pareto_front = several.then(|| pareto_front(&study.directions, &trials));
    let spec = StudySpec {
        name: row.name.clone(),
        space,
        objective: Objective {
            metric: "value".into(),
            direction,
        },
        constraint: None,
        sampler: SamplerConfig::External,
        pruner: PrunerConfig::None,
        parallelism: 1,
        budget: Budget::default(),
        max_failed_trials: None,
        trial: None,
        experiment: Some(row.name.clone()),
    };
    Ok((
        Study {
            id: format!("optuna-{}", row.id),
            name: row.name.clone(),
            workspace: row.workspace.clone(),
            state: StudyState::Running,
            message: Some("kept for an Optuna client, which samples its trials".into()),
            spec,
            counts,
            best,
            directions: several.then(|| study.directions.clone()),
            pareto_front,
            created_at_ms: row.created_at_ms,
            finished_at_ms: None,
        },
        trials,
    ))
}

/// The numbers of the complete trials with finite values that no other such trial
/// dominates (at least as good on every objective, better on one), as Optuna's
/// `best_trials`.
fn pareto_front(directions: &[Direction], trials: &[Trial]) -> Vec<u64> {
    let losses: Vec<(u64, Vec<f64>)> = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .filter_map(|t| {
            let values = t.values.as_ref()?;
            (values.len() == directions.len()).then(|| {
                let loss = values.iter().zip(directions).map(|(v, d)| d.sign() * v);
                (t.number, loss.collect())
            })
        })
        .collect();
    let dominates = |a: &[f64], b: &[f64]| {
        a.iter().zip(b).all(|(x, y)| x <= y) && a.iter().zip(b).any(|(x, y)| x < y)
    };
    losses
        .iter()
        .filter(|(_, b)| !losses.iter().any(|(_, a)| dominates(a, b)))
        .map(|(n, _)| *n)
        .collect()
}

fn trial_view(t: &OptunaTrial) -> Trial {
    let params: Params = t
        .body
        .params
        .iter()
        .filter_map(|(k, v)| {
            let d = Distribution::parse(t.body.distributions.get(k)?).ok()?;
            Some((k.clone(), d.external(v.0)?))
        })
        .collect();
    let at = |text: &str| -> Option<i64> {
        let utc = format!("{}Z", text.strip_suffix("+00:00")?);
        let time = humantime::parse_rfc3339_weak(&utc).ok()?;
        Some(time.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64)
    };
    let mut view = Trial::new(
        t.number.max(0) as u64,
        params,
        None,
        at(&t.body.datetime_start).unwrap_or(0),
    );
    view.finished_at_ms = at(&t.body.datetime_complete);
    view.state = t.state.view();
    view.value = t.body.values.first().map(|v| v.0).filter(|v| v.is_finite());
    if t.body.values.len() > 1 && t.body.values.iter().all(|v| v.0.is_finite()) {
        view.values = Some(t.body.values.iter().map(|v| v.0).collect());
    }
    view.intermediate = t
        .body
        .intermediate
        .iter()
        .filter(|(s, v)| **s >= 0 && v.0.is_finite())
        .map(|(s, v)| (*s as u64, v.0))
        .collect();
    view.run_id = t.run_id.clone();
    view
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions_read_and_compare_as_optuna_does() {
        let f = Distribution::parse(r#"{"name": "FloatDistribution", "attributes": {"step": null, "low": -10.0, "high": 10.0, "log": false}}"#).unwrap();
        let flog = Distribution::parse(r#"{"name": "FloatDistribution", "attributes": {"low": 0.1, "high": 1.0, "log": true, "step": null}}"#).unwrap();
        let i = Distribution::parse(r#"{"name": "IntDistribution", "attributes": {"log": false, "step": 1, "low": 1, "high": 8}}"#).unwrap();
        let c = Distribution::parse(r#"{"name": "CategoricalDistribution", "attributes": {"choices": ["a", null, 1, true]}}"#).unwrap();
        let c2 = Distribution::parse(r#"{"name": "CategoricalDistribution", "attributes": {"choices": ["a", null, 1.0, 1]}}"#).unwrap();
        assert!(f.compatible(&f) && !f.compatible(&flog) && !f.compatible(&i));
        assert!(c.compatible(&c2), "1 == 1.0 and True == 1 in Python");
        assert_eq!(c.external(3.0), Some(Value::Bool(true)));
        assert_eq!(c.external(4.0), None);
        assert_eq!(c.external(0.5), None);
        assert_eq!(i.external(5.0), Some(Value::from(5)));
        for bad in [
            "",
            "{}",
            r#"{"name": "X", "attributes": {}}"#,
            r#"{"name": "FloatDistribution", "attributes": {"low": 1}}"#,
        ] {
            assert!(Distribution::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_pareto_front_is_the_finished_trials_nothing_beats_on_every_objective() {
        let trial = |number, state, values: &[f64]| {
            let mut t = Trial::new(number, Params::new(), None, 0);
            t.state = state;
            t.values = Some(values.to_vec());
            t
        };
        let trials = [
            trial(0, TrialState::Complete, &[1.0, 5.0]),
            trial(1, TrialState::Complete, &[2.0, 6.0]),
            // Worse than 0 on both (more to minimise, less to maximise).
            trial(2, TrialState::Complete, &[2.0, 4.0]),
            // Equal to 0: neither dominates the other, both are on the front (as Optuna).
            trial(3, TrialState::Complete, &[1.0, 5.0]),
            // Would dominate everything, but has not finished.
            trial(4, TrialState::Running, &[0.0, 9.0]),
            trial(5, TrialState::Complete, &[0.0, 0.0]),
        ];
        let directions = [Direction::Minimize, Direction::Maximize];
        assert_eq!(pareto_front(&directions, &trials), vec![0, 1, 3, 5]);
    }

    #[test]
    fn odd_doubles_survive_a_round_trip_and_datetimes_have_an_offset() {
        let body = TrialBody {
            values: vec![Double(f64::NAN), Double(f64::INFINITY), Double(-1.5)],
            ..TrialBody::default()
        };
        let text = serde_json::to_string(&body).unwrap();
        let back: TrialBody = serde_json::from_str(&text).unwrap();
        assert!(back.values[0].0.is_nan());
        assert_eq!(back.values[1].0, f64::INFINITY);
        assert_eq!(back.values[2].0, -1.5);
        let now = optuna_now();
        assert!(
            now.ends_with("+00:00") && now.len() == "2026-12-06T16:53:47.037861+00:00".len(),
            "{now}"
        );
    }
}
