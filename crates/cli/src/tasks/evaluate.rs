//! `trainyard task eval` and `trainyard task predict`: a registered model version over a
//! dataset version, as jobs. Evaluation keeps its report with the eval run and tags the
//! model version with the headline numbers; prediction writes a new dataset version.

use std::sync::Arc;

use anyhow::{anyhow, Context};
use reqwest::Method;
use serde_json::json;
use trainyard_data::{
    Column, ColumnType, Field, LoaderOptions, Manifest, ShardSource, Table, VersionWriter,
};
use trainyard_engine::config::Task;
use trainyard_engine::dataset::image_options;
use trainyard_engine::metrics::Report;
use trainyard_engine::model::{ModelCard, CARD_FILE, WEIGHTS_FILE};
use trainyard_engine::network::Network;
use trainyard_engine::train;

use crate::client::Client;
use crate::remote::{self, RemoteShards, VersionView};
use crate::tasks::mlflow::{self, Point, RunClient};

/// A model version's card and network, ready to run.
pub struct LoadedModel {
    pub name: String,
    pub version: String,
    pub card: ModelCard,
    pub network: Network,
}

pub async fn load_model(
    client: &Client,
    reference: &str,
    device: &str,
) -> anyhow::Result<LoadedModel> {
    let (name, version, uri) = mlflow::model_source(client, reference).await?;
    let card_bytes = mlflow::download_uri(client, &format!("{uri}/{CARD_FILE}"))
        .await
        .with_context(|| format!("{name}:{version} is not a model the built-in engine trained"))?;
    let card: ModelCard = serde_json::from_slice(&card_bytes)
        .with_context(|| format!("{name}:{version}: unreadable {CARD_FILE}"))?;
    let weights = mlflow::download_uri(client, &format!("{uri}/{WEIGHTS_FILE}")).await?;
    let device = trainyard_engine::device::parse(device)?.device()?;
    let network = train::load(&card.spec, &weights, &device)?;
    Ok(LoadedModel {
        name,
        version,
        card,
        network,
    })
}

/// Which rows: the named split when the dataset has a split column, else every row.
fn split_filter(
    manifest: &Manifest,
    split: Option<&str>,
    column: &str,
) -> anyhow::Result<Option<(String, String)>> {
    match split {
        None => Ok(None),
        Some(s) if manifest.field(column).is_some() => {
            Ok(Some((column.to_string(), s.to_string())))
        }
        Some(s) => Err(anyhow!(
            "--split {s}: the dataset has no `{column}` column; leave --split out to use every row"
        )),
    }
}

fn loader_options(
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

pub async fn eval(task: EvalTask) -> anyhow::Result<i32> {
    let run = RunClient::from_env().await?;
    let model = load_model(&run.client, &task.model, &task.device).await?;
    let version = remote::fetch_version(&run.client, &task.dataset).await?;
    let manifest = version.manifest()?;
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
        anyhow::Ok(train::evaluate(&network, Box::new(batches), head, top_k)?.0)
    })
    .await??;

    let split = task.split.clone().unwrap_or_else(|| "all".into());
    crate::tasks::train::print_report(&report, &split);
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
    let dataset_name = &version.name;
    let mut tags = serde_json::Map::new();
    for (key, value) in report.scalars("") {
        if matches!(key.as_str(), "accuracy" | "f1_macro" | "mse" | "r2") {
            tags.insert(
                format!("eval.{dataset_name}.{split}.{key}"),
                json!(format!("{value:.6}")),
            );
        }
    }
    tags.insert(
        format!("eval.{dataset_name}.{split}.run"),
        json!(run.run_id),
    );
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
) -> anyhow::Result<usize> {
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
        .transpose()?;
    let Some(proposed) = proposed else {
        return Ok(0);
    };
    if proposed["name"].as_str() != Some(name) || proposed["version"].as_str() != Some(version) {
        anyhow::bail!(
            "run {run_id}: {VERSION_TAGS_TAG} names another model version than {name}:{version}; not applied"
        );
    }
    let mut n = 0;
    for (key, value) in proposed["tags"].as_object().into_iter().flatten() {
        if !key.starts_with("eval.") {
            anyhow::bail!(
                "run {run_id}: {VERSION_TAGS_TAG} proposes `{key}`, not an eval. tag; not applied"
            );
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
) -> anyhow::Result<()> {
    client
        .send(
            client
                .request(Method::POST, "/api/2.0/mlflow/model-versions/set-tag")
                .json(&json!({"name": name, "version": version, "key": key, "value": value})),
        )
        .await?;
    Ok(())
}

pub struct PredictTask {
    pub model: String,
    pub dataset: String,
    pub output: String,
    pub device: String,
}

pub async fn predict(task: PredictTask) -> anyhow::Result<i32> {
    let run = RunClient::from_env().await?;
    let model = load_model(&run.client, &task.model, &task.device).await?;
    let version: VersionView = remote::fetch_version(&run.client, &task.dataset).await?;
    let manifest = version.manifest()?;
    let source = Arc::new(RemoteShards::new(
        run.client.clone(),
        Some(remote::cache_dir()),
    )?);
    let mut sink = RemoteShards::new(run.client.clone(), None)?;
    let options = loader_options(&model.card, None, false);
    let card = model.card.clone();
    let network = model.network;
    let lineage_source = format!("predict:{}:{}", model.name, model.version);
    let parent = version.version.clone();
    println!(
        "predicting with {}:{} over {} ({} rows)",
        model.name,
        model.version,
        version.reference(),
        version.rows
    );
    let out = tokio::task::spawn_blocking(move || {
        let outputs = card.spec.outputs();
        let mut scores = Vec::with_capacity(manifest.rows as usize * outputs);
        let loader_source: Arc<dyn ShardSource> = source.clone();
        for batch in trainyard_data::batches(&manifest, loader_source, options)? {
            scores.extend(train::predict(&network, &batch?)?);
        }
        // The input rows (minus encoded images, which would only be copied) with the model's
        // outputs beside them.
        let kept: Vec<Field> = manifest
            .schema
            .iter()
            .filter(|f| f.dtype != ColumnType::Bytes)
            .cloned()
            .collect();
        let mut schema = kept.clone();
        schema.push(Field::new(
            "scores",
            ColumnType::Float32 {
                shape: vec![outputs],
            },
        ));
        schema.push(Field::new(
            "prediction",
            match card.head.task {
                Task::Classification => ColumnType::Int64,
                Task::Regression => ColumnType::f32_scalar(),
            },
        ));
        let mut writer = VersionWriter::new(schema.clone(), trainyard_data::DEFAULT_SHARD_ROWS);
        let mut offset = 0usize;
        for index in 0..manifest.shards.len() {
            let table = trainyard_data::read_shard(&manifest, index, source.as_ref(), None)?;
            let rows = table.rows();
            let mut columns: Vec<Column> = kept
                .iter()
                .map(|f| {
                    table
                        .column(&f.name)
                        .cloned()
                        .expect("the shard has its schema")
                })
                .collect();
            let part = scores[offset * outputs..(offset + rows) * outputs].to_vec();
            let prediction = match card.head.task {
                Task::Classification => Column::Int64(
                    part.chunks_exact(outputs)
                        .map(|row| trainyard_engine::metrics::argmax(row) as i64)
                        .collect(),
                ),
                Task::Regression => Column::Float32 {
                    shape: vec![],
                    values: part.clone(),
                },
            };
            columns.push(Column::Float32 {
                shape: vec![outputs],
                values: part,
            });
            columns.push(prediction);
            writer.push(Table::new(schema.clone(), columns)?, &mut sink)?;
            offset += rows;
        }
        let manifest = writer.finish(
            trainyard_data::Lineage {
                parent: Some(parent),
                source: Some(lineage_source),
                steps: Vec::new(),
            },
            &mut sink,
        )?;
        anyhow::Ok(manifest)
    })
    .await??;
    let created = remote::commit_version(&run.client, &task.output, &out).await?;
    println!(
        "wrote {}:{} ({} rows)",
        created.name,
        &created.version[..12.min(created.version.len())],
        out.rows
    );
    Ok(0)
}
