//! The dataset catalog: version rows in SQL, shards as content-addressed blobs. A version
//! row is written only after every shard it names is stored, so a version that can be
//! listed can always be read.

use bytes::Bytes;
use object_store::path::Path;
use object_store::ObjectStore;
use sqlx::Row;

use crate::{Blobs, Db, StoreError};

/// One stored version; `manifest` is the JSON document the data crate reads.
#[derive(Debug, Clone)]
pub struct DatasetVersion {
    pub name: String,
    pub version: String,
    pub created_ms: i64,
    pub rows: i64,
    pub bytes: i64,
    pub parent: Option<String>,
    pub manifest: String,
    /// The name of the token that made it (a user, or `job:<id>`); unknown for versions
    /// from before this was kept.
    pub created_by: Option<String>,
}

/// A dataset: its name, how many versions, and the newest one.
#[derive(Debug, Clone)]
pub struct DatasetSummary {
    pub name: String,
    pub versions: i64,
    pub latest: DatasetVersion,
}

const COLUMNS: &str =
    "name, version, created_ms, row_count, byte_count, parent, manifest, created_by";

fn version_from_row(row: &sqlx::any::AnyRow) -> Result<DatasetVersion, StoreError> {
    Ok(DatasetVersion {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        created_ms: row.try_get("created_ms")?,
        rows: row.try_get("row_count")?,
        bytes: row.try_get("byte_count")?,
        parent: row.try_get("parent")?,
        manifest: row.try_get("manifest")?,
        created_by: row.try_get("created_by")?,
    })
}

impl Db {
    /// Records a version; returns false when that exact version already exists (importing
    /// the same content twice is not an error and creates nothing new).
    pub async fn insert_dataset_version(
        &self,
        workspace: &str,
        v: &DatasetVersion,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(&format!(
            "INSERT INTO dataset_versions ({COLUMNS}, workspace_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(&v.name)
        .bind(&v.version)
        .bind(v.created_ms)
        .bind(v.rows)
        .bind(v.bytes)
        .bind(v.parent.as_deref())
        .bind(&v.manifest)
        .bind(v.created_by.as_deref())
        .bind(workspace)
        .execute(self.pool())
        .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if Db::is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Versions of `name` in `workspace`, newest first.
    pub async fn dataset_versions(
        &self,
        workspace: &str,
        name: &str,
    ) -> Result<Vec<DatasetVersion>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM dataset_versions WHERE name = $1 AND workspace_id = $2 \
             ORDER BY created_ms DESC, version"
        ))
        .bind(name)
        .bind(workspace)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    /// One version: `latest`, a full id, or a unique prefix of at least 6 characters.
    pub async fn dataset_version(
        &self,
        workspace: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<DatasetVersion>, StoreError> {
        let versions = self.dataset_versions(workspace, name).await?;
        if version == "latest" {
            return Ok(versions.into_iter().next());
        }
        if let Some(exact) = versions.iter().find(|v| v.version == version) {
            return Ok(Some(exact.clone()));
        }
        if version.len() < 6 {
            return Ok(None);
        }
        let mut matching = versions
            .into_iter()
            .filter(|v| v.version.starts_with(version));
        match (matching.next(), matching.next()) {
            (Some(one), None) => Ok(Some(one)),
            _ => Ok(None),
        }
    }

    /// Every dataset of `workspace` with its newest version, by name.
    pub async fn datasets(&self, workspace: &str) -> Result<Vec<DatasetSummary>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM dataset_versions WHERE workspace_id = $1 \
             ORDER BY name, created_ms DESC, version"
        ))
        .bind(workspace)
        .fetch_all(self.pool())
        .await?;
        let mut out: Vec<DatasetSummary> = Vec::new();
        for row in &rows {
            let v = version_from_row(row)?;
            match out.last_mut() {
                Some(last) if last.name == v.name => last.versions += 1,
                _ => out.push(DatasetSummary {
                    name: v.name.clone(),
                    versions: 1,
                    latest: v,
                }),
            }
        }
        Ok(out)
    }
}

impl Db {
    /// Records that `workspace` holds the shard `sha256` (it uploaded it, or a version of it
    /// names it).
    pub async fn record_shard(&self, workspace: &str, sha256: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO dataset_shards (workspace_id, sha256) VALUES ($1, $2) \
             ON CONFLICT (workspace_id, sha256) DO NOTHING",
        )
        .bind(workspace)
        .bind(sha256)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The shards `workspace` holds (uploaded, or named by its versions since shards were
    /// recorded).
    pub async fn workspace_shards(&self, workspace: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT sha256 FROM dataset_shards WHERE workspace_id = $1")
            .bind(workspace)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| Ok(r.try_get("sha256")?)).collect()
    }

    /// Whether `workspace` may read the shard `sha256`: it uploaded it, or one of its
    /// versions names it (versions from before shards were recorded are searched, and the
    /// answer recorded). `sha256` must be checked hex.
    pub async fn shard_visible(&self, workspace: &str, sha256: &str) -> Result<bool, StoreError> {
        let recorded = sqlx::query(
            "SELECT sha256 FROM dataset_shards WHERE workspace_id = $1 AND sha256 = $2",
        )
        .bind(workspace)
        .bind(sha256)
        .fetch_optional(self.pool())
        .await?
        .is_some();
        if recorded {
            return Ok(true);
        }
        let named = sqlx::query(
            "SELECT version FROM dataset_versions WHERE workspace_id = $1 AND manifest LIKE $2",
        )
        .bind(workspace)
        .bind(format!("%\"{sha256}\"%"))
        .fetch_optional(self.pool())
        .await?
        .is_some();
        if named {
            self.record_shard(workspace, sha256).await?;
        }
        Ok(named)
    }
}

fn shard_path(sha256: &str) -> Path {
    Path::from(format!("datasets/shards/{sha256}"))
}

/// Where shard uploads stream to before they are checked; a finished check renames them to
/// their content address, so a shard is visible only once whole and verified.
const SHARD_UPLOADS: &str = "datasets/uploads";

/// Staged uploads older than this are left over from a crash and removed at start. Uploads
/// in flight on another server sharing the store are younger.
const STALE_UPLOAD: std::time::Duration = std::time::Duration::from_secs(3600);

/// Why a staged upload was refused (nothing of it is left behind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageRefused {
    /// The body went past the size limit.
    TooLarge,
    /// The body ended with an error before its end (the client went away).
    CutOff(String),
}

/// A shard upload in its staging place, hashed as it streamed in.
pub struct StagedShard {
    location: Path,
    /// Lower-case hex SHA-256 of the whole body.
    pub sha256: String,
    pub size: u64,
    /// The body's first bytes, as many as the caller's `keep` asked for.
    pub start: Vec<u8>,
}

impl Blobs {
    /// Streams an upload into a staging object while hashing it, in bounded memory (the
    /// store's write buffer and the first bytes `keep` asks for: given what has arrived,
    /// it says how many to keep, `None` while it cannot tell yet). A body that fails
    /// midway or grows too large leaves nothing and gives `Ok(Err(why))`.
    pub async fn stage_shard<S, E>(
        &self,
        mut body: S,
        keep: impl Fn(&[u8]) -> Option<usize>,
        max_bytes: u64,
    ) -> Result<Result<StagedShard, StageRefused>, StoreError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        use futures::StreamExt;
        use sha2::Digest;
        use tokio::io::AsyncWriteExt;
        let location = Path::from(format!("{SHARD_UPLOADS}/{}", trainyard_core::new_id()));
        let mut writer =
            crate::blobs::bounded_writer(self.object_store().clone(), location.clone());
        let mut hasher = sha2::Sha256::new();
        let mut size = 0u64;
        let mut start = Vec::new();
        // What `keep` cannot judge yet (too few bytes to read a header length) is this many.
        const PEEK: usize = 64;
        let io = |e: std::io::Error| {
            StoreError::Blob(object_store::Error::Generic {
                store: "shards",
                source: Box::new(e),
            })
        };
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Ok(Err(StageRefused::CutOff(format!(
                        "the upload was cut off: {e}"
                    ))));
                }
            };
            size += chunk.len() as u64;
            if size > max_bytes {
                let _ = writer.abort().await;
                return Ok(Err(StageRefused::TooLarge));
            }
            hasher.update(&chunk);
            // Keep the body's start until `keep` is satisfied; what it wants can grow as
            // more arrives (a header length read from the first bytes).
            let mut used = 0;
            loop {
                let want = keep(&start).unwrap_or(PEEK);
                if start.len() >= want || used == chunk.len() {
                    break;
                }
                let take = (want - start.len()).min(chunk.len() - used);
                start.extend_from_slice(&chunk[used..used + take]);
                used += take;
            }
            if let Err(e) = writer.write_all(&chunk).await {
                let _ = writer.abort().await;
                return Err(io(e));
            }
        }
        writer.shutdown().await.map_err(io)?;
        Ok(Ok(StagedShard {
            location,
            sha256: hex::encode(hasher.finalize()),
            size,
            start,
        }))
    }

    /// Makes a checked upload the shard of its checksum (a rename: atomic on a folder).
    pub async fn commit_shard(&self, staged: StagedShard) -> Result<(), StoreError> {
        let target = shard_path(&staged.sha256);
        self.object_store()
            .rename(&staged.location, &target)
            .await?;
        Ok(())
    }

    /// Drops an upload that failed its checks.
    pub async fn discard_shard(&self, staged: StagedShard) -> Result<(), StoreError> {
        match self.object_store().delete(&staged.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes staged uploads a crash left behind (older than an hour); returns how many.
    pub async fn sweep_stale_shard_uploads(&self) -> Result<usize, StoreError> {
        use futures::TryStreamExt;
        let prefix = Path::from(SHARD_UPLOADS);
        let stale: Vec<_> = self
            .object_store()
            .list(Some(&prefix))
            .try_filter(|m| {
                let age_ms = trainyard_core::time::now_ms() - m.last_modified.timestamp_millis();
                futures::future::ready(age_ms > STALE_UPLOAD.as_millis() as i64)
            })
            .try_collect()
            .await?;
        for meta in &stale {
            match self.object_store().delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(stale.len())
    }

    pub async fn get_shard(&self, sha256: &str) -> Result<Option<Bytes>, StoreError> {
        if self.reaches_through_link(&shard_path(sha256)) {
            return Ok(None);
        }
        match self.object_store().get(&shard_path(sha256)).await {
            Ok(got) => Ok(Some(got.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A stored shard's first bytes and its size, without the rest: `keep` says how many it
    /// needs given what was read (`None` while it cannot tell), as for
    /// [`stage_shard`](Self::stage_shard). One ranged read covers a small header; a longer
    /// one takes a second. `None` when the shard is not there.
    pub async fn shard_start(
        &self,
        sha256: &str,
        keep: impl Fn(&[u8]) -> Option<usize>,
    ) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        /// What is read before `keep` can tell: most headers are shorter.
        const FIRST: u64 = 16 << 10;
        let location = shard_path(sha256);
        if self.reaches_through_link(&location) {
            return Ok(None);
        }
        let size = match self.object_store().head(&location).await {
            Ok(meta) => meta.size,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut start = Vec::new();
        loop {
            let want = keep(&start).map_or(FIRST, |n| n as u64).min(size);
            let have = start.len() as u64;
            if have >= want {
                break;
            }
            let got = match self.object_store().get_range(&location, have..want).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            if got.is_empty() {
                break;
            }
            start.extend_from_slice(&got);
        }
        Ok(Some((start, size)))
    }

    /// A stored shard's size in bytes, if it is there.
    pub async fn shard_size(&self, sha256: &str) -> Result<Option<u64>, StoreError> {
        match self.object_store().head(&shard_path(sha256)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn has_shard(&self, sha256: &str) -> Result<bool, StoreError> {
        match self.object_store().head(&shard_path(sha256)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use crate::{Blobs, StageRefused};

    /// The layout rule of a shard, as `data::shard::layout_prefix_len` has it: 12 bytes, then
    /// a header whose length the last 4 of them give.
    fn header_len(start: &[u8]) -> Option<usize> {
        Some(12 + u32::from_le_bytes(start.get(8..12)?.try_into().ok()?) as usize)
    }

    #[tokio::test]
    async fn uploads_in_tiny_chunks_keep_exactly_their_header_and_hash_whole() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(&format!("file://{}", dir.path().display()))
            .await
            .unwrap();
        let mut body = b"TYSHARD1".to_vec();
        body.extend_from_slice(&100u32.to_le_bytes());
        body.extend(std::iter::repeat_n(b'h', 100));
        body.extend(std::iter::repeat_n(b'd', 5000));
        let chunks: Vec<Result<Bytes, std::io::Error>> = body
            .chunks(7)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let staged = blobs
            .stage_shard(futures::stream::iter(chunks), header_len, 1 << 20)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(staged.size, body.len() as u64);
        assert!(staged.start.len() >= 112 && staged.start.len() < 112 + 64);
        assert_eq!(&staged.start[..112], &body[..112]);
        use sha2::Digest;
        assert_eq!(staged.sha256, hex::encode(sha2::Sha256::digest(&body)));
        // Over the limit: refused, nothing kept.
        let big = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(body.clone()))]);
        let refused = blobs.stage_shard(big, header_len, 100).await.unwrap();
        assert_eq!(refused.err(), Some(StageRefused::TooLarge));
        blobs.discard_shard(staged).await.unwrap();
        let left = std::fs::read_dir(dir.path().join("datasets/uploads")).map(|d| d.count());
        assert_eq!(left.unwrap_or(0), 0);
    }

    /// A commit reads a stored shard's header only: what `keep` asks for, in at most two
    /// ranged reads, however long the shard.
    #[tokio::test]
    async fn a_shards_start_is_read_without_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(&format!("file://{}", dir.path().display()))
            .await
            .unwrap();
        let store = |body: Vec<u8>| {
            let blobs = blobs.clone();
            async move {
                let chunks = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(body))]);
                let staged = blobs
                    .stage_shard(chunks, header_len, 1 << 30)
                    .await
                    .unwrap()
                    .unwrap();
                let sha = staged.sha256.clone();
                blobs.commit_shard(staged).await.unwrap();
                sha
            }
        };
        for header in [100usize, 40_000] {
            let mut body = b"TYSHARD1".to_vec();
            body.extend_from_slice(&(header as u32).to_le_bytes());
            body.extend(std::iter::repeat_n(b'h', header));
            body.extend(std::iter::repeat_n(b'd', 100_000));
            let sha = store(body.clone()).await;
            let (start, size) = blobs.shard_start(&sha, header_len).await.unwrap().unwrap();
            assert_eq!(size, body.len() as u64);
            assert_eq!(&start[..12 + header], &body[..12 + header], "{header}");
            assert!(
                start.len() <= (12 + header).max(16 << 10),
                "{}",
                start.len()
            );
        }
        // Shorter than what `keep` asks for: what there is.
        let sha = store(b"TYSHARD1\xff\xff\x00\x00".to_vec()).await;
        let (start, size) = blobs.shard_start(&sha, header_len).await.unwrap().unwrap();
        assert_eq!((start.len(), size), (12, 12));
        assert!(blobs
            .shard_start(&"0".repeat(64), header_len)
            .await
            .unwrap()
            .is_none());
    }
}
