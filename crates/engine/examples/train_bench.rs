//! Training throughput of the engine on synthetic data, for `bench/training`: the same
//! models, batch sizes, optimizer and step counts as `bench/training/pytorch_train.py`, and
//! the same one-line JSON result. Run in release:
//! `cargo run --release -p trainyard-engine --example train_bench -- --model cnn --steps 40`.

use std::time::Instant;

use trainyard_data::{Batch, Targets};
use trainyard_engine::checkpoint::Checkpoint;
use trainyard_engine::config::{CheckpointConfig, TrainingConfig};
use trainyard_engine::spec::parse_model;
use trainyard_engine::train::{Batches, Head, Observer, TrainData, Trainer};
use trainyard_engine::EngineError;

struct Synthetic {
    inputs: Vec<Vec<f32>>,
    targets: Vec<Vec<i64>>,
    shape: Vec<usize>,
    batch: usize,
    steps: u64,
}

impl TrainData for Synthetic {
    fn train(&self, _epoch: u64, start: u64) -> Result<Batches<'_>, EngineError> {
        let n = self.inputs.len();
        Ok(Box::new((start..self.steps).map(move |i| {
            let k = i as usize % n;
            Ok(Batch {
                inputs: self.inputs[k].clone(),
                sample_shape: self.shape.clone(),
                rows: self.batch,
                targets: Some(Targets::Classes(self.targets[k].clone())),
            })
        })))
    }
    fn batches_per_epoch(&self) -> Result<u64, EngineError> {
        Ok(self.steps)
    }
    fn eval(&self) -> Result<Option<Batches<'_>>, EngineError> {
        Ok(None)
    }
}

/// Starts the clock after the warm-up steps.
struct Clock {
    warmup: u64,
    started: Option<Instant>,
}

impl Observer for Clock {
    fn step(&mut self, step: u64, _: u64, _: &[(String, f64)]) -> Result<(), EngineError> {
        if step == self.warmup {
            self.started = Some(Instant::now());
        }
        Ok(())
    }
    fn epoch(&mut self, _: u64, _: u64, _: &[(String, f64)]) -> Result<(), EngineError> {
        Ok(())
    }
    fn checkpoint(&mut self, _: &Checkpoint, _: bool) -> Result<(), EngineError> {
        Ok(())
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = arg(&args, "--model").unwrap_or_else(|| "mlp".into());
    let device = arg(&args, "--device").unwrap_or_else(|| "cpu".into());
    let (spec, shape, default_batch) = match model.as_str() {
        "mlp" => (
            "architecture = \"mlp\"\nhidden = [256, 128]\n",
            vec![784],
            128,
        ),
        "cnn" => ("architecture = \"cnn\"\n", vec![1, 28, 28], 64),
        other => panic!("--model mlp|cnn, not {other}"),
    };
    let batch: usize = arg(&args, "--batch").map_or(default_batch, |v| v.parse().unwrap());
    let steps: u64 = arg(&args, "--steps").map_or(100, |v| v.parse().unwrap());
    let warmup: u64 = arg(&args, "--warmup").map_or(10, |v| v.parse().unwrap());

    let per_sample: usize = shape.iter().product();
    // 8192 samples, like the PyTorch side: standard-normal-ish inputs, random labels.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let batches = 8192 / batch;
    let inputs: Vec<Vec<f32>> = (0..batches)
        .map(|_| {
            (0..batch * per_sample)
                .map(|_| ((next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
                .collect()
        })
        .collect();
    let targets: Vec<Vec<i64>> = (0..batches)
        .map(|_| (0..batch).map(|_| (next() % 10) as i64).collect())
        .collect();
    let data = Synthetic {
        inputs,
        targets,
        shape: shape.clone(),
        batch,
        steps: warmup + steps,
    };
    let resolved = parse_model(spec)
        .unwrap()
        .resolve(Some(&shape), Some(10), "model")
        .unwrap();
    let training = TrainingConfig {
        epochs: 1,
        batch_size: batch,
        device: device.clone(),
        ..TrainingConfig::default()
    };
    let checkpoints = CheckpointConfig {
        every_epochs: 0,
        ..CheckpointConfig::default()
    };
    let trainer = Trainer {
        config: &training,
        checkpoints: &checkpoints,
        spec: &resolved,
        head: Head {
            task: trainyard_engine::config::Task::Classification,
            outputs: 10,
        },
        initial: None,
        frozen: &[],
        teacher: None,
    };
    let mut clock = Clock {
        warmup,
        started: None,
    };
    trainer.run(&data, None, &mut clock).unwrap();
    let elapsed = clock.started.unwrap().elapsed().as_secs_f64();
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    println!(
        "{{\"framework\":\"trainyard\",\"model\":\"{model}\",\"device\":\"{device}\",\"threads\":\"{threads}\",\"batch\":{batch},\"steps\":{steps},\"warmup_steps\":{warmup},\"samples_per_s\":{:.1}}}",
        (steps as usize * batch) as f64 / elapsed
    );
}
