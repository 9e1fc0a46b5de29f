//! Half precision: float weights stored as 16-bit floats and the operators that read them
//! computed in half, for GPUs (tensor cores run half at several times float's rate); on a
//! CPU it mostly halves the file.
//!
//! The model's inputs and outputs stay float (a `Cast` after each input and before each
//! output), so its callers send and receive what they did. Operators are converted from a
//! fixed list of those whose float inputs and outputs share one type in ONNX, so changing
//! them all together stays valid; every other operator (and every one named in `exclude`)
//! keeps computing in float, with a `Cast` on each side where it meets half values. Types
//! are followed from the graph's inputs and constants in graph order; a tensor whose type
//! cannot be told is left alone, with its readers in float.

use std::collections::{BTreeSet, HashMap, HashSet};

use tract_onnx::pb;
use tract_onnx::prelude::f16;

use super::{int_attribute, node, Model, Quantized, FLOAT};
use crate::ModelsError;

const FLOAT16: i32 = pb::tensor_proto::DataType::Float16 as i32;
const INT64: i32 = pb::tensor_proto::DataType::Int64 as i32;
const BOOL: i32 = pb::tensor_proto::DataType::Bool as i32;

/// Operators computed in half: every float input and output has the one type `T` in the
/// ONNX signature (integer inputs such as `Reshape`'s shape are left as they are), and both
/// ONNX Runtime and tract run them with half inputs.
const HALF_OPS: [&str; 43] = [
    "Abs",
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Clip",
    "Concat",
    "Conv",
    "ConvTranspose",
    "Div",
    "Dropout",
    "Elu",
    "Erf",
    "Exp",
    "Flatten",
    "Gather",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "HardSigmoid",
    "Identity",
    "LayerNormalization",
    "LeakyRelu",
    "Log",
    "LogSoftmax",
    "MatMul",
    "MaxPool",
    "Mul",
    "Neg",
    "Pad",
    "Pow",
    "ReduceMean",
    "Relu",
    "Reshape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
];

/// Converted operators that only move values: not worth a place in the accuracy guard.
const MOVERS: [&str; 11] = [
    "Concat",
    "Dropout",
    "Flatten",
    "Gather",
    "Identity",
    "Pad",
    "Reshape",
    "Slice",
    "Split",
    "Squeeze",
    "Transpose",
];

/// Operators of already-quantized models: half of an 8-bit model is not a thing.
const QUANTIZED_OPS: [&str; 6] = [
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "QLinearConv",
];

/// The largest finite half value; float weights beyond it are clamped to it.
const HALF_MAX: f32 = 65504.0;

/// The operators [`fp16`] would compute in half that do arithmetic (those the accuracy
/// guard may put back in float), in graph order.
pub fn fp16_candidates(bytes: &[u8]) -> Result<Vec<String>, ModelsError> {
    let model = Model::decode(bytes)?;
    refuse_quantized(&model)?;
    let plan = plan(&model, &BTreeSet::new());
    let found: Vec<String> = model
        .graph
        .node
        .iter()
        .zip(&plan.half)
        .filter(|(n, half)| **half && !MOVERS.contains(&n.op_type.as_str()))
        .map(|(n, _)| n.name.clone())
        .collect();
    if found.is_empty() {
        return Err(ModelsError::Invalid {
            at: "model".into(),
            message: "nothing to compute in half precision: no float operator of the converted kinds reads a float tensor".into(),
        });
    }
    Ok(found)
}

/// `bytes` with float computed in half wherever it can be, except the nodes in `exclude`.
/// `Quantized::quantized` lists the operators now in half, `kept` the float-reading ones
/// that stay float and why.
pub fn fp16(bytes: &[u8], exclude: &BTreeSet<String>) -> Result<Quantized, ModelsError> {
    let mut model = Model::decode(bytes)?;
    refuse_quantized(&model)?;
    let Plan {
        half,
        types,
        subgraph_reads,
    } = plan(&model, exclude);
    if !half.iter().any(|h| *h) {
        return Err(ModelsError::Invalid {
            at: "model".into(),
            message: "nothing to compute in half precision".into(),
        });
    }
    let mut used = model.names();
    // Tensors whose values become half: the outputs of converted nodes.
    let halved: HashSet<String> = model
        .graph
        .node
        .iter()
        .zip(&half)
        .filter(|(_, h)| **h)
        .flat_map(|(n, _)| n.output.iter().filter(|o| !o.is_empty()).cloned())
        .collect();
    // Float initializers read only by converted nodes are converted in place; others get a
    // half copy for the converted readers.
    let mut read_in_float: HashSet<&str> = HashSet::new();
    for (n, h) in model.graph.node.iter().zip(&half) {
        if !h {
            read_in_float.extend(n.input.iter().map(String::as_str));
        }
    }
    // Graph outputs, and initializers a caller may override as inputs, keep their type.
    read_in_float.extend(
        model
            .graph
            .output
            .iter()
            .chain(&model.graph.input)
            .map(|o| o.name.as_str()),
    );
    read_in_float.extend(subgraph_reads.iter().map(String::as_str));
    let in_place: HashSet<String> = model
        .graph
        .initializer
        .iter()
        .filter(|t| t.data_type == FLOAT && !read_in_float.contains(t.name.as_str()))
        .map(|t| t.name.clone())
        .collect();

    let mut converted_initializers = Vec::new();
    let mut clamped = 0usize;
    for t in &mut model.graph.initializer {
        if in_place.contains(&t.name) {
            clamped += to_half(t)?;
        }
    }
    let mut as_half: HashMap<String, String> = HashMap::new();
    let mut as_float: HashMap<String, String> = HashMap::new();
    let old = std::mem::take(&mut model.graph.node);
    let mut nodes = Vec::with_capacity(old.len() * 2);
    let mut quantized = Vec::new();
    let mut kept = Vec::new();
    for (mut n, h) in old.into_iter().zip(&half) {
        if *h {
            quantized.push(n.name.clone());
            for x in n.input.iter_mut() {
                if x.is_empty() || types.get(x.as_str()) != Some(&FLOAT) || halved.contains(x) {
                    continue;
                }
                if in_place.contains(x) {
                    continue;
                }
                if let Some(h) = as_half.get(x.as_str()) {
                    *x = h.clone();
                    continue;
                }
                let name = model.fresh(&mut used, &format!("{x}_fp16"));
                if let Some(i) = model.initializers.get(x.as_str()) {
                    let mut copy = model.graph.initializer[*i].clone();
                    copy.name = name.clone();
                    clamped += to_half(&mut copy)?;
                    converted_initializers.push(copy);
                } else {
                    let cast = model.fresh(&mut used, &format!("{x}_to_fp16"));
                    let mut c = node("Cast", &cast, vec![x.clone()], vec![name.clone()]);
                    c.attribute.push(int_attribute("to", FLOAT16.into()));
                    nodes.push(c);
                }
                as_half.insert(x.clone(), name.clone());
                *x = name;
            }
        } else {
            let reads_float = n
                .input
                .iter()
                .any(|x| types.get(x.as_str()) == Some(&FLOAT));
            if reads_float {
                let why = if exclude.contains(&n.name) {
                    "kept in float (excluded)".to_string()
                } else if HALF_OPS.contains(&n.op_type.as_str()) {
                    "kept in float (an input of unknown type)".to_string()
                } else {
                    format!("kept in float ({} is not converted)", n.op_type)
                };
                kept.push((n.name.clone(), why));
            }
            for x in n.input.iter_mut() {
                if !halved.contains(x) {
                    continue;
                }
                if let Some(f) = as_float.get(x.as_str()) {
                    *x = f.clone();
                    continue;
                }
                let name = model.fresh(&mut used, &format!("{x}_fp32"));
                let cast = model.fresh(&mut used, &format!("{x}_to_fp32"));
                let mut c = node("Cast", &cast, vec![x.clone()], vec![name.clone()]);
                c.attribute.push(int_attribute("to", FLOAT.into()));
                nodes.push(c);
                as_float.insert(x.clone(), name.clone());
                *x = name;
            }
        }
        nodes.push(n);
    }
    // Outputs computed in half: the producer writes a half tensor, a final Cast gives the
    // output its float under its own name.
    for o in model.graph.output.clone() {
        if !halved.contains(&o.name) {
            continue;
        }
        let inner = model.fresh(&mut used, &format!("{}_fp16", o.name));
        for n in &mut nodes {
            for t in n.input.iter_mut().chain(n.output.iter_mut()) {
                if *t == o.name {
                    *t = inner.clone();
                }
            }
        }
        let cast = model.fresh(&mut used, &format!("{}_to_fp32", o.name));
        let mut c = node("Cast", &cast, vec![inner], vec![o.name.clone()]);
        c.attribute.push(int_attribute("to", FLOAT.into()));
        nodes.push(c);
    }
    model.graph.node = nodes;
    for t in converted_initializers {
        model.add(t);
    }
    // Recorded types of the tensors that changed would now be wrong.
    model.graph.value_info.retain(|v| !halved.contains(&v.name));
    if clamped > 0 {
        kept.push((
            "weights".into(),
            format!("{clamped} values beyond ±{HALF_MAX} clamped to it"),
        ));
    }
    Ok(Quantized {
        bytes: model.encode(),
        quantized,
        kept,
    })
}

fn refuse_quantized(model: &Model) -> Result<(), ModelsError> {
    match model
        .graph
        .node
        .iter()
        .find(|n| QUANTIZED_OPS.contains(&n.op_type.as_str()))
    {
        Some(n) => Err(ModelsError::Invalid {
            at: "model".into(),
            message: format!(
                "the model is already quantized ({} {}): convert its float parent to half instead",
                n.op_type, n.name
            ),
        }),
        None => Ok(()),
    }
}

/// Which nodes compute in half, and each tensor's element type in the model as given.
struct Plan {
    half: Vec<bool>,
    types: HashMap<String, i32>,
    /// Tensors read inside subgraphs: they stay float (a subgraph cannot be given their half
    /// form), and so do the constants among them.
    subgraph_reads: HashSet<String>,
}

fn plan(model: &Model, exclude: &BTreeSet<String>) -> Plan {
    let g = &model.graph;
    let mut types: HashMap<String, i32> = HashMap::new();
    let declared = |v: &pb::ValueInfoProto| match v.r#type.as_ref()?.value.as_ref()? {
        pb::type_proto::Value::TensorType(t) => Some((v.name.clone(), t.elem_type)),
    };
    types.extend(g.input.iter().filter_map(declared));
    types.extend(g.initializer.iter().map(|t| (t.name.clone(), t.data_type)));
    // Tensors read inside subgraphs stay float: a subgraph cannot be given their half form.
    let mut subgraph_reads = HashSet::new();
    for n in &g.node {
        for a in &n.attribute {
            for s in a.g.iter().chain(&a.graphs) {
                super::collect_reads(s, &mut subgraph_reads);
            }
        }
    }
    let mut half = Vec::with_capacity(g.node.len());
    for n in &g.node {
        let inputs: Vec<Option<i32>> = n
            .input
            .iter()
            .map(|x| {
                if x.is_empty() {
                    Some(0)
                } else {
                    types.get(x).copied()
                }
            })
            .collect();
        let outputs = output_types(n, &inputs);
        let h = HALF_OPS.contains(&n.op_type.as_str())
            && n.domain.is_empty()
            && !exclude.contains(&n.name)
            && n.attribute
                .iter()
                .all(|a| a.g.is_none() && a.graphs.is_empty())
            && inputs.iter().all(Option::is_some)
            && inputs.contains(&Some(FLOAT))
            && !n.output.is_empty()
            && n.output
                .iter()
                .zip(&outputs)
                .all(|(o, t)| o.is_empty() || (*t == Some(FLOAT) && !subgraph_reads.contains(o)));
        for (o, t) in n.output.iter().zip(outputs) {
            if let (false, Some(t)) = (o.is_empty(), t) {
                types.insert(o.clone(), t);
            }
        }
        half.push(h);
    }
    Plan {
        half,
        types,
        subgraph_reads,
    }
}

/// The element type of each output of `n` in the model as given, where ONNX makes it plain
/// from the operator and its inputs' types.
fn output_types(n: &pb::NodeProto, inputs: &[Option<i32>]) -> Vec<Option<i32>> {
    let first = inputs.first().copied().flatten();
    let all = |t: Option<i32>| vec![t; n.output.len()];
    if !n.domain.is_empty() {
        return all(None);
    }
    let attr = |name: &str| n.attribute.iter().find(|a| a.name == name);
    match n.op_type.as_str() {
        "Shape" | "Size" | "NonZero" | "ArgMax" | "ArgMin" => all(Some(INT64)),
        "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "Not" | "And" | "Or"
        | "Xor" | "IsNaN" | "IsInf" => all(Some(BOOL)),
        "Cast" => all(attr("to").map(|a| a.i as i32)),
        "CastLike" => all(inputs.get(1).copied().flatten()),
        "Constant" => all(attr("value")
            .and_then(|a| a.t.as_ref())
            .map(|t| t.data_type)),
        "ConstantOfShape" => all(Some(
            attr("value")
                .and_then(|a| a.t.as_ref())
                .map_or(FLOAT, |t| t.data_type),
        )),
        "Where" => all(inputs.get(1).copied().flatten()),
        // Second outputs: a mask, and indices.
        "Dropout" => vec![first, Some(BOOL)],
        "MaxPool" | "TopK" => vec![first, Some(INT64)],
        op if HALF_OPS.contains(&op) => all(first),
        _ => all(None),
    }
    .into_iter()
    .take(n.output.len())
    .collect()
}

/// Rewrites a float initializer as half; returns how many values were clamped to the half
/// range. Infinities and NaN stay what they are.
fn to_half(t: &mut pb::TensorProto) -> Result<usize, ModelsError> {
    let values = super::float_tensor(t)
        .ok_or_else(|| ModelsError::Invalid {
            at: format!("initializer {}", t.name),
            message: "data outside the file, or of another size than its dimensions".into(),
        })?
        .values;
    let mut clamped = 0;
    let mut raw = Vec::with_capacity(values.len() * 2);
    for v in values {
        let v = if v.is_finite() && v.abs() > HALF_MAX {
            clamped += 1;
            v.clamp(-HALF_MAX, HALF_MAX)
        } else {
            v
        };
        raw.extend(f16::from_f32(v).to_le_bytes());
    }
    t.raw_data = raw;
    t.float_data.clear();
    t.data_type = FLOAT16;
    Ok(clamped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantize::testing::{cnn, relative_error, run, values, weight_bytes};

    fn types_of(bytes: &[u8]) -> HashMap<String, i32> {
        Model::decode(bytes)
            .unwrap()
            .graph
            .initializer
            .iter()
            .map(|t| (t.name.clone(), t.data_type))
            .collect()
    }

    #[test]
    fn the_cnn_in_half_computes_what_it_did_with_float_inputs_and_outputs() {
        let bytes = cnn();
        let input = values(2 * 64, 11);
        let want = run(&bytes, &[2, 1, 8, 8], &input);
        let half = fp16(&bytes, &BTreeSet::new()).unwrap();
        let candidates = fp16_candidates(&bytes).unwrap();
        assert!(candidates.iter().all(|c| half.quantized.contains(c)));
        assert!(half.kept.is_empty(), "{:?}", half.kept);
        assert!(types_of(&half.bytes)
            .values()
            .all(|t| *t == FLOAT16 || *t == INT64));
        // Inputs and outputs are float still.
        let model = Model::decode(&half.bytes).unwrap();
        let original = Model::decode(&bytes).unwrap();
        assert_eq!(model.graph.input, original.graph.input);
        assert_eq!(model.graph.output, original.graph.output);
        assert!((weight_bytes(&half.bytes) as f64) < 0.55 * weight_bytes(&bytes) as f64);
        let got = run(&half.bytes, &[2, 1, 8, 8], &input);
        let error = relative_error(&got[0], &want[0]);
        assert!(error < 5e-3, "half differs by {error}");
        assert!(error > 0.0, "nothing was computed in half");
    }

    #[test]
    fn an_excluded_operator_stays_float_between_casts() {
        let bytes = cnn();
        let candidates = fp16_candidates(&bytes).unwrap();
        let conv2 = candidates.iter().find(|c| c.starts_with("conv2")).unwrap();
        let half = fp16(&bytes, &BTreeSet::from([conv2.clone()])).unwrap();
        assert!(!half.quantized.contains(conv2));
        assert_eq!(
            half.kept,
            [(conv2.clone(), "kept in float (excluded)".into())]
        );
        let model = Model::decode(&half.bytes).unwrap();
        let conv = model.graph.node.iter().find(|n| &n.name == conv2).unwrap();
        // Its weight is float still, its activation arrives through a Cast to float.
        let weight = &model.graph.initializer[model.initializers[&conv.input[1]]];
        assert_eq!(weight.data_type, FLOAT);
        let producer = model
            .graph
            .node
            .iter()
            .find(|n| n.output.contains(&conv.input[0]))
            .unwrap();
        assert_eq!(producer.op_type, "Cast");
        let input = values(64, 3);
        let want = run(&bytes, &[1, 1, 8, 8], &input);
        let got = run(&half.bytes, &[1, 1, 8, 8], &input);
        assert!(relative_error(&got[0], &want[0]) < 5e-3);
    }

    #[test]
    fn a_weight_read_in_float_and_in_half_is_copied_and_huge_values_are_clamped() {
        let mut model = Model::decode(&cnn()).unwrap();
        // A second reader of fc2's weight that stays float (an unknown operator's output
        // becomes a graph output).
        let w = model
            .graph
            .node
            .iter()
            .find(|n| n.name.starts_with("fc2") && n.op_type == "MatMul")
            .map(|n| n.input[1].clone())
            .unwrap();
        let mut reader = node("Unknown", "reader", vec![w.clone()], vec!["seen".into()]);
        reader.domain = "example.org".into();
        model.graph.node.push(reader);
        model
            .graph
            .output
            .push(super::super::float_value_info("seen"));
        let i = model.initializers[&w];
        model.graph.initializer[i].raw_data[..4].copy_from_slice(&1e6f32.to_le_bytes());
        let half = fp16(&model.encode(), &BTreeSet::new()).unwrap();
        let out = Model::decode(&half.bytes).unwrap();
        assert_eq!(out.graph.initializer[out.initializers[&w]].data_type, FLOAT);
        let copy = &out.graph.initializer[out.initializers[&format!("{w}_fp16")]];
        assert_eq!(copy.data_type, FLOAT16);
        assert_eq!(
            f16::from_le_bytes([copy.raw_data[0], copy.raw_data[1]]).to_f32(),
            HALF_MAX
        );
        assert!(half
            .kept
            .iter()
            .any(|(w, why)| w == "weights" && why.starts_with("1 values")));
        assert!(half.kept.iter().any(|(n, _)| n == "reader"));
    }

    #[test]
    fn quantized_and_hostile_models_are_refused_or_left_alone() {
        let int8 = crate::quantize::dynamic_int8(&cnn(), &Default::default()).unwrap();
        let err = fp16(&int8.bytes, &BTreeSet::new()).unwrap_err().to_string();
        assert!(err.contains("already quantized"), "{err}");
        let mutate = |f: &dyn Fn(&mut pb::GraphProto)| {
            let mut model = Model::decode(&cnn()).unwrap();
            f(&mut model.graph);
            model.encode()
        };
        for (what, bytes) in [
            (
                "claimed 2^80 values",
                mutate(&|g| g.initializer[0].dims = vec![1 << 40, 1 << 40]),
            ),
            (
                "negative dims",
                mutate(&|g| g.initializer[0].dims = vec![-4, 9]),
            ),
            ("nodes out of order", mutate(&|g| g.node.reverse())),
            ("no inputs", mutate(&|g| g.input.clear())),
            (
                "a node with no outputs",
                mutate(&|g| g.node[0].output.clear()),
            ),
        ] {
            // No panic; whatever is returned decodes.
            if let Ok(h) = fp16(&bytes, &BTreeSet::new()) {
                Model::decode(&h.bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
            }
            let _ = fp16_candidates(&bytes);
        }
    }
}
