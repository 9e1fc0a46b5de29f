//! The dataset-version view the server answers with and clients read back: one type for
//! both sides (the manifest stays JSON here; `data::Manifest` reads it).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One version of a dataset.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DatasetVersionInfo {
    pub name: String,
    /// SHA-256 of the manifest: the same content always gets the same version.
    pub version: String,
    pub created_ms: i64,
    pub rows: i64,
    pub bytes: i64,
    pub parent: Option<String>,
    /// Schema, shards, per-column statistics and lineage (kept as JSON so a client reads
    /// every field of a newer server's manifest).
    #[schema(value_type = Object)]
    pub manifest: serde_json::Value,
}

impl DatasetVersionInfo {
    /// The manifest as `T` reads it (`trainyard_data::Manifest`).
    pub fn manifest_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.manifest)
    }

    /// `NAME:VERSION`, the pinned reference jobs record.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }
}

/// A dataset with its newest version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DatasetInfo {
    pub name: String,
    pub versions: i64,
    pub latest: DatasetVersionInfo,
}

/// The answer to a commit.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedVersion {
    pub name: String,
    pub version: String,
    /// False when this exact content was already a version.
    pub created: bool,
}

/// Splits `NAME[:VERSION]` (no version: `latest`).
pub fn split_reference(reference: &str) -> (&str, &str) {
    reference.split_once(':').unwrap_or((reference, "latest"))
}
