//! `trainyard task train`: what a training job runs. Reads the dataset from the server,
//! trains with the engine, logs metrics and checkpoints into the job's run, and registers
//! the result as a model version.

use std::sync::Arc;
use std::time::Instant;

use trainyard_client::datasets::{self as remote, RemoteShards};
use trainyard_client::runs::{Point, RunClient};
use trainyard_core::dataset::DatasetVersionInfo;
use trainyard_data::Manifest;
use trainyard_engine::checkpoint::Checkpoint;
use trainyard_engine::config::TrainConfig;
use trainyard_engine::dataset::{self, DatasetData};
use trainyard_engine::model::{ModelCard, CARD_FILE, WEIGHTS_FILE};
use trainyard_engine::spec::ResolvedSpec;
use trainyard_engine::train::{self, Head, Observer, Trainer};
use trainyard_engine::EngineError;

use crate::evaluate::{fetch_model, ModelFiles};
use crate::export::export_onnx;
use crate::import::check_license;
use crate::report::print_report;
use crate::TaskError;

/// Folder of a run's checkpoints; files are `step-<9 digits>.ckpt` and `best.ckpt`.
pub const CHECKPOINTS: &str = "checkpoints";
/// The model version's ONNX file, beside the weights and the card.
pub const ONNX_FILE: &str = "model.onnx";
/// The training file as the job ran it, so `--resume` can run it again.
pub const CONFIG_ARTIFACT: &str = "trainyard/train.json";

pub struct TrainTask {
    /// The training file as JSON, with the dataset pinned to a version.
    pub config: String,
    /// The run whose latest checkpoint to continue from.
    pub resume_from: Option<String>,
    /// Register the result as a version of the model the file names (a study's trials do
    /// not: only the best one is registered, when asked).
    pub register: bool,
}

/// A training file checked against a dataset version: the model spec resolved for its
/// input shape and classes, and the head its target gives.
pub struct Resolved {
    pub manifest: Manifest,
    pub spec: ResolvedSpec,
    pub head: Head,
    /// The layer whose weights start fresh in a run from another version (its replaced
    /// head), when there is one.
    pub replaced_head: Option<usize>,
    /// Top-level layers kept as they are.
    pub frozen: Vec<usize>,
}

/// The registered version a training file starts from (`[model] from`).
pub struct Source {
    /// `NAME:VERSION`, pinned.
    pub reference: String,
    pub model: ModelFiles,
    /// Its `trainyard.license` tag, inherited by what is trained from it.
    pub license: Option<String>,
}

/// Fetches the version `[model] from` names, if it names one; a version that does not
/// exist or that the engine did not train is refused naming the field.
pub async fn fetch_source(
    client: &trainyard_client::Client,
    config: &TrainConfig,
) -> Result<Option<Source>, TaskError> {
    let Some(from) = &config.model.from else {
        return Ok(None);
    };
    let in_field = |e: TaskError| e.context(format!("model.from `{from}`"));
    let model = fetch_model(client, from).await.map_err(in_field)?;
    let reference = format!("{}:{}", model.name, model.version);
    let license =
        trainyard_client::runs::version_tag(client, &model.name, &model.version, LICENSE_TAG)
            .await
            .map_err(|e| in_field(e.into()))?
            .filter(|l| l != UNKNOWN_LICENSE);
    Ok(Some(Source {
        reference,
        model,
        license,
    }))
}

/// The version tag holding an SPDX licence id, and its value when none was given.
pub const LICENSE_TAG: &str = "trainyard.license";
pub const UNKNOWN_LICENSE: &str = "unknown";

/// The one check of a training file against the dataset version it names: the input and
/// target columns exist, the model's layers fit the input shape and the class count, and a
/// named split has a split column. `trainyard train` runs it before a job exists, and the
/// job again on the version it was pinned to.
pub fn check_against(
    config: &TrainConfig,
    version: &DatasetVersionInfo,
    source: Option<&Source>,
) -> Result<Resolved, TaskError> {
    let manifest = remote::manifest(version)?;
    let input_shape =
        dataset::sample_shape(&manifest, &config.data.input, config.data.image.as_ref())?;
    let head = dataset::head(&manifest, &config.data.target, config.training.task)?;
    let (spec, replaced_head) = match (source, &config.model.from) {
        (Some(source), Some(_)) => config.model.resolve_from(
            &source.model.card.spec,
            &input_shape,
            head.outputs,
            "model",
        )?,
        (None, None) => (
            config
                .model
                .resolve(Some(&input_shape), Some(head.outputs), "model")?,
            None,
        ),
        _ => {
            return Err(TaskError::Invalid(
                "model.from: the source version was not fetched".into(),
            ))
        }
    };
    let frozen = config.model.frozen_layers(&spec, "model")?;
    if let Some(license) = &config.license {
        check_license(Some(license), "license")?;
    }
    if manifest.field(&config.data.split_column).is_none()
        && (config.data.train_split.is_some() || config.data.eval_split.is_some())
    {
        return Err(TaskError::Invalid(format!(
            "data.split_column: dataset {} has no `{}` column; add one with a `split` step (`trainyard dataset process`), or set train_split = \"\" (every row) and eval_split = \"\" (no validation)",
            version.reference(),
            config.data.split_column
        )));
    }
    Ok(Resolved {
        manifest,
        spec,
        head,
        replaced_head,
        frozen,
    })
}

pub async fn run(task: TrainTask) -> Result<i32, TaskError> {
    let config = TrainConfig::parse(&task.config)?;
    let run = RunClient::from_env().await?;
    let handle = tokio::runtime::Handle::current();

    let version = remote::fetch_version(&run.client, &config.data.dataset).await?;
    let source = fetch_source(&run.client, &config).await?;
    let Resolved {
        manifest,
        spec,
        head,
        replaced_head,
        frozen,
    } = check_against(&config, &version, source.as_ref())?;

    run.upload(CONFIG_ARTIFACT, task.config.clone().into_bytes())
        .await?;
    run.log_params(&params(&config, &version.reference()))
        .await?;
    let resume = match &task.resume_from {
        Some(from) => {
            let previous = RunClient::for_run(run.client.clone(), from.clone()).await?;
            let ck = latest_checkpoint(&previous).await?;
            println!(
                "resuming run {from} from step {} (epoch {}, batch {})",
                ck.state.step, ck.state.epoch, ck.state.batch
            );
            run.set_tag("trainyard.resumed_from", from).await?;
            Some(ck)
        }
        None => None,
    };

    // A fresh run from another version starts from its weights (a resumed one from its
    // checkpoint, which has them all).
    let initial = match (&source, &resume) {
        (Some(source), None) => {
            println!(
                "starting from {}{}",
                source.reference,
                match replaced_head {
                    Some(i) => format!(
                        " with a new head at layers[{i}] ({:?} outputs)",
                        spec.output
                    ),
                    None => String::new(),
                }
            );
            Some(train::initial_weights(
                &source.model.card.spec,
                &source.model.weights,
                &spec,
                replaced_head,
                config.training.seed,
            )?)
        }
        _ => None,
    };
    // A distillation's teacher, loaded and checked against the student before training.
    let teacher = match &config.distill {
        Some(d) => {
            let t = crate::distill::OnnxTeacher::load(
                &run.client,
                &d.teacher,
                &spec.input,
                head.outputs,
            )
            .await?;
            println!(
                "distilling from {} (alpha {}, temperature {})",
                t.reference, d.alpha, d.temperature
            );
            Some(t)
        }
        None => None,
    };
    if !frozen.is_empty() {
        println!(
            "frozen: {}",
            frozen
                .iter()
                .map(|i| format!("layers[{i}]"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let shards = Arc::new(RemoteShards::new(
        run.client.clone(),
        Some(remote::cache_dir()),
    )?);
    let data = DatasetData {
        manifest,
        source: shards,
        data: config.data.clone(),
        batch_size: config.training.batch_size,
        seed: config.training.seed,
    };
    let card = ModelCard {
        format: 1,
        spec: spec.clone(),
        head,
        input: config.data.input.clone(),
        target: config.data.target.clone(),
        image: config.data.image.clone(),
        dataset: version.reference(),
        from: source.as_ref().map(|s| s.reference.clone()),
    };
    println!(
        "training {} on {} ({} rows): {} → {:?}, {} epochs, batch {}, device {}",
        config.name,
        version.reference(),
        version.rows,
        format_shape(&spec.input),
        spec.output,
        config.training.epochs,
        config.training.batch_size,
        config.training.device
    );

    // The engine is synchronous (burn's kernels use their own threads): run it off the
    // async runtime; the observer blocks on uploads through the handle.
    let trained = {
        let run = run.clone();
        let config = config.clone();
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || {
            let mut observer = RunObserver {
                run,
                handle,
                pending: Vec::new(),
                kept: Vec::new(),
                keep_last: config.checkpoints.keep_last,
                epochs: config.training.epochs,
                started: Instant::now(),
            };
            let trainer = Trainer {
                config: &config.training,
                checkpoints: &config.checkpoints,
                spec: &spec,
                head,
                initial: initial.as_deref(),
                frozen: &frozen,
                teacher: teacher.as_ref().zip(config.distill.as_ref()).map(|(t, d)| {
                    trainyard_engine::train::Distillation {
                        teacher: t,
                        alpha: d.alpha,
                        temperature: d.temperature,
                    }
                }),
            };
            let result = trainer.run(&data, resume, &mut observer);
            let flushed = observer.flush();
            let (net, outcome) = result?;
            flushed?;
            let weights = train::weights(&net)?;
            Ok::<_, TaskError>((weights, train::parameters(&net), outcome))
        })
        .await?
    };
    let (weights, parameters, outcome) = match trained {
        Ok(t) => t,
        Err(e) => {
            if let Some(EngineError::NonFinite { .. }) = e.engine() {
                let _ = run.set_tag("trainyard.failure", &e.to_string()).await;
            }
            return Err(e);
        }
    };
    if outcome.stopped_early {
        println!("stopped early after epoch {}", outcome.state.epoch);
    }

    // The weights are stored before the export runs: a runtime that takes the whole process
    // down in it (a native abort, which no unwind catches) still leaves them in the run.
    run.upload(&format!("model/{WEIGHTS_FILE}"), weights.clone())
        .await?;
    run.upload(
        &format!("model/{CARD_FILE}"),
        serde_json::to_vec_pretty(&card)?,
    )
    .await?;
    // The ONNX file is made from the weights as inference reads them back (batch norm on
    // its running statistics), on the CPU. It is optional: whatever happens in it (a
    // runtime's panic included) costs the version its ONNX file, never the trained weights.
    let exported = {
        let (spec, name) = (spec.clone(), config.name.clone());
        tokio::task::spawn_blocking(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                trainyard_engine::device::DeviceSpec::Cpu
                    .device()
                    .and_then(|cpu| train::load(&spec, &weights, &cpu))
                    .map_err(TaskError::from)
                    .and_then(|inference| export_onnx(&inference, &spec, &name))
            }))
            .unwrap_or_else(|panic| {
                Err(TaskError::Invalid(format!(
                    "ONNX export failed unexpectedly: {}",
                    trainyard_background::panic_message(&*panic)
                )))
            })
        })
        .await?
    };
    let mut tags = native_tags(&card, parameters);
    tags.extend([
        ("trainyard.dataset".to_string(), version.reference()),
        // How the version came to be: trained here from scratch, or fine-tuned from another.
        (
            "trainyard.lineage".to_string(),
            if config.distill.is_some() {
                "distilled"
            } else if source.is_some() {
                "fine-tuned"
            } else {
                "trained"
            }
            .to_string(),
        ),
        (
            LICENSE_TAG.to_string(),
            config
                .license
                .clone()
                .or_else(|| source.as_ref().and_then(|s| s.license.clone()))
                .unwrap_or_else(|| UNKNOWN_LICENSE.to_string()),
        ),
    ]);
    if let Some(source) = &source {
        tags.push(("trainyard.source".to_string(), source.reference.clone()));
    }
    if let Some(d) = &config.distill {
        tags.push(("trainyard.teacher".to_string(), d.teacher.clone()));
    }
    // Every version the engine trains is servable through /v2 when its layers export: the
    // file sits beside the weights, where the registry source finds `model.onnx`.
    match exported {
        Ok(e) => {
            tags.extend(onnx_tags(&e));
            println!(
                "exported model/{ONNX_FILE} (opset {}) in {:.1} ms: {} agrees with the engine, max |Δ| {:.2e} at output scale {:.2e}",
                trainyard_models::onnx::OPSET,
                e.elapsed.as_secs_f64() * 1e3,
                e.runtime,
                e.max_abs_diff,
                e.scale
            );
            run.upload(&format!("model/{ONNX_FILE}"), e.onnx).await?;
        }
        Err(e) => {
            println!("not exported to ONNX (the version is not servable through /v2): {e}");
            tags.push(("trainyard.onnx".to_string(), format!("not exported: {e}")));
        }
    }
    if let Some(report) = &outcome.report {
        run.upload("eval/report.json", serde_json::to_vec_pretty(report)?)
            .await?;
        let final_metrics: Vec<Point> = report
            .scalars("test_")
            .into_iter()
            .map(|(key, value)| Point {
                key,
                value,
                step: outcome.state.step,
            })
            .collect();
        run.log_metrics(&final_metrics).await?;
        for p in &final_metrics {
            tags.push((format!("metric.{}", p.key), format!("{:.6}", p.value)));
        }
        print_report(report, config.data.eval_split.as_deref().unwrap_or("eval"));
    }
    if !task.register {
        println!("model kept in run {} (not registered)", run.run_id);
        return Ok(0);
    }
    let model_version = run
        .register(
            &config.name,
            &run.artifact_uri("model"),
            &format!(
                "{} trained on {} by run {}",
                config.name,
                version.reference(),
                run.run_id
            ),
            &tags,
        )
        .await
        .map_err(|e| TaskError::from(e).context("registering the model version"))?;
    println!("registered model {}:{model_version}", config.name);
    Ok(0)
}

/// The version tags every native version (weights + card) carries, trained or imported:
/// its format, task, signature and parameter count.
pub fn native_tags(card: &ModelCard, parameters: usize) -> Vec<(String, String)> {
    vec![
        ("trainyard.format".to_string(), "burnpack".to_string()),
        (
            "trainyard.task".to_string(),
            format!("{:?}", card.head.task).to_lowercase(),
        ),
        (
            "trainyard.signature".to_string(),
            card.signature().to_string(),
        ),
        ("trainyard.parameters".to_string(), parameters.to_string()),
    ]
}

/// The version tags of a checked ONNX export: its opset, size and how it was checked.
pub fn onnx_tags(e: &crate::export::Exported) -> Vec<(String, String)> {
    vec![
        ("trainyard.onnx.bytes".to_string(), e.onnx.len().to_string()),
        (
            "trainyard.onnx.opset".to_string(),
            trainyard_models::onnx::OPSET.to_string(),
        ),
        (
            "trainyard.onnx.check".to_string(),
            format!("{} max_abs_diff={:.3e}", e.runtime, e.max_abs_diff),
        ),
    ]
}

fn format_shape(shape: &[usize]) -> String {
    format!("{shape:?}")
}

/// The training file's settings as run parameters (what the MLflow UI compares).
fn params(config: &TrainConfig, dataset: &str) -> Vec<(String, String)> {
    let t = &config.training;
    let mut p = vec![
        ("dataset".to_string(), dataset.to_string()),
        ("input".into(), config.data.input.clone()),
        ("target".into(), config.data.target.clone()),
        ("task".into(), format!("{:?}", t.task).to_lowercase()),
        (
            "optimizer".into(),
            format!("{:?}", t.optimizer.kind).to_lowercase(),
        ),
        ("lr".into(), t.optimizer.lr.to_string()),
        ("weight_decay".into(), t.optimizer.weight_decay.to_string()),
        (
            "schedule".into(),
            format!("{:?}", t.schedule.kind).to_lowercase(),
        ),
        ("warmup_steps".into(), t.schedule.warmup_steps.to_string()),
        ("batch_size".into(), t.batch_size.to_string()),
        ("epochs".into(), t.epochs.to_string()),
        ("seed".into(), t.seed.to_string()),
        ("device".into(), t.device.clone()),
    ];
    if let Some(from) = &config.model.from {
        p.push(("from".into(), from.clone()));
    }
    if !config.model.freeze.is_empty() {
        p.push(("freeze".into(), config.model.freeze.join(",")));
    }
    if let Some(d) = &config.distill {
        p.push(("teacher".into(), d.teacher.clone()));
        p.push(("distill_alpha".into(), d.alpha.to_string()));
        p.push(("distill_temperature".into(), d.temperature.to_string()));
    }
    if let Some(n) = config.model.train_last {
        p.push(("train_last".into(), n.to_string()));
    }
    if let Some(arch) = &config.model.architecture {
        let v = serde_json::to_value(arch).unwrap_or_default();
        if let Some(name) = v["architecture"].as_str() {
            p.push(("architecture".into(), name.to_string()));
        }
    }
    p
}

/// The checkpoint file of `step`: names sort by step, so the newest is the greatest.
pub fn checkpoint_name(step: u64) -> String {
    format!("step-{step:09}.ckpt")
}

/// The step a checkpoint file name holds (`None` for `best.ckpt` and strangers).
pub fn checkpoint_step(name: &str) -> Option<u64> {
    name.strip_prefix("step-")?
        .strip_suffix(".ckpt")?
        .parse()
        .ok()
}

async fn latest_checkpoint(run: &RunClient) -> Result<Checkpoint, TaskError> {
    let names = run.list(CHECKPOINTS).await.unwrap_or_default();
    let latest = names
        .iter()
        .filter_map(|n| checkpoint_step(n).map(|s| (s, n)))
        .max_by_key(|(s, _)| *s)
        .map(|(_, n)| n.clone())
        .ok_or_else(|| {
            TaskError::Invalid(format!(
                "run {} has no checkpoint to resume from",
                run.run_id
            ))
        })?;
    let bytes = run.download(&format!("{CHECKPOINTS}/{latest}")).await?;
    Ok(Checkpoint::decode(&bytes)?)
}

struct RunObserver {
    run: RunClient,
    handle: tokio::runtime::Handle,
    pending: Vec<Point>,
    /// Checkpoint files kept, oldest first.
    kept: Vec<String>,
    keep_last: usize,
    epochs: u64,
    started: Instant,
}

impl RunObserver {
    fn flush(&mut self) -> Result<(), EngineError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let points = std::mem::take(&mut self.pending);
        let run = self.run.clone();
        self.handle
            .block_on(async move { run.log_metrics(&points).await })
            .map_err(|e| EngineError::Stopped(format!("cannot log metrics: {e:#}")))
    }

    fn upload(&self, path: String, bytes: Vec<u8>) -> Result<(), EngineError> {
        let run = self.run.clone();
        self.handle
            .block_on(async move { run.upload(&path, bytes).await })
            .map_err(|e| EngineError::Stopped(format!("cannot store a checkpoint: {e:#}")))
    }
}

impl Observer for RunObserver {
    fn step(
        &mut self,
        step: u64,
        _epoch: u64,
        metrics: &[(String, f64)],
    ) -> Result<(), EngineError> {
        self.pending.extend(metrics.iter().map(|(k, v)| Point {
            key: k.clone(),
            value: *v,
            step,
        }));
        if self.pending.len() >= 1000 {
            self.flush()?;
        }
        Ok(())
    }

    fn epoch(
        &mut self,
        epoch: u64,
        _step: u64,
        metrics: &[(String, f64)],
    ) -> Result<(), EngineError> {
        self.pending.extend(metrics.iter().map(|(k, v)| Point {
            key: k.clone(),
            value: *v,
            step: epoch,
        }));
        self.flush()?;
        let shown: Vec<String> = metrics.iter().map(|(k, v)| format!("{k}={v:.4}")).collect();
        println!(
            "epoch {epoch}/{} {} ({:.1} s)",
            self.epochs,
            shown.join(" "),
            self.started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn checkpoint(&mut self, checkpoint: &Checkpoint, best: bool) -> Result<(), EngineError> {
        let bytes = checkpoint.encode();
        let name = checkpoint_name(checkpoint.state.step);
        if best {
            self.upload(format!("{CHECKPOINTS}/best.ckpt"), bytes.clone())?;
        }
        if self.kept.last() != Some(&name) {
            self.upload(format!("{CHECKPOINTS}/{name}"), bytes)?;
            self.kept.push(name);
        }
        while self.kept.len() > self.keep_last {
            let old = self.kept.remove(0);
            let run = self.run.clone();
            // Deleting an old checkpoint is housekeeping: failing it must not fail training.
            let _ = self
                .handle
                .block_on(async move { run.delete(&format!("{CHECKPOINTS}/{old}")).await });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_names_sort_by_step_and_read_back() {
        let names: Vec<_> = [9, 10, 200, 1_000_000].map(checkpoint_name).into();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for (name, step) in names.iter().zip([9, 10, 200, 1_000_000]) {
            assert_eq!(checkpoint_step(name), Some(step));
        }
        assert_eq!(checkpoint_step("best.ckpt"), None);
        assert_eq!(checkpoint_step("step-x.ckpt"), None);
    }
}
