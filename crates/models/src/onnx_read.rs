//! An ONNX model read back into a [`Graph`] — the native form a model must have to be
//! fine-tuned. Only a chain of the operators that map onto engine layers is taken: `MatMul`
//! (+ `Add` of a bias), `Gemm`, `Conv`, `Relu`, `Gelu`, `Tanh`, `Sigmoid`, `MaxPool`,
//! `AveragePool`, `GlobalAveragePool`, `BatchNormalization` (and the subtract-multiply-add
//! form this crate writes it in), `Flatten`, `Reshape` to `[batch, -1]`, `Softmax` over the
//! last axis, `Dropout` and `Identity`. Anything else is refused naming the operator and
//! the node; the file can still be served as it is.

use std::collections::HashMap;

use tract_onnx::pb;

use crate::graph::{Graph, Layer, NamedLayer, Weights};
use crate::ModelsError;

const FLOAT: i32 = pb::tensor_proto::DataType::Float as i32;
const INT64: i32 = pb::tensor_proto::DataType::Int64 as i32;

/// Reads `bytes` as a chain of engine layers named `name`.
pub fn to_graph(bytes: &[u8], name: &str) -> Result<Graph, ModelsError> {
    let graph = crate::onnx::decode(bytes)?
        .graph
        .expect("decode checks for a graph");
    let constants: HashMap<&str, &pb::TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !constants.contains_key(i.name.as_str()))
        .collect();
    let [input] = inputs.as_slice() else {
        return Err(refuse(
            "graph",
            format!("{} inputs; the native form has one", inputs.len()),
        ));
    };
    let [output] = graph.output.as_slice() else {
        return Err(refuse(
            "graph",
            format!("{} outputs; the native form has one", graph.output.len()),
        ));
    };
    let sample_shape = sample_shape(input)?;

    let mut reader = Reader {
        constants,
        nodes: &graph.node,
        at: 0,
        current: input.name.clone(),
    };
    let mut layers = Vec::new();
    while let Some(layer) = reader.next()? {
        if let Some(layer) = layer {
            layers.push(NamedLayer {
                name: format!("layers[{}]", layers.len()),
                layer,
            });
        }
    }
    if reader.current != output.name {
        return Err(refuse(
            "graph",
            format!(
                "the chain ends at `{}`, not at the output `{}`",
                reader.current, output.name
            ),
        ));
    }
    Ok(Graph {
        name: name.to_string(),
        sample_shape,
        layers,
    })
}

fn refuse(at: &str, message: impl Into<String>) -> ModelsError {
    ModelsError::Invalid {
        at: at.to_string(),
        message: message.into(),
    }
}

/// `[batch, d1, ..]` with every sample dimension known.
fn sample_shape(input: &pb::ValueInfoProto) -> Result<Vec<usize>, ModelsError> {
    let dims = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) if t.elem_type == FLOAT => t
            .shape
            .as_ref()
            .map(|s| s.dim.as_slice())
            .unwrap_or_default(),
        _ => {
            return Err(refuse(
                &format!("input `{}`", input.name),
                "the native form takes one float32 tensor",
            ))
        }
    };
    dims.iter()
        .skip(1)
        .map(|d| match d.value {
            Some(pb::tensor_shape_proto::dimension::Value::DimValue(n)) if n > 0 => Ok(n as usize),
            _ => Err(refuse(
                &format!("input `{}`", input.name),
                "every dimension but the batch must be a fixed size",
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|s| {
            if s.is_empty() {
                Err(refuse(
                    &format!("input `{}`", input.name),
                    "a batch of scalars",
                ))
            } else {
                Ok(s)
            }
        })
}

struct Reader<'a> {
    constants: HashMap<&'a str, &'a pb::TensorProto>,
    nodes: &'a [pb::NodeProto],
    at: usize,
    /// The value the chain has reached.
    current: String,
}

impl Reader<'_> {
    /// The next layer (`Some(None)`: a node that is nothing at inference), or the end.
    fn next(&mut self) -> Result<Option<Option<Layer>>, ModelsError> {
        let Some(node) = self.nodes.get(self.at) else {
            return Ok(None);
        };
        self.at += 1;
        let at = format!("node `{}` ({})", node.name, node.op_type);
        let ints = |name: &str| attribute(node, name).map(|a| a.ints.clone());
        let int = |name: &str, default: i64| attribute(node, name).map_or(default, |a| a.i);
        let float = |name: &str, default: f32| attribute(node, name).map_or(default, |a| a.f);
        // The chain: the node's first input is the value reached so far.
        if node.input.first() != Some(&self.current) {
            return Err(refuse(
                &at,
                format!(
                    "does not continue the chain from `{}` (branches are not in the native form)",
                    self.current
                ),
            ));
        }
        let mut out = node.output.first().cloned().unwrap_or_default();
        let constant = |i: usize| -> Result<Weights, ModelsError> {
            let name = node
                .input
                .get(i)
                .ok_or_else(|| refuse(&at, format!("has no input {i}")))?;
            let t = self.constants.get(name.as_str()).ok_or_else(|| {
                refuse(
                    &at,
                    format!("input `{name}` is computed, not a constant weight"),
                )
            })?;
            weights(t).map_err(|m| refuse(&at, format!("`{name}`: {m}")))
        };
        let layer = match node.op_type.as_str() {
            "MatMul" => {
                let weight = constant(1)?;
                if weight.shape.len() != 2 {
                    return Err(refuse(&at, "a MatMul weight must be a matrix"));
                }
                let outputs = weight.shape[1];
                let bias = self
                    .absorb(&mut out, "Add", |b| b.shape == [outputs])
                    .map_err(|m| refuse(&at, m))?;
                Some(Layer::Linear { weight, bias })
            }
            "Gemm" => {
                if int("transA", 0) != 0 || float("alpha", 1.0) != 1.0 || float("beta", 1.0) != 1.0 {
                    return Err(refuse(&at, "only transA = 0, alpha = beta = 1 map onto a linear layer"));
                }
                let w = constant(1)?;
                if w.shape.len() != 2 {
                    return Err(refuse(&at, "a Gemm weight must be a matrix"));
                }
                let weight = if int("transB", 0) != 0 {
                    w.transposed()
                        .ok_or_else(|| refuse(&at, "a Gemm weight must be a matrix"))?
                } else {
                    w
                };
                let bias = if node.input.len() > 2 && !node.input[2].is_empty() {
                    let b = constant(2)?;
                    if b.shape != [weight.shape[1]] {
                        return Err(refuse(&at, format!("bias of shape {:?} is not one per output", b.shape)));
                    }
                    Some(b)
                } else {
                    None
                };
                Some(Layer::Linear { weight, bias })
            }
            "Conv" => {
                let weight = constant(1)?;
                let [_, _, kh, kw] = match weight.shape.as_slice() {
                    [o, i, h, w] => [*o, *i, *h, *w],
                    _ => return Err(refuse(&at, "a 2-D convolution's weight is [out, in, k, k]")),
                };
                let square = |v: Option<Vec<i64>>, default: i64, n: usize| -> Option<i64> {
                    let v = v.unwrap_or_else(|| vec![default; n]);
                    (v.len() == n && v.iter().all(|x| *x == v[0])).then(|| v[0])
                };
                let stride = square(ints("strides"), 1, 2);
                let padding = square(ints("pads"), 0, 4);
                let dilation = square(ints("dilations"), 1, 2);
                if kh != kw || int("group", 1) != 1 || dilation != Some(1) || attribute(node, "auto_pad").is_some_and(|a| !a.s.is_empty() && a.s != b"NOTSET") {
                    return Err(refuse(&at, "only square kernels, one group, no dilation and explicit pads map onto conv2d"));
                }
                let (Some(stride), Some(padding)) = (stride, padding) else {
                    return Err(refuse(&at, "strides and pads must be the same on every side"));
                };
                let bias = if node.input.len() > 2 && !node.input[2].is_empty() { Some(constant(2)?) } else { None };
                let (Some(stride), Some(padding)) = (size(stride, 1), size(padding, 0)) else {
                    return Err(refuse(&at, "strides must be at least 1 and pads at least 0"));
                };
                Some(Layer::Conv2d { weight, bias, stride, padding })
            }
            "MaxPool" | "AveragePool" => {
                let kernel = ints("kernel_shape").unwrap_or_default();
                let strides = ints("strides").unwrap_or_else(|| vec![1, 1]);
                let pads = ints("pads").unwrap_or_default();
                if kernel.len() != 2 || kernel[0] != kernel[1] || strides.len() != 2 || strides[0] != strides[1] || pads.iter().any(|p| *p != 0) || int("ceil_mode", 0) != 0 {
                    return Err(refuse(&at, "only square kernels, equal strides, no padding and floor mode map onto a pool"));
                }
                let (Some(kernel), Some(stride)) = (size(kernel[0], 1), size(strides[0], 1)) else {
                    return Err(refuse(&at, "kernels and strides must be at least 1"));
                };
                Some(if node.op_type == "MaxPool" {
                    Layer::MaxPool2d { kernel, stride }
                } else {
                    Layer::AvgPool2d { kernel, stride }
                })
            }
            "GlobalAveragePool" => Some(Layer::GlobalAvgPool),
            "BatchNormalization" => Some(Layer::BatchNorm {
                gamma: constant(1)?,
                beta: constant(2)?,
                mean: constant(3)?,
                var: constant(4)?,
                epsilon: f64::from(float("epsilon", 1e-5)),
            }),
            // This crate's own batch norm: (x − mean) · scale + beta, constants [C, 1, ..].
            "Sub" => {
                let mean = constant(1)?;
                let c = *mean.shape.first().ok_or_else(|| refuse(&at, "a scalar mean"))?;
                let per_channel = |w: &Weights| {
                    w.shape.first() == Some(&c)
                        && w.shape.iter().skip(1).all(|d| *d == 1)
                        && w.values.len() == c
                };
                let not_batch_norm = || refuse(&at, "not the subtract-multiply-add form of a batch norm");
                let scale = self
                    .absorb(&mut out, "Mul", per_channel)
                    .map_err(|m| refuse(&at, m))?
                    .ok_or_else(not_batch_norm)?;
                let beta = self
                    .absorb(&mut out, "Add", per_channel)
                    .map_err(|m| refuse(&at, m))?
                    .ok_or_else(not_batch_norm)?;
                if !per_channel(&mean) {
                    return Err(not_batch_norm());
                }
                let flat = |w: Weights| Weights::new(vec![c], w.values);
                let epsilon = 1e-5;
                // Any γ and var with γ / √(var + ε) = scale will do: var + ε = 1 keeps it exact.
                Some(Layer::BatchNorm {
                    gamma: flat(scale),
                    beta: flat(beta),
                    mean: flat(mean),
                    var: Weights::new(vec![c], vec![(1.0 - epsilon) as f32; c]),
                    epsilon,
                })
            }
            "Relu" => Some(Layer::Relu),
            "Tanh" => Some(Layer::Tanh),
            "Sigmoid" => Some(Layer::Sigmoid),
            "Gelu" => {
                if attribute(node, "approximate").is_some_and(|a| a.s != b"none") {
                    return Err(refuse(&at, "only the exact (erf) GELU maps onto gelu"));
                }
                Some(Layer::Gelu)
            }
            "Softmax" => {
                let axis = int("axis", -1);
                if axis != -1 && axis != 1 {
                    return Err(refuse(&at, "only a softmax over the last axis maps onto softmax"));
                }
                Some(Layer::Softmax)
            }
            "Flatten" => {
                if int("axis", 1) != 1 {
                    return Err(refuse(&at, "only a flatten after the batch axis maps onto flatten"));
                }
                Some(Layer::Flatten)
            }
            "Reshape" => {
                let name = node.input.get(1).map(String::as_str).unwrap_or_default();
                let shape = self.constants.get(name).filter(|t| t.data_type == INT64).map(|t| int64s(t));
                match shape.as_deref() {
                    Some([0 | -1, -1]) | Some([-1, _]) | Some([0, _]) => Some(Layer::Flatten),
                    _ => return Err(refuse(&at, "only a reshape to [batch, -1] maps onto flatten")),
                }
            }
            "Dropout" | "Identity" => None,
            other => {
                return Err(refuse(&at, format!("{other} has no engine layer; the file is served as it is, but cannot become a native spec")))
            }
        };
        self.current = out;
        Ok(Some(layer))
    }

    /// When the next node is `op` applied to `*value` and a constant that `fits`, takes it:
    /// moves `*value` to that node's output and gives the constant.
    fn absorb(
        &mut self,
        value: &mut String,
        op: &str,
        fits: impl Fn(&Weights) -> bool,
    ) -> Result<Option<Weights>, String> {
        let Some(next) = self.nodes.get(self.at) else {
            return Ok(None);
        };
        if next.op_type != op || next.input.first() != Some(value) {
            return Ok(None);
        }
        let Some(t) = next
            .input
            .get(1)
            .and_then(|n| self.constants.get(n.as_str()))
        else {
            return Ok(None);
        };
        let w = weights(t)?;
        if !fits(&w) {
            return Ok(None);
        }
        self.at += 1;
        *value = next.output.first().cloned().unwrap_or_default();
        Ok(Some(w))
    }
}

/// An attribute as a size of at least `min` (a hostile file's negative or huge values
/// refused, not wrapped).
fn size(v: i64, min: usize) -> Option<usize> {
    usize::try_from(v)
        .ok()
        .filter(|n| *n >= min && *n <= 1 << 20)
}

pub(crate) fn attribute<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn int64s(t: &pb::TensorProto) -> Vec<i64> {
    if !t.int64_data.is_empty() {
        return t.int64_data.clone();
    }
    t.raw_data
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect()
}

/// A float32 constant as weights (raw or typed data; external data is not read here).
fn weights(t: &pb::TensorProto) -> Result<Weights, String> {
    if t.data_type != FLOAT {
        return Err("weights must be float32".into());
    }
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|d| usize::try_from(*d).map_err(|_| format!("dimension {d}")))
        .collect::<Result<_, _>>()?;
    let values: Vec<f32> = if !t.float_data.is_empty() {
        t.float_data.clone()
    } else {
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect()
    };
    let w = Weights::new(shape, values);
    if w.is_consistent() {
        Ok(w)
    } else {
        Err(format!(
            "{} values do not fill shape {:?}",
            w.values.len(),
            w.shape
        ))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::onnx::encode;

    fn named(name: &str, layer: Layer) -> NamedLayer {
        NamedLayer {
            name: name.into(),
            layer,
        }
    }

    fn node(
        op: &str,
        name: &str,
        inputs: &[&str],
        attribute: Vec<pb::AttributeProto>,
    ) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            name: name.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![format!("{name}:0")],
            attribute,
            ..Default::default()
        }
    }

    fn constant(name: &str, shape: &[i64], values: &[f32]) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: shape.to_vec(),
            data_type: FLOAT,
            float_data: values.to_vec(),
            ..Default::default()
        }
    }

    fn value(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
        let dim = |d: i64| pb::tensor_shape_proto::Dimension {
            value: Some(if d < 0 {
                pb::tensor_shape_proto::dimension::Value::DimParam("N".into())
            } else {
                pb::tensor_shape_proto::dimension::Value::DimValue(d)
            }),
            ..Default::default()
        };
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: FLOAT,
                    shape: Some(pb::TensorShapeProto {
                        dim: dims.iter().map(|d| dim(*d)).collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn model(nodes: Vec<pb::NodeProto>, constants: Vec<pb::TensorProto>, output: &str) -> Vec<u8> {
        pb::ModelProto {
            ir_version: 8,
            graph: Some(pb::GraphProto {
                node: nodes,
                initializer: constants,
                input: vec![value("x", &[-1, 3])],
                output: vec![value(output, &[-1, 2])],
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn what_this_crate_writes_reads_back_as_the_same_layers() {
        let v = |n: usize, x: f32| Weights::new(vec![n], vec![x; n]);
        let graph = Graph {
            name: "g".into(),
            sample_shape: vec![1, 4, 4],
            layers: vec![
                named(
                    "layers[0]",
                    Layer::Conv2d {
                        weight: Weights::new(
                            vec![2, 1, 3, 3],
                            (0..18).map(|i| i as f32 / 10.0).collect(),
                        ),
                        bias: Some(v(2, 0.5)),
                        stride: 1,
                        padding: 1,
                    },
                ),
                named("layers[1]", Layer::Relu),
                named(
                    "layers[2]",
                    Layer::MaxPool2d {
                        kernel: 2,
                        stride: 2,
                    },
                ),
                named("layers[3]", Layer::Flatten),
                named(
                    "layers[4]",
                    Layer::Linear {
                        weight: Weights::new(vec![8, 2], (0..16).map(|i| i as f32).collect()),
                        bias: Some(v(2, -1.0)),
                    },
                ),
                named("layers[5]", Layer::Softmax),
            ],
        };
        let back = to_graph(&encode(&graph, Some(2)).unwrap(), "g").unwrap();
        assert_eq!(back, graph);
    }

    #[test]
    fn gemm_with_transposed_weights_and_dropout_map_onto_engine_layers() {
        let nodes = vec![
            node(
                "Gemm",
                "fc",
                &["x", "w", "b"],
                vec![pb::AttributeProto {
                    name: "transB".into(),
                    r#type: pb::attribute_proto::AttributeType::Int as i32,
                    i: 1,
                    ..Default::default()
                }],
            ),
            node("Relu", "act", &["fc:0"], vec![]),
            node("Dropout", "drop", &["act:0"], vec![]),
        ];
        let constants = vec![
            // transB: [out, in] = [2, 3].
            constant("w", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            constant("b", &[2], &[0.5, -0.5]),
        ];
        let g = to_graph(&model(nodes, constants, "drop:0"), "m").unwrap();
        assert_eq!(g.sample_shape, [3]);
        assert_eq!(g.layers.len(), 2, "{g:?}");
        match &g.layers[0].layer {
            Layer::Linear { weight, bias } => {
                assert_eq!(weight.shape, [3, 2]);
                assert_eq!(weight.values, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
                assert_eq!(bias.as_ref().unwrap().values, [0.5, -0.5]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(g.layers[1].layer, Layer::Relu);
    }

    #[test]
    fn an_operator_without_an_engine_layer_is_named_with_its_node() {
        let nodes = vec![
            node("MatMul", "mm", &["x", "w"], vec![]),
            node("LeakyRelu", "leaky_7", &["mm:0"], vec![]),
        ];
        let constants = vec![constant("w", &[3, 2], &[0.0; 6])];
        let err = to_graph(&model(nodes, constants, "leaky_7:0"), "m")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("node `leaky_7` (LeakyRelu)") && err.contains("served as it is"),
            "{err}"
        );
        // A branch (the input used twice) is not a chain.
        let nodes = vec![
            node("Relu", "a", &["x"], vec![]),
            node("Add", "sum", &["x", "a:0"], vec![]),
        ];
        let err = to_graph(&model(nodes, vec![], "sum:0"), "m")
            .unwrap_err()
            .to_string();
        assert!(err.contains("node `sum` (Add)"), "{err}");
        assert!(to_graph(b"garbage", "m").is_err());
        // Negative pads and a Gemm weight that is not a matrix are refused, not wrapped.
        let pads = pb::AttributeProto {
            name: "pads".into(),
            r#type: pb::attribute_proto::AttributeType::Ints as i32,
            ints: vec![-1; 4],
            ..Default::default()
        };
        let nodes = vec![node("Conv", "conv", &["x", "k"], vec![pads])];
        let constants = vec![constant("k", &[1, 3, 1, 1], &[1.0; 3])];
        let err = to_graph(&model(nodes, constants, "conv:0"), "m")
            .unwrap_err()
            .to_string();
        assert!(err.contains("pads at least 0"), "{err}");
        let nodes = vec![node("Gemm", "g", &["x", "w", "b"], vec![])];
        let constants = vec![
            constant("w", &[3], &[1.0; 3]),
            constant("b", &[2], &[0.0; 2]),
        ];
        let err = to_graph(&model(nodes, constants, "g:0"), "m")
            .unwrap_err()
            .to_string();
        assert!(err.contains("a Gemm weight must be a matrix"), "{err}");
    }
}
