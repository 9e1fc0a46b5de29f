//! ONNX Runtime, loaded from its shared library at run time (`ort` with `load-dynamic`), so
//! the binary builds without it and a server without it falls back to tract.

use std::path::{Path, PathBuf};

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{DynValue, TensorElementType, ValueType};

use super::{Instance, Runtime, RuntimeKind, Signature, TensorSpec};
use crate::tensor::{DataType, Element, Tensor};
use crate::ServeError;

/// Where the library is: `TRAINYARD_ORT_LIB`, `ORT_DYLIB_PATH`, or the `onnxruntime` Python
/// package's `capi/` folder (its wheel ships `libonnxruntime.so.*`).
pub fn find_library() -> Option<PathBuf> {
    for var in ["TRAINYARD_ORT_LIB", "ORT_DYLIB_PATH"] {
        if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import importlib.util,os;s=importlib.util.find_spec('onnxruntime');print(os.path.dirname(s.origin) if s else '')",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    let capi = Path::new(dir.trim()).join("capi");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&capi)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .collect();
    found.sort();
    found.pop()
}

pub struct OnnxRuntime {
    environment: Environment,
    intra_threads: usize,
}

impl OnnxRuntime {
    /// Loads the library. `intra_threads` per session: 1 was fastest on 2 cores, where
    /// parallelism comes from instances and batching instead.
    pub fn new(library: &Path, intra_threads: usize) -> Result<Self, ServeError> {
        let builder = ort::init_from(library).map_err(|e| {
            ServeError::unavailable(format!(
                "cannot load ONNX Runtime from {}: {e}",
                library.display()
            ))
        })?;
        let environment = builder
            .with_name("trainyard")
            .build()
            .map_err(|e| ServeError::unavailable(format!("ONNX Runtime: {e}")))?;
        Ok(Self {
            environment,
            intra_threads: intra_threads.max(1),
        })
    }

    fn session(&self, onnx: &[u8]) -> Result<Session, ServeError> {
        let fail =
            |e: String| ServeError::invalid(format!("ONNX Runtime cannot load the model: {e}"));
        Session::builder(&self.environment)
            .map_err(|e| fail(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| fail(e.to_string()))?
            .with_intra_threads(self.intra_threads)
            .map_err(|e| fail(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| fail(e.to_string()))?
            // Without the arena, an unloaded model's memory goes back to the allocator.
            .with_memory_pattern(false)
            .map_err(|e| fail(e.to_string()))?
            .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(false).build()])
            .map_err(|e| fail(e.to_string()))?
            .commit_from_memory(onnx)
            .map_err(|e| fail(e.to_string()))
    }
}

fn datatype(t: TensorElementType) -> Option<DataType> {
    Some(match t {
        TensorElementType::Float32 => DataType::F32,
        TensorElementType::Float64 => DataType::F64,
        TensorElementType::Uint8 => DataType::U8,
        TensorElementType::Uint16 => DataType::U16,
        TensorElementType::Uint32 => DataType::U32,
        TensorElementType::Uint64 => DataType::U64,
        TensorElementType::Int8 => DataType::I8,
        TensorElementType::Int16 => DataType::I16,
        TensorElementType::Int32 => DataType::I32,
        TensorElementType::Int64 => DataType::I64,
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Float16 => DataType::F16,
        TensorElementType::Bfloat16 => DataType::BF16,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

fn spec(name: &str, ty: &ValueType) -> Result<TensorSpec, ServeError> {
    let (Some(t), Some(shape)) = (ty.tensor_type(), ty.tensor_shape()) else {
        return Err(ServeError::invalid(format!(
            "model tensor '{name}' is not a tensor ({ty}); only tensor inputs and outputs are served"
        )));
    };
    let datatype = datatype(t).ok_or_else(|| {
        ServeError::invalid(format!(
            "model tensor '{name}' has an unsupported element type {t:?}"
        ))
    })?;
    Ok(TensorSpec {
        name: name.to_string(),
        datatype,
        shape: shape.iter().map(|d| if *d < 0 { -1 } else { *d }).collect(),
    })
}

impl Runtime for OnnxRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::OnnxRuntime
    }

    fn load(
        &self,
        onnx: &[u8],
        instances: usize,
    ) -> Result<(Signature, Vec<Box<dyn Instance>>), ServeError> {
        let first = self.session(onnx)?;
        let signature = Signature {
            inputs: first
                .inputs()
                .iter()
                .map(|o| spec(o.name(), o.dtype()))
                .collect::<Result<_, _>>()?,
            outputs: first
                .outputs()
                .iter()
                .map(|o| spec(o.name(), o.dtype()))
                .collect::<Result<_, _>>()?,
        };
        let mut all: Vec<Box<dyn Instance>> = vec![Box::new(OrtInstance { session: first })];
        for _ in 1..instances.max(1) {
            all.push(Box::new(OrtInstance {
                session: self.session(onnx)?,
            }));
        }
        Ok((signature, all))
    }
}

struct OrtInstance {
    session: Session,
}

fn typed<T: Element + ort::value::PrimitiveTensorElementType + std::fmt::Debug>(
    t: &Tensor,
) -> Result<DynValue, ort::Error> {
    let shape: Vec<i64> = t.shape.iter().map(|d| *d as i64).collect();
    Ok(ort::value::Tensor::from_array((shape, t.to_vec::<T>()))?.into_dyn())
}

fn to_value(t: &Tensor) -> Result<DynValue, ServeError> {
    let value = match t.datatype {
        DataType::F32 => typed::<f32>(t),
        DataType::F64 => typed::<f64>(t),
        DataType::U8 => typed::<u8>(t),
        DataType::U16 => typed::<u16>(t),
        DataType::U32 => typed::<u32>(t),
        DataType::U64 => typed::<u64>(t),
        DataType::I8 => typed::<i8>(t),
        DataType::I16 => typed::<i16>(t),
        DataType::I32 => typed::<i32>(t),
        DataType::I64 => typed::<i64>(t),
        DataType::Bool => typed::<bool>(t),
        other => {
            return Err(ServeError::invalid(format!(
                "input '{}': {other} is not supported by the onnxruntime runtime here",
                t.name
            )))
        }
    };
    value.map_err(|e| ServeError::internal(format!("input '{}': {e}", t.name)))
}

fn extract<T: Element + ort::value::PrimitiveTensorElementType>(
    name: &str,
    v: &DynValue,
) -> Result<Tensor, ort::Error> {
    let (shape, data) = v.try_extract_tensor::<T>()?;
    let shape = shape.iter().map(|d| (*d).max(0) as usize).collect();
    Ok(Tensor::from_vec(name, shape, data))
}

fn from_value(name: &str, v: &DynValue) -> Result<Tensor, ServeError> {
    let t = v.dtype().tensor_type().and_then(datatype);
    let out = match t {
        Some(DataType::F32) => extract::<f32>(name, v),
        Some(DataType::F64) => extract::<f64>(name, v),
        Some(DataType::U8) => extract::<u8>(name, v),
        Some(DataType::U16) => extract::<u16>(name, v),
        Some(DataType::U32) => extract::<u32>(name, v),
        Some(DataType::U64) => extract::<u64>(name, v),
        Some(DataType::I8) => extract::<i8>(name, v),
        Some(DataType::I16) => extract::<i16>(name, v),
        Some(DataType::I32) => extract::<i32>(name, v),
        Some(DataType::I64) => extract::<i64>(name, v),
        Some(DataType::Bool) => extract::<bool>(name, v),
        _ => {
            return Err(ServeError::internal(format!(
                "output '{name}' has a type this server does not return ({})",
                v.dtype()
            )))
        }
    };
    out.map_err(|e| ServeError::internal(format!("output '{name}': {e}")))
}

impl Instance for OrtInstance {
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, ServeError> {
        let values: Vec<(String, DynValue)> = inputs
            .iter()
            .map(|t| Ok((t.name.clone(), to_value(t)?)))
            .collect::<Result<_, ServeError>>()?;
        let outputs = self
            .session
            .run(values)
            .map_err(|e| ServeError::internal(format!("onnxruntime: {e}")))?;
        outputs
            .iter()
            .map(|(name, value)| from_value(name, &value))
            .collect()
    }
}
