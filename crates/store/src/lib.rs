//! Durable state of Trainyard: metadata in SQL (SQLite by default, PostgreSQL to scale out)
//! and blobs in an object store (a local folder by default, S3 to scale out).

mod access_revision;
mod audit;
mod blobs;
mod datasets;
mod db;
mod error;
mod jobs;
mod lease;
mod optuna;
mod secrets;
mod studies;
mod tokens;
mod users;
mod workspaces;

pub use audit::AuditFilter;
pub use blobs::{bounded_writer, log_end, Blobs, LocalEntry, LogChunk};
pub use datasets::{DatasetSummary, DatasetVersion, StageRefused, StagedShard};
pub use db::Db;
pub use error::{redact_url, StoreError};
pub use jobs::{JobFilter, Outcome};
pub use lease::{Fence, LeaseHolder};
pub use optuna::{OptunaStudyRow, OptunaTrialRow, StudyColumn};
pub use secrets::{SecretKey, SecretKeyError, MAX_SECRET_BYTES};
pub use studies::{StudyRow, TrialCounts, TrialRow};
pub use tokens::{generate_token, hash_token, Holder, NewToken, TokenGrant};
pub use users::{hash_password, verify_password, MemberChange, UserRow, PASSWORD_LENGTH};
pub use workspaces::{RemovedContent, WorkspaceRemoval, WorkspaceRow};

/// Metadata and blobs together: what every other layer is handed.
#[derive(Clone)]
pub struct Store {
    pub db: Db,
    pub blobs: Blobs,
}

impl Store {
    /// Connects to both, runs migrations, and checks that both answer.
    pub async fn open(database_url: &str, blobs_url: &str) -> Result<Self, StoreError> {
        let db = Db::connect(database_url).await?;
        let blobs = Blobs::open(blobs_url).await?;
        Ok(Self { db, blobs })
    }
}
