//! Registered model versions whose artifacts hold an ONNX file, by name and version number.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};

use futures::TryStreamExt;
use trainyard_tracking::{artifact_path, Tracking};

use super::{ModelFiles, ModelSource, SourceModel};
use crate::config::ModelConfig;
use crate::ServeError;

/// The alias that picks the version a request without a version number gets.
pub const PRODUCTION_ALIAS: &str = "production";

pub struct RegistrySource {
    tracking: Tracking,
    /// Artifacts are immutable once a version exists, so "which file is the model" is
    /// remembered per (name, version, revision); a listing forgets the versions it no longer
    /// finds.
    onnx_files: Mutex<HashMap<(String, u64, String), Option<String>>>,
}

/// What makes a registered version the one it is ([`ModelFiles::revision`]): its creation
/// time and where its files are. A version deleted and registered again (the model or its
/// whole workspace removed and made anew) has a later creation time, and from another run
/// another location.
fn revision(v: &trainyard_tracking::ModelVersion) -> String {
    format!("{}@{}", v.creation_timestamp, v.storage_location)
}

impl RegistrySource {
    pub fn new(tracking: Tracking) -> Self {
        Self {
            tracking,
            onnx_files: Mutex::default(),
        }
    }

    /// The blob path of the version's ONNX file (`model.onnx`, else the only `.onnx`).
    async fn onnx_file(
        &self,
        name: &str,
        version: u64,
        revision: &str,
        location: &str,
    ) -> Result<Option<String>, ServeError> {
        let key = (name.to_string(), version, revision.to_string());
        if let Some(found) = self.onnx_files.lock().get(&key) {
            return Ok(found.clone());
        }
        let (workspace, _) = super::split_model_key(name);
        let found = match self.resolve(workspace, location).await? {
            None => None,
            Some(dir) => {
                let dir = dir.as_str();
                let files = self.tracking.list_artifacts(dir).await?;
                let onnx: Vec<_> = files
                    .iter()
                    .filter(|f| !f.is_dir && f.path.ends_with(".onnx"))
                    .collect();
                let pick = onnx
                    .iter()
                    .find(|f| f.path == "model.onnx")
                    .or(if onnx.len() == 1 { onnx.first() } else { None });
                pick.map(|f| format!("{}/{}", dir.trim_end_matches('/'), f.path))
            }
        };
        self.onnx_files.lock().insert(key, found.clone());
        Ok(found)
    }

    /// The blob folder behind a version's location: ours (`mlflow-artifacts:/…`), or a path
    /// inside the artifacts of a run of `workspace` (`runs:/RUN_ID/path`).
    async fn resolve(&self, workspace: &str, location: &str) -> Result<Option<String>, ServeError> {
        if let Some(rest) = location.strip_prefix("runs:/") {
            let (run_id, path) = rest.split_once('/').unwrap_or((rest, ""));
            // Only a run of the model's own workspace.
            let run = match self.tracking.scoped(workspace).get_run(run_id).await {
                Ok(run) => run,
                Err(trainyard_tracking::TrackingError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            return Ok(artifact_path(&run.info.artifact_uri).map(|root| {
                format!("{}/{}", root.trim_end_matches('/'), path.trim_matches('/'))
                    .trim_end_matches('/')
                    .to_string()
            }));
        }
        Ok(artifact_path(location).map(str::to_string))
    }

    async fn read(&self, path: &str) -> Result<Vec<u8>, trainyard_tracking::TrackingError> {
        let download = self.tracking.get_artifact(path, None).await?;
        let chunks: Vec<bytes::Bytes> = download.body.try_collect().await?;
        Ok(chunks.concat())
    }
}

#[async_trait::async_trait]
impl ModelSource for RegistrySource {
    fn describe(&self) -> String {
        "model registry".to_string()
    }

    async fn list(&self) -> Result<Vec<SourceModel>, ServeError> {
        // Every workspace's registry, each model by its key (`workspace/name` outside
        // `default`).
        let mut versions = Vec::new();
        for workspace in self
            .tracking
            .db()
            .workspaces()
            .await
            .map_err(trainyard_tracking::TrackingError::from)?
        {
            let page = self
                .tracking
                .scoped(&workspace.id)
                .search_model_versions("", 200_000, &[], None)
                .await?;
            for mut v in page.items {
                v.name = super::model_key(&workspace.id, &v.name);
                versions.push(v);
            }
        }
        let page = trainyard_tracking::Page {
            items: versions,
            next_page_token: None,
        };
        #[derive(Default)]
        struct Found {
            versions: Vec<u64>,
            revisions: HashMap<u64, String>,
            production: Option<u64>,
            unservable: Vec<(u64, String)>,
        }
        let mut by_name: BTreeMap<String, Found> = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        for v in page.items {
            let Ok(number) = v.version.parse::<u64>() else {
                continue;
            };
            if v.status != "READY" {
                continue;
            }
            let revision = revision(&v);
            seen.insert((v.name.clone(), number, revision.clone()));
            // One version whose location cannot be read (a bad source, a missing run) is
            // that version's problem: it is listed as unservable, and the rest still serve.
            match self
                .onnx_file(&v.name, number, &revision, &v.storage_location)
                .await
            {
                Ok(Some(_)) => {}
                Ok(None) => continue,
                Err(ServeError::Internal(e)) => return Err(ServeError::Internal(e)),
                Err(e) => {
                    tracing::warn!(model = %v.name, version = number, error = %e,
                        "a registered version cannot be served");
                    by_name
                        .entry(v.name.clone())
                        .or_default()
                        .unservable
                        .push((number, format!("cannot read {}: {e}", v.storage_location)));
                    continue;
                }
            }
            let entry = by_name.entry(v.name.clone()).or_default();
            entry.versions.push(number);
            entry.revisions.insert(number, revision);
            if v.aliases.iter().any(|a| a == PRODUCTION_ALIAS) {
                entry.production = Some(number);
            }
        }
        // Deleted versions are forgotten (a name made again is looked at afresh).
        self.onnx_files.lock().retain(|key, _| seen.contains(key));
        Ok(by_name
            .into_iter()
            .map(|(name, mut found)| {
                found.versions.sort_unstable();
                found.unservable.sort();
                let default_version = found
                    .production
                    .or(found.versions.last().copied())
                    .unwrap_or(0);
                SourceModel {
                    name,
                    versions: found.versions,
                    revisions: found.revisions,
                    default_version,
                    unservable: found.unservable,
                }
            })
            .collect())
    }

    async fn fetch(&self, name: &str, version: u64) -> Result<ModelFiles, ServeError> {
        let (workspace, registered) = super::split_model_key(name);
        let registry = self.tracking.scoped(workspace);
        // Messages name the model as its callers do, never by the key (`workspace/name`).
        let v = match registry.get_model_version(registered, version as i64).await {
            Ok(v) => v,
            Err(trainyard_tracking::TrackingError::NotFound(_)) => {
                return Err(ServeError::not_found(format!(
                    "Request for unknown model: '{registered}' version {version} is not found"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        let revision = revision(&v);
        let Some(path) = self
            .onnx_file(name, version, &revision, &v.storage_location)
            .await?
        else {
            return Err(ServeError::unavailable(format!(
                "model '{registered}' version {version} has no ONNX file at {}",
                v.storage_location
            )));
        };
        let onnx = self.read(&path).await?;
        let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let onnx = super::with_external_data(onnx, |location| {
            let file = format!("{dir}/{location}");
            async move { self.read(&file).await.map_err(ServeError::from) }
        })
        .await?;
        let config_path = format!("{dir}/config.json");
        // One read: a missing config means the defaults; a store failure is an error.
        let config = match self.read(&config_path).await {
            Ok(bytes) => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| ServeError::invalid(format!("{config_path}: not UTF-8")))?;
                ModelConfig::parse(&text, &config_path)?
            }
            Err(trainyard_tracking::TrackingError::NotFound(_)) => ModelConfig::default(),
            Err(e) => return Err(e.into()),
        };
        Ok(ModelFiles {
            onnx,
            config,
            origin: format!("models:/{registered}/{version}"),
            revision,
        })
    }
}
