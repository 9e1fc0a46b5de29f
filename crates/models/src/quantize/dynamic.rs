//! Dynamic 8-bit quantization: weights stored as 8-bit integers, each activation quantized
//! by the runtime from its own range on every call. ONNX Runtime's `quantize_dynamic` writes
//! the same pattern for `MatMul` (and fuses it into one kernel). Matrix weights are signed
//! and symmetric; convolution weights unsigned, because ONNX Runtime's `ConvInteger` runs
//! signed weights three times slower on CPUs without VNNI (measured: 3.4 vs 1.2 ms for the
//! digits CNN's second convolution at batch 32) and refuses a zero point per channel.
//! Per channel, a convolution's weights are therefore symmetric around one shared zero
//! point (128, or 64 with `reduce_range`) with a scale per output channel, applied after the
//! integer convolution.
//!
//! `MatMul(x, W)` becomes
//! `DynamicQuantizeLinear(x) → MatMulInteger(x_q, W_q, x_zp) → Cast → Mul(x_scale · w_scale)`,
//! and a `Gemm` the same followed by its bias; `Conv(x, W, b)` becomes
//! `ConvInteger(x_q, W_q, x_zp, w_zp) → Cast → Mul(x_scale · w_scale) → Add(b)`.
//! A batch norm written out after a convolution is folded into it first, as for static
//! int8. The integer operator keeps the name of the node it replaces; the nodes around it
//! are unnamed and the new tensors get short suffixes, since names are a real part of a
//! small model's file (see the compression section of `docs/benchmarks.md`).

use tract_onnx::pb;

use super::params::Grid;
use super::{
    excluded, float_attr, floats, int_attr, integers, node, quantize_weight, unquantizable,
    FloatTensor, Int8Options, Model, Quantized, INT8, UINT8,
};
use crate::ModelsError;

/// The model with every candidate's weights in 8 bits (unless excluded).
pub fn dynamic_int8(bytes: &[u8], options: &Int8Options) -> Result<Quantized, ModelsError> {
    let mut model = Model::decode(bytes)?;
    model.fold_conv_affine();
    if model.opset < 11 {
        return Err(ModelsError::Invalid {
            at: "model".into(),
            message: format!(
                "opset {} has no DynamicQuantizeLinear; re-export the model with opset 11 or later",
                model.opset
            ),
        });
    }
    let mut used = model.names();
    let mut quantized = Vec::new();
    let mut kept = Vec::new();
    let mut any = false;
    let old = std::mem::take(&mut model.graph.node);
    let mut nodes = Vec::with_capacity(old.len());
    for (index, n) in old.into_iter().enumerate() {
        let name = super::node_name(&n, index);
        let Some(w) = model.weight_of(&n) else {
            nodes.push(n);
            continue;
        };
        any = true;
        if let Some(k) = excluded(options, &name) {
            kept.push(k);
            nodes.push(n);
            continue;
        }
        if let Some(why) = unquantizable(&w) {
            kept.push((name, why));
            nodes.push(n);
            continue;
        }
        let rewritten = match n.op_type.as_str() {
            "Conv" => conv(&mut model, &mut used, &n, &w, options),
            _ => matmul(&mut model, &mut used, &n, &w, options),
        };
        match rewritten {
            Ok(new) => {
                nodes.extend(new);
                quantized.push(name);
            }
            Err(why) => {
                kept.push((name, why));
                nodes.push(n);
            }
        }
    }
    if !any {
        return Err(super::nothing_to_quantize(&model));
    }
    model.graph.node = nodes;
    model.prune();
    Ok(Quantized {
        bytes: model.encode(),
        quantized,
        kept,
    })
}

/// Names for one rewritten node's new tensors and nodes.
struct Names<'a> {
    model: &'a mut Model,
    used: &'a mut std::collections::HashSet<String>,
    base: String,
}

impl Names<'_> {
    fn get(&mut self, suffix: &str) -> String {
        self.model
            .fresh(self.used, &format!("{}{suffix}", self.base))
    }
}

/// `DynamicQuantizeLinear(x)`: the node and its three outputs (x_q, x_scale, x_zp).
fn quantize_input(names: &mut Names, x: &str) -> (pb::NodeProto, [String; 3]) {
    let out = [names.get("_xq"), names.get("_xs"), names.get("_xz")];
    let n = node(
        "DynamicQuantizeLinear",
        "",
        vec![x.to_string()],
        out.to_vec(),
    );
    (n, out)
}

fn matmul(
    model: &mut Model,
    used: &mut std::collections::HashSet<String>,
    n: &pb::NodeProto,
    w: &FloatTensor,
    options: &Int8Options,
) -> Result<Vec<pb::NodeProto>, String> {
    let gemm = n.op_type == "Gemm";
    if gemm
        && (int_attr(n, "transA").unwrap_or(0) != 0 || float_attr(n, "alpha").unwrap_or(1.0) != 1.0)
    {
        return Err("a Gemm with transA or alpha is kept in float".into());
    }
    let has_bias = gemm && n.input.get(2).is_some_and(|b| !b.is_empty());
    if has_bias && float_attr(n, "beta").unwrap_or(1.0) != 1.0 {
        return Err("a Gemm with beta is kept in float".into());
    }
    // MatMulInteger multiplies by [K, N]: a transposed Gemm weight is stored transposed.
    let w = if gemm && int_attr(n, "transB") == Some(1) {
        let (rows, cols) = (w.dims[0], w.dims[1]);
        let mut t = vec![0f32; w.values.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = w.values[r * cols + c];
            }
        }
        FloatTensor {
            dims: vec![cols, rows],
            values: t,
        }
    } else {
        w.clone()
    };
    let qw = quantize_weight(
        &w,
        1,
        options.per_channel,
        Grid::int8_symmetric(options.reduce_range),
        true,
    );
    // Every node has a name by now (`Model::decode` names the unnamed ones).
    let mut names = Names {
        model,
        used,
        base: n.name.clone(),
    };
    let (dql, [xq, xs, xz]) = quantize_input(&mut names, &n.input[0]);
    let wq = names.get("_wq");
    let ws = names.get("_ws");
    let scales: Vec<f32> = qw.affines.iter().map(|a| a.scale).collect();
    let dims: Vec<usize> = if qw.axis.is_some() {
        vec![scales.len()]
    } else {
        vec![]
    };
    names.model.add(integers(&wq, INT8, &w.dims, &qw.values));
    names.model.add(floats(&ws, &dims, &scales));
    let integer = node("MatMulInteger", &n.name, vec![xq, wq, xz], vec![]);
    let bias = has_bias.then(|| n.input[2].clone());
    let mut out = vec![dql];
    out.extend(to_float(&mut names, integer, [xs, ws], bias, &n.output[0]));
    Ok(out)
}

/// `integer` (its output to be named here), then its product as float:
/// `Cast → Mul(x_scale · w_scale) → Add(bias)`, ending in `output`.
fn to_float(
    names: &mut Names,
    mut integer: pb::NodeProto,
    [x_scale, w_scale]: [String; 2],
    bias: Option<String>,
    output: &str,
) -> Vec<pb::NodeProto> {
    let product = names.get("_i");
    let as_float = names.get("_f");
    let scale = names.get("_os");
    let scaled = match bias {
        Some(_) => names.get("_u"),
        None => output.to_string(),
    };
    integer.output = vec![product.clone()];
    let mut out = vec![
        integer,
        cast_to_float(&product, &as_float),
        node("Mul", "", vec![x_scale, w_scale], vec![scale.clone()]),
        node("Mul", "", vec![as_float, scale], vec![scaled.clone()]),
    ];
    if let Some(bias) = bias {
        out.push(node(
            "Add",
            "",
            vec![scaled, bias],
            vec![output.to_string()],
        ));
    }
    out
}

fn conv(
    model: &mut Model,
    used: &mut std::collections::HashSet<String>,
    n: &pb::NodeProto,
    w: &FloatTensor,
    options: &Int8Options,
) -> Result<Vec<pb::NodeProto>, String> {
    let channels = w.dims[0];
    let spatial = w.dims.len() - 2;
    // [C, 1, 1…]: scales and bias broadcast over the output's spatial axes.
    let mut per_channel_dims = vec![channels];
    per_channel_dims.extend(std::iter::repeat_n(1, spatial));
    let (values, scales, zero_point) = if options.per_channel {
        // Symmetric per channel, shifted onto the unsigned grid by one shared zero point
        // (see the module's doc): ±127 around 128, or ±63 around 64 with reduce_range.
        let half = if options.reduce_range { 63 } else { 127 };
        let grid = Grid {
            qmin: -half,
            qmax: half,
        };
        let qw = quantize_weight(w, 0, true, grid, true);
        let values = qw.values.iter().map(|q| q + half + 1).collect();
        let scales = qw.affines.iter().map(|a| a.scale).collect();
        (values, scales, half + 1)
    } else {
        let qw = quantize_weight(w, 0, false, Grid::uint8(options.reduce_range), false);
        (
            qw.values,
            vec![qw.affines[0].scale],
            qw.affines[0].zero_point,
        )
    };
    let bias = match n.input.get(2).filter(|b| !b.is_empty()) {
        None => None,
        Some(b) => match model.float(b) {
            Some(t) if t.values.len() == channels => Some(t.values),
            _ => return Err("its bias is not a constant of one value per channel".into()),
        },
    };
    // Every node has a name by now (`Model::decode` names the unnamed ones).
    let mut names = Names {
        model,
        used,
        base: n.name.clone(),
    };
    let (dql, [xq, xs, xz]) = quantize_input(&mut names, &n.input[0]);
    let wq = names.get("_wq");
    let ws = names.get("_ws");
    let wz = names.get("_wz");
    let scale_dims: &[usize] = if scales.len() > 1 {
        &per_channel_dims
    } else {
        &[]
    };
    names.model.add(integers(&wq, UINT8, &w.dims, &values));
    names.model.add(floats(&ws, scale_dims, &scales));
    names.model.add(integers(&wz, UINT8, &[], &[zero_point]));
    let bias = bias.map(|values| {
        let b = names.get("_b");
        names.model.add(floats(&b, &per_channel_dims, &values));
        b
    });
    let mut integer = node("ConvInteger", &n.name, vec![xq, wq, xz, wz], vec![]);
    integer.attribute = n.attribute.clone();
    let mut out = vec![dql];
    out.extend(to_float(&mut names, integer, [xs, ws], bias, &n.output[0]));
    Ok(out)
}

/// A `Cast` of `from` to float.
fn cast_to_float(from: &str, to: &str) -> pb::NodeProto {
    let mut n = node("Cast", "", vec![from.to_string()], vec![to.to_string()]);
    n.attribute
        .push(super::int_attribute("to", super::FLOAT as i64));
    n
}

#[cfg(test)]
mod tests {
    use super::super::candidates;
    use super::super::testing::*;
    use super::*;

    #[test]
    fn dynamic_int8_computes_what_the_float_model_computes_within_the_grid() {
        let bytes = cnn();
        let x = values(16 * 64, 21);
        let want = run(&bytes, &[16, 1, 8, 8], &x).remove(0);
        for (per_channel, reduce_range) in [(false, false), (true, false), (true, true)] {
            let options = Int8Options {
                per_channel,
                reduce_range,
                ..Default::default()
            };
            let q = dynamic_int8(&bytes, &options).unwrap();
            assert_eq!(q.quantized.len(), 4, "{:?}", q.kept);
            let got = run(&q.bytes, &[16, 1, 8, 8], &x).remove(0);
            let err = relative_error(&got, &want);
            let bound = if reduce_range { 0.08 } else { 0.04 };
            assert!(
                err < bound,
                "per_channel {per_channel} reduce {reduce_range}: {err}"
            );
            let (before, after) = (weight_bytes(&bytes), weight_bytes(&q.bytes));
            // Scales and 32-bit biases weigh in this tiny model; larger ones come near 4x.
            assert!(after * 3 < before, "{after} of {before} bytes");
            // No float weight is left to quantize.
            assert!(candidates(&q.bytes).is_err());
        }
    }

    #[test]
    fn a_batch_norm_is_folded_and_per_channel_convolutions_share_one_zero_point() {
        let bytes = conv_batch_norm();
        let x = values(16 * 64, 5);
        let want = run(&bytes, &[16, 1, 8, 8], &x).remove(0);
        for reduce_range in [false, true] {
            let options = Int8Options {
                per_channel: true,
                reduce_range,
                ..Default::default()
            };
            let q = dynamic_int8(&bytes, &options).unwrap();
            let got = run(&q.bytes, &[16, 1, 8, 8], &x).remove(0);
            let err = relative_error(&got, &want);
            assert!(err < 0.04, "reduce {reduce_range}: {err}");
            let model = Model::decode(&q.bytes).unwrap();
            // The batch norm's constants are gone into the convolution's weights.
            for gone in ["bn1.mean", "bn1.scale", "bn1.beta"] {
                assert!(!model.initializers.contains_key(gone), "{gone} is left");
            }
            let conv = model
                .graph
                .node
                .iter()
                .find(|n| n.op_type == "ConvInteger")
                .unwrap();
            assert_eq!(conv.name, "conv1.conv", "the integer node keeps the name");
            let tensor = |name: &str| &model.graph.initializer[model.initializers[name]];
            // One scale per output channel, one zero point in the middle of the grid.
            let (zero, half): (i32, i32) = if reduce_range { (64, 63) } else { (128, 127) };
            assert_eq!(tensor(&conv.input[3]).raw_data, [zero as u8]);
            let scales = model.float(&format!("{}_ws", conv.name)).unwrap();
            assert_eq!(scales.dims, [4, 1, 1]);
            let weights = &tensor(&conv.input[1]).raw_data;
            // Each channel reaches the edge of its grid: its own scale, not the tensor's.
            for channel in weights.chunks(9) {
                let reach = channel.iter().map(|q| (i32::from(*q) - zero).abs());
                assert_eq!(reach.max(), Some(half));
            }
        }
    }

    #[test]
    fn a_weight_with_nan_is_kept_in_float_and_said_so() {
        let bytes = cnn();
        let mut model = Model::decode(&bytes).unwrap();
        let i = model.initializers["fc2.weight"];
        model.graph.initializer[i].raw_data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
        let bytes = model.encode();
        let q = dynamic_int8(&bytes, &Int8Options::default()).unwrap();
        assert_eq!(
            q.kept,
            [(
                "fc2.matmul".to_string(),
                "its weight holds NaN or infinite values".to_string()
            )]
        );
        assert_eq!(q.quantized.len(), 3);
    }
}
