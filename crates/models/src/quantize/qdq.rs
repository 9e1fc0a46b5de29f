//! Static 8-bit quantization in QDQ form.
//!
//! For each candidate: its activation input and its output pass through a
//! `QuantizeLinear` → `DequantizeLinear` pair with the calibrated range (one pair per tensor,
//! shared by every reader); its weight is stored as signed 8-bit integers (symmetric, one
//! scale per tensor or per output channel) read through `DequantizeLinear`; a `Conv`'s or
//! `Gemm`'s bias as 32-bit integers on the scale activation × weight, as ONNX Runtime's
//! integer kernels expect it. This is the layout ONNX Runtime's own `quantize_static` writes
//! (`QuantFormat.QDQ`), which its graph optimizer fuses into `QLinearConv`/`QLinearMatMul`.

use std::collections::{BTreeSet, HashMap};

use tract_onnx::pb;

use super::params::{Affine, Grid};
use super::{
    excluded, floats, int_attr, int_attribute, integers, node, quantize_weight, unquantizable,
    Int8Options, Model, Quantized, Ranges, INT32, INT8, UINT8,
};

/// Suffixes of what a Q/DQ pair adds to the tensor it quantizes (see [`dequantized_constant`]).
const QUANTIZED: &str = "_q";
const DEQUANTIZED: &str = "_dq";
const QDQ_SCALE: &str = "_s";
const QDQ_ZERO_POINT: &str = "_z";
use crate::ModelsError;

/// The activations whose ranges [`static_int8`] needs: each candidate's input and output,
/// candidates in `exclude` left out.
pub fn calibration_tensors(
    bytes: &[u8],
    options: &Int8Options,
) -> Result<Vec<String>, ModelsError> {
    let mut model = Model::decode(bytes)?;
    model.fold_conv_affine();
    model.fuse_matmul_bias();
    let mut tensors = BTreeSet::new();
    let mut any = false;
    for (name, n) in model.nodes() {
        if model.weight_of(n).is_none() {
            continue;
        }
        any = true;
        if options.exclude.contains(&name) {
            continue;
        }
        tensors.insert(n.input[0].clone());
        let folded = relu_after(&model, &n.output[0], options).map(|(_, r)| r);
        tensors.insert(folded.unwrap_or_else(|| n.output[0].clone()));
    }
    if !any {
        return Err(super::nothing_to_quantize(&model));
    }
    Ok(tensors.into_iter().collect())
}

/// Operators that only move values: an 8-bit input gives an 8-bit output on the same grid,
/// so their outputs are quantized with their input's scale (runtimes then run them on
/// integers instead of dequantizing around them).
const MOVERS: [&str; 6] = [
    "MaxPool",
    "Flatten",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
];

/// When `t`'s only reader is a `Relu` (neither being a graph output) and activations are
/// unsigned, the `Relu` and the quantization of its output are one step: quantizing `t` on
/// the Relu output's grid (zero point 0) clips negatives to zero exactly as the Relu does.
/// Returns the Relu's index and output.
fn relu_after(model: &Model, t: &str, options: &Int8Options) -> Option<(usize, String)> {
    if options.symmetric_activations || model.graph.output.iter().any(|o| o.name == t) {
        return None;
    }
    let mut readers = model
        .graph
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| n.input.iter().any(|i| i == t));
    let (i, relu) = readers.next()?;
    let r = relu.output.first()?;
    (readers.next().is_none()
        && relu.op_type == "Relu"
        && relu.domain.is_empty()
        && !model.graph.output.iter().any(|o| &o.name == r))
    .then(|| (i, r.clone()))
}

/// A constant stored as integers (`data_type`, `dims`, `values`) with its `scales` (one, or
/// one per index of `axis`), and the `DequantizeLinear` node that gives it back as float;
/// returns the node and the name of its output. Its zero points are all 0: stored for 8-bit
/// weights (ONNX Runtime fuses a weight's `DequantizeLinear` into an integer kernel only
/// with one: without, the digits CNN ran 1.5× slower), left out for 32-bit biases (the
/// operator's default, and ONNX Runtime's own files do the same).
///
/// Names: the constant's, with short suffixes (`_q`, `_s`, `_z`, `_dq`); the node has none
/// (names are optional in ONNX). A file of 8-bit weights is otherwise mostly names: on the residual
/// network of `bench/compress` the long forms kept it 3.3× smaller than its parent, these
/// make it 3.5×.
fn dequantized_constant(
    model: &mut Model,
    used: &mut std::collections::HashSet<String>,
    base: &str,
    (data_type, dims, values): (i32, &[usize], &[i32]),
    scales: &[f32],
    axis: Option<usize>,
) -> (pb::NodeProto, String) {
    let q = model.fresh(used, &format!("{base}{QUANTIZED}"));
    let s = model.fresh(used, &format!("{base}{QDQ_SCALE}"));
    let dq = model.fresh(used, &format!("{base}{DEQUANTIZED}"));
    let scale_dims: Vec<usize> = if axis.is_some() {
        vec![scales.len()]
    } else {
        vec![]
    };
    model.add(integers(&q, data_type, dims, values));
    model.add(floats(&s, &scale_dims, scales));
    let mut inputs = vec![q, s];
    if data_type != INT32 {
        let z = model.fresh(used, &format!("{base}{QDQ_ZERO_POINT}"));
        model.add(integers(&z, data_type, &scale_dims, &vec![0; scales.len()]));
        inputs.push(z);
    }
    let mut node = node("DequantizeLinear", "", inputs, vec![dq.clone()]);
    if let Some(axis) = axis {
        node.attribute.push(int_attribute("axis", axis as i64));
    }
    (node, dq)
}

/// Adds a Q/DQ pair reading `source` whose dequantized copy replaces `visible` for every
/// reader (the same tensor unless a Relu between them was folded); the pair is placed after
/// `source`'s producer.
#[allow(clippy::too_many_arguments)]
fn add_pair(
    model: &mut Model,
    used: &mut std::collections::HashSet<String>,
    pairs: &mut Vec<(String, Vec<pb::NodeProto>)>,
    activations: &mut HashMap<String, (Affine, String)>,
    activation_type: i32,
    source: &str,
    visible: &str,
    affine: Affine,
) {
    let scale = model.fresh(used, &format!("{visible}{QDQ_SCALE}"));
    let zero = model.fresh(used, &format!("{visible}{QDQ_ZERO_POINT}"));
    let q = model.fresh(used, &format!("{visible}{QUANTIZED}"));
    let dq = model.fresh(used, &format!("{visible}{DEQUANTIZED}"));
    model.add(floats(&scale, &[], &[affine.scale]));
    model.add(integers(&zero, activation_type, &[], &[affine.zero_point]));
    let nodes = vec![
        node(
            "QuantizeLinear",
            "",
            vec![source.to_string(), scale.clone(), zero.clone()],
            vec![q.clone()],
        ),
        node(
            "DequantizeLinear",
            "",
            vec![q, scale, zero],
            vec![dq.clone()],
        ),
    ];
    activations.insert(visible.to_string(), (affine, dq));
    pairs.push((source.to_string(), nodes));
}

/// The model in QDQ form with activation `ranges` (from [`super::calibrate`]). Every
/// tensor [`calibration_tensors`] names must have a range.
pub fn static_int8(
    bytes: &[u8],
    ranges: &Ranges,
    options: &Int8Options,
) -> Result<Quantized, ModelsError> {
    let mut model = Model::decode(bytes)?;
    model.fold_conv_affine();
    model.fuse_matmul_bias();
    if model.opset < 10 || (options.per_channel && model.opset < 13) {
        return Err(ModelsError::Invalid {
            at: "model".into(),
            message: format!(
                "opset {} has no {}; re-export the model with opset 13 or later",
                model.opset,
                if model.opset < 10 {
                    "QuantizeLinear"
                } else {
                    "per-channel QuantizeLinear"
                }
            ),
        });
    }
    let activation_grid = if options.symmetric_activations {
        Grid::int8_symmetric(false)
    } else {
        Grid::uint8(false)
    };
    let activation_type = if options.symmetric_activations {
        INT8
    } else {
        UINT8
    };
    let weight_grid = Grid::int8_symmetric(options.reduce_range);

    let mut used = model.names();
    let mut quantized = Vec::new();
    let mut kept = Vec::new();
    // Activation tensor → its affine and the name of its dequantized copy.
    let mut activations: HashMap<String, (Affine, String)> = HashMap::new();
    let mut plans = Vec::new();
    for (index, (name, n)) in model.nodes().enumerate() {
        let Some(w) = model.weight_of(n) else {
            continue;
        };
        if let Some(k) = excluded(options, &name) {
            kept.push(k);
            continue;
        }
        if let Some(why) = unquantizable(&w) {
            kept.push((name, why));
            continue;
        }
        plans.push((index, name, w));
    }
    if plans.is_empty() && kept.is_empty() {
        return Err(super::nothing_to_quantize(&model));
    }
    // Pairs placed after the producer of the tensor they read (keyed by it).
    let mut activation_nodes: Vec<(String, Vec<pb::NodeProto>)> = Vec::new();
    let mut weight_nodes: Vec<pb::NodeProto> = Vec::new();
    // Relus folded into the quantization of their input.
    let mut dropped: BTreeSet<usize> = BTreeSet::new();
    let graph_outputs: BTreeSet<String> =
        model.graph.output.iter().map(|o| o.name.clone()).collect();
    let planned: HashMap<usize, (String, super::FloatTensor)> = plans
        .into_iter()
        .map(|(index, name, w)| (index, (name, w)))
        .collect();
    let calibrated = |t: &str, of: &str| -> Result<Affine, ModelsError> {
        let &(lo, hi) = ranges.get(t).ok_or_else(|| ModelsError::Invalid {
            at: t.to_string(),
            message: format!("no calibrated range for this input or output of `{of}`"),
        })?;
        if !(lo.is_finite() && hi.is_finite()) {
            return Err(ModelsError::Invalid {
                at: t.to_string(),
                message: "its calibrated range is not finite".into(),
            });
        }
        Ok(if options.symmetric_activations {
            Affine::symmetric(lo, hi, activation_grid)
        } else {
            Affine::asymmetric(lo, hi, activation_grid)
        })
    };
    let mut done = Vec::new();
    for index in 0..model.graph.node.len() {
        let n = model.graph.node[index].clone();
        let Some((name, w)) = planned.get(&index) else {
            // A mover of an 8-bit tensor passes its grid on.
            let source = n.input.first().cloned().unwrap_or_default();
            if MOVERS.contains(&n.op_type.as_str())
                && n.domain.is_empty()
                && n.output.len() == 1
                && !graph_outputs.contains(&n.output[0])
                && !activations.contains_key(&n.output[0])
            {
                if let Some(&(affine, _)) = activations.get(&source) {
                    add_pair(
                        &mut model,
                        &mut used,
                        &mut activation_nodes,
                        &mut activations,
                        activation_type,
                        &n.output[0],
                        &n.output[0],
                        affine,
                    );
                }
            }
            continue;
        };
        let x = &n.input[0];
        if !activations.contains_key(x) {
            let affine = calibrated(x, name)?;
            add_pair(
                &mut model,
                &mut used,
                &mut activation_nodes,
                &mut activations,
                activation_type,
                x,
                x,
                affine,
            );
        }
        let y = &n.output[0];
        let (visible, relu) = match relu_after(&model, y, options) {
            Some((i, r)) => (r, Some(i)),
            None => (y.clone(), None),
        };
        if !activations.contains_key(&visible) {
            let affine = calibrated(&visible, name)?;
            add_pair(
                &mut model,
                &mut used,
                &mut activation_nodes,
                &mut activations,
                activation_type,
                y,
                &visible,
                affine,
            );
            dropped.extend(relu);
        }
        let w = w.clone();
        let (name, w) = (name.clone(), &w);

        // The weight.
        let axis = Model::channel_axis(&n);
        let qw = quantize_weight(w, axis, options.per_channel, weight_grid, true);
        let scales: Vec<f32> = qw.affines.iter().map(|a| a.scale).collect();
        let (dq, wdq) = dequantized_constant(
            &mut model,
            &mut used,
            &n.input[1],
            (INT8, &w.dims, &qw.values),
            &scales,
            qw.axis,
        );
        weight_nodes.push(dq);
        let mut rewired = n.clone();
        rewired.input[1] = wdq;

        // The bias, on the scale activation × weight, when the operator adds it itself.
        let x_scale = activations[&n.input[0]].0.scale;
        let bias_plain = n.op_type == "Conv"
            || (int_attr(&n, "transA").unwrap_or(0) == 0
                && super::float_attr(&n, "alpha").unwrap_or(1.0) == 1.0
                && super::float_attr(&n, "beta").unwrap_or(1.0) == 1.0);
        if let Some(b) = n.input.get(2).filter(|b| !b.is_empty()) {
            match model.float(b) {
                Some(bias)
                    if bias_plain
                        && bias.dims.len() == 1
                        && bias.values.len() == w.dims[axis]
                        && bias.values.iter().all(|v| v.is_finite()) =>
                {
                    let bias_scales: Vec<f32> = (0..bias.values.len())
                        .map(|c| x_scale * scales[if qw.axis.is_some() { c } else { 0 }])
                        .collect();
                    if bias_scales.iter().all(|s| s.is_finite() && *s > 0.0) {
                        let q: Vec<i32> = bias
                            .values
                            .iter()
                            .zip(&bias_scales)
                            .map(|(v, s)| {
                                (f64::from(*v) / f64::from(*s))
                                    .round()
                                    .clamp(f64::from(i32::MIN), f64::from(i32::MAX))
                                    as i32
                            })
                            .collect();
                        let per_channel = qw.axis.is_some();
                        let s: Vec<f32> = if per_channel {
                            bias_scales
                        } else {
                            vec![bias_scales[0]]
                        };
                        let (dq, bdq) = dequantized_constant(
                            &mut model,
                            &mut used,
                            b,
                            (INT32, &bias.dims, &q),
                            &s,
                            per_channel.then_some(0),
                        );
                        weight_nodes.push(dq);
                        rewired.input[2] = bdq;
                    }
                }
                _ => {}
            }
        }
        done.push((index, rewired));
        quantized.push(name.clone());
    }
    for (index, rewired) in done {
        model.graph.node[index] = rewired;
    }

    // Readers of each quantized activation read its dequantized copy; the pair follows the
    // tensor's producer (or opens the graph, for a graph input).
    let pairs: HashMap<String, Vec<pb::NodeProto>> = activation_nodes.into_iter().collect();
    let dequantized: HashMap<&String, &String> =
        activations.iter().map(|(t, (_, dq))| (t, dq)).collect();
    let old = std::mem::take(&mut model.graph.node);
    let mut nodes: Vec<pb::NodeProto> = weight_nodes;
    let produced: BTreeSet<&String> = old.iter().flat_map(|n| &n.output).collect();
    for (t, pair) in &pairs {
        if !produced.contains(t) {
            nodes.extend(pair.iter().cloned());
        }
    }
    for (i, mut n) in old.iter().cloned().enumerate() {
        if dropped.contains(&i) {
            continue;
        }
        for input in &mut n.input {
            if let Some(dq) = dequantized.get(input) {
                *input = (*dq).clone();
            }
        }
        let outputs = n.output.clone();
        nodes.push(n);
        for o in &outputs {
            if let Some(pair) = pairs.get(o) {
                nodes.extend(pair.iter().cloned());
            }
        }
    }
    model.graph.node = nodes;
    model.prune();
    Ok(Quantized {
        bytes: model.encode(),
        quantized,
        kept,
    })
}

#[cfg(test)]
mod tests_support {
    use super::super::calibrate::{Extremes, Histograms, Method};
    use super::super::testing::*;
    use super::super::with_outputs;
    use super::*;

    /// Calibrates `bytes` on `rows` rows of the test stream, with `method`.
    pub fn calibrate(bytes: &[u8], options: &Int8Options, method: Method) -> Ranges {
        let tensors = calibration_tensors(bytes, options).unwrap();
        let (exposed, names) = with_outputs(bytes, &tensors).unwrap();
        let x = values(64 * 64, 11);
        let outs = run(&exposed, &[64, 1, 8, 8], &x);
        let mut values_of: HashMap<&str, &[f32]> = HashMap::new();
        for (name, v) in names.iter().zip(&outs) {
            values_of.insert(name, v);
        }
        values_of.insert("input", &x);
        let mut e = Extremes::default();
        for t in &tensors {
            e.observe(t, values_of[t.as_str()]).unwrap();
        }
        let mut h = Histograms::new(&e);
        for t in &tensors {
            h.observe(t, values_of[t.as_str()]).unwrap();
        }
        h.ranges(method)
    }
}

#[cfg(test)]
mod tests {
    use super::super::calibrate::Method;
    use super::super::candidates;
    use super::super::testing::*;
    use super::tests_support::*;
    use super::*;

    #[test]
    fn static_int8_computes_what_the_float_model_computes_within_the_grid() {
        let bytes = cnn();
        // Rows the ranges were calibrated on (the first 16 of them): a value outside its
        // calibrated range is clipped, by design.
        let x = values(16 * 64, 11);
        let want = run(&bytes, &[16, 1, 8, 8], &x).remove(0);
        for (per_channel, symmetric_activations, method) in [
            (false, false, Method::MinMax),
            (true, false, Method::MinMax),
            (true, true, Method::Entropy),
            (true, false, Method::Entropy),
            (false, true, Method::MinMax),
            (false, false, Method::Percentile(99.99)),
        ] {
            let options = Int8Options {
                per_channel,
                symmetric_activations,
                ..Default::default()
            };
            let ranges = calibrate(&bytes, &options, method);
            let q = static_int8(&bytes, &ranges, &options).unwrap();
            assert_eq!(q.quantized.len(), 4);
            // Unsigned activations fold each Relu right after a quantized operator into its
            // grid (fc1's too: its MatMul and bias Add are one Gemm).
            let ops = op_types(&q.bytes);
            let relus = ops.iter().filter(|o| *o == "Relu").count();
            assert_eq!(relus, if symmetric_activations { 3 } else { 0 });
            assert_eq!(ops.iter().filter(|o| *o == "Gemm").count(), 2, "{ops:?}");
            assert!(!ops.contains(&"Add".to_string()), "{ops:?}");
            let got = run(&q.bytes, &[16, 1, 8, 8], &x).remove(0);
            let err = relative_error(&got, &want);
            assert!(
                err < 0.05,
                "{per_channel} {symmetric_activations} {method:?}: {err}"
            );
            // 8-bit weights: the float ones are gone.
            let (before, after) = (weight_bytes(&bytes), weight_bytes(&q.bytes));
            // Scales and 32-bit biases weigh in this tiny model; larger ones come near 4x.
            assert!(after * 5 < before * 2, "{after} of {before} bytes");
        }
    }

    #[test]
    fn a_batch_norm_after_a_convolution_is_folded_into_it() {
        let bytes = conv_batch_norm();
        let options = Int8Options::default();
        let ranges = calibrate(&bytes, &options, Method::MinMax);
        let q = static_int8(&bytes, &ranges, &options).unwrap();
        let ops = op_types(&q.bytes);
        for gone in ["Sub", "Mul", "Add", "Relu"] {
            assert!(!ops.contains(&gone.to_string()), "{gone} left in {ops:?}");
        }
        let x = values(16 * 64, 11);
        let want = run(&bytes, &[16, 1, 8, 8], &x).remove(0);
        let got = run(&q.bytes, &[16, 1, 8, 8], &x).remove(0);
        let err = relative_error(&got, &want);
        assert!(err < 0.05, "{err}");

        // Folded under the convolution's own weight name; Q/DQ nodes unnamed, and 32-bit
        // biases stored without their all-zero zero points (8-bit weights keep theirs).
        // As written in the file (`Model::decode` names unnamed nodes).
        let graph = |b: &[u8]| crate::onnx::decode(b).unwrap().graph.unwrap();
        let conv_weight = |g: &pb::GraphProto| {
            g.node
                .iter()
                .find(|n| n.op_type == "Conv")
                .map(|n| n.input[1].clone())
                .unwrap()
        };
        let (parent, child) = (graph(&bytes), graph(&q.bytes));
        assert_eq!(
            conv_weight(&child),
            format!("{}{DEQUANTIZED}", conv_weight(&parent))
        );
        let qdq: Vec<_> = child
            .node
            .iter()
            .filter(|n| matches!(n.op_type.as_str(), "QuantizeLinear" | "DequantizeLinear"))
            .collect();
        assert!(qdq.len() >= 10, "{ops:?}");
        for n in qdq {
            assert!(n.name.is_empty(), "{n:?}");
            let bias = child
                .initializer
                .iter()
                .any(|t| t.name == n.input[0] && t.data_type == INT32);
            assert_eq!(n.input.len(), if bias { 2 } else { 3 }, "{n:?}");
        }
    }

    /// A crafted file: a 1×1 convolution reading one constant as both its weight and its
    /// bias, then a per-channel `Mul`. Folding must not rewrite that constant in place (its
    /// second write would put a 1-D bias where the 4-D weight was).
    #[test]
    fn a_constant_read_as_weight_and_bias_is_folded_under_new_names() {
        use crate::graph::{Graph, Layer, NamedLayer, Weights};
        let graph = Graph {
            name: "shared".into(),
            sample_shape: vec![1, 4, 4],
            layers: vec![
                NamedLayer {
                    name: "conv".into(),
                    layer: Layer::Conv2d {
                        weight: Weights::new(vec![4, 1, 1, 1], values(4, 1)),
                        bias: Some(Weights::new(vec![4], values(4, 2))),
                        stride: 1,
                        padding: 0,
                    },
                },
                NamedLayer {
                    name: "bn".into(),
                    layer: Layer::BatchNorm {
                        gamma: Weights::new(vec![4], vec![1.5; 4]),
                        beta: Weights::new(vec![4], vec![0.0; 4]),
                        mean: Weights::new(vec![4], vec![0.0; 4]),
                        var: Weights::new(vec![4], vec![1.0; 4]),
                        epsilon: 1e-5,
                    },
                },
            ],
        };
        let bytes = crate::onnx::encode(&graph, None).unwrap();
        let mut model = Model::decode(&bytes).unwrap();
        let find_conv = |m: &Model| {
            m.graph
                .node
                .iter()
                .position(|n| n.op_type == "Conv")
                .unwrap()
        };
        let at = find_conv(&model);
        let conv = &mut model.graph.node[at];
        conv.input[2] = conv.input[1].clone();
        let shared = conv.input[1].clone();
        model.fold_conv_affine();
        let conv = &model.graph.node[find_conv(&model)];
        let (weight, bias) = (&conv.input[1], &conv.input[2]);
        assert!(
            weight != &shared && bias != &shared && weight != bias,
            "{conv:?}"
        );
        assert_eq!(model.float(weight).unwrap().dims, [4, 1, 1, 1]);
        assert_eq!(model.float(bias).unwrap().dims, [4]);
    }

    #[test]
    fn unnamed_nodes_keep_their_names_through_the_bias_fusion() {
        // The same network with every node name removed: candidates are `OpType_index` in
        // the file as given, and excluding one keeps that very node in float even though
        // the MatMul + bias fusion removes nodes before it.
        let mut model = Model::decode(&cnn()).unwrap();
        for n in &mut model.graph.node {
            n.name.clear();
        }
        let mut proto = model.proto.clone();
        proto.graph = Some(model.graph.clone());
        let bytes = prost::Message::encode_to_vec(&proto);
        let names: Vec<String> = candidates(&bytes)
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        let last = names.last().unwrap().clone();
        assert!(last.starts_with("MatMul_"), "{names:?}");
        let options = Int8Options {
            exclude: [last.clone()].into(),
            ..Default::default()
        };
        let ranges = calibrate(&bytes, &options, Method::MinMax);
        let q = static_int8(&bytes, &ranges, &options).unwrap();
        assert_eq!(q.kept[0].0, last);
        assert_eq!(q.quantized, names[..3]);
        let after = candidates(&q.bytes).unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].name, last);
    }

    #[test]
    fn excluded_operators_stay_float_and_missing_ranges_are_named() {
        let bytes = cnn();
        let options = Int8Options {
            exclude: ["conv1.conv".to_string()].into(),
            ..Default::default()
        };
        let ranges = calibrate(&bytes, &options, Method::MinMax);
        let q = static_int8(&bytes, &ranges, &options).unwrap();
        assert_eq!(q.quantized, ["conv2.conv", "fc1.matmul", "fc2.matmul"]);
        assert_eq!(q.kept[0].0, "conv1.conv");
        // conv1 reads its float weight still.
        let after = candidates(&q.bytes).unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].name, "conv1.conv");

        let mut partial = ranges.clone();
        let first = partial.keys().next().unwrap().clone();
        partial.remove(&first);
        let err = static_int8(&bytes, &partial, &Int8Options::default()).unwrap_err();
        assert!(err.to_string().contains("no calibrated range"), "{err}");
    }
}
