//! The data crate's shard traits over the server's REST API, for the CLI and for task
//! processes. The data crate is synchronous (its loader runs on plain threads); each call
//! here blocks on the async HTTP client through the runtime's handle. Shards read are kept
//! in a local cache folder, so later epochs read disk, not the network.

use std::path::PathBuf;

use anyhow::Context;
use reqwest::Method;
use serde::Deserialize;
use trainyard_data::{DataError, DirStore, Manifest, ShardSink, ShardSource};

use crate::client::Client;

/// Shards on the server: `put` uploads (skipping ones already there), `get` downloads
/// through a cache.
pub struct RemoteShards {
    client: Client,
    runtime: tokio::runtime::Handle,
    cache: Option<DirStore>,
    /// Bytes actually sent by `put`.
    pub uploaded_bytes: u64,
}

impl RemoteShards {
    pub fn new(client: Client, cache: Option<PathBuf>) -> anyhow::Result<Self> {
        if let Some(dir) = &cache {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the shard cache {}", dir.display()))?;
        }
        Ok(Self {
            client,
            runtime: tokio::runtime::Handle::current(),
            cache: cache.map(DirStore::new),
            uploaded_bytes: 0,
        })
    }
}

fn remote(e: anyhow::Error) -> DataError {
    DataError::Io {
        path: "server".into(),
        source: std::io::Error::other(format!("{e:#}")),
    }
}

impl ShardSink for RemoteShards {
    fn put(&mut self, sha256: &str, bytes: Vec<u8>) -> Result<(), DataError> {
        let path = format!("/api/v1/datasets/shards/{sha256}");
        let client = self.client.clone();
        let len = bytes.len() as u64;
        let sent = self
            .runtime
            .block_on(async move {
                let head = client.request(Method::HEAD, &path).send().await?;
                if head.status().is_success() {
                    return Ok(false);
                }
                client
                    .send(client.request(Method::PUT, &path).body(bytes))
                    .await?;
                anyhow::Ok(true)
            })
            .map_err(remote)?;
        if sent {
            self.uploaded_bytes += len;
        }
        Ok(())
    }
}

impl ShardSource for RemoteShards {
    fn get(&self, sha256: &str) -> Result<Vec<u8>, DataError> {
        if let Some(cache) = &self.cache {
            if let Ok(bytes) = cache.get(sha256) {
                if trainyard_data::sha256_hex(&bytes) == sha256 {
                    return Ok(bytes);
                }
            }
        }
        let path = format!("/api/v1/datasets/shards/{sha256}");
        let client = self.client.clone();
        let bytes = self
            .runtime
            .block_on(async move {
                let response = client.send(client.request(Method::GET, &path)).await?;
                anyhow::Ok(response.bytes().await?.to_vec())
            })
            .map_err(remote)?;
        if let Some(cache) = &self.cache {
            let mut cache = cache.clone();
            if trainyard_data::sha256_hex(&bytes) == sha256 {
                cache.put(sha256, bytes.clone())?;
            }
        }
        Ok(bytes)
    }
}

/// A version as the server lists it.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct VersionView {
    pub name: String,
    pub version: String,
    pub created_ms: i64,
    pub rows: i64,
    pub bytes: i64,
    pub parent: Option<String>,
    pub manifest: serde_json::Value,
}

impl VersionView {
    pub fn manifest(&self) -> anyhow::Result<Manifest> {
        serde_json::from_value(self.manifest.clone()).with_context(|| {
            format!(
                "dataset {}:{} has an unreadable manifest",
                self.name, self.version
            )
        })
    }

    pub fn reference(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }
}

/// Splits `NAME[:VERSION]`.
pub fn split_reference(reference: &str) -> (&str, &str) {
    reference.split_once(':').unwrap_or((reference, "latest"))
}

pub async fn fetch_version(client: &Client, reference: &str) -> anyhow::Result<VersionView> {
    let (name, version) = split_reference(reference);
    client
        .json(client.request(
            Method::GET,
            &format!("/api/v1/datasets/{name}/versions/{version}"),
        ))
        .await
        .with_context(|| format!("dataset `{reference}`"))
}

#[derive(Debug, Deserialize, serde::Serialize)]
pub struct Created {
    pub name: String,
    pub version: String,
    pub created: bool,
}

pub async fn commit_version(
    client: &Client,
    name: &str,
    manifest: &Manifest,
) -> anyhow::Result<Created> {
    client
        .json(
            client
                .request(Method::POST, &format!("/api/v1/datasets/{name}/versions"))
                .json(&serde_json::json!({ "manifest": manifest })),
        )
        .await
}

/// Where task processes and the CLI cache shards: `TRAINYARD_CACHE_DIR`, else the
/// user's cache folder.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TRAINYARD_CACHE_DIR") {
        return PathBuf::from(dir).join("shards");
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("trainyard").join("shards")
}
