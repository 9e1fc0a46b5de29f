//! A [`Graph`]'s weights as a safetensors file, named and laid out as PyTorch names and lays
//! out the same layers (`layers.0.weight`; a linear weight as `[out, in]`; batch norm's
//! `weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked`), so the file
//! loads with a strict `load_state_dict` into a module whose `layers` is the equivalent
//! `torch.nn.Sequential`.

use std::collections::BTreeMap;

use safetensors::tensor::{Dtype, TensorView};

use crate::graph::{Graph, Layer, NamedLayer, Weights};
use crate::ModelsError;

/// The tensors of `graph`, by PyTorch name, in the layout PyTorch uses.
pub fn tensors(graph: &Graph) -> Result<BTreeMap<String, Weights>, ModelsError> {
    let mut out = BTreeMap::new();
    collect(&graph.layers, "layers", &mut out)?;
    Ok(out)
}

fn collect(
    layers: &[NamedLayer],
    prefix: &str,
    out: &mut BTreeMap<String, Weights>,
) -> Result<(), ModelsError> {
    for (i, l) in layers.iter().enumerate() {
        let at = format!("{prefix}.{i}");
        let mut put = |name: &str, w: &Weights| -> Result<(), ModelsError> {
            if !w.is_consistent() {
                return Err(ModelsError::Invalid {
                    at: l.name.clone(),
                    message: format!("{name}: values do not fill shape {:?}", w.shape),
                });
            }
            out.insert(format!("{at}.{name}"), w.clone());
            Ok(())
        };
        match &l.layer {
            Layer::Linear { weight, bias } => {
                put("weight", &transpose(weight, &l.name)?)?;
                if let Some(b) = bias {
                    put("bias", b)?;
                }
            }
            Layer::Conv2d { weight, bias, .. } => {
                put("weight", weight)?;
                if let Some(b) = bias {
                    put("bias", b)?;
                }
            }
            Layer::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                ..
            } => {
                put("weight", gamma)?;
                put("bias", beta)?;
                put("running_mean", mean)?;
                put("running_var", var)?;
            }
            Layer::LayerNorm { gamma, beta, .. } => {
                put("weight", gamma)?;
                if let Some(b) = beta {
                    put("bias", b)?;
                }
            }
            Layer::Residual(inner) | Layer::Sequence(inner) => {
                collect(inner, &format!("{at}.layers"), out)?
            }
            Layer::Embedding { table } => put("weight", table)?,
            Layer::SelfAttention {
                query,
                key,
                value,
                output,
                ..
            } => {
                for (what, p) in [
                    ("query", query),
                    ("key", key),
                    ("value", value),
                    ("output", output),
                ] {
                    put(&format!("{what}.weight"), &transpose(&p.weight, &l.name)?)?;
                    if let Some(b) = &p.bias {
                        put(&format!("{what}.bias"), b)?;
                    }
                }
            }
            Layer::MaxPool2d { .. }
            | Layer::AvgPool2d { .. }
            | Layer::GlobalAvgPool
            | Layer::Relu
            | Layer::Gelu
            | Layer::Tanh
            | Layer::Sigmoid
            | Layer::Softmax
            | Layer::Flatten
            | Layer::MeanPool
            | Layer::AddPositions { .. }
            | Layer::Identity => {}
        }
    }
    Ok(())
}

/// `[in, out]` → `[out, in]`.
fn transpose(w: &Weights, at: &str) -> Result<Weights, ModelsError> {
    w.transposed().ok_or_else(|| ModelsError::Invalid {
        at: at.to_string(),
        message: "a linear layer's weight is [in, out]".into(),
    })
}

/// The safetensors file of `graph`'s weights, with `metadata` in its header.
pub fn encode(graph: &Graph, metadata: BTreeMap<String, String>) -> Result<Vec<u8>, ModelsError> {
    let tensors = tensors(graph)?;
    let bytes: BTreeMap<&str, (Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, w)| {
            (
                name.as_str(),
                (
                    w.shape.clone(),
                    w.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ),
            )
        })
        .collect();
    // PyTorch's batch norm also keeps a step counter; a strict `load_state_dict` wants it.
    let counters: Vec<String> = tensors
        .keys()
        .filter_map(|k| k.strip_suffix(".running_var"))
        .map(|prefix| format!("{prefix}.num_batches_tracked"))
        .collect();
    let zero = 0i64.to_le_bytes();
    let counter_views = counters.iter().map(|name| {
        TensorView::new(Dtype::I64, Vec::new(), &zero)
            .map(|v| (name.as_str(), v))
            .map_err(|e| ModelsError::Invalid {
                at: name.clone(),
                message: e.to_string(),
            })
    });
    let views = bytes
        .iter()
        .map(|(name, (shape, data))| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|v| (*name, v))
                .map_err(|e| ModelsError::Invalid {
                    at: name.to_string(),
                    message: e.to_string(),
                })
        })
        .chain(counter_views)
        .collect::<Result<Vec<_>, _>>()?;
    let metadata: std::collections::HashMap<String, String> = metadata.into_iter().collect();
    safetensors::serialize(views, Some(metadata)).map_err(|e| ModelsError::Invalid {
        at: graph.name.clone(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use safetensors::SafeTensors;

    use super::*;

    #[test]
    fn weights_take_pytorch_names_and_layouts() {
        let graph = Graph {
            name: "g".into(),
            sample_shape: vec![3],
            layers: vec![
                NamedLayer {
                    name: "layers[0]".into(),
                    layer: Layer::Linear {
                        weight: Weights::new(vec![3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
                        bias: Some(Weights::new(vec![2], vec![0.5, -0.5])),
                    },
                },
                NamedLayer {
                    name: "layers[1]".into(),
                    layer: Layer::Relu,
                },
                NamedLayer {
                    name: "layers[2]".into(),
                    layer: Layer::Residual(vec![NamedLayer {
                        name: "layers[2].layers[0]".into(),
                        layer: Layer::LayerNorm {
                            gamma: Weights::new(vec![2], vec![1.0, 1.0]),
                            beta: None,
                            epsilon: 1e-5,
                        },
                    }]),
                },
            ],
        };
        let bytes = encode(&graph, BTreeMap::from([("format".into(), "pt".into())])).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let mut names: Vec<&str> = file.names();
        names.sort();
        assert_eq!(
            names,
            [
                "layers.0.bias",
                "layers.0.weight",
                "layers.2.layers.0.weight"
            ]
        );
        let w = file.tensor("layers.0.weight").unwrap();
        assert_eq!(w.shape(), [2, 3]);
        let values: Vec<f32> = w
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        // [in, out] = [[1, 2], [3, 4], [5, 6]] → [out, in] = [[1, 3, 5], [2, 4, 6]].
        assert_eq!(values, [1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
    }
}
