//! A study as a user submits it (`trainyard tune STUDY.toml`, `POST /api/v1/studies`): the
//! space, the objective, the sampler and stopping rule, budgets, and the template each trial
//! runs. Checked once, at submission, naming the field of the first rule broken.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use trainyard_core::error::InvalidField;
use trainyard_core::job::JobSubmission;
use trainyard_core::resources::Resources;
use utoipa::ToSchema;

use crate::pruner::PrunerConfig;
use crate::sampler::SamplerConfig;
use crate::space::{ParamSpec, Params, Space, RESERVED};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Minimize,
    Maximize,
}

impl Direction {
    /// Multiplies a value into a loss (smaller is better).
    pub fn sign(self) -> f64 {
        match self {
            Direction::Minimize => 1.0,
            Direction::Maximize => -1.0,
        }
    }

    /// Whether `a` is better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        self.sign() * a < self.sign() * b
    }
}

/// What a trial is judged by: a metric of its run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    /// The metric's name in the trial's run (its last value is the trial's value; each
    /// step's value is an intermediate value). Default `value`.
    #[serde(default = "value_metric")]
    pub metric: String,
    #[serde(default)]
    pub direction: Direction,
}

fn value_metric() -> String {
    "value".to_string()
}

impl Default for Objective {
    fn default() -> Self {
        Objective {
            metric: value_metric(),
            direction: Direction::Minimize,
        }
    }
}

/// When a study stops asking for new trials.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Trials to start (a grid's size when the sampler is a grid and this is not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10000000)]
    pub trials: Option<u64>,
    /// Seconds from the study's creation after which no trial starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub wall_time_s: Option<u64>,
    /// Total resource (steps or epochs summed over trials and rungs) after which no trial
    /// starts or is promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub resource: Option<u64>,
}

/// What each trial runs: a command (parameters as `${name}` in its arguments and
/// environment, and always as `TRAINYARD_PARAM_<NAME>`), or a built-in training file with
/// `${name}` placeholders.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrialTemplate {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// A training file (TOML text) for the built-in engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "crate::space::unique_keys"
    )]
    pub env: BTreeMap<String, String>,
    /// Variables set from the workspace's secrets (variable → secret name).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "crate::space::unique_keys"
    )]
    pub secrets: BTreeMap<String, String>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub timeout_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// The dataset version a training file's `data.dataset` is pinned to: set at creation
    /// to the version the file names (its latest when it names none), so every trial and
    /// rung trains on the same data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// A regex with groups `name`, `value` (and `step`) for metrics in the output, instead
    /// of `name=value step=N` lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_regex: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StudySpec {
    /// Unique in its workspace: 1-100 letters, digits, `_`, `-`, `.`, other than `.` and
    /// `..`.
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,100}$")]
    pub name: String,
    /// Parameter name → its distribution (each name once).
    #[schema(value_type = Object)]
    #[serde(deserialize_with = "crate::space::unique_keys")]
    pub space: BTreeMap<String, ParamSpec>,
    #[serde(default)]
    pub objective: Objective,
    /// A metric that must end at or below 0 for the trial to count as feasible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
    #[serde(default)]
    pub sampler: SamplerConfig,
    #[serde(default)]
    pub pruner: PrunerConfig,
    /// Trials running at once.
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 256)]
    pub parallelism: u32,
    #[serde(default)]
    pub budget: Budget,
    /// Failed trials after which the study stops (default: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failed_trials: Option<u32>,
    /// What each trial runs; without one, trials are asked for and told through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<TrialTemplate>,
    /// The experiment the trials' runs join (default: the study's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
}

fn one() -> u32 {
    1
}

pub const MAX_PARALLELISM: u32 = 256;

/// 1-100 letters, digits, `_`, `-`, `.`; not `.` or `..`, which a URL's path would
/// resolve away (`/api/v1/studies/..` is not the study).
pub fn valid_study_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

fn valid_metric(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 250
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "_-./".contains(c))
}

impl StudySpec {
    /// Checks everything a study needs before it exists; returns its space.
    pub fn check(&self) -> Result<Space, InvalidField> {
        if !valid_study_name(&self.name) {
            return Err(InvalidField::new(
                "name",
                "1-100 letters, digits, '_', '-', '.', other than `.` and `..`",
            ));
        }
        let space = Space::new(&self.space)?;
        if !valid_metric(&self.objective.metric) {
            return Err(InvalidField::new(
                "objective.metric",
                "metric names are 1-250 letters, digits, '_', '-', '.', '/'",
            ));
        }
        if let Some(c) = &self.constraint {
            if !valid_metric(c) || c == &self.objective.metric {
                return Err(InvalidField::new(
                    "constraint",
                    "a metric name other than the objective's",
                ));
            }
        }
        self.sampler.check(&space)?;
        self.pruner.check()?;
        if !(1..=MAX_PARALLELISM).contains(&self.parallelism) {
            return Err(InvalidField::new(
                "parallelism",
                format!("must be 1 to {MAX_PARALLELISM}"),
            ));
        }
        if self.budget.trials == Some(0) || self.budget.trials > Some(10_000_000) {
            return Err(InvalidField::new("budget.trials", "must be 1 to 10000000"));
        }
        if self
            .budget
            .wall_time_s
            .is_some_and(|s| s == 0 || s > 10 * 366 * 86_400)
        {
            return Err(InvalidField::new(
                "budget.wall_time_s",
                "must be 1 second to 10 years",
            ));
        }
        if self.max_failed_trials == Some(0) {
            return Err(InvalidField::new("max_failed_trials", "must be at least 1"));
        }
        let mut variables: BTreeMap<String, &str> = BTreeMap::new();
        for name in self.space.keys() {
            if let Some(other) = variables.insert(param_variable(name), name) {
                return Err(InvalidField::new(
                    format!("space.{name}"),
                    format!(
                        "`{name}` and `{other}` would both be {}",
                        param_variable(name)
                    ),
                ));
            }
        }
        if self.budget.resource == Some(0) {
            return Err(InvalidField::new("budget.resource", "must be at least 1"));
        }
        if let Some(e) = &self.experiment {
            if e.trim().is_empty() || e.len() > 500 || e.contains('\0') {
                return Err(InvalidField::new(
                    "experiment",
                    "must be 1 to 500 characters without NUL bytes",
                ));
            }
        }
        if let Some(t) = &self.trial {
            self.check_template(t, &space)?;
        } else if self.pruner.promotes() {
            return Err(InvalidField::new(
                "pruner",
                "promotions need a trial template to resume; a study asked through the API may use `median`",
            ));
        }
        Ok(space)
    }

    fn check_template(&self, t: &TrialTemplate, space: &Space) -> Result<(), InvalidField> {
        match (t.command.is_empty(), &t.train) {
            (true, None) => {
                return Err(InvalidField::new(
                    "trial.command",
                    "give a command or a training file (`trial.train`)",
                ))
            }
            (false, Some(_)) => {
                return Err(InvalidField::new(
                    "trial.train",
                    "give a command or a training file, not both",
                ))
            }
            _ => {}
        }
        let known: BTreeSet<&str> = space
            .params
            .iter()
            .map(|p| p.name.as_str())
            .chain(RESERVED)
            .collect();
        let mut fields: Vec<(String, &str)> = Vec::new();
        for (i, a) in t.command.iter().enumerate() {
            fields.push((format!("trial.command[{i}]"), a));
        }
        for (k, v) in &t.env {
            fields.push((format!("trial.env.{k}"), v));
        }
        if let Some(train) = &t.train {
            fields.push(("trial.train".to_string(), train));
        }
        for (field, text) in fields {
            for name in placeholders(text).map_err(|m| InvalidField::new(&field, m))? {
                if (name == "resource" || name == "resume_from") && !self.pruner.promotes() {
                    return Err(InvalidField::new(
                        field,
                        format!(
                            "`${{{name}}}` has a value only under an `asha` or `hyperband` pruner"
                        ),
                    ));
                }
                if !known.contains(name.as_str()) {
                    return Err(InvalidField::new(
                        field,
                        format!("placeholder `${{{name}}}` names no parameter of the space"),
                    ));
                }
            }
        }
        // The rest of a trial's job is checked as a job is, rendered with a real
        // configuration.
        let probe = t.submission(
            &self.name,
            0,
            &crate::sampler::probe(space),
            self.pruner.rungs(0).first().copied(),
            None,
            self.experiment.as_deref().unwrap_or(&self.name),
            &self.objective.metric,
            self.constraint.as_deref(),
        );
        if t.train.is_none() {
            probe.validate().map_err(|e| InvalidField {
                field: format!("trial.{}", e.field),
                message: e.message,
            })?;
        }
        Ok(())
    }

    /// The trials the study may start at most.
    pub fn trial_limit(&self, space: &Space) -> Option<u64> {
        match (self.budget.trials, self.sampler.limit(space)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The `${name}` placeholders of a text (`$${` writes a literal `${`).
pub fn placeholders(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            rest = &rest[i + 2..];
            continue;
        }
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "a `${` without its `}`".to_string())?;
        out.push(after[..end].to_string());
        rest = &after[end + 1..];
    }
    Ok(out)
}

/// A value as it is written into a command line or a file: strings bare, numbers and
/// booleans as JSON writes them.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `text` with each `${name}` replaced from `values` (a name without a value becomes the
/// empty string: a parameter its condition switched off).
pub fn render(text: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[i..]);
            return out;
        };
        if let Some(v) = values.get(&after[..end]) {
            out.push_str(v);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The environment variable a parameter is also passed in.
pub fn param_variable(name: &str) -> String {
    let mut v = String::from("TRAINYARD_PARAM_");
    v.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    v
}

impl TrialTemplate {
    /// The values placeholders take for one trial.
    pub fn values(
        study: &str,
        number: u64,
        params: &Params,
        resource: Option<u64>,
        resume_from: Option<&str>,
    ) -> BTreeMap<String, String> {
        let mut values: BTreeMap<String, String> = params
            .iter()
            .map(|(k, v)| (k.clone(), value_text(v)))
            .collect();
        values.insert("trial".into(), number.to_string());
        values.insert("study".into(), study.to_string());
        if let Some(r) = resource {
            values.insert("resource".into(), r.to_string());
        }
        values.insert(
            "resume_from".into(),
            resume_from.unwrap_or_default().to_string(),
        );
        values
    }

    /// The job of a command trial (`train` templates are turned into a built-in task by
    /// the controller, which pins the dataset first).
    #[allow(clippy::too_many_arguments)]
    pub fn submission(
        &self,
        study: &str,
        number: u64,
        params: &Params,
        resource: Option<u64>,
        resume_from: Option<&str>,
        experiment: &str,
        metric: &str,
        constraint: Option<&str>,
    ) -> JobSubmission {
        let values = Self::values(study, number, params, resource, resume_from);
        let mut env: BTreeMap<String, String> = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), render(v, &values)))
            .collect();
        for (k, v) in params {
            env.insert(param_variable(k), value_text(v));
        }
        env.insert("TRAINYARD_STUDY".into(), study.to_string());
        env.insert("TRAINYARD_TRIAL".into(), number.to_string());
        if let Some(r) = resource {
            env.insert("TRAINYARD_RESOURCE".into(), r.to_string());
        }
        if let Some(prev) = resume_from {
            env.insert("TRAINYARD_RESUME_FROM".into(), prev.to_string());
        }
        let mut labels = BTreeMap::new();
        labels.insert("trainyard.study".to_string(), study.to_string());
        labels.insert("trainyard.trial".to_string(), number.to_string());
        JobSubmission {
            name: Some(format!("{study}-{number}")),
            command: self.command.iter().map(|a| render(a, &values)).collect(),
            task: None,
            env,
            secrets: self.secrets.clone(),
            working_dir: self.working_dir.clone(),
            resources: self.resources.clone(),
            priority: 0,
            max_retries: 0,
            timeout_s: self.timeout_s,
            labels,
            tracking: trainyard_core::job::JobTracking {
                experiment: Some(experiment.to_string()),
                metrics: std::iter::once(metric.to_string())
                    .chain(constraint.map(str::to_string))
                    .collect(),
                metric_regex: self.metric_regex.clone(),
            },
            pool: self.pool.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> StudySpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn keys_given_twice_are_refused() {
        for text in [
            r#"{"name": "s", "space": {"x": {"type": "float", "low": 0, "high": 1},
                                       "x": {"type": "int", "low": 0, "high": 1}}}"#,
            r#"{"name": "s", "space": {"x": {"type": "float", "low": 0, "high": 1}},
                "trial": {"command": ["true"], "env": {"A": "1", "A": "2"}}}"#,
            r#"{"name": "s", "space": {"x": {"type": "float", "low": 0, "high": 1}},
                "trial": {"command": ["true"], "secrets": {"A": "s", "A": "t"}}}"#,
        ] {
            let err = serde_json::from_str::<StudySpec>(text).unwrap_err();
            assert!(err.to_string().contains("is given twice"), "{text}: {err}");
        }
        let once = r#"{"name": "s", "space": {"x": {"type": "float", "low": 0, "high": 1}},
                       "trial": {"command": ["true"], "env": {"A": "1", "B": "2"}}}"#;
        let spec: StudySpec = serde_json::from_str(once).unwrap();
        assert_eq!(spec.trial.unwrap().env.len(), 2);
        let bare = r#"{"name": "s", "space": {"x": {"type": "float", "low": 0, "high": 1}},
                       "trial": {"command": ["true"]}}"#;
        let spec: StudySpec = serde_json::from_str(bare).unwrap();
        assert!(spec.trial.unwrap().secrets.is_empty());
    }

    #[test]
    fn placeholders_render_and_unknown_ones_are_refused() {
        let values: BTreeMap<String, String> = [("lr".to_string(), "0.1".to_string())].into();
        assert_eq!(
            render("--lr=${lr} $${HOME} ${off}x", &values),
            "--lr=0.1 ${HOME} x"
        );
        assert_eq!(placeholders("a ${x} $${y} ${z}").unwrap(), ["x", "z"]);
        assert!(placeholders("${x").is_err());
        let s = spec(json!({
            "name": "s",
            "space": {"lr": {"type": "float", "low": 0.001, "high": 0.1, "log": true}},
            "trial": {"command": ["python3", "train.py", "--lr", "${lr}", "--wd", "${wd}"]},
        }));
        let err = s.check().unwrap_err();
        assert_eq!(err.field, "trial.command[5]");
        assert!(err.message.contains("wd"), "{err}");
        let s = spec(json!({
            "name": "s",
            "space": {"lr": {"type": "float", "low": 0.001, "high": 0.1}},
            "trial": {"train": "lr = ${lr}\nepochs = ${resource}\nx = ${nope}"},
        }));
        assert_eq!(s.check().unwrap_err().field, "trial.train");
    }

    #[test]
    fn bad_studies_name_the_field() {
        let base = json!({"name": "s", "space": {"x": {"type": "float", "low": 0, "high": 1}}});
        let with = |k: &str, v: serde_json::Value| {
            let mut b = base.clone();
            b[k] = v;
            spec(b)
        };
        for name in ["a/b", ".", "..", ""] {
            assert_eq!(
                with("name", json!(name)).check().unwrap_err().field,
                "name",
                "{name:?}"
            );
        }
        for name in ["...", ".a", "a..b", "v1.2"] {
            with("name", json!(name)).check().unwrap();
        }
        assert_eq!(
            with("parallelism", json!(0)).check().unwrap_err().field,
            "parallelism"
        );
        assert_eq!(
            with("budget", json!({"trials": 0}))
                .check()
                .unwrap_err()
                .field,
            "budget.trials"
        );
        assert_eq!(
            with("pruner", json!({"kind": "asha", "max_resource": 9}))
                .check()
                .unwrap_err()
                .field,
            "pruner"
        );
        assert_eq!(
            with("trial", json!({"command": [], "env": {}}))
                .check()
                .unwrap_err()
                .field,
            "trial.command"
        );
        assert_eq!(
            with("trial", json!({"command": ["x"], "timeout_s": 0}))
                .check()
                .unwrap_err()
                .field,
            "trial.timeout_s"
        );
        assert_eq!(
            with("objective", json!({"metric": "a b"}))
                .check()
                .unwrap_err()
                .field,
            "objective.metric"
        );
        with("sampler", json!({"kind": "grid"}))
            .check()
            .unwrap_err();
        assert_eq!(
            with("max_failed_trials", json!(0))
                .check()
                .unwrap_err()
                .field,
            "max_failed_trials"
        );
        assert_eq!(
            with("budget", json!({"wall_time_s": u64::MAX}))
                .check()
                .unwrap_err()
                .field,
            "budget.wall_time_s"
        );
        assert_eq!(
            with("trial", json!({"command": ["run", "--epochs=${resource}"]}))
                .check()
                .unwrap_err()
                .field,
            "trial.command[1]"
        );
        let clash = spec(json!({"name": "s", "space": {
            "lr": {"type": "float", "low": 0, "high": 1},
            "LR": {"type": "float", "low": 0, "high": 1}}}));
        assert_eq!(clash.check().unwrap_err().field, "space.lr");
        assert!(serde_json::from_value::<StudySpec>(
            json!({"name": "s", "space": {}, "surprise": 1})
        )
        .is_err());
        assert!(serde_json::from_value::<StudySpec>(
            json!({"name": "s", "space": {}, "sampler": {"kind": "tpe", "sed": 1}})
        )
        .is_err());
        base_ok(base);
    }

    fn base_ok(v: serde_json::Value) {
        let s = spec(v);
        s.check().unwrap();
        assert_eq!(s.sampler.name(), "tpe");
        assert_eq!(s.parallelism, 1);
    }

    #[test]
    fn a_trial_job_carries_its_parameters() {
        let s = spec(json!({
            "name": "s",
            "space": {"lr": {"type": "float", "low": 0.001, "high": 0.1}, "opt": {"type": "categorical", "choices": ["sgd", "adam"]}},
            "objective": {"metric": "loss"},
            "pruner": {"kind": "asha", "max_resource": 9},
            "trial": {"command": ["run", "--lr=${lr}", "--opt", "${opt}", "--epochs", "${resource}"], "env": {"T": "${trial}"}},
        }));
        s.check().unwrap();
        let params: Params = [("lr".into(), json!(0.01)), ("opt".into(), json!("adam"))].into();
        let job =
            s.trial
                .as_ref()
                .unwrap()
                .submission("s", 7, &params, Some(3), None, "s", "loss", None);
        assert_eq!(
            job.command,
            ["run", "--lr=0.01", "--opt", "adam", "--epochs", "3"]
        );
        assert_eq!(job.env["T"], "7");
        assert_eq!(job.env["TRAINYARD_PARAM_LR"], "0.01");
        assert_eq!(job.env["TRAINYARD_RESOURCE"], "3");
        assert_eq!(job.tracking.metrics, ["loss"]);
        job.validate().unwrap();
    }
}
