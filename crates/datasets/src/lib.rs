//! The datasets service: the one owner of dataset names, manifest checks, the two-phase
//! commit (shards first, each under its SHA-256; then a manifest naming them) and reads.
//! `api` handlers call it and only translate HTTP; clients share its version type.
//!
//! The commit order is the guarantee: a version row is written only after every shard it
//! names is stored, so a version that can be listed can always be read.

mod error;
pub mod rules;
mod version;

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use trainyard_data::{Manifest, Table};
use trainyard_store::{Blobs, DatasetVersion, Db};

pub use error::DatasetError;
pub use trainyard_core::dataset::{
    split_reference, CreatedVersion, DatasetInfo, DatasetVersionInfo,
};
/// The rows [`Datasets::head`] returns, in the data crate's types.
pub use trainyard_data::{Column, Field};

/// Most rows [`Datasets::head`] returns.
pub const MAX_HEAD_ROWS: usize = 100;

/// Largest shard upload.
pub const MAX_SHARD_BYTES: u64 = 512 << 20;
/// Shard uploads that stream at once; more wait their turn.
pub const UPLOAD_SLOTS: usize = 4;
/// How long an upload waits for a slot before it is told to retry.
pub const UPLOAD_SLOT_WAIT: Duration = Duration::from_secs(30);

/// Who asks, as far as datasets care: the token's name, and whether it is a job's.
#[derive(Debug, Clone)]
pub struct Caller<'a> {
    pub name: &'a str,
    pub is_job: bool,
}

/// The datasets service over the metadata database and the blob store, acting in one
/// workspace: its dataset names, and the shards it uploaded or its versions name. Shards
/// are stored once whatever workspace uploads them.
#[derive(Clone)]
pub struct Datasets {
    db: Db,
    blobs: Blobs,
    uploads: std::sync::Arc<Semaphore>,
    workspace: std::sync::Arc<str>,
}

impl Datasets {
    /// The service acting in `default`.
    pub fn new(db: Db, blobs: Blobs) -> Self {
        Self {
            db,
            blobs,
            uploads: std::sync::Arc::new(Semaphore::new(UPLOAD_SLOTS)),
            workspace: trainyard_core::DEFAULT_WORKSPACE.into(),
        }
    }

    /// The same service acting in `workspace` (upload slots are shared).
    pub fn scoped(&self, workspace: &str) -> Self {
        let mut scoped = self.clone();
        scoped.workspace = workspace.into();
        scoped
    }

    /// Every dataset with its newest version.
    pub async fn list(&self) -> Result<Vec<DatasetInfo>, DatasetError> {
        self.db
            .datasets(&self.workspace)
            .await?
            .into_iter()
            .map(|s| {
                Ok(DatasetInfo {
                    name: s.name,
                    versions: s.versions,
                    latest: version::from_row(s.latest)?,
                })
            })
            .collect()
    }

    /// Every version of `name`, newest first; `NotFound` when it has none.
    pub async fn versions(&self, name: &str) -> Result<Vec<DatasetVersionInfo>, DatasetError> {
        let versions = self.db.dataset_versions(&self.workspace, name).await?;
        if versions.is_empty() {
            return Err(DatasetError::NotFound(format!("no dataset `{name}`")));
        }
        versions.into_iter().map(version::from_row).collect()
    }

    /// One version: `latest`, a version id, or a unique prefix of 6+ characters.
    pub async fn version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<DatasetVersionInfo, DatasetError> {
        let found = self
            .db
            .dataset_version(&self.workspace, name, version)
            .await?
            .ok_or_else(|| {
                DatasetError::NotFound(format!("no version `{version}` of dataset `{name}`"))
            })?;
        version::from_row(found)
    }

    /// Commits a manifest as a version of `name` once every shard it names is stored and
    /// agrees with it (rows, bytes, columns, read from each shard's header). The same
    /// content twice is the same version (`created` false), not an error.
    pub async fn commit(
        &self,
        caller: &Caller<'_>,
        name: &str,
        manifest: serde_json::Value,
    ) -> Result<CreatedVersion, DatasetError> {
        rules::check_name(name)?;
        // A job's token adds versions only to datasets it created: otherwise a job could
        // make its own data the `latest` version that other people's training reads.
        if caller.is_job {
            let existing = self.db.dataset_versions(&self.workspace, name).await?;
            if existing
                .iter()
                .any(|v| v.created_by.as_deref() != Some(caller.name))
            {
                return Err(DatasetError::Forbidden {
                    field: "name".into(),
                    message: format!(
                        "a job's token adds versions only to datasets it created; `{name}` was \
                         made by someone else (write the job's output under a new name)"
                    ),
                });
            }
        }
        let manifest: Manifest = serde_json::from_value(manifest).map_err(|e| {
            DatasetError::invalid("manifest", format!("not a dataset manifest: {e}"))
        })?;
        rules::check_manifest(&manifest)?;
        // Only shards this workspace holds: naming another's hash reaches nothing. Each
        // named shard's header (not its data) is read once and the manifest held to it, so
        // a version never promises rows or columns its shards do not have. A shard may be
        // named more than once: equal content cut into shards gives equal shards.
        let mut layouts = std::collections::HashMap::new();
        for (index, shard) in manifest.shards.iter().enumerate() {
            if !layouts.contains_key(shard.sha256.as_str()) {
                let missing = || DatasetError::ShardMissing {
                    index,
                    sha256: shard.sha256.clone(),
                };
                if !self
                    .db
                    .shard_visible(&self.workspace, &shard.sha256)
                    .await?
                {
                    return Err(missing());
                }
                let (start, size) = self
                    .blobs
                    .shard_start(&shard.sha256, trainyard_data::shard::layout_prefix_len)
                    .await?
                    .ok_or_else(missing)?;
                let layout = trainyard_data::shard::check_layout(&start, size).map_err(|e| {
                    DatasetError::Unreadable {
                        sha256: shard.sha256.clone(),
                        message: e.to_string(),
                    }
                })?;
                layouts.insert(shard.sha256.as_str(), (layout, size));
            }
            let (layout, size) = &layouts[shard.sha256.as_str()];
            rules::check_shard(index, shard, layout, *size, &manifest.schema)?;
        }
        let version = manifest.version_id();
        // `check_manifest` bounded rows and bytes to i64.
        let row = DatasetVersion {
            name: name.to_string(),
            version: version.clone(),
            created_ms: trainyard_core::time::now_ms(),
            rows: manifest.rows as i64,
            bytes: manifest.shards.iter().map(|s| s.bytes as i64).sum(),
            parent: manifest.lineage.parent.clone(),
            manifest: serde_json::to_string(&manifest)
                .map_err(|e| DatasetError::invalid("manifest", e.to_string()))?,
            created_by: Some(caller.name.to_string()),
        };
        let created = self
            .db
            .insert_dataset_version(&self.workspace, &row)
            .await?;
        Ok(CreatedVersion {
            name: name.to_string(),
            version,
            created,
        })
    }

    /// Stores an uploaded shard under `sha256`: the body streams to a staging object while
    /// hashed (bounded memory), its layout is checked from its header and length, and only
    /// then is it renamed to its address. Nothing is left behind by a refused upload.
    pub async fn put_shard<S, E>(&self, sha256: &str, body: S) -> Result<(), DatasetError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        rules::check_sha(sha256)?;
        let _slot = tokio::time::timeout(UPLOAD_SLOT_WAIT, self.uploads.acquire())
            .await
            .map_err(|_| DatasetError::UploadsBusy)?
            .map_err(|_| DatasetError::UploadsBusy)?;
        let staged = self
            .blobs
            .stage_shard(
                body,
                trainyard_data::shard::layout_prefix_len,
                MAX_SHARD_BYTES,
            )
            .await?;
        let staged = match staged {
            Ok(staged) => staged,
            Err(trainyard_store::StageRefused::TooLarge) => {
                return Err(DatasetError::TooLarge {
                    max: MAX_SHARD_BYTES,
                })
            }
            Err(trainyard_store::StageRefused::CutOff(why)) => {
                return Err(DatasetError::invalid("body", why))
            }
        };
        if staged.sha256 != sha256 {
            let actual = staged.sha256.clone();
            self.blobs.discard_shard(staged).await?;
            return Err(DatasetError::ChecksumMismatch {
                actual,
                expected: sha256.to_string(),
            });
        }
        if let Err(e) = trainyard_data::shard::check_layout(&staged.start, staged.size) {
            self.blobs.discard_shard(staged).await?;
            return Err(DatasetError::invalid(
                "body",
                format!("not a dataset shard: {e}"),
            ));
        }
        self.blobs.commit_shard(staged).await?;
        self.db.record_shard(&self.workspace, sha256).await?;
        Ok(())
    }

    /// Bytes of the shards this workspace holds (a shard two workspaces hold counts for
    /// each: it is what each would keep alone).
    pub async fn stored_bytes(&self) -> Result<u64, DatasetError> {
        let mut total = 0u64;
        for sha in self.db.workspace_shards(&self.workspace).await? {
            total = total.saturating_add(self.blobs.shard_size(&sha).await?.unwrap_or(0));
        }
        Ok(total)
    }

    /// Whether a shard is stored, without reading it (clients ask before uploading).
    pub async fn has_shard(&self, sha256: &str) -> Result<bool, DatasetError> {
        rules::check_sha(sha256)?;
        Ok(self.db.shard_visible(&self.workspace, sha256).await?
            && self.blobs.has_shard(sha256).await?)
    }

    /// The first `rows` rows of a version (at most [`MAX_HEAD_ROWS`]), read shard by shard
    /// in the manifest's order: what a preview shows.
    pub async fn head(
        &self,
        name: &str,
        version: &str,
        rows: usize,
    ) -> Result<(DatasetVersionInfo, Table), DatasetError> {
        if !(1..=MAX_HEAD_ROWS).contains(&rows) {
            return Err(DatasetError::invalid(
                "rows",
                format!("between 1 and {MAX_HEAD_ROWS}"),
            ));
        }
        let info = self.version(name, version).await?;
        let manifest: Manifest = info.manifest_as().map_err(|e| {
            DatasetError::Store(trainyard_store::StoreError::Corrupt {
                what: format!("the manifest of {}", info.reference()),
                message: e.to_string(),
            })
        })?;
        let mut table = Table::empty(&manifest.schema);
        for shard in &manifest.shards {
            if table.rows() >= rows {
                break;
            }
            let bytes = self.get_shard(&shard.sha256).await?;
            let unreadable = |e: trainyard_data::DataError| DatasetError::Unreadable {
                sha256: shard.sha256.clone(),
                message: e.to_string(),
            };
            let part = trainyard_data::shard::decode(&bytes).map_err(unreadable)?;
            let part = part.slice(0, part.rows().min(rows - table.rows()));
            table.append(&part).map_err(unreadable)?;
        }
        Ok((info, table))
    }

    pub async fn get_shard(&self, sha256: &str) -> Result<Bytes, DatasetError> {
        rules::check_sha(sha256)?;
        if !self.db.shard_visible(&self.workspace, sha256).await? {
            return Err(DatasetError::NotFound(format!("no shard {sha256}")));
        }
        self.blobs
            .get_shard(sha256)
            .await?
            .ok_or_else(|| DatasetError::NotFound(format!("no shard {sha256}")))
    }
}
