//! The training file a user writes (`trainyard train FILE.toml`): which data, which model,
//! how to train and when to checkpoint. Every field has a default where one is sensible.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::spec::ModelSpec;
use crate::EngineError;

/// Parses TOML, or JSON when the text starts with `{`; the error says which document and
/// where (serde lists the accepted names for an unknown layer or option).
pub fn parse_document<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, EngineError> {
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| EngineError::Spec(format!("{what}: {e}")))
    } else {
        toml::from_str(text).map_err(|e| EngineError::Spec(format!("{what}: {e}")))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The registered model the result becomes a version of (also the run's name).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    pub data: DataConfig,
    pub model: ModelSpec,
    #[serde(default)]
    pub training: TrainingConfig,
    #[serde(default)]
    pub checkpoints: CheckpointConfig,
    /// The SPDX id of the licence the trained version is under (recorded as the
    /// `trainyard.license` tag; a run from another version inherits that one's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// Learn from a teacher's outputs as well as the labels (`trainyard compress
    /// TEACHER:VERSION --distill STUDENT.toml` sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<DistillConfig>,
}

/// Knowledge distillation: loss = α·cross-entropy(labels) + (1−α)·T²·KL(teacher‖student) at
/// temperature T (Hinton et al.), the teacher any servable model version run in-process
/// through a serving runtime on the same batches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    /// `NAME:VERSION` of the teacher.
    pub teacher: String,
    #[serde(default = "distill_alpha")]
    pub alpha: f64,
    #[serde(default = "distill_temperature")]
    pub temperature: f64,
}

/// A small weight on the labels, as Hinton et al. found best ("a considerably lower weight on
/// the second objective"): on the digits it is the setting that beat training alone on every
/// seed measured (`docs/compression.md`, `bench/compress/distill.sh`).
fn distill_alpha() -> f64 {
    0.1
}

fn distill_temperature() -> f64 {
    4.0
}

impl DistillConfig {
    pub fn validate(&self) -> Result<(), EngineError> {
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(EngineError::Spec(format!(
                "distill.alpha: {} is not in [0, 1]",
                self.alpha
            )));
        }
        if !(self.temperature >= 0.05 && self.temperature <= 100.0) {
            return Err(EngineError::Spec(format!(
                "distill.temperature: {} is not in [0.05, 100]",
                self.temperature
            )));
        }
        Ok(())
    }
}

impl TrainConfig {
    pub fn parse(text: &str) -> Result<Self, EngineError> {
        let mut config: Self = parse_document(text, "training file")?;
        // TOML has no null: an empty split name means "every row" / "no validation".
        for split in [&mut config.data.train_split, &mut config.data.eval_split] {
            if split.as_deref() == Some("") {
                *split = None;
            }
        }
        config.training.validate()?;
        config.checkpoints.validate()?;
        if let Some(d) = &config.distill {
            d.validate()?;
            if config.training.loss() != Loss::CrossEntropy {
                return Err(EngineError::Spec(
                    "distill: distillation needs a classification task (cross-entropy)".into(),
                ));
            }
        }
        if config.name.trim().is_empty() {
            return Err(EngineError::Spec("name: must not be empty".into()));
        }
        Ok(config)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `NAME` (its latest version) or `NAME:VERSION`.
    pub dataset: String,
    pub input: String,
    pub target: String,
    #[serde(default = "split_column")]
    pub split_column: String,
    /// Rows the model learns from; `None` = every row.
    #[serde(default = "train_split")]
    pub train_split: Option<String>,
    /// Rows evaluated after every epoch (and by early stopping); `None` = no validation.
    #[serde(default = "eval_split")]
    pub eval_split: Option<String>,
    /// Image decoding for a column of encoded images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageConfig>,
}

fn split_column() -> String {
    "split".into()
}
fn train_split() -> Option<String> {
    Some("train".into())
}
fn eval_split() -> Option<String> {
    Some("test".into())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    #[serde(default = "one")]
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Random crop after zero padding by this many pixels (training only).
    #[serde(default)]
    pub random_crop_padding: usize,
    #[serde(default)]
    pub horizontal_flip: bool,
}

fn one() -> usize {
    1
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Classification,
    Regression,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    CrossEntropy,
    Mse,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNan {
    /// End the run as failed.
    Fail,
    /// Drop the batch's update and go on.
    Skip,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    #[serde(default = "classification")]
    pub task: Task,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<Loss>,
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    #[serde(default = "batch_size")]
    pub batch_size: usize,
    #[serde(default = "epochs")]
    pub epochs: u64,
    #[serde(default)]
    pub seed: u64,
    /// Largest gradient norm; larger gradients are scaled down to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_clip: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStopping>,
    /// `cpu` or `cuda:N`.
    #[serde(default = "cpu")]
    pub device: String,
    #[serde(default = "fail")]
    pub on_nan: OnNan,
    /// Top-k accuracy reported besides accuracy.
    #[serde(default = "top_k")]
    pub top_k: usize,
    /// Every this many steps, log each weighted layer's weight and gradient L2 norms
    /// (`weight_norm/NN_kind`, `grad_norm/NN_kind`), which the web UI charts per layer; 0:
    /// never.
    #[serde(default = "norms_every")]
    pub norms_every: u64,
}

fn classification() -> Task {
    Task::Classification
}
fn batch_size() -> usize {
    64
}
fn epochs() -> u64 {
    10
}
fn cpu() -> String {
    "cpu".into()
}
fn fail() -> OnNan {
    OnNan::Fail
}
fn top_k() -> usize {
    3
}
fn norms_every() -> u64 {
    50
}

impl Default for TrainingConfig {
    fn default() -> Self {
        parse_document("", "training").expect("every training field has a default")
    }
}

impl TrainingConfig {
    pub fn loss(&self) -> Loss {
        self.loss.unwrap_or(match self.task {
            Task::Classification => Loss::CrossEntropy,
            Task::Regression => Loss::Mse,
        })
    }

    fn validate(&self) -> Result<(), EngineError> {
        let bad =
            |field: &str, why: String| Err(EngineError::Spec(format!("training.{field}: {why}")));
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1".into());
        }
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1".into());
        }
        if !(self.optimizer.lr > 0.0 && self.optimizer.lr.is_finite()) {
            return bad(
                "optimizer.lr",
                format!("must be a positive number, got {}", self.optimizer.lr),
            );
        }
        if let Some(c) = self.grad_clip {
            if c <= 0.0 || !c.is_finite() {
                return bad("grad_clip", format!("must be a positive number, got {c}"));
            }
        }
        match (self.task, self.loss()) {
            (Task::Classification, Loss::CrossEntropy) | (Task::Regression, Loss::Mse) => {}
            (task, loss) => {
                return bad("loss", format!("{loss:?} does not fit the {task:?} task"));
            }
        }
        crate::device::parse(&self.device).map(|_| ())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Sgd,
    Adam,
    Adamw,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    #[serde(default = "adam")]
    pub kind: OptimizerKind,
    #[serde(default = "lr")]
    pub lr: f64,
    /// SGD only.
    #[serde(default)]
    pub momentum: f64,
    #[serde(default)]
    pub nesterov: bool,
    #[serde(default)]
    pub weight_decay: f64,
}

fn adam() -> OptimizerKind {
    OptimizerKind::Adam
}
fn lr() -> f64 {
    1e-3
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        parse_document("", "optimizer").expect("every optimizer field has a default")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    Constant,
    /// Multiply by `gamma` every `step_size` steps.
    Step,
    /// Cosine from the base rate down to `min_lr` over the whole run.
    Cosine,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    #[serde(default = "constant")]
    pub kind: ScheduleKind,
    /// Linear warm-up from 0 over this many steps, before the schedule.
    #[serde(default)]
    pub warmup_steps: u64,
    #[serde(default = "step_size")]
    pub step_size: u64,
    #[serde(default = "gamma")]
    pub gamma: f64,
    #[serde(default)]
    pub min_lr: f64,
}

fn constant() -> ScheduleKind {
    ScheduleKind::Constant
}
fn step_size() -> u64 {
    1000
}
fn gamma() -> f64 {
    0.1
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        parse_document("", "schedule").expect("every schedule field has a default")
    }
}

impl ScheduleConfig {
    /// The learning rate for `step` (0-based) of `total` steps.
    pub fn lr(&self, base: f64, step: u64, total: u64) -> f64 {
        if step < self.warmup_steps {
            return base * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let after = step - self.warmup_steps;
        let span = total.saturating_sub(self.warmup_steps).max(1);
        match self.kind {
            ScheduleKind::Constant => base,
            ScheduleKind::Step => base * self.gamma.powi((after / self.step_size.max(1)) as i32),
            ScheduleKind::Cosine => {
                let t = (after as f64 / span as f64).min(1.0);
                self.min_lr + (base - self.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Min,
    Max,
}

impl Mode {
    pub fn better(self, candidate: f64, best: f64) -> bool {
        match self {
            Mode::Min => candidate < best,
            Mode::Max => candidate > best,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// An epoch metric, e.g. `val_loss` or `val_accuracy`.
    pub metric: String,
    #[serde(default = "patience")]
    pub patience: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

fn patience() -> u64 {
    5
}

/// `*_loss`, `*mse`, `*mae` are minimised, everything else maximised.
pub fn default_mode(metric: &str) -> Mode {
    if metric.ends_with("loss") || metric.ends_with("mse") || metric.ends_with("mae") {
        Mode::Min
    } else {
        Mode::Max
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Checkpoint every N epochs (0 = off).
    #[serde(default = "one_u64")]
    pub every_epochs: u64,
    /// Checkpoint every N steps too (0 = off).
    #[serde(default)]
    pub every_steps: u64,
    /// How many of the most recent checkpoints to keep.
    #[serde(default = "keep_last")]
    pub keep_last: usize,
    /// Also keep the best checkpoint by this epoch metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_metric: Option<String>,
}

fn one_u64() -> u64 {
    1
}
fn keep_last() -> usize {
    2
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        parse_document("", "checkpoints").expect("every checkpoint field has a default")
    }
}

impl CheckpointConfig {
    fn validate(&self) -> Result<(), EngineError> {
        if self.keep_last == 0 {
            return Err(EngineError::Spec(
                "checkpoints.keep_last: must be at least 1 (resume needs the latest)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_file_gets_defaults() {
        let c = TrainConfig::parse(
            "name = \"m\"\n[data]\ndataset = \"d\"\ninput = \"x\"\ntarget = \"y\"\n[model]\narchitecture = \"mlp\"\nhidden = [8]\n",
        )
        .unwrap();
        assert_eq!(c.training.batch_size, 64);
        assert_eq!(c.training.loss(), Loss::CrossEntropy);
        assert_eq!(c.data.train_split.as_deref(), Some("train"));
        assert_eq!(c.checkpoints.keep_last, 2);
    }

    #[test]
    fn bad_values_name_the_field() {
        let base = "name = \"m\"\n[data]\ndataset = \"d\"\ninput = \"x\"\ntarget = \"y\"\n[model]\narchitecture = \"mlp\"\nhidden = [8]\n";
        for (extra, field) in [
            ("[training]\nbatch_size = 0\n", "training.batch_size"),
            ("[training]\ndevice = \"tpu\"\n", "training.device"),
            ("[training.optimizer]\nlr = -1.0\n", "training.optimizer.lr"),
            (
                "[training]\ntask = \"regression\"\nloss = \"cross_entropy\"\n",
                "training.loss",
            ),
            ("[training.optimizer]\nkind = \"lbfgs\"\n", "lbfgs"),
        ] {
            let err = TrainConfig::parse(&format!("{base}{extra}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{extra}: {err}");
        }
    }

    #[test]
    fn schedules() {
        let mut s = ScheduleConfig::default();
        assert_eq!(s.lr(0.1, 50, 100), 0.1);
        s.warmup_steps = 10;
        assert!((s.lr(0.1, 0, 100) - 0.01).abs() < 1e-12);
        s.kind = ScheduleKind::Cosine;
        assert!((s.lr(0.1, 10, 110) - 0.1).abs() < 1e-12);
        assert!(s.lr(0.1, 109, 110) < 0.001);
        s.kind = ScheduleKind::Step;
        s.warmup_steps = 0;
        s.step_size = 10;
        assert!((s.lr(1.0, 25, 100) - 0.01).abs() < 1e-12);
    }
}
