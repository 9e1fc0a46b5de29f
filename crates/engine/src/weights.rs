//! Weights written by another framework — a safetensors file or a PyTorch `state_dict`
//! (`.pt`/`.pth`) — loaded into a network built from a spec, through burn's own readers
//! (`burn-store`; no pickle is executed). Files are taken in PyTorch's names and layouts:
//! linear weights `[out, in]`, norms' `weight`/`bias`, batch norm's running statistics.
//!
//! Names are mapped onto the spec's layers by their index: a `torch.nn.Sequential`'s keys
//! (`0.weight`, `4.bias`), under any common prefix (`model.0.weight`), are the spec's
//! `layers[0]`, `layers[4]` — the same layer order. Other layouts take explicit
//! `FROM_REGEX=TO` rewrites. Every tensor must land on a parameter of the same shape and
//! every parameter must be filled: what does not fit is named from both sides.

use std::collections::HashMap;
use std::path::Path;

use burn::store::{ApplyError, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter};
use burn::store::{PytorchStore, SafetensorsStore};
use burn::tensor::DType;

use crate::network::Network;
use crate::spec::ResolvedSpec;
use crate::EngineError;

/// The kinds of weights file read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsFile {
    Safetensors,
    /// `torch.save(model.state_dict())`.
    Pytorch,
}

impl WeightsFile {
    /// By extension: `.safetensors`, or `.pt` / `.pth`.
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "safetensors" => Some(Self::Safetensors),
            "pt" | "pth" => Some(Self::Pytorch),
            _ => None,
        }
    }
}

/// PyTorch keeps this counter beside batch norm's statistics; inference has no use for it.
const BATCHES_TRACKED: &str = "num_batches_tracked";

/// A fresh network of `spec` (on the CPU) holding the weights of the file at `path`.
/// `map` rewrites file names (`regex`, replacement with `$1`…) before they are matched; empty,
/// names are mapped by layer index as the module docs say.
pub fn import(
    spec: &ResolvedSpec,
    path: &Path,
    kind: WeightsFile,
    map: &[(String, String)],
) -> Result<Network, EngineError> {
    let file = path.display().to_string();
    let refused = |why: String| EngineError::Spec(format!("{file}: {why}"));
    // The readers parse untrusted bytes; whatever they do with a hostile file stays an error.
    let tensors = std::panic::catch_unwind(|| -> Result<_, String> {
        Ok(match kind {
            WeightsFile::Safetensors => {
                let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
                SafetensorsStore::from_bytes(Some(bytes))
                    .get_all_tensors()
                    .map_err(|e| e.to_string())?
                    .clone()
            }
            WeightsFile::Pytorch => PytorchStore::from_file(path)
                .map_indices_contiguous(false)
                .get_all_tensors()
                .map_err(|e| e.to_string())?
                .clone(),
        })
    })
    .map_err(|_| refused("the file cannot be read (its reader failed)".into()))?
    .map_err(|e| refused(format!("cannot read the weights: {e}")))?;

    let names: Vec<String> = tensors.keys().cloned().collect();
    let renamed = rename(&names, map).map_err(refused)?;
    // Two tensors mapped to one parameter would leave one of them silently unused.
    let mut targets: HashMap<&str, &str> = HashMap::new();
    for (from, to) in renamed
        .iter()
        .filter(|(f, _)| !f.ends_with(BATCHES_TRACKED))
    {
        if let Some(other) = targets.insert(to, from) {
            return Err(refused(format!("`{other}` and `{from}` both map to {to}")));
        }
    }
    let mut by_model_name = HashMap::new();
    let mut loaded = Vec::new();
    for (name, mut tensor) in tensors {
        if name.ends_with(BATCHES_TRACKED) {
            continue;
        }
        if tensor.dtype != DType::F32 {
            return Err(refused(format!(
                "`{name}` is {:?}; save the weights as float32",
                tensor.dtype
            )));
        }
        tensor.name = renamed[&name].clone();
        by_model_name.insert(tensor.name.clone(), name);
        loaded.push(tensor);
    }

    let cpu = crate::device::DeviceSpec::Cpu.device()?;
    let mut net = Network::new(spec, &cpu);
    let result = net.apply(loaded, None, Some(Box::new(PyTorchToBurnAdapter)), true);
    let from_file = |model: &str| {
        by_model_name
            .get(model)
            .map_or(String::new(), |f| format!(" (the file's `{f}`)"))
    };
    let mut problems: Vec<String> = result
        .errors
        .iter()
        .map(|e| match e {
            ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } => format!(
                "{path}{}: the spec needs {expected:?}, the file has {found:?} (linear weights as [in, out])",
                from_file(path)
            ),
            ApplyError::DTypeMismatch { path, .. }
            | ApplyError::AdapterError { path, .. }
            | ApplyError::LoadError { path, .. } => format!("{path}{}: {e}", from_file(path)),
        })
        .collect();
    problems.extend(
        result
            .missing
            .iter()
            .map(|(path, _)| format!("{path}: the spec has it, the file has no tensor for it")),
    );
    problems.extend(result.unused.iter().map(|model| {
        format!(
            "{}: the file has it, the spec has no such parameter{}",
            by_model_name
                .get(model)
                .map_or(model.as_str(), String::as_str),
            if by_model_name.get(model).is_some_and(|f| f != model) {
                format!(" (mapped to {model})")
            } else {
                String::new()
            }
        )
    }));
    if problems.is_empty() {
        Ok(net)
    } else {
        problems.sort();
        Err(refused(format!(
            "the weights do not fit the spec: {}",
            problems.join("; ")
        )))
    }
}

/// File name → the network's name for it.
fn rename(names: &[String], map: &[(String, String)]) -> Result<HashMap<String, String>, String> {
    if !map.is_empty() {
        let rules = map
            .iter()
            .map(|(from, to)| {
                regex::Regex::new(from)
                    .map(|r| (r, to.as_str()))
                    .map_err(|e| format!("--map {from}={to}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(names
            .iter()
            .map(|n| {
                let mapped = rules
                    .iter()
                    .fold(n.clone(), |s, (r, to)| r.replace_all(&s, *to).into_owned());
                (n.clone(), mapped)
            })
            .collect());
    }
    // `[prefix.]INDEX.rest`, one prefix for every name: a Sequential's layout.
    let split = |n: &str| -> Option<(String, String)> {
        let parts: Vec<&str> = n.split('.').collect();
        let at = parts.iter().position(|p| p.parse::<usize>().is_ok())?;
        (at + 1 < parts.len()).then(|| {
            (
                parts[..at].join("."),
                format!("layers.{}", parts[at..].join(".")),
            )
        })
    };
    let split: Option<Vec<(String, String)>> = names.iter().map(|n| split(n)).collect();
    Ok(match split {
        Some(parts) if parts.windows(2).all(|w| w[0].0 == w[1].0) => names
            .iter()
            .cloned()
            .zip(parts.into_iter().map(|(_, name)| name))
            .collect(),
        _ => names.iter().map(|n| (n.clone(), n.clone())).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sequential_keys_map_by_index_under_any_common_prefix() {
        for (given, want) in [
            (
                vec!["0.weight", "4.bias"],
                vec!["layers.0.weight", "layers.4.bias"],
            ),
            (
                vec!["model.0.weight", "model.4.bias"],
                vec!["layers.0.weight", "layers.4.bias"],
            ),
            (
                vec!["layers.2.layers.0.weight"],
                vec!["layers.2.layers.0.weight"],
            ),
            // Two prefixes are not one Sequential: kept as they are.
            (
                vec!["features.0.weight", "classifier.1.weight"],
                vec!["features.0.weight", "classifier.1.weight"],
            ),
        ] {
            let map = rename(&names(&given), &[]).unwrap();
            let got: Vec<&str> = given.iter().map(|g| map[*g].as_str()).collect();
            assert_eq!(got, want, "{given:?}");
        }
        let explicit = rename(
            &names(&["features.0.weight", "classifier.1.weight"]),
            &[
                (r"^features\.(\d+)".into(), "layers.$1".into()),
                (r"^classifier\.1".into(), "layers.9".into()),
            ],
        )
        .unwrap();
        assert_eq!(explicit["features.0.weight"], "layers.0.weight");
        assert_eq!(explicit["classifier.1.weight"], "layers.9.weight");
        let err = rename(&names(&["a"]), &[("(".into(), "x".into())]).unwrap_err();
        assert!(err.starts_with("--map (=x"), "{err}");
    }
}
