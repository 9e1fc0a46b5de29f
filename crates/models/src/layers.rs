//! A model file's layers as a person reads them: each node's operator, what it reads, what
//! it writes with the shapes tract's inference can tell (symbolic batch dimensions kept as
//! their names), and how many weights it holds. What the web UI's model page draws.

use std::collections::HashMap;

use serde::Serialize;
use tract_onnx::pb;
use tract_onnx::prelude::{Framework, InferenceModelExt};
use tract_onnx::tract_hir::infer::Factoid;

use crate::ModelsError;

/// A tensor between layers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions (`N` for a symbolic one, `_` where inference could not tell); `None`
    /// when not even the rank is known.
    pub shape: Option<Vec<String>>,
    /// `F32`, `I64`, …, when known.
    pub dtype: Option<String>,
}

/// One node of the graph.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Layer {
    /// The node's name (`OpType_index` for an unnamed one).
    pub name: String,
    pub op: String,
    /// Tensors it reads that are not weights.
    pub inputs: Vec<String>,
    pub outputs: Vec<TensorInfo>,
    /// Values in the weights (initializers) it reads.
    pub parameters: u64,
}

/// A model's layers in graph order, with its inputs and outputs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerGraph {
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    pub layers: Vec<Layer>,
    pub parameters: u64,
    /// The graph has more than [`MAX_LAYERS`] nodes: `layers` holds the first of them.
    pub truncated: bool,
    /// Why shapes are missing, when tract could not analyse the graph.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shapes_unknown: Option<String>,
}

/// Most nodes described: a graph larger than this is cut (its first nodes are kept).
pub const MAX_LAYERS: usize = 10_000;

/// The layers of an ONNX model (the file checked as [`crate::onnx::decode`] does).
pub fn layer_graph(bytes: &[u8]) -> Result<LayerGraph, ModelsError> {
    let proto = crate::onnx::decode(bytes)?;
    let graph = proto.graph.as_ref().expect("decode checks");
    let sizes: HashMap<&str, u64> = graph
        .initializer
        .iter()
        .map(|t| {
            let n = t
                .dims
                .iter()
                .try_fold(1u64, |n, d| n.checked_mul(u64::try_from(*d).ok()?))
                .unwrap_or(0);
            (t.name.as_str(), n)
        })
        .collect();
    let (facts, shapes_unknown) = match facts(&proto) {
        Ok(f) => (f, None),
        Err(e) => (HashMap::new(), Some(e)),
    };
    let info = |name: &str| {
        let (shape, dtype) = facts.get(name).cloned().unwrap_or((None, None));
        TensorInfo {
            name: name.to_string(),
            shape,
            dtype,
        }
    };
    let layers: Vec<Layer> = graph
        .node
        .iter()
        .take(MAX_LAYERS)
        .enumerate()
        .map(|(i, n)| Layer {
            name: if n.name.is_empty() {
                format!("{}_{i}", n.op_type)
            } else {
                n.name.clone()
            },
            op: n.op_type.clone(),
            inputs: n
                .input
                .iter()
                .filter(|x| !x.is_empty() && !sizes.contains_key(x.as_str()))
                .cloned()
                .collect(),
            outputs: n
                .output
                .iter()
                .filter(|o| !o.is_empty())
                .map(|o| info(o))
                .collect(),
            parameters: n
                .input
                .iter()
                .filter_map(|x| sizes.get(x.as_str()))
                .fold(0u64, |a, b| a.saturating_add(*b)),
        })
        .collect();
    Ok(LayerGraph {
        inputs: graph
            .input
            .iter()
            .filter(|v| !sizes.contains_key(v.name.as_str()))
            .map(|v| info(&v.name))
            .collect(),
        outputs: graph.output.iter().map(|v| info(&v.name)).collect(),
        parameters: sizes.values().fold(0u64, |a, b| a.saturating_add(*b)),
        truncated: graph.node.len() > MAX_LAYERS,
        layers,
        shapes_unknown,
    })
}

type Fact = (Option<Vec<String>>, Option<String>);

/// Each labelled tensor's shape and type as tract's analysis finds them.
///
/// The analysis evaluates constant subgraphs, so a crafted file can make it ask for an
/// huge tensor (a `ConstantOfShape` of 10¹³ values); tract panics then, and the graph
/// is shown without shapes instead of failing the request.
fn facts(proto: &pb::ModelProto) -> Result<HashMap<String, Fact>, String> {
    if let Some(why) = crate::folding::oversized_constant(proto) {
        return Err(format!("not analysed: {why}"));
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| analysed_facts(proto))).unwrap_or_else(
        |panic| {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            Err(format!("tract's analysis of this graph failed: {why}"))
        },
    )
}

fn analysed_facts(proto: &pb::ModelProto) -> Result<HashMap<String, Fact>, String> {
    let mut model = tract_onnx::onnx()
        .model_for_proto_model(proto)
        .map_err(|e| format!("{e}"))?;
    // Partial facts are still worth showing when the analysis stops somewhere.
    let stopped = model.analyse(false).err().map(|e| format!("{e}"));
    let mut out = HashMap::new();
    for (outlet, label) in &model.outlet_labels {
        let Ok(fact) = model.outlet_fact(*outlet) else {
            continue;
        };
        let shape = (!fact.shape.is_open()).then(|| {
            fact.shape
                .dims()
                .map(|d| {
                    d.concretize()
                        .map_or_else(|| "_".to_string(), |d| d.to_string())
                })
                .collect()
        });
        let dtype = fact.datum_type.concretize().map(|t| format!("{t:?}"));
        out.insert(label.clone(), (shape, dtype));
    }
    if out.is_empty() {
        if let Some(e) = stopped {
            return Err(e);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantize::testing::cnn;

    #[test]
    fn the_cnn_has_its_layers_shapes_and_weights() {
        let g = layer_graph(&cnn()).unwrap();
        assert!(g.shapes_unknown.is_none(), "{:?}", g.shapes_unknown);
        assert_eq!(g.parameters, 36 + 4 + 216 + 6 + 864 + 16 + 80 + 5);
        assert_eq!(
            g.layers.iter().map(|l| l.parameters).sum::<u64>(),
            g.parameters
        );
        assert_eq!(g.inputs.len(), 1);
        let conv1 = g.layers.iter().find(|l| l.op == "Conv").unwrap();
        assert_eq!(conv1.parameters, 36 + 4);
        let shape = conv1.outputs[0].shape.clone().unwrap();
        // Batch × 4 channels × 8 × 8 (padding 1 keeps the size).
        assert_eq!(&shape[1..], ["4", "8", "8"], "{shape:?}");
        assert_eq!(conv1.outputs[0].dtype.as_deref(), Some("F32"));
        let out = g.outputs[0].shape.clone().unwrap();
        assert_eq!(out.last().map(String::as_str), Some("5"));
    }

    #[test]
    fn files_that_are_not_models_are_refused_and_odd_graphs_do_not_panic() {
        assert!(layer_graph(b"not a model").is_err());
        let mut model = crate::onnx::decode(&cnn()).unwrap();
        let g = model.graph.as_mut().unwrap();
        g.node.reverse();
        g.initializer[0].dims = vec![1 << 40, 1 << 40];
        let bytes = prost::Message::encode_to_vec(&model);
        let _ = layer_graph(&bytes);
    }

    /// A constant of 10¹³ values: tract's analysis would build it; the layers are still
    /// listed, without shapes, and the reason is given, before tract is asked.
    #[test]
    fn a_graph_whose_analysis_asks_for_an_impossible_tensor_is_listed_without_shapes() {
        let shape = pb::TensorProto {
            name: "shape".into(),
            dims: vec![3],
            data_type: pb::tensor_proto::DataType::Int64 as i32,
            int64_data: vec![100_000, 100_000, 1000],
            ..Default::default()
        };
        let node = pb::NodeProto {
            op_type: "ConstantOfShape".into(),
            input: vec!["shape".into()],
            output: vec!["big".into()],
            ..Default::default()
        };
        let model = pb::ModelProto {
            ir_version: 7,
            graph: Some(pb::GraphProto {
                name: "bomb".into(),
                node: vec![node],
                initializer: vec![shape],
                output: vec![pb::ValueInfoProto {
                    name: "big".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            ..Default::default()
        };
        let graph = layer_graph(&prost::Message::encode_to_vec(&model)).unwrap();
        assert_eq!(graph.layers.len(), 1);
        assert_eq!(graph.layers[0].op, "ConstantOfShape");
        let why = graph.shapes_unknown.expect("the analysis is not run");
        assert!(why.contains("not analysed"), "{why}");
        // The same bomb in a `Constant` node, in raw bytes, behind an `Expand`.
        let mut model = model;
        let g = model.graph.as_mut().unwrap();
        let shape = g.initializer.remove(0);
        g.node.insert(
            0,
            pb::NodeProto {
                op_type: "Constant".into(),
                output: vec!["shape".into()],
                attribute: vec![pb::AttributeProto {
                    name: "value".into(),
                    r#type: pb::attribute_proto::AttributeType::Tensor as i32,
                    t: Some(pb::TensorProto {
                        raw_data: shape
                            .int64_data
                            .iter()
                            .flat_map(|v| v.to_le_bytes())
                            .collect(),
                        int64_data: vec![],
                        ..shape
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        g.node[1].op_type = "Expand".into();
        // Expand(data, shape): the shape vector itself, expanded to the shape it states.
        g.node[1].input = vec!["shape".into(), "shape".into()];
        let graph = layer_graph(&prost::Message::encode_to_vec(&model)).unwrap();
        assert_eq!(graph.layers.len(), 2);
        assert!(graph.shapes_unknown.unwrap().contains("Expand"));
    }
}
