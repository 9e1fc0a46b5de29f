//! A trained network in the framework-neutral vocabulary of `trainyard_models::graph`, from
//! which the ONNX file of a model version is written. Weights are read from the burn
//! modules, geometry (kernels, strides, padding) from the resolved spec they were built
//! from; batch norm takes its running statistics, as inference does.

use burn::nn::activation::Activation;
use burn::nn::attention::MultiHeadAttention;
use burn::nn::transformer::TransformerEncoderLayer;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::Tensor;
use trainyard_models::graph::{Dense, Graph, Layer as G, NamedLayer, Weights};

use crate::network::{Layer, Network, Op};
use crate::spec::{LayerSpec, ResolvedSpec};
use crate::EngineError;

/// burn's default norm epsilon, which the engine's batch and layer norms use (burn keeps
/// the layer norm's field private).
pub(crate) const NORM_EPSILON: f64 = 1e-5;

/// The network as a neutral graph named `name`: every layer type the engine has, each
/// under its path in the spec (`layers[2].layers[0]`).
pub fn graph(net: &Network, spec: &ResolvedSpec, name: &str) -> Result<Graph, EngineError> {
    Ok(Graph {
        name: name.to_string(),
        sample_shape: spec.input.clone(),
        layers: layers(
            &net.layers,
            &spec.layers,
            "layers",
            spec.input.first().copied(),
        )?,
    })
}

/// `sequence` is the input's first sample dimension: a sequence's length wherever a
/// positional encoding applies (no layer changes it before one can).
fn layers(
    built: &[Layer],
    specs: &[LayerSpec],
    path: &str,
    sequence: Option<usize>,
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
            let layer = one(layer, spec, &name, sequence)?;
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

fn one(
    layer: &Layer,
    spec: &LayerSpec,
    at: &str,
    sequence: Option<usize>,
) -> Result<G, EngineError> {
    Ok(match (layer, spec) {
        (Layer::Linear(l), _) => linear(l)?,
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
        (Layer::LayerNorm(l), _) => layer_norm(l)?,
        (Layer::Dropout(_), _) => G::Identity,
        (Layer::Relu(_), _) => G::Relu,
        (Layer::Gelu(_), _) => G::Gelu,
        (Layer::Tanh(_), _) => G::Tanh,
        (Layer::Sigmoid(_), _) => G::Sigmoid,
        (Layer::Residual(r), LayerSpec::Residual { layers: specs }) => {
            G::Residual(layers(&r.layers, specs, &format!("{at}.layers"), sequence)?)
        }
        (Layer::Stateless(s), _) => match s.op {
            Op::Flatten => G::Flatten,
            Op::Softmax => G::Softmax,
            Op::GlobalAvgPool => G::GlobalAvgPool,
            Op::MeanPool => G::MeanPool,
        },
        (Layer::Embedding(l), _) => G::Embedding {
            table: values(l.weight.val())?,
        },
        (Layer::PositionalEncoding(l), _) => {
            // The spec fixes the sequence length: the rows of the table it reaches.
            let [_, max, d] = l.sinusoids.dims();
            let length = sequence.filter(|t| *t <= max).ok_or_else(|| {
                EngineError::Spec(format!(
                    "{at}: the input's sequence ({sequence:?}) does not fit the {max} positions encoded"
                ))
            })?;
            G::AddPositions {
                table: values(
                    l.sinusoids
                        .clone()
                        .slice([0..1, 0..length, 0..d])
                        .reshape([length, d]),
                )?,
            }
        }
        (Layer::Attention(l), _) => attention(l, at)?,
        (Layer::TransformerEncoder(l), _) => G::Sequence(
            l.layers
                .iter()
                .enumerate()
                .map(|(i, block)| {
                    let at = format!("{at}.layers[{i}]");
                    Ok(NamedLayer {
                        layer: encoder_block(block, &at)?,
                        name: at,
                    })
                })
                .collect::<Result<_, EngineError>>()?,
        ),
        (_, spec) => {
            return Err(EngineError::Spec(format!(
                "{at}: the network's layer does not match its spec ({spec:?})"
            )))
        }
    })
}

fn dense(l: &Linear) -> Result<Dense, EngineError> {
    Ok(Dense {
        weight: values(l.weight.val())?,
        bias: l.bias.as_ref().map(|b| values(b.val())).transpose()?,
    })
}

fn linear(l: &Linear) -> Result<G, EngineError> {
    let Dense { weight, bias } = dense(l)?;
    Ok(G::Linear { weight, bias })
}

fn attention(l: &MultiHeadAttention, at: &str) -> Result<G, EngineError> {
    // Quiet softmax adds one to the denominator, which the export does not write.
    if l.quiet_softmax {
        return Err(EngineError::Unsupported(format!(
            "{at}: attention with quiet softmax has no ONNX export"
        )));
    }
    Ok(G::SelfAttention {
        heads: l.n_heads,
        query: dense(&l.query)?,
        key: dense(&l.key)?,
        value: dense(&l.value)?,
        output: dense(&l.output)?,
    })
}

fn layer_norm(l: &LayerNorm) -> Result<G, EngineError> {
    Ok(G::LayerNorm {
        gamma: values(l.gamma.val())?,
        beta: l.beta.as_ref().map(|b| values(b.val())).transpose()?,
        epsilon: NORM_EPSILON,
    })
}

/// One encoder block as the layers it is made of: attention and the feed-forward network,
/// each a residual branch followed by its norm (post-norm, what the engine builds; dropout
/// is nothing at inference).
fn encoder_block(block: &TransformerEncoderLayer, at: &str) -> Result<G, EngineError> {
    if block.norm_first {
        return Err(EngineError::Unsupported(format!(
            "{at}: pre-norm encoder blocks have no ONNX export"
        )));
    }
    let named = |name: &str, layer: G| NamedLayer {
        name: format!("{at}.{name}"),
        layer,
    };
    let activation = match &block.pwff.activation {
        Activation::Gelu(_) => G::Gelu,
        Activation::Relu(_) => G::Relu,
        _ => {
            return Err(EngineError::Unsupported(format!(
                "{at}.pwff: this activation has no ONNX export"
            )))
        }
    };
    let attention = named("mha", attention(&block.mha, &format!("{at}.mha"))?);
    let feed_forward = vec![
        named("pwff.linear_inner", linear(&block.pwff.linear_inner)?),
        named("pwff.activation", activation),
        named("pwff.linear_outer", linear(&block.pwff.linear_outer)?),
    ];
    let norm_1 = named("norm_1", layer_norm(&block.norm_1)?);
    let norm_2 = named("norm_2", layer_norm(&block.norm_2)?);
    let residual = |name: &str, inner: Vec<NamedLayer>| named(name, G::Residual(inner));
    Ok(G::Sequence(vec![
        residual("attention", vec![attention]),
        norm_1,
        residual("feed_forward", feed_forward),
        norm_2,
    ]))
}
