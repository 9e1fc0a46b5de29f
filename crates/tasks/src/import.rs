//! `trainyard models import`: an ONNX file from any exporter becomes a registered model
//! version that serves as is. The file is read and loaded by a serving runtime before
//! anything is stored, so a corrupt file or one no runtime runs leaves nothing behind;
//! then it is uploaded into a run of the `imports` experiment and registered from there,
//! with its format, opset, signature, size, licence and lineage as version tags.

use trainyard_client::runs::RunClient;
use trainyard_client::Client;
use trainyard_models::onnx::Summary;

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

/// Imports `bytes` (read from `origin`) as a new version of `name`.
pub async fn import_onnx(
    client: &Client,
    bytes: Vec<u8>,
    origin: &str,
    name: &str,
    license: Option<&str>,
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
    let run = RunClient::create(
        client.clone(),
        IMPORTS_EXPERIMENT,
        &format!("import {name}"),
    )
    .await?;
    let registered = async {
        run.upload(&format!("model/{}", crate::train::ONNX_FILE), bytes)
            .await?;
        let tags = vec![
            ("trainyard.format".to_string(), "onnx".to_string()),
            (
                "trainyard.onnx.opset".to_string(),
                summary.opset.to_string(),
            ),
            ("trainyard.onnx.bytes".to_string(), size.to_string()),
            ("trainyard.signature".to_string(), signature(&summary)),
            ("trainyard.lineage".to_string(), "imported".to_string()),
            ("trainyard.imported_from".to_string(), origin.to_string()),
            ("trainyard.license".to_string(), license.clone()),
        ];
        run.register(
            name,
            &run.artifact_uri("model"),
            &format!("imported from {origin} (producer: {})", summary.producer),
            &tags,
        )
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
            Ok(Imported {
                name: name.to_string(),
                version,
                run_id: run.run_id.clone(),
                summary,
                runtime: runtime_name,
            })
        }
        Err(e) => {
            // Nothing half-made stays: the uploaded file goes, the run is marked failed.
            let _ = run
                .delete(&format!("model/{}", crate::train::ONNX_FILE))
                .await;
            let _ = run.end("FAILED").await;
            Err(TaskError::from(e).context(format!("registering {origin} as {name}")))
        }
    }
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
