//! `trainyard models import`: an ONNX file from any exporter becomes a registered model
//! version that serves as is. The file is read and loaded by a serving runtime before
//! anything is stored, so a corrupt file or one no runtime runs leaves nothing behind;
//! then it is uploaded into a run of the `imports` experiment and registered from there,
//! with its format, opset, signature, size, licence and lineage as version tags.

use trainyard_client::runs::RunClient;
use trainyard_client::Client;
use trainyard_models::onnx::Summary;

use crate::train::LICENSE_TAG;
use crate::TaskError;

/// The experiment whose runs hold imported files.
pub const IMPORTS_EXPERIMENT: &str = "imports";

/// A registered import.
pub struct Imported {
    pub name: String,
    pub version: String,
    pub run_id: String,
    pub summary: Summary,
    /// The runtime that loaded the file before it was registered.
    pub runtime: &'static str,
    /// Whether the version also has a native form (`spec (N layers)`), or why not.
    pub native: String,
}

/// The `{inputs, outputs}` signature tag of a summary (`-1`: a symbolic dimension).
fn signature(s: &Summary) -> String {
    let side = |v: &[(String, Vec<i64>)]| {
        v.iter()
            .map(|(name, shape)| serde_json::json!({"name": name, "shape": shape}))
            .collect::<Vec<_>>()
    };
    serde_json::json!({"inputs": side(&s.inputs), "outputs": side(&s.outputs)}).to_string()
}

/// A licence as given: an SPDX-looking id, or refused (`None` is recorded as unknown).
pub(crate) fn check_license(license: Option<&str>, field: &str) -> Result<String, TaskError> {
    match license {
        None => Ok("unknown".into()),
        Some(l)
            if !l.is_empty()
                && l.len() <= 64
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.+ ()".contains(c)) =>
        {
            Ok(l.to_string())
        }
        Some(l) => Err(TaskError::Invalid(format!(
            "{field} `{l}`: give an SPDX identifier such as Apache-2.0 or MIT"
        ))),
    }
}

/// Imports `bytes` (read from `origin`) as a new version of `name`; `task` says how `eval`
/// reads its outputs, and `columns` (input, target) which dataset columns feed and score it,
/// when the file also gets a native form.
pub async fn import_onnx(
    client: &Client,
    bytes: Vec<u8>,
    origin: &str,
    name: &str,
    license: Option<&str>,
    task: trainyard_engine::config::Task,
    columns: (&str, &str),
) -> Result<Imported, TaskError> {
    let license = check_license(license, "--license")?;
    let summary = trainyard_models::onnx::inspect(&bytes)
        .map_err(|e| TaskError::Invalid(format!("{origin}: {e}")))?;
    let (runtime, runtime_name) = crate::export::checking_runtime();
    runtime.load(&bytes, 1).map_err(|e| {
        TaskError::Invalid(format!(
            "{origin}: {runtime_name} cannot load it, so it could not be served: {e}"
        ))
    })?;
    let size = bytes.len();
    // Where the graph is a chain of engine layers, the version also gets the native form
    // (weights and card) that fine-tuning and `eval` read.
    let native = match summary.inputs.as_slice() {
        [(input, _)] => crate::export::native_form(&bytes, name, input),
        _ => Err(TaskError::Invalid("the native form has one input".into())),
    };
    let mut files = vec![(format!("model/{}", crate::train::ONNX_FILE), bytes)];
    let native_tag = match &native {
        Ok((spec, net)) => {
            use trainyard_engine::model::{ModelCard, CARD_FILE, WEIGHTS_FILE};
            let card = ModelCard::imported(spec.clone(), task, columns.0.into(), columns.1.into());
            files.push((
                format!("model/{WEIGHTS_FILE}"),
                trainyard_engine::train::weights(net)?,
            ));
            files.push((
                format!("model/{CARD_FILE}"),
                serde_json::to_vec_pretty(&card)?,
            ));
            format!("spec ({} layers)", spec.layers.len())
        }
        Err(e) => format!("not converted: {e}"),
    };
    let tags = vec![
        ("trainyard.native".to_string(), native_tag.clone()),
        ("trainyard.format".to_string(), "onnx".to_string()),
        (
            "trainyard.onnx.opset".to_string(),
            summary.opset.to_string(),
        ),
        ("trainyard.onnx.bytes".to_string(), size.to_string()),
        ("trainyard.signature".to_string(), signature(&summary)),
        ("trainyard.lineage".to_string(), "imported".to_string()),
        ("trainyard.imported_from".to_string(), origin.to_string()),
        (LICENSE_TAG.to_string(), license),
    ];
    let (version, run_id) = register_files(
        client,
        name,
        files,
        &format!("imported from {origin} (producer: {})", summary.producer),
        tags,
        origin,
    )
    .await?;
    Ok(Imported {
        name: name.to_string(),
        version,
        run_id,
        summary,
        runtime: runtime_name,
        native: native_tag,
    })
}

/// Uploads `files` into a new run of the imports experiment and registers its `model`
/// folder as a version of `name`; returns the version and the run. Nothing half-made stays:
/// when registration fails the uploads go and the run is marked failed.
async fn register_files(
    client: &Client,
    name: &str,
    files: Vec<(String, Vec<u8>)>,
    description: &str,
    tags: Vec<(String, String)>,
    origin: &str,
) -> Result<(String, String), TaskError> {
    let run = RunClient::create(
        client.clone(),
        IMPORTS_EXPERIMENT,
        &format!("import {name}"),
    )
    .await?;
    let paths: Vec<String> = files.iter().map(|(p, _)| p.clone()).collect();
    let registered = async {
        for (path, bytes) in files {
            run.upload(&path, bytes).await?;
        }
        run.register(name, &run.artifact_uri("model"), description, &tags)
            .await
    }
    .await;
    match registered {
        Ok(version) => {
            // The version exists: a run that cannot be closed is worth a warning, not a
            // failure (a retry would register the file twice).
            if let Err(e) = run.end("FINISHED").await {
                eprintln!("warning: run {} stays open: {e}", run.run_id);
            }
            Ok((version, run.run_id.clone()))
        }
        Err(e) => {
            for path in &paths {
                let _ = run.delete(path).await;
            }
            let _ = run.end("FAILED").await;
            Err(TaskError::from(e).context(format!("registering {origin} as {name}")))
        }
    }
}

/// What a weights file is imported as: the spec it fills and how the version is fed.
pub struct WeightsImport<'a> {
    pub path: &'a std::path::Path,
    /// A model spec (TOML or JSON): `input = [..]` and the layers.
    pub spec: &'a str,
    /// `FROM_REGEX=TO` rewrites of the file's names (empty: by layer index).
    pub map: Vec<(String, String)>,
    pub task: trainyard_engine::config::Task,
    /// The dataset columns `eval` and `predict` read.
    pub input: String,
    pub target: String,
}

/// A registered weights import.
pub struct ImportedWeights {
    pub name: String,
    pub version: String,
    pub run_id: String,
    pub parameters: usize,
    /// The checked ONNX export, or why there is none.
    pub onnx: Result<crate::export::Exported, TaskError>,
}

/// Imports a safetensors file or a PyTorch `state_dict` into a spec as a new version of
/// `name`: the same files and tags a trained version has (weights, card, checked
/// `model.onnx`), with lineage `imported`. Nothing is stored unless the weights fit.
pub async fn import_weights(
    client: &Client,
    import: WeightsImport<'_>,
    name: &str,
    license: Option<&str>,
) -> Result<ImportedWeights, TaskError> {
    use trainyard_engine::model::{ModelCard, CARD_FILE, WEIGHTS_FILE};
    use trainyard_engine::weights::{self, WeightsFile};
    let license = check_license(license, "--license")?;
    let origin = import
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| import.path.display().to_string());
    let kind = WeightsFile::from_path(import.path).ok_or_else(|| {
        TaskError::Invalid(format!(
            "{origin}: a weights file is .safetensors, .pt or .pth"
        ))
    })?;
    let spec = trainyard_engine::spec::parse_model(import.spec)?
        .resolve(None, None, "model")
        .map_err(|e| TaskError::from(e).context("--spec"))?;
    let network = weights::import(&spec, import.path, kind, &import.map)?;
    let weights = trainyard_engine::train::weights(&network)?;
    let parameters = trainyard_engine::train::parameters(&network);
    let onnx = crate::export::export_onnx(&network, &spec, name);
    let card = ModelCard::imported(spec, import.task, import.input, import.target);
    let mut tags = crate::train::native_tags(&card, parameters);
    tags.extend([
        ("trainyard.lineage".to_string(), "imported".to_string()),
        ("trainyard.imported_from".to_string(), origin.clone()),
        (LICENSE_TAG.to_string(), license),
    ]);
    let mut files = vec![
        (format!("model/{WEIGHTS_FILE}"), weights),
        (
            format!("model/{CARD_FILE}"),
            serde_json::to_vec_pretty(&card)?,
        ),
    ];
    match &onnx {
        Ok(e) => {
            tags.extend(crate::train::onnx_tags(e));
            files.push((format!("model/{}", crate::train::ONNX_FILE), e.onnx.clone()));
        }
        Err(e) => tags.push(("trainyard.onnx".to_string(), format!("not exported: {e}"))),
    }
    let (version, run_id) = register_files(
        client,
        name,
        files,
        &format!("weights imported from {origin}"),
        tags,
        &origin,
    )
    .await?;
    Ok(ImportedWeights {
        name: name.to_string(),
        version,
        run_id,
        parameters,
        onnx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn licences_are_spdx_ids_or_unknown() {
        assert_eq!(check_license(None, "--license").unwrap(), "unknown");
        assert_eq!(
            check_license(Some("Apache-2.0"), "--license").unwrap(),
            "Apache-2.0"
        );
        assert_eq!(
            check_license(Some("MIT OR Apache-2.0"), "--license").unwrap(),
            "MIT OR Apache-2.0"
        );
        for bad in ["", "a/b", "<script>", &"x".repeat(65)] {
            assert!(check_license(Some(bad), "--license").is_err(), "{bad}");
        }
    }

    #[test]
    fn the_signature_tag_is_json() {
        let s = Summary {
            opset: 17,
            producer: "p".into(),
            inputs: vec![("in\"put".into(), vec![-1, 3])],
            outputs: vec![("y".into(), vec![-1, 2])],
            nodes: 1,
            operators: vec![],
        };
        let v: serde_json::Value = serde_json::from_str(&signature(&s)).unwrap();
        assert_eq!(v["inputs"][0]["name"], "in\"put");
        assert_eq!(v["outputs"][0]["shape"], serde_json::json!([-1, 2]));
    }
}
