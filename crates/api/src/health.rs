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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;
    use trainyard_background::Background;
    use trainyard_compute::{Attempt, Executor, ExitRecord, JobTracking, Scheduler};
    use trainyard_core::{Capacity, Job};

    use super::*;

    /// An executor with room but nothing to run: enough for the scheduler to start.
    struct Idle(Capacity);

    #[async_trait::async_trait]
    impl Executor for Idle {
        fn kind(&self) -> &'static str {
            "test"
        }

        fn capacity(&self) -> &Capacity {
            &self.0
        }
        fn host(&self) -> &str {
            "test"
        }
        async fn run(&self, _: Attempt, _: tokio::sync::oneshot::Sender<()>) -> ExitRecord {
            std::future::pending().await
        }
        async fn adopt(&self, _: &Job, _: u32) -> ExitRecord {
            std::future::pending().await
        }
        async fn cancel(&self, _: &str, _: u32) -> bool {
            false
        }
        async fn cleanup(&self, _: &str) {}
    }

    async fn ready(app: &axum::Router) -> (StatusCode, Value) {
        let r = app
            .clone()
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn a_dead_scheduler_loop_turns_readyz_to_503() {
        let dir = tempfile::tempdir().unwrap();
        let store = trainyard_store::Store::open(
            &trainyard_store::Db::sqlite_url(&dir.path().join("t.db")),
            &format!("file://{}", dir.path().join("blobs").display()),
        )
        .await
        .unwrap();
        let tracking = trainyard_tracking::Tracking::new(store.db.clone(), store.blobs.clone());
        let background = Background::new();
        let executor = Arc::new(Idle(Capacity {
            cpus_milli: 1000,
            memory_mb: 100,
            gpus: Vec::new(),
        }));
        let (scheduler, scheduler_loop) = Scheduler::start(
            store.clone(),
            executor,
            JobTracking {
                tracking: tracking.clone(),
                tracking_uri: "http://127.0.0.1:1".into(),
                ca_cert: None,
                secrets_key: None,
            },
            Default::default(),
            &background,
        )
        .await
        .unwrap();
        let state = AppState {
            metrics: Arc::new(crate::HttpMetrics::new(&scheduler, None, &background)),
            auth: crate::Auth::new(store.db.clone()),
            audit: crate::AuditLog::start(store.db.clone()),
            datasets: trainyard_datasets::Datasets::new(store.db.clone(), store.blobs.clone()),
            secrets_key: None,
            storage: Default::default(),
            studies: trainyard_compute::studies::Studies::new(scheduler.clone()),
            scheduler,
            tracking,
            task_args: None,
            passwords: Default::default(),
        };
        let app = crate::router(state, None);
        let (status, body) = ready(&app).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["scheduler"], "running");

        // The loop dies (an abort drops its future as a panic unwinds it).
        scheduler_loop.abort();
        let _ = scheduler_loop.await;
        let (status, body) = ready(&app).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            body["scheduler"].as_str().unwrap().starts_with("stopped"),
            "{body}"
        );
    }
}
