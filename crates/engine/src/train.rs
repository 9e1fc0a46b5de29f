//! The training loop. Everything that decides what a step does — the data order, the
//! dropout masks, the learning rate — is a function of (seed, epoch, step), and the
//! checkpoint holds the rest (weights, optimizer moments, counters, the epoch's running
//! sums), so a run resumed from any checkpoint takes exactly the steps the uninterrupted
//! run would have taken.

use burn::module::Module;
use burn::nn::loss::{CrossEntropyLossConfig, MseLoss, Reduction};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use trainyard_data::{Batch, DataError, Targets};

use crate::checkpoint::Checkpoint;
use crate::config::{
    default_mode, CheckpointConfig, Loss, OnNan, OptimizerKind, Task, TrainingConfig,
};
use crate::metrics::{Classification, Regression, Report};
use crate::network::{self, Network};
use crate::spec::ResolvedSpec;
use crate::EngineError;

pub type Batches<'a> = Box<dyn Iterator<Item = Result<Batch, DataError>> + 'a>;

/// Where batches come from: the engine does not know about stores or HTTP.
pub trait TrainData {
    /// One epoch of training batches in the order fixed by (seed, epoch), from batch `start`.
    fn train(&self, epoch: u64, start: u64) -> Result<Batches<'_>, EngineError>;
    /// How many batches an epoch has.
    fn batches_per_epoch(&self) -> Result<u64, EngineError>;
    /// The evaluation split, when there is one.
    fn eval(&self) -> Result<Option<Batches<'_>>, EngineError>;
}

/// What the loop reports as it goes; the caller logs, uploads or prints.
pub trait Observer {
    fn step(&mut self, step: u64, epoch: u64, metrics: &[(String, f64)])
        -> Result<(), EngineError>;
    fn epoch(
        &mut self,
        epoch: u64,
        step: u64,
        metrics: &[(String, f64)],
    ) -> Result<(), EngineError>;
    /// A checkpoint to keep; `best` when it is the best so far by the configured metric.
    fn checkpoint(&mut self, checkpoint: &Checkpoint, best: bool) -> Result<(), EngineError>;
}

/// Counters and running sums a checkpoint carries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Steps taken (optimizer updates and skipped batches).
    pub step: u64,
    /// Epochs finished.
    pub epoch: u64,
    /// Batches of the current epoch already consumed.
    pub batch: u64,
    /// Best value of `checkpoints.best_metric` so far.
    pub best: Option<f64>,
    /// Best value of `training.early_stopping.metric` so far.
    pub early_stopping_best: Option<f64>,
    pub epochs_without_improvement: u64,
    pub epoch_loss_sum: f64,
    pub epoch_rows: u64,
    pub epoch_correct: u64,
    pub skipped_batches: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    pub state: TrainState,
    pub stopped_early: bool,
    /// The final evaluation (the eval split, else the training split).
    pub report: Option<Report>,
    /// The last epoch's metrics.
    pub last_epoch: Vec<(String, f64)>,
}

/// The task's shape: how many classes (classification) or outputs (regression).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub task: Task,
    pub outputs: usize,
}

pub struct Trainer<'a> {
    pub config: &'a TrainingConfig,
    pub checkpoints: &'a CheckpointConfig,
    pub spec: &'a ResolvedSpec,
    pub head: Head,
    /// Weights (burnpack) to start from instead of a fresh initialisation: a run that
    /// starts from a registered version ([`initial_weights`]). A checkpoint to resume from
    /// takes precedence, as it holds everything.
    pub initial: Option<&'a [u8]>,
    /// Top-level layers kept as they are: no gradients, and their batch norms and dropouts
    /// in inference mode.
    pub frozen: &'a [usize],
    /// A teacher whose outputs the loss also follows (classification only).
    pub teacher: Option<Distillation<'a>>,
}

/// A model that gives logits for a batch: the teacher of a distillation.
pub trait Teacher: Send + Sync {
    /// Logits, `rows × classes`, row-major.
    fn logits(&self, batch: &Batch) -> Result<Vec<f32>, EngineError>;
}

/// A teacher and how much to follow it.
pub struct Distillation<'a> {
    pub teacher: &'a dyn Teacher,
    /// Weight of the labels' cross-entropy; 1 − alpha goes to the teacher's.
    pub alpha: f64,
    pub temperature: f64,
}

/// The teacher's softened probabilities and their logarithms at `temperature`, computed
/// stably in f64 (they are constants of the step: no gradient flows into the teacher).
pub fn soft_targets(logits: &[f32], classes: usize, temperature: f64) -> (Vec<f32>, Vec<f32>) {
    let mut p = Vec::with_capacity(logits.len());
    let mut log_p = Vec::with_capacity(logits.len());
    for row in logits.chunks(classes) {
        let scaled: Vec<f64> = row.iter().map(|v| f64::from(*v) / temperature).collect();
        let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let log_sum = scaled.iter().map(|v| (v - max).exp()).sum::<f64>().ln() + max;
        for v in scaled {
            let lp = v - log_sum;
            log_p.push(lp as f32);
            p.push(lp.exp() as f32);
        }
    }
    (p, log_p)
}

impl Trainer<'_> {
    /// Trains from scratch, or from `resume`, to the configured number of epochs (or early
    /// stop), and returns the trained weights with the outcome.
    pub fn run(
        &self,
        data: &dyn TrainData,
        resume: Option<Checkpoint>,
        observer: &mut dyn Observer,
    ) -> Result<(Network, Outcome), EngineError> {
        let device = crate::device::parse(&self.config.device)?.device()?;
        let train_device = device.clone().autodiff();
        train_device.seed(self.config.seed);
        let mut net = Network::new(self.spec, &train_device);
        let mut optim = optimizer(self.config);
        let mut state = TrainState::default();
        if let Some(ck) = resume {
            net = net.load_record(
                ModuleRecord::from_bytes(Bytes::from_bytes_vec(ck.model))
                    .map_err(EngineError::record)?,
            );
            optim = optim
                .from_bytes(Bytes::from_bytes_vec(ck.optimizer))
                .map_err(EngineError::record)?;
            state = ck.state;
        } else if let Some(initial) = self.initial {
            net = net.load_record(
                ModuleRecord::from_bytes(Bytes::from_bytes_vec(initial.to_vec()))
                    .map_err(EngineError::record)?,
            );
        }
        for &i in self.frozen {
            let layer = net.layers.get(i).ok_or_else(|| {
                EngineError::Spec(format!("model.freeze: the model has no layers[{i}]"))
            })?;
            net.layers[i] = layer.clone().freeze();
        }
        let per_epoch = data.batches_per_epoch()?;
        if per_epoch == 0 {
            return Err(EngineError::Data(
                "the training split has no rows (check data.train_split)".into(),
            ));
        }
        let total = per_epoch * self.config.epochs;
        let loss_fn = CrossEntropyLossConfig::new().init(&train_device);
        let mut last_epoch = Vec::new();
        // The last epoch's evaluation is the final report: the weights have not changed since.
        let mut last_report = None;
        let mut stopped_early = false;
        let best_metric = self.checkpoints.best_metric.clone();

        while state.epoch < self.config.epochs {
            for batch in data.train(state.epoch, state.batch)? {
                let batch = batch.map_err(EngineError::from)?;
                // Dropout and any other randomness in the step depend on the step alone.
                train_device.seed(mix(self.config.seed, state.step));
                let rows = batch.rows;
                let soft = match &self.teacher {
                    Some(d) => {
                        let t = d.teacher.logits(&batch)?;
                        if t.len() != rows * self.head.outputs || t.iter().any(|v| !v.is_finite()) {
                            return Err(EngineError::Data(format!(
                                "distill.teacher: gave {} finite values for {rows} rows of {} classes",
                                t.len(),
                                self.head.outputs
                            )));
                        }
                        Some(soft_targets(&t, self.head.outputs, d.temperature))
                    }
                    None => None,
                };
                let x = network::batch(batch.inputs, rows, &batch.sample_shape, &train_device);
                let logits = net.forward(x);
                let (loss, correct) = match (&batch.targets, self.config.loss()) {
                    (Some(Targets::Classes(classes)), Loss::CrossEntropy) => {
                        check_classes(classes, self.head.outputs)?;
                        let t = Tensor::<1, Int>::from_data(
                            TensorData::new(classes.clone(), [rows]),
                            &train_device,
                        );
                        let predicted = logits.clone().argmax(1).reshape([rows]);
                        let correct = predicted.equal(t.clone()).int().sum();
                        let hard = loss_fn.forward(logits.clone(), t);
                        let loss = match (&self.teacher, soft) {
                            (Some(d), Some((p, log_p))) => {
                                let shape = [rows, self.head.outputs];
                                let p = Tensor::<2>::from_data(
                                    TensorData::new(p, shape),
                                    &train_device,
                                );
                                let log_p = Tensor::<2>::from_data(
                                    TensorData::new(log_p, shape),
                                    &train_device,
                                );
                                let log_q = burn::tensor::activation::log_softmax(
                                    logits / d.temperature,
                                    1,
                                );
                                // KL(p‖q) averaged over rows, scaled by T² so its gradients
                                // keep their size as T changes.
                                let kl = (p * (log_p - log_q)).sum().div_scalar(rows as f64);
                                hard.mul_scalar(d.alpha)
                                    + kl.mul_scalar((1.0 - d.alpha) * d.temperature * d.temperature)
                            }
                            _ => hard,
                        };
                        (loss, Some(correct))
                    }
                    (Some(Targets::Values(values)), Loss::Mse) => {
                        let t = Tensor::<2>::from_data(
                            TensorData::new(values.clone(), [rows, self.head.outputs]),
                            &train_device,
                        );
                        (MseLoss::new().forward(logits, t, Reduction::Mean), None)
                    }
                    (targets, loss) => {
                        return Err(EngineError::Data(format!(
                            "data.target: a {loss:?} loss needs {} targets, the column gives {}",
                            match loss {
                                Loss::CrossEntropy => "class (integer)",
                                Loss::Mse => "numeric",
                            },
                            match targets {
                                Some(Targets::Classes(_)) => "integer classes",
                                Some(Targets::Values(_)) => "float values",
                                None => "none",
                            }
                        )))
                    }
                };
                let loss_value = loss.clone().into_scalar::<f32>() as f64;
                state.step += 1;
                state.batch += 1;
                if !loss_value.is_finite() {
                    match self.config.on_nan {
                        OnNan::Fail => {
                            return Err(EngineError::NonFinite {
                                step: state.step,
                                value: loss_value,
                            })
                        }
                        OnNan::Skip => {
                            state.skipped_batches += 1;
                            continue;
                        }
                    }
                }
                let lr = self
                    .config
                    .schedule
                    .lr(self.config.optimizer.lr, state.step - 1, total);
                let gradients = loss.backward();
                let every = self.config.norms_every;
                let norms = (every > 0 && (state.step == 1 || state.step % every == 0))
                    .then(|| crate::norms::layer_norms(&net, Some(&gradients)));
                let grads = GradientsParams::from_grads(gradients, &net);
                net = optim.step(lr, net, grads);
                state.epoch_loss_sum += loss_value * rows as f64;
                state.epoch_rows += rows as u64;
                if let Some(c) = correct {
                    state.epoch_correct += c.into_scalar::<i64>() as u64;
                }
                let mut step_metrics =
                    vec![("train_loss_step".into(), loss_value), ("lr".into(), lr)];
                if let Some(norms) = &norms {
                    step_metrics.extend(crate::norms::metrics(norms));
                }
                observer.step(state.step, state.epoch, &step_metrics)?;
                if self.checkpoints.every_steps > 0
                    && state.step % self.checkpoints.every_steps == 0
                    && state.batch < per_epoch
                {
                    observer.checkpoint(&checkpoint(&net, &optim, &state)?, false)?;
                }
            }
            state.epoch += 1;
            state.batch = 0;
            let mut metrics = vec![(
                "train_loss".to_string(),
                state.epoch_loss_sum / state.epoch_rows.max(1) as f64,
            )];
            if self.head.task == Task::Classification {
                metrics.push((
                    "train_accuracy".into(),
                    state.epoch_correct as f64 / state.epoch_rows.max(1) as f64,
                ));
            }
            if let Some(eval) = data.eval()? {
                let (report, loss) = evaluate(&net.valid(), eval, self.head, self.config.top_k)?;
                metrics.push(("val_loss".into(), loss));
                metrics.extend(report.scalars("val_"));
                last_report = Some(report);
            }
            state.epoch_loss_sum = 0.0;
            state.epoch_rows = 0;
            state.epoch_correct = 0;
            observer.epoch(state.epoch, state.step, &metrics)?;

            let lookup = |name: &str| metrics.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
            let mut best = false;
            if let Some(name) = &best_metric {
                let value = lookup(name)
                    .ok_or_else(|| unknown_metric("checkpoints.best_metric", name, &metrics))?;
                if state
                    .best
                    .is_none_or(|b| default_mode(name).better(value, b))
                {
                    state.best = Some(value);
                    best = true;
                }
            }
            if let Some(es) = &self.config.early_stopping {
                let value = lookup(&es.metric).ok_or_else(|| {
                    unknown_metric("training.early_stopping.metric", &es.metric, &metrics)
                })?;
                let mode = es.mode.unwrap_or_else(|| default_mode(&es.metric));
                let improved = state
                    .early_stopping_best
                    .is_none_or(|b| mode.better(value, b));
                if improved {
                    state.early_stopping_best = Some(value);
                    state.epochs_without_improvement = 0;
                } else {
                    state.epochs_without_improvement += 1;
                    if state.epochs_without_improvement > es.patience {
                        stopped_early = true;
                    }
                }
            }
            let last = state.epoch == self.config.epochs || stopped_early;
            let every = self.checkpoints.every_epochs;
            if last || best || (every > 0 && state.epoch % every == 0) {
                observer.checkpoint(&checkpoint(&net, &optim, &state)?, best)?;
            }
            last_epoch = metrics;
            if stopped_early {
                break;
            }
        }
        let valid = net.valid();
        // Only a run resumed from its final checkpoint has no epoch left to have evaluated.
        let report = match (last_report, data.eval()?) {
            (Some(report), _) => Some(report),
            (None, Some(eval)) => Some(evaluate(&valid, eval, self.head, self.config.top_k)?.0),
            (None, None) => None,
        };
        Ok((
            valid,
            Outcome {
                state,
                stopped_early,
                report,
                last_epoch,
            },
        ))
    }
}

fn unknown_metric(field: &str, name: &str, metrics: &[(String, f64)]) -> EngineError {
    let known: Vec<&str> = metrics.iter().map(|(k, _)| k.as_str()).collect();
    EngineError::Spec(format!(
        "{field}: no epoch metric `{name}`; this run reports {}",
        known.join(", ")
    ))
}

fn check_classes(classes: &[i64], outputs: usize) -> Result<(), EngineError> {
    if let Some(bad) = classes.iter().find(|&&c| c < 0 || c as usize >= outputs) {
        return Err(EngineError::Data(format!(
            "data.target: class {bad} is outside the model's {outputs} outputs"
        )));
    }
    Ok(())
}

fn checkpoint(
    net: &Network,
    optim: &ModuleOptimizer,
    state: &TrainState,
) -> Result<Checkpoint, EngineError> {
    Ok(Checkpoint {
        state: state.clone(),
        model: weights(net)?,
        optimizer: optim.into_bytes().map_err(EngineError::record)?.to_vec(),
    })
}

fn optimizer(config: &TrainingConfig) -> ModuleOptimizer {
    let o = &config.optimizer;
    let clip = config
        .grad_clip
        .map(|c| GradientClippingConfig::Norm(c as f32));
    let decay = (o.weight_decay > 0.0).then(|| WeightDecayConfig::new(o.weight_decay as f32));
    match o.kind {
        OptimizerKind::Sgd => SgdConfig::new()
            .with_momentum((o.momentum > 0.0).then(|| {
                MomentumConfig::new()
                    .with_momentum(o.momentum)
                    .with_nesterov(o.nesterov)
            }))
            .with_weight_decay(decay)
            .with_gradient_clipping(clip)
            .init(),
        OptimizerKind::Adam => AdamConfig::new()
            .with_weight_decay(decay)
            .with_grad_clipping(clip)
            .init(),
        OptimizerKind::Adamw => AdamWConfig::new()
            .with_weight_decay(o.weight_decay as f32)
            .with_grad_clipping(clip)
            .init(),
    }
}

/// Runs a network without gradients over `batches`; returns the report and the mean loss.
pub fn evaluate(
    net: &Network,
    batches: Batches<'_>,
    head: Head,
    top_k: usize,
) -> Result<(Report, f64), EngineError> {
    let mut classification = Classification::new(head.outputs, top_k);
    let mut regression = Regression::default();
    for batch in batches {
        let batch = batch.map_err(EngineError::from)?;
        let outputs = predict(net, &batch)?;
        match (&batch.targets, head.task) {
            (Some(Targets::Classes(c)), Task::Classification) => {
                check_classes(c, head.outputs)?;
                classification.add_rows(&outputs, c, &batch.inputs, &batch.sample_shape)
            }
            (Some(Targets::Values(v)), Task::Regression) => regression.add(&outputs, v),
            _ => {
                return Err(EngineError::Data(
                    "data.target: the targets do not fit the model's task".into(),
                ))
            }
        }
    }
    Ok(match head.task {
        Task::Classification => {
            let report = classification.report();
            let loss = report.log_loss;
            (Report::Classification(report), loss)
        }
        Task::Regression => {
            let report = regression.report();
            let loss = report.mse;
            (Report::Regression(report), loss)
        }
    })
}

/// The network's outputs for one batch, `rows × outputs` values.
pub fn predict(net: &Network, batch: &Batch) -> Result<Vec<f32>, EngineError> {
    predict_prefix(net, net.layers.len(), batch)
}

/// What the first `layers` layers give for `batch`, flattened per row.
pub fn predict_prefix(
    net: &Network,
    layers: usize,
    batch: &Batch,
) -> Result<Vec<f32>, EngineError> {
    let device = first_device(net);
    let x = network::batch(
        batch.inputs.clone(),
        batch.rows,
        &batch.sample_shape,
        &device,
    );
    net.forward_prefix(layers, x)
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| EngineError::Data(format!("cannot read the network's outputs: {e:?}")))
}

fn first_device(net: &Network) -> Device {
    net.devices()
        .into_iter()
        .next()
        .unwrap_or_else(Device::flex)
}

/// Builds a network from a spec and saved weights on `device`, for evaluation and prediction.
pub fn load(spec: &ResolvedSpec, weights: &[u8], device: &Device) -> Result<Network, EngineError> {
    let net = Network::new(spec, device);
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(weights.to_vec()))
        .map_err(EngineError::record)?;
    Ok(net.load_record(record).valid())
}

/// The starting weights of a run on `spec` that starts from a version trained on `source`
/// (`source_weights`): every layer's weights carried over, except the replaced `head`,
/// which starts as a fresh network seeded with `seed` would.
pub fn initial_weights(
    source: &ResolvedSpec,
    source_weights: &[u8],
    spec: &ResolvedSpec,
    head: Option<usize>,
    seed: u64,
) -> Result<Vec<u8>, EngineError> {
    if source.layers.len() != spec.layers.len() {
        return Err(EngineError::Spec(format!(
            "model.from: the source has {} layers, the new model {}",
            source.layers.len(),
            spec.layers.len()
        )));
    }
    let cpu = crate::device::DeviceSpec::Cpu.device()?;
    cpu.seed(seed);
    let mut net = Network::new(spec, &cpu);
    let from = load(source, source_weights, &cpu)?;
    for (i, layer) in from.layers.into_iter().enumerate() {
        if Some(i) != head {
            net.layers[i] = layer;
        }
    }
    weights(&net)
}

/// Learnable parameters of a network (weights, biases, norm scales and shifts; not the
/// running statistics), as PyTorch counts them.
pub fn parameters(net: &Network) -> usize {
    // burn counts every float tensor of the module, batch norm's running mean and variance
    // included; PyTorch's `parameters()` does not hold them.
    fn running_statistics(layers: &[network::Layer]) -> usize {
        layers
            .iter()
            .map(|l| match l {
                network::Layer::BatchNorm(b) => 2 * b.gamma.dims()[0],
                network::Layer::Residual(r) => running_statistics(&r.layers),
                _ => 0,
            })
            .sum()
    }
    net.num_params() - running_statistics(&net.layers)
}

/// The weights of a network, in burn's burnpack format.
pub fn weights(net: &Network) -> Result<Vec<u8>, EngineError> {
    Ok(net
        .clone()
        .into_record()
        .into_bytes()
        .map_err(EngineError::record)?
        .to_vec())
}

/// Mixes the run's seed with a counter (SplitMix64 finaliser), so neighbouring steps get
/// unrelated streams.
pub fn mix(seed: u64, counter: u64) -> u64 {
    let mut z = seed ^ counter.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::soft_targets;

    #[test]
    fn soft_targets_are_a_softened_distribution_per_row() {
        let logits = [2.0f32, 1.0, 0.0, 1000.0, 0.0, -1000.0];
        for t in [1.0, 4.0] {
            let (p, log_p) = soft_targets(&logits, 3, t);
            for row in p.chunks(3) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{p:?}");
            }
            for (a, b) in p.iter().zip(&log_p) {
                assert!((a.ln() - b).abs() < 1e-4 || *a == 0.0, "{p:?} {log_p:?}");
                assert!(b.is_finite(), "huge logits stay finite: {log_p:?}");
            }
        }
        // A higher temperature flattens the distribution.
        let (sharp, _) = soft_targets(&logits[..3], 3, 1.0);
        let (soft, _) = soft_targets(&logits[..3], 3, 4.0);
        assert!(soft[0] < sharp[0] && soft[2] > sharp[2]);
    }
}
