//! `cpu` / `cuda:N` → a burn device. CPU is burn's Flex backend; CUDA exists only in builds
//! with the `cuda` feature, and says so otherwise.

use burn::tensor::Device;

use crate::EngineError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

pub fn parse(text: &str) -> Result<DeviceSpec, EngineError> {
    let bad = || {
        EngineError::Spec(format!(
            "training.device: expected `cpu` or `cuda:N`, got `{text}`"
        ))
    };
    match text {
        "cpu" => Ok(DeviceSpec::Cpu),
        "cuda" => Ok(DeviceSpec::Cuda(0)),
        _ => {
            let index = text.strip_prefix("cuda:").ok_or_else(bad)?;
            index.parse().map(DeviceSpec::Cuda).map_err(|_| bad())
        }
    }
}

impl DeviceSpec {
    /// The plain (inference) device.
    pub fn device(self) -> Result<Device, EngineError> {
        match self {
            DeviceSpec::Cpu => Ok(Device::flex()),
            #[cfg(feature = "cuda")]
            DeviceSpec::Cuda(i) => Ok(Device::cuda(i)),
            #[cfg(not(feature = "cuda"))]
            DeviceSpec::Cuda(_) => Err(EngineError::Unsupported(
                "this trainyard was built without CUDA; rebuild with `--features cuda`".into(),
            )),
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}
