//! Training data from a dataset version: the train and eval splits of one manifest,
//! streamed by the data crate's loader in the order fixed by (seed, epoch).

use std::sync::Arc;

use trainyard_data::{ColumnType, ImageOptions, LoaderOptions, Manifest, ShardSource};

use crate::config::{DataConfig, ImageConfig, Task};
use crate::train::{Batches, Head, TrainData};
use crate::EngineError;

pub struct DatasetData {
    pub manifest: Manifest,
    pub source: Arc<dyn ShardSource>,
    pub data: DataConfig,
    pub batch_size: usize,
    pub seed: u64,
}

impl DatasetData {
    fn options(&self, split: Option<&String>, epoch: u64, training: bool) -> LoaderOptions {
        LoaderOptions {
            batch_size: self.batch_size,
            seed: self.seed,
            epoch,
            shuffle: training,
            drop_last: false,
            input: self.data.input.clone(),
            target: Some(self.data.target.clone()),
            filter: split.map(|s| (self.data.split_column.clone(), s.clone())),
            prefetch: 4,
            workers: if self.data.image.is_some() { 2 } else { 1 },
            image: self.data.image.as_ref().map(|i| image_options(i, training)),
        }
    }
}

/// Loader options for an image column; augmentation only while training.
pub fn image_options(image: &ImageConfig, training: bool) -> ImageOptions {
    ImageOptions {
        channels: image.channels,
        height: image.height,
        width: image.width,
        scale: 1.0 / 255.0,
        random_crop_padding: if training {
            image.random_crop_padding
        } else {
            0
        },
        horizontal_flip: training && image.horizontal_flip,
    }
}

impl TrainData for DatasetData {
    fn train(&self, epoch: u64, start: u64) -> Result<Batches<'_>, EngineError> {
        let opts = self.options(self.data.train_split.as_ref(), epoch, true);
        let mut iter = trainyard_data::batches(&self.manifest, self.source.clone(), opts)?;
        iter.skip_batches(start as usize);
        Ok(Box::new(iter))
    }

    fn batches_per_epoch(&self) -> Result<u64, EngineError> {
        let opts = self.options(self.data.train_split.as_ref(), 0, true);
        Ok(trainyard_data::count_batches(&self.manifest, self.source.as_ref(), &opts)? as u64)
    }

    fn eval(&self) -> Result<Option<Batches<'_>>, EngineError> {
        let Some(split) = &self.data.eval_split else {
            return Ok(None);
        };
        let opts = self.options(Some(split), 0, false);
        Ok(Some(Box::new(trainyard_data::batches(
            &self.manifest,
            self.source.clone(),
            opts,
        )?)))
    }
}

/// The per-sample shape the input column gives.
pub fn sample_shape(
    manifest: &Manifest,
    input: &str,
    image: Option<&ImageConfig>,
) -> Result<Vec<usize>, EngineError> {
    let field = manifest
        .field(input)
        .ok_or_else(|| missing("data.input", input, manifest))?;
    match (&field.dtype, image) {
        (ColumnType::Float32 { shape }, _) if shape.is_empty() => Ok(vec![1]),
        (ColumnType::Float32 { shape }, _) => Ok(shape.clone()),
        (ColumnType::Int64, _) => Ok(vec![1]),
        (ColumnType::Bytes, Some(i)) => Ok(vec![i.channels, i.height, i.width]),
        (ColumnType::Bytes, None) => Err(EngineError::Spec(format!(
            "data.image: column `{input}` holds encoded images; say how to decode them with [data.image] height, width (and channels)"
        ))),
        (other, _) => Err(EngineError::Data(format!(
            "data.input: column `{input}` is {other:?}; a model input must be numeric or an image"
        ))),
    }
}

/// The head a task needs from the target column: the class count (largest label + 1) or
/// one regression output.
pub fn head(manifest: &Manifest, target: &str, task: Task) -> Result<Head, EngineError> {
    let field = manifest
        .field(target)
        .ok_or_else(|| missing("data.target", target, manifest))?;
    match (task, &field.dtype) {
        (Task::Classification, ColumnType::Int64) => {
            let max = manifest
                .stats
                .get(target)
                .and_then(|s| s.max)
                .ok_or_else(|| {
                    EngineError::Data(format!("data.target: column `{target}` has no values"))
                })?;
            let min = manifest
                .stats
                .get(target)
                .and_then(|s| s.min)
                .unwrap_or(0.0);
            if min < 0.0 {
                return Err(EngineError::Data(format!(
                    "data.target: class labels must be 0 or more; column `{target}` holds {min}"
                )));
            }
            Ok(Head {
                task,
                outputs: max as usize + 1,
            })
        }
        (Task::Regression, ColumnType::Float32 { shape }) if shape.is_empty() => {
            Ok(Head { task, outputs: 1 })
        }
        (Task::Regression, ColumnType::Int64) => Ok(Head { task, outputs: 1 }),
        (task, other) => Err(EngineError::Data(format!(
            "data.target: column `{target}` is {other:?}; {task:?} needs {}",
            match task {
                Task::Classification =>
                    "an int64 class column (label_encode a string column first)",
                Task::Regression => "a float32 scalar column",
            }
        ))),
    }
}

fn missing(field: &str, name: &str, manifest: &Manifest) -> EngineError {
    let columns: Vec<&str> = manifest.schema.iter().map(|f| f.name.as_str()).collect();
    EngineError::Data(format!(
        "{field}: the dataset has no column `{name}`; it has {}",
        columns.join(", ")
    ))
}
