//! Runtimes behind one trait: a runtime turns model bytes into instances; an instance runs
//! tensors. Each instance is owned by one worker thread, so runtimes whose sessions are not
//! thread-safe (ONNX Runtime's `run` takes `&mut`) need no locks.

mod onnxruntime;
mod tract;

use std::sync::Arc;

pub use self::onnxruntime::{find_library, OnnxRuntime};
pub use self::tract::Tract;

use crate::tensor::{DataType, Tensor};
use crate::ServeError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuntimeKind {
    OnnxRuntime,
    Tract,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::OnnxRuntime => "onnxruntime",
            RuntimeKind::Tract => "tract",
        }
    }

    pub fn parse(s: &str) -> Option<RuntimeKind> {
        match s {
            "onnxruntime" | "onnxruntime_onnx" | "ort" => Some(RuntimeKind::OnnxRuntime),
            "tract" => Some(RuntimeKind::Tract),
            _ => None,
        }
    }
}

/// A tensor as a model declares it: -1 for a variable dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl Signature {
    /// Every tensor has a variable first dimension, so requests can be stacked along it.
    pub fn batchable(&self) -> bool {
        self.inputs
            .iter()
            .chain(&self.outputs)
            .all(|t| t.shape.first() == Some(&-1))
            && !self.inputs.is_empty()
    }
}

/// A loaded copy of a model that one thread runs.
pub trait Instance: Send {
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, ServeError>;
}

/// Makes instances from ONNX bytes.
pub trait Runtime: Send + Sync {
    fn kind(&self) -> RuntimeKind;
    /// Parses the model and makes `instances` runnable copies of it.
    fn load(
        &self,
        onnx: &[u8],
        instances: usize,
    ) -> Result<(Signature, Vec<Box<dyn Instance>>), ServeError>;
}

/// The runtimes this server has, and which one a model gets when its config names none.
#[derive(Clone)]
pub struct Runtimes {
    onnxruntime: Option<Arc<OnnxRuntime>>,
    tract: Arc<Tract>,
    default: RuntimeKind,
}

impl Runtimes {
    /// `preferred`: `None` = ONNX Runtime when its library was found, else tract.
    pub fn new(
        onnxruntime: Option<OnnxRuntime>,
        preferred: Option<RuntimeKind>,
    ) -> Result<Self, ServeError> {
        let default = match (preferred, &onnxruntime) {
            (Some(RuntimeKind::OnnxRuntime), None) => {
                return Err(ServeError::unavailable(
                    "ONNX Runtime was asked for but its library was not found (set TRAINYARD_ORT_LIB or pip install onnxruntime)",
                ))
            }
            (Some(kind), _) => kind,
            (None, Some(_)) => RuntimeKind::OnnxRuntime,
            (None, None) => RuntimeKind::Tract,
        };
        Ok(Self {
            onnxruntime: onnxruntime.map(Arc::new),
            tract: Arc::new(Tract),
            default,
        })
    }

    pub fn default_kind(&self) -> RuntimeKind {
        self.default
    }

    pub fn get(&self, kind: Option<RuntimeKind>) -> Result<Arc<dyn Runtime>, ServeError> {
        match kind.unwrap_or(self.default) {
            RuntimeKind::Tract => Ok(self.tract.clone()),
            RuntimeKind::OnnxRuntime => match &self.onnxruntime {
                Some(o) => Ok(o.clone()),
                None => Err(ServeError::unavailable(
                    "the model asks for ONNX Runtime, whose library was not found (set TRAINYARD_ORT_LIB)",
                )),
            },
        }
    }
}
