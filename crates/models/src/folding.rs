//! What evaluating a model's constants would build, judged before any runtime is asked.
//!
//! Runtimes evaluate constant subgraphs while they load a model (tract's optimiser and
//! analysis always; ONNX Runtime below 1 GB), so a crafted file of two hundred bytes can make
//! the loading process build and fill any tensor it states: a `ConstantOfShape` of 4·10⁹
//! values is 16 GB, which the allocator grants on a machine of 24 and the kernel then kills
//! the server for, with every model it serves. (A size past what the allocator grants only
//! fails the load: tract panics, ONNX Runtime returns an error.) Such a file is refused
//! here, from what it states.
//!
//! A guard on stated sizes, not a sandbox: a size computed by arithmetic on constants, or
//! read from a request's input, is not followed. The complete answer is loading untrusted
//! models in a child process with a memory limit (see `docs/serving.md`).

use std::collections::HashMap;

use tract_onnx::pb;

/// Most values a tensor built from a model's constants may have: 2²⁷ (512 MiB of `f32`).
pub const MAX_FOLDED_VALUES: u64 = 1 << 27;

/// Subgraphs (`If`, `Loop`, `Scan` bodies) are followed this deep; a file nested deeper
/// is refused, since its inner sizes would go unchecked.
const MAX_DEPTH: usize = 32;

/// Why `proto` is refused, if a node builds a tensor of more than [`MAX_FOLDED_VALUES`]
/// values from sizes written in the file: the shape of `ConstantOfShape` and `Expand`, the
/// repeats of `Tile`, the sizes or scales of `Resize` and `Upsample`, the pads of `Pad`, the
/// count of `Range`. In the main graph and in every subgraph.
pub fn oversized_constant(proto: &pb::ModelProto) -> Option<String> {
    let graph = proto.graph.as_ref()?;
    check_graph(graph, &HashMap::new(), 0)
}

/// [`oversized_constant`] of a file as bytes; `None` too for bytes that are not a model
/// (the runtime that loads them says what is wrong with them).
pub fn oversized_constant_in(bytes: &[u8]) -> Option<String> {
    oversized_constant(&crate::onnx::decode(bytes).ok()?)
}

/// A constant's values as numbers (integers exactly, floats as they are).
#[derive(Clone, Copy)]
enum Values<'a> {
    Tensor(&'a pb::TensorProto),
    Ints(&'a [i64]),
    Floats(&'a [f32]),
}

impl Values<'_> {
    /// The values, read without a copy of the tensor (it may be as large as the file);
    /// `None` for a type that cannot hold a size.
    fn iter(&self) -> Option<Box<dyn Iterator<Item = f64> + '_>> {
        use pb::tensor_proto::DataType;
        Some(match self {
            Values::Ints(v) => Box::new(v.iter().map(|x| *x as f64)),
            Values::Floats(v) => Box::new(v.iter().map(|x| f64::from(*x))),
            Values::Tensor(t) => {
                if !t.int64_data.is_empty() {
                    Box::new(t.int64_data.iter().map(|x| *x as f64))
                } else if !t.float_data.is_empty() {
                    Box::new(t.float_data.iter().map(|x| f64::from(*x)))
                } else if !t.int32_data.is_empty() {
                    Box::new(t.int32_data.iter().map(|x| f64::from(*x)))
                } else if t.data_type == DataType::Int64 as i32 {
                    Box::new(
                        t.raw_data
                            .chunks_exact(8)
                            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f64),
                    )
                } else if t.data_type == DataType::Int32 as i32 {
                    Box::new(
                        t.raw_data
                            .chunks_exact(4)
                            .map(|c| f64::from(i32::from_le_bytes(c.try_into().expect("4")))),
                    )
                } else if t.data_type == DataType::Float as i32 {
                    Box::new(
                        t.raw_data
                            .chunks_exact(4)
                            .map(|c| f64::from(f32::from_le_bytes(c.try_into().expect("4")))),
                    )
                } else {
                    return None;
                }
            }
        })
    }

    /// Product of the magnitudes (each at least 1), saturating.
    fn product(&self) -> Option<f64> {
        Some(self.iter()?.fold(1.0, |a, v| a * v.abs().max(1.0)))
    }
}

fn check_graph<'a>(
    graph: &'a pb::GraphProto,
    outer: &HashMap<&'a str, Values<'a>>,
    depth: usize,
) -> Option<String> {
    if depth > MAX_DEPTH {
        return Some(format!(
            "subgraphs nest deeper than {MAX_DEPTH} levels; refused unchecked"
        ));
    }
    // Constants visible here: the enclosing graphs', then this one's (which shadow them).
    let mut constants = outer.clone();
    for t in &graph.initializer {
        constants.insert(t.name.as_str(), Values::Tensor(t));
    }
    for n in graph.node.iter().filter(|n| n.op_type == "Constant") {
        let Some(out) = n.output.first() else {
            continue;
        };
        for a in &n.attribute {
            let v = match a.name.as_str() {
                "value" => a.t.as_ref().map(Values::Tensor),
                "value_ints" => Some(Values::Ints(&a.ints)),
                "value_floats" => Some(Values::Floats(&a.floats)),
                _ => None,
            };
            if let Some(v) = v {
                constants.insert(out.as_str(), v);
            }
        }
    }
    for n in &graph.node {
        if let Some(size) = built_size(n, &constants) {
            if size > MAX_FOLDED_VALUES as f64 {
                let name = if n.name.is_empty() {
                    "(unnamed)"
                } else {
                    &n.name
                };
                return Some(format!(
                    "{} node `{name}` would build a tensor of {size:.0} values from sizes written in the file, more than the {MAX_FOLDED_VALUES} allowed",
                    n.op_type
                ));
            }
        }
        for a in &n.attribute {
            for g in a.g.iter().chain(&a.graphs) {
                if let Some(why) = check_graph(g, &constants, depth + 1) {
                    return Some(why);
                }
            }
        }
    }
    None
}

/// The values node `n` would build from the constants it reads, where the file states them.
fn built_size(n: &pb::NodeProto, constants: &HashMap<&str, Values>) -> Option<f64> {
    let input = |i: usize| {
        n.input
            .get(i)
            .filter(|name| !name.is_empty())
            .and_then(|name| constants.get(name.as_str()))
    };
    match n.op_type.as_str() {
        "ConstantOfShape" | "Expand" => input(if n.op_type == "Expand" { 1 } else { 0 })?.product(),
        "Tile" => input(1)?.product(),
        "Upsample" => input(1)?.product(),
        // Scales (input 2) or sizes (input 3), whichever the node has.
        "Resize" => [3, 2].into_iter().find_map(|i| input(i)?.product()),
        // Each axis grows by its begin and end pads.
        "Pad" => {
            let pads: Vec<f64> = input(1)?.iter()?.map(f64::abs).collect();
            let half = pads.len() / 2;
            Some(
                (0..half)
                    .map(|a| (pads[a] + pads[a + half]).max(1.0))
                    .product(),
            )
        }
        "Range" => {
            let scalar = |i| input(i).and_then(|v| v.iter()?.next());
            let (start, limit, delta) = (scalar(0)?, scalar(1)?, scalar(2)?);
            (delta != 0.0).then(|| ((limit - start) / delta).ceil().max(0.0))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int64s(name: &str, values: &[i64]) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: vec![values.len() as i64],
            data_type: pb::tensor_proto::DataType::Int64 as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }
    }

    fn node(op: &str, inputs: &[&str]) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            name: format!("{op}_node"),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec!["out".into()],
            ..Default::default()
        }
    }

    fn model(node: pb::NodeProto, initializer: Vec<pb::TensorProto>) -> pb::ModelProto {
        pb::ModelProto {
            graph: Some(pb::GraphProto {
                node: vec![node],
                initializer,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn stated_sizes_past_the_limit_are_refused_and_ordinary_ones_pass() {
        let big = [100_000, 100_000, 1000];
        for (op, inputs) in [
            ("ConstantOfShape", vec!["s"]),
            ("Expand", vec!["x", "s"]),
            ("Tile", vec!["x", "s"]),
            ("Resize", vec!["x", "", "", "s"]),
        ] {
            let why = oversized_constant(&model(node(op, &inputs), vec![int64s("s", &big)]))
                .unwrap_or_else(|| panic!("{op} passed"));
            assert!(why.contains(op) && why.contains("10000000000000"), "{why}");
            let ordinary = model(node(op, &inputs), vec![int64s("s", &[1, 3, 224, 224])]);
            assert_eq!(oversized_constant(&ordinary), None, "{op}");
        }
        let pads = model(
            node("Pad", &["x", "p"]),
            vec![int64s(
                "p",
                &[0, 0, 1 << 20, 1 << 20, 0, 0, 1 << 20, 1 << 20],
            )],
        );
        assert!(oversized_constant(&pads).is_some());
        let range = |limit| {
            model(
                node("Range", &["a", "b", "c"]),
                vec![int64s("a", &[-5]), int64s("b", &[limit]), int64s("c", &[1])],
            )
        };
        assert!(oversized_constant(&range(1 << 40)).is_some());
        // A count, not a product: −5‥100,000 is 100,005 values.
        assert_eq!(oversized_constant(&range(100_000)), None);
    }

    #[test]
    fn constant_nodes_and_subgraphs_are_followed() {
        // The shape from a `Constant` node's `value_ints`, the bomb inside an `If` branch.
        let shape = pb::NodeProto {
            op_type: "Constant".into(),
            output: vec!["s".into()],
            attribute: vec![pb::AttributeProto {
                name: "value_ints".into(),
                ints: vec![1 << 20, 1 << 20],
                ..Default::default()
            }],
            ..Default::default()
        };
        let branch = pb::GraphProto {
            node: vec![node("ConstantOfShape", &["s"])],
            ..Default::default()
        };
        let mut iff = node("If", &["cond"]);
        iff.attribute.push(pb::AttributeProto {
            name: "then_branch".into(),
            g: Some(branch),
            ..Default::default()
        });
        let m = pb::ModelProto {
            graph: Some(pb::GraphProto {
                node: vec![shape, iff],
                ..Default::default()
            }),
            ..Default::default()
        };
        let why = oversized_constant(&m).expect("refused");
        assert!(why.contains("ConstantOfShape"), "{why}");

        // Nesting deeper than is followed is refused, not waved through.
        let mut g = pb::GraphProto::default();
        for _ in 0..=MAX_DEPTH + 1 {
            let mut n = node("If", &["cond"]);
            n.attribute.push(pb::AttributeProto {
                name: "then_branch".into(),
                g: Some(g),
                ..Default::default()
            });
            g = pb::GraphProto {
                node: vec![n],
                ..Default::default()
            };
        }
        let deep = pb::ModelProto {
            graph: Some(g),
            ..Default::default()
        };
        assert!(oversized_constant(&deep).unwrap().contains("nest deeper"));
    }
}
