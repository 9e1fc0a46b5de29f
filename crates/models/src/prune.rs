//! Pruning a layer graph.
//!
//! - [`structured`] removes whole output channels of convolutions and neurons of linear
//!   layers (the smallest by L1 norm of their weights) and rewires what reads them: the
//!   batch norm after them, and the input channels (or the flattened rows) of the next
//!   weighted layer. The graph that comes out is smaller and does less work, not a graph
//!   full of zeros.
//! - [`magnitude`] sets the smallest weights to zero (over the whole network or per layer):
//!   the shapes stay, so it shrinks only what compresses zeros.
//!
//! Only top-level layers are pruned, and only where everything between a layer and the next
//! weighted one keeps channels apart (activations, pools, batch norm, flatten); the last
//! weighted layer, the network's head, keeps its outputs.

use crate::graph::{Graph, Layer, Weights};
use crate::ModelsError;

/// What pruning did to one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct PrunedLayer {
    pub name: String,
    /// Channels or neurons (structured), or non-zero weights (magnitude), before and after.
    pub before: usize,
    pub after: usize,
}

#[derive(Clone, Debug)]
pub struct Pruned {
    pub graph: Graph,
    pub layers: Vec<PrunedLayer>,
}

fn check_ratio(ratio: f64, what: &str) -> Result<(), ModelsError> {
    if ratio > 0.0 && ratio < 1.0 {
        Ok(())
    } else {
        Err(ModelsError::Invalid {
            at: what.into(),
            message: format!("{ratio} is not in (0, 1)"),
        })
    }
}

/// Output channels (conv) or neurons (linear) of a weighted layer.
fn outputs(layer: &Layer) -> Option<usize> {
    match layer {
        Layer::Conv2d { weight, .. } => weight.shape.first().copied(),
        Layer::Linear { weight, .. } => weight.shape.get(1).copied(),
        _ => None,
    }
}

/// L1 norm of each output channel's weights.
fn scores(layer: &Layer) -> Vec<f64> {
    match layer {
        Layer::Conv2d { weight, .. } => {
            let c = weight.shape[0];
            let per = weight.values.len() / c.max(1);
            weight
                .values
                .chunks(per.max(1))
                .map(|f| f.iter().map(|v| f64::from(v.abs())).sum())
                .collect()
        }
        Layer::Linear { weight, .. } => {
            let cols = weight.shape[1];
            let mut s = vec![0f64; cols];
            for (i, v) in weight.values.iter().enumerate() {
                s[i % cols] += f64::from(v.abs());
            }
            s
        }
        _ => Vec::new(),
    }
}

/// `w` with only `kept` indices of `axis` (of a row-major tensor).
fn select(w: &Weights, axis: usize, kept: &[usize]) -> Weights {
    let outer: usize = w.shape[..axis].iter().product();
    let dim = w.shape[axis];
    let inner: usize = w.shape[axis + 1..].iter().product();
    let mut values = Vec::with_capacity(outer * kept.len() * inner);
    for o in 0..outer {
        for &k in kept {
            let start = (o * dim + k) * inner;
            values.extend_from_slice(&w.values[start..start + inner]);
        }
    }
    let mut shape = w.shape.clone();
    shape[axis] = kept.len();
    Weights::new(shape, values)
}

/// Whether a layer between two weighted ones keeps channels apart, and if it flattens.
enum Between {
    Keeps,
    Flattens,
    Blocks,
}

fn between(layer: &Layer) -> Between {
    match layer {
        Layer::Relu
        | Layer::Gelu
        | Layer::Tanh
        | Layer::Sigmoid
        | Layer::Identity
        | Layer::MaxPool2d { .. }
        | Layer::AvgPool2d { .. }
        | Layer::BatchNorm { .. } => Between::Keeps,
        Layer::Flatten | Layer::GlobalAvgPool => Between::Flattens,
        _ => Between::Blocks,
    }
}

/// Removes `ratio` of the output channels of every prunable convolution and of the neurons
/// of every prunable linear layer (at least one is kept).
pub fn structured(graph: &Graph, ratio: f64) -> Result<Pruned, ModelsError> {
    check_ratio(ratio, "ratio")?;
    for l in &graph.layers {
        let consistent = match &l.layer {
            Layer::Conv2d { weight, bias, .. } => {
                weight.is_consistent()
                    && weight.shape.len() == 4
                    && bias
                        .as_ref()
                        .is_none_or(|b| b.values.len() == weight.shape[0])
            }
            Layer::Linear { weight, bias } => {
                weight.is_consistent()
                    && weight.shape.len() == 2
                    && bias
                        .as_ref()
                        .is_none_or(|b| b.values.len() == weight.shape[1])
            }
            _ => true,
        };
        if !consistent {
            return Err(ModelsError::Invalid {
                at: l.name.clone(),
                message: "weights of inconsistent shapes".into(),
            });
        }
    }
    let mut g = graph.clone();
    let weighted: Vec<usize> = g
        .layers
        .iter()
        .enumerate()
        .filter(|(_, l)| outputs(&l.layer).is_some())
        .map(|(i, _)| i)
        .collect();
    let mut report = Vec::new();
    for pair in weighted.windows(2) {
        let (i, j) = (pair[0], pair[1]);
        let flattens = {
            let mut flattens = 0;
            let mut blocked = false;
            for l in &g.layers[i + 1..j] {
                match between(&l.layer) {
                    Between::Keeps => {}
                    Between::Flattens => flattens += 1,
                    Between::Blocks => blocked = true,
                }
            }
            match (blocked, flattens, &g.layers[i].layer, &g.layers[j].layer) {
                (true, _, _, _) => continue,
                (_, 0, Layer::Conv2d { .. }, Layer::Conv2d { .. })
                | (_, 0, Layer::Linear { .. }, Layer::Linear { .. }) => false,
                (_, 1, Layer::Conv2d { .. }, Layer::Linear { .. }) => true,
                _ => continue,
            }
        };
        let channels = outputs(&g.layers[i].layer).expect("weighted");
        // A batch norm between must be over exactly these channels (one after a flatten,
        // over channels × positions, is left alone with the layer).
        let norms_fit = g.layers[i + 1..j].iter().all(|l| match &l.layer {
            Layer::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                ..
            } => [gamma, beta, mean, var]
                .iter()
                .all(|w| w.shape == [channels] && w.values.len() == channels),
            _ => true,
        });
        if channels == 0 || !norms_fit {
            continue;
        }
        let keep = ((channels as f64 * (1.0 - ratio)).round() as usize).clamp(1, channels);
        if keep == channels {
            continue;
        }
        // The next layer must read exactly these channels (times a spatial size when
        // flattened).
        let next_in = match &g.layers[j].layer {
            Layer::Conv2d { weight, .. } => weight.shape[1],
            Layer::Linear { weight, .. } => weight.shape[0],
            _ => unreachable!("weighted"),
        };
        if next_in % channels != 0 || (!flattens && next_in != channels) {
            continue;
        }
        let spatial = next_in / channels;
        let s = scores(&g.layers[i].layer);
        let mut order: Vec<usize> = (0..channels).collect();
        order.sort_by(|a, b| s[*b].total_cmp(&s[*a]).then(a.cmp(b)));
        let mut kept: Vec<usize> = order[..keep].to_vec();
        kept.sort_unstable();

        match &mut g.layers[i].layer {
            Layer::Conv2d { weight, bias, .. } => {
                *weight = select(weight, 0, &kept);
                if let Some(b) = bias {
                    *b = select(b, 0, &kept);
                }
            }
            Layer::Linear { weight, bias } => {
                *weight = select(weight, 1, &kept);
                if let Some(b) = bias {
                    *b = select(b, 0, &kept);
                }
            }
            _ => unreachable!("weighted"),
        }
        for l in &mut g.layers[i + 1..j] {
            if let Layer::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                ..
            } = &mut l.layer
            {
                for w in [gamma, beta, mean, var] {
                    *w = select(w, 0, &kept);
                }
            }
        }
        match &mut g.layers[j].layer {
            Layer::Conv2d { weight, .. } => *weight = select(weight, 1, &kept),
            Layer::Linear { weight, .. } => {
                let rows: Vec<usize> = kept
                    .iter()
                    .flat_map(|c| c * spatial..(c + 1) * spatial)
                    .collect();
                *weight = select(weight, 0, &rows);
            }
            _ => unreachable!("weighted"),
        }
        report.push(PrunedLayer {
            name: g.layers[i].name.clone(),
            before: channels,
            after: keep,
        });
    }
    if report.is_empty() {
        return Err(ModelsError::Invalid {
            at: "model".into(),
            message: "no layer can be pruned structurally: none is followed (through activations, pools, batch norm or a flatten) by another weighted layer".into(),
        });
    }
    Ok(Pruned {
        graph: g,
        layers: report,
    })
}

/// Sets the `sparsity` fraction of smallest-magnitude weights of linear and convolution
/// layers to zero: one threshold over the whole network when `global`, else per layer.
pub fn magnitude(graph: &Graph, sparsity: f64, global: bool) -> Result<Pruned, ModelsError> {
    check_ratio(sparsity, "sparsity")?;
    let mut g = graph.clone();
    let threshold = |values: &mut Vec<f32>| -> f32 {
        let k = ((values.len() as f64) * sparsity).floor() as usize;
        if k == 0 {
            return -1.0;
        }
        values.sort_by(|a, b| a.abs().total_cmp(&b.abs()));
        values[k - 1].abs()
    };
    let global_threshold = global.then(|| {
        let mut all: Vec<f32> = g
            .layers
            .iter()
            .filter_map(|l| match &l.layer {
                Layer::Conv2d { weight, .. } | Layer::Linear { weight, .. } => {
                    Some(weight.values.iter().copied())
                }
                _ => None,
            })
            .flatten()
            .collect();
        threshold(&mut all)
    });
    let mut report = Vec::new();
    for l in &mut g.layers {
        let name = l.name.clone();
        if let Layer::Conv2d { weight, .. } | Layer::Linear { weight, .. } = &mut l.layer {
            let t = match global_threshold {
                Some(t) => t,
                None => threshold(&mut weight.values.clone()),
            };
            let before = weight.values.iter().filter(|v| **v != 0.0).count();
            for v in &mut weight.values {
                if v.abs() <= t {
                    *v = 0.0;
                }
            }
            let after = weight.values.iter().filter(|v| **v != 0.0).count();
            report.push(PrunedLayer {
                name,
                before,
                after,
            });
        }
    }
    Ok(Pruned {
        graph: g,
        layers: report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::NamedLayer;
    use crate::quantize::testing::{run, values};

    fn layer(name: &str, layer: Layer) -> NamedLayer {
        NamedLayer {
            name: name.into(),
            layer,
        }
    }

    fn w(shape: Vec<usize>, seed: u64) -> Weights {
        let n = shape.iter().product();
        Weights::new(shape, values(n, seed))
    }

    /// conv(1→8) → bn → relu → conv(8→6) → relu → maxpool → flatten → linear(6·3·3→12) → relu
    /// → linear(12→4) on 1×6×6, where channels 1, 3, 5, 7 of conv1, channels 0, 2, 4 of conv2
    /// and neurons 6‥11 of fc1 are dead (zero weights and bias).
    fn graph() -> Graph {
        let mut conv1 = w(vec![8, 1, 3, 3], 1);
        for c in [1, 3, 5, 7] {
            conv1.values[c * 9..(c + 1) * 9].fill(0.0);
        }
        let mut conv2 = w(vec![6, 8, 3, 3], 3);
        for c in [0, 2, 4] {
            conv2.values[c * 72..(c + 1) * 72].fill(0.0);
        }
        let mut fc1 = w(vec![54, 12], 5);
        for (i, v) in fc1.values.iter_mut().enumerate() {
            if i % 12 >= 6 {
                *v = 0.0;
            }
        }
        let zero_dead = |mut b: Weights, dead: &[usize]| {
            for d in dead {
                b.values[*d] = 0.0;
            }
            b
        };
        Graph {
            name: "g".into(),
            sample_shape: vec![1, 6, 6],
            layers: vec![
                layer(
                    "conv1",
                    Layer::Conv2d {
                        weight: conv1,
                        bias: Some(zero_dead(w(vec![8], 2), &[1, 3, 5, 7])),
                        stride: 1,
                        padding: 1,
                    },
                ),
                layer(
                    "bn",
                    Layer::BatchNorm {
                        gamma: Weights::new(vec![8], vec![1.0; 8]),
                        beta: Weights::new(vec![8], vec![0.0; 8]),
                        mean: Weights::new(vec![8], vec![0.0; 8]),
                        var: Weights::new(vec![8], vec![1.0; 8]),
                        epsilon: 1e-5,
                    },
                ),
                layer("relu1", Layer::Relu),
                layer(
                    "conv2",
                    Layer::Conv2d {
                        weight: conv2,
                        bias: Some(zero_dead(w(vec![6], 4), &[0, 2, 4])),
                        stride: 1,
                        padding: 1,
                    },
                ),
                layer("relu2", Layer::Relu),
                layer(
                    "pool",
                    Layer::MaxPool2d {
                        kernel: 2,
                        stride: 2,
                    },
                ),
                layer("flatten", Layer::Flatten),
                layer(
                    "fc1",
                    Layer::Linear {
                        weight: fc1,
                        bias: Some(zero_dead(w(vec![12], 6), &[6, 7, 8, 9, 10, 11])),
                    },
                ),
                layer("relu3", Layer::Relu),
                layer(
                    "fc2",
                    Layer::Linear {
                        weight: w(vec![12, 4], 7),
                        bias: Some(w(vec![4], 8)),
                    },
                ),
            ],
        }
    }

    #[test]
    fn structured_pruning_removes_dead_channels_and_computes_the_same() {
        let g = graph();
        let pruned = structured(&g, 0.5).unwrap();
        assert_eq!(
            pruned.layers,
            [
                PrunedLayer {
                    name: "conv1".into(),
                    before: 8,
                    after: 4
                },
                PrunedLayer {
                    name: "conv2".into(),
                    before: 6,
                    after: 3
                },
                PrunedLayer {
                    name: "fc1".into(),
                    before: 12,
                    after: 6
                },
            ]
        );
        // The dead channels were the ones removed: the outputs are unchanged (a dead channel
        // after batch norm with zero mean and shift, and ReLU, is exactly zero).
        let x = values(3 * 36, 9);
        let before = run(
            &crate::onnx::encode(&g, Some(4)).unwrap(),
            &[3, 1, 6, 6],
            &x,
        );
        let after = run(
            &crate::onnx::encode(&pruned.graph, Some(4)).unwrap(),
            &[3, 1, 6, 6],
            &x,
        );
        for (a, b) in before[0].iter().zip(&after[0]) {
            assert!((a - b).abs() < 1e-5, "{before:?} vs {after:?}");
        }
        // Smaller weights: conv2 reads 4 channels, fc1 reads 3·3·3 rows.
        let Layer::Conv2d { weight, .. } = &pruned.graph.layers[3].layer else {
            panic!()
        };
        assert_eq!(weight.shape, [3, 4, 3, 3]);
        let Layer::Linear { weight, .. } = &pruned.graph.layers[7].layer else {
            panic!()
        };
        assert_eq!(weight.shape, [27, 6]);
        let Layer::Linear { weight, .. } = &pruned.graph.layers[9].layer else {
            panic!()
        };
        assert_eq!(weight.shape, [6, 4], "the head keeps its outputs");
    }

    #[test]
    fn ratios_outside_the_open_interval_and_unprunable_graphs_are_refused() {
        for r in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
            assert!(structured(&graph(), r).is_err(), "{r}");
            assert!(magnitude(&graph(), r, true).is_err(), "{r}");
        }
        let single = Graph {
            name: "one".into(),
            sample_shape: vec![3],
            layers: vec![layer(
                "fc",
                Layer::Linear {
                    weight: w(vec![3, 2], 1),
                    bias: None,
                },
            )],
        };
        let err = structured(&single, 0.5).unwrap_err().to_string();
        assert!(err.contains("no layer can be pruned"), "{err}");
    }

    #[test]
    fn magnitude_pruning_zeroes_the_smallest_weights() {
        let g = graph();
        let pruned = magnitude(&g, 0.8, true).unwrap();
        let total: usize = pruned.layers.iter().map(|l| l.before).sum();
        let left: usize = pruned.layers.iter().map(|l| l.after).sum();
        let all: usize = g
            .layers
            .iter()
            .map(|l| match &l.layer {
                Layer::Conv2d { weight, .. } | Layer::Linear { weight, .. } => weight.values.len(),
                _ => 0,
            })
            .sum();
        assert!(left <= all / 5 + 1 && left < total, "{left} of {all}");
        let per_layer = magnitude(&g, 0.5, false).unwrap();
        let fc2 = per_layer.layers.last().unwrap();
        assert_eq!(fc2.after, 24, "half of fc2's 48 weights");
    }
}
