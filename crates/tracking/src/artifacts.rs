//! Run and model artifacts in the blob store, under `artifacts/<path>` where `<path>` is
//! what follows `mlflow-artifacts:/` (`<experiment>/<run>/artifacts/…`). Uploads stream to
//! the store and become visible only when complete.

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResult, ObjectStore};
use tokio::io::AsyncWriteExt;

use crate::entities::FileInfo;
use crate::error::{invalid, not_found};
use crate::search::ARTIFACTS_PREFIX;
use crate::{Tracking, TrackingError};

const ROOT: &str = "artifacts";
/// Parts of multipart uploads in progress, one folder per upload, outside the artifact tree.
const UPLOADS: &str = "artifact-uploads";
/// Where workspaces other than `default` keep artifacts that belong to no experiment,
/// one tree each (`_ws/<workspace>/…`); no caller names a path here.
const WORKSPACE_AREAS: &str = "_ws";

/// Which tree an artifact path is kept in (see [`Tracking::artifact_area`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Area {
    /// As named: experiments' places, and `default`'s other paths.
    Shared,
    /// In the workspace's own tree.
    Own,
}

/// Most parts one multipart upload may have (S3's limit too).
pub const MAX_PARTS: i64 = 10_000;

/// Refuses paths that could leave the artifact root or mean something else to a store,
/// as given and after percent-decoding as often as it decodes (`%252e%252e` is `..`). The
/// error is MLflow's: exactly `Invalid path` (the reason goes to the log).
pub fn check_path(path: &str) -> Result<(), TrackingError> {
    let decoded = crate::sources::unquote_fully(path);
    for candidate in [path, decoded.as_str()] {
        if let Err(why) = path_problem(candidate) {
            tracing::debug!(path, why, "artifact path refused");
            return Err(invalid("Invalid path"));
        }
    }
    Ok(())
}

/// Whether store path `path` is `root` or lies below it, compared segment by segment
/// (`a/bc` is not below `a/b`). Both are paths already checked, not URIs.
pub(crate) fn path_within(path: &str, root: &str) -> bool {
    let mut path = path.split('/').filter(|s| !s.is_empty());
    let mut root = root.split('/').filter(|s| !s.is_empty()).peekable();
    if root.peek().is_none() {
        return false;
    }
    root.all(|r| path.next() == Some(r))
}

fn path_problem(path: &str) -> Result<(), &'static str> {
    if path.starts_with('/') {
        return Err("absolute paths are not allowed");
    }
    if path.contains('\\') || path.contains('#') || path.contains('\0') {
        return Err("backslashes, '#' and NUL are not allowed");
    }
    let lower = path.to_ascii_lowercase();
    if lower.starts_with("file:")
        || lower.contains("%2e")
        || lower.contains("%2f")
        || lower.contains("%5c")
    {
        return Err("URIs and encoded separators are not allowed");
    }
    let bytes = path.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
        return Err("drive letters are not allowed");
    }
    if path.split('/').any(|seg| seg == ".." || seg == ".") {
        return Err("'..' and '.' segments are not allowed");
    }
    Ok(())
}

fn upload_path(upload_id: &str, name: &str) -> Path {
    Path::from_iter([UPLOADS, upload_id, name])
}

fn io_error(e: std::io::Error) -> TrackingError {
    TrackingError::Store(trainyard_store::StoreError::Blob(
        object_store::Error::Generic {
            store: "artifacts",
            source: Box::new(e),
        },
    ))
}

fn location(path: &str) -> Result<Path, TrackingError> {
    check_path(path)?;
    let parts = std::iter::once(ROOT).chain(path.split('/').filter(|s| !s.is_empty()));
    Ok(Path::from_iter(parts))
}

/// The store path behind an artifact URI of ours (`mlflow-artifacts:/x/y`), if it is one.
pub fn artifact_path(uri: &str) -> Option<&str> {
    let rest = uri.strip_prefix(ARTIFACTS_PREFIX)?;
    // `mlflow-artifacts://host:port/path` names a server; ours has no host.
    Some(rest.trim_start_matches('/'))
}

/// A download: the bytes (possibly a range of them) and how many the whole file has.
pub struct Download {
    pub size: u64,
    pub range: Option<std::ops::Range<u64>>,
    pub body: futures::stream::BoxStream<'static, Result<Bytes, TrackingError>>,
}

impl Tracking {
    fn store(&self) -> &std::sync::Arc<dyn ObjectStore> {
        self.blobs.object_store()
    }

    /// Stores a file from a stream of body chunks; a failed or cut-off stream stores nothing.
    pub async fn put_artifact<S, E>(&self, path: &str, body: S) -> Result<u64, TrackingError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if path.is_empty() || path.ends_with('/') {
            return Err(invalid(format!(
                "Invalid path: '{path}' (a file name is needed)"
            )));
        }
        self.write_stream(self.place(path).await?, path, body).await
    }

    /// Streams a body into `location`; on any failure the write is aborted, leaving nothing.
    async fn write_stream<S, E>(
        &self,
        location: Path,
        path: &str,
        body: S,
    ) -> Result<u64, TrackingError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut writer = trainyard_store::bounded_writer(self.store().clone(), location);
        let mut body = body;
        let mut written = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(invalid(format!("the upload of '{path}' was cut off: {e}")));
                }
            };
            written += chunk.len() as u64;
            if let Err(e) = writer.write_all(&chunk).await {
                let _ = writer.abort().await;
                return Err(io_error(e));
            }
        }
        writer.shutdown().await.map_err(io_error)?;
        Ok(written)
    }

    /// Starts a multipart upload of `path` in `parts` parts; returns the upload's id.
    /// Parts are stored apart and become the file only when the upload completes.
    pub async fn create_multipart(&self, path: &str, parts: i64) -> Result<String, TrackingError> {
        self.place(path).await?;
        if path.is_empty() || path.ends_with('/') {
            return Err(invalid(format!(
                "Invalid path: '{path}' (a file name is needed)"
            )));
        }
        if !(1..=MAX_PARTS).contains(&parts) {
            return Err(invalid(format!(
                "Invalid value {parts} for parameter 'num_parts' supplied: 1 to {MAX_PARTS}"
            )));
        }
        let id = trainyard_core::new_id();
        // Whose upload it is: only that workspace adds parts, completes or aborts it.
        self.store()
            .put(
                &upload_path(&id, "workspace"),
                bytes::Bytes::from(self.workspace().to_string()).into(),
            )
            .await?;
        self.store()
            .put(
                &upload_path(&id, "target"),
                bytes::Bytes::from(path.to_string()).into(),
            )
            .await?;
        Ok(id)
    }

    /// The file an upload was started for; refuses unknown or malformed ids.
    pub async fn multipart_target(&self, upload_id: &str) -> Result<String, TrackingError> {
        if !trainyard_core::id::is_valid_id(upload_id) {
            return Err(not_found(format!(
                "No multipart upload with id '{upload_id}'"
            )));
        }
        match self.store().get(&upload_path(upload_id, "target")).await {
            Ok(r) => {
                let target = String::from_utf8_lossy(&r.bytes().await?).into_owned();
                // Another workspace's upload is not there for this one.
                if self.upload_of_another(upload_id).await? {
                    return Err(not_found(format!(
                        "No multipart upload with id '{upload_id}'"
                    )));
                }
                self.artifact_area(&target)
                    .await
                    .map_err(|_| not_found(format!("No multipart upload with id '{upload_id}'")))?;
                Ok(target)
            }
            Err(object_store::Error::NotFound { .. }) => Err(not_found(format!(
                "No multipart upload with id '{upload_id}'"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores part `part` (1-based) of an upload; returns its ETag (the part's size and number).
    pub async fn put_part<S, E>(
        &self,
        upload_id: &str,
        part: i64,
        body: S,
    ) -> Result<String, TrackingError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.multipart_target(upload_id).await?;
        if !(1..=MAX_PARTS).contains(&part) {
            return Err(invalid(format!(
                "Invalid part number {part}: 1 to {MAX_PARTS}"
            )));
        }
        let name = format!("part-{part:05}");
        let size = self
            .write_stream(upload_path(upload_id, &name), &name, body)
            .await?;
        Ok(format!("\"{part}-{size}\""))
    }

    /// Joins the parts (in part-number order) into the file, then forgets the upload.
    pub async fn complete_multipart(
        &self,
        path: &str,
        upload_id: &str,
        parts: &[i64],
    ) -> Result<(), TrackingError> {
        let target = self.multipart_target(upload_id).await?;
        if target != path {
            return Err(invalid(format!(
                "Upload '{upload_id}' is for '{target}', not '{path}'"
            )));
        }
        let mut numbers = parts.to_vec();
        numbers.sort_unstable();
        numbers.dedup();
        if numbers.is_empty() {
            return Err(invalid("A multipart upload needs at least one part"));
        }
        let mut writer =
            trainyard_store::bounded_writer(self.store().clone(), self.place(path).await?);
        for n in numbers {
            let part = match self
                .store()
                .get(&upload_path(upload_id, &format!("part-{n:05}")))
                .await
            {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => {
                    let _ = writer.abort().await;
                    return Err(invalid(format!(
                        "Part {n} of upload '{upload_id}' was never uploaded"
                    )));
                }
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(e.into());
                }
            };
            let mut stream = part.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = writer.abort().await;
                        return Err(e.into());
                    }
                };
                if let Err(e) = writer.write_all(&chunk).await {
                    let _ = writer.abort().await;
                    return Err(io_error(e));
                }
            }
        }
        writer.shutdown().await.map_err(io_error)?;
        self.abort_multipart(upload_id).await
    }

    /// Forgets an upload and its parts (also how a completed upload is cleaned up).
    pub async fn abort_multipart(&self, upload_id: &str) -> Result<(), TrackingError> {
        if !trainyard_core::id::is_valid_id(upload_id) {
            return Err(not_found(format!(
                "No multipart upload with id '{upload_id}'"
            )));
        }
        match self.multipart_target(upload_id).await {
            Ok(_) => {}
            // Nothing left of it: aborting again is not an error.
            Err(TrackingError::NotFound(_)) if !self.upload_of_another(upload_id).await? => {
                return Ok(())
            }
            Err(e) => return Err(e),
        }
        let prefix = Path::from_iter([UPLOADS, upload_id]);
        self.delete_under(&prefix).await
    }

    /// Whether the upload was started in another workspace (uploads from before this was
    /// kept are `default`'s).
    async fn upload_of_another(&self, upload_id: &str) -> Result<bool, TrackingError> {
        if self.every_workspace() == 1 {
            return Ok(false);
        }
        let owner = match self.store().get(&upload_path(upload_id, "workspace")).await {
            Ok(r) => String::from_utf8_lossy(&r.bytes().await?).into_owned(),
            Err(object_store::Error::NotFound { .. }) => {
                trainyard_core::DEFAULT_WORKSPACE.to_string()
            }
            Err(e) => return Err(e.into()),
        };
        Ok(owner != self.workspace())
    }

    /// A file's bytes; `range` is an inclusive-exclusive byte range within it.
    pub async fn get_artifact(
        &self,
        path: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Download, TrackingError> {
        let location = self.place(path).await?;
        // A link in a local store (a job can plant one when it runs as the server's user)
        // is not an artifact: following it would serve whatever it points at.
        if self.blobs.reaches_through_link(&location) {
            return Err(not_found(format!("No such artifact: '{path}'")));
        }
        let options = GetOptions {
            range: range.clone().map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result: GetResult = match self.store().get_opts(&location, options).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => {
                let is_dir = !self.list_artifacts(path).await?.is_empty();
                return Err(if is_dir {
                    invalid(format!(
                        "Artifact path refers to a directory, not a file: '{path}'"
                    ))
                } else {
                    not_found(format!("No such artifact: '{path}'"))
                });
            }
            Err(e) => return Err(e.into()),
        };
        let size = result.meta.size;
        Ok(Download {
            size,
            range,
            body: result.into_stream().map_err(TrackingError::from).boxed(),
        })
    }

    /// The immediate children of a folder (bare names); a missing folder or a file has none.
    pub async fn list_artifacts(&self, path: &str) -> Result<Vec<FileInfo>, TrackingError> {
        let prefix = self.place(path).await?;
        if let Some(children) = self.blobs.local_children(&prefix).await {
            return Ok(children?
                .into_iter()
                .map(|c| FileInfo {
                    path: c.name,
                    is_dir: c.is_dir,
                    file_size: (!c.is_dir).then_some(c.size as i64),
                })
                .collect());
        }
        let listing = self.store().list_with_delimiter(Some(&prefix)).await?;
        let mut out: Vec<FileInfo> = Vec::new();
        for dir in listing.common_prefixes {
            if let Some(name) = dir.filename() {
                out.push(FileInfo {
                    path: name.to_string(),
                    is_dir: true,
                    file_size: None,
                });
            }
        }
        for obj in listing.objects {
            if let Some(name) = obj.location.filename() {
                out.push(FileInfo {
                    path: name.to_string(),
                    is_dir: false,
                    file_size: Some(obj.size as i64),
                });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Deletes a file, or a folder and everything under it.
    pub async fn delete_artifacts(&self, path: &str) -> Result<(), TrackingError> {
        let location = self.place(path).await?;
        match self.store().delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.delete_under(&location).await
    }

    /// `artifacts/list` for a run: entries under `path` relative to the run's root.
    pub async fn list_run_artifacts(
        &self,
        run_id: &str,
        path: &str,
    ) -> Result<(String, Vec<FileInfo>), TrackingError> {
        check_path(path)?;
        let run = self.get_run(run_id).await?;
        self.list_under(run.info.artifact_uri, path).await
    }

    /// A logged model's artifacts under `path`, as `list_run_artifacts` lists a run's.
    pub async fn list_logged_model_artifacts(
        &self,
        model_id: &str,
        path: &str,
    ) -> Result<(String, Vec<FileInfo>), TrackingError> {
        check_path(path)?;
        let model = self.get_logged_model(model_id).await?;
        self.list_under(model.info.artifact_uri, path).await
    }

    /// Removes the artifacts of experiments that are gone (their own places `N/…`).
    pub async fn remove_experiment_artifacts(
        &self,
        experiments: &[i64],
    ) -> Result<(), TrackingError> {
        for id in experiments {
            self.delete_under(&Path::from_iter([ROOT, id.to_string().as_str()]))
                .await?;
        }
        Ok(())
    }

    /// Removes the artifact tree of a workspace that is gone (`_ws/<workspace>/…`), so a
    /// later workspace of the same name starts with nothing of it.
    pub async fn remove_workspace_artifacts(&self, workspace: &str) -> Result<(), TrackingError> {
        if !trainyard_core::access::valid_name(workspace) {
            return Ok(());
        }
        let prefix = Path::from_iter([ROOT, WORKSPACE_AREAS, workspace]);
        self.delete_under(&prefix).await
    }

    /// Bytes this workspace keeps in the artifact store: its experiments' own places and
    /// its own tree (`_ws/<workspace>/…`). Paths of `default` outside experiments are not
    /// counted.
    pub async fn stored_bytes(&self) -> Result<u64, TrackingError> {
        let rows =
            sqlx::query("SELECT id, artifact_location FROM experiments WHERE workspace_id = $1")
                .bind(self.workspace())
                .fetch_all(self.db.pool())
                .await?;
        let mut prefixes = vec![Path::from_iter([ROOT, WORKSPACE_AREAS, self.workspace()])];
        for row in &rows {
            let id: i64 = crate::rows::get(row, "id")?;
            let location: String = crate::rows::get(row, "artifact_location")?;
            let own = id.to_string();
            if artifact_path(&location).map(|p| p.trim_end_matches('/')) == Some(own.as_str()) {
                prefixes.push(Path::from_iter([ROOT, own.as_str()]));
            }
        }
        let mut total = 0u64;
        for prefix in prefixes {
            total = total.saturating_add(self.blobs.bytes_below(&prefix).await?);
        }
        Ok(total)
    }

    async fn delete_under(&self, prefix: &Path) -> Result<(), TrackingError> {
        Ok(self.blobs.delete_below(prefix).await?)
    }

    /// Where `path` is kept, once it is checked and found to be this workspace's.
    async fn place(&self, path: &str) -> Result<Path, TrackingError> {
        location(path)?;
        match self.artifact_area(path).await? {
            Area::Shared => location(path),
            Area::Own => location(&format!(
                "{WORKSPACE_AREAS}/{}/{}",
                self.workspace(),
                path.trim_start_matches('/')
            )),
        }
    }

    /// Which artifact tree `path` (as a caller names it) lies in for this workspace, or not
    /// found when it is another's. Experiment `N` keeps its artifacts at `N/…`: those are
    /// reached by N's workspace only, and a number no experiment has is nobody's. Other
    /// paths (MLflow's raw artifact service, experiments of `default` with a location of
    /// their choosing) are kept as named for `default`, and in a tree of its own for
    /// every other workspace, so two workspaces never meet there.
    pub(crate) async fn artifact_area(&self, path: &str) -> Result<Area, TrackingError> {
        if self.every_workspace() == 1 {
            return Ok(Area::Shared);
        }
        let path = path.trim_matches('/');
        let outside = || not_found(format!("No artifact at '{path}'"));
        let first = path.split('/').next().unwrap_or_default();
        let default = self.workspace() == trainyard_core::DEFAULT_WORKSPACE;
        if first == WORKSPACE_AREAS {
            return Err(outside());
        }
        let Ok(id) = first.parse::<i64>() else {
            return Ok(if default { Area::Shared } else { Area::Own });
        };
        let row =
            sqlx::query("SELECT workspace_id, artifact_location FROM experiments WHERE id = $1")
                .bind(id)
                .fetch_optional(self.db.pool())
                .await?;
        let Some(row) = row else {
            return Err(outside());
        };
        let workspace: String = crate::rows::get(&row, "workspace_id")?;
        let location: String = crate::rows::get(&row, "artifact_location")?;
        let own_place = artifact_path(&location).map(|p| p.trim_end_matches('/')) == Some(first);
        // An experiment of `default` whose location is elsewhere leaves `N/…` to `default`.
        if workspace == self.workspace() && (own_place || default) {
            Ok(Area::Shared)
        } else {
            Err(outside())
        }
    }

    /// The store path of `path` inside an artifact root URI of ours (checked).
    pub fn path_under(&self, root_uri: &str, path: &str) -> Result<String, TrackingError> {
        check_path(path)?;
        let root = artifact_path(root_uri).ok_or_else(|| {
            invalid(format!(
                "the artifacts at '{root_uri}' are not kept by this server"
            ))
        })?;
        let path = path.trim_matches('/');
        Ok(if path.is_empty() {
            root.to_string()
        } else {
            format!("{}/{path}", root.trim_end_matches('/'))
        })
    }

    /// Children of `path` inside an artifact root, their paths relative to the root.
    async fn list_under(
        &self,
        root_uri: String,
        path: &str,
    ) -> Result<(String, Vec<FileInfo>), TrackingError> {
        let Some(root) = artifact_path(&root_uri) else {
            return Ok((root_uri, Vec::new()));
        };
        check_path(path)?;
        let path = path.trim_matches('/');
        let full = if path.is_empty() {
            root.to_string()
        } else {
            format!("{root}/{path}")
        };
        let mut files = self.list_artifacts(&full).await?;
        for f in &mut files {
            if !path.is_empty() {
                f.path = format!("{path}/{}", f.path);
            }
            // MLflow's listings (proto3) leave a zero size out.
            if f.file_size == Some(0) {
                f.file_size = None;
            }
        }
        Ok((root_uri, files))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_lie_within_roots_by_segment() {
        assert!(path_within("0/r/artifacts/m/x", "0/r/artifacts"));
        assert!(path_within("0/r/artifacts", "0/r/artifacts/"));
        assert!(!path_within("0/r/artifactsX/m", "0/r/artifacts"));
        assert!(!path_within("0/r", "0/r/artifacts"));
        assert!(!path_within("x", ""));
    }

    #[test]
    fn escaping_paths_are_refused() {
        for bad in [
            "../x",
            "a/../../b",
            "/etc/passwd",
            "a\\b",
            "a%2e%2e/b",
            "%2E%2E/x",
            "C:/x",
            "file:/x",
            "a#b",
            "./a",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        for ok in ["1/abc/artifacts/model/MLmodel", "", "a b/c.txt", "x..y"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
    }
}
