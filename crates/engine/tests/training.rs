//! The training loop over real dataset versions (shards in memory, the real loader): it
//! learns, it is deterministic, a resumed run equals the uninterrupted one bit for bit, a
//! diverging loss stops it, and every layer type trains.

use std::sync::Arc;

use trainyard_data::{
    Column, ColumnType, Field, Lineage, MemStore, ShardSource, Table, VersionWriter,
};
use trainyard_engine::checkpoint::Checkpoint;
use trainyard_engine::config::{DataConfig, OnNan, TrainConfig};
use trainyard_engine::dataset::{self, DatasetData};
use trainyard_engine::metrics::Report;
use trainyard_engine::train::{self, Observer, Outcome, Trainer};
use trainyard_engine::EngineError;

/// Two noisy Gaussian blobs in 8 dimensions, with a train/test split column.
fn blobs(store: &mut MemStore, rows: usize) -> trainyard_data::Manifest {
    let mut state = 42u64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32
    };
    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut split = Vec::new();
    for i in 0..rows {
        let class = (i % 2) as i64;
        for d in 0..8 {
            let centre = if class == 1 && d < 4 { 1.5 } else { 0.0 };
            x.push(centre + (uniform() - 0.5) * 2.0);
        }
        y.push(class);
        split.push(if i % 5 == 0 { "test" } else { "train" }.to_string());
    }
    let schema = vec![
        Field::new("x", ColumnType::Float32 { shape: vec![8] }),
        Field::new("y", ColumnType::Int64),
        Field::new("split", ColumnType::String),
    ];
    let table = Table::new(
        schema.clone(),
        vec![
            Column::Float32 {
                shape: vec![8],
                values: x,
            },
            Column::Int64(y),
            Column::String(split),
        ],
    )
    .unwrap();
    // Small shards, so shuffling crosses shard boundaries.
    let mut writer = VersionWriter::new(schema, 64);
    writer.push(table, store).unwrap();
    writer.finish(Lineage::default(), store).unwrap()
}

fn config(extra: &str) -> TrainConfig {
    let optimizer = if extra.contains("optimizer") {
        ""
    } else {
        "optimizer = { kind = \"adam\", lr = 0.01 }"
    };
    let seed = if extra.contains("seed") {
        ""
    } else {
        "seed = 3"
    };
    TrainConfig::parse(&format!(
        r#"
name = "blobs"
[data]
dataset = "blobs"
input = "x"
target = "y"
[model]
architecture = "mlp"
hidden = [16]
dropout = 0.2
[training]
epochs = 4
batch_size = 16
{seed}
{optimizer}
{extra}
[checkpoints]
every_epochs = 0
every_steps = 7
keep_last = 100
"#
    ))
    .unwrap()
}

#[derive(Default)]
struct Recorder {
    checkpoints: Vec<Checkpoint>,
    epochs: Vec<Vec<(String, f64)>>,
}

impl Observer for Recorder {
    fn step(&mut self, _: u64, _: u64, _: &[(String, f64)]) -> Result<(), EngineError> {
        Ok(())
    }
    fn epoch(&mut self, _: u64, _: u64, metrics: &[(String, f64)]) -> Result<(), EngineError> {
        self.epochs.push(metrics.to_vec());
        Ok(())
    }
    fn checkpoint(&mut self, checkpoint: &Checkpoint, _: bool) -> Result<(), EngineError> {
        self.checkpoints.push(checkpoint.clone());
        Ok(())
    }
}

struct Setup {
    config: TrainConfig,
    data: DatasetData,
}

fn setup(extra: &str) -> Setup {
    let mut store = MemStore::new();
    let manifest = blobs(&mut store, 400);
    let config = config(extra);
    let data = DatasetData {
        manifest,
        source: Arc::new(store) as Arc<dyn ShardSource>,
        data: config.data.clone(),
        batch_size: config.training.batch_size,
        seed: config.training.seed,
    };
    Setup { config, data }
}

fn train(
    s: &Setup,
    resume: Option<Checkpoint>,
) -> Result<(Vec<u8>, Outcome, Recorder), EngineError> {
    let shape = dataset::sample_shape(&s.data.manifest, "x", None)?;
    let head = dataset::head(&s.data.manifest, "y", s.config.training.task)?;
    let spec = s
        .config
        .model
        .resolve(Some(&shape), Some(head.outputs), "model")?;
    let trainer = Trainer {
        config: &s.config.training,
        checkpoints: &s.config.checkpoints,
        spec: &spec,
        head,
        initial: None,
        frozen: &[],
        teacher: None,
    };
    let mut recorder = Recorder::default();
    let (net, outcome) = trainer.run(&s.data, resume, &mut recorder)?;
    Ok((train::weights(&net)?, outcome, recorder))
}

/// burn seeds its CPU backend's random numbers process-wide: tests that train take turns,
/// as separate training processes do in production.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn accuracy(outcome: &Outcome) -> f64 {
    match outcome.report.as_ref().unwrap() {
        Report::Classification(r) => r.accuracy,
        other => panic!("{other:?}"),
    }
}

#[test]
fn learns_and_is_deterministic() {
    let _serial = serial();
    let s = setup("");
    let (w1, o1, r1) = train(&s, None).unwrap();
    assert!(accuracy(&o1) > 0.9, "{:?}", o1.report);
    assert_eq!(r1.epochs.len(), 4);
    let first_loss = r1.epochs[0]
        .iter()
        .find(|(k, _)| k == "train_loss")
        .unwrap()
        .1;
    let last_loss = r1.epochs[3]
        .iter()
        .find(|(k, _)| k == "train_loss")
        .unwrap()
        .1;
    assert!(last_loss < first_loss, "{first_loss} -> {last_loss}");

    let (w2, o2, r2) = train(&s, None).unwrap();
    assert_eq!(w1, w2, "same seed, different weights");
    assert_eq!(o1.report, o2.report);
    assert_eq!(r1.epochs, r2.epochs);

    let other = setup("seed = 4");
    let (w3, _, _) = train(&other, None).unwrap();
    assert_ne!(w1, w3, "a different seed should change the weights");
}

#[test]
fn resume_from_any_checkpoint_is_exact() {
    let _serial = serial();
    let s = setup("");
    let (weights, outcome, recorder) = train(&s, None).unwrap();
    // 320 training rows / 16 = 20 batches per epoch; a checkpoint every 7 steps lands
    // mid-epoch (7, 14, 21, ...), plus one at the end.
    assert!(recorder.checkpoints.len() >= 10);
    for ck in [&recorder.checkpoints[1], &recorder.checkpoints[5]] {
        assert!(ck.state.batch > 0, "a mid-epoch checkpoint: {:?}", ck.state);
        let decoded = Checkpoint::decode(&ck.encode()).unwrap();
        let (w, o, r) = train(&s, Some(decoded)).unwrap();
        assert_eq!(w, weights, "resumed from step {}", ck.state.step);
        assert_eq!(o.report, outcome.report);
        assert_eq!(r.epochs.last(), recorder.epochs.last());
    }
}

#[test]
fn a_diverging_loss_fails_or_skips_as_configured() {
    let _serial = serial();
    let s = setup("optimizer = { kind = \"sgd\", lr = 1e30 }");
    let text = match train(&s, None) {
        Ok(_) => panic!("a loss of 1e30-scaled updates stayed finite"),
        Err(e) => e.to_string(),
    };
    assert!(
        text.starts_with("loss became NaN at step")
            || text.starts_with("loss became infinite at step"),
        "{text}"
    );

    let mut s = setup("optimizer = { kind = \"sgd\", lr = 1e30 }");
    s.config.training.on_nan = OnNan::Skip;
    let (_, outcome, _) = train(&s, None).unwrap();
    assert!(outcome.state.skipped_batches > 0);
}

#[test]
fn wrong_columns_are_named() {
    let s = setup("");
    let err = dataset::sample_shape(&s.data.manifest, "pixels", None).unwrap_err();
    assert!(
        err.to_string()
            .contains("no column `pixels`; it has x, y, split"),
        "{err}"
    );
    let err = dataset::head(&s.data.manifest, "x", s.config.training.task).unwrap_err();
    assert!(err.to_string().contains("data.target: column `x`"), "{err}");
    let bad = DataConfig {
        input: "y".into(),
        ..s.config.data.clone()
    };
    assert_eq!(
        dataset::sample_shape(&s.data.manifest, &bad.input, None).unwrap(),
        vec![1]
    );
}

/// Every named architecture (and so every layer type) runs forward and backward.
#[test]
fn every_architecture_trains_a_step() {
    let _serial = serial();
    let cases = [
        ("architecture = \"cnn\"\nchannels = [4, 8]\ndense = [16]\n", vec![1, 8, 8], false),
        ("architecture = \"resnet\"\nwidth = 4\nblocks = [1, 1]\n", vec![3, 8, 8], false),
        (
            "architecture = \"transformer_classifier\"\nvocab = 20\ndim = 8\nheads = 2\ndepth = 1\n",
            vec![6],
            true,
        ),
        (
            "[[layers]]\ntype = \"layer_norm\"\n[[layers]]\ntype = \"linear\"\nout_features = 8\n[[layers]]\ntype = \"gelu\"\n[[layers]]\ntype = \"batch_norm\"\n[[layers]]\ntype = \"residual\"\nlayers = [{ type = \"linear\", out_features = 8 }, { type = \"tanh\" }]\n[[layers]]\ntype = \"sigmoid\"\n[[layers]]\ntype = \"linear\"\nout_features = 3\n[[layers]]\ntype = \"softmax\"\n",
            vec![5],
            false,
        ),
        (
            "[[layers]]\ntype = \"avg_pool2d\"\nkernel = 2\n[[layers]]\ntype = \"global_avg_pool\"\n[[layers]]\ntype = \"linear\"\nout_features = 3\n",
            vec![2, 4, 4],
            false,
        ),
        (
            "[[layers]]\ntype = \"embedding\"\nvocab = 10\ndim = 4\n[[layers]]\ntype = \"attention\"\nheads = 2\n[[layers]]\ntype = \"mean_pool\"\n[[layers]]\ntype = \"linear\"\nout_features = 3\n",
            vec![5],
            true,
        ),
    ];
    for (text, shape, tokens) in cases {
        let per: usize = shape.iter().product();
        let rows = 12;
        let values: Vec<f32> = (0..rows * per)
            .map(|i| {
                if tokens {
                    (i % 7) as f32
                } else {
                    ((i * 37) % 11) as f32 / 11.0
                }
            })
            .collect();
        let schema = vec![
            Field::new(
                "x",
                ColumnType::Float32 {
                    shape: shape.clone(),
                },
            ),
            Field::new("y", ColumnType::Int64),
        ];
        let table = Table::new(
            schema.clone(),
            vec![
                Column::Float32 {
                    shape: shape.clone(),
                    values,
                },
                Column::Int64((0..rows as i64).map(|i| i % 3).collect()),
            ],
        )
        .unwrap();
        let mut store = MemStore::new();
        let mut writer = VersionWriter::new(schema, 64);
        writer.push(table, &mut store).unwrap();
        let manifest = writer.finish(Lineage::default(), &mut store).unwrap();
        let model: String = text
            .lines()
            .map(|l| {
                if l.starts_with("[[layers]]") {
                    "[[model.layers]]".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let config = TrainConfig::parse(&format!(
            "name = \"t\"\n[data]\ndataset = \"d\"\ninput = \"x\"\ntarget = \"y\"\ntrain_split = \"\"\neval_split = \"\"\n[training]\nepochs = 1\nbatch_size = 4\n[model]\n{model}\n"
        ))
        .unwrap_or_else(|e| panic!("{text}: {e}"));
        let data = DatasetData {
            manifest,
            source: Arc::new(store),
            data: config.data.clone(),
            batch_size: 4,
            seed: 0,
        };
        let spec = config
            .model
            .resolve(Some(&shape), Some(3), "model")
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        let head = dataset::head(&data.manifest, "y", config.training.task).unwrap();
        let trainer = Trainer {
            config: &config.training,
            checkpoints: &config.checkpoints,
            spec: &spec,
            head,
            initial: None,
            frozen: &[],
            teacher: None,
        };
        let (net, outcome) = trainer
            .run(&data, None, &mut Recorder::default())
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(outcome.state.step, 3, "{text}");
        // The weights round-trip into a fresh network of the same spec.
        let weights = train::weights(&net).unwrap();
        train::load(&spec, &weights, &burn_device()).unwrap();
    }
}

fn burn_device() -> burn::tensor::Device {
    trainyard_engine::device::parse("cpu")
        .unwrap()
        .device()
        .unwrap()
}

/// The weights of top-level layer `i` of a burnpack for `spec`, flattened.
fn layer_values(spec: &trainyard_engine::ResolvedSpec, weights: &[u8], i: usize) -> Vec<f32> {
    use trainyard_engine::network::Layer;
    let net = train::load(spec, weights, &burn_device()).unwrap();
    match &net.layers[i] {
        Layer::Linear(l) => l.weight.val().into_data().try_to_vec::<f32>().unwrap(),
        other => panic!("layers[{i}] is {other:?}"),
    }
}

#[test]
fn a_run_from_a_trained_version_keeps_its_frozen_layers_and_replaces_the_head() {
    let _serial = serial();
    let s = setup("");
    let shape = dataset::sample_shape(&s.data.manifest, "x", None).unwrap();
    let head = dataset::head(&s.data.manifest, "y", s.config.training.task).unwrap();
    let source = s
        .config
        .model
        .resolve(Some(&shape), Some(head.outputs), "model")
        .unwrap();
    let (source_weights, _, _) = train(&s, None).unwrap();

    // Three outputs where the source has two: the last linear is replaced, the rest kept;
    // `train_last = 1` freezes everything but the new head.
    let from: trainyard_engine::ModelSpec =
        toml::from_str("from = \"blobs:1\"\ntrain_last = 1\n").unwrap();
    let (spec, replaced) = from.resolve_from(&source, &shape, 3, "model").unwrap();
    let head_index = source.layers.len() - 1;
    assert_eq!(replaced, Some(head_index));
    assert_eq!(spec.output, [3]);
    let frozen = from.frozen_layers(&spec, "model").unwrap();
    assert_eq!(frozen, [0]);
    let initial = train::initial_weights(&source, &source_weights, &spec, replaced, 3).unwrap();
    assert_eq!(
        layer_values(&spec, &initial, 0),
        layer_values(&source, &source_weights, 0)
    );
    let trainer = Trainer {
        config: &s.config.training,
        checkpoints: &s.config.checkpoints,
        spec: &spec,
        head: train::Head {
            task: head.task,
            outputs: 3,
        },
        initial: Some(&initial),
        frozen: &frozen,
        teacher: None,
    };
    let mut recorder = Recorder::default();
    let (net, outcome) = trainer.run(&s.data, None, &mut recorder).unwrap();
    assert!(accuracy(&outcome) > 0.9, "{:?}", outcome.report);
    let tuned = train::weights(&net).unwrap();
    // Resumed from a checkpoint half-way, it ends exactly where the uninterrupted run did.
    let middle = recorder.checkpoints[recorder.checkpoints.len() / 2].clone();
    let (resumed, _) = trainer
        .run(&s.data, Some(middle), &mut Recorder::default())
        .unwrap();
    assert_eq!(
        train::weights(&resumed).unwrap(),
        tuned,
        "resume is not exact"
    );
    assert_eq!(
        layer_values(&spec, &tuned, 0),
        layer_values(&source, &source_weights, 0),
        "a frozen layer changed"
    );
    assert_ne!(
        layer_values(&spec, &tuned, head_index),
        layer_values(&spec, &initial, head_index),
        "the head did not train"
    );

    // The same number of outputs keeps the head: the run starts from the source exactly.
    let (same, replaced) = from.resolve_from(&source, &shape, 2, "model").unwrap();
    assert_eq!((same.clone(), replaced), (source.clone(), None));
    let initial = train::initial_weights(&source, &source_weights, &same, None, 3).unwrap();
    assert_eq!(
        layer_values(&same, &initial, head_index),
        layer_values(&source, &source_weights, head_index)
    );
}
