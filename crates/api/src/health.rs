use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::AppState;

/// Alive: the process answers. For liveness probes.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "the server is alive")))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready: the database and the blob store both answer, and the scheduler loop runs. For
/// readiness probes.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "database and blobs reachable, scheduler running"),
              (status = 503, description = "a dependency is unreachable or the scheduler stopped")))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let store = state.scheduler.store();
    let database = store.db.ping().await;
    let blobs = store.blobs.ping().await;
    let scheduler = state.scheduler.loop_running();
    let describe = |r: &Result<(), trainyard_store::StoreError>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    let ready = database.is_ok() && blobs.is_ok() && scheduler;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "unavailable" },
            "database": describe(&database),
            "blobs": describe(&blobs),
            "scheduler": if scheduler { "running" } else { "stopped: no job starts or ends; restart the server" },
        })),
    )
}
