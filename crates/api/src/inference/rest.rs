//! REST routes of the Open Inference Protocol.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use serde_json::{json, Value};
use trainyard_serve::manager::ModelKey;
use trainyard_serve::{ModelConfig, ServeError};

use super::codec::{self, HEADER_LENGTH};
use super::{
    index_rows, load_config, Denied, InferenceState, ModelScope, V2Error, EXTENSIONS,
    JOB_TOKEN_REFUSED, SERVER_NAME,
};
use axum::Extension;

type V2Result<T> = Result<T, V2Error>;

async fn not_found() -> V2Error {
    V2Error(StatusCode::NOT_FOUND, "Not Found".into())
}

async fn method_not_allowed() -> V2Error {
    V2Error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed".into())
}

fn only(route: MethodRouter<InferenceState>) -> MethodRouter<InferenceState> {
    route.fallback(method_not_allowed)
}

pub fn router(state: InferenceState) -> Router {
    let max_body = state.max_body;
    let guarded = Router::new()
        .route("/v2", only(get(server_metadata)))
        .route("/v2/models/stats", only(get(stats)))
        .route("/v2/models/{m}", only(get(model_metadata)))
        .route("/v2/models/{m}/versions/{v}", only(get(model_metadata)))
        .route("/v2/models/{m}/config", only(get(model_config)))
        .route(
            "/v2/models/{m}/versions/{v}/config",
            only(get(model_config)),
        )
        .route("/v2/models/{m}/stats", only(get(stats)))
        .route("/v2/models/{m}/versions/{v}/stats", only(get(stats)))
        .route("/v2/models/{m}/infer", only(post(infer)))
        .route("/v2/models/{m}/versions/{v}/infer", only(post(infer)))
        .route("/v2/repository/index", only(post(index)))
        .route("/v2/repository/{repo}/index", only(post(index)))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    let admin = Router::new()
        .route("/v2/repository/models/{m}/load", only(post(load)))
        .route("/v2/repository/models/{m}/unload", only(post(unload)))
        .route(
            "/v2/repository/{repo}/models/{m}/load",
            only(post(named_repository)),
        )
        .route(
            "/v2/repository/{repo}/models/{m}/unload",
            only(post(named_repository)),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_admin_token,
        ));
    // Readiness answers without a token (probes send none) for `default`'s models; with
    // one, for the workspace it acts in.
    let readiness = Router::new()
        .route("/v2/models/{m}/ready", only(get(model_ready)))
        .route("/v2/models/{m}/versions/{v}/ready", only(get(model_ready)))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            token_if_sent,
        ));
    let open = Router::new()
        .route("/v2/health/live", only(get(live)))
        .route("/v2/health/ready", only(get(live)))
        .route("/v2/{*rest}", axum::routing::any(not_found));
    guarded
        .merge(admin)
        .merge(readiness)
        .merge(open)
        // Rejections become `{"error"}` bodies; 413 stays 413.
        .layer(axum::middleware::from_fn(error_bodies))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Gives axum's own rejections (body too large, bad path) the protocol's error body.
async fn error_bodies(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the request body is larger than the server's limit (--serve-max-body)".to_string()
        } else {
            // axum's rejections say what was wrong in a short text body ("Invalid URL:
            // Invalid UTF-8 in `model_name`"): keep it.
            let text = axum::body::to_bytes(response.into_body(), 4096)
                .await
                .ok()
                .and_then(|b| String::from_utf8(b.to_vec()).ok())
                .filter(|t| !t.trim().is_empty());
            text.unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string())
        };
        return V2Error(status, message).into_response();
    }
    response
}

/// The token, unless the server lets inference go without one and none was sent.
async fn require_token(
    State(state): State<InferenceState>,
    request: Request,
    next: Next,
) -> Response {
    check_token(state, request, next, false).await
}

/// Checks a token when one is sent; without one the call reaches `default`'s models.
async fn token_if_sent(
    State(state): State<InferenceState>,
    mut request: Request,
    next: Next,
) -> Response {
    if request.headers().contains_key(AUTHORIZATION) {
        return check_token(state, request, next, false).await;
    }
    request
        .extensions_mut()
        .insert(ModelScope::of(trainyard_core::DEFAULT_WORKSPACE));
    next.run(request).await
}

/// Loading and unloading always take the token.
async fn require_admin_token(
    State(state): State<InferenceState>,
    request: Request,
    next: Next,
) -> Response {
    check_token(state, request, next, true).await
}

async fn check_token(
    state: InferenceState,
    mut request: Request,
    next: Next,
    admin: bool,
) -> Response {
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .map(|h| h.to_str().unwrap_or(""));
    let workspace = request
        .headers()
        .get(crate::WORKSPACE_HEADER)
        .map(|h| h.to_str().unwrap_or("").trim());
    let (status, message) = match state.authorize(header, workspace, admin).await {
        Ok(scope) => {
            // Which workspace's models the handlers reach; who called, for the audit trail.
            let caller = scope.caller.clone();
            request.extensions_mut().insert(scope);
            let mut response = next.run(request).await;
            if let Some(caller) = caller {
                response.extensions_mut().insert(caller);
            }
            return response;
        }
        Err(Denied::NoToken) => (
            StatusCode::UNAUTHORIZED,
            "send `Authorization: Bearer TOKEN`".to_string(),
        ),
        Err(Denied::UnknownToken) => (StatusCode::UNAUTHORIZED, "unknown token".to_string()),
        Err(Denied::JobToken) => (StatusCode::FORBIDDEN, JOB_TOKEN_REFUSED.to_string()),
        Err(Denied::Role(m)) => (StatusCode::FORBIDDEN, m),
        Err(Denied::Unavailable(m)) => (StatusCode::SERVICE_UNAVAILABLE, m),
    };
    V2Error(status, message).into_response()
}

/// `{m}` and the optional `{v}` (digits only; anything else is not a route).
fn model_path(p: &HashMap<String, String>) -> V2Result<(String, Option<u64>)> {
    let name = p.get("m").cloned().unwrap_or_default();
    let version = match p.get("v") {
        None => None,
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => Some(
            v.parse::<u64>()
                .map_err(|_| V2Error(StatusCode::NOT_FOUND, "Not Found".into()))?,
        ),
        Some(_) => return Err(V2Error(StatusCode::NOT_FOUND, "Not Found".into())),
    };
    Ok((name, version))
}

async fn live() -> StatusCode {
    StatusCode::OK
}

async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": SERVER_NAME,
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    }))
}

async fn model_ready(
    State(state): State<InferenceState>,
    Extension(scope): Extension<ModelScope>,
    Path(p): Path<HashMap<String, String>>,
) -> V2Result<StatusCode> {
    let (name, version) = model_path(&p)?;
    let key = state.manager.resolve(&scope.key(&name)?, version).await?;
    match state.manager.peek(&key) {
        Some(_) => Ok(StatusCode::OK),
        None => Err(V2Error(
            StatusCode::BAD_REQUEST,
            "Model version not ready".into(),
        )),
    }
}

fn tensors(specs: &[trainyard_serve::runtime::TensorSpec]) -> Value {
    Value::Array(
        specs
            .iter()
            .map(|s| json!({"name": s.name, "datatype": s.datatype.as_str(), "shape": s.shape}))
            .collect(),
    )
}

async fn model_metadata(
    State(state): State<InferenceState>,
    Extension(scope): Extension<ModelScope>,
    Path(p): Path<HashMap<String, String>>,
) -> V2Result<Json<Value>> {
    let (name, version) = model_path(&p)?;
    let name = scope.key(&name)?;
    let model = state.manager.acquire(&name, version).await?;
    let versions: Vec<String> = match version {
        Some(v) => vec![v.to_string()],
        None => state
            .manager
            .ready_versions(&name)
            .iter()
            .map(u64::to_string)
            .collect(),
    };
    Ok(Json(json!({
        "name": scope.show(&model.name),
        "versions": versions,
        "platform": model.config.platform,
        "inputs": tensors(&model.signature.inputs),
        "outputs": tensors(&model.signature.outputs),
        "parameters": {"runtime": model.runtime.as_str()},
    })))
}

async fn model_config(
    State(state): State<InferenceState>,
    Extension(scope): Extension<ModelScope>,
    Path(p): Path<HashMap<String, String>>,
) -> V2Result<Json<ModelConfig>> {
    let (name, version) = model_path(&p)?;
    let model = state.manager.acquire(&scope.key(&name)?, version).await?;
    Ok(Json(model.config.clone()))
}

async fn infer(
    State(state): State<InferenceState>,
    Extension(scope): Extension<ModelScope>,
    Path(p): Path<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> V2Result<Response> {
    let (name, version) = model_path(&p)?;
    let name = scope.key(&name)?;
    let encoding = headers.get(CONTENT_ENCODING).and_then(|v| v.to_str().ok());
    // An encoding this server cannot read is the request's media type problem (415), not a
    // missing feature of the server.
    let body = codec::decompress(encoding, body, state.max_body).map_err(|e| match e {
        ServeError::Unsupported(m) => V2Error(StatusCode::UNSUPPORTED_MEDIA_TYPE, m),
        other => other.into(),
    })?;
    let header_length = match headers.get(HEADER_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    ServeError::invalid("Inference-Header-Content-Length must be a byte count")
                })?,
        ),
    };
    let request = codec::decode(&body, header_length)?;
    drop(body);
    let model = state.manager.acquire(&name, version).await?;
    let wanted: Option<Vec<String>> = request
        .outputs
        .as_ref()
        .map(|o| o.iter().map(|(n, _)| n.clone()).collect());
    let outputs = state
        .manager
        .infer(&model, request.inputs, wanted.as_deref())
        .await?;
    let binary = |n: &str| match &request.outputs {
        Some(list) => list.iter().find(|(o, _)| o == n).is_some_and(|(_, b)| *b),
        None => request.binary_outputs,
    };
    let (json, tail) = codec::encode(
        scope.show(&model.name),
        model.version,
        request.id.as_deref(),
        &outputs,
        binary,
    )?;
    if tail.is_empty() {
        return Ok((
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            json,
        )
            .into_response());
    }
    let length = json.len();
    let mut body = json;
    body.extend_from_slice(&tail);
    Ok((
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                axum::http::HeaderName::from_static(HEADER_LENGTH),
                HeaderValue::from(length),
            ),
        ],
        body,
    )
        .into_response())
}

fn duration(stat: &trainyard_serve::stats::DurationStat) -> Value {
    json!({"count": stat.count, "ns": stat.ns})
}

pub(crate) fn stats_json(
    key: &ModelKey,
    shown: &str,
    s: &trainyard_serve::stats::ModelStats,
    memory: Option<u64>,
) -> Value {
    let s = s.snapshot();
    let zero = json!({"count": 0, "ns": 0});
    json!({
        "name": shown,
        "version": key.1.to_string(),
        "last_inference": s.last_inference,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": duration(&s.success),
            "fail": duration(&s.fail),
            "queue": duration(&s.queue),
            "compute_input": duration(&s.compute_input),
            "compute_infer": duration(&s.compute_infer),
            "compute_output": duration(&s.compute_output),
            "cache_hit": zero,
            "cache_miss": zero,
        },
        "response_stats": {},
        "batch_stats": s.batches.iter().map(|(size, b)| json!({
            "batch_size": size,
            "compute_input": {"count": b.count, "ns": b.compute_input_ns},
            "compute_infer": {"count": b.count, "ns": b.compute_infer_ns},
            "compute_output": {"count": b.count, "ns": b.compute_output_ns},
        })).collect::<Vec<_>>(),
        "memory_usage": memory
            .map(|bytes| vec![json!({"type": "CPU", "id": 0, "byte_size": bytes})])
            .unwrap_or_default(),
    })
}

async fn stats(
    State(state): State<InferenceState>,
    Extension(scope): Extension<ModelScope>,
    Path(p): Path<HashMap<String, String>>,
) -> V2Result<Json<Value>> {
    let filter = match p.get("m") {
        None => None,
        Some(_) => {
            let (name, version) = model_path(&p)?;
            let key = state.manager.resolve(&scope.key(&name)?, version).await?;
            Some((key.0, version))
        }
    };
    let (name, version) = match &filter {
        Some((n, v)) => (Some(n.as_str()), *v),
        None => (None, None),
    };
    let mut list = state.manager.statistics(name, version).await?;
    list.retain(|(k, _)| scope.shown(&k.0).is_some());
    if let (Some(n), true) = (name, list.is_empty()) {
        return Err(V2Error(
            StatusCode::BAD_REQUEST,
            format!("requested model '{}' is not available", scope.show(n)),
        ));
    }
    Ok(Json(json!({
        "model_stats": list.iter().map(|(k, s)| stats_json(k, scope.show(&k.0), s, state.manager.peek(k).map(|m| m.memory_bytes))).collect::<Vec<_>>()
    })))
}

/// Index/load/unload bodies may be empty, `{}`, or carry parameters.
fn optional_json(body: &Bytes) -> V2Result<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ServeError::invalid(format!("failed to parse the request JSON: {e}")))?;
    if !v.is_object() {
        return Err(ServeError::invalid("the request body must be a JSON object").into());
    }
    Ok(v)
}

async fn index(
    State(state): State<InferenceState>,
    Extension(scope): Extension<ModelScope>,
    body: Bytes,
) -> V2Result<Json<Value>> {
    let request = optional_json(&body)?;
    let ready_only = match request.get("ready") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ServeError::invalid("'ready' must be a boolean").into()),
    };
    let mut out = Vec::new();
    for row in index_rows(&state.manager, ready_only).await? {
        // Only this workspace's models, by the names its callers know.
        let Some(name) = scope.shown(&row.name) else {
            continue;
        };
        let Some(version) = row.version else {
            out.push(json!({"name": name}));
            continue;
        };
        let mut e =
            json!({"name": name, "version": version.to_string(), "state": row.state.as_str()});
        if !row.reason.is_empty() {
            e["reason"] = Value::String(row.reason);
        }
        if let Some(runtime) = row.runtime {
            e["runtime"] = Value::String(runtime.as_str().to_string());
        }
        out.push(e);
    }
    Ok(Json(Value::Array(out)))
}

fn check_name(name: &str) -> V2Result<()> {
    let t = name.trim();
    if t.is_empty() || t == ".." || t.contains('/') {
        return Err(ServeError::invalid(format!("'{name}' is not a model name")).into());
    }
    Ok(())
}

async fn load(
    State(state): State<InferenceState>,
    Extension(scope): Extension<ModelScope>,
    Path(p): Path<HashMap<String, String>>,
    body: Bytes,
) -> V2Result<StatusCode> {
    let name = p.get("m").cloned().unwrap_or_default();
    check_name(&name)?;
    let name = scope.key(&name)?;
    let request = optional_json(&body)?;
    let params = request.get("parameters").and_then(Value::as_object);
    let config = load_config(
        params
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )?;
    state.manager.load(&name, config).await?;
    Ok(StatusCode::OK)
}

async fn unload(
    State(state): State<InferenceState>,
    Extension(scope): Extension<ModelScope>,
    Path(p): Path<HashMap<String, String>>,
    body: Bytes,
) -> V2Result<StatusCode> {
    let name = scope.key(&p.get("m").cloned().unwrap_or_default())?;
    optional_json(&body)?;
    state.manager.unload(&name).await?;
    Ok(StatusCode::OK)
}

async fn named_repository() -> V2Error {
    ServeError::Unsupported("'repository_name' specification is not supported".into()).into()
}
