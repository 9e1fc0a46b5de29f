//! A [`Graph`] as an ONNX model: opset 17, one `f32` input `input` of `[batch, ..sample]`
//! (the batch dimension symbolic), one output `output` of `[batch, outputs]`, weights as
//! initializers. Only operators that every ONNX runtime of the last years runs are used:
//! batch norm is written as subtract-multiply-add, layer norm and GELU are written out from
//! `ReduceMean`, `Erf` and arithmetic, so ONNX Runtime and tract load the file alike.

use prost::Message;
use tract_onnx::pb;

use crate::graph::{Dense, Graph, Layer, NamedLayer, Weights};
use crate::ModelsError;

/// The operator set written.
pub const OPSET: i64 = 17;
/// ONNX IR version that goes with opset 17.
const IR_VERSION: i64 = 8;
pub const INPUT: &str = "input";
pub const OUTPUT: &str = "output";

const FLOAT: i32 = pb::tensor_proto::DataType::Float as i32;
const INT64: i32 = pb::tensor_proto::DataType::Int64 as i32;

/// Encodes `graph`, whose output has `outputs` values per sample (`None`: left symbolic, for
/// a prefix of a network).
pub fn encode(graph: &Graph, outputs: Option<usize>) -> Result<Vec<u8>, ModelsError> {
    let mut b = Builder::default();
    let rank = graph.sample_shape.len() + 1;
    let (mut x, rank) = b.layers(&graph.layers, INPUT.to_string(), rank)?;
    if rank > 2 {
        x = b.node("Flatten", "output.flatten", vec![x], vec![int("axis", 1)]);
    }
    let out = b.named_node("Identity", "output", vec![x], vec![], OUTPUT.to_string());
    debug_assert_eq!(out, OUTPUT);
    let mut input_dims = vec![dim_param("batch")];
    input_dims.extend(graph.sample_shape.iter().map(|d| dim_value(*d)));
    let model = pb::ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "trainyard".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(pb::GraphProto {
            name: graph.name.clone(),
            node: b.nodes,
            initializer: b.initializers,
            input: vec![value_info(INPUT, input_dims)],
            output: vec![value_info(
                OUTPUT,
                vec![
                    dim_param("batch"),
                    outputs.map_or_else(|| dim_param("outputs"), dim_value),
                ],
            )],
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}

/// What an ONNX file says of itself, read without running it.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The default domain's opset (0 when the file names none).
    pub opset: i64,
    pub producer: String,
    /// Graph inputs that are not initializers, with their dimensions (`-1`: symbolic).
    pub inputs: Vec<(String, Vec<i64>)>,
    pub outputs: Vec<(String, Vec<i64>)>,
    pub nodes: usize,
    /// Operator types used, sorted, each once.
    pub operators: Vec<String>,
}

/// Reads an ONNX file's header and graph outline; a file that is not a decodable ONNX
/// model, or has no graph, is refused.
pub fn inspect(bytes: &[u8]) -> Result<Summary, ModelsError> {
    let mut model = decode(bytes)?;
    let graph = model.graph.take().expect("decode checks");
    // Weights kept in files beside the model cannot come along with it, and a runtime
    // resolving their paths would read files of whatever machine loads it.
    if let Some(tensor) = external_tensor(&graph) {
        return Err(ModelsError::Invalid {
            at: "file".into(),
            message: format!(
                "tensor `{tensor}` keeps its data in an external file; save the model with its weights inside (onnx.save(model, path, save_as_external_data=False))"
            ),
        });
    }
    let initialized: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let dims = |v: &pb::ValueInfoProto| -> Vec<i64> {
        match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(pb::type_proto::Value::TensorType(t)) => t
                .shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match d.value {
                            Some(pb::tensor_shape_proto::dimension::Value::DimValue(n)) => n,
                            _ => -1,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    };
    let mut operators: Vec<String> = graph.node.iter().map(|n| n.op_type.clone()).collect();
    operators.sort();
    operators.dedup();
    Ok(Summary {
        opset: model
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map_or(0, |o| o.version),
        producer: model.producer_name,
        inputs: graph
            .input
            .iter()
            .filter(|i| !initialized.contains(i.name.as_str()))
            .map(|i| (i.name.clone(), dims(i)))
            .collect(),
        outputs: graph
            .output
            .iter()
            .map(|o| (o.name.clone(), dims(o)))
            .collect(),
        nodes: graph.node.len(),
        operators,
    })
}

/// Whether the model's first output is a softmax's (through any `Identity`): it gives
/// probabilities, not logits.
pub fn ends_in_softmax(bytes: &[u8]) -> Result<bool, ModelsError> {
    let model = decode(bytes)?;
    let graph = model.graph.as_ref().expect("decode checks");
    let Some(mut tensor) = graph.output.first().map(|o| o.name.as_str()) else {
        return Ok(false);
    };
    // Bounded: a graph whose Identity nodes form a cycle is not followed forever.
    for _ in 0..=graph.node.len() {
        match graph
            .node
            .iter()
            .find(|n| n.output.iter().any(|o| o == tensor))
        {
            Some(n) if n.op_type == "Identity" && n.domain.is_empty() => match n.input.first() {
                Some(i) => tensor = i,
                None => return Ok(false),
            },
            Some(n) => return Ok(n.op_type == "Softmax" && n.domain.is_empty()),
            None => return Ok(false),
        }
    }
    Ok(false)
}

/// Where a model keeps tensors outside itself: each distinct external-data `location`, in
/// the order first named. A location that is not a plain relative path (absolute, with `..`,
/// a drive or a backslash) is refused naming its tensor: loading it would read a file of
/// whatever machine serves the model.
pub fn external_locations(bytes: &[u8]) -> Result<Vec<String>, ModelsError> {
    // Every external tensor names its file under the key `location`: a file without those
    // bytes has none, and is not decoded (a copy of every weight) to find that out.
    if !bytes.windows(8).any(|w| w == b"location") {
        return Ok(Vec::new());
    }
    let mut model = decode(bytes)?;
    let mut found = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut err = None;
    for_each_tensor(model.graph.as_mut().expect("decode checks"), &mut |t| {
        if err.is_some() || !is_external(t) {
            return;
        }
        match external_entry(t, "location").map(str::to_string) {
            Some(_) if found.len() >= MAX_EXTERNAL_FILES => {
                err = Some(invalid(
                    "file",
                    format!("more than {MAX_EXTERNAL_FILES} external data files"),
                ))
            }
            Some(location) if safe_location(&location) => {
                if seen.insert(location.clone()) {
                    found.push(location);
                }
            }
            location => {
                err = Some(invalid(
                    "file",
                    format!(
                        "tensor `{}` keeps its data at {:?}, which is not a file beside the model",
                        t.name,
                        location.as_deref().unwrap_or("(no location)")
                    ),
                ))
            }
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(found),
    }
}

/// The model with every external tensor's bytes taken from `files` (by location) and put
/// inside it, so a runtime loads it from memory alone. Offsets and lengths are checked
/// against the file they point into.
pub fn inline_external_data(
    bytes: &[u8],
    files: &std::collections::HashMap<String, Vec<u8>>,
) -> Result<Vec<u8>, ModelsError> {
    let mut model = decode(bytes)?;
    let mut err = None;
    // Tensors may not read more than the files hold (many tensors naming one whole file
    // would otherwise copy it once each).
    let mut budget: usize = files.values().map(Vec::len).sum();
    for_each_tensor(model.graph.as_mut().expect("decode checks"), &mut |t| {
        if err.is_some() || !is_external(t) {
            return;
        }
        let number = |key: &str| -> Result<Option<usize>, String> {
            external_entry(t, key)
                .map(|v| {
                    v.parse::<usize>()
                        .map_err(|_| format!("{key} {v:?} is not a number"))
                })
                .transpose()
        };
        let data = (|| {
            let location = external_entry(t, "location").ok_or("no location")?;
            let file = files
                .get(location)
                .ok_or_else(|| format!("{location} is missing"))?;
            let offset = number("offset")?.unwrap_or(0);
            let length = number("length")?.unwrap_or(file.len().saturating_sub(offset));
            offset
                .checked_add(length)
                .filter(|end| *end <= file.len())
                .map(|end| &file[offset..end])
                .ok_or_else(|| {
                    format!(
                        "bytes {offset}..+{length} lie outside {location} ({} bytes)",
                        file.len()
                    )
                })
        })();
        let data = data.and_then(|d| {
            budget = budget
                .checked_sub(d.len())
                .ok_or("the tensors read more bytes than their files hold")?;
            Ok(d)
        });
        match data {
            Ok(data) => {
                t.raw_data = data.to_vec();
                t.external_data.clear();
                t.data_location = None;
            }
            Err(why) => err = Some(invalid("file", format!("tensor `{}`: {why}", t.name))),
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(model.encode_to_vec()),
    }
}

/// Most external data files one model may name.
const MAX_EXTERNAL_FILES: usize = 4096;

pub(crate) fn decode(bytes: &[u8]) -> Result<pb::ModelProto, ModelsError> {
    let model = pb::ModelProto::decode(bytes)
        .map_err(|e| ModelsError::Undecodable(format!("not an ONNX model: {e}")))?;
    if model.graph.is_none() {
        return Err(ModelsError::Undecodable(
            "an ONNX model without a graph".into(),
        ));
    }
    Ok(model)
}

fn is_external(t: &pb::TensorProto) -> bool {
    t.data_location == Some(pb::tensor_proto::DataLocation::External as i32)
        || !t.external_data.is_empty()
}

fn external_entry<'a>(t: &'a pb::TensorProto, key: &str) -> Option<&'a str> {
    t.external_data
        .iter()
        .find(|e| e.key == key)
        .map(|e| e.value.as_str())
}

/// A relative path of plain names (`weights.bin`, `data/w.bin`).
fn safe_location(location: &str) -> bool {
    !location.is_empty()
        && !location.contains(['\\', '\0', ':'])
        && std::path::Path::new(location)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Calls `f` on every tensor of `graph`: initializers, sparse initializers' parts, node
/// attributes, and subgraphs, recursively.
fn for_each_tensor(graph: &mut pb::GraphProto, f: &mut dyn FnMut(&mut pb::TensorProto)) {
    graph.initializer.iter_mut().for_each(&mut *f);
    for s in &mut graph.sparse_initializer {
        s.values
            .iter_mut()
            .chain(s.indices.iter_mut())
            .for_each(&mut *f);
    }
    for node in &mut graph.node {
        for a in &mut node.attribute {
            a.t.iter_mut().chain(a.tensors.iter_mut()).for_each(&mut *f);
            for s in a
                .sparse_tensor
                .iter_mut()
                .chain(a.sparse_tensors.iter_mut())
            {
                s.values
                    .iter_mut()
                    .chain(s.indices.iter_mut())
                    .for_each(&mut *f);
            }
            for g in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                for_each_tensor(g, f);
            }
        }
    }
}

/// The first tensor anywhere in `graph` (initializers, sparse initializers, node
/// attributes, subgraphs) whose data lives in an external file.
fn external_tensor(graph: &pb::GraphProto) -> Option<String> {
    fn external(t: &pb::TensorProto) -> Option<String> {
        is_external(t).then(|| t.name.clone())
    }
    fn sparse(s: &pb::SparseTensorProto) -> Option<String> {
        s.values.iter().chain(s.indices.iter()).find_map(external)
    }
    graph
        .initializer
        .iter()
        .find_map(external)
        .or_else(|| graph.sparse_initializer.iter().find_map(sparse))
        .or_else(|| {
            graph.node.iter().flat_map(|n| &n.attribute).find_map(|a| {
                a.t.iter()
                    .chain(&a.tensors)
                    .find_map(external)
                    .or_else(|| {
                        a.sparse_tensor
                            .iter()
                            .chain(&a.sparse_tensors)
                            .find_map(sparse)
                    })
                    .or_else(|| a.g.iter().chain(&a.graphs).find_map(external_tensor))
            })
        })
}

#[derive(Default)]
struct Builder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
}

fn invalid(at: &str, message: impl Into<String>) -> ModelsError {
    ModelsError::Invalid {
        at: at.to_string(),
        message: message.into(),
    }
}

impl Builder {
    /// Emits `layers` after value `x` of rank `rank`; returns the last value and its rank.
    fn layers(
        &mut self,
        layers: &[NamedLayer],
        mut x: String,
        mut rank: usize,
    ) -> Result<(String, usize), ModelsError> {
        for l in layers {
            (x, rank) = self.layer(l, x, rank)?;
        }
        Ok((x, rank))
    }

    fn layer(
        &mut self,
        l: &NamedLayer,
        x: String,
        rank: usize,
    ) -> Result<(String, usize), ModelsError> {
        let at = l.name.as_str();
        let need = |want: usize| {
            if rank == want {
                Ok(())
            } else {
                Err(invalid(
                    at,
                    format!("takes a rank-{want} input (batch included), gets rank {rank}"),
                ))
            }
        };
        Ok(match &l.layer {
            Layer::Linear { weight, bias } => (self.dense(at, x, weight, bias.as_ref())?, rank),
            Layer::Conv2d {
                weight,
                bias,
                stride,
                padding,
            } => {
                need(4)?;
                let [out, _, kh, kw] = match weight.shape.as_slice() {
                    [o, i, h, w] => [*o, *i, *h, *w],
                    _ => return Err(invalid(at, "a convolution's weight is [out, in, k, k]")),
                };
                let mut inputs = vec![x, self.weights(&format!("{at}.weight"), weight, at)?];
                if let Some(bias) = bias {
                    self.vector(at, "bias", bias, out)?;
                    inputs.push(self.weights(&format!("{at}.bias"), bias, at)?);
                }
                let p = *padding as i64;
                let y = self.node(
                    "Conv",
                    &format!("{at}.conv"),
                    inputs,
                    vec![
                        ints("kernel_shape", vec![kh as i64, kw as i64]),
                        ints("strides", vec![*stride as i64; 2]),
                        ints("pads", vec![p; 4]),
                    ],
                );
                (y, 4)
            }
            Layer::MaxPool2d { kernel, stride } | Layer::AvgPool2d { kernel, stride } => {
                need(4)?;
                let op = if matches!(l.layer, Layer::MaxPool2d { .. }) {
                    "MaxPool"
                } else {
                    "AveragePool"
                };
                let y = self.node(
                    op,
                    &format!("{at}.pool"),
                    vec![x],
                    vec![
                        ints("kernel_shape", vec![*kernel as i64; 2]),
                        ints("strides", vec![*stride as i64; 2]),
                    ],
                );
                (y, 4)
            }
            Layer::GlobalAvgPool => {
                need(4)?;
                let y = self.node("GlobalAveragePool", &format!("{at}.pool"), vec![x], vec![]);
                let y = self.node(
                    "Flatten",
                    &format!("{at}.flatten"),
                    vec![y],
                    vec![int("axis", 1)],
                );
                (y, 2)
            }
            Layer::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                epsilon,
            } => {
                if rank < 2 {
                    return Err(invalid(at, "batch norm needs [N, C, ..]"));
                }
                let c = gamma.values.len();
                for (what, w) in [
                    ("gamma", gamma),
                    ("beta", beta),
                    ("mean", mean),
                    ("var", var),
                ] {
                    self.vector(at, what, w, c)?;
                }
                // y = (x − mean) · scale + beta with scale = gamma / √(var + ε): burn's order
                // of operations, so no cancellation when |mean| is large.
                let scale: Vec<f32> = (0..c)
                    .map(|i| {
                        (f64::from(gamma.values[i]) / (f64::from(var.values[i]) + epsilon).sqrt())
                            as f32
                    })
                    .collect();
                // Shaped [C, 1, ..] so they broadcast over axis 1 of [N, C, ..].
                let mut shape = vec![c];
                shape.extend(std::iter::repeat_n(1, rank - 2));
                let shaped = |values: &[f32]| Weights::new(shape.clone(), values.to_vec());
                let m = self.weights(&format!("{at}.mean"), &shaped(&mean.values), at)?;
                let s = self.weights(&format!("{at}.scale"), &shaped(&scale), at)?;
                let b = self.weights(&format!("{at}.beta"), &shaped(&beta.values), at)?;
                let y = self.node("Sub", &format!("{at}.centre"), vec![x, m], vec![]);
                let y = self.node("Mul", &format!("{at}.scale_mul"), vec![y, s], vec![]);
                (
                    self.node("Add", &format!("{at}.beta_add"), vec![y, b], vec![]),
                    rank,
                )
            }
            Layer::LayerNorm {
                gamma,
                beta,
                epsilon,
            } => {
                let d = gamma.values.len();
                self.vector(at, "gamma", gamma, d)?;
                let axes = vec![ints("axes", vec![-1]), int("keepdims", 1)];
                let mean = self.node(
                    "ReduceMean",
                    &format!("{at}.mean"),
                    vec![x.clone()],
                    axes.clone(),
                );
                let centred = self.node("Sub", &format!("{at}.centre"), vec![x, mean], vec![]);
                let squared = self.node(
                    "Mul",
                    &format!("{at}.square"),
                    vec![centred.clone(), centred.clone()],
                    vec![],
                );
                let var = self.node("ReduceMean", &format!("{at}.var"), vec![squared], axes);
                let eps = self.scalar(&format!("{at}.epsilon"), *epsilon as f32);
                let var = self.node("Add", &format!("{at}.var_eps"), vec![var, eps], vec![]);
                let std = self.node("Sqrt", &format!("{at}.std"), vec![var], vec![]);
                let normed = self.node(
                    "Div",
                    &format!("{at}.normalise"),
                    vec![centred, std],
                    vec![],
                );
                let g = self.weights(&format!("{at}.gamma"), gamma, at)?;
                let mut y = self.node("Mul", &format!("{at}.gamma_mul"), vec![normed, g], vec![]);
                if let Some(beta) = beta {
                    self.vector(at, "beta", beta, d)?;
                    let b = self.weights(&format!("{at}.beta"), beta, at)?;
                    y = self.node("Add", &format!("{at}.beta_add"), vec![y, b], vec![]);
                }
                (y, rank)
            }
            Layer::Relu => (self.node("Relu", at, vec![x], vec![]), rank),
            Layer::Tanh => (self.node("Tanh", at, vec![x], vec![]), rank),
            Layer::Sigmoid => (self.node("Sigmoid", at, vec![x], vec![]), rank),
            Layer::Gelu => {
                // 0.5 · x · (1 + erf(x / √2))
                let sqrt2 = self.scalar(&format!("{at}.sqrt2"), std::f32::consts::SQRT_2);
                let one = self.scalar(&format!("{at}.one"), 1.0);
                let half = self.scalar(&format!("{at}.half"), 0.5);
                let scaled = self.node("Div", &format!("{at}.div"), vec![x.clone(), sqrt2], vec![]);
                let erf = self.node("Erf", &format!("{at}.erf"), vec![scaled], vec![]);
                let plus = self.node("Add", &format!("{at}.add"), vec![erf, one], vec![]);
                let times = self.node("Mul", &format!("{at}.mul"), vec![x, plus], vec![]);
                (
                    self.node("Mul", &format!("{at}.half_mul"), vec![times, half], vec![]),
                    rank,
                )
            }
            Layer::Softmax => (
                self.node("Softmax", at, vec![x], vec![int("axis", -1)]),
                rank,
            ),
            Layer::Flatten => (self.node("Flatten", at, vec![x], vec![int("axis", 1)]), 2),
            Layer::MeanPool => {
                need(3)?;
                (
                    self.node(
                        "ReduceMean",
                        at,
                        vec![x],
                        vec![ints("axes", vec![1]), int("keepdims", 0)],
                    ),
                    2,
                )
            }
            Layer::Identity => (x, rank),
            Layer::Sequence(inner) => self.layers(inner, x, rank)?,
            Layer::Embedding { table } => {
                need(2)?;
                self.matrix(at, table)
                    .map_err(|_| invalid(at, "an embedding table is [vocab, dim]"))?;
                let ids = self.node(
                    "Cast",
                    &format!("{at}.ids"),
                    vec![x],
                    vec![int("to", INT64.into())],
                );
                let t = self.weights(&format!("{at}.table"), table, at)?;
                let y = self.node(
                    "Gather",
                    &format!("{at}.gather"),
                    vec![t, ids],
                    vec![int("axis", 0)],
                );
                (y, 3)
            }
            Layer::AddPositions { table } => {
                need(3)?;
                self.matrix(at, table)
                    .map_err(|_| invalid(at, "a position table is [T, D]"))?;
                let t = self.weights(&format!("{at}.table"), table, at)?;
                (
                    self.node("Add", &format!("{at}.add"), vec![x, t], vec![]),
                    3,
                )
            }
            Layer::SelfAttention {
                heads,
                query,
                key,
                value,
                output,
            } => {
                need(3)?;
                let [d, _] = self.matrix(at, &query.weight)?;
                if *heads == 0 || d % heads != 0 {
                    return Err(invalid(
                        at,
                        format!("{d} features do not split into {heads} heads"),
                    ));
                }
                let d_k = d / heads;
                // [N, T, D] → [N, T, H, d_k]; `0` keeps the input's dimension.
                let split = self.int64s(
                    &format!("{at}.split_heads"),
                    &[0, 0, *heads as i64, d_k as i64],
                );
                let merge = self.int64s(&format!("{at}.merge_heads"), &[0, 0, d as i64]);
                let project = |b: &mut Self, what: &str, p: &Dense, perm: Vec<i64>| {
                    let y = b.dense(
                        &format!("{at}.{what}"),
                        x.clone(),
                        &p.weight,
                        p.bias.as_ref(),
                    )?;
                    let y = b.node(
                        "Reshape",
                        &format!("{at}.{what}.split"),
                        vec![y, split.clone()],
                        vec![],
                    );
                    Ok::<_, ModelsError>(b.node(
                        "Transpose",
                        &format!("{at}.{what}.heads"),
                        vec![y],
                        vec![ints("perm", perm)],
                    ))
                };
                let q = project(self, "query", query, vec![0, 2, 1, 3])?;
                let k = project(self, "key", key, vec![0, 2, 3, 1])?;
                let v = project(self, "value", value, vec![0, 2, 1, 3])?;
                let scores = self.node("MatMul", &format!("{at}.scores"), vec![q, k], vec![]);
                let root = self.scalar(&format!("{at}.sqrt_d_k"), (d_k as f32).sqrt());
                let scores = self.node("Div", &format!("{at}.scale"), vec![scores, root], vec![]);
                let weights = self.node(
                    "Softmax",
                    &format!("{at}.softmax"),
                    vec![scores],
                    vec![int("axis", -1)],
                );
                let context =
                    self.node("MatMul", &format!("{at}.context"), vec![weights, v], vec![]);
                let context = self.node(
                    "Transpose",
                    &format!("{at}.context.tokens"),
                    vec![context],
                    vec![ints("perm", vec![0, 2, 1, 3])],
                );
                let context = self.node(
                    "Reshape",
                    &format!("{at}.context.merge"),
                    vec![context, merge],
                    vec![],
                );
                (
                    self.dense(
                        &format!("{at}.output"),
                        context,
                        &output.weight,
                        output.bias.as_ref(),
                    )?,
                    3,
                )
            }
            Layer::Residual(inner) => {
                let (y, inner_rank) = self.layers(inner, x.clone(), rank)?;
                if inner_rank != rank {
                    return Err(invalid(at, "a residual block must keep its input's rank"));
                }
                (
                    self.node("Add", &format!("{at}.add"), vec![x, y], vec![]),
                    rank,
                )
            }
        })
    }

    /// `x · weight (+ bias)`, `weight` being `[in, out]`.
    fn dense(
        &mut self,
        at: &str,
        x: String,
        weight: &Weights,
        bias: Option<&Weights>,
    ) -> Result<String, ModelsError> {
        let [_, out] = self.matrix(at, weight)?;
        let w = self.weights(&format!("{at}.weight"), weight, at)?;
        let mut y = self.node("MatMul", &format!("{at}.matmul"), vec![x, w], vec![]);
        if let Some(bias) = bias {
            self.vector(at, "bias", bias, out)?;
            let b = self.weights(&format!("{at}.bias"), bias, at)?;
            y = self.node("Add", &format!("{at}.bias_add"), vec![y, b], vec![]);
        }
        Ok(y)
    }

    fn int64s(&mut self, name: &str, values: &[i64]) -> String {
        self.initializers.push(pb::TensorProto {
            name: name.to_string(),
            dims: vec![values.len() as i64],
            data_type: INT64,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.to_string()
    }

    fn matrix(&self, at: &str, w: &Weights) -> Result<[usize; 2], ModelsError> {
        match w.shape.as_slice() {
            [i, o] => Ok([*i, *o]),
            _ => Err(invalid(at, "a linear layer's weight is [in, out]")),
        }
    }

    fn vector(&self, at: &str, what: &str, w: &Weights, len: usize) -> Result<(), ModelsError> {
        if w.shape.as_slice() == [len] && w.values.len() == len {
            Ok(())
        } else {
            Err(invalid(
                at,
                format!("{what} has shape {:?}, the layer needs [{len}]", w.shape),
            ))
        }
    }

    /// Adds `w` as an initializer named `name`.
    fn weights(&mut self, name: &str, w: &Weights, at: &str) -> Result<String, ModelsError> {
        if !w.is_consistent() {
            return Err(invalid(
                at,
                format!(
                    "{name}: {} values do not fill shape {:?}",
                    w.values.len(),
                    w.shape
                ),
            ));
        }
        self.initializers.push(pb::TensorProto {
            name: name.to_string(),
            dims: w.shape.iter().map(|d| *d as i64).collect(),
            data_type: FLOAT,
            raw_data: w.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        Ok(name.to_string())
    }

    fn scalar(&mut self, name: &str, value: f32) -> String {
        self.initializers.push(pb::TensorProto {
            name: name.to_string(),
            dims: Vec::new(),
            data_type: FLOAT,
            raw_data: value.to_le_bytes().to_vec(),
            ..Default::default()
        });
        name.to_string()
    }

    /// Adds a node whose one output is named after it; returns that name.
    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: Vec<String>,
        attribute: Vec<pb::AttributeProto>,
    ) -> String {
        self.named_node(op, name, inputs, attribute, format!("{name}:0"))
    }

    fn named_node(
        &mut self,
        op: &str,
        name: &str,
        input: Vec<String>,
        attribute: Vec<pb::AttributeProto>,
        output: String,
    ) -> String {
        self.nodes.push(pb::NodeProto {
            input,
            output: vec![output.clone()],
            name: name.to_string(),
            op_type: op.to_string(),
            attribute,
            ..Default::default()
        });
        output
    }
}

fn int(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn ints(name: &str, ints: Vec<i64>) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints,
        ..Default::default()
    }
}

fn dim_param(name: &str) -> pb::tensor_shape_proto::Dimension {
    pb::tensor_shape_proto::Dimension {
        value: Some(pb::tensor_shape_proto::dimension::Value::DimParam(
            name.into(),
        )),
        ..Default::default()
    }
}

fn dim_value(d: usize) -> pb::tensor_shape_proto::Dimension {
    pb::tensor_shape_proto::Dimension {
        value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(d as i64)),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: Vec<pb::tensor_shape_proto::Dimension>) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: FLOAT,
                shape: Some(pb::TensorShapeProto { dim: dims }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use tract_onnx::prelude::{
        tract_ndarray, tvec, Framework, InferenceModelExt, IntoRunnable, IntoTValue, Tensor,
    };

    use super::*;

    fn named(name: &str, layer: Layer) -> NamedLayer {
        NamedLayer {
            name: name.into(),
            layer,
        }
    }

    /// Runs the encoded model with tract on `input` of shape `shape`.
    fn run(bytes: &[u8], shape: &[usize], input: Vec<f32>) -> Vec<f32> {
        let model = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(bytes))
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let x = tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), input).unwrap();
        let out = model.run(tvec!(Tensor::from(x).into_tvalue())).unwrap();
        out[0]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect()
    }

    fn close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "{got:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn a_dense_network_computes_what_its_layers_say() {
        // x [2, 3] · W [3, 2] + b, then layer norm, GELU, batch norm, softmax.
        let w = Weights::new(vec![3, 2], vec![0.5, -1.0, 2.0, 0.25, -0.5, 1.5]);
        let b = Weights::new(vec![2], vec![0.1, -0.2]);
        let v = |x: Vec<f32>| Weights::new(vec![2], x);
        let graph = Graph {
            name: "t".into(),
            sample_shape: vec![3],
            layers: vec![
                named(
                    "l0",
                    Layer::Linear {
                        weight: w,
                        bias: Some(b),
                    },
                ),
                named(
                    "l1",
                    Layer::LayerNorm {
                        gamma: v(vec![1.5, 0.5]),
                        beta: Some(v(vec![0.1, 0.2])),
                        epsilon: 1e-5,
                    },
                ),
                named("l2", Layer::Gelu),
                named("l3", Layer::Identity),
                named(
                    "l4",
                    Layer::BatchNorm {
                        gamma: v(vec![2.0, 1.0]),
                        beta: v(vec![0.0, 1.0]),
                        mean: v(vec![0.5, -0.5]),
                        var: v(vec![4.0, 0.25]),
                        epsilon: 1e-5,
                    },
                ),
                named("l5", Layer::Residual(vec![named("l5.0", Layer::Tanh)])),
                named("l6", Layer::Softmax),
            ],
        };
        let bytes = encode(&graph, Some(2)).unwrap();
        let input = vec![1.0, 2.0, 3.0, -1.0, 0.5, 0.0];
        let got = run(&bytes, &[2, 3], input.clone());

        let mut want = Vec::new();
        for row in input.chunks(3) {
            let mut h: Vec<f64> = (0..2)
                .map(|j| {
                    let w = [[0.5, -1.0], [2.0, 0.25], [-0.5, 1.5]];
                    (0..3).map(|i| f64::from(row[i]) * w[i][j]).sum::<f64>() + [0.1, -0.2][j]
                })
                .collect();
            let mean = h.iter().sum::<f64>() / 2.0;
            let var = h.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 2.0;
            for (j, v) in h.iter_mut().enumerate() {
                *v = (*v - mean) / (var + 1e-5).sqrt() * [1.5, 0.5][j] + [0.1, 0.2][j];
                *v = 0.5 * *v * (1.0 + erf(*v / std::f64::consts::SQRT_2));
                *v = (*v - [0.5, -0.5][j]) / ([4.0, 0.25][j] + 1e-5f64).sqrt() * [2.0, 1.0][j]
                    + [0.0, 1.0][j];
                *v += v.tanh();
            }
            let max = h.iter().cloned().fold(f64::MIN, f64::max);
            let sum: f64 = h.iter().map(|v| (v - max).exp()).sum();
            want.extend(h.iter().map(|v| ((v - max).exp() / sum) as f32));
        }
        close(&got, &want);
    }

    /// erf by its series (enough terms for |x| < 3 at f32 precision).
    fn erf(x: f64) -> f64 {
        let mut sum = 0.0;
        let mut term = x;
        for n in 0..60 {
            sum += term / (2 * n + 1) as f64;
            term *= -x * x / (n + 1) as f64;
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    }

    #[test]
    fn convolutions_and_pools_keep_their_geometry() {
        // One 1→1 channel 2×2 convolution (stride 1, padding 1) over a 3×3 image, max pool 2,
        // global average pool.
        let graph = Graph {
            name: "c".into(),
            sample_shape: vec![1, 3, 3],
            layers: vec![
                named(
                    "c0",
                    Layer::Conv2d {
                        weight: Weights::new(vec![1, 1, 2, 2], vec![1.0, 0.0, 0.0, -1.0]),
                        bias: Some(Weights::new(vec![1], vec![0.5])),
                        stride: 1,
                        padding: 1,
                    },
                ),
                named("c1", Layer::Relu),
                named(
                    "c2",
                    Layer::MaxPool2d {
                        kernel: 2,
                        stride: 2,
                    },
                ),
                named("c3", Layer::GlobalAvgPool),
            ],
        };
        let bytes = encode(&graph, Some(1)).unwrap();
        let image: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let got = run(&bytes, &[1, 1, 3, 3], image.clone());
        // Reference: padded 5×5, conv gives 4×4 of x[i-1][j-1] - x[i][j] + 0.5.
        let at = |i: i64, j: i64| {
            if (0..3).contains(&i) && (0..3).contains(&j) {
                image[(i * 3 + j) as usize]
            } else {
                0.0
            }
        };
        let conv: Vec<Vec<f32>> = (0..4)
            .map(|i| {
                (0..4)
                    .map(|j| (at(i - 1, j - 1) - at(i, j) + 0.5).max(0.0))
                    .collect()
            })
            .collect();
        let pooled: Vec<f32> = [(0, 0), (0, 2), (2, 0), (2, 2)]
            .iter()
            .map(|&(i, j)| {
                [
                    conv[i][j],
                    conv[i][j + 1],
                    conv[i + 1][j],
                    conv[i + 1][j + 1],
                ]
                .into_iter()
                .fold(f32::MIN, f32::max)
            })
            .collect();
        close(&got, &[pooled.iter().sum::<f32>() / 4.0]);
    }

    #[test]
    fn a_final_softmax_is_recognised_through_identities() {
        let graph = |layers: Vec<NamedLayer>| Graph {
            name: "g".into(),
            sample_shape: vec![3],
            layers,
        };
        let linear = || {
            named(
                "fc",
                Layer::Linear {
                    weight: Weights::new(vec![3, 2], vec![0.1; 6]),
                    bias: None,
                },
            )
        };
        let with = encode(&graph(vec![linear(), named("sm", Layer::Softmax)]), Some(2)).unwrap();
        let without = encode(&graph(vec![linear()]), Some(2)).unwrap();
        assert!(ends_in_softmax(&with).unwrap());
        assert!(!ends_in_softmax(&without).unwrap());
        assert!(ends_in_softmax(b"garbage").is_err());
    }

    #[test]
    fn a_written_file_reads_back_and_garbage_is_refused() {
        let graph = Graph {
            name: "s".into(),
            sample_shape: vec![1, 3, 3],
            layers: vec![named("l0", Layer::Flatten), named("l1", Layer::Relu)],
        };
        let bytes = encode(&graph, Some(9)).unwrap();
        let summary = inspect(&bytes).unwrap();
        assert_eq!(summary.opset, OPSET);
        assert_eq!(summary.producer, "trainyard");
        assert_eq!(summary.inputs, [("input".to_string(), vec![-1, 1, 3, 3])]);
        assert_eq!(summary.outputs, [("output".to_string(), vec![-1, 9])]);
        assert_eq!(summary.operators, ["Flatten", "Identity", "Relu"]);
        for bad in [&b"not onnx at all"[..], &bytes[..bytes.len() / 2], &[]] {
            assert!(inspect(bad).is_err(), "{bad:?}");
        }
        // A weight in an external file (a path a loader would open) is refused by name.
        let mut model = pb::ModelProto::decode(bytes.as_slice()).unwrap();
        let graph = model.graph.as_mut().unwrap();
        graph.initializer.push(pb::TensorProto {
            name: "w".into(),
            data_location: Some(pb::tensor_proto::DataLocation::External as i32),
            external_data: vec![pb::StringStringEntryProto {
                key: "location".into(),
                value: "/etc/shadow".into(),
            }],
            ..Default::default()
        });
        let err = inspect(&model.encode_to_vec()).unwrap_err().to_string();
        assert!(err.contains("`w`") && err.contains("external"), "{err}");
    }

    /// The model with its first initializer moved to `location` at `offset`, as
    /// `onnx.save(..., save_as_external_data=True)` writes it; returns the model and the
    /// file that holds the bytes.
    fn externalised(bytes: &[u8], location: &str, offset: usize) -> (Vec<u8>, Vec<u8>) {
        let mut model = pb::ModelProto::decode(bytes).unwrap();
        let t = &mut model.graph.as_mut().unwrap().initializer[0];
        let mut file = vec![0xAB; offset];
        file.extend(std::mem::take(&mut t.raw_data));
        let entry = |key: &str, value: String| pb::StringStringEntryProto {
            key: key.into(),
            value,
        };
        t.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
        t.external_data = vec![
            entry("location", location.into()),
            entry("offset", offset.to_string()),
            entry("length", (file.len() - offset).to_string()),
        ];
        (model.encode_to_vec(), file)
    }

    #[test]
    fn external_data_beside_the_model_is_taken_inside_and_nothing_else_is_read() {
        let graph = Graph {
            name: "x".into(),
            sample_shape: vec![2],
            layers: vec![named(
                "l0",
                Layer::Linear {
                    weight: Weights::new(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]),
                    bias: None,
                },
            )],
        };
        let bytes = encode(&graph, Some(2)).unwrap();
        let want = run(&bytes, &[1, 2], vec![1.0, -1.0]);

        let (external, file) = externalised(&bytes, "weights.bin", 16);
        assert_eq!(external_locations(&external).unwrap(), ["weights.bin"]);
        assert!(
            inspect(&external).is_err(),
            "inspect refuses what it cannot load alone"
        );
        let files = std::collections::HashMap::from([("weights.bin".to_string(), file.clone())]);
        let inlined = inline_external_data(&external, &files).unwrap();
        assert!(external_locations(&inlined).unwrap().is_empty());
        assert_eq!(run(&inlined, &[1, 2], vec![1.0, -1.0]), want);

        // Locations outside the model's folder are refused before anything is read.
        for hostile in [
            "/etc/shadow",
            "../secret.bin",
            "a/../../b",
            "C:\\w.bin",
            "w:1",
            "",
        ] {
            let (model, _) = externalised(&bytes, hostile, 0);
            let err = external_locations(&model).unwrap_err().to_string();
            assert!(
                err.contains("not a file beside the model"),
                "{hostile}: {err}"
            );
        }
        // A missing file, or bytes beyond its end, are refused by tensor.
        let err = inline_external_data(&external, &Default::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("weights.bin is missing"), "{err}");
        let short =
            std::collections::HashMap::from([("weights.bin".to_string(), file[..20].to_vec())]);
        let err = inline_external_data(&external, &short)
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside weights.bin"), "{err}");
        // Many tensors naming one whole file may not copy it once each.
        let mut model = pb::ModelProto::decode(external.as_slice()).unwrap();
        let graph = model.graph.as_mut().unwrap();
        let first = graph.initializer[0].clone();
        for i in 0..1000 {
            let mut t = first.clone();
            t.name = format!("copy{i}");
            t.external_data.retain(|e| e.key == "location");
            graph.initializer.push(t);
        }
        let err = inline_external_data(&model.encode_to_vec(), &files)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more bytes than their files hold"), "{err}");
    }

    #[test]
    fn inconsistent_weights_are_refused_with_the_layer_named() {
        let graph = Graph {
            name: "bad".into(),
            sample_shape: vec![3],
            layers: vec![named(
                "layers[0]",
                Layer::Linear {
                    weight: Weights::new(vec![3, 2], vec![1.0; 5]),
                    bias: None,
                },
            )],
        };
        let err = encode(&graph, Some(2)).unwrap_err().to_string();
        assert!(err.starts_with("layers[0]:"), "{err}");
        let conv_on_vectors = Graph {
            name: "bad".into(),
            sample_shape: vec![3],
            layers: vec![named(
                "layers[1]",
                Layer::MaxPool2d {
                    kernel: 2,
                    stride: 2,
                },
            )],
        };
        let err = encode(&conv_on_vectors, Some(2)).unwrap_err().to_string();
        assert!(err.contains("layers[1]") && err.contains("rank-4"), "{err}");
    }
}
