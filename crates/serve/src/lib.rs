//! Inference serving: runtimes (ONNX Runtime, tract) behind one trait, the model manager
//! (on-demand load, single-flight, LRU eviction under a memory budget, pins) and the dynamic
//! batcher. Knows nothing of HTTP or gRPC; `api` speaks the Open Inference Protocol over it.

pub mod config;
mod error;
pub mod manager;
pub mod memory;
pub mod metrics;
pub mod runtime;
pub mod source;
pub mod stats;
pub mod tensor;
mod worker;

pub use config::ModelConfig;
pub use error::ServeError;
pub use manager::{ControlMode, IndexEntry, Lease, ManagerOptions, ModelManager, ModelState};
pub use runtime::{RuntimeKind, Runtimes};
pub use tensor::{DataType, Tensor};
