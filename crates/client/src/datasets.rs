//! Datasets on the server: versions, commits, and the data crate's shard traits over HTTP.
//! The data crate is synchronous (its loader runs on plain threads); each shard call here
//! blocks on the async client through the runtime's handle. Shards read are kept in a local
//! cache folder, so later epochs read disk, not the network.

use std::path::PathBuf;

use reqwest::Method;
pub use trainyard_core::dataset::split_reference;
use trainyard_core::dataset::{CreatedVersion, DatasetVersionInfo};
use trainyard_data::{DataError, DirStore, Manifest, ShardSink, ShardSource};

use crate::{Client, ClientError, Context};

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
    /// Must be made inside a Tokio runtime (its handle serves the blocking calls).
    pub fn new(client: Client, cache: Option<PathBuf>) -> std::io::Result<Self> {
        if let Some(dir) = &cache {
            std::fs::create_dir_all(dir).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot create the shard cache {}: {e}", dir.display()),
                )
            })?;
        }
        Ok(Self {
            client,
            runtime: tokio::runtime::Handle::current(),
            cache: cache.map(DirStore::new),
            uploaded_bytes: 0,
        })
    }
}

fn remote(e: ClientError) -> DataError {
    DataError::Io {
        path: "server".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

fn shard_path(sha256: &str) -> String {
    format!("/api/v1/datasets/shards/{sha256}")
}

impl ShardSink for RemoteShards {
    fn put(&mut self, sha256: &str, bytes: Vec<u8>) -> Result<(), DataError> {
        let path = shard_path(sha256);
        let client = self.client.clone();
        let len = bytes.len() as u64;
        let sent = self
            .runtime
            .block_on(async move {
                let head = client
                    .request(Method::HEAD, &path)
                    .send()
                    .await
                    .map_err(|source| ClientError::Unreachable {
                        base: client.base().to_string(),
                        source,
                    })?;
                if head.status().is_success() {
                    return Ok(false);
                }
                client
                    .send(client.request(Method::PUT, &path).body(bytes))
                    .await?;
                Ok::<_, ClientError>(true)
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
        let path = shard_path(sha256);
        let client = self.client.clone();
        let bytes = self
            .runtime
            .block_on(async move {
                let response = client.send(client.request(Method::GET, &path)).await?;
                Ok::<_, ClientError>(response.bytes().await?.to_vec())
            })
            .map_err(remote)?;
        if let Some(cache) = &self.cache {
            let mut cache = cache.clone();
            // The cache only saves downloads: a full disk or a folder gone read-only must
            // not fail the read that already has its bytes.
            if trainyard_data::sha256_hex(&bytes) == sha256 {
                let _ = cache.put(sha256, bytes.clone());
            }
        }
        Ok(bytes)
    }
}

/// The version `NAME[:VERSION]` names (no version: the latest).
pub async fn fetch_version(
    client: &Client,
    reference: &str,
) -> Result<DatasetVersionInfo, ClientError> {
    let (name, version) = split_reference(reference);
    client
        .json(client.request(
            Method::GET,
            &format!("/api/v1/datasets/{name}/versions/{version}"),
        ))
        .await
        .context_with(|| format!("dataset `{reference}`"))
}

/// A version's manifest, as the data crate reads it.
pub fn manifest(version: &DatasetVersionInfo) -> Result<Manifest, ClientError> {
    version.manifest_as().map_err(|e| {
        ClientError::Unexpected(format!(
            "dataset {} has an unreadable manifest: {e}",
            version.reference()
        ))
    })
}

/// Commits `manifest` as a version of `name` (its shards must be uploaded first).
pub async fn commit_version(
    client: &Client,
    name: &str,
    manifest: &Manifest,
) -> Result<CreatedVersion, ClientError> {
    client
        .json(
            client
                .request(Method::POST, &format!("/api/v1/datasets/{name}/versions"))
                .json(&serde_json::json!({ "manifest": manifest })),
        )
        .await
}

/// Where task processes and the CLI cache shards: `TRAINYARD_CACHE_DIR`, else the user's
/// cache folder, else (an account without a home, as the default job account under root
/// is) a folder of this uid's under the temporary directory — the first one that can be
/// written. Anything read from the cache is checked against its digest, so a folder others
/// can write costs at most a download, never a wrong shard.
pub fn cache_dir() -> PathBuf {
    let candidates = [
        std::env::var_os("TRAINYARD_CACHE_DIR").map(|d| PathBuf::from(d).join("shards")),
        std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("trainyard/shards")),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/trainyard/shards")),
    ];
    first_writable(candidates, private_temp_dir().join("shards"))
}

/// `TMP/trainyard-<uid>`, made private (0700) to this uid. The temporary directory is shared
/// with every account: a folder of that name someone else made, or a link there, is not
/// used; a fresh one of this process's is.
fn private_temp_dir() -> PathBuf {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let base = std::env::temp_dir();
    let shared = base.join(format!("trainyard-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&shared);
    // A real folder of this uid's (not a link) is ours to make private again.
    let ours = std::fs::symlink_metadata(&shared)
        .is_ok_and(|m| m.file_type().is_dir() && m.uid() == uid)
        && std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o700)).is_ok();
    if ours {
        return shared;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let own = base.join(format!("trainyard-{uid}-{}-{nanos}", std::process::id()));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&own);
    own
}

fn first_writable(
    candidates: impl IntoIterator<Item = Option<PathBuf>>,
    fallback: PathBuf,
) -> PathBuf {
    candidates
        .into_iter()
        .flatten()
        .find(|dir| writable(dir))
        .unwrap_or(fallback)
}

/// Whether `dir` exists (or can be made) and a file can be created in it.
fn writable(dir: &std::path::Path) -> bool {
    std::fs::create_dir_all(dir).is_ok() && tempfile_in(dir).is_ok()
}

fn tempfile_in(dir: &std::path::Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    // create_new (O_EXCL) neither follows a link planted under that name nor truncates.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_the_first_folder_that_can_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let fallback = dir.path().join("fallback");
        // A home that does not exist and cannot be made (`/nonexistent` of a system account
        // under a file here), then one that can.
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let unusable = Some(file.join("home/.cache"));
        let usable = dir.path().join("cache");
        assert_eq!(
            first_writable(
                [None, unusable.clone(), Some(usable.clone())],
                fallback.clone()
            ),
            usable
        );
        assert_eq!(first_writable([None, unusable], fallback.clone()), fallback);
    }

    #[test]
    fn the_temporary_fallback_is_private_to_this_uid() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = private_temp_dir();
        let m = std::fs::symlink_metadata(&dir).unwrap();
        // SAFETY: geteuid has no preconditions.
        assert_eq!(m.uid(), unsafe { libc::geteuid() });
        assert!(m.file_type().is_dir());
        assert_eq!(m.permissions().mode() & 0o077, 0, "{}", dir.display());
    }
}
