//! A trained network in the framework-neutral vocabulary of `trainyard_models::graph`, from
//! which the ONNX file of a model version is written. Weights are read from the burn
//! modules, geometry (kernels, strides, padding) from the resolved spec they were built
//! from; batch norm takes its running statistics, as inference does.

use burn::tensor::Tensor;
use trainyard_models::graph::{Graph, Layer as G, NamedLayer, Weights};

use crate::network::{Layer, Network, Op};
use crate::spec::{LayerSpec, ResolvedSpec};
use crate::EngineError;

/// burn's default layer-norm epsilon, which the engine's layers use (burn keeps the field
/// private).
const LAYER_NORM_EPSILON: f64 = 1e-5;

/// The network as a neutral graph named `name`. Layers the ONNX export does not cover yet
/// (embedding, positional encoding, attention, transformer encoder) are refused by path.
pub fn graph(net: &Network, spec: &ResolvedSpec, name: &str) -> Result<Graph, EngineError> {
    Ok(Graph {
        name: name.to_string(),
        sample_shape: spec.input.clone(),
        layers: layers(&net.layers, &spec.layers, "layers")?,
    })
}

fn layers(
    built: &[Layer],
    specs: &[LayerSpec],
    path: &str,
) -> Result<Vec<NamedLayer>, EngineError> {
    if built.len() != specs.len() {
        return Err(EngineError::Spec(format!(
            "{path}: the network has {} layers, its spec {}",
            built.len(),
            specs.len()
        )));
    }
    built
        .iter()
        .zip(specs)
        .enumerate()
        .map(|(i, (layer, spec))| {
            let name = format!("{path}[{i}]");
            let layer = one(layer, spec, &name)?;
            Ok(NamedLayer { name, layer })
        })
        .collect()
}

fn values<const D: usize>(t: Tensor<D>) -> Result<Weights, EngineError> {
    let shape = t.dims().to_vec();
    let values = t
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| EngineError::Data(format!("cannot read weights: {e:?}")))?;
    Ok(Weights::new(shape, values))
}

fn one(layer: &Layer, spec: &LayerSpec, at: &str) -> Result<G, EngineError> {
    let unsupported = |what: &str| {
        EngineError::Unsupported(format!(
            "{at} ({what}): ONNX export of this layer type is not built yet"
        ))
    };
    Ok(match (layer, spec) {
        (Layer::Linear(l), _) => G::Linear {
            weight: values(l.weight.val())?,
            bias: l.bias.as_ref().map(|b| values(b.val())).transpose()?,
        },
        (
            Layer::Conv2d(l),
            LayerSpec::Conv2d {
                stride, padding, ..
            },
        ) => G::Conv2d {
            weight: values(l.weight.val())?,
            bias: l.bias.as_ref().map(|b| values(b.val())).transpose()?,
            stride: *stride,
            padding: *padding,
        },
        (Layer::MaxPool2d(_), LayerSpec::MaxPool2d { kernel, stride }) => G::MaxPool2d {
            kernel: *kernel,
            stride: stride.unwrap_or(*kernel),
        },
        (Layer::AvgPool2d(_), LayerSpec::AvgPool2d { kernel, stride }) => G::AvgPool2d {
            kernel: *kernel,
            stride: stride.unwrap_or(*kernel),
        },
        (Layer::BatchNorm(l), _) => G::BatchNorm {
            gamma: values(l.gamma.val())?,
            beta: values(l.beta.val())?,
            mean: values(l.running_mean.value())?,
            var: values(l.running_var.value())?,
            epsilon: l.epsilon,
        },
        (Layer::LayerNorm(l), _) => G::LayerNorm {
            gamma: values(l.gamma.val())?,
            beta: l.beta.as_ref().map(|b| values(b.val())).transpose()?,
            epsilon: LAYER_NORM_EPSILON,
        },
        (Layer::Dropout(_), _) => G::Identity,
        (Layer::Relu(_), _) => G::Relu,
        (Layer::Gelu(_), _) => G::Gelu,
        (Layer::Tanh(_), _) => G::Tanh,
        (Layer::Sigmoid(_), _) => G::Sigmoid,
        (Layer::Residual(r), LayerSpec::Residual { layers: specs }) => {
            G::Residual(layers(&r.layers, specs, &format!("{at}.layers"))?)
        }
        (Layer::Stateless(s), _) => match s.op {
            Op::Flatten => G::Flatten,
            Op::Softmax => G::Softmax,
            Op::GlobalAvgPool => G::GlobalAvgPool,
            Op::MeanPool => G::MeanPool,
        },
        (Layer::Embedding(_), _) => return Err(unsupported("embedding")),
        (Layer::PositionalEncoding(_), _) => return Err(unsupported("positional_encoding")),
        (Layer::Attention(_), _) => return Err(unsupported("attention")),
        (Layer::TransformerEncoder(_), _) => return Err(unsupported("transformer_encoder")),
        (_, spec) => {
            return Err(EngineError::Spec(format!(
                "{at}: the network's layer does not match its spec ({spec:?})"
            )))
        }
    })
}
