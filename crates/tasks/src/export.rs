//! The ONNX file of an engine-trained model version: written from the trained network,
//! then checked by running it in a serving runtime (ONNX Runtime when its library is found,
//! else tract) against the engine on the same probe batch. A file that disagrees is not
//! kept; the first layer where the two part ways is named.

use trainyard_data::Batch;
use trainyard_engine::export;
use trainyard_engine::network::Network;
use trainyard_engine::spec::{LayerSpec, ResolvedSpec};
use trainyard_engine::train;
use trainyard_models::graph::Graph;
use trainyard_serve::runtime::{find_library, OnnxRuntime, Runtime, Tract};
use trainyard_serve::{DataType, Tensor};

use crate::TaskError;

/// Largest difference allowed between the engine and the runtime, relative to the output
/// scale (the largest absolute output, at least 1).
pub const TOLERANCE: f64 = 1e-5;
/// Rows in the probe batch.
const PROBE_ROWS: usize = 16;

/// A checked export.
pub struct Exported {
    pub onnx: Vec<u8>,
    /// The runtime that ran the check (`onnxruntime` or `tract`).
    pub runtime: &'static str,
    pub max_abs_diff: f64,
    pub scale: f64,
    /// Time to describe, encode and check the network (what registration spends on it).
    pub elapsed: std::time::Duration,
}

/// Deterministic inputs in [-2, 2) for `rows` samples of `shape` (a SplitMix64 stream), so
/// every export is checked on the same batch.
pub fn probe(shape: &[usize], rows: usize) -> Batch {
    let n = rows * shape.iter().product::<usize>();
    let mut state = 0x5EED_u64;
    let inputs = (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect();
    Batch {
        inputs,
        sample_shape: shape.to_vec(),
        rows,
        targets: None,
    }
}

/// The probe batch for `spec`: a network that starts with an embedding takes token ids,
/// so the probe's values become ids spread over its vocabulary.
pub fn probe_for(spec: &ResolvedSpec, rows: usize) -> Batch {
    let mut batch = probe(&spec.input, rows);
    if let Some(LayerSpec::Embedding { vocab, .. }) = spec.layers.first() {
        let vocab = *vocab as f32;
        for v in &mut batch.inputs {
            *v = ((*v + 2.0) / 4.0 * vocab).floor().min(vocab - 1.0);
        }
    }
    batch
}

/// The runtime that checks exports: ONNX Runtime when its library is found, else tract.
/// Made once per process: ONNX Runtime allows one environment per process.
pub(crate) fn checking_runtime() -> (&'static dyn Runtime, &'static str) {
    static RUNTIME: std::sync::OnceLock<(Box<dyn Runtime>, &'static str)> =
        std::sync::OnceLock::new();
    let (runtime, name) = RUNTIME.get_or_init(|| {
        if let Some(lib) = find_library() {
            match OnnxRuntime::new(&lib, 1) {
                Ok(ort) => return (Box::new(ort) as Box<dyn Runtime>, "onnxruntime"),
                Err(e) => eprintln!(
                    "ONNX Runtime at {} is not usable ({e}); checking on tract",
                    lib.display()
                ),
            }
        }
        (Box::new(Tract), "tract")
    });
    (runtime.as_ref(), name)
}

fn run_onnx(runtime: &dyn Runtime, onnx: &[u8], batch: &Batch) -> Result<Vec<f32>, String> {
    run_onnx_named(runtime, onnx, batch, trainyard_models::onnx::INPUT)
}

fn run_onnx_named(
    runtime: &dyn Runtime,
    onnx: &[u8],
    batch: &Batch,
    input: &str,
) -> Result<Vec<f32>, String> {
    let (_, mut instances) = runtime.load(onnx, 1).map_err(|e| e.to_string())?;
    let mut shape = vec![batch.rows];
    shape.extend_from_slice(&batch.sample_shape);
    let input = Tensor {
        name: input.into(),
        datatype: DataType::F32,
        shape,
        data: batch.inputs.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    let out = instances[0].run(vec![input]).map_err(|e| e.to_string())?;
    let out = out.into_iter().next().ok_or("the model gave no output")?;
    Ok(out
        .data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Largest absolute difference, and the output scale it is judged against.
fn compare(engine: &[f32], onnx: &[f32]) -> Option<(f64, f64)> {
    // `max` skips NaN, so a NaN on either side must refuse the comparison outright.
    if engine.len() != onnx.len() || engine.iter().chain(onnx).any(|v| !v.is_finite()) {
        return None;
    }
    let scale = engine.iter().fold(1f64, |m, v| m.max(f64::from(v.abs())));
    let diff = engine
        .iter()
        .zip(onnx)
        .fold(0f64, |m, (a, b)| m.max(f64::from((a - b).abs())));
    Some((diff, scale))
}

/// Exports `net` (built from `spec`) as `name` and checks the file.
pub fn export_onnx(net: &Network, spec: &ResolvedSpec, name: &str) -> Result<Exported, TaskError> {
    let started = std::time::Instant::now();
    let graph = export::graph(net, spec, name)?;
    let onnx = trainyard_models::onnx::encode(&graph, Some(spec.outputs()))
        .map_err(|e| TaskError::Invalid(format!("ONNX export: {e}")))?;
    let batch = probe_for(spec, PROBE_ROWS);
    let expected = train::predict(net, &batch)?;
    let (runtime, runtime_name) = checking_runtime();
    let got = run_onnx(runtime, &onnx, &batch).map_err(|e| {
        TaskError::Invalid(format!(
            "ONNX export: {runtime_name} cannot run the file: {e}"
        ))
    })?;
    match compare(&expected, &got) {
        Some((diff, scale)) if diff <= TOLERANCE * scale => Ok(Exported {
            onnx,
            runtime: runtime_name,
            max_abs_diff: diff,
            scale,
            elapsed: started.elapsed(),
        }),
        found => {
            let at = first_difference(net, &graph, &batch, runtime)
                .unwrap_or_else(|| "no single layer (the whole network)".into());
            Err(TaskError::Invalid(format!(
                "ONNX export: {runtime_name} and the engine disagree ({}); first at {at}",
                match found {
                    Some((diff, scale)) =>
                        format!("max |Δ| {diff:.3e} at output scale {scale:.3e}"),
                    None => "the outputs differ in size or are not finite".into(),
                }
            )))
        }
    }
}

/// The native form of an imported ONNX file: its graph read as engine layers, made a
/// network, and checked to compute what the file computes (on the probe batch, within
/// [`TOLERANCE`]) in the runtime that checked the import. `input` is the file's input name.
pub fn native_form(
    onnx: &[u8],
    name: &str,
    input: &str,
) -> Result<(ResolvedSpec, Network), TaskError> {
    let graph = trainyard_models::onnx_read::to_graph(onnx, name)
        .map_err(|e| TaskError::Invalid(e.to_string()))?;
    let (spec, net) = trainyard_engine::native::from_graph(&graph)?;
    let batch = probe_for(&spec, PROBE_ROWS);
    let (runtime, runtime_name) = checking_runtime();
    let file = run_onnx_named(runtime, onnx, &batch, input)
        .map_err(|e| TaskError::Invalid(format!("{runtime_name} cannot run the file: {e}")))?;
    let native = train::predict(&net, &batch)?;
    match compare(&file, &native) {
        Some((diff, scale)) if diff <= TOLERANCE * scale => Ok((spec, net)),
        Some((diff, scale)) => Err(TaskError::Invalid(format!(
            "the native network differs from the file (max |Δ| {diff:.3e} at output scale {scale:.3e})"
        ))),
        None => Err(TaskError::Invalid(
            "the native network's outputs differ from the file's in size or are not finite".into(),
        )),
    }
}

/// What `trainyard models export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// The version's checked `model.onnx`, as served.
    Onnx,
    /// Its weights under PyTorch's names and layouts.
    Safetensors,
}

/// The bytes of model version `reference` (`NAME:VERSION`, or `NAME` for its latest) in
/// `format`, with the `NAME:VERSION` it resolved to.
pub async fn export_version(
    client: &trainyard_client::Client,
    reference: &str,
    format: ExportFormat,
) -> Result<(String, Vec<u8>), TaskError> {
    use trainyard_client::runs::{download_uri, model_source};
    match format {
        ExportFormat::Onnx => {
            let (name, version, uri) = model_source(client, reference).await?;
            let bytes = download_uri(client, &format!("{uri}/{}", crate::train::ONNX_FILE))
                .await
                .map_err(|e| {
                    TaskError::from(e).context(format!(
                        "{name}:{version} has no {} (versions trained before ONNX export, or with layers the export does not cover yet: its `trainyard.onnx` tag says why)",
                        crate::train::ONNX_FILE
                    ))
                })?;
            Ok((format!("{name}:{version}"), bytes))
        }
        ExportFormat::Safetensors => {
            let model = crate::evaluate::load_model(client, reference, "cpu").await?;
            let graph = export::graph(&model.network, &model.card.spec, &model.name)?;
            let metadata = std::collections::BTreeMap::from([
                ("format".to_string(), "pt".to_string()),
                (
                    "trainyard.model".to_string(),
                    format!("{}:{}", model.name, model.version),
                ),
                (
                    "trainyard.spec".to_string(),
                    serde_json::to_string(&model.card.spec)?,
                ),
            ]);
            let bytes = trainyard_models::safetensors::encode(&graph, metadata)
                .map_err(|e| TaskError::Invalid(format!("safetensors export: {e}")))?;
            Ok((format!("{}:{}", model.name, model.version), bytes))
        }
    }
}

/// The first top-level layer after which the exported prefix and the engine's differ.
fn first_difference(
    net: &Network,
    graph: &Graph,
    batch: &Batch,
    runtime: &dyn Runtime,
) -> Option<String> {
    (1..=graph.layers.len()).find_map(|k| {
        let prefix = Graph {
            layers: graph.layers[..k].to_vec(),
            ..graph.clone()
        };
        let onnx = trainyard_models::onnx::encode(&prefix, None).ok()?;
        let expected = train::predict_prefix(net, k, batch).ok()?;
        let got = run_onnx(runtime, &onnx, batch).ok()?;
        match compare(&expected, &got) {
            Some((diff, scale)) if diff <= TOLERANCE * scale => None,
            _ => Some(graph.layers[k - 1].name.clone()),
        }
    })
}

#[cfg(test)]
mod tests {
    use trainyard_engine::spec::ModelSpec;

    use super::*;

    fn network(input: &[usize], layers: &str, outputs: usize) -> (Network, ResolvedSpec) {
        let spec: ModelSpec = toml::from_str(layers).unwrap();
        let spec = spec.resolve(Some(input), Some(outputs), "model").unwrap();
        let cpu = trainyard_engine::device::DeviceSpec::Cpu.device().unwrap();
        (Network::new(&spec, &cpu), spec)
    }

    /// Every layer type the export covers, in networks of the shapes they take, agrees with
    /// the engine on the probe batch.
    #[test]
    fn every_exportable_layer_agrees_with_the_engine() {
        let cases = [
            (
                vec![1, 8, 8],
                r#"
                [[layers]]
                type = "conv2d"
                out_channels = 4
                kernel = 3
                padding = 1
                [[layers]]
                type = "batch_norm"
                [[layers]]
                type = "relu"
                [[layers]]
                type = "max_pool2d"
                kernel = 2
                [[layers]]
                type = "residual"
                layers = [{ type = "conv2d", out_channels = 4, kernel = 3, padding = 1 }, { type = "tanh" }]
                [[layers]]
                type = "conv2d"
                out_channels = 6
                kernel = 2
                stride = 2
                [[layers]]
                type = "avg_pool2d"
                kernel = 2
                stride = 1
                [[layers]]
                type = "global_avg_pool"
                [[layers]]
                type = "linear"
                out_features = 10
                "#,
            ),
            (
                vec![12],
                r#"
                [[layers]]
                type = "linear"
                out_features = 16
                [[layers]]
                type = "layer_norm"
                [[layers]]
                type = "gelu"
                [[layers]]
                type = "dropout"
                p = 0.5
                [[layers]]
                type = "batch_norm"
                [[layers]]
                type = "sigmoid"
                [[layers]]
                type = "linear"
                out_features = 10
                bias = false
                [[layers]]
                type = "softmax"
                "#,
            ),
            (
                vec![6],
                r#"
                [[layers]]
                type = "embedding"
                vocab = 20
                dim = 8
                [[layers]]
                type = "positional_encoding"
                [[layers]]
                type = "attention"
                heads = 2
                [[layers]]
                type = "layer_norm"
                [[layers]]
                type = "transformer_encoder"
                layers = 2
                heads = 4
                ff = 16
                [[layers]]
                type = "mean_pool"
                [[layers]]
                type = "linear"
                out_features = 10
                "#,
            ),
            (
                vec![2, 3, 4],
                r#"
                [[layers]]
                type = "flatten"
                [[layers]]
                type = "linear"
                out_features = 10
                "#,
            ),
        ];
        for (input, layers) in cases {
            let (net, spec) = network(&input, layers, 10);
            let exported =
                export_onnx(&net, &spec, "t").unwrap_or_else(|e| panic!("{layers}: {e}"));
            assert!(exported.max_abs_diff <= TOLERANCE * exported.scale);
            assert!(!exported.onnx.is_empty());
            // scripts/test runs this again with ONNX Runtime's library named.
            if std::env::var_os("TRAINYARD_ORT_LIB").is_some() {
                assert_eq!(exported.runtime, "onnxruntime");
            } else {
                assert!(["tract", "onnxruntime"].contains(&exported.runtime));
            }
        }
    }

    #[test]
    fn an_embedding_probe_holds_token_ids_of_its_vocabulary() {
        let (_, spec) = network(
            &[7],
            "[[layers]]\ntype = \"embedding\"\nvocab = 5\ndim = 4\n[[layers]]\ntype = \"mean_pool\"\n",
            4,
        );
        let batch = probe_for(&spec, 32);
        assert!(batch
            .inputs
            .iter()
            .all(|v| v.fract() == 0.0 && (0.0..5.0).contains(v)));
        assert!((0..5).all(|id| batch.inputs.contains(&(id as f32))));
    }

    #[test]
    fn a_nan_or_a_size_mismatch_never_passes_the_check() {
        assert_eq!(compare(&[1.0, 2.0], &[1.0, 2.0]), Some((0.0, 2.0)));
        assert_eq!(compare(&[1.0, 2.0], &[1.0, f32::NAN]), None);
        assert_eq!(compare(&[f32::NAN, 2.0], &[1.0, 2.0]), None);
        assert_eq!(compare(&[1.0], &[1.0, 2.0]), None);
        assert_eq!(compare(&[1.0], &[f32::INFINITY]), None);
    }

    #[test]
    fn the_probe_is_the_same_every_time_and_bounded() {
        let a = probe(&[3, 2], 4);
        assert_eq!(a.inputs, probe(&[3, 2], 4).inputs);
        assert_eq!(a.inputs.len(), 24);
        assert!(a.inputs.iter().all(|v| (-2.0..2.0).contains(v)));
    }
}
