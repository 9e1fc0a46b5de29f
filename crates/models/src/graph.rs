//! A feed-forward network as layers in order, framework-neutral: what an exporter needs to
//! know of a trained network, and nothing of how it was trained.

/// A dense `f32` tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl Weights {
    pub fn new(shape: Vec<usize>, values: Vec<f32>) -> Self {
        Self { shape, values }
    }

    /// A matrix's transpose (`[r, c]` → `[c, r]`); `None` for anything but a consistent
    /// matrix.
    pub fn transposed(&self) -> Option<Weights> {
        let [rows, cols] = match self.shape.as_slice() {
            [r, c] if self.is_consistent() => [*r, *c],
            _ => return None,
        };
        let mut values = vec![0f32; self.values.len()];
        for r in 0..rows {
            for c in 0..cols {
                values[c * rows + r] = self.values[r * cols + c];
            }
        }
        Some(Weights::new(vec![cols, rows], values))
    }

    /// Whether `values` fills `shape` exactly (checked, so a hostile shape cannot overflow).
    pub fn is_consistent(&self) -> bool {
        self.shape
            .iter()
            .try_fold(1usize, |n, d| n.checked_mul(*d))
            .is_some_and(|n| n == self.values.len())
    }
}

/// One layer. Shapes are batch-first; a layer's input rank counts the batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// `x · weight + bias` over the last axis; `weight` is `[in, out]`.
    Linear {
        weight: Weights,
        bias: Option<Weights>,
    },
    /// A 2-D convolution over `[N, C, H, W]`; `weight` is `[out, in, k, k]`.
    Conv2d {
        weight: Weights,
        bias: Option<Weights>,
        stride: usize,
        padding: usize,
    },
    MaxPool2d {
        kernel: usize,
        stride: usize,
    },
    AvgPool2d {
        kernel: usize,
        stride: usize,
    },
    /// Mean over `H, W`: `[N, C, H, W]` → `[N, C]`.
    GlobalAvgPool,
    /// Inference-time batch norm over axis 1, from running statistics.
    BatchNorm {
        gamma: Weights,
        beta: Weights,
        mean: Weights,
        var: Weights,
        epsilon: f64,
    },
    /// Normalisation over the last axis.
    LayerNorm {
        gamma: Weights,
        beta: Option<Weights>,
        epsilon: f64,
    },
    Relu,
    /// The exact (erf) form.
    Gelu,
    Tanh,
    Sigmoid,
    /// Over the last axis.
    Softmax,
    /// `[N, ...]` → `[N, product]`.
    Flatten,
    /// Mean over the sequence: `[N, T, D]` → `[N, D]`.
    MeanPool,
    /// Nothing at inference (dropout).
    Identity,
    /// `x + f(x)`.
    Residual(Vec<NamedLayer>),
    /// Layers applied in order, as one (a transformer encoder is its blocks).
    Sequence(Vec<NamedLayer>),
    /// Token ids `[N, T]` (as `f32`, truncated like a cast) → rows of `table`
    /// (`[vocab, dim]`): `[N, T, dim]`.
    Embedding {
        table: Weights,
    },
    /// `x + table` over `[N, T, D]`, `table` being `[T, D]` (fixed positions).
    AddPositions {
        table: Weights,
    },
    /// Multi-head self-attention over `[N, T, D]`: softmax(q·kᵀ/√d_k)·v per head, heads
    /// concatenated, then the output projection; every projection is `[D, D]`.
    SelfAttention {
        heads: usize,
        query: Dense,
        key: Dense,
        value: Dense,
        output: Dense,
    },
}

/// A projection inside a composite layer: `x · weight + bias`, `weight` being `[in, out]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    pub weight: Weights,
    pub bias: Option<Weights>,
}

/// A layer with the name errors and the exported nodes carry (`layers[3]`).
#[derive(Debug, Clone, PartialEq)]
pub struct NamedLayer {
    pub name: String,
    pub layer: Layer,
}

/// A network: one `f32` input of `[N, ..sample]`, layers in order, one output `[N, outputs]`
/// (a final rank above 2 is flattened, as the engine does).
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    pub name: String,
    pub sample_shape: Vec<usize>,
    pub layers: Vec<NamedLayer>,
}
