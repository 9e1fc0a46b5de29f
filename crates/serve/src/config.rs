//! A model's serving configuration: the subset of Triton's `ModelConfig` (rendered as JSON
//! with proto field names) that this server acts on. The same document is read from
//! `<repository>/<model>/config.json`, answered at `/v2/models/{m}/config`, and accepted as
//! the `config` parameter of a load.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::runtime::{RuntimeKind, Signature};
use crate::tensor::DataType;
use crate::ServeError;

/// Batch size a model gets when it batches (first dim dynamic on every tensor) and no
/// config says otherwise.
pub const DEFAULT_MAX_BATCH: u32 = 64;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelConfig {
    pub name: String,
    pub platform: String,
    /// `onnxruntime` or `tract`; empty = the server's default runtime.
    pub backend: String,
    /// 0 = the model does not batch; > 0 = the first dimension of every tensor is the batch.
    #[serde(deserialize_with = "number_or_string")]
    pub max_batch_size: u32,
    pub input: Vec<TensorConfig>,
    pub output: Vec<TensorConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic_batching: Option<DynamicBatching>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instance_group: Vec<InstanceGroup>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub default_model_filename: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, ParameterValue>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TensorConfig {
    pub name: String,
    pub data_type: String,
    /// Without the batch dimension when the model batches; -1 = variable.
    pub dims: Vec<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DynamicBatching {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preferred_batch_size: Vec<u32>,
    #[serde(deserialize_with = "number_or_string_u64")]
    pub max_queue_delay_microseconds: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InstanceGroup {
    #[serde(deserialize_with = "number_or_string")]
    pub count: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParameterValue {
    pub string_value: String,
}

/// int64 fields arrive as numbers or, from proto3 JSON, as strings.
fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = number_or_string_u64(d)?;
    u32::try_from(v).map_err(serde::de::Error::custom)
}

fn number_or_string_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Num(u64),
        Str(String),
    }
    match N::deserialize(d)? {
        N::Num(n) => Ok(n),
        N::Str(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

/// Bounds on what a config may ask for. A config is untrusted input (a job can write one
/// into a run's artifacts and register it), and each instance is an OS thread with a runtime
/// session of its own: an unbounded count exhausts the process's threads or memory and aborts
/// it. The limits are far above what one machine can use well.
pub mod limits {
    /// Instances (threads, sessions) over all instance groups.
    pub const MAX_INSTANCES: u64 = 64;
    /// Rows one batch may stack.
    pub const MAX_BATCH_SIZE: u64 = 65_536;
    /// How long the batcher may hold a request: 10 s.
    pub const MAX_QUEUE_DELAY_US: u64 = 10_000_000;
    /// Entries of `preferred_batch_size`.
    pub const MAX_PREFERRED_SIZES: usize = 64;
    /// Declared inputs or outputs.
    pub const MAX_TENSORS: usize = 1_024;
    /// Dimensions of one declared tensor.
    pub const MAX_DIMS: usize = 32;
    /// Entries of `parameters`, and bytes of one parameter value.
    pub const MAX_PARAMETERS: usize = 256;
    pub const MAX_PARAMETER_BYTES: usize = 64 * 1024;
}

impl ModelConfig {
    /// Reads and bounds-checks a config; an error names `origin` and the field at fault.
    pub fn parse(text: &str, origin: &str) -> Result<ModelConfig, ServeError> {
        let config: ModelConfig = serde_json::from_str(text)
            .map_err(|e| ServeError::invalid(format!("{origin}: not a model config: {e}")))?;
        config
            .check_bounds()
            .map_err(|(field, why)| ServeError::invalid(format!("{origin}: {field}: {why}")))?;
        Ok(config)
    }

    /// Every numeric field within [`limits`]; `Err((field, why))` names the first that is not.
    pub fn check_bounds(&self) -> Result<(), (String, String)> {
        use limits::*;
        let over = |field: String, value: u64, max: u64| -> Result<(), (String, String)> {
            if value > max {
                Err((field, format!("{value} is more than the limit of {max}")))
            } else {
                Ok(())
            }
        };
        let mut instances = 0u64;
        for (i, g) in self.instance_group.iter().enumerate() {
            over(
                format!("instance_group[{i}].count"),
                u64::from(g.count),
                MAX_INSTANCES,
            )?;
            instances += u64::from(g.count.max(1));
        }
        over("instance_group".into(), instances, MAX_INSTANCES).map_err(|(f, _)| {
            (
                f,
                format!("{instances} instances in all is more than the limit of {MAX_INSTANCES}"),
            )
        })?;
        over(
            "max_batch_size".into(),
            u64::from(self.max_batch_size),
            MAX_BATCH_SIZE,
        )?;
        if let Some(b) = &self.dynamic_batching {
            over(
                "dynamic_batching.max_queue_delay_microseconds".into(),
                b.max_queue_delay_microseconds,
                MAX_QUEUE_DELAY_US,
            )?;
            over(
                "dynamic_batching.preferred_batch_size".into(),
                b.preferred_batch_size.len() as u64,
                MAX_PREFERRED_SIZES as u64,
            )?;
            for (i, n) in b.preferred_batch_size.iter().enumerate() {
                let field = format!("dynamic_batching.preferred_batch_size[{i}]");
                if *n == 0 {
                    return Err((field, "must be at least 1".into()));
                }
                // As Triton: a preferred batch larger than the largest allowed can never form.
                if self.max_batch_size > 0 && *n > self.max_batch_size {
                    return Err((
                        field,
                        format!(
                            "{n} is larger than max_batch_size ({})",
                            self.max_batch_size
                        ),
                    ));
                }
                over(field, u64::from(*n), MAX_BATCH_SIZE)?;
            }
        }
        for (side, tensors) in [("input", &self.input), ("output", &self.output)] {
            over(side.into(), tensors.len() as u64, MAX_TENSORS as u64)?;
            for (i, t) in tensors.iter().enumerate() {
                over(
                    format!("{side}[{i}].dims"),
                    t.dims.len() as u64,
                    MAX_DIMS as u64,
                )?;
            }
        }
        over(
            "parameters".into(),
            self.parameters.len() as u64,
            MAX_PARAMETERS as u64,
        )?;
        for (key, value) in &self.parameters {
            over(
                format!("parameters.{key}"),
                value.string_value.len() as u64,
                MAX_PARAMETER_BYTES as u64,
            )?;
        }
        Ok(())
    }

    /// Threads (instances) that run this model, each with its own session.
    pub fn instances(&self) -> usize {
        self.instance_group
            .iter()
            .map(|g| g.count.max(1) as usize)
            .sum::<usize>()
            .max(1)
    }

    pub fn runtime(&self) -> Result<Option<RuntimeKind>, ServeError> {
        if self.backend.is_empty() {
            return Ok(None);
        }
        RuntimeKind::parse(&self.backend).map(Some).ok_or_else(|| {
            ServeError::invalid(format!(
                "config backend '{}': known backends are onnxruntime and tract",
                self.backend
            ))
        })
    }

    /// How long the batcher may hold the first request waiting for more; `None` = no
    /// dynamic batching configured (requests already queued are still stacked).
    pub fn queue_delay(&self) -> Duration {
        self.dynamic_batching
            .as_ref()
            .map(|b| Duration::from_micros(b.max_queue_delay_microseconds))
            .unwrap_or_default()
    }

    /// The config as served: what the file said, completed from the model's signature.
    /// Declared tensors must exist in the model with the same datatype.
    pub fn complete(
        mut self,
        name: &str,
        runtime: RuntimeKind,
        sig: &Signature,
    ) -> Result<Self, ServeError> {
        self.name = name.to_string();
        self.backend = runtime.as_str().to_string();
        self.platform = "onnxruntime_onnx".to_string();
        let batchable = sig.batchable();
        if self.max_batch_size > 0 && !batchable {
            return Err(ServeError::invalid(format!(
                "config max_batch_size is {}, but the model's tensors have no variable first dimension to batch along",
                self.max_batch_size
            )));
        }
        if self.input.is_empty() && self.output.is_empty() && self.max_batch_size == 0 && batchable
        {
            self.max_batch_size = DEFAULT_MAX_BATCH;
        }
        let skip = usize::from(self.max_batch_size > 0);
        for (declared, actual, side) in [
            (&mut self.input, &sig.inputs, "input"),
            (&mut self.output, &sig.outputs, "output"),
        ] {
            for d in declared.iter() {
                let Some(a) = actual.iter().find(|a| a.name == d.name) else {
                    return Err(ServeError::invalid(format!(
                        "config {side} '{}' is not in the model (it has {})",
                        d.name,
                        actual
                            .iter()
                            .map(|a| a.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                };
                if DataType::parse_config(&d.data_type) != Some(a.datatype) {
                    return Err(ServeError::invalid(format!(
                        "config {side} '{}': data_type {} but the model has {}",
                        d.name,
                        d.data_type,
                        a.datatype.config_name()
                    )));
                }
            }
            *declared = actual
                .iter()
                .map(|a| TensorConfig {
                    name: a.name.clone(),
                    data_type: a.datatype.config_name(),
                    dims: a.shape.iter().skip(skip).copied().collect(),
                })
                .collect();
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_triton_json_with_string_numbers() {
        let c = ModelConfig::parse(
            r#"{"name":"m","max_batch_size":"8","dynamic_batching":{"max_queue_delay_microseconds":"500","preferred_batch_size":[4,8]},"instance_group":[{"count":2,"kind":"KIND_CPU"}]}"#,
            "config.json",
        )
        .unwrap();
        assert_eq!(c.max_batch_size, 8);
        assert_eq!(c.queue_delay(), Duration::from_micros(500));
        assert_eq!(c.instances(), 2);
        let err = ModelConfig::parse("{\"max_batch_size\": -1}", "x/config.json").unwrap_err();
        assert!(err.to_string().starts_with("x/config.json"), "{err}");
    }

    #[test]
    fn refuses_configs_past_the_bounds_naming_the_field() {
        for (text, field) in [
            (
                r#"{"instance_group":[{"count":100000,"kind":"KIND_CPU"}]}"#,
                "instance_group[0].count",
            ),
            (
                r#"{"instance_group":[{"count":40},{"count":40}]}"#,
                "instance_group:",
            ),
            (r#"{"max_batch_size":"4294967295"}"#, "max_batch_size"),
            (
                r#"{"dynamic_batching":{"max_queue_delay_microseconds":"18446744073709551615"}}"#,
                "dynamic_batching.max_queue_delay_microseconds",
            ),
            (
                r#"{"dynamic_batching":{"preferred_batch_size":[4,0]}}"#,
                "dynamic_batching.preferred_batch_size[1]",
            ),
            (
                r#"{"max_batch_size":8,"dynamic_batching":{"preferred_batch_size":[4,1000]}}"#,
                "dynamic_batching.preferred_batch_size[1]",
            ),
        ] {
            let err = ModelConfig::parse(text, "c.json").unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("c.json: {field}")),
                "{text}: {err}"
            );
            assert!(matches!(
                ModelConfig::parse(text, "c.json"),
                Err(ServeError::Invalid(_))
            ));
        }
        let fine = r#"{"instance_group":[{"count":64}],"max_batch_size":65536}"#;
        assert_eq!(ModelConfig::parse(fine, "c.json").unwrap().instances(), 64);
    }
}
