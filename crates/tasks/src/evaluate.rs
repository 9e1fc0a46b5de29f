//! `trainyard task eval`: a registered model version over a dataset version, as a job. The
//! report stays with the eval run; the headline numbers are proposed for the model version
//! (the tag scheme below) and applied by `trainyard eval` with the user's token.

use std::sync::Arc;

use reqwest::Method;
use serde_json::json;
use trainyard_client::datasets::{self as remote, RemoteShards};
use trainyard_client::runs::{self as mlflow, Point, RunClient};
use trainyard_client::Client;
use trainyard_data::{LoaderOptions, Manifest, ShardSource};
use trainyard_engine::dataset::image_options;
use trainyard_engine::metrics::Report;
use trainyard_engine::model::{ModelCard, CARD_FILE, WEIGHTS_FILE};
use trainyard_engine::network::Network;
use trainyard_engine::train;

use crate::report::print_report;
use crate::TaskError;

/// A model version's card and network, ready to run.
pub struct LoadedModel {
    pub name: String,
    pub version: String,
    pub card: ModelCard,
    pub network: Network,
}

/// A model version's card and weights as stored, before a network is built from them.
pub struct ModelFiles {
    pub name: String,
    pub version: String,
    pub card: ModelCard,
    /// burnpack.
    pub weights: Vec<u8>,
}

/// Loads `NAME:VERSION` (or `NAME`, its latest) for `device`; a version the engine did not
/// train is refused by name.
pub async fn load_model(
    client: &Client,
    reference: &str,
    device: &str,
) -> Result<LoadedModel, TaskError> {
    let ModelFiles {
        name,
        version,
        card,
        weights,
    } = fetch_model(client, reference).await?;
    let device = trainyard_engine::device::parse(device)?.device()?;
    let network = train::load(&card.spec, &weights, &device)?;
    Ok(LoadedModel {
        name,
        version,
        card,
        network,
    })
}

/// Downloads the card and weights of `NAME:VERSION` (or `NAME`, its latest).
pub async fn fetch_model(client: &Client, reference: &str) -> Result<ModelFiles, TaskError> {
    let (name, version, uri) = mlflow::model_source(client, reference).await?;
    let card_bytes = mlflow::download_uri(client, &format!("{uri}/{CARD_FILE}"))
        .await
        .map_err(|e| {
            TaskError::from(e).context(format!(
                "{name}:{version} is not a model the built-in engine trained"
            ))
        })?;
    let card: ModelCard =
        serde_json::from_slice(&card_bytes).map_err(|source| TaskError::Unreadable {
            what: format!("{name}:{version}: unreadable {CARD_FILE}"),
            source,
        })?;
    let weights = mlflow::download_uri(client, &format!("{uri}/{WEIGHTS_FILE}")).await?;
    Ok(ModelFiles {
        name,
        version,
        card,
        weights,
    })
}

/// Which rows: the named split when the dataset has a split column, else every row.
fn split_filter(
    manifest: &Manifest,
    split: Option<&str>,
    column: &str,
) -> Result<Option<(String, String)>, TaskError> {
    match split {
        None => Ok(None),
        Some(s) if manifest.field(column).is_some() => {
            Ok(Some((column.to_string(), s.to_string())))
        }
        Some(s) => Err(TaskError::Invalid(format!(
            "--split {s}: the dataset has no `{column}` column; leave --split out to use every row"
        ))),
    }
}

pub(crate) fn loader_options(
    card: &ModelCard,
    filter: Option<(String, String)>,
    target: bool,
) -> LoaderOptions {
    LoaderOptions {
        batch_size: 256,
        seed: 0,
        epoch: 0,
        shuffle: false,
        drop_last: false,
        input: card.input.clone(),
        target: target.then(|| card.target.clone()),
        filter,
        prefetch: 4,
        workers: if card.image.is_some() { 2 } else { 1 },
        image: card.image.as_ref().map(|i| image_options(i, false)),
    }
}

pub struct EvalTask {
    pub model: String,
    pub dataset: String,
    pub split: Option<String>,
    pub split_column: String,
    pub device: String,
    pub top_k: usize,
}

pub async fn eval(task: EvalTask) -> Result<i32, TaskError> {
    let run = RunClient::from_env().await?;
    let model = load_model(&run.client, &task.model, &task.device).await?;
    let version = remote::fetch_version(&run.client, &task.dataset).await?;
    let manifest = remote::manifest(&version)?;
    let filter = split_filter(&manifest, task.split.as_deref(), &task.split_column)?;
    println!(
        "evaluating {}:{} on {}{}",
        model.name,
        model.version,
        version.reference(),
        filter
            .as_ref()
            .map(|(_, s)| format!(" (split {s})"))
            .unwrap_or_default()
    );
    run.log_params(&[
        ("model".into(), format!("{}:{}", model.name, model.version)),
        ("dataset".into(), version.reference()),
        (
            "split".into(),
            task.split.clone().unwrap_or_else(|| "all".into()),
        ),
    ])
    .await?;
    let source: Arc<dyn ShardSource> = Arc::new(RemoteShards::new(
        run.client.clone(),
        Some(remote::cache_dir()),
    )?);
    let options = loader_options(&model.card, filter, true);
    let head = model.card.head;
    let top_k = task.top_k;
    let network = model.network;
    let report = tokio::task::spawn_blocking(move || {
        let batches = trainyard_data::batches(&manifest, source, options)?;
        Ok::<_, TaskError>(train::evaluate(&network, Box::new(batches), head, top_k)?.0)
    })
    .await??;

    let split = task.split.clone().unwrap_or_else(|| "all".into());
    print_report(&report, &split);
    if let Report::Classification(r) = &report {
        println!("per class (precision / recall / f1 / support):");
        for c in &r.per_class {
            println!(
                "  {:>3}  {:.4}  {:.4}  {:.4}  {}",
                c.class, c.precision, c.recall, c.f1, c.support
            );
        }
    }
    let scalars = report.scalars("eval_");
    run.log_metrics(
        &scalars
            .iter()
            .map(|(k, v)| Point {
                key: k.clone(),
                value: *v,
                step: 0,
            })
            .collect::<Vec<_>>(),
    )
    .await?;
    let document = json!({
        "model": format!("{}:{}", model.name, model.version),
        "dataset": version.reference(),
        "split": split,
        "report": report,
    });
    run.upload("eval/report.json", serde_json::to_vec_pretty(&document)?)
        .await?;
    // The headline numbers belong on the model version, where people compare versions. A
    // job's token may not tag a version another run registered, so the task proposes them
    // on its own run and `trainyard eval` applies them with the user's token.
    let tags = version_tags(&report, &version.name, &split, &run.run_id);
    run.set_tag(
        VERSION_TAGS_TAG,
        &serde_json::to_string(&json!({
            "name": model.name,
            "version": model.version,
            "tags": tags,
        }))?,
    )
    .await?;
    Ok(0)
}

/// The tags an evaluation puts on the version it evaluated: its headline numbers and the
/// run that measured them, under `eval.<dataset>.<split>.`.
pub fn version_tags(
    report: &Report,
    dataset: &str,
    split: &str,
    run_id: &str,
) -> serde_json::Map<String, serde_json::Value> {
    let mut tags = serde_json::Map::new();
    for (key, value) in report.scalars("") {
        if matches!(key.as_str(), "accuracy" | "f1_macro" | "mse" | "r2") {
            tags.insert(
                format!("eval.{dataset}.{split}.{key}"),
                json!(format!("{value:.6}")),
            );
        }
    }
    tags.insert(format!("eval.{dataset}.{split}.run"), json!(run_id));
    tags
}

/// The run tag in which an evaluation proposes tags for the version it evaluated:
/// `{"name", "version", "tags": {key: value}}`.
pub const VERSION_TAGS_TAG: &str = "trainyard.eval.versionTags";

/// Applies what an evaluation run proposed (see [`VERSION_TAGS_TAG`]) to the model version,
/// with the caller's token; returns how many tags were set. The run is the job's to write,
/// so what it says is checked: only the version that was evaluated (`name`, `version`), and
/// only `eval.` keys.
pub async fn apply_version_tags(
    client: &Client,
    run_id: &str,
    name: &str,
    version: &str,
) -> Result<usize, TaskError> {
    let run: serde_json::Value = client
        .json(client.request(
            Method::GET,
            &format!("/api/2.0/mlflow/runs/get?run_id={run_id}"),
        ))
        .await?;
    let proposed = run["run"]["data"]["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["key"] == VERSION_TAGS_TAG)
        .and_then(|t| t["value"].as_str())
        .map(serde_json::from_str::<serde_json::Value>)
        .transpose()
        .map_err(|source| TaskError::Unreadable {
            what: format!("run {run_id}: {VERSION_TAGS_TAG}"),
            source,
        })?;
    let Some(proposed) = proposed else {
        return Ok(0);
    };
    if proposed["name"].as_str() != Some(name) || proposed["version"].as_str() != Some(version) {
        return Err(TaskError::Invalid(format!(
            "run {run_id}: {VERSION_TAGS_TAG} names another model version than {name}:{version}; not applied"
        )));
    }
    let mut n = 0;
    for (key, value) in proposed["tags"].as_object().into_iter().flatten() {
        if !key.starts_with("eval.") {
            return Err(TaskError::Invalid(format!(
                "run {run_id}: {VERSION_TAGS_TAG} proposes `{key}`, not an eval. tag; not applied"
            )));
        }
        let value = value.as_str().unwrap_or_default();
        set_version_tag(client, name, version, key, value).await?;
        n += 1;
    }
    Ok(n)
}

async fn set_version_tag(
    client: &Client,
    name: &str,
    version: &str,
    key: &str,
    value: &str,
) -> Result<(), TaskError> {
    client
        .send(
            client
                .request(Method::POST, "/api/2.0/mlflow/model-versions/set-tag")
                .json(&json!({"name": name, "version": version, "key": key, "value": value})),
        )
        .await?;
    Ok(())
}
