use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{InvalidField, Resources};

/// Where a job is in its life: `queued → running → succeeded | failed | cancelled`;
/// a failed attempt with retries left goes back to `queued`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// Why an attempt ended; kept with the job so a failure is never just "exit 1".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// The command exited by itself (with `exit_code`).
    Exited,
    /// The command was killed by a signal it did not expect.
    Signaled,
    /// The command could not be started (not found, not executable, bad working dir).
    SpawnFailed,
    /// `timeout_s` passed and the process tree was ended.
    Timeout,
    /// A user cancelled it.
    Cancelled,
    /// The supervisor vanished (for example the machine rebooted) and the outcome is unknown.
    Lost,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Exited => "exited",
            ExitReason::Signaled => "signaled",
            ExitReason::SpawnFailed => "spawn_failed",
            ExitReason::Timeout => "timeout",
            ExitReason::Cancelled => "cancelled",
            ExitReason::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            ExitReason::Exited,
            ExitReason::Signaled,
            ExitReason::SpawnFailed,
            ExitReason::Timeout,
            ExitReason::Cancelled,
            ExitReason::Lost,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// The built-in tasks a job can name instead of a command. Each runs the `trainyard`
/// program of the machine the job runs on (`trainyard task KIND ARGS…`), so a job never
/// carries a path from the machine that submitted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// Train a model from a pinned training file (`trainyard train`).
    Train,
    /// Evaluate a model version on a dataset version (`trainyard eval`).
    Eval,
    /// Predict over a dataset version into a new dataset (`trainyard predict`).
    Predict,
    /// Compress a model version into a new one (`trainyard compress`).
    Compress,
}

impl TaskKind {
    pub const ALL: [TaskKind; 4] = [
        TaskKind::Train,
        TaskKind::Eval,
        TaskKind::Predict,
        TaskKind::Compress,
    ];

    /// The subcommand of `trainyard task` that runs it.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Train => "train",
            TaskKind::Eval => "eval",
            TaskKind::Predict => "predict",
            TaskKind::Compress => "compress",
        }
    }
}

/// A built-in task with its pinned arguments: what a job records instead of a command
/// when the platform's own program runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuiltinTask {
    pub kind: TaskKind,
    /// Its arguments, as `trainyard task KIND` takes them (the configuration pinned at
    /// submission: dataset and model versions resolved).
    #[serde(default)]
    pub args: Vec<String>,
}

impl BuiltinTask {
    /// The arguments after the program: `task KIND ARGS…`.
    pub fn argv_after_program(&self) -> impl Iterator<Item = &str> {
        ["task", self.kind.as_str()]
            .into_iter()
            .chain(self.args.iter().map(String::as_str))
    }
}

/// What a user hands the platform to run: a `command`, or a built-in `task`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSubmission {
    /// Shown in listings; defaults to the program name (or the task's kind).
    #[serde(default)]
    pub name: Option<String>,
    /// The program and its arguments (no shell is involved unless you name one). Empty
    /// when `task` is given.
    #[serde(default)]
    pub command: Vec<String>,
    /// A built-in task to run instead of a command; the executor resolves the `trainyard`
    /// program where the job runs.
    #[serde(default)]
    pub task: Option<BuiltinTask>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Variables set from the workspace's secrets: variable name → secret name. The values
    /// reach only the job's environment, decrypted as each attempt starts.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Absolute path the command starts in; defaults to the server's working directory.
    #[serde(default)]
    #[schema(pattern = "^/")]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub resources: Resources,
    /// Higher runs first; equal priorities run oldest first.
    #[serde(default)]
    pub priority: i32,
    /// How many times a failed attempt is re-queued.
    #[serde(default)]
    #[schema(maximum = 100)]
    pub max_retries: u32,
    /// Wall-clock limit of one attempt, in seconds.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 31536000)]
    pub timeout_s: Option<u64>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Which experiment the job's run joins and which metrics to read from its output.
    #[serde(default)]
    pub tracking: JobTracking,
    /// The resource pool (`[[pools]]` in `trainyard.toml`) whose executor runs the job:
    /// this machine, a Slurm cluster, a Ray cluster… Default: the first pool.
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub pool: Option<String>,
}

/// How a job is tracked: every job is a run (its run id is the job id).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobTracking {
    /// Experiment name; created when missing. Default: MLflow's `Default` experiment.
    #[serde(default)]
    pub experiment: Option<String>,
    /// Metric names to collect from `name=value` pairs in the job's output (an optional
    /// `step=N` or `epoch=N` on the same line sets the step).
    #[serde(default)]
    #[schema(max_items = 64)]
    pub metrics: Vec<String>,
    /// A regex with named groups `name` and `value` (and optionally `step`) used instead
    /// of the `name=value` convention.
    #[serde(default)]
    pub metric_regex: Option<String>,
}

pub const MAX_TRACKED_METRICS: usize = 64;

impl JobTracking {
    pub fn validate(&self) -> Result<(), InvalidField> {
        if let Some(e) = &self.experiment {
            if e.trim().is_empty() || e.len() > 500 || e.contains('\0') {
                return Err(InvalidField::new(
                    "tracking.experiment",
                    "must be 1 to 500 characters without NUL bytes",
                ));
            }
        }
        if self.metrics.len() > MAX_TRACKED_METRICS {
            return Err(InvalidField::new(
                "tracking.metrics",
                format!("at most {MAX_TRACKED_METRICS} metric names"),
            ));
        }
        for (i, name) in self.metrics.iter().enumerate() {
            let ok = !name.is_empty()
                && name.len() <= 250
                && name
                    .chars()
                    .all(|c| c.is_alphanumeric() || "_-./".contains(c));
            if !ok {
                return Err(InvalidField::new(
                    format!("tracking.metrics[{i}]"),
                    "metric names are 1-250 letters, digits, '_', '-', '.', '/'",
                ));
            }
        }
        if let Some(re) = &self.metric_regex {
            if re.is_empty() || re.len() > 1000 || re.contains('\0') {
                return Err(InvalidField::new(
                    "tracking.metric_regex",
                    "must be 1 to 1000 characters",
                ));
            }
        }
        Ok(())
    }
}

pub const MAX_NAME_LEN: usize = 256;
pub const MAX_ARGS: usize = 4096;
pub const MAX_RETRIES: u32 = 100;
pub const MAX_LABELS: usize = 64;
/// One year: longer is surely a mistake, and it keeps deadline arithmetic far from overflow.
pub const MAX_TIMEOUT_S: u64 = 365 * 24 * 3600;

impl JobSubmission {
    /// Checks every rule a submission must meet, naming the first field that breaks one.
    pub fn validate(&self) -> Result<(), InvalidField> {
        if let Some(name) = &self.name {
            if name.trim().is_empty() || name.len() > MAX_NAME_LEN {
                return Err(InvalidField::new(
                    "name",
                    format!("must be 1 to {MAX_NAME_LEN} characters"),
                ));
            }
            if name.chars().any(char::is_control) {
                // A name is printed in other members' terminals and logs: no newline or
                // escape sequence may ride in it.
                return Err(InvalidField::new(
                    "name",
                    "contains a control character (newline, escape, NUL…)",
                ));
            }
        }
        match &self.task {
            Some(_) if !self.command.is_empty() => {
                return Err(InvalidField::new(
                    "task",
                    "a job runs either a command or a built-in task, not both",
                ));
            }
            Some(task) => check_args("task.args", &task.args)?,
            None => {
                if self.command.is_empty() {
                    return Err(InvalidField::new(
                        "command",
                        "must name a program to run (an argv list with at least one element), or give a built-in `task`",
                    ));
                }
                if self.command[0].is_empty() {
                    return Err(InvalidField::new("command[0]", "the program name is empty"));
                }
                check_args("command", &self.command)?;
            }
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(InvalidField::new(
                    format!("env.{key}"),
                    "variable names must be non-empty and contain no '=' or NUL",
                ));
            }
            if value.contains('\0') {
                return Err(InvalidField::new(
                    format!("env.{key}"),
                    "contains a NUL byte",
                ));
            }
        }
        for (key, secret) in &self.secrets {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(InvalidField::new(
                    format!("secrets.{key}"),
                    "variable names must be non-empty and contain no '=' or NUL",
                ));
            }
            if self.env.contains_key(key) {
                return Err(InvalidField::new(
                    format!("secrets.{key}"),
                    "is also set in `env`; a variable comes from one or the other",
                ));
            }
            if !crate::access::valid_name(secret) {
                return Err(InvalidField::new(
                    format!("secrets.{key}"),
                    "names a secret: 1-63 of a-z 0-9 - _ . (a letter or digit first)",
                ));
            }
        }
        if let Some(dir) = &self.working_dir {
            if !dir.starts_with('/') || dir.contains('\0') {
                return Err(InvalidField::new("working_dir", "must be an absolute path"));
            }
        }
        self.resources.validate()?;
        if self.max_retries > MAX_RETRIES {
            return Err(InvalidField::new(
                "max_retries",
                format!("must be at most {MAX_RETRIES}"),
            ));
        }
        if let Some(t) = self.timeout_s {
            if t == 0 || t > MAX_TIMEOUT_S {
                return Err(InvalidField::new(
                    "timeout_s",
                    format!("must be between 1 and {MAX_TIMEOUT_S} seconds when given"),
                ));
            }
        }
        if let Some(pool) = &self.pool {
            if !is_pool_name(pool) {
                return Err(InvalidField::new(
                    "pool",
                    "pool names are 1-63 lowercase letters, digits, '-' and '_', starting with a letter or digit",
                ));
            }
        }
        let counted = self.labels.len() - usize::from(self.labels.contains_key(RETRY_OF_LABEL));
        if counted > MAX_LABELS {
            return Err(InvalidField::new(
                "labels",
                format!("at most {MAX_LABELS} labels (besides `{RETRY_OF_LABEL}`)"),
            ));
        }
        for (key, value) in &self.labels {
            let key_ok = !key.is_empty()
                && key.len() <= 63
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
            if !key_ok {
                return Err(InvalidField::new(
                    format!("labels.{key}"),
                    "label keys are 1-63 characters of letters, digits, '-', '_', '.', '/'",
                ));
            }
            if value.len() > 256 || value.chars().any(char::is_control) {
                return Err(InvalidField::new(
                    format!("labels.{key}"),
                    "label values are at most 256 characters, without control characters",
                ));
            }
        }
        self.tracking.validate()
    }

    /// The name shown for the job: the given one, else the task's kind or the program's
    /// file name.
    pub fn display_name(&self) -> String {
        match (&self.name, &self.task) {
            (Some(name), _) => name.clone(),
            (None, Some(task)) => task.kind.as_str().to_string(),
            (None, None) => {
                let program = self.command.first().map(String::as_str).unwrap_or("job");
                program.rsplit('/').next().unwrap_or(program).to_string()
            }
        }
    }
}

/// Whether `name` is a valid pool name (also the rule for `[[pools]]` names in the
/// configuration): short, lowercase, safe in engine job names and paths.
pub fn is_pool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.starts_with(['-', '_'])
}

/// An argv list's bounds: not too many arguments, no NUL byte in any.
fn check_args(field: &str, args: &[String]) -> Result<(), InvalidField> {
    if args.len() > MAX_ARGS {
        return Err(InvalidField::new(
            field,
            format!("has more than {MAX_ARGS} arguments"),
        ));
    }
    match args.iter().position(|arg| arg.contains('\0')) {
        Some(i) => Err(InvalidField::new(
            format!("{field}[{i}]"),
            "contains a NUL byte",
        )),
        None => Ok(()),
    }
}

/// A job as stored and as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub id: String,
    pub workspace: String,
    pub name: String,
    pub state: JobState,
    /// Empty for a job that runs a built-in `task`.
    pub command: Vec<String>,
    /// The built-in task the job runs, with its pinned arguments.
    #[serde(default)]
    pub task: Option<BuiltinTask>,
    pub env: BTreeMap<String, String>,
    /// Variable name → the workspace secret it is set from (names only, never values).
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub resources: Resources,
    pub priority: i32,
    pub max_retries: u32,
    pub timeout_s: Option<u64>,
    pub labels: BTreeMap<String, String>,
    pub tracking: JobTracking,
    /// How many times the job has been started (1 on its first run).
    pub attempt: u32,
    pub exit_code: Option<i32>,
    pub exit_reason: Option<ExitReason>,
    /// A human explanation of the last outcome ("timed out after 5 s", "retrying: exit 3").
    pub message: Option<String>,
    pub host: Option<String>,
    pub gpus: Vec<u32>,
    /// The pool the job runs in (`None` only for jobs from before pools existed: they run
    /// in the first pool).
    #[serde(default)]
    pub pool: Option<String>,
    /// The id the pool's engine gave the current attempt (a Slurm job id, a Ray submission
    /// id, a Kubernetes Job name); stored before the attempt counts as started, so a
    /// restarted server finds it again. `None` on this machine's own pool.
    #[serde(default)]
    pub engine_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

/// The label a job run again carries: the id of the job it repeats.
pub const RETRY_OF_LABEL: &str = "retry_of";

/// The label the study controller puts on each trial's job: the study's id.
pub const STUDY_LABEL: &str = "trainyard.study_id";

impl Job {
    /// The study whose trial this job runs, if any: such a job is its study's to run
    /// again (a promotion, a resumed trial), not a user's, since a copy would report into
    /// a trial that has already ended.
    pub fn study(&self) -> Option<&str> {
        self.labels.get(STUDY_LABEL).map(String::as_str)
    }

    /// What to submit to run this job again as a new job (the "retry" of a finished one):
    /// everything it was asked to do, under the same name, labelled with its id
    /// (`retry_of` does not count against [`MAX_LABELS`], so a job with all 64 can be run
    /// again).
    pub fn resubmission(&self) -> JobSubmission {
        let mut labels = self.labels.clone();
        labels.insert(RETRY_OF_LABEL.to_string(), self.id.clone());
        JobSubmission {
            name: Some(self.name.clone()),
            command: self.command.clone(),
            task: self.task.clone(),
            env: self.env.clone(),
            secrets: self.secrets.clone(),
            working_dir: self.working_dir.clone(),
            resources: self.resources.clone(),
            priority: self.priority,
            max_retries: self.max_retries,
            timeout_s: self.timeout_s,
            labels,
            tracking: self.tracking.clone(),
            pool: self.pool.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submission(command: &[&str]) -> JobSubmission {
        serde_json::from_value(serde_json::json!({ "command": command })).unwrap()
    }

    #[test]
    fn defaults_fill_in() {
        let s = submission(&["/bin/echo", "hi"]);
        assert_eq!(s.resources.cpus, 1.0);
        assert_eq!(s.max_retries, 0);
        assert_eq!(s.display_name(), "echo");
        s.validate().unwrap();
    }

    #[test]
    fn empty_command_names_the_field() {
        let err = submission(&[]).validate().unwrap_err();
        assert_eq!(err.field, "command");
        let err = submission(&[""]).validate().unwrap_err();
        assert_eq!(err.field, "command[0]");
    }

    #[test]
    fn bad_fields_are_named() {
        for bad in [0, MAX_TIMEOUT_S + 1, u64::MAX] {
            let mut s = submission(&["true"]);
            s.timeout_s = Some(bad);
            assert_eq!(s.validate().unwrap_err().field, "timeout_s");
        }
        let mut s = submission(&["true"]);
        s.name = Some("a\0b".into());
        assert_eq!(s.validate().unwrap_err().field, "name");
        let mut s = submission(&["true"]);
        s.labels.insert("k".into(), "v\0".into());
        assert_eq!(s.validate().unwrap_err().field, "labels.k");
        let mut s = submission(&["true"]);
        s.working_dir = Some("relative/dir".into());
        assert_eq!(s.validate().unwrap_err().field, "working_dir");
        for bad in ["", "GPU", "a b", "-x", "../x", &"p".repeat(64)] {
            let mut s = submission(&["true"]);
            s.pool = Some(bad.to_string());
            assert_eq!(s.validate().unwrap_err().field, "pool", "{bad:?}");
        }
        let mut s = submission(&["true"]);
        s.pool = Some("slurm-gpu_2".into());
        s.validate().unwrap();
        let mut s = submission(&["true"]);
        s.labels.insert("bad key".into(), "v".into());
        assert_eq!(s.validate().unwrap_err().field, "labels.bad key");
        let mut s = submission(&["true"]);
        s.env.insert("A=B".into(), "v".into());
        assert!(s.validate().unwrap_err().field.starts_with("env."));
    }

    #[test]
    fn a_job_runs_a_command_or_a_task_never_both() {
        let task: JobSubmission = serde_json::from_value(
            serde_json::json!({"task": {"kind": "train", "args": ["--config", "{}"]}}),
        )
        .unwrap();
        task.validate().unwrap();
        assert_eq!(task.display_name(), "train");
        let argv: Vec<_> = task.task.as_ref().unwrap().argv_after_program().collect();
        assert_eq!(argv, ["task", "train", "--config", "{}"]);
        let both: JobSubmission = serde_json::from_value(
            serde_json::json!({"command": ["true"], "task": {"kind": "eval"}}),
        )
        .unwrap();
        assert_eq!(both.validate().unwrap_err().field, "task");
        let nul: JobSubmission = serde_json::from_value(
            serde_json::json!({"task": {"kind": "eval", "args": ["a\u{0}"]}}),
        )
        .unwrap();
        assert_eq!(nul.validate().unwrap_err().field, "task.args[0]");
        // Only the platform's own tasks: never its supervisor or anything else.
        for kind in ["shim", "run", "../x"] {
            let r: Result<JobSubmission, _> =
                serde_json::from_value(serde_json::json!({"task": {"kind": kind}}));
            assert!(r.is_err(), "{kind}");
        }
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let r: Result<JobSubmission, _> =
            serde_json::from_value(serde_json::json!({"command": ["true"], "cpu": 2}));
        assert!(r.is_err());
    }

    #[test]
    fn states_round_trip() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
        assert!(JobState::Failed.is_terminal());
        assert!(!JobState::Queued.is_terminal());
    }
}
