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

/// Why `proto` is refused, if a runtime evaluating its constants while it loads would build
/// a tensor of more than [`MAX_FOLDED_VALUES`] values: `ConstantOfShape` and `Range` of
/// stated sizes, and `Expand`, `Tile`, `Pad`, `Resize` and `Upsample` of a constant tensor
/// (bounded by its values times the growth the node states), followed from one to the next,
/// in the main graph and in every subgraph. Size lists longer than any rank are refused
/// unread. Not followed: other operators on constants (a broadcast `Add` of two stated
/// vectors is an outer product), and anything computed from a request's inputs, which is
/// built only when a request runs.
pub fn oversized_constant(proto: &pb::ModelProto) -> Option<String> {
    let graph = proto.graph.as_ref()?;
    check_graph(graph, None, 0)
}

/// [`oversized_constant`] of a file as bytes. Bytes that do not decode are refused too: a
/// runtime with a laxer decoder (ONNX Runtime takes names that are not UTF-8) would load
/// them unchecked.
pub fn oversized_constant_in(bytes: &[u8]) -> Option<String> {
    match crate::onnx::decode(bytes) {
        Ok(model) => oversized_constant(&model),
        Err(e) => Some(format!("it cannot be checked: {e}")),
    }
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

/// The constants a graph sees: its own, then its enclosing graphs' (looked up innermost
/// first, so a subgraph costs no copy of them).
struct Scope<'a> {
    parent: Option<&'a Scope<'a>>,
    /// Constants whose values the file states (sizes, shapes, scales).
    values: HashMap<&'a str, Values<'a>>,
    /// Values in each constant tensor, stated or built from constants by the operators
    /// followed here.
    counts: HashMap<&'a str, f64>,
}

impl<'a> Scope<'a> {
    fn value(&self, name: &str) -> Option<Values<'a>> {
        self.values
            .get(name)
            .copied()
            .or_else(|| self.parent?.value(name))
    }

    fn count(&self, name: &str) -> Option<f64> {
        self.counts
            .get(name)
            .copied()
            .or_else(|| self.parent?.count(name))
    }
}

/// Most values a size, shape, scale or pad list may hold: no tensor has more axes.
const MAX_SIZE_VALUES: usize = 64;

/// Why a size list is refused before its values are read.
fn too_long(v: Values) -> Option<usize> {
    let n = match v {
        Values::Ints(i) => i.len(),
        Values::Floats(f) => f.len(),
        Values::Tensor(t) => t
            .dims
            .iter()
            .map(|d| usize::try_from(*d).unwrap_or(usize::MAX))
            .fold(1usize, usize::saturating_mul),
    };
    (n > MAX_SIZE_VALUES).then_some(n)
}

fn dims_count(dims: &[i64]) -> f64 {
    dims.iter().map(|d| (*d).max(0) as f64).product()
}

fn check_graph<'a>(
    graph: &'a pb::GraphProto,
    parent: Option<&'a Scope<'a>>,
    depth: usize,
) -> Option<String> {
    if depth > MAX_DEPTH {
        return Some(format!(
            "subgraphs nest deeper than {MAX_DEPTH} levels; refused unchecked"
        ));
    }
    let mut scope = Scope {
        parent,
        values: HashMap::new(),
        counts: HashMap::new(),
    };
    for t in &graph.initializer {
        scope.values.insert(t.name.as_str(), Values::Tensor(t));
        scope.counts.insert(t.name.as_str(), dims_count(&t.dims));
    }
    for n in &graph.node {
        if n.op_type == "Constant" {
            let Some(out) = n.output.first() else {
                continue;
            };
            for a in &n.attribute {
                let (v, count) = match a.name.as_str() {
                    "value" => match a.t.as_ref() {
                        Some(t) => (Values::Tensor(t), dims_count(&t.dims)),
                        None => continue,
                    },
                    "value_ints" => (Values::Ints(&a.ints), a.ints.len() as f64),
                    "value_floats" => (Values::Floats(&a.floats), a.floats.len() as f64),
                    "value_int" => (Values::Ints(std::slice::from_ref(&a.i)), 1.0),
                    "value_float" => (Values::Floats(std::slice::from_ref(&a.f)), 1.0),
                    // A sparse constant: a few values, stored dense by the runtimes.
                    "sparse_value" => {
                        if let Some(t) = a.sparse_tensor.as_ref() {
                            scope.counts.insert(out.as_str(), dims_count(&t.dims));
                        }
                        continue;
                    }
                    _ => continue,
                };
                scope.values.insert(out.as_str(), v);
                scope.counts.insert(out.as_str(), count);
            }
        }
        match built(n, &scope) {
            Err(why) => {
                let name = if n.name.is_empty() {
                    "(unnamed)"
                } else {
                    &n.name
                };
                return Some(format!("{} node `{name}`: {why}", n.op_type));
            }
            Ok(Some(size)) if size > MAX_FOLDED_VALUES as f64 => {
                let name = if n.name.is_empty() {
                    "(unnamed)"
                } else {
                    &n.name
                };
                return Some(format!(
                    "{} node `{name}` would build a tensor of {size:.0} values from constants in the file, more than the {MAX_FOLDED_VALUES} allowed",
                    n.op_type
                ));
            }
            Ok(Some(size)) => {
                if let Some(out) = n.output.first() {
                    scope.counts.insert(out.as_str(), size);
                }
            }
            Ok(None) => {}
        }
    }
    // Subgraphs last, seeing every constant of this graph.
    for n in &graph.node {
        for a in &n.attribute {
            for g in a.g.iter().chain(&a.graphs) {
                if let Some(why) = check_graph(g, Some(&scope), depth + 1) {
                    return Some(why);
                }
            }
        }
    }
    None
}

/// The values node `n` builds (an upper bound) when a runtime evaluates it while loading:
/// when it reads only constants. `Ok(None)` for a node that is not followed, or that reads
/// a tensor known only at run time.
fn built(n: &pb::NodeProto, scope: &Scope) -> Result<Option<f64>, String> {
    let name = |i: usize| n.input.get(i).filter(|name| !name.is_empty());
    // A size list, refused unread when longer than any tensor's rank.
    let sizes = |i: usize| -> Result<Option<Values>, String> {
        let Some(v) = name(i).and_then(|x| scope.value(x)) else {
            return Ok(None);
        };
        match too_long(v) {
            Some(len) => Err(format!(
                "a size list of {len} values (at most {MAX_SIZE_VALUES})"
            )),
            None => Ok(Some(v)),
        }
    };
    let data = || name(0).and_then(|x| scope.count(x));
    let product = |v: Option<Values>| v.and_then(|v| v.product());
    Ok(match n.op_type.as_str() {
        "ConstantOfShape" => product(sizes(0)?),
        "Range" => {
            let scalar =
                |i| -> Result<Option<f64>, String> { Ok(sizes(i)?.and_then(|v| v.iter()?.next())) };
            match (scalar(0)?, scalar(1)?, scalar(2)?) {
                (Some(start), Some(limit), Some(delta)) if delta != 0.0 => {
                    Some(((limit - start) / delta).ceil().max(0.0))
                }
                _ => None,
            }
        }
        // Output ≤ data × factor: a broadcast axis is at most the product of the two.
        "Expand" | "Tile" => match (data(), product(sizes(1)?)) {
            (Some(d), Some(f)) => Some(d * f),
            _ => None,
        },
        // Each axis d becomes d + begin + end ≤ d · (1 + begin + end).
        "Pad" => match (data(), sizes(1)?) {
            (Some(d), Some(pads)) => {
                let pads: Vec<f64> = pads.iter().map_or(Vec::new(), |p| p.collect());
                let half = pads.len() / 2;
                let grow: f64 = (0..half)
                    .map(|a| 1.0 + pads[a].max(0.0) + pads[a + half].max(0.0))
                    .product();
                Some(d * grow)
            }
            _ => None,
        },
        "Resize" | "Upsample" => match data() {
            None => None,
            Some(d) => {
                // Sizes (input 3) from opset 11; else scales: input 2 from opset 11, input
                // 1 before (from 11 the region of interest, fractions), or Upsample-7's
                // attribute.
                let stated_sizes = if n.op_type == "Resize" {
                    product(sizes(3)?)
                } else {
                    None
                };
                let scales = match (sizes(2)?, sizes(1)?) {
                    (Some(s), _) | (None, Some(s)) => Some(s),
                    (None, None) => n
                        .attribute
                        .iter()
                        .find(|a| a.name == "scales")
                        .map(|a| Values::Floats(&a.floats)),
                };
                let grow =
                    scales.and_then(|s| Some(s.iter()?.map(|x| x.max(1.0)).product::<f64>()));
                stated_sizes.or(grow.map(|g| d * g))
            }
        },
        _ => None,
    })
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

    fn floats(name: &str, dims: &[i64]) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: pb::tensor_proto::DataType::Float as i32,
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
            // `x`, a constant of one value: what a runtime folds while it loads.
            let stated = |s: &[i64]| vec![int64s("s", s), floats("x", &[1])];
            let why = oversized_constant(&model(node(op, &inputs), stated(&big)))
                .unwrap_or_else(|| panic!("{op} passed"));
            assert!(why.contains(op) && why.contains("10000000000000"), "{why}");
            let ordinary = model(node(op, &inputs), stated(&[1, 3, 224, 224]));
            assert_eq!(oversized_constant(&ordinary), None, "{op}");
        }
        let pads = model(
            node("Pad", &["x", "p"]),
            vec![
                floats("x", &[1, 1, 1, 1]),
                int64s("p", &[0, 0, 1 << 20, 1 << 20, 0, 0, 1 << 20, 1 << 20]),
            ],
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
    fn growth_of_a_tensor_known_only_at_run_time_is_not_refused() {
        // A high-resolution model resizing its input to 1×256×1024×1024 (2.7·10⁸ values):
        // built per request, not while loading, and ordinary for such a model.
        let resize = model(
            node("Resize", &["input", "", "", "s"]),
            vec![int64s("s", &[1, 256, 1024, 1024])],
        );
        assert_eq!(oversized_constant(&resize), None);
    }

    #[test]
    fn growth_is_followed_from_one_node_to_the_next() {
        // ConstantOfShape([2²⁶]) passes alone; tiled 64 times it is 2³² values.
        let mut g = pb::GraphProto {
            initializer: vec![int64s("s", &[1 << 26]), int64s("r", &[64])],
            ..Default::default()
        };
        let mut first = node("ConstantOfShape", &["s"]);
        first.output = vec!["c".into()];
        g.node = vec![first, node("Tile", &["c", "r"])];
        let m = pb::ModelProto {
            graph: Some(g),
            ..Default::default()
        };
        let why = oversized_constant(&m).expect("refused");
        assert!(why.contains("Tile"), "{why}");
    }

    #[test]
    fn a_size_list_longer_than_any_rank_is_refused_unread() {
        let ones = vec![1; 10_000];
        let m = model(node("ConstantOfShape", &["s"]), vec![int64s("s", &ones)]);
        let why = oversized_constant(&m).expect("refused");
        assert!(why.contains("size list of 10000 values"), "{why}");
        assert!(oversized_constant_in(b"not a model").is_some());
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
