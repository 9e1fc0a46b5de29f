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

impl Blobs {
    /// Opens the store and proves it is usable by writing and reading back a marker.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let inner: Arc<dyn ObjectStore> = if let Some(dir) = url.strip_prefix("file://") {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::BlobsUnreachable {
                url: url.into(),
                message: format!("cannot create {dir}: {e}"),
            })?;
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
        };
        blobs.check_writable().await?;
        Ok(blobs)
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
