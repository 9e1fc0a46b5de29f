//! `DIR/<model>/<version>/model.onnx`, with an optional `DIR/<model>/config.json` — the
//! layout of a Triton model repository, so an existing one serves as it is (with its config
//! as JSON).

use std::path::{Path, PathBuf};

use super::{ModelFiles, ModelSource, SourceModel};
use crate::config::ModelConfig;
use crate::ServeError;

pub struct RepositoryFolder {
    root: PathBuf,
}

impl RepositoryFolder {
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, ServeError> {
        let root = root.into();
        if !root.is_dir() {
            return Err(ServeError::invalid(format!(
                "model repository {} is not a folder",
                root.display()
            )));
        }
        Ok(Self { root })
    }

    async fn config(&self, model: &Path) -> Result<ModelConfig, ServeError> {
        let path = model.join("config.json");
        match tokio::fs::read_to_string(&path).await {
            Ok(text) => ModelConfig::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ModelConfig::default()),
            Err(e) => Err(ServeError::internal(format!("{}: {e}", path.display()))),
        }
    }

    fn file_name(config: &ModelConfig) -> &str {
        if config.default_model_filename.is_empty() {
            "model.onnx"
        } else {
            &config.default_model_filename
        }
    }
}

/// A model file's revision ([`super::ModelFiles::revision`]): which file it is, its size
/// and when it was last written, so a version replaced in the folder is loaded afresh.
fn revision(meta: &std::fs::Metadata) -> String {
    #[cfg(unix)]
    let file = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let file = 0u64;
    let written = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{file}:{}:{written}", meta.len())
}

fn io(path: &Path, e: std::io::Error) -> ServeError {
    ServeError::internal(format!("{}: {e}", path.display()))
}

#[async_trait::async_trait]
impl ModelSource for RepositoryFolder {
    fn describe(&self) -> String {
        format!("model repository {}", self.root.display())
    }

    async fn list(&self) -> Result<Vec<SourceModel>, ServeError> {
        let mut models = Vec::new();
        let mut dir = tokio::fs::read_dir(&self.root)
            .await
            .map_err(|e| io(&self.root, e))?;
        while let Some(entry) = dir.next_entry().await.map_err(|e| io(&self.root, e))? {
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !path.is_dir() || name.starts_with('.') {
                continue;
            }
            // A broken config still lists the model; loading it reports the error.
            let config = self.config(&path).await.unwrap_or_default();
            let file = Self::file_name(&config);
            let mut versions = Vec::new();
            let mut revisions = std::collections::HashMap::new();
            let mut sub = tokio::fs::read_dir(&path).await.map_err(|e| io(&path, e))?;
            while let Some(v) = sub.next_entry().await.map_err(|e| io(&path, e))? {
                // Only a version's own spelling: `01` would list version 1 with the revision
                // of a folder that fetching `1/` never reads.
                let version = v
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<u64>().ok().filter(|n| n.to_string() == s));
                if let Some(version) = version.filter(|n| *n > 0) {
                    match tokio::fs::metadata(v.path().join(file)).await {
                        Ok(meta) if meta.is_file() => {
                            versions.push(version);
                            revisions.insert(version, revision(&meta));
                        }
                        _ => {}
                    }
                }
            }
            versions.sort_unstable();
            if let Some(&last) = versions.last() {
                models.push(SourceModel {
                    name,
                    versions,
                    revisions,
                    default_version: last,
                    unservable: Vec::new(),
                });
            }
        }
        models.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(models)
    }

    async fn fetch(&self, name: &str, version: u64) -> Result<ModelFiles, ServeError> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(ServeError::invalid(format!("'{name}' is not a model name")));
        }
        let model = self.root.join(name);
        let config = self.config(&model).await?;
        let path = model
            .join(version.to_string())
            .join(Self::file_name(&config));
        // The revision before the bytes: a file replaced while it is read is seen as changed
        // by the next listing.
        let not_found = || {
            ServeError::not_found(format!(
                "Request for unknown model: '{name}' version {version} is not found"
            ))
        };
        let revision = match tokio::fs::metadata(&path).await {
            Ok(meta) => revision(&meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(io(&path, e)),
        };
        let onnx = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(io(&path, e)),
        };
        let dir = path.parent().unwrap_or(&model).to_path_buf();
        let onnx = super::with_external_data(onnx, |location| {
            let file = dir.join(location);
            async move { tokio::fs::read(&file).await.map_err(|e| io(&file, e)) }
        })
        .await?;
        Ok(ModelFiles {
            onnx,
            config,
            origin: path.display().to_string(),
            revision,
        })
    }
}
