//! A framework-neutral graph (as read from an ONNX file) made native: the spec the engine
//! builds and the network holding the graph's weights, so an imported model can be
//! evaluated, predicted with and fine-tuned like a trained one.

use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::ModuleSnapshot;
use burn::tensor::{Bytes, DType};
use trainyard_models::graph::{Graph, Layer as G, NamedLayer, Weights};

use crate::network::Network;
use crate::spec::{LayerSpec, ModelSpec, ResolvedSpec};
use crate::EngineError;

use crate::export::NORM_EPSILON;

/// The spec and network (on the CPU) of `graph`; a layer the engine has no native form for,
/// or a norm with another epsilon, is refused by name.
pub fn from_graph(graph: &Graph) -> Result<(ResolvedSpec, Network), EngineError> {
    let mut tensors = Vec::new();
    let layers = specs(&graph.layers, "layers", &mut tensors)?;
    let spec = ModelSpec {
        input: Some(graph.sample_shape.clone()),
        layers,
        ..ModelSpec::default()
    }
    .resolve(None, None, "model")?;
    let cpu = crate::device::DeviceSpec::Cpu.device()?;
    let mut net = Network::new(&spec, &cpu);
    let result = net.apply(tensors, None, None, true);
    let mut problems: Vec<String> = result.errors.iter().map(ToString::to_string).collect();
    problems.extend(
        result
            .missing
            .iter()
            .map(|(p, _)| format!("{p}: no weights")),
    );
    problems.extend(
        result
            .unused
            .iter()
            .map(|p| format!("{p}: no such parameter")),
    );
    if problems.is_empty() {
        Ok((spec, net))
    } else {
        Err(EngineError::Spec(format!(
            "the graph's weights do not fit its layers: {}",
            problems.join("; ")
        )))
    }
}

fn tensor(name: String, w: &Weights) -> PackTensor {
    let bytes = w.values.iter().flat_map(|v| v.to_le_bytes()).collect();
    PackTensor::new(
        name,
        DType::F32,
        w.shape.clone(),
        None,
        Bytes::from_bytes_vec(bytes),
    )
}

fn zeros(n: usize) -> Weights {
    Weights::new(vec![n], vec![0.0; n])
}

fn specs(
    layers: &[NamedLayer],
    prefix: &str,
    tensors: &mut Vec<PackTensor>,
) -> Result<Vec<LayerSpec>, EngineError> {
    layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let path = format!("{prefix}.{i}");
            let mut put =
                |name: &str, w: &Weights| tensors.push(tensor(format!("{path}.{name}"), w));
            let refuse = |why: &str| EngineError::Unsupported(format!("{}: {why}", l.name));
            let norm = |epsilon: f64| {
                if (epsilon - NORM_EPSILON).abs() > 1e-9 {
                    Err(refuse(&format!(
                        "epsilon {epsilon} where the engine's norms use {NORM_EPSILON}"
                    )))
                } else {
                    Ok(())
                }
            };
            Ok(match &l.layer {
                G::Linear { weight, bias } => {
                    let [input, output] =
                        matrix(weight).ok_or_else(|| refuse("a linear weight is [in, out]"))?;
                    put("weight", weight);
                    if let Some(b) = bias {
                        put("bias", b);
                    }
                    LayerSpec::Linear {
                        in_features: Some(input),
                        out_features: output,
                        bias: bias.is_some(),
                    }
                }
                G::Conv2d {
                    weight,
                    bias,
                    stride,
                    padding,
                } => {
                    let [out, input, k, k2] = match weight.shape.as_slice() {
                        [o, i, h, w] => [*o, *i, *h, *w],
                        _ => return Err(refuse("a convolution's weight is [out, in, k, k]")),
                    };
                    if k != k2 {
                        return Err(refuse("the engine's convolutions have square kernels"));
                    }
                    put("weight", weight);
                    // The engine's convolutions always have a bias: none is a zero one.
                    put("bias", bias.as_ref().unwrap_or(&zeros(out)));
                    LayerSpec::Conv2d {
                        in_channels: Some(input),
                        out_channels: out,
                        kernel: k,
                        stride: *stride,
                        padding: *padding,
                    }
                }
                G::MaxPool2d { kernel, stride } => LayerSpec::MaxPool2d {
                    kernel: *kernel,
                    stride: Some(*stride),
                },
                G::AvgPool2d { kernel, stride } => LayerSpec::AvgPool2d {
                    kernel: *kernel,
                    stride: Some(*stride),
                },
                G::GlobalAvgPool => LayerSpec::GlobalAvgPool,
                G::BatchNorm {
                    gamma,
                    beta,
                    mean,
                    var,
                    epsilon,
                } => {
                    norm(*epsilon)?;
                    put("gamma", gamma);
                    put("beta", beta);
                    put("running_mean", mean);
                    put("running_var", var);
                    LayerSpec::BatchNorm {
                        features: Some(gamma.values.len()),
                    }
                }
                G::LayerNorm {
                    gamma,
                    beta,
                    epsilon,
                } => {
                    norm(*epsilon)?;
                    put("gamma", gamma);
                    put("beta", beta.as_ref().unwrap_or(&zeros(gamma.values.len())));
                    LayerSpec::LayerNorm {
                        features: Some(gamma.values.len()),
                    }
                }
                G::Relu => LayerSpec::Relu,
                G::Gelu => LayerSpec::Gelu,
                G::Tanh => LayerSpec::Tanh,
                G::Sigmoid => LayerSpec::Sigmoid,
                G::Softmax => LayerSpec::Softmax,
                G::Flatten => LayerSpec::Flatten,
                G::MeanPool => LayerSpec::MeanPool,
                G::Identity => LayerSpec::Dropout { p: 0.0 },
                G::Residual(inner) => LayerSpec::Residual {
                    layers: specs(inner, &format!("{path}.layers"), tensors)?,
                },
                G::Sequence(_)
                | G::Embedding { .. }
                | G::AddPositions { .. }
                | G::SelfAttention { .. } => {
                    return Err(refuse(
                        "sequence layers are not made native from a graph yet",
                    ))
                }
            })
        })
        .collect()
}

fn matrix(w: &Weights) -> Option<[usize; 2]> {
    match w.shape.as_slice() {
        [a, b] => Some([*a, *b]),
        _ => None,
    }
}
