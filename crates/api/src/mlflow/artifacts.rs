//! The proxied artifact service: files under `mlflow-artifacts:/…` uploaded, listed,
//! downloaded (with ranges) and deleted through the server.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{MlflowError, Params, Reply};
use crate::AppState;

pub async fn upload(State(s): State<AppState>, Path(path): Path<String>, body: Body) -> Reply {
    s.tracking
        .put_artifact(&path, body.into_data_stream())
        .await?;
    Ok(Json(json!({})))
}

pub async fn list(State(s): State<AppState>, p: Params) -> Reply {
    let path = p.str("path")?.unwrap_or_default();
    let files = s.tracking.list_artifacts(path.trim_matches('/')).await?;
    if files.is_empty() {
        return Ok(Json(json!({})));
    }
    Ok(Json(json!({ "files": files })))
}

pub async fn remove(State(s): State<AppState>, Path(path): Path<String>) -> Reply {
    s.tracking.delete_artifacts(&path).await?;
    Ok(Json(json!({})))
}

pub async fn download(
    State(s): State<AppState>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Result<Response, MlflowError> {
    serve_file(&s, &path, &headers).await
}

/// `GET /get-artifact?run_id=&path=`: a run's file, as the MLflow UI fetches it.
pub async fn get_run_artifact(
    State(s): State<AppState>,
    headers: HeaderMap,
    p: Params,
) -> Result<Response, MlflowError> {
    let run = s.tracking.get_run(&p.run_id()?).await?;
    let root = trainyard_tracking::ARTIFACTS_PREFIX;
    let base = run
        .info
        .artifact_uri
        .strip_prefix(root)
        .ok_or_else(|| MlflowError::invalid("this run's artifacts are not kept by this server"))?
        .trim_start_matches('/')
        .to_string();
    let path = p.req_str("path")?;
    serve_file(
        &s,
        &format!("{base}/{}", path.trim_start_matches('/')),
        &headers,
    )
    .await
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
        (a, b) => a.parse().ok()?..(b.parse::<u64>().ok()? + 1).min(size),
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

/// Types by extension, never `text/html` (a stored page must not run in the UI's origin).
fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        _ if name == "MLmodel" || name == "MLproject" => "text/plain",
        Some("txt" | "log" | "yaml" | "yml" | "md" | "csv" | "py" | "html" | "htm") => "text/plain",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("svg") => "text/plain",
        Some("pdf") => "application/pdf",
        _ => "application/octet-stream",
    }
}

pub async fn multipart_unsupported() -> MlflowError {
    MlflowError::not_implemented(
        "Multipart upload is not supported by this server; use a single PUT.",
    )
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
