//! Where models come from: a Triton-style repository folder, or the model registry.

mod folder;
mod registry;

pub use folder::RepositoryFolder;
pub use registry::RegistrySource;

use crate::config::ModelConfig;
use crate::ServeError;

/// How the manager keys a registered model of `workspace`: by its name in `default`, as
/// `workspace/name` elsewhere. Registered model names never hold a `/`, so keys of two
/// workspaces never meet.
pub fn model_key(workspace: &str, name: &str) -> String {
    if workspace == trainyard_core::DEFAULT_WORKSPACE {
        name.to_string()
    } else {
        format!("{workspace}/{name}")
    }
}

/// The workspace and registered name a key stands for (see [`model_key`]).
pub fn split_model_key(key: &str) -> (&str, &str) {
    key.split_once('/')
        .unwrap_or((trainyard_core::DEFAULT_WORKSPACE, key))
}

/// The name a caller uses for the model keyed `key`: without the workspace prefix, which no
/// caller ever names (messages say this, never the key).
pub fn shown_name(key: &str) -> &str {
    split_model_key(key).1
}

/// A model a source can serve, with the versions it has.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SourceModel {
    pub name: String,
    /// Ascending.
    pub versions: Vec<u64>,
    /// What each of `versions` is ([`ModelFiles::revision`]); a version missing here has the
    /// revision `""`.
    pub revisions: std::collections::HashMap<u64, String>,
    /// What a request without a version gets (the registry's `production` alias, else the
    /// highest version). Meaningless when `versions` is empty.
    pub default_version: u64,
    /// Versions the source has but cannot serve, with why (an unreadable or unresolvable
    /// location): listed as unavailable, never a reason to fail the whole listing.
    pub unservable: Vec<(u64, String)>,
}

impl SourceModel {
    /// The revision the source lists for `version`.
    pub fn revision(&self, version: u64) -> &str {
        self.revisions.get(&version).map_or("", String::as_str)
    }
}

/// A version's files, ready for a runtime.
pub struct ModelFiles {
    pub onnx: Vec<u8>,
    pub config: ModelConfig,
    /// Where they came from, for messages.
    pub origin: String,
    /// Which version of the source these files are: the same name and number listed later
    /// with another revision is another model (deleted and made again, its file replaced),
    /// and a copy loaded from these files must not answer for it. The registry's is the
    /// version's creation time and storage location; a folder's, its file's identity, size
    /// and modification time.
    pub revision: String,
}

/// `onnx` with the external data it names (weights kept in files beside it, as
/// `onnx.save(..., save_as_external_data=True)` and `mlflow.onnx.log_model` write them)
/// read by `read(location)` and put inside, so a runtime loads it from memory alone and never
/// resolves a path itself. Every source passes its files through here: a location outside
/// the model's folder is refused before anything is read.
pub(crate) async fn with_external_data<F, Fut>(
    onnx: Vec<u8>,
    read: F,
) -> Result<Vec<u8>, ServeError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>, ServeError>>,
{
    use trainyard_models::onnx::{external_locations, inline_external_data};
    let refused = |e: trainyard_models::ModelsError| ServeError::invalid(e.to_string());
    // Decoding a large model is CPU work: off the async threads.
    let blocking = |e: tokio::task::JoinError| ServeError::internal(format!("model decoding: {e}"));
    let (onnx, locations) = tokio::task::spawn_blocking(move || {
        let locations = external_locations(&onnx);
        (onnx, locations)
    })
    .await
    .map_err(blocking)?;
    let locations = match locations {
        Ok(locations) => locations,
        // Garbage is the runtime's to refuse, with its own words.
        Err(trainyard_models::ModelsError::Undecodable(_)) => return Ok(onnx),
        Err(e) => return Err(refused(e)),
    };
    if locations.is_empty() {
        return Ok(onnx);
    }
    let mut files = std::collections::HashMap::new();
    for location in locations {
        let bytes = read(location.clone()).await?;
        files.insert(location, bytes);
    }
    tokio::task::spawn_blocking(move || inline_external_data(&onnx, &files))
        .await
        .map_err(blocking)?
        .map_err(refused)
}

#[async_trait::async_trait]
pub trait ModelSource: Send + Sync {
    fn describe(&self) -> String;
    async fn list(&self) -> Result<Vec<SourceModel>, ServeError>;
    async fn fetch(&self, name: &str, version: u64) -> Result<ModelFiles, ServeError>;
}
