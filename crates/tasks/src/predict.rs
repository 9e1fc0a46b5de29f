//! `trainyard task predict`: a model version over a dataset version, written as a new
//! dataset version (the input rows, their scores and the prediction), as a job.

use std::sync::Arc;

use trainyard_client::datasets::{self as remote, RemoteShards};
use trainyard_client::runs::RunClient;
use trainyard_data::{
    Column, ColumnType, Field, Manifest, ShardSink, ShardSource, Table, VersionWriter,
};
use trainyard_engine::config::Task;
use trainyard_engine::model::ModelCard;
use trainyard_engine::train;

use crate::evaluate::{load_model, loader_options};
use crate::TaskError;

pub struct PredictTask {
    pub model: String,
    pub dataset: String,
    pub output: String,
    pub device: String,
}

pub async fn predict(task: PredictTask) -> Result<i32, TaskError> {
    let run = RunClient::from_env().await?;
    let model = load_model(&run.client, &task.model, &task.device).await?;
    let version = remote::fetch_version(&run.client, &task.dataset).await?;
    let manifest = remote::manifest(&version)?;
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
        prediction_table(
            &manifest,
            source.as_ref(),
            &scores,
            &card,
            trainyard_data::Lineage {
                parent: Some(parent),
                source: Some(lineage_source),
                steps: Vec::new(),
            },
            &mut sink,
        )
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

/// The prediction dataset: the input rows (minus encoded images, which would only be
/// copied), with the model's `scores` and its `prediction` (class index, or value) beside
/// them, shard by shard in the input's order. `scores` holds every row's outputs in order.
pub fn prediction_table(
    manifest: &Manifest,
    source: &dyn ShardSource,
    scores: &[f32],
    card: &ModelCard,
    lineage: trainyard_data::Lineage,
    sink: &mut dyn ShardSink,
) -> Result<Manifest, TaskError> {
    let outputs = card.spec.outputs();
    if Some(scores.len()) != (manifest.rows as usize).checked_mul(outputs) {
        return Err(TaskError::Invalid(format!(
            "{} scores for {} rows of {outputs} outputs",
            scores.len(),
            manifest.rows
        )));
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
        let table = trainyard_data::read_shard(manifest, index, source, None)?;
        let rows = table.rows();
        let mut columns: Vec<Column> = kept
            .iter()
            .map(|f| {
                table.column(&f.name).cloned().ok_or_else(|| {
                    TaskError::Invalid(format!(
                        "shard {index} lacks column `{}` of its manifest",
                        f.name
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
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
        writer.push(Table::new(schema.clone(), columns)?, sink)?;
        offset += rows;
    }
    Ok(writer.finish(lineage, sink)?)
}
