use trainyard_store::StoreError;

/// What the datasets service refuses, and why. `api` maps each to one status and code.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A request field breaks a rule (a name, a digest, the manifest).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this (a job's token adding to someone else's dataset).
    #[error("{message}")]
    Forbidden { field: String, message: String },
    /// A committed manifest names a shard that was never uploaded.
    #[error("manifest.shards[{index}]: shard {sha256} was never uploaded (PUT /api/v1/datasets/shards/{sha256})")]
    ShardMissing { index: usize, sha256: String },
    /// A stored shard the shard format does not read (a version built from bytes that were
    /// never a shard).
    #[error("shard {sha256} cannot be read: {message}")]
    Unreadable { sha256: String, message: String },
    #[error("the body's SHA-256 is {actual}, the URL says {expected}")]
    ChecksumMismatch { actual: String, expected: String },
    #[error("the body is larger than {max} bytes")]
    TooLarge { max: u64 },
    /// Every upload slot stayed taken for the whole wait.
    #[error("as many shard uploads as the server takes at once are running; retry shortly")]
    UploadsBusy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DatasetError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}
