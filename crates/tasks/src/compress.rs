//! `trainyard task compress`: an 8-bit or half-precision version of a registered model
//! version, as a job.
//!
//! The parent's `model.onnx` is quantized (int8 dynamically, or statically with ranges
//! measured on calibration rows run through a serving runtime; or converted to half), then parent and child are evaluated
//! on the same split in the same runtime. When the child loses more than the budget of the
//! task's main metric (accuracy, or r² for regression), the accuracy guard keeps the most
//! sensitive operators in float until it fits; when nothing fits, nothing is registered.
//! The child is registered as a new version of the same model with its lineage (parent,
//! method, settings) and a report (size, parameters, latency under each runtime, metrics of
//! both) kept on its run and summarised in its tags.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use trainyard_client::datasets::{self as remote, RemoteShards};
use trainyard_client::runs::{self as mlflow, Point, RunClient};
use trainyard_client::Client;
use trainyard_core::dataset::DatasetVersionInfo;
use trainyard_data::{Batch, ColumnType, LoaderOptions, Manifest, ShardSource, Targets};
use trainyard_engine::config::Task;
use trainyard_engine::metrics::{Classification, Regression, Report};
use trainyard_engine::model::{ModelCard, CARD_FILE};
pub use trainyard_models::quantize::calibrate::Method;
pub use trainyard_models::quantize::Int8Options;
use trainyard_models::quantize::{self, calibrate, guard, Quantized};
use trainyard_serve::runtime::{Runtime, Tract};
use trainyard_serve::{DataType, Tensor};

use crate::evaluate::loader_options;
use crate::train::{LICENSE_TAG, ONNX_FILE, UNKNOWN_LICENSE};
use crate::TaskError;

/// How the weights and activations are made smaller.
#[derive(Clone, Debug, PartialEq)]
pub enum Scheme {
    /// Float weights and arithmetic in half precision (inputs and outputs stay float).
    Fp16,
    /// Weights ahead of time, activations at run time: no calibration data.
    Dynamic,
    /// QDQ with activation ranges from `rows` rows of `dataset` (`NAME:VERSION`).
    Static {
        dataset: String,
        split: Option<String>,
        rows: usize,
        method: calibrate::Method,
    },
}

impl Scheme {
    pub fn name(&self) -> &'static str {
        match self {
            Scheme::Fp16 => "fp16",
            Scheme::Dynamic => "int8-dynamic",
            Scheme::Static { .. } => "int8-static",
        }
    }
}

pub struct CompressTask {
    /// `NAME:VERSION`, pinned.
    pub model: String,
    pub scheme: Scheme,
    pub options: Int8Options,
    /// Evaluation rows: `NAME:VERSION` and the split.
    pub eval: String,
    pub split: Option<String>,
    pub split_column: String,
    /// Largest loss of the main metric accepted (0.01: one point of accuracy).
    pub max_accuracy_drop: f64,
    /// Columns for a parent whose card does not name them.
    pub columns: Option<Columns>,
}

/// A parent version ready to compress.
pub struct Parent {
    pub name: String,
    pub version: String,
    pub onnx: Vec<u8>,
    pub card: ModelCard,
    /// The graph's one input.
    pub input: String,
    pub tags: BTreeMap<String, String>,
}

/// [`fetch_parent_with`] for a version whose card says how to feed it.
pub async fn fetch_parent(client: &Client, reference: &str) -> Result<Parent, TaskError> {
    fetch_parent_with(client, reference, None).await
}

/// Dataset columns named for a version whose card does not say them (an ONNX import with
/// no native form has no card at all).
#[derive(Clone, Debug, PartialEq)]
pub struct Columns {
    pub input: String,
    pub target: String,
}

/// A card for a file that came without one: its input and output shapes from the graph
/// (both must be known), the columns as given, the task from the version's tag.
fn card_from_file(
    summary: &trainyard_models::onnx::Summary,
    columns: &Columns,
    task: Task,
    at: &str,
) -> Result<ModelCard, TaskError> {
    let known = |dims: &[i64]| -> Option<Vec<usize>> {
        dims.iter()
            .skip(1)
            .map(|d| usize::try_from(*d).ok().filter(|d| *d > 0))
            .collect()
    };
    let input = summary
        .inputs
        .first()
        .and_then(|(_, d)| known(d))
        .filter(|d| !d.is_empty())
        .ok_or_else(|| {
            TaskError::Invalid(format!(
                "{at}: its input's shape is not fixed past the batch dimension, so rows cannot be fed to it"
            ))
        })?;
    let outputs = match summary
        .outputs
        .first()
        .and_then(|(_, d)| known(d))
        .as_deref()
    {
        Some([k]) => *k,
        _ => {
            return Err(TaskError::Invalid(format!(
                "{at}: its first output is not [batch, classes] with a fixed class count"
            )))
        }
    };
    Ok(ModelCard {
        format: 1,
        spec: trainyard_engine::spec::ResolvedSpec {
            input,
            layers: Vec::new(),
            output: vec![outputs],
        },
        head: trainyard_engine::train::Head { task, outputs },
        input: columns.input.clone(),
        target: columns.target.clone(),
        image: None,
        dataset: String::new(),
        from: None,
    })
}

/// Fetches `reference`'s ONNX file and card and checks that it can be compressed: it has
/// one input, and a card saying how to feed it (or `columns`, for a
/// file without one). Run before the job is submitted, so bad input is refused before
/// anything runs.
pub async fn fetch_parent_with(
    client: &Client,
    reference: &str,
    columns: Option<&Columns>,
) -> Result<Parent, TaskError> {
    let (name, version, uri) = mlflow::model_source(client, reference).await?;
    let onnx = mlflow::download_uri(client, &format!("{uri}/{ONNX_FILE}"))
        .await
        .map_err(|e| {
            TaskError::from(e).context(format!(
                "{name}:{version} has no {ONNX_FILE} to compress (its `trainyard.onnx` tag says why)"
            ))
        })?;
    let summary = trainyard_models::onnx::inspect(&onnx)
        .map_err(|e| TaskError::Invalid(format!("{name}:{version}: {e}")))?;
    let input = match summary.inputs.as_slice() {
        [(input, _)] => input.clone(),
        other => {
            return Err(TaskError::Invalid(format!(
                "{name}:{version} has {} inputs; compression feeds models of one input",
                other.len()
            )))
        }
    };
    let tags = mlflow::version_tags(client, &name, &version).await?;
    let card = match mlflow::download_uri(client, &format!("{uri}/{CARD_FILE}")).await {
        Ok(bytes) => {
            let mut card: ModelCard =
                serde_json::from_slice(&bytes).map_err(|source| TaskError::Unreadable {
                    what: format!("{name}:{version}: unreadable {CARD_FILE}"),
                    source,
                })?;
            if let Some(c) = columns {
                card.input = c.input.clone();
                card.target = c.target.clone();
            }
            card
        }
        Err(e) => match columns {
            Some(c) => {
                let task = match tags.get("trainyard.task").map(String::as_str) {
                    Some("regression") => Task::Regression,
                    _ => Task::Classification,
                };
                card_from_file(&summary, c, task, &format!("{name}:{version}"))?
            }
            None => {
                return Err(TaskError::from(e).context(format!(
                    "{name}:{version} has no {CARD_FILE} saying which dataset columns feed and score it (an import with no native form): name them with --input COLUMN --target COLUMN"
                )))
            }
        },
    };
    Ok(Parent {
        name,
        version,
        onnx,
        card,
        input,
        tags,
    })
}

/// The operators a scheme converts (and `--exclude` may name), in graph order; a model with
/// none is refused, saying what it has.
pub fn candidates(onnx: &[u8], fp16: bool) -> Result<Vec<String>, TaskError> {
    let invalid = |e: trainyard_models::ModelsError| TaskError::Invalid(e.to_string());
    if fp16 {
        return quantize::fp16_candidates(onnx).map_err(invalid);
    }
    Ok(quantize::candidates(onnx)
        .map_err(invalid)?
        .into_iter()
        .map(|c| c.name)
        .collect())
}

/// Checks that `parent` has an operator to convert (quantizable, or computed in half with
/// `fp16`) and that every operator named to stay in float is one of them.
pub fn check_exclusions(parent: &Parent, fp16: bool, exclude: &[String]) -> Result<(), TaskError> {
    let candidates = candidates(&parent.onnx, fp16).map_err(|e| {
        TaskError::Invalid(format!(
            "{}:{}: {e}; nothing registered",
            parent.name, parent.version
        ))
    })?;
    if !candidates.is_empty() && candidates.iter().all(|c| exclude.contains(c)) {
        return Err(TaskError::Invalid(format!(
            "--exclude names every convertible operator of {}:{}: nothing would change",
            parent.name, parent.version
        )));
    }
    for e in exclude {
        if !candidates.iter().any(|c| c == e) {
            return Err(TaskError::Invalid(format!(
                "--exclude {e}: {}:{} has no such operator (its convertible ones: {})",
                parent.name,
                parent.version,
                candidates.join(", ")
            )));
        }
    }
    Ok(())
}

/// A calibration method as `trainyard task compress --method` takes it: `minmax`,
/// `entropy` or `percentile:P`.
pub fn parse_method(s: &str) -> Result<Method, TaskError> {
    let bad = || {
        TaskError::Invalid(format!(
            "--method {s}: minmax, entropy or percentile:P with P in (0, 100]"
        ))
    };
    match s.split_once(':') {
        None if s == "minmax" => Ok(Method::MinMax),
        None if s == "entropy" => Ok(Method::Entropy),
        Some(("percentile", p)) => match p.parse::<f64>() {
            Ok(p) if p > 0.0 && p <= 100.0 => Ok(Method::Percentile(p)),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// Checks that `dataset` can feed `parent` (its input column with the model's input shape,
/// its target column), naming both when not. `role` says which dataset it is.
pub fn check_dataset(
    parent: &Parent,
    dataset: &DatasetVersionInfo,
    manifest: &Manifest,
    role: &str,
    target: bool,
) -> Result<(), TaskError> {
    let card = &parent.card;
    let model = format!(
        "model {}:{} (input `{}` of shape {:?})",
        parent.name, parent.version, parent.input, card.spec.input
    );
    let field = manifest.field(&card.input).ok_or_else(|| {
        TaskError::Invalid(format!(
            "{role} {} has no column `{}`, which {model} is fed from",
            dataset.reference(),
            card.input
        ))
    })?;
    match (&field.dtype, &card.image) {
        (ColumnType::Bytes, Some(_)) => {}
        (ColumnType::Float32 { shape }, None) => {
            let elements: usize = shape.iter().product::<usize>().max(1);
            if elements != card.spec.input.iter().product::<usize>() {
                return Err(TaskError::Invalid(format!(
                    "{role} {} column `{}` has shape {shape:?}; {model} does not take it",
                    dataset.reference(),
                    card.input
                )));
            }
        }
        (other, _) => {
            return Err(TaskError::Invalid(format!(
                "{role} {} column `{}` is {other:?}; {model} takes {}",
                dataset.reference(),
                card.input,
                if card.image.is_some() {
                    "encoded images"
                } else {
                    "float32 tensors"
                }
            )))
        }
    }
    if target && manifest.field(&card.target).is_none() {
        return Err(TaskError::Invalid(format!(
            "{role} {} has no column `{}`, the target {} is evaluated against",
            dataset.reference(),
            card.target,
            parent.name
        )));
    }
    Ok(())
}

/// The rows of a dataset version, read through the server.
struct Rows {
    manifest: Manifest,
    source: Arc<dyn ShardSource>,
    options: LoaderOptions,
}

impl Rows {
    async fn open(
        client: &Client,
        parent: &Parent,
        reference: &str,
        split: Option<&str>,
        split_column: &str,
        role: &str,
        target: bool,
    ) -> Result<(Self, String), TaskError> {
        let version = remote::fetch_version(client, reference).await?;
        let manifest = remote::manifest(&version)?;
        check_dataset(parent, &version, &manifest, role, target)?;
        // Evaluation rows must be the split named (the version's eval tags say which);
        // calibration may read any rows when the dataset has no split column.
        let filter = match split {
            Some(s) if manifest.field(split_column).is_some() => {
                Some((split_column.to_string(), s.to_string()))
            }
            Some(s) if target => {
                return Err(TaskError::Invalid(format!(
                "--split {s}: {role} {} has no `{split_column}` column; name a dataset with one",
                version.reference()
            )))
            }
            _ => None,
        };
        let described = format!(
            "{}{}",
            version.reference(),
            filter
                .as_ref()
                .map(|(_, s)| format!(" (split {s})"))
                .unwrap_or_default()
        );
        let source: Arc<dyn ShardSource> = Arc::new(RemoteShards::new(
            client.clone(),
            Some(remote::cache_dir()),
        )?);
        let options = loader_options(&parent.card, filter, target);
        Ok((
            Rows {
                manifest,
                source,
                options,
            },
            described,
        ))
    }

    /// Every batch (the first `limit` rows when given), in order.
    fn read(&self, limit: Option<usize>) -> Result<Vec<Batch>, TaskError> {
        let mut out = Vec::new();
        let mut rows = 0;
        for batch in
            trainyard_data::batches(&self.manifest, self.source.clone(), self.options.clone())?
        {
            let mut batch = batch?;
            if let Some(l) = limit {
                // Exactly `limit` rows: the last batch is cut.
                let take = batch.rows.min(l - rows);
                if take < batch.rows {
                    let per_row = batch.inputs.len() / batch.rows.max(1);
                    batch.inputs.truncate(take * per_row);
                    batch.targets = match batch.targets.take() {
                        Some(Targets::Classes(c)) => Some(Targets::Classes(c[..take].to_vec())),
                        Some(Targets::Values(v)) => {
                            let per = v.len() / batch.rows.max(1);
                            Some(Targets::Values(v[..take * per].to_vec()))
                        }
                        None => None,
                    };
                    batch.rows = take;
                }
            }
            rows += batch.rows;
            out.push(batch);
            if limit.is_some_and(|l| rows >= l) {
                break;
            }
        }
        Ok(out)
    }
}

/// The rows compression reads from `dataset` for `parent` (its input column, decoded as the
/// model takes it, and its target), the first `limit` of `split` in the dataset's order:
/// what a job calibrates or evaluates on, for tools outside that compare on the same rows.
pub async fn read_rows(
    client: &Client,
    parent: &Parent,
    dataset: &str,
    split: Option<&str>,
    split_column: &str,
    limit: Option<usize>,
) -> Result<Vec<Batch>, TaskError> {
    let (rows, _) = Rows::open(
        client,
        parent,
        dataset,
        split,
        split_column,
        "dataset",
        true,
    )
    .await?;
    tokio::task::spawn_blocking(move || rows.read(limit)).await?
}

/// A batch as the model's one FP32 input `name`, `[rows, ..sample]`.
pub(crate) fn input_tensor(name: &str, batch: &Batch) -> Tensor {
    let mut shape = vec![batch.rows];
    shape.extend_from_slice(&batch.sample_shape);
    Tensor::from_vec(name, shape, &batch.inputs)
}

/// An output's values, refused unless FP32.
pub(crate) fn floats(t: &Tensor) -> Result<Vec<f32>, TaskError> {
    if t.datatype != DataType::F32 {
        return Err(TaskError::Invalid(format!(
            "output `{}` is {:?}, not float32",
            t.name, t.datatype
        )));
    }
    Ok(t.to_vec::<f32>())
}

/// Runs `onnx` over `batches` in `runtime` and scores it as `card`'s task.
fn evaluate(
    runtime: &dyn Runtime,
    onnx: &[u8],
    input: &str,
    card: &ModelCard,
    batches: &[Batch],
) -> Result<Report, TaskError> {
    let (_, mut instances) = runtime
        .load(onnx, 1)
        .map_err(|e| TaskError::Invalid(format!("the runtime cannot load the model: {e}")))?;
    let instance = &mut instances[0];
    if card.head.outputs == 0 {
        return Err(TaskError::Invalid(
            "the model card says the head has no outputs".into(),
        ));
    }
    let mut classification = Classification::new(card.head.outputs, 3.min(card.head.outputs));
    let mut regression = Regression::default();
    for batch in batches {
        let out = instance
            .run(vec![input_tensor(input, batch)])
            .map_err(|e| TaskError::Invalid(format!("running the model: {e}")))?;
        let logits = floats(
            out.first()
                .ok_or_else(|| TaskError::Invalid("the model gave no output".into()))?,
        )?;
        match &batch.targets {
            // The evaluation rows are the user's: labels outside the head's classes, or an
            // output of the wrong size, are refused rather than scored.
            Some(Targets::Classes(t)) if card.head.task != Task::Regression => {
                let classes = card.head.outputs;
                if logits.len() != batch.rows * classes {
                    return Err(TaskError::Invalid(format!(
                        "the model gave {} values for {} rows of {classes} classes",
                        logits.len(),
                        batch.rows
                    )));
                }
                if let Some(bad) = t.iter().find(|c| !(0..classes as i64).contains(c)) {
                    return Err(TaskError::Invalid(format!(
                        "evaluation rows: label {bad} is not one of the model's {classes} classes"
                    )));
                }
                classification.add(&logits, t)
            }
            Some(Targets::Values(t))
                if card.head.task == Task::Regression && logits.len() == t.len() =>
            {
                regression.add(&logits, t)
            }
            Some(_) => {
                return Err(TaskError::Invalid(format!(
                    "evaluation rows: the target column `{}` does not fit the model's {:?} head",
                    card.target, card.head.task
                )))
            }
            None => return Err(TaskError::Invalid("evaluation rows have no targets".into())),
        }
    }
    Ok(match card.head.task {
        Task::Regression => Report::Regression(regression.report()),
        _ => Report::Classification(classification.report()),
    })
}

/// The metric the budget is in: accuracy, or r² for regression (higher is better).
fn main_metric(report: &Report) -> (&'static str, f64) {
    match report {
        Report::Classification(r) => ("accuracy", r.accuracy),
        Report::Regression(r) => ("r2", r.r2),
    }
}

/// What a calibration pass does with each exposed tensor's values.
type Observer<'a> = dyn FnMut(&str, &[f32]) -> Result<(), TaskError> + 'a;

/// Activation ranges of `parent` on `batches`, computed by `runtime` (two passes when the
/// method needs histograms).
fn calibrate_ranges(
    runtime: &dyn Runtime,
    parent: &Parent,
    options: &Int8Options,
    batches: &[Batch],
    method: calibrate::Method,
) -> Result<quantize::Ranges, TaskError> {
    let invalid = |e: trainyard_models::ModelsError| TaskError::Invalid(e.to_string());
    let tensors = quantize::calibration_tensors(&parent.onnx, options).map_err(invalid)?;
    let (exposed, outputs) = quantize::with_outputs(&parent.onnx, &tensors).map_err(invalid)?;
    let (_, mut instances) = runtime
        .load(&exposed, 1)
        .map_err(|e| TaskError::Invalid(format!("the runtime cannot load the model: {e}")))?;
    let instance = &mut instances[0];
    let wanted: BTreeSet<&String> = tensors.iter().collect();
    let mut pass = |observe: &mut Observer| {
        for batch in batches {
            if wanted.contains(&parent.input) {
                observe(&parent.input, &batch.inputs)?;
            }
            let out = instance
                .run(vec![input_tensor(&parent.input, batch)])
                .map_err(|e| TaskError::Invalid(format!("calibration: {e}")))?;
            for (name, t) in outputs.iter().zip(&out) {
                if wanted.contains(name) {
                    observe(name, &floats(t)?)?;
                }
            }
        }
        Ok::<_, TaskError>(())
    };
    let mut extremes = calibrate::Extremes::default();
    pass(&mut |name, values| extremes.observe(name, values).map_err(invalid))?;
    let mut histograms = calibrate::Histograms::new(&extremes);
    if method.needs_histograms() {
        pass(&mut |name, values| histograms.observe(name, values).map_err(invalid))?;
    }
    Ok(histograms.ranges(method))
}

/// Latency of one runtime on one model: p50 and p99 per call at batch 1 and 32, and rows
/// per second at 32.
fn latency(
    runtime: &dyn Runtime,
    onnx: &[u8],
    input: &str,
    sample: &Batch,
) -> Result<Value, TaskError> {
    let (_, mut instances) = runtime
        .load(onnx, 1)
        .map_err(|e| TaskError::Invalid(format!("the runtime cannot load the model: {e}")))?;
    let instance = &mut instances[0];
    let per_row: usize = sample.sample_shape.iter().product();
    let mut out = serde_json::Map::new();
    for (rows, calls) in [(1usize, 200usize), (32, 50)] {
        let inputs: Vec<f32> = sample
            .inputs
            .iter()
            .copied()
            .cycle()
            .take(rows * per_row)
            .collect();
        let batch = Batch {
            inputs,
            sample_shape: sample.sample_shape.clone(),
            rows,
            targets: None,
        };
        let tensor = input_tensor(input, &batch);
        for _ in 0..5 {
            instance
                .run(vec![tensor.clone()])
                .map_err(|e| TaskError::Invalid(format!("timing: {e}")))?;
        }
        let mut times = Vec::with_capacity(calls);
        for _ in 0..calls {
            let t = Instant::now();
            instance
                .run(vec![tensor.clone()])
                .map_err(|e| TaskError::Invalid(format!("timing: {e}")))?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let p = |q: f64| times[((calls as f64 - 1.0) * q).round() as usize];
        out.insert(
            format!("batch_{rows}"),
            json!({"p50_ms": p(0.5), "p99_ms": p(0.99), "rows_per_s": rows as f64 * 1e3 / p(0.5)}),
        );
    }
    Ok(Value::Object(out))
}

/// The runtimes a report times, each on one thread: ONNX Runtime when its library is
/// found (the process's one environment, made for the checks), and tract.
fn timing_runtimes() -> Vec<(&'static str, &'static dyn Runtime)> {
    static TRACT: Tract = Tract;
    let (runtime, name) = crate::export::checking_runtime();
    let mut out = Vec::new();
    if name != "tract" {
        out.push((name, runtime));
    }
    out.push(("tract", &TRACT as &dyn Runtime));
    out
}

/// The settings a child records: what a user would pass again to get it.
fn settings(task: &CompressTask) -> Value {
    let mut s = json!({
        "scheme": task.scheme.name(),
        "max_accuracy_drop": task.max_accuracy_drop,
        "eval": task.eval,
        "split": task.split,
    });
    if task.scheme != Scheme::Fp16 {
        s["per_channel"] = json!(task.options.per_channel);
        s["reduce_range"] = json!(task.options.reduce_range);
    }
    if !task.options.exclude.is_empty() {
        s["exclude"] = json!(task.options.exclude);
    }
    if let Scheme::Static {
        dataset,
        split,
        rows,
        method,
    } = &task.scheme
    {
        s["calibration"] =
            json!({"dataset": dataset, "split": split, "rows": rows, "method": method.name()});
        s["symmetric_activations"] = json!(task.options.symmetric_activations);
    }
    s
}

pub async fn compress(task: CompressTask) -> Result<i32, TaskError> {
    check_settings(task.max_accuracy_drop, &task.scheme)?;
    let run = RunClient::from_env().await?;
    let parent = fetch_parent_with(&run.client, &task.model, task.columns.as_ref()).await?;
    let parent_ref = format!("{}:{}", parent.name, parent.version);
    println!(
        "compressing {parent_ref} ({}, {} bytes)",
        task.scheme.name(),
        parent.onnx.len()
    );
    let (eval_rows, eval_described) = Rows::open(
        &run.client,
        &parent,
        &task.eval,
        task.split.as_deref(),
        &task.split_column,
        "evaluation dataset",
        true,
    )
    .await?;
    let calibration_rows = match &task.scheme {
        Scheme::Dynamic | Scheme::Fp16 => None,
        Scheme::Static { dataset, split, .. } => Some(
            Rows::open(
                &run.client,
                &parent,
                dataset,
                split.as_deref(),
                &task.split_column,
                "calibration dataset",
                false,
            )
            .await?,
        ),
    };
    let mut params = vec![
        ("parent".to_string(), parent_ref.clone()),
        ("method".to_string(), task.scheme.name().to_string()),
        ("eval".to_string(), eval_described.clone()),
        (
            "max_accuracy_drop".to_string(),
            task.max_accuracy_drop.to_string(),
        ),
    ];
    if task.scheme != Scheme::Fp16 {
        params.push(("per_channel".into(), task.options.per_channel.to_string()));
        params.push(("reduce_range".into(), task.options.reduce_range.to_string()));
    }
    if let (Some((_, described)), Scheme::Static { method, rows, .. }) =
        (&calibration_rows, &task.scheme)
    {
        params.push(("calibration".into(), described.clone()));
        params.push(("calibration_method".into(), method.name()));
        params.push(("calibration_rows".into(), rows.to_string()));
        params.push((
            "symmetric_activations".into(),
            task.options.symmetric_activations.to_string(),
        ));
    }
    run.log_params(&params).await?;

    let settings = settings(&task);
    let (parent, outcome) = {
        let scheme = task.scheme.clone();
        let options = task.options.clone();
        let max_drop = task.max_accuracy_drop;
        tokio::task::spawn_blocking(move || {
            let outcome = work(
                &parent,
                &scheme,
                &options,
                max_drop,
                &eval_rows,
                calibration_rows.map(|(r, _)| r),
            );
            (parent, outcome)
        })
        .await?
    };
    let Outcome {
        parent_report,
        child,
        guarded,
        ranges_used,
        sample,
    } = outcome?;
    let (metric, parent_score) = main_metric(&parent_report);
    let Some((model, child_report)) = child else {
        println!(
            "no {} version of {parent_ref} stays within {:.2} points of {metric} ({:.4}), even with {} of {} operators in float; nothing registered",
            task.scheme.name(),
            task.max_accuracy_drop * 100.0,
            parent_score,
            guarded.fell_back.len().saturating_sub(1),
            guarded.fell_back.len()
        );
        run.upload(
            "compression/report.json",
            serde_json::to_vec_pretty(&json!({
                "parent": parent_ref,
                "settings": settings,
                "registered": false,
                "parent_eval": parent_report,
                "sensitivity": guarded.sensitivity,
                "tried": guarded.tried,
            }))?,
        )
        .await?;
        return Ok(3);
    };
    let (_, child_score) = main_metric(&child_report);

    // Size, parameters and timings of both.
    let timing = {
        let (p, c, input) = (
            parent.onnx.clone(),
            model.bytes.clone(),
            parent.input.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let mut out = serde_json::Map::new();
            for (name, runtime) in timing_runtimes() {
                out.insert(
                    name.to_string(),
                    json!({
                        "parent": latency(runtime, &p, &input, &sample)?,
                        "child": latency(runtime, &c, &input, &sample)?,
                    }),
                );
            }
            Ok::<_, TaskError>(Value::Object(out))
        })
        .await??
    };
    let invalid = |e: trainyard_models::ModelsError| TaskError::Invalid(e.to_string());
    let parent_parameters = quantize::parameters(&parent.onnx).map_err(invalid)?;
    let child_parameters = quantize::parameters(&model.bytes).map_err(invalid)?;
    let report = json!({
        "parent": parent_ref,
        "method": task.scheme.name(),
        "settings": settings,
        "eval": eval_described,
        "metric": metric,
        "parent_eval": parent_report,
        "child_eval": child_report,
        "accuracy_drop": parent_score - child_score,
        "size_bytes": {"parent": parent.onnx.len(), "child": model.bytes.len()},
        "size_ratio": parent.onnx.len() as f64 / model.bytes.len() as f64,
        "parameters": {"parent": parent_parameters, "child": child_parameters},
        "quantized": model.quantized,
        "kept_in_float": model.kept,
        "fell_back": guarded.fell_back,
        "sensitivity": guarded.sensitivity,
        "tried": guarded.tried,
        "calibrated_tensors": ranges_used,
        "latency_ms": timing,
    });
    print_report(&report);
    run.upload(
        "compression/report.json",
        serde_json::to_vec_pretty(&report)?,
    )
    .await?;
    run.upload(&format!("model/{ONNX_FILE}"), model.bytes.clone())
        .await?;
    run.log_metrics(&[
        point("parent_".to_string() + metric, parent_score),
        point("child_".to_string() + metric, child_score),
        point(
            "size_ratio".into(),
            report["size_ratio"].as_f64().unwrap_or(0.0),
        ),
    ])
    .await?;

    let mut tags = lineage_tags(
        &parent,
        &parent_ref,
        task.scheme.name(),
        &settings,
        &run,
        &report,
        metric,
        parent_score - child_score,
        &guarded.fell_back,
    );
    tags.extend([
        ("trainyard.format".to_string(), "onnx".to_string()),
        (
            "trainyard.parameters".to_string(),
            child_parameters.to_string(),
        ),
        (
            "trainyard.onnx.bytes".to_string(),
            model.bytes.len().to_string(),
        ),
    ]);
    let dataset = task.eval.split(':').next().unwrap_or_default().to_string();
    let split = task.split.clone().unwrap_or_else(|| "all".into());
    for (k, v) in crate::evaluate::version_tags(&child_report, &dataset, &split, &run.run_id) {
        tags.push((k, v.as_str().unwrap_or_default().to_string()));
    }
    let version = run
        .register(
            &parent.name,
            &run.artifact_uri("model"),
            &format!(
                "{parent_ref} compressed ({}) by run {}",
                task.scheme.name(),
                run.run_id
            ),
            &tags,
        )
        .await
        .map_err(|e| TaskError::from(e).context("registering the compressed version"))?;
    println!("registered model {}:{version}", parent.name);
    Ok(0)
}

fn point(key: String, value: f64) -> Point {
    Point {
        key,
        value,
        step: 0,
    }
}

struct Outcome {
    parent_report: Report,
    child: Option<(Quantized, Report)>,
    guarded: guard::Guarded,
    ranges_used: usize,
    /// Evaluation rows to time with.
    sample: Batch,
}

/// Calibrates, quantizes and guards, on the blocking pool.
fn work(
    parent: &Parent,
    scheme: &Scheme,
    options: &Int8Options,
    max_drop: f64,
    eval_rows: &Rows,
    calibration_rows: Option<Rows>,
) -> Result<Outcome, TaskError> {
    let (runtime, runtime_name) = crate::export::checking_runtime();
    let eval_batches = eval_rows.read(None)?;
    if eval_batches.is_empty() {
        return Err(TaskError::Invalid(
            "the evaluation split has no rows".into(),
        ));
    }
    let parent_report = evaluate(
        runtime,
        &parent.onnx,
        &parent.input,
        &parent.card,
        &eval_batches,
    )?;
    let (metric, baseline) = main_metric(&parent_report);
    println!("parent: {metric} {baseline:.4} on {runtime_name}");
    let invalid = |e: trainyard_models::ModelsError| TaskError::Invalid(e.to_string());
    let ranges = match (scheme, &calibration_rows) {
        (Scheme::Static { rows, method, .. }, Some(c)) => {
            let batches = c.read(Some(*rows))?;
            let got: usize = batches.iter().map(|b| b.rows).sum();
            println!("calibrating on {got} rows ({})", method.name());
            // Ranges for every candidate, so any subset can be quantized from them.
            let all = Int8Options {
                exclude: BTreeSet::new(),
                ..options.clone()
            };
            Some(calibrate_ranges(runtime, parent, &all, &batches, *method)?)
        }
        _ => None,
    };
    let candidates: Vec<String> = candidates(&parent.onnx, *scheme == Scheme::Fp16)?
        .into_iter()
        .filter(|c| !options.exclude.contains(c))
        .collect();
    let mut quantize_with = |excluded: &BTreeSet<String>| -> Result<Quantized, TaskError> {
        let o = Int8Options {
            exclude: excluded.union(&options.exclude).cloned().collect(),
            ..options.clone()
        };
        match (&ranges, scheme) {
            (Some(r), _) => quantize::static_int8(&parent.onnx, r, &o),
            (None, Scheme::Fp16) => quantize::fp16(&parent.onnx, &o.exclude),
            (None, _) => quantize::dynamic_int8(&parent.onnx, &o),
        }
        .map_err(invalid)
    };
    // The guard returns the model it evaluated last, so only the last report is kept.
    let mut evaluated = 0;
    let mut last_report: Option<Report> = None;
    let mut score = |bytes: &[u8]| -> Result<f64, TaskError> {
        let report = evaluate(runtime, bytes, &parent.input, &parent.card, &eval_batches)?;
        let (_, s) = main_metric(&report);
        evaluated += 1;
        println!("  model {evaluated}: {metric} {s:.4}");
        last_report = Some(report);
        Ok(s)
    };
    let guarded = guard::guard(
        &candidates,
        baseline,
        max_drop,
        &mut quantize_with,
        &mut score,
    )?;
    if !guarded.fell_back.is_empty() {
        println!(
            "accuracy guard: kept {} in float ({})",
            guarded.fell_back.len(),
            guarded.fell_back.join(", ")
        );
    }
    // A child with nothing converted is its parent again: not a compressed version.
    let child = guarded
        .model
        .clone()
        .filter(|m| !m.quantized.is_empty())
        .zip(last_report);
    Ok(Outcome {
        parent_report,
        child,
        guarded,
        ranges_used: ranges.map_or(0, |r| r.len()),
        sample: eval_batches[0].clone(),
    })
}

fn print_report(report: &Value) {
    let m = report["metric"].as_str().unwrap_or("accuracy");
    println!(
        "{}: {m} {:.4} → {:.4} (drop {:.4}); size {} → {} bytes ({:.2}×); parameters {}",
        report["method"].as_str().unwrap_or_default(),
        main_of(&report["parent_eval"], m),
        main_of(&report["child_eval"], m),
        report["accuracy_drop"].as_f64().unwrap_or(0.0),
        report["size_bytes"]["parent"],
        report["size_bytes"]["child"],
        report["size_ratio"].as_f64().unwrap_or(0.0),
        report["parameters"]["child"],
    );
    if let Some(runtimes) = report["latency_ms"].as_object() {
        for (runtime, t) in runtimes {
            for batch in ["batch_1", "batch_32"] {
                println!(
                    "  {runtime} {batch}: p50 {:.3} → {:.3} ms, p99 {:.3} → {:.3} ms",
                    t["parent"][batch]["p50_ms"].as_f64().unwrap_or(0.0),
                    t["child"][batch]["p50_ms"].as_f64().unwrap_or(0.0),
                    t["parent"][batch]["p99_ms"].as_f64().unwrap_or(0.0),
                    t["child"][batch]["p99_ms"].as_f64().unwrap_or(0.0),
                );
            }
        }
    }
}

fn main_of(eval: &Value, metric: &str) -> f64 {
    eval[metric].as_f64().unwrap_or(f64::NAN)
}

/// How `trainyard task compress --prune` prunes.
#[derive(Clone, Debug, PartialEq)]
pub struct PruneTask {
    /// `NAME:VERSION`, pinned; a version the engine trained (or imported with a native form).
    pub model: String,
    /// Fraction of channels/neurons removed (structured) or of weights zeroed (magnitude).
    pub ratio: f64,
    pub structured: bool,
    /// Magnitude only: one threshold over the whole network instead of one per layer.
    pub global: bool,
    pub eval: String,
    pub split: Option<String>,
    pub split_column: String,
}

/// Checks the settings of a quantization: the budget is a fraction in [0, 1] and the
/// calibration reads 1 to 1,000,000 rows. The CLI checks before submitting, the job again
/// (its arguments are only text in a job record).
pub fn check_settings(max_accuracy_drop: f64, scheme: &Scheme) -> Result<(), TaskError> {
    if !(0.0..=1.0).contains(&max_accuracy_drop) {
        return Err(TaskError::Invalid(format!(
            "--max-accuracy-drop {max_accuracy_drop}: give a fraction in [0, 1] (0.01 is one point)"
        )));
    }
    if let Scheme::Static { rows, .. } = scheme {
        if !(1..=1_000_000).contains(rows) {
            return Err(TaskError::Invalid(format!(
                "--calibration-rows {rows}: give 1 to 1,000,000"
            )));
        }
    }
    Ok(())
}

/// Checks a pruning ratio: in (0, 1).
pub fn check_ratio(ratio: f64) -> Result<(), TaskError> {
    if ratio > 0.0 && ratio < 1.0 {
        Ok(())
    } else {
        Err(TaskError::Invalid(format!(
            "--prune {ratio}: give the fraction to remove, in (0, 1)"
        )))
    }
}

/// Prunes a native version into a new version: the pruned network is rebuilt by the engine,
/// exported to ONNX (checked against the engine like any export), evaluated against its
/// parent in the serving runtime, timed, and registered with its card and weights, so it can
/// be fine-tuned (`[model] from`) like any trained version.
pub async fn prune(task: PruneTask) -> Result<i32, TaskError> {
    use trainyard_engine::model::WEIGHTS_FILE;
    check_ratio(task.ratio)?;
    let run = RunClient::from_env().await?;
    let parent = fetch_parent(&run.client, &task.model).await?;
    let parent_ref = format!("{}:{}", parent.name, parent.version);
    let files = crate::evaluate::fetch_model(&run.client, &parent_ref).await?;
    let method = if task.structured {
        "prune-structured"
    } else {
        "prune-magnitude"
    };
    println!("pruning {parent_ref} ({method}, {})", task.ratio);
    let (eval_rows, eval_described) = Rows::open(
        &run.client,
        &parent,
        &task.eval,
        task.split.as_deref(),
        &task.split_column,
        "evaluation dataset",
        true,
    )
    .await?;
    let settings = json!({
        "method": method,
        "ratio": task.ratio,
        "global": task.global,
        "eval": task.eval,
        "split": task.split,
    });
    run.log_params(&[
        ("parent".to_string(), parent_ref.clone()),
        ("method".to_string(), method.to_string()),
        ("ratio".to_string(), task.ratio.to_string()),
        ("eval".to_string(), eval_described.clone()),
    ])
    .await?;
    let name = parent.name.clone();
    let spec = parent.card.spec.clone();
    let at = parent_ref.clone();
    let (parent, outcome) = tokio::task::spawn_blocking(move || {
        let work = || -> Result<_, TaskError> {
            let cpu = trainyard_engine::device::DeviceSpec::Cpu.device()?;
            let net = trainyard_engine::train::load(&spec, &files.weights, &cpu)?;
            let graph = trainyard_engine::export::graph(&net, &spec, &name)?;
            let pruned = if task.structured {
                trainyard_models::prune::structured(&graph, task.ratio)
            } else {
                trainyard_models::prune::magnitude(&graph, task.ratio, task.global)
            }
            .map_err(|e| TaskError::Invalid(format!("{at}: {e}")))?;
            let (child_spec, child) = trainyard_engine::native::from_graph(&pruned.graph)?;
            let exported = crate::export::export_onnx(&child, &child_spec, &name)?;
            let weights = trainyard_engine::train::weights(&child)?;
            let parameters = trainyard_engine::train::parameters(&child);
            let (runtime, _) = crate::export::checking_runtime();
            let batches = eval_rows.read(None)?;
            let sample = batches
                .first()
                .cloned()
                .ok_or_else(|| TaskError::Invalid("the evaluation split has no rows".into()))?;
            let mut child_card = parent.card.clone();
            child_card.spec = child_spec;
            let parent_report =
                evaluate(runtime, &parent.onnx, &parent.input, &parent.card, &batches)?;
            let child_report = evaluate(
                runtime,
                &exported.onnx,
                &parent.input,
                &child_card,
                &batches,
            )?;
            let mut timing = serde_json::Map::new();
            for (rt, r) in timing_runtimes() {
                timing.insert(
                    rt.to_string(),
                    json!({
                        "parent": latency(r, &parent.onnx, &parent.input, &sample)?,
                        "child": latency(r, &exported.onnx, &parent.input, &sample)?,
                    }),
                );
            }
            Ok((
                pruned.layers,
                exported,
                weights,
                parameters,
                child_card,
                parent_report,
                child_report,
                Value::Object(timing),
            ))
        };
        let outcome = work();
        (parent, outcome)
    })
    .await?;
    let (layers, exported, weights, parameters, child_card, parent_report, child_report, timing) =
        outcome?;
    let invalid = |e: trainyard_models::ModelsError| TaskError::Invalid(e.to_string());
    let parent_parameters = quantize::parameters(&parent.onnx).map_err(invalid)?;
    let (metric, parent_score) = main_metric(&parent_report);
    let (_, child_score) = main_metric(&child_report);
    let report = json!({
        "parent": parent_ref,
        "method": method,
        "settings": settings,
        "eval": eval_described,
        "metric": metric,
        "parent_eval": parent_report,
        "child_eval": child_report,
        "accuracy_drop": parent_score - child_score,
        "size_bytes": {"parent": parent.onnx.len(), "child": exported.onnx.len()},
        "size_ratio": parent.onnx.len() as f64 / exported.onnx.len() as f64,
        "parameters": {"parent": parent_parameters, "child": parameters},
        "pruned": layers.iter().map(|l| json!({"layer": l.name, "before": l.before, "after": l.after})).collect::<Vec<_>>(),
        "latency_ms": timing,
    });
    print_report(&report);
    for l in &layers {
        println!("  {}: {} → {}", l.name, l.before, l.after);
    }
    run.upload(
        "compression/report.json",
        serde_json::to_vec_pretty(&report)?,
    )
    .await?;
    run.upload(&format!("model/{WEIGHTS_FILE}"), weights)
        .await?;
    run.upload(
        &format!("model/{CARD_FILE}"),
        serde_json::to_vec_pretty(&child_card)?,
    )
    .await?;
    let mut tags = crate::train::native_tags(&child_card, parameters);
    tags.extend(crate::train::onnx_tags(&exported));
    run.upload(&format!("model/{ONNX_FILE}"), exported.onnx)
        .await?;
    let dataset = task.eval.split(':').next().unwrap_or_default().to_string();
    let split = task.split.clone().unwrap_or_else(|| "all".into());
    tags.extend(lineage_tags(
        &parent,
        &parent_ref,
        method,
        &settings,
        &run,
        &report,
        metric,
        parent_score - child_score,
        &[],
    ));
    for (k, v) in crate::evaluate::version_tags(&child_report, &dataset, &split, &run.run_id) {
        tags.push((k, v.as_str().unwrap_or_default().to_string()));
    }
    let version = run
        .register(
            &parent.name,
            &run.artifact_uri("model"),
            &format!(
                "{parent_ref} pruned ({method} {}) by run {}",
                task.ratio, run.run_id
            ),
            &tags,
        )
        .await
        .map_err(|e| TaskError::from(e).context("registering the pruned version"))?;
    println!("registered model {}:{version}", parent.name);
    Ok(0)
}

/// The tags every compressed version carries: where it came from, how, and the report's
/// headline numbers.
#[allow(clippy::too_many_arguments)]
fn lineage_tags(
    parent: &Parent,
    parent_ref: &str,
    method: &str,
    settings: &Value,
    run: &RunClient,
    report: &Value,
    metric: &str,
    drop: f64,
    fell_back: &[String],
) -> Vec<(String, String)> {
    let mut tags: Vec<(String, String)> = Vec::new();
    for key in ["trainyard.task", "trainyard.signature", "trainyard.dataset"] {
        if let Some(v) = parent.tags.get(key) {
            tags.push((key.to_string(), v.clone()));
        }
    }
    tags.extend([
        ("trainyard.lineage".to_string(), "compressed".to_string()),
        ("trainyard.source".to_string(), parent_ref.to_string()),
        (
            LICENSE_TAG.to_string(),
            parent
                .tags
                .get(LICENSE_TAG)
                .cloned()
                .unwrap_or_else(|| UNKNOWN_LICENSE.to_string()),
        ),
        (
            "trainyard.compression.method".to_string(),
            method.to_string(),
        ),
        (
            "trainyard.compression.settings".to_string(),
            settings.to_string(),
        ),
        (
            "trainyard.compression.report".to_string(),
            run.artifact_uri("compression/report.json"),
        ),
        (
            "trainyard.compression.size_ratio".to_string(),
            format!("{:.3}", report["size_ratio"].as_f64().unwrap_or(0.0)),
        ),
        (
            format!("trainyard.compression.{metric}_drop"),
            format!("{drop:.6}"),
        ),
        (
            "trainyard.compression.fell_back".to_string(),
            fell_back.join(","),
        ),
    ]);
    tags
}

/// The version of `name` that run `run_id` registered, if it registered one.
pub async fn registered_by(
    client: &Client,
    name: &str,
    run_id: &str,
) -> Result<Option<String>, TaskError> {
    let found: Value = client
        .json(
            client
                .request(
                    reqwest::Method::GET,
                    "/api/2.0/mlflow/model-versions/search",
                )
                .query(&[("filter", format!("name='{}'", name.replace('\'', "''")))]),
        )
        .await?;
    Ok(found["model_versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["run_id"] == run_id)
        .and_then(|v| v["version"].as_str())
        .map(str::to_string))
}

/// The training file that fine-tunes `pruned` (`NAME:VERSION`) for `epochs` epochs: the one
/// that trained `parent` (kept with its run), starting from the pruned version's layers and
/// weights instead of its own model section.
pub async fn finetune_config(
    client: &Client,
    parent: &str,
    pruned: &str,
    epochs: u32,
) -> Result<trainyard_engine::config::TrainConfig, TaskError> {
    let (name, version) = parent
        .split_once(':')
        .ok_or_else(|| TaskError::Invalid(format!("{parent}: give NAME:VERSION")))?;
    let mv: Value = client
        .json(
            client
                .request(reqwest::Method::GET, "/api/2.0/mlflow/model-versions/get")
                .query(&[("name", name), ("version", version)]),
        )
        .await?;
    let run_id = mv["model_version"]["run_id"].as_str().unwrap_or_default();
    let trained = RunClient::for_run(client.clone(), run_id.to_string())
        .await?
        .download(crate::train::CONFIG_ARTIFACT)
        .await
        .map_err(|e| {
            TaskError::from(e).context(format!(
                "{parent} was not trained by `trainyard train` here: fine-tuning reuses its training file"
            ))
        })?;
    let text = String::from_utf8_lossy(&trained);
    let mut config = trainyard_engine::config::TrainConfig::parse(&text)?;
    config.model = trainyard_engine::spec::ModelSpec {
        from: Some(pruned.to_string()),
        ..Default::default()
    };
    config.training.epochs = epochs.into();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use trainyard_engine::spec::ResolvedSpec;
    use trainyard_engine::train::Head;
    use trainyard_models::graph::{Graph, Layer, NamedLayer, Weights};

    use super::*;

    fn card(outputs: usize) -> ModelCard {
        ModelCard {
            format: 1,
            spec: ResolvedSpec {
                input: vec![4],
                layers: Vec::new(),
                output: vec![outputs],
            },
            head: Head {
                task: Task::Classification,
                outputs,
            },
            input: "x".into(),
            target: "y".into(),
            image: None,
            dataset: String::new(),
            from: None,
        }
    }

    /// Evaluation rows are the user's data: a label outside the head's classes or a model
    /// whose output does not fit its card is refused, not scored (it indexed past the
    /// confusion matrix before).
    #[test]
    fn labels_outside_the_classes_and_outputs_of_another_size_are_refused() {
        let graph = Graph {
            name: "five".into(),
            sample_shape: vec![4],
            layers: vec![NamedLayer {
                name: "fc".into(),
                layer: Layer::Linear {
                    weight: Weights::new(vec![4, 5], vec![0.1; 20]),
                    bias: None,
                },
            }],
        };
        let onnx = trainyard_models::onnx::encode(&graph, Some(5)).unwrap();
        let batch = |labels: Vec<i64>| Batch {
            inputs: vec![0.5; 4 * labels.len()],
            sample_shape: vec![4],
            rows: labels.len(),
            targets: Some(Targets::Classes(labels)),
        };
        let tract = Tract;
        let ok = evaluate(&tract, &onnx, "input", &card(5), &[batch(vec![0, 4])]).unwrap();
        assert!(matches!(ok, Report::Classification(_)));
        for labels in [vec![0, 99], vec![-1, 0]] {
            let err = evaluate(&tract, &onnx, "input", &card(5), &[batch(labels.clone())])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("is not one of the model's 5 classes"),
                "{labels:?}: {err}"
            );
        }
        let err = evaluate(&tract, &onnx, "input", &card(3), &[batch(vec![0, 1])])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gave 10 values for 2 rows of 3 classes"),
            "{err}"
        );
        let err = evaluate(&tract, &onnx, "input", &card(0), &[batch(vec![0])])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no outputs"), "{err}");
    }
}
