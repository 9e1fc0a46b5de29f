//! `trainyard compress MODEL:VERSION --int8 | --fp16 | --prune R | --distill STUDENT.toml`:
//! checks the model and the datasets here (an operator to convert, columns and shapes that
//! feed the model), then submits the compression as a job and follows it. The job
//! registers the new version.

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use trainyard_client::datasets as remote;
use trainyard_core::TaskKind;
use trainyard_tasks::compress;

use crate::commands::run::submit_and_follow_job;
use crate::commands::train::{submission, JobArgs};
use crate::ClientArgs;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CalibrationMethod {
    Minmax,
    Percentile,
    Entropy,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("how").required(true).args(["int8", "fp16", "prune", "distill"])))]
pub struct CompressArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub job: JobArgs,
    /// `MODEL:VERSION` (or `MODEL` for its latest version).
    pub model: String,
    /// 8-bit integer weights (dynamic activations, or static with --calibrate).
    #[arg(long)]
    pub int8: bool,
    /// Half-precision weights and arithmetic, for GPUs (inputs and outputs stay float).
    #[arg(long, conflicts_with_all = ["int8", "calibrate", "per_channel", "reduce_range", "symmetric_activations"])]
    pub fp16: bool,
    /// Prune this fraction, in (0, 1): of every prunable layer's channels and neurons with
    /// --structured (the network gets smaller), else of the weights by magnitude (zeroed).
    #[arg(long, value_name = "RATIO", conflicts_with_all = ["int8", "fp16"])]
    pub prune: Option<f64>,
    /// Distil the model (the teacher) into the network of this training file (the student):
    /// a training job whose loss also follows the teacher's outputs.
    #[arg(long, value_name = "STUDENT.toml", conflicts_with_all = ["int8", "fp16", "prune"])]
    pub distill: Option<std::path::PathBuf>,
    /// With --distill: weight of the labels' cross-entropy (the teacher's gets 1 − alpha).
    #[arg(long, default_value_t = 0.1, requires = "distill")]
    pub alpha: f64,
    /// With --distill: the softmax temperature of both networks' outputs.
    #[arg(long, default_value_t = 4.0, requires = "distill")]
    pub temperature: f64,
    /// With --prune: remove whole channels and neurons.
    #[arg(long, requires = "prune")]
    pub structured: bool,
    /// With --prune (magnitude): one threshold over the whole network instead of per layer.
    #[arg(long, requires = "prune", conflicts_with = "structured")]
    pub global: bool,
    /// With --prune --structured: fine-tune the pruned version for N epochs with the training
    /// file of the parent, as a training job (checkpoints, curves, a registered version).
    /// Not with magnitude pruning: training has no mask, the zeroed weights would grow back.
    #[arg(long, value_name = "N", requires = "structured")]
    pub finetune_epochs: Option<u32>,
    /// Static quantization with activation ranges measured on this dataset
    /// (`NAME[:VERSION]`); without it, activations are quantized at run time.
    #[arg(long, value_name = "DATASET")]
    pub calibrate: Option<String>,
    /// Split of the calibration rows (when the dataset has a split column).
    #[arg(long, default_value = "train")]
    pub calibration_split: String,
    /// Calibration rows read.
    #[arg(long, default_value_t = 512)]
    pub calibration_rows: usize,
    /// How activation ranges are chosen from the calibration values.
    #[arg(long, value_enum, default_value_t = CalibrationMethod::Minmax)]
    pub method: CalibrationMethod,
    /// Percent of values kept by `--method percentile`.
    #[arg(long, default_value_t = 99.999)]
    pub percentile: f64,
    /// One scale per output channel of each weight.
    #[arg(long)]
    pub per_channel: bool,
    /// 7-bit weights, for CPUs without VNNI.
    #[arg(long)]
    pub reduce_range: bool,
    /// Static only: signed activations with zero point 0.
    #[arg(long)]
    pub symmetric_activations: bool,
    /// Operators (node names) to keep in float.
    #[arg(long, value_name = "NODE")]
    pub exclude: Vec<String>,
    /// Evaluation dataset `NAME[:VERSION]` [default: the one the model was trained on].
    #[arg(long)]
    pub eval: Option<String>,
    /// Split evaluated (when the dataset has a split column).
    #[arg(long, default_value = "test")]
    pub split: String,
    #[arg(long, default_value = "split")]
    pub split_column: String,
    /// Largest loss of the main metric accepted (0.01: one point of accuracy); operators
    /// fall back to float, most sensitive first, until the child fits.
    #[arg(long, default_value_t = 0.01)]
    pub max_accuracy_drop: f64,
    /// The dataset column that feeds the model, for a version whose card does not say (an
    /// ONNX import with no native form).
    #[arg(long, requires = "target")]
    pub input: Option<String>,
    /// The dataset column the model is scored against (with --input).
    #[arg(long, requires = "input")]
    pub target: Option<String>,
    /// Experiment the compression run joins [default: Default].
    #[arg(long)]
    pub experiment: Option<String>,
}

pub async fn compress(args: CompressArgs) -> anyhow::Result<i32> {
    // The budget and the row count, by the job's own rule (the rows matter only with
    // --calibrate; checked here whatever the method, as the flag was given).
    compress::check_settings(
        args.max_accuracy_drop,
        &compress::Scheme::Static {
            dataset: String::new(),
            split: None,
            rows: args.calibration_rows,
            method: compress::Method::MinMax,
        },
    )?;
    if !(args.percentile > 0.0 && args.percentile <= 100.0) {
        bail!(
            "--percentile {}: give a percentage in (0, 100]",
            args.percentile
        );
    }
    if args.calibrate.is_none()
        && (args.symmetric_activations || args.method != CalibrationMethod::Minmax)
    {
        bail!("--symmetric-activations and --method apply to static quantization: add --calibrate DATASET");
    }
    if let Some(student) = &args.distill {
        let client = crate::client::connect(&args.client)?;
        let text = std::fs::read_to_string(student)
            .with_context(|| format!("cannot read {}", student.display()))?;
        let origin = student.display().to_string();
        let mut config = trainyard_engine::config::TrainConfig::parse(&text)
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        let distill = trainyard_engine::config::DistillConfig {
            teacher: args.model.clone(),
            alpha: args.alpha,
            temperature: args.temperature,
        };
        distill
            .validate()
            .map_err(|e| anyhow::anyhow!("--alpha/--temperature: {e}"))?;
        config.distill = Some(distill);
        // Every rule of a training file, the distillation's included (a classification task).
        let config = trainyard_engine::config::TrainConfig::parse(&serde_json::to_string(&config)?)
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        return crate::commands::train::submit_training(
            &client,
            config,
            &origin,
            None,
            &args.job,
            args.client.output,
        )
        .await;
    }
    if let Some(ratio) = args.prune {
        compress::check_ratio(ratio)?;
        if args.calibrate.is_some() || !args.exclude.is_empty() || args.per_channel {
            bail!("--calibrate, --exclude and --per-channel apply to --int8");
        }
    }
    let client = crate::client::connect(&args.client)?;
    let columns = args
        .input
        .clone()
        .zip(args.target.clone())
        .map(|(input, target)| compress::Columns { input, target });
    let parent = compress::fetch_parent_with(&client, &args.model, columns.as_ref()).await?;
    if args.prune.is_none() {
        compress::check_exclusions(&parent, args.fp16, &args.exclude)?;
    }
    let eval = match args
        .eval
        .as_deref()
        .or(Some(parent.card.dataset.as_str()).filter(|d| !d.is_empty()))
    {
        Some(e) => e.to_string(),
        None => bail!(
            "{}:{} records no dataset of its own: name the evaluation rows with --eval DATASET",
            parent.name,
            parent.version
        ),
    };
    let eval = remote::fetch_version(&client, &eval).await?;
    compress::check_dataset(
        &parent,
        &eval,
        &remote::manifest(&eval)?,
        "evaluation dataset",
        true,
    )?;
    let mut task_args = vec![
        "--model".to_string(),
        format!("{}:{}", parent.name, parent.version),
        "--eval".into(),
        eval.reference(),
        "--split".into(),
        args.split.clone(),
        "--split-column".into(),
        args.split_column.clone(),
        "--max-accuracy-drop".into(),
        args.max_accuracy_drop.to_string(),
    ];
    if let Some(c) = &columns {
        task_args.extend([
            "--input".into(),
            c.input.clone(),
            "--target".into(),
            c.target.clone(),
        ]);
    }
    if let Some(ratio) = args.prune {
        task_args.extend(["--prune".into(), ratio.to_string()]);
        if args.structured {
            task_args.push("--structured".into());
        }
        if args.global {
            task_args.push("--global".into());
        }
    }
    if let Some(c) = &args.calibrate {
        let version = remote::fetch_version(&client, c).await?;
        compress::check_dataset(
            &parent,
            &version,
            &remote::manifest(&version)?,
            "calibration dataset",
            false,
        )?;
        let method = match args.method {
            CalibrationMethod::Minmax => "minmax".to_string(),
            CalibrationMethod::Percentile => format!("percentile:{}", args.percentile),
            CalibrationMethod::Entropy => "entropy".to_string(),
        };
        task_args.extend([
            "--calibrate".into(),
            version.reference(),
            "--calibration-split".into(),
            args.calibration_split.clone(),
            "--calibration-rows".into(),
            args.calibration_rows.to_string(),
            "--method".into(),
            method,
        ]);
    }
    for (flag, on) in [
        ("--fp16", args.fp16),
        ("--per-channel", args.per_channel),
        ("--reduce-range", args.reduce_range),
        ("--symmetric-activations", args.symmetric_activations),
    ] {
        if on {
            task_args.push(flag.into());
        }
    }
    for e in &args.exclude {
        task_args.extend(["--exclude".into(), e.clone()]);
    }
    let submission = submission(
        format!("compress {}:{}", parent.name, parent.version),
        TaskKind::Compress,
        task_args,
        &args.job,
        false,
        args.experiment.clone(),
    );
    let (job_id, code) =
        submit_and_follow_job(&client, &submission, args.job.detach, args.client.output)
            .await
            .context("submitting the compression job")?;
    let Some(epochs) = args.finetune_epochs.filter(|e| *e > 0) else {
        return Ok(code);
    };
    if code != 0 || args.job.detach {
        if args.job.detach {
            eprintln!("detached: fine-tune the pruned version with `trainyard train` once job {job_id} has registered it");
        }
        return Ok(code);
    }
    let parent_ref = format!("{}:{}", parent.name, parent.version);
    let pruned = compress::registered_by(&client, &parent.name, &job_id)
        .await?
        .with_context(|| format!("job {job_id} registered no version of {}", parent.name))?;
    let pruned = format!("{}:{pruned}", parent.name);
    println!("fine-tuning {pruned} for {epochs} epochs with the training file of {parent_ref}");
    let config = compress::finetune_config(&client, &parent_ref, &pruned, epochs).await?;
    crate::commands::train::submit_training(
        &client,
        config,
        &format!("the training file of {parent_ref}"),
        None,
        &args.job,
        args.client.output,
    )
    .await
}
