//! Where models come from: a Triton-style repository folder, or the model registry.

mod folder;
mod registry;

pub use folder::RepositoryFolder;
pub use registry::RegistrySource;

use crate::config::ModelConfig;
use crate::ServeError;

/// A model a source can serve, with the versions it has.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceModel {
    pub name: String,
    /// Ascending.
    pub versions: Vec<u64>,
    /// What a request without a version gets (the registry's `production` alias, else the
    /// highest version). Meaningless when `versions` is empty.
    pub default_version: u64,
    /// Versions the source has but cannot serve, with why (an unreadable or unresolvable
    /// location): listed as unavailable, never a reason to fail the whole listing.
    pub unservable: Vec<(u64, String)>,
}

/// A version's files, ready for a runtime.
pub struct ModelFiles {
    pub onnx: Vec<u8>,
    pub config: ModelConfig,
    /// Where they came from, for messages.
    pub origin: String,
}

#[async_trait::async_trait]
pub trait ModelSource: Send + Sync {
    fn describe(&self) -> String;
    async fn list(&self) -> Result<Vec<SourceModel>, ServeError>;
    async fn fetch(&self, name: &str, version: u64) -> Result<ModelFiles, ServeError>;
}
