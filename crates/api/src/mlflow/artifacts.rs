//! The proxied artifact service: files under `mlflow-artifacts:/…` uploaded, listed,
//! downloaded (with ranges) and deleted through the server.

use crate::extract::ApiPath as Path;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{By, MlflowError, Params, Reply};
use crate::AppState;
use crate::Scoped;

pub async fn upload(Scoped(s): Scoped, Path(path): Path<String>, By(w): By, body: Body) -> Reply {
    s.tracking.check_artifact_write(&w, &path).await?;
    stored_bytes_left(&s).await?;
    let size = s
        .tracking
        .put_artifact(&path, body.into_data_stream())
        .await?;
    s.storage.add(s.tracking.workspace(), size);
    Ok(Json(json!({})))
}

/// Refuses an upload into a workspace at its stored-bytes quota.
async fn stored_bytes_left(s: &AppState) -> Result<(), MlflowError> {
    s.storage
        .check(s)
        .await
        .map_err(|r| r.into_mlflow(s.tracking.workspace()))
}

pub async fn list(Scoped(s): Scoped, p: Params) -> Reply {
    let path = p.str("path")?.unwrap_or_default();
    let files = s.tracking.list_artifacts(path.trim_matches('/')).await?;
    if files.is_empty() {
        return Ok(Json(json!({})));
    }
    Ok(Json(json!({ "files": files })))
}

pub async fn remove(Scoped(s): Scoped, Path(path): Path<String>, By(w): By) -> Reply {
    w.check_not_job("delete artifacts")?;
    s.tracking.delete_artifacts(&path).await?;
    Ok(Json(json!({})))
}

pub async fn download(
    Scoped(s): Scoped,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Result<Response, MlflowError> {
    serve_file(&s, &path, &headers).await
}

/// `GET /get-artifact?path=&run_uuid=` (or `run_id=`): a run's file, as the MLflow UI
/// fetches it. The path is judged before the run is looked up, as MLflow does.
pub async fn get_run_artifact(
    Scoped(s): Scoped,
    headers: HeaderMap,
    p: Params,
) -> Result<Response, MlflowError> {
    let path = p.req_str("path")?;
    trainyard_tracking::check_path(&path)?;
    let run_id = p
        .run_id()
        .map_err(|_| MlflowError::not_found("Run with id=None not found".to_string()))?;
    let run = s.tracking.get_run(&run_id).await?;
    let full = s.tracking.path_under(&run.info.artifact_uri, &path)?;
    serve_file(&s, &full, &headers).await
}

/// `GET /ajax-api/…/logged-models/{id}/artifacts/files?artifact_file_path=`: one file of a
/// logged model.
pub async fn logged_model_file(
    Scoped(s): Scoped,
    Path(model_id): Path<String>,
    headers: HeaderMap,
    p: Params,
) -> Result<Response, MlflowError> {
    let Some(path) = p.str("artifact_file_path")?.filter(|p| !p.is_empty()) else {
        return Err(MlflowError::bad_request(
            "Request must include the \"artifact_file_path\" query parameter.",
        ));
    };
    trainyard_tracking::check_path(&path)?;
    let model = s.tracking.get_logged_model(&model_id).await?;
    let full = s.tracking.path_under(&model.info.artifact_uri, &path)?;
    serve_file(&s, &full, &headers).await
}

/// Largest file `upload-artifact` takes (MLflow's limit: it is the UI's upload button).
const MAX_UI_UPLOAD: usize = 10 * 1024 * 1024;

/// `POST /ajax-api/…/upload-artifact?run_uuid=&path=` with the file as the body: how the
/// MLflow UI adds a file to a run. Answers 200 with an empty body, as MLflow does.
pub async fn upload_run_artifact(
    Scoped(s): Scoped,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
    By(w): By,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, MlflowError> {
    let Some(run_id) = q.get("run_uuid").filter(|r| !r.is_empty()) else {
        return Err(MlflowError::invalid("Request must specify run_uuid."));
    };
    let Some(path) = q.get("path").filter(|p| !p.is_empty()) else {
        return Err(MlflowError::invalid("Request must specify path."));
    };
    trainyard_tracking::check_path(path)?;
    // A job writing into a run it may not write is refused before its body is read.
    s.tracking.check_run_write(&w, run_id).await?;
    let too_large = || MlflowError::invalid("Artifact size is too large. Max size is 10MB.");
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Read what is sent (so the client is answered, not cut off mid-send), keeping at most
    // the limit; a body declared or found larger is refused.
    let mut kept = bytes::BytesMut::new();
    let mut seen = 0usize;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        let chunk =
            chunk.map_err(|e| MlflowError::invalid(format!("the upload was cut off: {e}")))?;
        seen += chunk.len();
        if seen > MAX_UI_UPLOAD * 4 {
            break;
        }
        if seen <= MAX_UI_UPLOAD {
            kept.extend_from_slice(&chunk);
        }
    }
    if seen > MAX_UI_UPLOAD || declared.is_some_and(|n| n > MAX_UI_UPLOAD as u64) {
        return Err(too_large());
    }
    let bytes = kept.freeze();
    if bytes.is_empty() {
        return Err(MlflowError::invalid("Request must specify data."));
    }
    let run = s.tracking.get_run(run_id).await?;
    let full = s.tracking.path_under(&run.info.artifact_uri, path)?;
    stored_bytes_left(&s).await?;
    s.tracking
        .put_artifact(
            &full,
            futures::stream::iter([Ok::<_, std::convert::Infallible>(bytes)]),
        )
        .await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "",
    )
        .into_response())
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` against a file of `size` bytes.
fn parse_range(value: &str, size: u64) -> Option<std::ops::Range<u64>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let range = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            size.saturating_sub(n)..size
        }
        (a, "") => a.parse().ok()?..size,
        (a, b) => a.parse().ok()?..b.parse::<u64>().ok()?.saturating_add(1).min(size),
    };
    (range.start < range.end && range.end <= size).then_some(range)
}

async fn serve_file(
    s: &AppState,
    path: &str,
    headers: &HeaderMap,
) -> Result<Response, MlflowError> {
    let wanted = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // The size is needed to resolve a range; a first request without range learns it.
    let mut download = s.tracking.get_artifact(path, None).await?;
    let mut status = StatusCode::OK;
    if let Some(spec) = wanted {
        match parse_range(&spec, download.size) {
            Some(range) => {
                download = s.tracking.get_artifact(path, Some(range)).await?;
                status = StatusCode::PARTIAL_CONTENT;
            }
            None => {
                return Ok((
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{}", download.size))],
                )
                    .into_response())
            }
        }
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    let mut response = Response::new(Body::from_stream(download.body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name)),
    );
    let length = match &download.range {
        Some(r) => {
            if let Ok(v) = HeaderValue::from_str(&format!(
                "bytes {}-{}/{}",
                r.start,
                r.end - 1,
                download.size
            )) {
                h.insert(header::CONTENT_RANGE, v);
            }
            r.end - r.start
        }
        None => download.size,
    };
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != ';' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename={safe}")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// Types as MLflow's server gives them (text formats as `text/plain`), except that nothing
/// is ever `text/html` or `image/svg+xml`: a stored page must not run in the UI's origin.
fn content_type(name: &str) -> &'static str {
    const TEXT: &[&str] = &[
        "txt",
        "log",
        "err",
        "cfg",
        "conf",
        "cnf",
        "cf",
        "ini",
        "properties",
        "prop",
        "hocon",
        "toml",
        "yaml",
        "yml",
        "xml",
        "json",
        "js",
        "py",
        "py3",
        "csv",
        "tsv",
        "md",
        "rst",
        "ipynb",
        "html",
        "htm",
        "svg",
    ];
    if matches!(name, "MLmodel" | "MLproject" | "mlproject") {
        return "text/plain";
    }
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some(e) if TEXT.contains(&e) => "text/plain",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("pdf") => "application/pdf",
        _ => "application/octet-stream",
    }
}

/// Where a multipart upload lands: the route names the folder, and the body's `path` (the
/// client's local file) gives the file name, as MLflow's server reads them.
fn upload_target(folder: &str, p: &Params) -> Result<String, MlflowError> {
    let local = p.req_str("path")?;
    let name = local.rsplit(['/', '\\']).next().unwrap_or_default();
    if name.is_empty() {
        return Err(MlflowError::invalid(format!(
            "Invalid value for parameter 'path': '{local}' names no file"
        )));
    }
    let folder = folder.trim_matches('/');
    Ok(if folder.is_empty() {
        name.to_string()
    } else {
        format!("{folder}/{name}")
    })
}

/// `mpu/create/<path>`: an upload id and one URL per part. The part URLs point back at
/// this server (as the client reached it) and carry the caller's own credentials as the
/// headers the client sends with each part.
pub async fn multipart_create(
    Scoped(s): Scoped,
    Path(path): Path<String>,
    headers: HeaderMap,
    By(w): By,
    p: Params,
) -> Reply {
    let parts = p.i64("num_parts")?.unwrap_or(1);
    let target = upload_target(&path, &p)?;
    s.tracking.check_artifact_write(&w, &target).await?;
    stored_bytes_left(&s).await?;
    let id = s.tracking.create_multipart(&target, parts).await?;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|p| *p == "https")
        .unwrap_or("http");
    let mut part_headers = serde_json::Map::new();
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
    {
        part_headers.insert("Authorization".into(), json!(auth));
    }
    let credentials: Vec<_> = (1..=parts)
        .map(|n| {
            json!({
                "url": format!("{scheme}://{host}/api/2.0/mlflow-artifacts/mpu/upload/{id}/{n}"),
                "part_number": n,
                "headers": part_headers,
            })
        })
        .collect();
    Ok(Json(json!({ "upload_id": id, "credentials": credentials })))
}

/// `PUT mpu/upload/<id>/<n>`: one part's bytes; answers its `ETag`.
pub async fn multipart_part(
    Scoped(s): Scoped,
    Path((id, part)): Path<(String, String)>,
    By(w): By,
    body: Body,
) -> Result<Response, MlflowError> {
    if w != trainyard_tracking::Writer::User {
        let target = s.tracking.multipart_target(&id).await?;
        s.tracking.check_artifact_write(&w, &target).await?;
    }
    let part: i64 = part
        .parse()
        .map_err(|_| MlflowError::invalid(format!("Invalid part number '{part}'")))?;
    let etag = s
        .tracking
        .put_part(&id, part, body.into_data_stream())
        .await?;
    let mut response = Json(json!({})).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    Ok(response)
}

pub async fn multipart_complete(
    Scoped(s): Scoped,
    Path(path): Path<String>,
    By(w): By,
    p: Params,
) -> Reply {
    let id = p.req_str("upload_id")?;
    s.tracking
        .check_artifact_write(&w, &upload_target(&path, &p)?)
        .await?;
    let parts = p
        .objects("parts")?
        .iter()
        .map(|part| {
            part.i64("part_number")?
                .ok_or_else(|| super::params::missing("part_number"))
        })
        .collect::<Result<Vec<i64>, MlflowError>>()?;
    s.tracking
        .complete_multipart(&upload_target(&path, &p)?, &id, &parts)
        .await?;
    Ok(Json(json!({})))
}

pub async fn multipart_abort(Scoped(s): Scoped, By(w): By, p: Params) -> Reply {
    let id = p.req_str("upload_id")?;
    if w != trainyard_tracking::Writer::User {
        let target = s.tracking.multipart_target(&id).await?;
        s.tracking.check_artifact_write(&w, &target).await?;
    }
    s.tracking.abort_multipart(&id).await?;
    Ok(Json(json!({})))
}

pub async fn presigned_unsupported() -> MlflowError {
    MlflowError::not_implemented(
        "Multipart download is not supported by this server; use a plain GET.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(0..10));
        assert_eq!(parse_range("bytes=90-", 100), Some(90..100));
        assert_eq!(parse_range("bytes=-5", 100), Some(95..100));
        assert_eq!(parse_range("bytes=0-999", 100), Some(0..100));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }

    #[test]
    fn never_html() {
        assert_eq!(content_type("index.html"), "text/plain");
        assert_eq!(content_type("MLmodel"), "text/plain");
        assert_eq!(content_type("model.pkl"), "application/octet-stream");
    }
}
