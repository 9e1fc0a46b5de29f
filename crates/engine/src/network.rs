//! A resolved spec as a burn module. The layer list is dynamic, so activations carry their
//! rank at run time ([`Act`]); the spec check has already ruled out rank mismatches.

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::nn::attention::{MhaInput, MultiHeadAttention, MultiHeadAttentionConfig};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Embedding, EmbeddingConfig, Gelu,
    LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d, PositionalEncoding,
    PositionalEncodingConfig, Relu, Sigmoid, Tanh,
};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};

use crate::spec::{LayerSpec, ResolvedSpec};

/// Layers without parameters that burn has no module for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Op {
    #[default]
    Flatten,
    Softmax,
    GlobalAvgPool,
    MeanPool,
}

#[derive(Module, Debug)]
pub struct Stateless {
    #[module(skip)]
    pub op: Op,
}

#[derive(Module, Debug)]
pub struct Residual {
    pub layers: Vec<Layer>,
}

// Layers live in a Vec built once per network; boxing the large variants would only add a
// pointer chase to every forward pass.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Layer {
    Linear(Linear),
    Conv2d(Conv2d),
    MaxPool2d(MaxPool2d),
    AvgPool2d(AvgPool2d),
    BatchNorm(BatchNorm),
    LayerNorm(LayerNorm),
    Dropout(Dropout),
    Embedding(Embedding),
    PositionalEncoding(PositionalEncoding),
    Relu(Relu),
    Gelu(Gelu),
    Tanh(Tanh),
    Sigmoid(Sigmoid),
    Residual(Residual),
    Attention(MultiHeadAttention),
    TransformerEncoder(TransformerEncoder),
    Stateless(Stateless),
}

/// The network: layers applied in order to a batch.
#[derive(Module, Debug)]
pub struct Network {
    pub layers: Vec<Layer>,
}

/// An activation of any rank the layers produce (batch first).
pub enum Act {
    D2(Tensor<2>),
    D3(Tensor<3>),
    D4(Tensor<4>),
}

impl Network {
    /// Builds the layers with fresh weights. Parameter ids are numbered in layer order, so
    /// a network built twice from one spec has the same ids and an optimizer state saved
    /// with one applies to the other (exact resume).
    pub fn new(spec: &ResolvedSpec, device: &Device) -> Self {
        let layers = spec.layers.iter().map(|l| build(l, device)).collect();
        Network { layers }.map(&mut Renumber(0))
    }

    /// Runs a batch `[N, ..input]` through, giving `[N, outputs]`.
    pub fn forward(&self, input: Act) -> Tensor<2> {
        self.forward_prefix(self.layers.len(), input)
    }

    /// The first `layers` layers only, flattened to `[N, ..]`: where an export and the
    /// engine part ways is found layer by layer.
    pub fn forward_prefix(&self, layers: usize, input: Act) -> Tensor<2> {
        let out = run(&self.layers[..layers.min(self.layers.len())], input);
        match out {
            Act::D2(t) => t,
            Act::D3(t) => t.flatten(1, 2),
            Act::D4(t) => t.flatten(1, 3),
        }
    }
}

struct Renumber(u64);

impl ModuleMapper for Renumber {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        self.0 += 1;
        let (_, value, _) = param.consume();
        Param::initialized(ParamId::from(self.0), value)
    }
}

/// A batch of samples as an activation: `values` holds `rows` samples of `shape`.
pub fn batch(values: Vec<f32>, rows: usize, shape: &[usize], device: &Device) -> Act {
    let mut dims = vec![rows];
    dims.extend_from_slice(shape);
    let data = TensorData::new(values, dims.clone());
    match dims.len() {
        2 => Act::D2(Tensor::from_data(data, device)),
        3 => Act::D3(Tensor::from_data(data, device)),
        4 => Act::D4(Tensor::from_data(data, device)),
        n => panic!("samples of rank {} are refused by the spec check", n - 1),
    }
}

fn build(layer: &LayerSpec, device: &Device) -> Layer {
    use LayerSpec as L;
    let size = |s: &Option<usize>| s.expect("a resolved spec has every size");
    match layer {
        L::Linear {
            in_features,
            out_features,
            bias,
        } => Layer::Linear(
            LinearConfig::new(size(in_features), *out_features)
                .with_bias(*bias)
                .init(device),
        ),
        L::Conv2d {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
        } => Layer::Conv2d(
            Conv2dConfig::new([size(in_channels), *out_channels], [*kernel, *kernel])
                .with_stride([*stride, *stride])
                .with_padding(PaddingConfig2d::Explicit(
                    *padding, *padding, *padding, *padding,
                ))
                .init(device),
        ),
        L::MaxPool2d { kernel, stride } => Layer::MaxPool2d(
            MaxPool2dConfig::new([*kernel, *kernel])
                .with_strides([stride.unwrap_or(*kernel); 2])
                .init(),
        ),
        L::AvgPool2d { kernel, stride } => Layer::AvgPool2d(
            AvgPool2dConfig::new([*kernel, *kernel])
                .with_strides([stride.unwrap_or(*kernel); 2])
                .init(),
        ),
        L::GlobalAvgPool => stateless(Op::GlobalAvgPool),
        L::BatchNorm { features } => {
            Layer::BatchNorm(BatchNormConfig::new(size(features)).init(device))
        }
        L::LayerNorm { features } => {
            Layer::LayerNorm(LayerNormConfig::new(size(features)).init(device))
        }
        L::Dropout { p } => Layer::Dropout(DropoutConfig::new(*p).init()),
        L::Embedding { vocab, dim } => {
            Layer::Embedding(EmbeddingConfig::new(*vocab, *dim).init(device))
        }
        L::PositionalEncoding { max_len, features } => Layer::PositionalEncoding(
            PositionalEncodingConfig::new(size(features))
                .with_max_sequence_size(*max_len)
                .init(device),
        ),
        L::Relu => Layer::Relu(Relu::new()),
        L::Gelu => Layer::Gelu(Gelu::new()),
        L::Tanh => Layer::Tanh(Tanh::new()),
        L::Sigmoid => Layer::Sigmoid(Sigmoid::new()),
        L::Softmax => stateless(Op::Softmax),
        L::Flatten => stateless(Op::Flatten),
        L::Residual { layers } => Layer::Residual(Residual {
            layers: build_all(layers, device),
        }),
        L::Attention {
            heads,
            dropout,
            features,
        } => Layer::Attention(
            MultiHeadAttentionConfig::new(size(features), *heads)
                .with_dropout(*dropout)
                .init(device),
        ),
        L::TransformerEncoder {
            layers,
            heads,
            ff,
            dropout,
            features,
        } => Layer::TransformerEncoder(
            TransformerEncoderConfig::new(size(features), *ff, *heads, *layers)
                .with_dropout(*dropout)
                .init(device),
        ),
        L::MeanPool => stateless(Op::MeanPool),
    }
}

fn stateless(op: Op) -> Layer {
    Layer::Stateless(Stateless { op })
}

fn build_all(layers: &[LayerSpec], device: &Device) -> Vec<Layer> {
    layers.iter().map(|l| build(l, device)).collect()
}

fn run(layers: &[Layer], mut x: Act) -> Act {
    for layer in layers {
        x = apply(layer, x);
    }
    x
}

fn apply(layer: &Layer, x: Act) -> Act {
    match (layer, x) {
        (Layer::Linear(l), Act::D2(t)) => Act::D2(l.forward(t)),
        (Layer::Linear(l), Act::D3(t)) => Act::D3(l.forward(t)),
        (Layer::Linear(l), Act::D4(t)) => Act::D4(l.forward(t)),
        (Layer::Conv2d(l), Act::D4(t)) => Act::D4(l.forward(t)),
        (Layer::MaxPool2d(l), Act::D4(t)) => Act::D4(l.forward(t)),
        (Layer::AvgPool2d(l), Act::D4(t)) => Act::D4(l.forward(t)),
        (Layer::BatchNorm(l), Act::D2(t)) => {
            // burn normalises `[N, C, ..]`; a feature vector is `[N, C]` with one position.
            let [n, c] = t.dims();
            Act::D2(l.forward(t.reshape([n, c, 1])).reshape([n, c]))
        }
        (Layer::BatchNorm(l), Act::D3(t)) => Act::D3(l.forward(t)),
        (Layer::BatchNorm(l), Act::D4(t)) => Act::D4(l.forward(t)),
        (Layer::LayerNorm(l), x) => {
            map_any(x, |t| l.forward(t), |t| l.forward(t), |t| l.forward(t))
        }
        (Layer::Dropout(l), x) => map_any(x, |t| l.forward(t), |t| l.forward(t), |t| l.forward(t)),
        (Layer::Relu(l), x) => map_any(x, |t| l.forward(t), |t| l.forward(t), |t| l.forward(t)),
        (Layer::Gelu(l), x) => map_any(x, |t| l.forward(t), |t| l.forward(t), |t| l.forward(t)),
        (Layer::Tanh(l), x) => map_any(x, |t| l.forward(t), |t| l.forward(t), |t| l.forward(t)),
        (Layer::Sigmoid(l), x) => map_any(x, |t| l.forward(t), |t| l.forward(t), |t| l.forward(t)),
        (Layer::Embedding(l), Act::D2(t)) => Act::D3(l.forward(t.int())),
        (Layer::PositionalEncoding(l), Act::D3(t)) => Act::D3(l.forward(t)),
        (Layer::Residual(r), x) => {
            let skip = clone_act(&x);
            add(skip, run(&r.layers, x))
        }
        (Layer::Attention(l), Act::D3(t)) => Act::D3(l.forward(MhaInput::self_attn(t)).context),
        (Layer::TransformerEncoder(l), Act::D3(t)) => {
            Act::D3(l.forward(TransformerEncoderInput::new(t)))
        }
        (Layer::Stateless(s), x) => match (s.op, x) {
            (Op::Flatten, Act::D2(t)) => Act::D2(t),
            (Op::Flatten, Act::D3(t)) => Act::D2(t.flatten(1, 2)),
            (Op::Flatten, Act::D4(t)) => Act::D2(t.flatten(1, 3)),
            (Op::Softmax, x) => map_any(x, |t| softmax(t, 1), |t| softmax(t, 2), |t| softmax(t, 3)),
            (Op::GlobalAvgPool, Act::D4(t)) => {
                let [n, c, h, w] = t.dims();
                Act::D2(t.reshape([n, c, h * w]).mean_dim(2).reshape([n, c]))
            }
            (Op::MeanPool, Act::D3(t)) => {
                let [n, _, d] = t.dims();
                Act::D2(t.mean_dim(1).reshape([n, d]))
            }
            (op, x) => panic!(
                "{op:?} on a rank-{} activation passed the spec check",
                rank(&x)
            ),
        },
        (layer, x) => panic!(
            "layer {} on a rank-{} activation passed the spec check",
            layer_name(layer),
            rank(&x)
        ),
    }
}

fn map_any(
    x: Act,
    f2: impl FnOnce(Tensor<2>) -> Tensor<2>,
    f3: impl FnOnce(Tensor<3>) -> Tensor<3>,
    f4: impl FnOnce(Tensor<4>) -> Tensor<4>,
) -> Act {
    match x {
        Act::D2(t) => Act::D2(f2(t)),
        Act::D3(t) => Act::D3(f3(t)),
        Act::D4(t) => Act::D4(f4(t)),
    }
}

fn clone_act(x: &Act) -> Act {
    match x {
        Act::D2(t) => Act::D2(t.clone()),
        Act::D3(t) => Act::D3(t.clone()),
        Act::D4(t) => Act::D4(t.clone()),
    }
}

fn add(a: Act, b: Act) -> Act {
    match (a, b) {
        (Act::D2(a), Act::D2(b)) => Act::D2(a + b),
        (Act::D3(a), Act::D3(b)) => Act::D3(a + b),
        (Act::D4(a), Act::D4(b)) => Act::D4(a + b),
        _ => panic!("a residual block changed rank past the spec check"),
    }
}

fn rank(x: &Act) -> usize {
    match x {
        Act::D2(_) => 2,
        Act::D3(_) => 3,
        Act::D4(_) => 4,
    }
}

fn layer_name(layer: &Layer) -> &'static str {
    match layer {
        Layer::Linear(_) => "linear",
        Layer::Conv2d(_) => "conv2d",
        Layer::MaxPool2d(_) => "max_pool2d",
        Layer::AvgPool2d(_) => "avg_pool2d",
        Layer::BatchNorm(_) => "batch_norm",
        Layer::LayerNorm(_) => "layer_norm",
        Layer::Dropout(_) => "dropout",
        Layer::Embedding(_) => "embedding",
        Layer::PositionalEncoding(_) => "positional_encoding",
        Layer::Relu(_) => "relu",
        Layer::Gelu(_) => "gelu",
        Layer::Tanh(_) => "tanh",
        Layer::Sigmoid(_) => "sigmoid",
        Layer::Residual(_) => "residual",
        Layer::Attention(_) => "attention",
        Layer::TransformerEncoder(_) => "transformer_encoder",
        Layer::Stateless(_) => "stateless",
    }
}
