//! Dynamic 8-bit quantization: weights stored as 8-bit integers, each activation quantized
//! by the runtime from its own range on every call. ONNX Runtime's `quantize_dynamic` writes
//! the same pattern for `MatMul` (and fuses it into one kernel). Convolution weights are
//! unsigned with a zero point, one per tensor (`ConvInteger`'s original form; ONNX Runtime
//! refuses per-channel zero points there), matrix weights signed and symmetric.
//!
//! `MatMul(x, W)` becomes
//! `DynamicQuantizeLinear(x) → MatMulInteger(x_q, W_q, x_zp) → Cast → Mul(x_scale · w_scale)`,
//! and a `Gemm` the same followed by its bias; `Conv(x, W, b)` becomes
//! `ConvInteger(x_q, W_q, x_zp, w_zp) → Cast → Mul(x_scale · w_scale) → Add(b)`.

use tract_onnx::pb;

use super::params::Grid;
use super::{
    excluded, float_attr, floats, int_attr, integers, node, quantize_weight, unquantizable,
    FloatTensor, Int8Options, Model, Quantized, INT8, SCALE, UINT8, ZERO_POINT,
};
use crate::ModelsError;

/// The model with every candidate's weights in 8 bits (unless excluded).
pub fn dynamic_int8(bytes: &[u8], options: &Int8Options) -> Result<Quantized, ModelsError> {
    let mut model = Model::decode(bytes)?;
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
    model: &'a Model,
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
    let out = [
        names.get("_input_quantized"),
        names.get(&format!("_input{SCALE}")),
        names.get(&format!("_input{ZERO_POINT}")),
    ];
    let n = node(
        "DynamicQuantizeLinear",
        &names.get("_DynamicQuantizeLinear"),
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
    let wq = names.get("_weight_quantized");
    let ws = names.get(&format!("_weight{SCALE}"));
    let product = names.get("_integer");
    let as_float = names.get("_float");
    let scale = names.get(&format!("_output{SCALE}"));
    let scaled = if has_bias {
        names.get("_unbiased")
    } else {
        n.output[0].clone()
    };
    let node_names = [
        names.get("_MatMulInteger"),
        names.get("_Cast"),
        names.get("_ScaleMul"),
        names.get("_OutputMul"),
        names.get("_BiasAdd"),
    ];
    let scales: Vec<f32> = qw.affines.iter().map(|a| a.scale).collect();
    let dims: Vec<usize> = if qw.axis.is_some() {
        vec![scales.len()]
    } else {
        vec![]
    };
    model.add(integers(&wq, INT8, &w.dims, &qw.values));
    model.add(floats(&ws, &dims, &scales));
    let mut out = vec![
        dql,
        node(
            "MatMulInteger",
            &node_names[0],
            vec![xq, wq, xz],
            vec![product.clone()],
        ),
        cast_to_float(&node_names[1], &product, &as_float),
        node("Mul", &node_names[2], vec![xs, ws], vec![scale.clone()]),
        node(
            "Mul",
            &node_names[3],
            vec![as_float, scale],
            vec![scaled.clone()],
        ),
    ];
    if scaled != n.output[0] {
        let bias = n.input[2].clone();
        out.push(node(
            "Add",
            &node_names[4],
            vec![scaled, bias],
            vec![n.output[0].clone()],
        ));
    }
    Ok(out)
}

fn conv(
    model: &mut Model,
    used: &mut std::collections::HashSet<String>,
    n: &pb::NodeProto,
    w: &FloatTensor,
    options: &Int8Options,
) -> Result<Vec<pb::NodeProto>, String> {
    // One zero point per tensor: ONNX Runtime's ConvInteger refuses a per-channel one
    // ("Non per-tensor quantization is not supported now"), so --per-channel applies to
    // matrices only here.
    let qw = quantize_weight(w, 0, false, Grid::uint8(options.reduce_range), false);
    let channels = w.dims[0];
    let spatial = w.dims.len() - 2;
    // [C, 1, 1…]: scales and bias broadcast over the output's spatial axes.
    let mut per_channel_dims = vec![channels];
    per_channel_dims.extend(std::iter::repeat_n(1, spatial));
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
    let wq = names.get("_weight_quantized");
    let ws = names.get(&format!("_weight{SCALE}"));
    let wz = names.get(&format!("_weight{ZERO_POINT}"));
    let bias_name = names.get("_bias_channels");
    let product = names.get("_integer");
    let as_float = names.get("_float");
    let scale = names.get(&format!("_output{SCALE}"));
    let scaled = if bias.is_some() {
        names.get("_unbiased")
    } else {
        n.output[0].clone()
    };
    let node_names = [
        names.get("_ConvInteger"),
        names.get("_Cast"),
        names.get("_ScaleMul"),
        names.get("_OutputMul"),
        names.get("_BiasAdd"),
    ];
    let scales: Vec<f32> = qw.affines.iter().map(|a| a.scale).collect();
    let zeros: Vec<i32> = qw.affines.iter().map(|a| a.zero_point).collect();
    // One scale and zero point for the whole kernel (see above).
    model.add(integers(&wq, UINT8, &w.dims, &qw.values));
    model.add(floats(&ws, &[], &scales));
    model.add(integers(&wz, UINT8, &[], &zeros));
    let mut integer_conv = node(
        "ConvInteger",
        &node_names[0],
        vec![xq, wq, xz, wz],
        vec![product.clone()],
    );
    integer_conv.attribute = n.attribute.clone();
    let mut out = vec![
        dql,
        integer_conv,
        cast_to_float(&node_names[1], &product, &as_float),
        node("Mul", &node_names[2], vec![xs, ws], vec![scale.clone()]),
        node(
            "Mul",
            &node_names[3],
            vec![as_float, scale],
            vec![scaled.clone()],
        ),
    ];
    if let Some(values) = bias {
        model.add(floats(&bias_name, &per_channel_dims, &values));
        out.push(node(
            "Add",
            &node_names[4],
            vec![scaled, bias_name],
            vec![n.output[0].clone()],
        ));
    }
    Ok(out)
}

fn cast_to_float(name: &str, from: &str, to: &str) -> pb::NodeProto {
    let mut n = node("Cast", name, vec![from.to_string()], vec![to.to_string()]);
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
