//! Model formats as pure transforms: no I/O beyond the bytes they take and give.
//!
//! [`graph`] is a framework-neutral description of a feed-forward network (layers in order,
//! with their weights), the vocabulary the engine describes its trained networks in; [`onnx`]
//! turns one into an ONNX model (opset 17) that the serving runtimes load like any other;
//! [`safetensors`] writes its weights under PyTorch's names and layouts; [`layers`] describes
//! any ONNX file's nodes with their shapes and weights for people; [`folding`] refuses a file
//! whose constants would build a tensor no process can hold, before a runtime loads it.

pub mod folding;
pub mod graph;
pub mod layers;
pub mod onnx;
pub mod onnx_read;
pub mod prune;
pub mod quantize;
pub mod safetensors;

/// What the model transforms refuse.
#[derive(Debug, thiserror::Error)]
pub enum ModelsError {
    /// A graph that cannot be what it says (a weight of the wrong size, a layer on an input
    /// of a rank it does not take); `at` names the layer.
    #[error("{at}: {message}")]
    Invalid { at: String, message: String },
    /// Bytes that are not an ONNX model with a graph.
    #[error("file: {0}")]
    Undecodable(String),
}
