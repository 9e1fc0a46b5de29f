//! Model specs: the layers a user writes (or a named architecture that expands to them),
//! checked against the input shape when the spec is loaded, so a mismatch is reported with
//! its path before any job starts instead of as a panic deep inside a training step.

use serde::{Deserialize, Serialize};

use crate::EngineError;

/// One layer as written in a spec. Sizes a previous layer determines (`in_features`,
/// `in_channels`, `features`) may be left out; when given they must agree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    Linear {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        in_features: Option<usize>,
        out_features: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    Conv2d {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        in_channels: Option<usize>,
        out_channels: usize,
        kernel: usize,
        #[serde(default = "one")]
        stride: usize,
        #[serde(default)]
        padding: usize,
    },
    MaxPool2d {
        kernel: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stride: Option<usize>,
    },
    AvgPool2d {
        kernel: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stride: Option<usize>,
    },
    /// Mean over the spatial dimensions: `[C, H, W]` → `[C]`.
    GlobalAvgPool,
    BatchNorm {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        features: Option<usize>,
    },
    LayerNorm {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        features: Option<usize>,
    },
    Dropout {
        p: f64,
    },
    /// Token ids `[T]` → vectors `[T, dim]`.
    Embedding {
        vocab: usize,
        dim: usize,
    },
    /// Adds fixed sinusoidal positions to `[T, D]`.
    PositionalEncoding {
        #[serde(default = "max_len")]
        max_len: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        features: Option<usize>,
    },
    Relu,
    Gelu,
    Tanh,
    Sigmoid,
    Softmax,
    Flatten,
    /// `x + f(x)`: the inner layers must give back the input's shape.
    Residual {
        layers: Vec<LayerSpec>,
    },
    /// Multi-head self-attention over `[T, D]`.
    Attention {
        heads: usize,
        #[serde(default)]
        dropout: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        features: Option<usize>,
    },
    /// A stack of transformer encoder blocks over `[T, D]`.
    TransformerEncoder {
        layers: usize,
        heads: usize,
        ff: usize,
        #[serde(default)]
        dropout: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        features: Option<usize>,
    },
    /// Mean over the sequence: `[T, D]` → `[D]`.
    MeanPool,
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn max_len() -> usize {
    512
}

impl LayerSpec {
    pub const KNOWN: &'static [&'static str] = &[
        "linear",
        "conv2d",
        "max_pool2d",
        "avg_pool2d",
        "global_avg_pool",
        "batch_norm",
        "layer_norm",
        "dropout",
        "embedding",
        "positional_encoding",
        "relu",
        "gelu",
        "tanh",
        "sigmoid",
        "softmax",
        "flatten",
        "residual",
        "attention",
        "transformer_encoder",
        "mean_pool",
    ];
}

/// A named architecture, expanded to layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "architecture", rename_all = "snake_case", deny_unknown_fields)]
pub enum Architecture {
    /// Fully connected: `hidden` sizes, then `outputs`.
    Mlp {
        hidden: Vec<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outputs: Option<usize>,
        #[serde(default)]
        dropout: f64,
        #[serde(default = "relu")]
        activation: String,
    },
    /// Convolutions (each followed by ReLU), one max-pool, dropout, dense layers: with the
    /// defaults and a `[1, 28, 28]` input this is the PyTorch MNIST example's network.
    Cnn {
        #[serde(default = "cnn_channels")]
        channels: Vec<usize>,
        #[serde(default = "three")]
        kernel: usize,
        #[serde(default)]
        padding: usize,
        #[serde(default = "two")]
        pool: usize,
        #[serde(default = "cnn_dense")]
        dense: Vec<usize>,
        #[serde(default = "quarter")]
        conv_dropout: f64,
        #[serde(default = "half")]
        dense_dropout: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outputs: Option<usize>,
    },
    /// A small residual network: a 3×3 stem, `stages` of `blocks` basic blocks each (the
    /// width doubles and the resolution halves between stages), global pooling, a linear head.
    Resnet {
        #[serde(default = "sixteen")]
        width: usize,
        #[serde(default = "resnet_blocks")]
        blocks: Vec<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outputs: Option<usize>,
    },
    /// Token ids → embedding + positions → transformer encoder → mean pool → linear.
    TransformerClassifier {
        vocab: usize,
        dim: usize,
        heads: usize,
        /// Encoder blocks (`layers` is taken by explicit layer lists).
        depth: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ff: Option<usize>,
        #[serde(default)]
        dropout: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outputs: Option<usize>,
    },
}

fn relu() -> String {
    "relu".into()
}
fn cnn_channels() -> Vec<usize> {
    vec![32, 64]
}
fn cnn_dense() -> Vec<usize> {
    vec![128]
}
fn three() -> usize {
    3
}
fn two() -> usize {
    2
}
fn sixteen() -> usize {
    16
}
fn resnet_blocks() -> Vec<usize> {
    vec![2, 2]
}
fn quarter() -> f64 {
    0.25
}
fn half() -> f64 {
    0.5
}

/// A model as written: a named architecture or explicit layers, and optionally the
/// per-sample input shape (otherwise the dataset's column gives it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Vec<usize>>,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<Architecture>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerSpec>,
    /// Start from a registered version (`NAME:VERSION`): its layers and weights, with the
    /// head replaced when the task's outputs differ (transfer learning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Top-level layers (`layers[2]`) kept as they are while training.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<String>,
    /// Train only the last N layers that have weights; every earlier one is frozen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_last: Option<usize>,
}

/// A spec with every size known: what the network is built from and what a model version
/// stores, so the weights can be loaded into the same structure later.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedSpec {
    pub input: Vec<usize>,
    pub layers: Vec<LayerSpec>,
    pub output: Vec<usize>,
}

impl ResolvedSpec {
    /// The number of values a network's output holds per sample.
    pub fn outputs(&self) -> usize {
        self.output.iter().product()
    }
}

impl ModelSpec {
    /// Expands the architecture and checks every shape. `input` is the dataset's sample
    /// shape and `outputs` what the task needs (classes, or regression targets); either may
    /// be unknown. `path` prefixes error locations (for example `model`).
    pub fn resolve(
        &self,
        input: Option<&[usize]>,
        outputs: Option<usize>,
        path: &str,
    ) -> Result<ResolvedSpec, EngineError> {
        let input = match (&self.input, input) {
            (Some(spec), Some(data)) if spec.as_slice() != data => {
                return Err(EngineError::Spec(format!(
                    "{path}.input: the dataset gives samples of shape {data:?}, spec says {spec:?}"
                )))
            }
            (Some(spec), _) => spec.clone(),
            (None, Some(data)) => data.to_vec(),
            (None, None) => {
                return Err(EngineError::Spec(format!(
                    "{path}.input: unknown input shape; give `input = [..]` or a dataset"
                )))
            }
        };
        if input.is_empty() || input.contains(&0) {
            return Err(EngineError::Spec(format!(
                "{path}.input: a sample shape needs at least one dimension and no zero, got {input:?}"
            )));
        }
        let layers = match (&self.architecture, self.layers.is_empty()) {
            (Some(_), false) => {
                return Err(EngineError::Spec(format!(
                    "{path}: give either `architecture` or `layers`, not both"
                )))
            }
            (Some(arch), true) => expand(arch, &input, outputs, path)?,
            (None, false) => self.layers.clone(),
            (None, true) => {
                return Err(EngineError::Spec(format!(
                    "{path}: no layers; give `architecture = \"mlp\"` (or cnn, resnet, transformer_classifier) or `[[{path}.layers]]`"
                )))
            }
        };
        let (layers, output) = check_layers(&layers, input.clone(), &format!("{path}.layers"))?;
        if let Some(n) = outputs {
            let got: usize = output.iter().product();
            if output.len() != 1 || got != n {
                return Err(EngineError::Spec(format!(
                    "{path}: the last layer gives {output:?} per sample, the task needs [{n}]"
                )));
            }
        }
        Ok(ResolvedSpec {
            input,
            layers,
            output,
        })
    }
}

impl ModelSpec {
    /// The spec of a run that starts from `source` (the resolved spec of the version named
    /// by `from`): the same layers, with the head — the last layer with weights, which
    /// must be `linear` — given `outputs` outputs when the task needs another number.
    /// Returns the spec and the index of the replaced head, whose weights start fresh.
    pub fn resolve_from(
        &self,
        source: &ResolvedSpec,
        input: &[usize],
        outputs: usize,
        path: &str,
    ) -> Result<(ResolvedSpec, Option<usize>), EngineError> {
        let from = self.from.as_deref().unwrap_or("the source version");
        if self.architecture.is_some() || !self.layers.is_empty() {
            return Err(EngineError::Spec(format!(
                "{path}.from: a model that starts from {from} takes its layers from it; leave out `architecture` and `layers`"
            )));
        }
        if source.input != input {
            return Err(EngineError::Spec(format!(
                "{path}.from: {from} takes samples of shape {:?}, the dataset gives {input:?}",
                source.input
            )));
        }
        // The source's card was written by a job: its layers are checked again, like any
        // spec, rather than trusted.
        if source.outputs() == outputs && source.output.len() == 1 {
            let checked = ModelSpec {
                input: Some(input.to_vec()),
                layers: source.layers.clone(),
                ..ModelSpec::default()
            }
            .resolve(Some(input), Some(outputs), path)
            .map_err(|e| {
                EngineError::Spec(format!("{path}.from: {from}'s layers do not check: {e}"))
            })?;
            return Ok((checked, None));
        }
        let head = source
            .layers
            .iter()
            .rposition(LayerSpec::has_weights)
            .ok_or_else(|| {
                EngineError::Spec(format!("{path}.from: {from} has no layer with weights"))
            })?;
        let mut layers = source.layers.clone();
        match &mut layers[head] {
            LayerSpec::Linear { out_features, .. } => *out_features = outputs,
            other => {
                return Err(EngineError::Spec(format!(
                    "{path}.from: {from} gives {:?} outputs and the task needs [{outputs}], but its last layer with weights (layers[{head}], {}) is not a linear head that can be replaced",
                    source.output,
                    other.kind()
                )))
            }
        }
        let replaced = ModelSpec {
            input: Some(input.to_vec()),
            layers,
            ..ModelSpec::default()
        }
        .resolve(Some(input), Some(outputs), path)
        .map_err(|e| {
            EngineError::Spec(format!(
                "{path}.from: with a new head for {outputs} outputs, {from} does not fit: {e}"
            ))
        })?;
        Ok((replaced, Some(head)))
    }

    /// The top-level layers of `spec` that `freeze` and `train_last` keep fixed, sorted.
    pub fn frozen_layers(
        &self,
        spec: &ResolvedSpec,
        path: &str,
    ) -> Result<Vec<usize>, EngineError> {
        let mut frozen = Vec::new();
        for (k, name) in self.freeze.iter().enumerate() {
            let index = name
                .trim()
                .strip_prefix("layers[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|i| i.parse::<usize>().ok())
                .filter(|i| *i < spec.layers.len())
                .ok_or_else(|| {
                    EngineError::Spec(format!(
                        "{path}.freeze[{k}]: `{name}` is not a layer of this model; name top-level layers as layers[0] … layers[{}]",
                        spec.layers.len().saturating_sub(1)
                    ))
                })?;
            frozen.push(index);
        }
        if let Some(n) = self.train_last {
            let weighted: Vec<usize> = (0..spec.layers.len())
                .filter(|i| spec.layers[*i].has_weights())
                .collect();
            if n == 0 || n > weighted.len() {
                return Err(EngineError::Spec(format!(
                    "{path}.train_last: {n} is not between 1 and the {} layers with weights",
                    weighted.len()
                )));
            }
            frozen.extend(&weighted[..weighted.len() - n]);
        }
        frozen.sort_unstable();
        frozen.dedup();
        Ok(frozen)
    }
}

impl LayerSpec {
    /// Whether the layer has learned weights (what freezing and a head refer to).
    pub fn has_weights(&self) -> bool {
        use LayerSpec as L;
        match self {
            L::Linear { .. }
            | L::Conv2d { .. }
            | L::BatchNorm { .. }
            | L::LayerNorm { .. }
            | L::Embedding { .. }
            | L::Attention { .. }
            | L::TransformerEncoder { .. } => true,
            L::Residual { layers } => layers.iter().any(LayerSpec::has_weights),
            L::MaxPool2d { .. }
            | L::AvgPool2d { .. }
            | L::GlobalAvgPool
            | L::Dropout { .. }
            | L::PositionalEncoding { .. }
            | L::Relu
            | L::Gelu
            | L::Tanh
            | L::Sigmoid
            | L::Softmax
            | L::Flatten
            | L::MeanPool => false,
        }
    }

    /// The layer's `type` as written in a spec.
    pub fn kind(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
            .unwrap_or_default()
    }
}

fn need_outputs(
    outputs: Option<usize>,
    given: Option<usize>,
    path: &str,
) -> Result<usize, EngineError> {
    given.or(outputs).ok_or_else(|| {
        EngineError::Spec(format!(
            "{path}.outputs: unknown; give `outputs = N` or a dataset target"
        ))
    })
}

fn expand(
    arch: &Architecture,
    input: &[usize],
    outputs: Option<usize>,
    path: &str,
) -> Result<Vec<LayerSpec>, EngineError> {
    use LayerSpec as L;
    let mut layers = Vec::new();
    match arch {
        Architecture::Mlp {
            hidden,
            outputs: given,
            dropout,
            activation,
        } => {
            let act = activation_layer(activation, &format!("{path}.activation"))?;
            if input.len() > 1 {
                layers.push(L::Flatten);
            }
            for &h in hidden {
                layers.push(L::Linear {
                    in_features: None,
                    out_features: h,
                    bias: true,
                });
                layers.push(act.clone());
                if *dropout > 0.0 {
                    layers.push(L::Dropout { p: *dropout });
                }
            }
            layers.push(L::Linear {
                in_features: None,
                out_features: need_outputs(outputs, *given, path)?,
                bias: true,
            });
        }
        Architecture::Cnn {
            channels,
            kernel,
            padding,
            pool,
            dense,
            conv_dropout,
            dense_dropout,
            outputs: given,
        } => {
            for &c in channels {
                layers.push(L::Conv2d {
                    in_channels: None,
                    out_channels: c,
                    kernel: *kernel,
                    stride: 1,
                    padding: *padding,
                });
                layers.push(L::Relu);
            }
            if *pool > 1 {
                layers.push(L::MaxPool2d {
                    kernel: *pool,
                    stride: None,
                });
            }
            if *conv_dropout > 0.0 {
                layers.push(L::Dropout { p: *conv_dropout });
            }
            layers.push(L::Flatten);
            for &d in dense {
                layers.push(L::Linear {
                    in_features: None,
                    out_features: d,
                    bias: true,
                });
                layers.push(L::Relu);
                if *dense_dropout > 0.0 {
                    layers.push(L::Dropout { p: *dense_dropout });
                }
            }
            layers.push(L::Linear {
                in_features: None,
                out_features: need_outputs(outputs, *given, path)?,
                bias: true,
            });
        }
        Architecture::Resnet {
            width,
            blocks,
            outputs: given,
        } => {
            let conv = |out: usize, stride: usize| L::Conv2d {
                in_channels: None,
                out_channels: out,
                kernel: 3,
                stride,
                padding: 1,
            };
            layers.extend([conv(*width, 1), L::BatchNorm { features: None }, L::Relu]);
            let mut channels = *width;
            for (stage, &n) in blocks.iter().enumerate() {
                if stage > 0 {
                    channels *= 2;
                    layers.extend([conv(channels, 2), L::BatchNorm { features: None }, L::Relu]);
                }
                for _ in 0..n {
                    layers.push(L::Residual {
                        layers: vec![
                            conv(channels, 1),
                            L::BatchNorm { features: None },
                            L::Relu,
                            conv(channels, 1),
                            L::BatchNorm { features: None },
                        ],
                    });
                    layers.push(L::Relu);
                }
            }
            layers.push(L::GlobalAvgPool);
            layers.push(L::Linear {
                in_features: None,
                out_features: need_outputs(outputs, *given, path)?,
                bias: true,
            });
        }
        Architecture::TransformerClassifier {
            vocab,
            dim,
            heads,
            depth,
            ff,
            dropout,
            outputs: given,
        } => {
            layers.extend([
                L::Embedding {
                    vocab: *vocab,
                    dim: *dim,
                },
                L::PositionalEncoding {
                    max_len: input.first().copied().unwrap_or(512).max(1),
                    features: None,
                },
                L::TransformerEncoder {
                    layers: *depth,
                    heads: *heads,
                    ff: ff.unwrap_or(dim * 4),
                    dropout: *dropout,
                    features: None,
                },
                L::MeanPool,
                L::Linear {
                    in_features: None,
                    out_features: need_outputs(outputs, *given, path)?,
                    bias: true,
                },
            ]);
        }
    }
    Ok(layers)
}

fn activation_layer(name: &str, path: &str) -> Result<LayerSpec, EngineError> {
    Ok(match name {
        "relu" => LayerSpec::Relu,
        "gelu" => LayerSpec::Gelu,
        "tanh" => LayerSpec::Tanh,
        "sigmoid" => LayerSpec::Sigmoid,
        other => {
            return Err(EngineError::Spec(format!(
                "{path}: unknown activation `{other}`; known: relu, gelu, tanh, sigmoid"
            )))
        }
    })
}

fn agree(given: Option<usize>, actual: usize, path: &str) -> Result<usize, EngineError> {
    match given {
        Some(g) if g != actual => Err(EngineError::Spec(format!(
            "{path}: previous layer gives {actual}, spec says {g}"
        ))),
        _ => Ok(actual),
    }
}

fn rank(shape: &[usize], want: usize, what: &str, path: &str) -> Result<(), EngineError> {
    if shape.len() != want {
        return Err(EngineError::Spec(format!(
            "{path}: {what} needs a {want}-dimensional sample, previous layer gives {shape:?}"
        )));
    }
    Ok(())
}

fn positive(value: usize, path: &str) -> Result<(), EngineError> {
    if value == 0 {
        return Err(EngineError::Spec(format!("{path}: must be at least 1")));
    }
    Ok(())
}

fn probability(p: f64, path: &str) -> Result<(), EngineError> {
    if !(0.0..1.0).contains(&p) {
        return Err(EngineError::Spec(format!(
            "{path}: a dropout probability must be in [0, 1), got {p}"
        )));
    }
    Ok(())
}

/// Walks the layers from the input shape, filling in inferred sizes and checking the rest.
/// Returns the layers with every size set, and the output shape.
fn check_layers(
    layers: &[LayerSpec],
    mut shape: Vec<usize>,
    path: &str,
) -> Result<(Vec<LayerSpec>, Vec<usize>), EngineError> {
    use LayerSpec as L;
    let mut out = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let resolved = match layer {
            L::Linear {
                in_features,
                out_features,
                bias,
            } => {
                let last = *shape.last().expect("shapes are never empty");
                let in_features = agree(*in_features, last, &format!("{at}.in_features"))?;
                positive(*out_features, &format!("{at}.out_features"))?;
                *shape.last_mut().expect("non-empty") = *out_features;
                L::Linear {
                    in_features: Some(in_features),
                    out_features: *out_features,
                    bias: *bias,
                }
            }
            L::Conv2d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
            } => {
                rank(&shape, 3, "conv2d", &at)?;
                let in_channels = agree(*in_channels, shape[0], &format!("{at}.in_channels"))?;
                positive(*out_channels, &format!("{at}.out_channels"))?;
                positive(*kernel, &format!("{at}.kernel"))?;
                positive(*stride, &format!("{at}.stride"))?;
                let h = conv_out(shape[1], *kernel, *stride, *padding, &at)?;
                let w = conv_out(shape[2], *kernel, *stride, *padding, &at)?;
                shape = vec![*out_channels, h, w];
                L::Conv2d {
                    in_channels: Some(in_channels),
                    out_channels: *out_channels,
                    kernel: *kernel,
                    stride: *stride,
                    padding: *padding,
                }
            }
            L::MaxPool2d { kernel, stride } | L::AvgPool2d { kernel, stride } => {
                rank(&shape, 3, "a 2-d pool", &at)?;
                positive(*kernel, &format!("{at}.kernel"))?;
                let s = stride.unwrap_or(*kernel);
                positive(s, &format!("{at}.stride"))?;
                let h = conv_out(shape[1], *kernel, s, 0, &at)?;
                let w = conv_out(shape[2], *kernel, s, 0, &at)?;
                shape = vec![shape[0], h, w];
                match layer {
                    L::MaxPool2d { .. } => L::MaxPool2d {
                        kernel: *kernel,
                        stride: Some(s),
                    },
                    _ => L::AvgPool2d {
                        kernel: *kernel,
                        stride: Some(s),
                    },
                }
            }
            L::GlobalAvgPool => {
                rank(&shape, 3, "global_avg_pool", &at)?;
                shape = vec![shape[0]];
                L::GlobalAvgPool
            }
            L::BatchNorm { features } => {
                let features = agree(*features, shape[0], &format!("{at}.features"))?;
                L::BatchNorm {
                    features: Some(features),
                }
            }
            L::LayerNorm { features } => {
                let last = *shape.last().expect("non-empty");
                let features = agree(*features, last, &format!("{at}.features"))?;
                L::LayerNorm {
                    features: Some(features),
                }
            }
            L::Dropout { p } => {
                probability(*p, &format!("{at}.p"))?;
                L::Dropout { p: *p }
            }
            L::Embedding { vocab, dim } => {
                rank(&shape, 1, "embedding (token ids)", &at)?;
                positive(*vocab, &format!("{at}.vocab"))?;
                positive(*dim, &format!("{at}.dim"))?;
                shape = vec![shape[0], *dim];
                layer.clone()
            }
            L::PositionalEncoding { max_len, features } => {
                rank(&shape, 2, "positional_encoding", &at)?;
                if shape[0] > *max_len {
                    return Err(EngineError::Spec(format!(
                        "{at}.max_len: previous layer gives sequences of {}, spec says {max_len}",
                        shape[0]
                    )));
                }
                L::PositionalEncoding {
                    max_len: *max_len,
                    features: Some(agree(*features, shape[1], &format!("{at}.features"))?),
                }
            }
            L::Relu | L::Gelu | L::Tanh | L::Sigmoid | L::Softmax => layer.clone(),
            L::Flatten => {
                shape = vec![shape.iter().product()];
                L::Flatten
            }
            L::Residual { layers } => {
                let (inner, inner_out) =
                    check_layers(layers, shape.clone(), &format!("{at}.layers"))?;
                if inner_out != shape {
                    return Err(EngineError::Spec(format!(
                        "{at}: a residual block must keep the shape: it takes {shape:?} and gives {inner_out:?}"
                    )));
                }
                L::Residual { layers: inner }
            }
            L::Attention {
                heads,
                dropout,
                features,
            } => {
                rank(&shape, 2, "attention ([sequence, features])", &at)?;
                positive(*heads, &format!("{at}.heads"))?;
                probability(*dropout, &format!("{at}.dropout"))?;
                if !shape[1].is_multiple_of(*heads) {
                    return Err(EngineError::Spec(format!(
                        "{at}.heads: {heads} heads do not divide the {} features the previous layer gives",
                        shape[1]
                    )));
                }
                L::Attention {
                    heads: *heads,
                    dropout: *dropout,
                    features: Some(agree(*features, shape[1], &format!("{at}.features"))?),
                }
            }
            L::TransformerEncoder {
                layers,
                heads,
                ff,
                dropout,
                features,
            } => {
                rank(&shape, 2, "transformer_encoder ([sequence, features])", &at)?;
                positive(*layers, &format!("{at}.layers"))?;
                positive(*heads, &format!("{at}.heads"))?;
                positive(*ff, &format!("{at}.ff"))?;
                probability(*dropout, &format!("{at}.dropout"))?;
                if !shape[1].is_multiple_of(*heads) {
                    return Err(EngineError::Spec(format!(
                        "{at}.heads: {heads} heads do not divide the {} features the previous layer gives",
                        shape[1]
                    )));
                }
                L::TransformerEncoder {
                    layers: *layers,
                    heads: *heads,
                    ff: *ff,
                    dropout: *dropout,
                    features: Some(agree(*features, shape[1], &format!("{at}.features"))?),
                }
            }
            L::MeanPool => {
                rank(&shape, 2, "mean_pool ([sequence, features])", &at)?;
                shape = vec![shape[1]];
                L::MeanPool
            }
        };
        out.push(resolved);
    }
    Ok((out, shape))
}

fn conv_out(
    size: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    at: &str,
) -> Result<usize, EngineError> {
    let padded = size + 2 * padding;
    if padded < kernel {
        return Err(EngineError::Spec(format!(
            "{at}.kernel: {kernel} is larger than the {size} (+{padding} padding each side) the previous layer gives"
        )));
    }
    Ok((padded - kernel) / stride + 1)
}

/// Reads a spec from TOML (or JSON when it starts with `{`), naming unknown layer types
/// with the list of known ones.
pub fn parse_model(text: &str) -> Result<ModelSpec, EngineError> {
    crate::config::parse_document(text, "model spec")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mnist_cnn() -> ModelSpec {
        parse_model("architecture = \"cnn\"\noutputs = 10\n").unwrap()
    }

    #[test]
    fn cnn_defaults_are_the_pytorch_mnist_network() {
        let spec = mnist_cnn()
            .resolve(Some(&[1, 28, 28]), None, "model")
            .unwrap();
        assert_eq!(spec.output, vec![10]);
        let flat = spec
            .layers
            .iter()
            .find_map(|l| match l {
                LayerSpec::Linear {
                    in_features: Some(n),
                    out_features: 128,
                    ..
                } => Some(*n),
                _ => None,
            })
            .unwrap();
        assert_eq!(flat, 9216);
    }

    #[test]
    fn mismatch_names_the_path_and_both_sides() {
        let spec = parse_model(
            r#"
input = [1, 28, 28]
[[layers]]
type = "conv2d"
out_channels = 32
kernel = 3
[[layers]]
type = "conv2d"
out_channels = 64
kernel = 3
[[layers]]
type = "max_pool2d"
kernel = 2
[[layers]]
type = "flatten"
[[layers]]
type = "linear"
in_features = 9000
out_features = 10
"#,
        )
        .unwrap();
        let err = spec.resolve(None, None, "model").unwrap_err().to_string();
        assert!(
            err.contains("model.layers[4].in_features: previous layer gives 9216, spec says 9000"),
            "{err}"
        );
    }

    #[test]
    fn unknown_layer_lists_known_ones() {
        let err = parse_model("[[layers]]\ntype = \"convolution\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("convolution"), "{err}");
        assert!(
            err.contains("conv2d") && err.contains("transformer_encoder"),
            "{err}"
        );
    }

    #[test]
    fn residual_must_keep_shape_and_outputs_must_match_task() {
        let spec = parse_model(
            "input = [8]\n[[layers]]\ntype = \"residual\"\nlayers = [{ type = \"linear\", out_features = 4 }]\n",
        )
        .unwrap();
        let err = spec.resolve(None, None, "model").unwrap_err().to_string();
        assert!(err.contains("must keep the shape"), "{err}");

        let spec = parse_model("architecture = \"mlp\"\nhidden = [16]\noutputs = 3\n").unwrap();
        let err = spec
            .resolve(Some(&[4]), Some(10), "model")
            .unwrap_err()
            .to_string();
        assert!(err.contains("the task needs [10]"), "{err}");
    }

    #[test]
    fn named_architectures_resolve() {
        for (text, input) in [
            ("architecture = \"resnet\"\nwidth = 8\nblocks = [1, 1]\n", vec![3, 16, 16]),
            (
                "architecture = \"transformer_classifier\"\nvocab = 50\ndim = 16\nheads = 2\ndepth = 1\n",
                vec![12],
            ),
            ("architecture = \"mlp\"\nhidden = [32]\n", vec![1, 8, 8]),
        ] {
            let spec = parse_model(text).unwrap();
            let resolved = spec.resolve(Some(&input), Some(5), "model").unwrap();
            assert_eq!(resolved.output, vec![5], "{text}");
        }
    }

    #[test]
    fn a_run_from_a_version_is_refused_where_it_cannot_fit() {
        let source = mnist_cnn()
            .resolve(Some(&[1, 28, 28]), Some(10), "model")
            .unwrap();
        let from = parse_model("from = \"digits-cnn:1\"\n").unwrap();
        let err = |spec: &ModelSpec, input: &[usize], outputs: usize, source: &ResolvedSpec| {
            spec.resolve_from(source, input, outputs, "model")
                .unwrap_err()
                .to_string()
        };
        // Layers of its own besides `from`.
        let both =
            parse_model("from = \"digits-cnn:1\"\narchitecture = \"mlp\"\nhidden = [4]\n").unwrap();
        let e = err(&both, &[1, 28, 28], 10, &source);
        assert!(
            e.starts_with("model.from:") && e.contains("architecture"),
            "{e}"
        );
        // Another input shape.
        let e = err(&from, &[3, 28, 28], 10, &source);
        assert!(
            e.contains("[1, 28, 28]") && e.contains("[3, 28, 28]"),
            "{e}"
        );
        // A head that is not a linear layer cannot be replaced.
        let conv_head = parse_model(
            "[[layers]]\ntype = \"conv2d\"\nout_channels = 4\nkernel = 3\n[[layers]]\ntype = \"global_avg_pool\"\n",
        )
        .unwrap()
        .resolve(Some(&[1, 8, 8]), Some(4), "model")
        .unwrap();
        let e = err(&from, &[1, 8, 8], 6, &conv_head);
        assert!(e.contains("layers[0], conv2d") && e.contains("[6]"), "{e}");
        // The same outputs keep the source as it is; other outputs replace the last linear.
        assert_eq!(
            from.resolve_from(&source, &[1, 28, 28], 10, "model")
                .unwrap(),
            (source.clone(), None)
        );
        // The source's card is a job's file: a tampered one (a linear layer claiming inputs
        // the previous layer does not give) is checked again and refused, not built.
        let mut tampered = source.clone();
        let last = tampered.layers.len() - 1;
        if let LayerSpec::Linear { in_features, .. } = &mut tampered.layers[last] {
            *in_features = Some(7);
        }
        let e = err(&from, &[1, 28, 28], 10, &tampered);
        assert!(
            e.contains("layers do not check") && e.contains("in_features"),
            "{e}"
        );
        let (five, head) = from
            .resolve_from(&source, &[1, 28, 28], 5, "model")
            .unwrap();
        assert_eq!(
            (five.output.clone(), head),
            (vec![5], Some(source.layers.len() - 1))
        );
    }

    #[test]
    fn frozen_layers_are_named_top_level_layers() {
        let source = mnist_cnn()
            .resolve(Some(&[1, 28, 28]), Some(10), "model")
            .unwrap();
        let weighted: Vec<usize> = (0..source.layers.len())
            .filter(|i| source.layers[*i].has_weights())
            .collect();
        let spec = |text: &str| parse_model(text).unwrap();
        assert_eq!(
            spec("freeze = [\"layers[2]\", \"layers[0]\", \"layers[0]\"]\n")
                .frozen_layers(&source, "model")
                .unwrap(),
            [0, 2]
        );
        assert_eq!(
            spec("train_last = 1\n")
                .frozen_layers(&source, "model")
                .unwrap(),
            weighted[..weighted.len() - 1]
        );
        for (text, field) in [
            ("freeze = [\"layers[99]\"]\n", "model.freeze[0]"),
            ("freeze = [\"conv1\"]\n", "model.freeze[0]"),
            ("train_last = 0\n", "model.train_last"),
            ("train_last = 99\n", "model.train_last"),
        ] {
            let e = spec(text)
                .frozen_layers(&source, "model")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(field), "{text}: {e}");
        }
    }
}
