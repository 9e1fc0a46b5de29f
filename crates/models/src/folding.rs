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
//! A guard on stated sizes, not a sandbox: a shape that passes through an operator it does
//! not follow (see [`oversized_constant`]), or one read from a request's input, is not known
//! here. The complete answer is loading untrusted models in a child process with a memory
//! limit (see `docs/serving.md`).

use std::collections::HashMap;

use tract_onnx::pb;

use crate::onnx_read::attribute;

/// Most values a tensor built from a model's constants may have: 2²⁷ (512 MiB of `f32`).
pub const MAX_FOLDED_VALUES: u64 = 1 << 27;

/// Subgraphs (`If`, `Loop`, `Scan` bodies) are followed this deep; a file nested deeper
/// is refused, since its inner sizes would go unchecked.
const MAX_DEPTH: usize = 32;

/// Why `proto` is refused, if a runtime evaluating its constants while it loads would build
/// a tensor of more than [`MAX_FOLDED_VALUES`] values: `ConstantOfShape` and `Range` of
/// stated sizes, and `Expand`, `Tile`, `Pad`, `Resize` and `Upsample` of a constant tensor
/// (shapes followed exactly where the file states them, bounded where its lists do not fit),
/// from node to node in the order they read each other, in the main graph, every subgraph
/// and every model-local function; through elementwise operators (a broadcast `Add` of two
/// stated vectors is an outer product), `MatMul`, `Gather`, `Concat` and `Transpose` too. Size
/// lists longer than any rank and tensors written twice are refused. Not followed: other
/// operators on constants (their output's shape is not known here, and what reads it is not
/// followed either), and anything computed from a request's inputs, which is built only when
/// a request runs.
pub fn oversized_constant(proto: &pb::ModelProto) -> Option<String> {
    if let Some(graph) = &proto.graph {
        if let Some(why) = check_nodes(&graph.node, &graph.initializer, None, 0) {
            return Some(why);
        }
    }
    // Model-local functions: runtimes inline their bodies.
    proto
        .functions
        .iter()
        .find_map(|f| check_nodes(&f.node, &[], None, 0))
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
                } else if !t.double_data.is_empty() {
                    Box::new(t.double_data.iter().copied())
                } else if t.data_type == DataType::Double as i32 {
                    Box::new(
                        t.raw_data
                            .chunks_exact(8)
                            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))),
                    )
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
}

/// A constant tensor's dimensions (as numbers, so a hostile product saturates to infinity
/// instead of wrapping).
type Dims = Vec<f64>;

/// Reads a node's size list (from an input by index, or from an attribute by name).
type ListReader<'r, K> = &'r dyn Fn(K) -> Result<Option<Vec<f64>>, String>;

fn count(dims: &[f64]) -> f64 {
    dims.iter().product()
}

/// The product of a list's magnitudes, each at least 1: how much a list of factors whose
/// axes are not known can grow a tensor at most.
fn magnitudes(list: &[f64]) -> f64 {
    list.iter().map(|x| x.abs().max(1.0)).product()
}

/// Axis `a` of a rank-`rank` tensor, negative counting from the end; `None` outside it (a
/// scalar has none).
fn axis_index(a: i64, rank: usize) -> Option<usize> {
    let k = if a < 0 {
        a.saturating_add(rank as i64)
    } else {
        a
    };
    usize::try_from(k).ok().filter(|k| *k < rank)
}

/// The constants a graph sees: its own, then its enclosing graphs' (looked up innermost
/// first, so a subgraph costs no copy of them).
struct Scope<'a> {
    parent: Option<&'a Scope<'a>>,
    /// Constants whose values the file states (sizes, shapes, scales).
    values: HashMap<&'a str, Values<'a>>,
    /// The shape of each constant tensor, stated or built from constants by the operators
    /// followed here.
    dims: HashMap<&'a str, Dims>,
}

impl<'a> Scope<'a> {
    fn value(&self, name: &str) -> Option<Values<'a>> {
        self.values
            .get(name)
            .copied()
            .or_else(|| self.parent?.value(name))
    }

    fn dims(&self, name: &str) -> Option<&Dims> {
        self.dims.get(name).or_else(|| self.parent?.dims(name))
    }
}

/// Most values a size, shape, scale or pad list may hold: no tensor has more axes.
const MAX_SIZE_VALUES: usize = 64;

/// Values a constant holds, by its stated dimensions or by the data it carries, whichever
/// is more (a hostile file may state three and carry millions).
fn stored_len(v: Values) -> usize {
    match v {
        Values::Ints(i) => i.len(),
        Values::Floats(f) => f.len(),
        Values::Tensor(t) => t
            .dims
            .iter()
            .map(|d| usize::try_from(*d).unwrap_or(usize::MAX))
            .fold(1usize, usize::saturating_mul)
            .max(t.int64_data.len())
            .max(t.float_data.len())
            .max(t.int32_data.len())
            .max(t.double_data.len())
            .max(t.raw_data.len() / 8),
    }
}

fn tensor_dims(dims: &[i64]) -> Dims {
    dims.iter().map(|d| (*d).max(0) as f64).collect()
}

/// Checks one graph's (or function's) nodes with its initializers, then its subgraphs.
fn check_nodes<'a>(
    nodes: &'a [pb::NodeProto],
    initializers: &'a [pb::TensorProto],
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
        dims: HashMap::new(),
    };
    for t in initializers {
        scope.values.insert(t.name.as_str(), Values::Tensor(t));
        scope.dims.insert(t.name.as_str(), tensor_dims(&t.dims));
    }
    // Every tensor is written once (ONNX graphs are single-assignment); a file that writes
    // one twice could show this check one value and a runtime another.
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for out in n.output.iter().filter(|o| !o.is_empty()) {
            if producer.insert(out.as_str(), i).is_some() || scope.values.contains_key(out.as_str())
            {
                return Some(format!("tensor `{out}` is written twice"));
            }
        }
    }
    // Constant nodes first, wherever they stand in the file: runtimes order nodes by what
    // they read, not by where they are written.
    for n in nodes.iter().filter(|n| n.op_type == "Constant") {
        let Some(out) = n.output.first() else {
            continue;
        };
        for a in &n.attribute {
            let (v, dims) = match a.name.as_str() {
                "value" => match a.t.as_ref() {
                    Some(t) => (Values::Tensor(t), tensor_dims(&t.dims)),
                    None => continue,
                },
                "value_ints" => (Values::Ints(&a.ints), vec![a.ints.len() as f64]),
                "value_floats" => (Values::Floats(&a.floats), vec![a.floats.len() as f64]),
                "value_int" => (Values::Ints(std::slice::from_ref(&a.i)), vec![]),
                "value_float" => (Values::Floats(std::slice::from_ref(&a.f)), vec![]),
                // A sparse constant: a few values, stored dense by the runtimes.
                "sparse_value" => {
                    if let Some(t) = a.sparse_tensor.as_ref() {
                        scope.dims.insert(out.as_str(), tensor_dims(&t.dims));
                    }
                    continue;
                }
                _ => continue,
            };
            scope.values.insert(out.as_str(), v);
            scope.dims.insert(out.as_str(), dims);
        }
    }
    // The other nodes in the order they depend on each other (Kahn's); nodes in a cycle are
    // never evaluated by a runtime either, and are left out.
    let mut waiting: Vec<usize> = nodes
        .iter()
        .map(|n| {
            n.input
                .iter()
                .filter(|i| producer.contains_key(i.as_str()))
                .count()
        })
        .collect();
    let mut readers: HashMap<usize, Vec<usize>> = HashMap::new();
    for (j, n) in nodes.iter().enumerate() {
        for i in n.input.iter().filter_map(|i| producer.get(i.as_str())) {
            readers.entry(*i).or_default().push(j);
        }
    }
    let mut ready: Vec<usize> = (0..nodes.len()).filter(|&j| waiting[j] == 0).collect();
    while let Some(j) = ready.pop() {
        let n = &nodes[j];
        for &r in readers.get(&j).into_iter().flatten() {
            waiting[r] -= 1;
            if waiting[r] == 0 {
                ready.push(r);
            }
        }
        if n.op_type == "Constant" {
            continue;
        }
        let name = || {
            if n.name.is_empty() {
                "(unnamed)".to_string()
            } else {
                n.name.clone()
            }
        };
        match built(n, &scope) {
            Err(why) => return Some(format!("{} node `{}`: {why}", n.op_type, name())),
            Ok(Some(dims)) if count(&dims) > MAX_FOLDED_VALUES as f64 => {
                return Some(format!(
                    "{} node `{}` would build a tensor of {:.0} values from constants in the file, more than the {MAX_FOLDED_VALUES} allowed",
                    n.op_type,
                    name(),
                    count(&dims)
                ));
            }
            Ok(Some(dims)) => {
                if let Some(out) = n.output.first() {
                    scope.dims.insert(out.as_str(), dims);
                }
            }
            Ok(None) => {}
        }
    }
    // Subgraphs last, seeing every constant of this graph.
    for n in nodes {
        for a in &n.attribute {
            for g in a.g.iter().chain(&a.graphs) {
                if let Some(why) = check_nodes(&g.node, &g.initializer, Some(&scope), depth + 1) {
                    return Some(why);
                }
            }
        }
    }
    None
}

/// NumPy broadcasting of two shapes (right-aligned); a pair that does not broadcast gives
/// the larger, as a bound.
fn broadcast(a: &[f64], b: &[f64]) -> Dims {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|k| {
            let at = |d: &[f64]| (k + d.len()).checked_sub(rank).map_or(1.0, |i| d[i]);
            let (x, y) = (at(a), at(b));
            if x == 1.0 {
                y
            } else if y == 1.0 {
                x
            } else {
                x.max(y)
            }
        })
        .collect()
}

/// A list of numbers from a node's integer or float list attribute.
fn attribute_list<'a>(n: &'a pb::NodeProto, name: &str) -> Option<Values<'a>> {
    let a = attribute(n, name)?;
    if !a.ints.is_empty() {
        Some(Values::Ints(&a.ints))
    } else if !a.floats.is_empty() {
        Some(Values::Floats(&a.floats))
    } else {
        None
    }
}

/// The shape of what node `n` builds (a bound where its parameters do not fit its input)
/// when a runtime evaluates it while loading: when it reads only constants. `Ok(None)` for
/// a node that is not followed, or that reads a tensor known only at run time.
fn built(n: &pb::NodeProto, scope: &Scope) -> Result<Option<Dims>, String> {
    let name = |i: usize| n.input.get(i).filter(|name| !name.is_empty());
    let checked = |v: Values| -> Result<Vec<f64>, String> {
        let len = stored_len(v);
        if len > MAX_SIZE_VALUES {
            return Err(format!(
                "a size list of {len} values (at most {MAX_SIZE_VALUES})"
            ));
        }
        Ok(v.iter().map_or_else(Vec::new, |i| i.collect()))
    };
    // A size list read from input `i`, refused unread when longer than any tensor's rank.
    let sizes = |i: usize| -> Result<Option<Vec<f64>>, String> {
        name(i)
            .and_then(|x| scope.value(x))
            .map(checked)
            .transpose()
    };
    let from_attribute = |a: &str| -> Result<Option<Vec<f64>>, String> {
        attribute_list(n, a).map(checked).transpose()
    };
    let data = name(0).and_then(|x| scope.dims(x)).cloned();
    Ok(match n.op_type.as_str() {
        "ConstantOfShape" => sizes(0)?.map(|s| s.iter().map(|x| x.max(0.0)).collect()),
        "Range" => {
            let scalar = |i| -> Result<Option<f64>, String> {
                Ok(sizes(i)?.and_then(|v| v.first().copied()))
            };
            match (scalar(0)?, scalar(1)?, scalar(2)?) {
                (Some(start), Some(limit), Some(delta)) if delta != 0.0 => {
                    Some(vec![((limit - start) / delta).ceil().max(0.0)])
                }
                _ => None,
            }
        }
        "Expand" => match (data, sizes(1)?) {
            (Some(d), Some(shape)) => Some(broadcast(&d, &shape)),
            _ => None,
        },
        "Tile" => match (data, sizes(1)?) {
            (Some(d), Some(r)) if d.len() == r.len() => {
                Some(d.iter().zip(&r).map(|(a, b)| a * b.max(0.0)).collect())
            }
            (Some(d), Some(r)) => Some(vec![count(&d) * magnitudes(&r)]),
            _ => None,
        },
        // Pads from input 1 (opset 11 on) or the attribute (before); each axis d becomes
        // d + begin + end.
        "Pad" => {
            let pads = match sizes(1)? {
                Some(p) => Some(p),
                None => from_attribute("pads")?,
            };
            match (data, pads) {
                (Some(d), Some(p)) if p.len() == 2 * d.len() => Some(
                    (0..d.len())
                        .map(|a| (d[a] + p[a] + p[a + d.len()]).max(0.0))
                        .collect(),
                ),
                (Some(d), Some(p)) => Some(vec![count(&d) * magnitudes(&p)]),
                _ => None,
            }
        }
        "Resize" | "Upsample" => match data {
            None => None,
            Some(d) => resized(n, &d, &sizes, &from_attribute)?,
        },
        op => combined(op, n, scope),
    })
}

/// Operators whose output has their input's shape.
const SAME_SHAPE: &[&str] = &[
    "Identity",
    "Cast",
    "Neg",
    "Abs",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Exp",
    "Log",
    "Sqrt",
    "Reciprocal",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "Sin",
    "Cos",
    "Not",
    "Erf",
    "Softmax",
    "LeakyRelu",
    "Clip",
    "IsNaN",
    "IsInf",
];
/// Operators whose output is their inputs broadcast together (an outer product for two
/// vectors of shapes [n, 1] and [1, n]).
const BROADCAST: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Mod",
    "Max",
    "Min",
    "Sum",
    "Mean",
    "Where",
    "And",
    "Or",
    "Xor",
    "Equal",
    "Greater",
    "Less",
    "GreaterOrEqual",
    "LessOrEqual",
    "PRelu",
    "BitShift",
];

/// The shape a shape-combining operator builds from constants, when every input it reads
/// is one whose shape is known here.
fn combined(op: &str, n: &pb::NodeProto, scope: &Scope) -> Option<Dims> {
    let inputs: Option<Vec<&Dims>> = n
        .input
        .iter()
        .filter(|i| !i.is_empty())
        .map(|i| scope.dims(i))
        .collect();
    let inputs = inputs.filter(|i| !i.is_empty())?;
    let int = |name: &str| attribute(n, name).map(|a| a.i);
    if SAME_SHAPE.contains(&op) {
        return Some(inputs[0].clone());
    }
    if BROADCAST.contains(&op) {
        return Some(inputs.iter().fold(Vec::new(), |a, b| broadcast(&a, b)));
    }
    match op {
        // [.., M, K] × [.., K, N] → [.., M, N], the leading axes broadcast.
        "MatMul" => {
            let (a, b) = (inputs.first()?, inputs.get(1)?);
            let m = match a.len() {
                0 => return None,
                1 => 1.0,
                r => a[r - 2],
            };
            let n_out = match b.len() {
                0 => return None,
                1 => 1.0,
                r => b[r - 1],
            };
            let lead = |d: &[f64]| d[..d.len().saturating_sub(2)].to_vec();
            let mut out = broadcast(&lead(a), &lead(b));
            out.extend([m, n_out]);
            Some(out)
        }
        // data[..axis] + indices + data[axis + 1..].
        "Gather" => {
            let (data, indices) = (inputs.first()?, inputs.get(1)?);
            let a = axis_index(int("axis").unwrap_or(0), data.len())?;
            let mut out = data[..a].to_vec();
            out.extend(indices.iter());
            out.extend(data.get(a + 1..).unwrap_or(&[]).iter());
            Some(out)
        }
        "Concat" => {
            let first = inputs.first()?;
            let a = axis_index(int("axis")?, first.len())?;
            let mut out = (*first).clone();
            out[a] = inputs
                .iter()
                .map(|d| d.get(a).copied().unwrap_or(1.0))
                .sum();
            Some(out)
        }
        // Axes in `perm`'s order (reversed without one).
        "Transpose" => {
            let d = inputs[0];
            let perm: Vec<usize> = match attribute(n, "perm") {
                Some(p) => p
                    .ints
                    .iter()
                    .map(|k| axis_index(*k, d.len()))
                    .collect::<Option<_>>()?,
                None => (0..d.len()).rev().collect(),
            };
            (perm.len() == d.len()).then(|| perm.iter().map(|k| d[*k]).collect())
        }
        _ => None,
    }
}

/// What `Resize` or `Upsample` of a constant of shape `d` builds: from its sizes and from its
/// scales (a runtime may take either when both are given), whichever is larger.
fn resized(
    n: &pb::NodeProto,
    d: &[f64],
    sizes: ListReader<usize>,
    from_attribute: ListReader<&str>,
) -> Result<Option<Dims>, String> {
    let rank = d.len();
    // The axes the lists are for (opset 18's `axes`; all of them otherwise).
    let axes: Vec<usize> = match from_attribute("axes")? {
        Some(a) => a
            .iter()
            .map(|x| axis_index(*x as i64, rank).ok_or(format!("axis {x} of a rank-{rank} tensor")))
            .collect::<Result<_, _>>()?,
        None => (0..rank).collect(),
    };
    let bound = |list: &[f64]| vec![count(d) * magnitudes(list)];
    // Scales: Upsample's input 1 (or its attribute, opset 7); Resize's input 1 in opset 10
    // (two inputs), input 2 from opset 11.
    let scales = if n.op_type == "Upsample" {
        match sizes(1)? {
            Some(s) => Some(s),
            None => from_attribute("scales")?,
        }
    } else if n.input.len() == 2 {
        sizes(1)?
    } else {
        sizes(2)?.filter(|s| !s.is_empty())
    };
    let by_scales = scales.map(|s| {
        if s.len() != axes.len() {
            return bound(&s);
        }
        let mut out = d.to_vec();
        for (k, scale) in axes.iter().zip(&s) {
            out[*k] = (d[*k] * scale.max(0.0)).floor();
        }
        out
    });
    let policy = attribute(n, "keep_aspect_ratio_policy")
        .map(|a| String::from_utf8_lossy(&a.s).into_owned());
    let by_sizes = if n.op_type == "Resize" {
        sizes(3)?.filter(|s| !s.is_empty()).map(|s| {
            if s.len() != axes.len() {
                return bound(&s);
            }
            let mut out = d.to_vec();
            let ratios = axes
                .iter()
                .zip(&s)
                .map(|(k, x)| x.max(0.0) / d[*k].max(1.0));
            let keep = match policy.as_deref() {
                Some("not_larger") => Some(ratios.fold(f64::INFINITY, f64::min)),
                Some("not_smaller") => Some(ratios.fold(0.0, f64::max)),
                _ => None,
            };
            for (k, size) in axes.iter().zip(&s) {
                out[*k] = match keep {
                    Some(ratio) => (d[*k] * ratio).round(),
                    None => size.max(0.0),
                };
            }
            out
        })
    } else {
        None
    };
    Ok(match (by_scales, by_sizes) {
        (Some(a), Some(b)) => Some(if count(&a) >= count(&b) { a } else { b }),
        (a, b) => a.or(b),
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

    /// A `Constant` node writing `ints` (its `value_ints`) to `out`.
    fn constant_ints(out: &str, ints: Vec<i64>) -> pb::NodeProto {
        pb::NodeProto {
            op_type: "Constant".into(),
            output: vec![out.into()],
            attribute: vec![pb::AttributeProto {
                name: "value_ints".into(),
                ints,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn model(node: pb::NodeProto, initializer: Vec<pb::TensorProto>) -> pb::ModelProto {
        graph_of(vec![node], initializer)
    }

    fn graph_of(node: Vec<pb::NodeProto>, initializer: Vec<pb::TensorProto>) -> pb::ModelProto {
        pb::ModelProto {
            graph: Some(pb::GraphProto {
                node,
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
        let mut first = node("ConstantOfShape", &["s"]);
        first.output = vec!["c".into()];
        let m = graph_of(
            vec![first, node("Tile", &["c", "r"])],
            vec![int64s("s", &[1 << 26]), int64s("r", &[64])],
        );
        let why = oversized_constant(&m).expect("refused");
        assert!(why.contains("Tile"), "{why}");
    }

    #[test]
    fn order_in_the_file_does_not_matter_and_no_tensor_is_written_twice() {
        // The Tile first, the ConstantOfShape it tiles after, the shape last as a node.
        let shape = constant_ints("s", vec![1 << 26]);
        let mut first = node("ConstantOfShape", &["s"]);
        first.output = vec!["c".into()];
        let m = graph_of(
            vec![node("Tile", &["c", "r"]), first, shape],
            vec![int64s("r", &[64])],
        );
        assert!(oversized_constant(&m).expect("refused").contains("Tile"));
        // A name written small first and huge later: which one a runtime keeps is its own.
        let mut twice = node("ConstantOfShape", &["s"]);
        twice.output = vec!["x".into()];
        let m = graph_of(vec![twice.clone(), twice], vec![int64s("s", &[2])]);
        assert!(oversized_constant(&m).unwrap().contains("written twice"));
    }

    #[test]
    fn shapes_are_followed_exactly_where_the_file_states_them() {
        // A positional table expanded to its own shape builds what it holds (5.9·10⁵ values);
        // a product of the two would have refused it.
        let same = model(
            node("Expand", &["table", "s"]),
            vec![
                floats("table", &[1, 577, 1024]),
                int64s("s", &[1, 577, 1024]),
            ],
        );
        assert_eq!(oversized_constant(&same), None);
        // Opset 18's `axes`: sizes for one axis of a [2²⁰, 1] constant make it 2²⁰ × 2²⁰.
        let mut resize = node("Resize", &["x", "", "", "s"]);
        resize.attribute.push(pb::AttributeProto {
            name: "axes".into(),
            ints: vec![1],
            ..Default::default()
        });
        let m = model(
            resize,
            vec![floats("x", &[1 << 20, 1]), int64s("s", &[1 << 20])],
        );
        assert!(oversized_constant(&m).is_some());
        // Pad before opset 11: the pads are an attribute.
        let mut pad = node("Pad", &["x"]);
        pad.attribute.push(pb::AttributeProto {
            name: "pads".into(),
            ints: vec![1 << 14, 1 << 14, 1 << 14, 1 << 14],
            ..Default::default()
        });
        assert!(oversized_constant(&model(pad, vec![floats("x", &[1, 1])])).is_some());
        // A Range over doubles.
        let double = |name: &str, v: f64| pb::TensorProto {
            name: name.into(),
            data_type: pb::tensor_proto::DataType::Double as i32,
            double_data: vec![v],
            ..Default::default()
        };
        let range = model(
            node("Range", &["a", "b", "c"]),
            vec![double("a", 0.0), double("b", 1e12), double("c", 1.0)],
        );
        assert!(oversized_constant(&range).is_some());
        // A model-local function's body.
        let m = pb::ModelProto {
            graph: Some(pb::GraphProto::default()),
            functions: vec![pb::FunctionProto {
                name: Some("f".into()),
                node: vec![
                    constant_ints("s", vec![1 << 20, 1 << 20]),
                    node("ConstantOfShape", &["s"]),
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(oversized_constant(&m).is_some());
    }

    #[test]
    fn elementwise_products_and_gathers_of_constants_are_followed() {
        // [2¹⁴, 1] + [1, 2¹⁴]: an outer product of 2²⁸ values from 32k stated ones.
        let outer = model(
            node("Add", &["a", "b"]),
            vec![floats("a", &[1 << 14, 1]), floats("b", &[1, 1 << 14])],
        );
        assert!(oversized_constant(&outer).unwrap().contains("Add"));
        // The same shapes added to each other stay what they are.
        let same = model(
            node("Mul", &["a", "b"]),
            vec![floats("a", &[1 << 20]), floats("b", &[1 << 20])],
        );
        assert_eq!(oversized_constant(&same), None);
        // Gathering rows of a [1, 2¹⁴] table 2¹⁴ times.
        let gather = model(
            node("Gather", &["t", "i"]),
            vec![floats("t", &[1, 1 << 14]), int64s("i", &vec![0; 1 << 14])],
        );
        assert!(oversized_constant(&gather).is_some());
        // A Cast between keeps the shape: Cast, then Tile, of a stated constant.
        let mut cast = node("Cast", &["x"]);
        cast.output = vec!["y".into()];
        let m = graph_of(
            vec![cast, node("Tile", &["y", "r"])],
            vec![floats("x", &[1 << 16]), int64s("r", &[1 << 12])],
        );
        assert!(oversized_constant(&m).unwrap().contains("Tile"));
    }

    /// Axes a hostile file states for scalars, or past its rank: nothing to follow, and no
    /// panic (the layers view runs this outside any catch).
    #[test]
    fn axes_outside_a_tensor_are_not_followed() {
        let mut concat = node("Concat", &["a", "b"]);
        concat.attribute.push(pb::AttributeProto {
            name: "axis".into(),
            i: 0,
            ..Default::default()
        });
        let scalars = model(concat, vec![floats("a", &[]), floats("b", &[])]);
        assert_eq!(oversized_constant(&scalars), None);
        for (op, axis) in [("Gather", i64::MIN), ("Concat", 7), ("Transpose", -9)] {
            let mut n = node(op, &["a", "b"]);
            n.attribute.push(pb::AttributeProto {
                name: if op == "Transpose" { "perm" } else { "axis" }.into(),
                i: axis,
                ints: vec![axis, 0],
                ..Default::default()
            });
            let m = model(n, vec![floats("a", &[2, 2]), floats("b", &[2, 2])]);
            assert_eq!(oversized_constant(&m), None, "{op}");
        }
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
        let shape = constant_ints("s", vec![1 << 20, 1 << 20]);
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
