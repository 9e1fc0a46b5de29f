//! Quantization of ONNX models (8-bit integers, half-precision floats), as rewrites of
//! the graph that any ONNX runtime runs.
//!
//! - [`dynamic_int8`]: weights of `MatMul`/`Gemm`/`Conv` stored as 8-bit integers,
//!   activations quantized at run time (`DynamicQuantizeLinear` → `MatMulInteger` /
//!   `ConvInteger`). No calibration data; the file shrinks about 4×.
//! - [`static_int8`]: QDQ form: `QuantizeLinear`/`DequantizeLinear` pairs around each
//!   quantized operator's activations, with ranges measured on calibration rows
//!   ([`calibrate`]), and 8-bit weights behind `DequantizeLinear`. Runtimes that know QDQ
//!   (ONNX Runtime) fuse the pairs into integer kernels; others still compute the same
//!   numbers in float.
//! - [`fp16`]: float weights and arithmetic in half precision (for GPUs), the model's
//!   inputs and outputs still float.
//! - [`guard`]: keeps the most sensitive operators in float until an accuracy budget holds.
//!
//! An operator is a candidate when its weight is an initializer (a constant of the file);
//! an operator named in `exclude` stays as it was. The rules on the integer grids follow
//! ONNX Runtime's defaults so that the two tools can be compared for the same method.

pub mod calibrate;
mod dynamic;
mod fp16;
pub mod guard;
mod params;
mod qdq;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use prost::Message;
use tract_onnx::pb;

pub use self::dynamic::dynamic_int8;
pub use self::fp16::{fp16, fp16_candidates};
pub use self::params::{Affine, Grid};
pub use self::qdq::{calibration_tensors, static_int8};
use crate::ModelsError;

/// How operators are quantized; the same settings for both schemes unless said.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Int8Options {
    /// One scale per output channel of each weight instead of one per tensor.
    pub per_channel: bool,
    /// 7-bit weights, for CPUs without VNNI (dynamic activations stay 8-bit:
    /// `DynamicQuantizeLinear` has one grid).
    pub reduce_range: bool,
    /// Static only: activations as signed 8-bit with zero point 0 (instead of unsigned with
    /// a zero point).
    pub symmetric_activations: bool,
    /// Candidates (by [`Candidate::name`]) kept in float.
    pub exclude: BTreeSet<String>,
}

/// An operator that can be quantized.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// The node's name, or `OpType_index` for a node without one.
    pub name: String,
    pub op: String,
    /// Values in its weight.
    pub weights: usize,
}

/// A quantized model and what was done to it.
#[derive(Clone, Debug)]
pub struct Quantized {
    pub bytes: Vec<u8>,
    /// Candidates now computed in 8 bits.
    pub quantized: Vec<String>,
    /// Candidates left in float, each with why (`exclude`d, or a weight with NaN…).
    pub kept: Vec<(String, String)>,
}

const FLOAT: i32 = pb::tensor_proto::DataType::Float as i32;
const UINT8: i32 = pb::tensor_proto::DataType::Uint8 as i32;
const INT8: i32 = pb::tensor_proto::DataType::Int8 as i32;
const INT32: i32 = pb::tensor_proto::DataType::Int32 as i32;

/// The operators this module rewrites.
const OPERATORS: [&str; 3] = ["Conv", "MatMul", "Gemm"];

/// The candidates of a model, in graph order. A model with none is refused: there is
/// nothing 8-bit about it to make.
pub fn candidates(bytes: &[u8]) -> Result<Vec<Candidate>, ModelsError> {
    let model = Model::decode(bytes)?;
    let found: Vec<Candidate> = model
        .nodes()
        .filter_map(|(name, node)| {
            let weight = model.weight_of(node)?;
            Some(Candidate {
                name,
                op: node.op_type.clone(),
                weights: weight.values.len(),
            })
        })
        .collect();
    if found.is_empty() {
        return Err(nothing_to_quantize(&model));
    }
    Ok(found)
}

fn nothing_to_quantize(model: &Model) -> ModelsError {
    let mut ops: Vec<&str> = model
        .graph
        .node
        .iter()
        .map(|n| n.op_type.as_str())
        .collect();
    ops.sort_unstable();
    ops.dedup();
    ModelsError::Invalid {
        at: "model".into(),
        message: format!(
            "no quantizable operator: none of Conv, MatMul or Gemm with a constant weight (it has {})",
            ops.join(", ")
        ),
    }
}

/// `bytes` with `tensors` added to the graph's outputs (as float tensors of any shape), so a
/// runtime hands back the values calibration needs, after the model's own outputs and in
/// the order given. Names already outputs, and graph inputs (the caller holds those), are
/// left alone; the names of the outputs are returned in order.
pub fn with_outputs(
    bytes: &[u8],
    tensors: &[String],
) -> Result<(Vec<u8>, Vec<String>), ModelsError> {
    let mut model = Model::decode(bytes)?;
    let mut present: HashSet<String> = model
        .graph
        .output
        .iter()
        .chain(&model.graph.input)
        .map(|o| o.name.clone())
        .collect();
    for t in tensors {
        if present.insert(t.clone()) {
            model.graph.output.push(float_value_info(t));
        }
    }
    let names = model.graph.output.iter().map(|o| o.name.clone()).collect();
    Ok((model.encode(), names))
}

/// Elements in a model's initializers that are weights (scales and zero points of
/// quantization are not counted): the parameter count a report shows. Told apart by where
/// they are read, not by name (a user's tensor may end in `_scale`): see
/// [`quantization_input`].
pub fn parameters(bytes: &[u8]) -> Result<usize, ModelsError> {
    let model = Model::decode(bytes)?;
    let nodes = &model.graph.node;
    let dynamic_scales: HashSet<&str> = nodes
        .iter()
        .filter(|n| n.domain.is_empty() && n.op_type == "DynamicQuantizeLinear")
        .filter_map(|n| n.output.get(1).map(String::as_str))
        .collect();
    let quantization: HashSet<&str> = nodes
        .iter()
        .flat_map(|n| {
            n.input
                .iter()
                .enumerate()
                .filter(|(i, _)| quantization_input(n, *i, &dynamic_scales))
                .map(|(_, name)| name.as_str())
        })
        .collect();
    Ok(model
        .graph
        .initializer
        .iter()
        .filter(|t| !quantization.contains(t.name.as_str()))
        .map(|t| {
            t.dims
                .iter()
                .try_fold(1usize, |n, d| n.checked_mul(usize::try_from(*d).ok()?))
                .unwrap_or(0)
        })
        .fold(0usize, usize::saturating_add))
}

/// Whether input `i` of `n` is a scale or zero point: of Trainyard's files (Q/DQ, the
/// dynamic form) and of ONNX Runtime's operator-form ones (`QLinear…`, its fused
/// `DynamicQuantizeMatMul` and `MatMulIntegerToFloat`).
fn quantization_input(n: &pb::NodeProto, i: usize, dynamic_scales: &HashSet<&str>) -> bool {
    match n.op_type.as_str() {
        "QuantizeLinear" | "DequantizeLinear" => i >= 1,
        "ConvInteger" | "MatMulInteger" => i >= 2,
        "Mul" if n.domain.is_empty() => n.input.iter().any(|x| dynamic_scales.contains(x.as_str())),
        // (x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp[, bias]): the bias counts.
        "QLinearConv" | "QLinearMatMul" | "QLinearAdd" | "QLinearMul" => i != 0 && i != 3 && i < 8,
        // (y_scale, y_zp, then x, x_scale, x_zp for each input).
        "QLinearConcat" => i < 2 || !(i - 2).is_multiple_of(3),
        // (condition, x, x_scale, x_zp, y, y_scale, y_zp, z_scale, z_zp).
        "QLinearWhere" => !matches!(i, 0 | 1 | 4),
        // (a, a_scale, a_zp, b, b_scale, b_zp, c, y_scale, y_zp): the bias c counts.
        "QGemm" => matches!(i, 1 | 2 | 4 | 5 | 7 | 8),
        "DynamicQuantizeMatMul" => matches!(i, 2 | 3),
        "MatMulIntegerToFloat" => (2..6).contains(&i),
        // The other QLinear operators take one tensor, then scales and zero points.
        op if op.starts_with("QLinear") => i >= 1,
        _ => false,
    }
}

/// A float tensor read from an initializer.
#[derive(Clone, Debug)]
struct FloatTensor {
    dims: Vec<usize>,
    values: Vec<f32>,
}

/// A decoded model with the lookups the rewrites need.
struct Model {
    proto: pb::ModelProto,
    graph: pb::GraphProto,
    /// Initializers by name (index into `graph.initializer`).
    initializers: HashMap<String, usize>,
    /// The file's default-domain opset.
    opset: i64,
}

impl Model {
    fn decode(bytes: &[u8]) -> Result<Self, ModelsError> {
        let mut proto = crate::onnx::decode(bytes)?;
        let mut graph = proto.graph.take().expect("decode checks");
        // Unnamed nodes get the name candidates go by (`OpType_index` in the file as given),
        // so a name means the same node after rewrites that remove or merge nodes.
        for (i, n) in graph.node.iter_mut().enumerate() {
            if n.name.is_empty() {
                n.name = node_name(n, i);
            }
        }
        let initializers = graph
            .initializer
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let opset = proto
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map_or(0, |o| o.version);
        Ok(Self {
            proto,
            graph,
            initializers,
            opset,
        })
    }

    fn encode(mut self) -> Vec<u8> {
        self.proto.graph = Some(self.graph);
        self.proto.encode_to_vec()
    }

    /// Nodes with the name candidates go by.
    fn nodes(&self) -> impl Iterator<Item = (String, &pb::NodeProto)> {
        self.graph
            .node
            .iter()
            .enumerate()
            .map(|(i, n)| (node_name(n, i), n))
    }

    /// A float initializer by name.
    fn float(&self, name: &str) -> Option<FloatTensor> {
        float_tensor(&self.graph.initializer[*self.initializers.get(name)?])
    }

    /// The weight a candidate multiplies by, when it is one: `Conv`'s 4-D (or 3-D, 5-D)
    /// kernel, `MatMul`'s and `Gemm`'s 2-D matrix.
    fn weight_of(&self, node: &pb::NodeProto) -> Option<FloatTensor> {
        if !OPERATORS.contains(&node.op_type.as_str())
            || !node.domain.is_empty()
            || node.output.len() != 1
            || node.output[0].is_empty()
        {
            return None;
        }
        let w = self.float(node.input.get(1)?)?;
        let rank_ok = match node.op_type.as_str() {
            "Conv" => (3..=5).contains(&w.dims.len()),
            _ => w.dims.len() == 2,
        };
        // The activation must not itself be a constant (a constant-folded product).
        let x = node.input.first()?;
        (rank_ok && !self.initializers.contains_key(x) && !w.values.is_empty()).then_some(w)
    }

    /// The axis of a candidate's weight that holds its output channels.
    fn channel_axis(node: &pb::NodeProto) -> usize {
        match node.op_type.as_str() {
            "Conv" => 0,
            "Gemm" if int_attr(node, "transB") == Some(1) => 0,
            _ => 1,
        }
    }

    /// Adds an initializer.
    fn add(&mut self, t: pb::TensorProto) {
        self.initializers
            .insert(t.name.clone(), self.graph.initializer.len());
        self.graph.initializer.push(t);
    }

    /// Adds `t`, or replaces the initializer of its name.
    fn put(&mut self, t: pb::TensorProto) {
        match self.initializers.get(&t.name) {
            Some(&at) => self.graph.initializer[at] = t,
            None => self.add(t),
        }
    }

    /// Whether initializer `name` is read once, by one node (not as both weight and bias of
    /// it), and is neither a graph output nor an input (older files list initializers as
    /// inputs a caller may override).
    fn read_only_here(&self, name: &str) -> bool {
        let reads: usize = self
            .graph
            .node
            .iter()
            .map(|n| n.input.iter().filter(|i| *i == name).count())
            .sum();
        self.initializers.contains_key(name)
            && reads == 1
            && self.readers(name).len() == 1
            && !self.graph.output.iter().any(|o| o.name == name)
            && !self.graph.input.iter().any(|i| i.name == name)
    }

    /// A name no tensor, node or initializer of the graph has yet, built from `base`.
    fn fresh(&self, used: &mut HashSet<String>, base: &str) -> String {
        let mut name = base.to_string();
        let mut n = 1;
        while used.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        used.insert(name.clone());
        name
    }

    /// Every name in the graph (tensors, nodes, initializers, inputs, outputs), those of its
    /// subgraphs included: ONNX names are unique across nested scopes, so a new top-level
    /// name equal to one inside an `If` or `Loop` body makes the file invalid.
    fn names(&self) -> HashSet<String> {
        let mut names = HashSet::new();
        collect_names(&self.graph, &mut names);
        names
    }

    /// The rank of tensor `t` where the graph makes it plain (a graph input with a shape, a
    /// `Flatten` or `Gemm` output, and what elementwise operators and `MatMul` by a matrix
    /// keep); `None` where it would take shape inference.
    fn rank(&self, t: &str, depth: usize) -> Option<usize> {
        if depth > 64 {
            return None;
        }
        if let Some(i) = self.graph.input.iter().find(|i| i.name == t) {
            let pb::type_proto::Value::TensorType(tt) = i.r#type.as_ref()?.value.as_ref()?;
            return Some(tt.shape.as_ref()?.dim.len());
        }
        let n = self
            .graph
            .node
            .iter()
            .find(|n| n.output.iter().any(|o| o == t))?;
        match n.op_type.as_str() {
            "Flatten" | "Gemm" => Some(2),
            "Relu" | "Sigmoid" | "Tanh" | "Identity" | "Dropout" | "QuantizeLinear"
            | "DequantizeLinear" => self.rank(n.input.first()?, depth + 1),
            "MatMul" | "Add" | "Mul" | "Sub" if self.initializers.contains_key(n.input.get(1)?) => {
                let r = self.rank(n.input.first()?, depth + 1)?;
                let w = &self.graph.initializer[self.initializers[n.input.get(1)?.as_str()]];
                // A matrix (or a broadcast operand of lower rank) keeps the rank; MatMul by a
                // vector drops one.
                (w.dims.len() <= r && !(n.op_type == "MatMul" && w.dims.len() < 2)).then_some(r)
            }
            _ => None,
        }
    }

    /// `MatMul(x, W)` followed by `Add(·, b)` (its only reader, `b` a constant of one value
    /// per column, `x` of rank 2) becomes one `Gemm(x, W, b)` under the MatMul's name: the
    /// bias is then quantized with the product (32-bit, on its scale) and the 8-bit result
    /// flows on, where a float `Add` would sit between two quantized tensors.
    fn fuse_matmul_bias(&mut self) {
        let mut fused: Vec<(usize, usize)> = Vec::new();
        for (i, n) in self.graph.node.iter().enumerate() {
            if n.op_type != "MatMul" || !n.domain.is_empty() || n.output.len() != 1 {
                continue;
            }
            let Some(w) = self.weight_of(n) else { continue };
            if self.rank(&n.input[0], 0) != Some(2) {
                continue;
            }
            let y = &n.output[0];
            if self.graph.output.iter().any(|o| &o.name == y) {
                continue;
            }
            let readers: Vec<usize> = self
                .graph
                .node
                .iter()
                .enumerate()
                .filter(|(_, r)| r.input.iter().any(|x| x == y))
                .map(|(j, _)| j)
                .collect();
            let [j] = readers.as_slice() else { continue };
            let add = &self.graph.node[*j];
            if add.op_type != "Add" || !add.domain.is_empty() || add.input.len() != 2 {
                continue;
            }
            let bias = if &add.input[0] == y {
                &add.input[1]
            } else {
                &add.input[0]
            };
            match self.float(bias) {
                Some(b) if b.dims == [w.dims[1]] => fused.push((i, *j)),
                _ => {}
            }
        }
        let mut drop = HashSet::new();
        for (i, j) in fused {
            let add = self.graph.node[j].clone();
            let y = self.graph.node[i].output[0].clone();
            let bias = if add.input[0] == y {
                add.input[1].clone()
            } else {
                add.input[0].clone()
            };
            let m = &mut self.graph.node[i];
            m.op_type = "Gemm".into();
            m.input.push(bias);
            m.output = add.output.clone();
            drop.insert(j);
        }
        let mut k = 0;
        self.graph.node.retain(|_| {
            k += 1;
            !drop.contains(&(k - 1))
        });
    }

    /// The nodes reading `t` (subgraphs' reads counted as their node's), by index.
    fn readers(&self, t: &str) -> Vec<usize> {
        self.graph
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                n.input.iter().any(|i| i == t) || {
                    let mut read = HashSet::new();
                    for a in &n.attribute {
                        for g in a.g.iter().chain(&a.graphs) {
                            collect_reads(g, &mut read);
                        }
                    }
                    read.contains(t)
                }
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// A per-channel constant for `channels` output channels: shape `[C, 1, …]`,
    /// `[1, C, 1, …]` or a scalar, as values per channel.
    fn per_channel(&self, name: &str, channels: usize, rank: usize) -> Option<Vec<f32>> {
        let t = self.float(name)?;
        if t.values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let ones_after = |from: usize| t.dims[from..].iter().all(|d| *d == 1);
        match t.dims.as_slice() {
            [] => Some(vec![t.values[0]; channels]),
            [c, ..] if *c == channels && t.dims.len() < rank && ones_after(1) => Some(t.values),
            [1, c, ..] if *c == channels && t.dims.len() <= rank && ones_after(2) => Some(t.values),
            _ if t.values.len() == 1 => Some(vec![t.values[0]; channels]),
            _ => None,
        }
    }

    /// Folds per-channel `Sub`, `Mul` and `Add` of constants right after a `Conv` into its
    /// weight and bias (a batch norm at inference, written out as arithmetic, is one): the
    /// convolution's 8-bit output then is what the next layer reads, with no float
    /// arithmetic between. Only where the convolution's output has that one reader.
    fn fold_conv_affine(&mut self) {
        let mut i = 0;
        while i < self.graph.node.len() {
            let n = &self.graph.node[i];
            let foldable = n.op_type == "Conv" && n.domain.is_empty() && n.output.len() == 1;
            let Some(w) = foldable.then(|| self.weight_of(n)).flatten() else {
                i += 1;
                continue;
            };
            let channels = w.dims[0];
            let rank = w.dims.len();
            let y = n.output[0].clone();
            if self.graph.output.iter().any(|o| o.name == y) {
                i += 1;
                continue;
            }
            let readers = self.readers(&y);
            let [j] = readers.as_slice() else {
                i += 1;
                continue;
            };
            let next = self.graph.node[*j].clone();
            let (op, constant) = match (next.op_type.as_str(), next.input.as_slice()) {
                ("Sub", [a, c]) if *a == y => ("Sub", c),
                ("Add" | "Mul", [a, c]) if *a == y => (next.op_type.as_str(), c),
                ("Add" | "Mul", [c, a]) if *a == y => (next.op_type.as_str(), c),
                _ => {
                    i += 1;
                    continue;
                }
            };
            let Some(k) = (next.domain.is_empty())
                .then(|| self.per_channel(constant, channels, rank))
                .flatten()
            else {
                i += 1;
                continue;
            };
            let bias_name = self.graph.node[i]
                .input
                .get(2)
                .filter(|b| !b.is_empty())
                .cloned();
            let mut bias = match &bias_name {
                Some(b) => match self.float(b) {
                    Some(t) if t.values.len() == channels => t.values,
                    _ => {
                        i += 1;
                        continue;
                    }
                },
                None => vec![0.0; channels],
            };
            let per = w.values.len() / channels.max(1);
            let mut weight = w.values.clone();
            for c in 0..channels {
                match op {
                    "Sub" => bias[c] -= k[c],
                    "Add" => bias[c] += k[c],
                    _ => {
                        bias[c] *= k[c];
                        for v in &mut weight[c * per..(c + 1) * per] {
                            *v *= k[c];
                        }
                    }
                }
            }
            // Constants this convolution alone reads are rewritten under their own names;
            // shared ones are left to their other readers and the folded values get new ones.
            let mut used = self.names();
            let conv_name = self.graph.node[i].name.clone();
            let weight_name = self.graph.node[i].input[1].clone();
            let wname = if self.read_only_here(&weight_name) {
                weight_name
            } else {
                self.fresh(&mut used, &format!("{conv_name}_folded_weight"))
            };
            let bname = match bias_name {
                Some(b) if self.read_only_here(&b) => b,
                _ => self.fresh(&mut used, &format!("{conv_name}_folded_bias")),
            };
            self.put(floats(&wname, &w.dims, &weight));
            self.put(floats(&bname, &[channels], &bias));
            let conv = &mut self.graph.node[i];
            conv.input.truncate(2);
            conv.input[1] = wname;
            conv.input.push(bname);
            conv.output = next.output.clone();
            self.graph.node.remove(*j);
            // The same Conv may fold its next reader too: look at it again.
        }
        self.prune();
    }

    /// Drops initializers nothing reads any more (the float weights that were replaced),
    /// and their entries among the graph's inputs (older files list initializers there).
    fn prune(&mut self) {
        let mut read: HashSet<String> = HashSet::new();
        collect_reads(&self.graph, &mut read);
        self.graph.initializer.retain(|t| read.contains(&t.name));
        let kept: HashSet<&String> = self.graph.initializer.iter().map(|t| &t.name).collect();
        let inits: HashSet<String> = self.initializers.keys().cloned().collect();
        self.graph
            .input
            .retain(|i| !inits.contains(&i.name) || kept.contains(&i.name));
        self.initializers = self
            .graph
            .initializer
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
    }
}

/// Names read by nodes (subgraphs included) and graph outputs.
fn collect_reads(graph: &pb::GraphProto, read: &mut HashSet<String>) {
    for n in &graph.node {
        read.extend(n.input.iter().cloned());
        for a in &n.attribute {
            if let Some(g) = &a.g {
                collect_reads(g, read);
            }
            for g in &a.graphs {
                collect_reads(g, read);
            }
        }
    }
    read.extend(graph.output.iter().map(|o| o.name.clone()));
}

/// Every name `graph` and its subgraphs define or read.
fn collect_names(graph: &pb::GraphProto, names: &mut HashSet<String>) {
    for n in &graph.node {
        names.extend(n.input.iter().chain(&n.output).chain([&n.name]).cloned());
        for a in &n.attribute {
            for g in a.g.iter().chain(&a.graphs) {
                collect_names(g, names);
            }
        }
    }
    names.extend(graph.initializer.iter().map(|t| t.name.clone()));
    names.extend(graph.input.iter().map(|v| v.name.clone()));
    names.extend(graph.output.iter().map(|v| v.name.clone()));
}

fn node_name(n: &pb::NodeProto, index: usize) -> String {
    if n.name.is_empty() {
        format!("{}_{index}", n.op_type)
    } else {
        n.name.clone()
    }
}

fn int_attr(node: &pb::NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

fn float_attr(node: &pb::NodeProto, name: &str) -> Option<f32> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.f)
}

fn float_value_info(name: &str) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: FLOAT,
                shape: None,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A float tensor's dimensions and values, read with checked sizes; `None` for another
/// type, data kept outside the file, or data that does not match its dimensions.
fn float_tensor(t: &pb::TensorProto) -> Option<FloatTensor> {
    if t.data_type != FLOAT || t.data_location == Some(1) {
        return None;
    }
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|d| usize::try_from(*d).ok())
        .collect::<Option<_>>()?;
    let n = dims.iter().try_fold(1usize, |a, d| a.checked_mul(*d))?;
    let values: Vec<f32> = if !t.raw_data.is_empty() {
        if t.raw_data.len() != n.checked_mul(4)? {
            return None;
        }
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        if t.float_data.len() != n {
            return None;
        }
        t.float_data.clone()
    };
    Some(FloatTensor { dims, values })
}

fn tensor(name: &str, data_type: i32, dims: &[usize], raw_data: Vec<u8>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|d| *d as i64).collect(),
        data_type,
        raw_data,
        ..Default::default()
    }
}

fn floats(name: &str, dims: &[usize], values: &[f32]) -> pb::TensorProto {
    tensor(
        name,
        FLOAT,
        dims,
        values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

/// Integers of a grid as an initializer of `data_type` (INT8, UINT8 or INT32).
fn integers(name: &str, data_type: i32, dims: &[usize], values: &[i32]) -> pb::TensorProto {
    let raw: Vec<u8> = match data_type {
        INT8 => values.iter().map(|v| *v as i8 as u8).collect(),
        UINT8 => values.iter().map(|v| *v as u8).collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    tensor(name, data_type, dims, raw)
}

fn node(op: &str, name: &str, input: Vec<String>, output: Vec<String>) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.to_string(),
        name: name.to_string(),
        input,
        output,
        ..Default::default()
    }
}

fn int_attribute(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

/// A weight's scales and integers: one scale per tensor, or one per output channel.
struct QuantizedWeight {
    affines: Vec<Affine>,
    values: Vec<i32>,
    /// Set when scales are per channel: the axis.
    axis: Option<usize>,
}

fn quantize_weight(
    w: &FloatTensor,
    axis: usize,
    per_channel: bool,
    grid: Grid,
    symmetric: bool,
) -> QuantizedWeight {
    let channels = w.dims[axis];
    let inner: usize = w.dims[axis + 1..].iter().product();
    let ranges = if per_channel {
        params::channel_ranges(&w.values, channels, inner)
    } else {
        vec![params::channel_ranges(&w.values, 1, w.values.len())[0]]
    };
    let affines: Vec<Affine> = ranges
        .iter()
        .map(|&(lo, hi)| {
            if symmetric {
                Affine::symmetric(lo, hi, grid)
            } else {
                Affine::asymmetric(lo, hi, grid)
            }
        })
        .collect();
    let values = w
        .values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let a = if per_channel {
                affines[(i / inner) % channels]
            } else {
                affines[0]
            };
            a.quantize(*v, grid)
        })
        .collect();
    QuantizedWeight {
        affines,
        values,
        axis: per_channel.then_some(axis),
    }
}

/// Why a candidate cannot be quantized as it is, if it cannot.
fn unquantizable(w: &FloatTensor) -> Option<String> {
    w.values
        .iter()
        .any(|v| !v.is_finite())
        .then(|| "its weight holds NaN or infinite values".to_string())
}

/// The scheme's name of each candidate kept and why, for the report.
fn excluded(options: &Int8Options, name: &str) -> Option<(String, String)> {
    options
        .exclude
        .contains(name)
        .then(|| (name.to_string(), "kept in float (excluded)".to_string()))
}

/// Ranges by tensor name.
pub type Ranges = BTreeMap<String, (f32, f32)>;

#[cfg(test)]
pub(crate) mod testing {
    //! Small models built here and run with tract, to hold the rewrites to what the float
    //! model computes.
    use tract_onnx::prelude::{
        tract_ndarray, tvec, Framework, InferenceModelExt, IntoRunnable, IntoTValue, Tensor,
    };

    use crate::graph::{Graph, Layer, NamedLayer, Weights};

    /// A deterministic stream of values in [-1, 1).
    pub fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn layer(name: &str, layer: Layer) -> NamedLayer {
        NamedLayer {
            name: name.into(),
            layer,
        }
    }

    /// conv(1→4, 3×3) → relu → conv(4→6, 3×3, stride 2) → relu → flatten → linear(6·3·3→16)
    /// → relu → linear(16→5), on 1×8×8 inputs.
    pub fn cnn() -> Vec<u8> {
        let w = |shape: Vec<usize>, seed| {
            let n = shape.iter().product();
            Weights::new(shape, values(n, seed).iter().map(|v| v * 0.5).collect())
        };
        let graph = Graph {
            name: "cnn".into(),
            sample_shape: vec![1, 8, 8],
            layers: vec![
                layer(
                    "conv1",
                    Layer::Conv2d {
                        weight: w(vec![4, 1, 3, 3], 1),
                        bias: Some(w(vec![4], 2)),
                        stride: 1,
                        padding: 1,
                    },
                ),
                layer("relu1", Layer::Relu),
                layer(
                    "conv2",
                    Layer::Conv2d {
                        weight: w(vec![6, 4, 3, 3], 3),
                        bias: Some(w(vec![6], 4)),
                        stride: 2,
                        padding: 0,
                    },
                ),
                layer("relu2", Layer::Relu),
                layer("flatten", Layer::Flatten),
                layer(
                    "fc1",
                    Layer::Linear {
                        weight: w(vec![54, 16], 5),
                        bias: Some(w(vec![16], 6)),
                    },
                ),
                layer("relu3", Layer::Relu),
                layer(
                    "fc2",
                    Layer::Linear {
                        weight: w(vec![16, 5], 7),
                        bias: Some(w(vec![5], 8)),
                    },
                ),
            ],
        };
        crate::onnx::encode(&graph, Some(5)).unwrap()
    }

    /// conv(1→4, 3×3, no bias) → batch norm (written out as Sub, Mul, Add) → relu →
    /// flatten → linear(256→5), on 1×8×8 inputs.
    pub fn conv_batch_norm() -> Vec<u8> {
        let w = |shape: Vec<usize>, seed| {
            let n = shape.iter().product();
            Weights::new(shape, values(n, seed))
        };
        let positive = |n, seed| {
            Weights::new(
                vec![n],
                values(n, seed).iter().map(|v| v.abs() + 0.5).collect(),
            )
        };
        let graph = Graph {
            name: "bn".into(),
            sample_shape: vec![1, 8, 8],
            layers: vec![
                layer(
                    "conv1",
                    Layer::Conv2d {
                        weight: w(vec![4, 1, 3, 3], 1),
                        bias: None,
                        stride: 1,
                        padding: 1,
                    },
                ),
                layer(
                    "bn1",
                    Layer::BatchNorm {
                        gamma: positive(4, 2),
                        beta: w(vec![4], 3),
                        mean: w(vec![4], 4),
                        var: positive(4, 5),
                        epsilon: 1e-5,
                    },
                ),
                layer("relu1", Layer::Relu),
                layer("flatten", Layer::Flatten),
                layer(
                    "fc",
                    Layer::Linear {
                        weight: w(vec![256, 5], 6),
                        bias: Some(w(vec![5], 7)),
                    },
                ),
            ],
        };
        crate::onnx::encode(&graph, Some(5)).unwrap()
    }

    /// Runs `bytes` with tract; returns every output, flattened.
    pub fn run(bytes: &[u8], shape: &[usize], input: &[f32]) -> Vec<Vec<f32>> {
        let model = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(bytes))
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let x = tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), input.to_vec()).unwrap();
        model
            .run(tvec!(Tensor::from(x).into_tvalue()))
            .unwrap()
            .iter()
            .map(|t| {
                t.to_plain_array_view::<f32>()
                    .unwrap()
                    .iter()
                    .copied()
                    .collect()
            })
            .collect()
    }

    /// The operator of each node of a model, in graph order.
    pub fn op_types(bytes: &[u8]) -> Vec<String> {
        super::Model::decode(bytes)
            .unwrap()
            .graph
            .node
            .iter()
            .map(|n| n.op_type.clone())
            .collect()
    }

    /// Bytes of a model's initializers: what quantization shrinks.
    pub fn weight_bytes(bytes: &[u8]) -> usize {
        super::Model::decode(bytes)
            .unwrap()
            .graph
            .initializer
            .iter()
            .map(|t| t.raw_data.len() + 4 * t.float_data.len())
            .sum()
    }

    /// Largest difference relative to the largest magnitude of `want`.
    pub fn relative_error(got: &[f32], want: &[f32]) -> f32 {
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        got.iter()
            .zip(want)
            .fold(0f32, |m, (g, w)| m.max((g - w).abs()))
            / scale
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn candidates_are_the_weighted_operators_in_order() {
        let found = candidates(&cnn()).unwrap();
        let names: Vec<(&str, &str, usize)> = found
            .iter()
            .map(|c| (c.name.as_str(), c.op.as_str(), c.weights))
            .collect();
        assert_eq!(
            names,
            [
                ("conv1.conv", "Conv", 36),
                ("conv2.conv", "Conv", 216),
                ("fc1.matmul", "MatMul", 864),
                ("fc2.matmul", "MatMul", 80),
            ]
        );
    }

    #[test]
    fn new_names_avoid_those_inside_subgraphs() {
        let mut model = Model::decode(&cnn()).unwrap();
        let inner = |output: &str| pb::NodeProto {
            op_type: "Identity".into(),
            input: vec!["cond".into()],
            output: vec![output.into()],
            ..Default::default()
        };
        let branch = |output: &str| pb::GraphProto {
            node: vec![inner(output)],
            output: vec![pb::ValueInfoProto {
                name: output.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let nested = pb::NodeProto {
            op_type: "If".into(),
            input: vec!["cond".into()],
            output: vec!["picked".into()],
            attribute: vec![pb::AttributeProto {
                name: "else_branch".into(),
                g: Some(branch("deeper")),
                ..Default::default()
            }],
            ..Default::default()
        };
        model.graph.node.push(pb::NodeProto {
            op_type: "If".into(),
            input: vec!["cond".into()],
            output: vec!["picked".into()],
            attribute: vec![pb::AttributeProto {
                name: "then_branch".into(),
                g: Some(pb::GraphProto {
                    node: vec![inner("fc1_wq"), nested],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        let mut used = model.names();
        assert_eq!(model.fresh(&mut used, "fc1_wq"), "fc1_wq_1");
        assert_eq!(model.fresh(&mut used, "deeper"), "deeper_1");
        assert_eq!(model.fresh(&mut used, "fresh"), "fresh");
    }

    #[test]
    fn a_model_without_weighted_operators_is_refused_by_name() {
        let graph = crate::graph::Graph {
            name: "act".into(),
            sample_shape: vec![4],
            layers: vec![crate::graph::NamedLayer {
                name: "relu".into(),
                layer: crate::graph::Layer::Relu,
            }],
        };
        let bytes = crate::onnx::encode(&graph, Some(4)).unwrap();
        let err = candidates(&bytes).unwrap_err().to_string();
        assert!(
            err.contains("no quantizable operator") && err.contains("Relu"),
            "{err}"
        );
        let err = dynamic_int8(&bytes, &Int8Options::default()).unwrap_err();
        assert!(err.to_string().contains("no quantizable operator"));
        assert!(candidates(b"not onnx").is_err());
    }

    #[test]
    fn intermediate_tensors_become_outputs_for_calibration() {
        let bytes = cnn();
        let tensors = calibration_tensors(&bytes, &Int8Options::default()).unwrap();
        assert!(tensors.contains(&"input".to_string()));
        let (exposed, names) = with_outputs(&bytes, &tensors).unwrap();
        let x = values(2 * 64, 9);
        let outs = run(&exposed, &[2, 1, 8, 8], &x);
        // The model's output, then every calibration tensor but the graph's input.
        assert_eq!(names.len(), tensors.len());
        assert_eq!(names[0], "output");
        assert_eq!(outs.len(), names.len());
        assert_eq!(outs[0], run(&bytes, &[2, 1, 8, 8], &x)[0]);
        // conv1's output is read only by a Relu: the Relu's output is what gets a range.
        let relu1 = names.iter().position(|n| n == "relu1:0").unwrap();
        assert_eq!(outs[relu1].len(), 2 * 4 * 8 * 8);
        assert!(!names.contains(&"conv1.conv:0".to_string()), "{names:?}");
    }

    /// A model file is the user's: hostile structure gets an error or is left in float,
    /// never a panic, an overflow or an allocation the size a header claims.
    #[test]
    fn hostile_files_are_refused_or_left_alone() {
        let mutate = |f: &dyn Fn(&mut pb::GraphProto)| {
            let mut model = Model::decode(&cnn()).unwrap();
            f(&mut model.graph);
            model.encode()
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "a candidate with no outputs",
                mutate(&|g| {
                    g.node
                        .iter_mut()
                        .find(|n| n.op_type == "Conv")
                        .unwrap()
                        .output
                        .clear()
                }),
            ),
            (
                "a candidate with no inputs",
                mutate(&|g| {
                    g.node
                        .iter_mut()
                        .find(|n| n.op_type == "MatMul")
                        .unwrap()
                        .input
                        .clear()
                }),
            ),
            (
                "a weight claiming 2^40 × 2^40 values",
                mutate(&|g| {
                    g.initializer
                        .iter_mut()
                        .find(|t| t.name == "conv1.weight")
                        .unwrap()
                        .dims = vec![1 << 40, 1 << 40]
                }),
            ),
            (
                "negative dimensions",
                mutate(&|g| {
                    for t in &mut g.initializer {
                        t.dims = vec![-4, 9];
                    }
                }),
            ),
            (
                "a weight of the wrong type",
                mutate(&|g| {
                    g.initializer
                        .iter_mut()
                        .find(|t| t.name == "fc1.weight")
                        .unwrap()
                        .data_type = INT8
                }),
            ),
            (
                "a weight read by a node that does not exist in order",
                mutate(&|g| g.node.reverse()),
            ),
        ];
        for (what, bytes) in cases {
            let found = candidates(&bytes);
            let _ = dynamic_int8(&bytes, &Int8Options::default());
            if let Ok(tensors) = calibration_tensors(&bytes, &Int8Options::default()) {
                // No ranges: refused naming a tensor.
                let err = static_int8(&bytes, &Ranges::new(), &Int8Options::default());
                assert!(err.is_err() || tensors.is_empty(), "{what}");
                let _ = with_outputs(&bytes, &tensors);
            }
            let _ = parameters(&bytes).unwrap();
            assert!(found.map_or(true, |c| c.len() <= 4), "{what}");
        }
    }

    #[test]
    fn parameters_count_weights_not_scales() {
        let bytes = cnn();
        let float = parameters(&bytes).unwrap();
        assert_eq!(float, 36 + 4 + 216 + 6 + 864 + 16 + 80 + 5);
        for per_channel in [false, true] {
            let options = Int8Options {
                per_channel,
                ..Default::default()
            };
            let q = dynamic_int8(&bytes, &options).unwrap();
            assert_eq!(parameters(&q.bytes).unwrap(), float, "{per_channel}");
        }
        // Told apart by where they are read, not by name: a weight called `…_scale` counts.
        let mut model = Model::decode(&bytes).unwrap();
        let i = model.initializers["fc2.weight"];
        model.graph.initializer[i].name = "fc2_scale".into();
        for n in &mut model.graph.node {
            for input in &mut n.input {
                if input == "fc2.weight" {
                    *input = "fc2_scale".into();
                }
            }
        }
        assert_eq!(parameters(&model.encode()).unwrap(), float);

        // ONNX Runtime's operator form: a QLinearConv's weight and bias count, its six
        // scales and zero points do not.
        let t = |name: &str, dims: &[usize]| floats(name, dims, &vec![0.5; dims.iter().product()]);
        let conv = node(
            "QLinearConv",
            "conv",
            ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"]
                .map(String::from)
                .to_vec(),
            vec!["y".into()],
        );
        let graph = pb::GraphProto {
            node: vec![conv],
            initializer: vec![
                t("xs", &[]),
                t("xz", &[]),
                t("w", &[4, 1, 3, 3]),
                t("ws", &[4]),
                t("wz", &[4]),
                t("ys", &[]),
                t("yz", &[]),
                t("b", &[4]),
            ],
            ..Default::default()
        };
        let m = pb::ModelProto {
            graph: Some(graph),
            ..Default::default()
        };
        assert_eq!(parameters(&prost::Message::encode_to_vec(&m)).unwrap(), 40);
    }
}
