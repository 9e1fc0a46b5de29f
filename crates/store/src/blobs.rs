//! Blobs: job logs now, datasets, checkpoints and models later. One `ObjectStore` behind
//! a URL: `file:///abs/dir` (a local folder) or `s3://bucket/prefix` (any S3 API).

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, PutPayload, RetryConfig};

use crate::StoreError;

#[derive(Clone)]
pub struct Blobs {
    inner: Arc<dyn ObjectStore>,
    url: String,
    /// The folder behind a `file://` store. Jobs may be able to write into it (when they run
    /// as the server's own user), so what is served from it must never follow a symbolic
    /// link out of it: see [`Blobs::local_children`] and [`Blobs::reaches_through_link`].
    local_root: Option<std::path::PathBuf>,
}

/// A child of a folder in a local store, read without following links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEntry {
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
}

/// object_store's local backend writes `NAME#N` while an upload is in flight and renames it
/// at the end; a crash in between leaves the temporary file behind.
fn is_staged_upload(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// One piece of a job's log, named by the byte offset where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub offset: u64,
    pub size: u64,
    location: Path,
}

impl LogChunk {
    pub fn end(&self) -> u64 {
        self.offset + self.size
    }
}

/// Where the shipped part of a log ends (chunks may overlap after a re-ship).
pub fn log_end(chunks: &[LogChunk]) -> u64 {
    chunks.iter().map(LogChunk::end).max().unwrap_or(0)
}

/// A streaming writer into the blob store whose memory stays bounded: object_store's
/// default (10 MiB parts, 8 in flight) holds up to ~90 MiB per upload when the store is
/// slower than the client; 5 MiB parts (S3's smallest) with 2 in flight hold ~15 MiB.
pub fn bounded_writer(
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    location: object_store::path::Path,
) -> object_store::buffered::BufWriter {
    object_store::buffered::BufWriter::with_capacity(store, location, 5 << 20)
        .with_max_concurrency(2)
}

impl Blobs {
    /// Opens the store and proves it is usable by writing and reading back a marker.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let mut local_root = None;
        let inner: Arc<dyn ObjectStore> = if let Some(dir) = url.strip_prefix("file://") {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::BlobsUnreachable {
                url: url.into(),
                message: format!("cannot create {dir}: {e}"),
            })?;
            local_root =
                Some(
                    std::fs::canonicalize(dir).map_err(|e| StoreError::BlobsUnreachable {
                        url: url.into(),
                        message: format!("cannot resolve {dir}: {e}"),
                    })?,
                );
            Arc::new(LocalFileSystem::new_with_prefix(dir).map_err(|e| {
                StoreError::BlobsUnreachable {
                    url: url.into(),
                    message: e.to_string(),
                }
            })?)
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(StoreError::BadUrl {
                    what: "blobs",
                    url: url.into(),
                    message: "name a bucket: s3://BUCKET/PREFIX".into(),
                });
            }
            // Bounded retries: a store that is down must fail start-up in seconds, not minutes.
            let retry = RetryConfig {
                max_retries: 3,
                retry_timeout: std::time::Duration::from_secs(15),
                ..Default::default()
            };
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry);
            let endpoint = std::env::var("AWS_ENDPOINT_URL")
                .or_else(|_| std::env::var("AWS_ENDPOINT"))
                .ok();
            if let Some(endpoint) = endpoint {
                // A custom endpoint (MinIO, Garage, moto…) usually speaks plain HTTP on a LAN
                // and wants path-style addressing.
                builder = builder
                    .with_endpoint(&endpoint)
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_virtual_hosted_style_request(false);
            }
            if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err()
            {
                builder = builder.with_region("us-east-1");
            }
            let s3 = builder.build().map_err(|e| StoreError::BlobsUnreachable {
                url: url.into(),
                message: e.to_string(),
            })?;
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(PrefixStore::new(s3, prefix))
            }
        } else {
            return Err(StoreError::BadUrl {
                what: "blobs",
                url: url.into(),
                message: "use file:///ABSOLUTE/DIR or s3://BUCKET/PREFIX".into(),
            });
        };
        let blobs = Self {
            inner,
            url: url.to_string(),
            local_root,
        };
        blobs.check_writable().await?;
        Ok(blobs)
    }

    /// Removes the temporary files uploads cut off by a crash left in a local store (an
    /// upload in flight writes `NAME#N` and renames it when complete; `kill -9` in between
    /// leaves a file nothing lists and nothing deletes). Call at start, before uploads are
    /// taken. Returns how many were removed. Links are not followed.
    pub fn sweep_staged_uploads(&self) -> std::io::Result<usize> {
        let Some(root) = &self.local_root else {
            return Ok(0);
        };
        let mut removed = 0;
        let mut pending = vec![root.clone()];
        while let Some(dir) = pending.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    pending.push(entry.path());
                } else if kind.is_file() && is_staged_upload(&entry.file_name().to_string_lossy()) {
                    match std::fs::remove_file(entry.path()) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(removed)
    }

    /// The file or folder behind `location` in a local store.
    fn local_path(&self, location: &Path) -> Option<std::path::PathBuf> {
        let mut path = self.local_root.clone()?;
        for part in location.parts() {
            path.push(part.as_ref());
        }
        Some(path)
    }

    /// Whether `location`, or a folder on the way to it, is a symbolic link (or otherwise
    /// not a plain file or folder) in a local store. Such a location is treated as absent:
    /// serving it would follow the link wherever it points. Always false for S3.
    pub fn reaches_through_link(&self, location: &Path) -> bool {
        let Some(mut path) = self.local_root.clone() else {
            return false;
        };
        for part in location.parts() {
            path.push(part.as_ref());
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_symlink() => return true,
                Ok(meta) if !meta.is_dir() && !meta.is_file() => return true,
                Ok(_) => {}
                // Absent from here on: nothing to follow.
                Err(_) => return false,
            }
        }
        false
    }

    /// The children of a folder of a local store, read without following links: links,
    /// sockets and the like are left out, and a folder reached through a link has none.
    /// `None` for S3, whose listings hold no links. A missing folder has no children.
    pub async fn local_children(
        &self,
        prefix: &Path,
    ) -> Option<Result<Vec<LocalEntry>, StoreError>> {
        let dir = self.local_path(prefix)?;
        if self.reaches_through_link(prefix) {
            return Some(Ok(Vec::new()));
        }
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<LocalEntry>> {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                    ) =>
                {
                    return Ok(Vec::new())
                }
                Err(e) => return Err(e),
            };
            let mut out = Vec::new();
            for entry in entries {
                let entry = entry?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                // `DirEntry::file_type` does not follow links.
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    out.push(LocalEntry {
                        name,
                        is_dir: true,
                        size: 0,
                    });
                } else if kind.is_file() && !is_staged_upload(&name) {
                    // Removed since the directory was read: not there.
                    let size = match entry.metadata() {
                        Ok(m) => m.len(),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    };
                    out.push(LocalEntry {
                        name,
                        is_dir: false,
                        size,
                    });
                }
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await;
        Some(match read {
            Ok(Ok(entries)) => Ok(entries),
            Ok(Err(e)) => Err(StoreError::Blob(object_store::Error::Generic {
                store: "local",
                source: Box::new(e),
            })),
            Err(e) => Err(StoreError::Blob(object_store::Error::Generic {
                store: "local",
                source: Box::new(e),
            })),
        })
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        let marker = Path::from("_trainyard/marker");
        let unreachable = |e: object_store::Error| StoreError::BlobsUnreachable {
            url: self.url.clone(),
            message: e.to_string(),
        };
        self.inner
            .put(&marker, PutPayload::from_static(b"trainyard"))
            .await
            .map_err(unreachable)?;
        self.inner.head(&marker).await.map_err(unreachable)?;
        Ok(())
    }

    /// The store itself, for layers that keep their own trees in it (run artifacts under
    /// `artifacts/`); job logs stay behind the methods below.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// Whether the store answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.inner.head(&Path::from("_trainyard/marker")).await?;
        Ok(())
    }

    /// Deletes every object of a removed job (its log chunks and anything else under
    /// `jobs/<id>/`).
    pub async fn remove_job_files(&self, job_id: &str) -> Result<(), StoreError> {
        self.delete_below(&Path::from(format!("jobs/{job_id}")))
            .await
    }

    /// Bytes a job keeps in the store (its log chunks and anything else under `jobs/<id>/`).
    pub async fn job_bytes(&self, job_id: &str) -> Result<u64, StoreError> {
        self.bytes_below(&Path::from(format!("jobs/{job_id}")))
            .await
    }

    /// The bytes of every object below `prefix`.
    pub async fn bytes_below(&self, prefix: &Path) -> Result<u64, StoreError> {
        use futures::TryStreamExt;
        let under: Vec<_> = self.inner.list(Some(prefix)).try_collect().await?;
        Ok(under.iter().fold(0u64, |sum, m| sum.saturating_add(m.size)))
    }

    /// Deletes a dataset shard that nothing holds any more.
    pub async fn remove_shard(&self, sha256: &str) -> Result<(), StoreError> {
        match self
            .inner
            .delete(&Path::from(format!("datasets/shards/{sha256}")))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes every object below `prefix` (one already gone is no error).
    pub async fn delete_below(&self, prefix: &Path) -> Result<(), StoreError> {
        use futures::TryStreamExt;
        let under: Vec<_> = self.inner.list(Some(prefix)).try_collect().await?;
        for meta in under {
            match self.inner.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn log_prefix(job_id: &str) -> Path {
        Path::from(format!("jobs/{job_id}/log"))
    }

    /// Stores bytes `offset..offset+len` of a job's log. Rewriting the same chunk (after a
    /// crash between upload and bookkeeping) writes the same bytes again: harmless.
    pub async fn put_log_chunk(
        &self,
        job_id: &str,
        offset: u64,
        data: Bytes,
    ) -> Result<(), StoreError> {
        let location = Path::from(format!("jobs/{job_id}/log/{offset:020}"));
        self.inner.put(&location, PutPayload::from(data)).await?;
        Ok(())
    }

    /// The job's log chunks in order. Chunks are contiguous by construction.
    pub async fn log_chunks(&self, job_id: &str) -> Result<Vec<LogChunk>, StoreError> {
        let prefix = Self::log_prefix(job_id);
        let metas: Vec<_> = self.inner.list(Some(&prefix)).try_collect().await?;
        let mut chunks: Vec<LogChunk> = metas
            .into_iter()
            .filter_map(|meta| {
                let offset = meta.location.filename()?.parse::<u64>().ok()?;
                Some(LogChunk {
                    offset,
                    size: meta.size,
                    location: meta.location,
                })
            })
            .collect();
        chunks.sort_by_key(|c| c.offset);
        Ok(chunks)
    }

    /// Bytes `range` (relative to the chunk's start) of one chunk.
    pub async fn read_log_chunk(
        &self,
        chunk: &LogChunk,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        Ok(self.inner.get_range(&chunk.location, range).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn links_in_a_local_store_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s3cr3t").unwrap();
        let blobs = Blobs::open(&format!("file://{}", dir.path().display()))
            .await
            .unwrap();
        let root = dir.path().join("a");
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::fs::write(root.join("real/f.txt"), b"ok").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("passwd")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("outdir")).unwrap();
        std::os::unix::fs::symlink(root.join("loop"), root.join("loop")).unwrap();
        let children = blobs
            .local_children(&Path::from("a"))
            .await
            .unwrap()
            .unwrap();
        let names: Vec<_> = children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["real"]);
        assert!(blobs.reaches_through_link(&Path::from("a/passwd")));
        assert!(blobs.reaches_through_link(&Path::from("a/outdir/secret")));
        assert!(blobs.reaches_through_link(&Path::from("a/loop")));
        assert!(!blobs.reaches_through_link(&Path::from("a/real/f.txt")));
        assert!(!blobs.reaches_through_link(&Path::from("a/absent/x")));
        let through = blobs.local_children(&Path::from("a/outdir")).await.unwrap();
        assert!(through.unwrap().is_empty());
    }

    #[tokio::test]
    async fn staged_uploads_left_by_a_crash_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(&format!("file://{}", dir.path().display()))
            .await
            .unwrap();
        std::fs::create_dir_all(dir.path().join("x/y")).unwrap();
        std::fs::write(dir.path().join("x/y/shard#3"), b"partial").unwrap();
        std::fs::write(dir.path().join("x/y/kept#name"), b"a real file").unwrap();
        std::fs::write(dir.path().join("x/done"), b"whole").unwrap();
        assert_eq!(blobs.sweep_staged_uploads().unwrap(), 1);
        assert!(!dir.path().join("x/y/shard#3").exists());
        assert!(dir.path().join("x/y/kept#name").exists());
        assert!(dir.path().join("x/done").exists());
    }

    #[tokio::test]
    async fn log_chunks_round_trip_in_offset_order() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(&format!("file://{}", dir.path().display()))
            .await
            .unwrap();
        blobs
            .put_log_chunk("j1", 5, Bytes::from_static(b"world"))
            .await
            .unwrap();
        blobs
            .put_log_chunk("j1", 0, Bytes::from_static(b"hello"))
            .await
            .unwrap();
        blobs
            .put_log_chunk("j2", 0, Bytes::from_static(b"other"))
            .await
            .unwrap();
        let chunks = blobs.log_chunks("j1").await.unwrap();
        assert_eq!(
            chunks
                .iter()
                .map(|c| (c.offset, c.size))
                .collect::<Vec<_>>(),
            vec![(0, 5), (5, 5)]
        );
        assert_eq!(
            &blobs.read_log_chunk(&chunks[1], 1..4).await.unwrap()[..],
            b"orl"
        );
    }

    #[tokio::test]
    async fn unknown_schemes_are_refused() {
        let err = Blobs::open("ftp://x").await.err().unwrap();
        assert!(err.to_string().contains("unsupported blobs URL"), "{err}");
    }
}
