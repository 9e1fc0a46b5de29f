//! The HTTP face of Trainyard: REST v1 (described by OpenAPI at `/api/v1/openapi.json`),
//! health, Prometheus metrics and bearer-token auth. The only crate that knows HTTP; it
//! turns every domain error into a status and a stable error code, once, in `error`.

mod access;
mod audit;
mod auth;
mod datasets;
mod error;
mod extract;
mod health;
pub mod inference;
mod jobs;
mod metrics;
mod mlflow;
mod openapi;
pub mod optuna;
mod page;
mod password_guard;
mod secrets;
mod storage;
mod studies;
mod tls;
mod tracking;
mod ui;
mod users;
mod workspaces;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use trainyard_compute::SchedulerHandle;
use trainyard_tracking::Tracking;

pub use access::{changes_something, route_table, Route};
pub use audit::AuditLog;
pub use auth::{Auth, WORKSPACE_HEADER};
pub use error::{ApiError, ErrorBody, ErrorCode, ErrorDetail};
pub use inference::InferenceState;
pub use metrics::HttpMetrics;
pub use mlflow::job_may_call;
pub use password_guard::PasswordGuard;
pub use storage::StorageMeter;
pub use tls::{TlsError, TlsIdentity};

/// Largest request body the REST API takes (a job submission is a few KiB).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub scheduler: SchedulerHandle,
    pub tracking: Tracking,
    pub datasets: trainyard_datasets::Datasets,
    pub auth: Auth,
    pub metrics: Arc<HttpMetrics>,
    /// Where mutating and denied calls are recorded.
    pub audit: AuditLog,
    /// The key workspace secrets are sealed with (`None`: secrets cannot be set).
    pub secrets_key: Option<trainyard_store::SecretKey>,
    /// What each workspace stores, for stored-bytes quotas.
    pub storage: StorageMeter,
    /// Hyper-parameter studies (one instance: it keeps finished trials between asks).
    pub studies: trainyard_compute::studies::Studies,
    /// Reads a built-in task's arguments as its worker will (`trainyard task KIND ARGS`),
    /// so a job whose task cannot even start is refused at submit, naming `task.args`,
    /// instead of failing later. The program embedding the API owns that command line and
    /// sets it; `None` checks nothing beyond the submission's own rules.
    pub task_args: Option<TaskArgsCheck>,
    /// Brakes password guessing at login and at a password change.
    pub passwords: PasswordGuard,
}

/// See [`AppState::task_args`]: `Err` says why the arguments do not parse.
pub type TaskArgsCheck =
    Arc<dyn Fn(&trainyard_core::job::BuiltinTask) -> Result<(), String> + Send + Sync>;

/// The shared state with its tracking and datasets services acting in the caller's
/// workspace: what every tracking, registry, artifact and dataset handler takes, so none can
/// reach another workspace's.
pub struct Scoped(pub AppState);

impl axum::extract::FromRequestParts<AppState> for Scoped {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Auth runs first on every route that takes this; without a principal there is no
        // workspace to act in.
        let who = parts
            .extensions
            .get::<trainyard_core::Principal>()
            .ok_or_else(|| ApiError::unauthorized("send `Authorization: Bearer TOKEN`"))?;
        let mut state = state.clone();
        state.tracking = state.tracking.scoped(&who.workspace);
        state.datasets = state.datasets.scoped(&who.workspace);
        Ok(Scoped(state))
    }
}

/// All routes, with auth, metrics and limits applied; with `inference`, the Open Inference
/// Protocol's `/v2` routes too.
pub fn router(state: AppState, inference: Option<InferenceState>) -> Router {
    let api = Router::new()
        .route("/api/v1/jobs", post(jobs::submit).get(jobs::list))
        .route("/api/v1/jobs/{id}", get(jobs::get))
        .route("/api/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/api/v1/jobs/{id}/retry", post(jobs::retry))
        .route("/api/v1/jobs/{id}/logs", get(jobs::logs))
        .route("/api/v1/resources", get(jobs::resources))
        .route("/api/v1/audit", get(audit::list))
        .route(
            "/api/v1/workspaces",
            get(workspaces::list).post(workspaces::create),
        )
        .route(
            "/api/v1/workspaces/{name}",
            axum::routing::delete(workspaces::remove),
        )
        .route(
            "/api/v1/workspaces/{name}/policy",
            axum::routing::put(workspaces::set_policy),
        )
        .route("/api/v1/whoami", get(users::whoami))
        .route(
            "/api/v1/tokens",
            get(users::list_tokens).post(users::create_token),
        )
        .route(
            "/api/v1/tokens/{id}",
            axum::routing::delete(users::revoke_token),
        )
        .route(
            "/api/v1/users",
            get(users::list_users).post(users::create_user),
        )
        .route(
            "/api/v1/users/{name}",
            axum::routing::delete(users::delete_user),
        )
        .route(
            "/api/v1/users/{name}/password",
            axum::routing::put(users::set_password),
        )
        .route("/api/v1/secrets", get(secrets::list))
        .route(
            "/api/v1/secrets/{name}",
            axum::routing::put(secrets::put).delete(secrets::remove),
        )
        .route("/api/v1/studies", get(studies::list).post(studies::create))
        .route("/api/v1/studies/{name}", get(studies::get))
        .route("/api/v1/studies/{name}/best", get(studies::best))
        .route("/api/v1/studies/{name}/stop", post(studies::stop))
        .route(
            "/api/v1/studies/{name}/trials",
            get(studies::trials).post(studies::ask),
        )
        .route(
            "/api/v1/studies/{name}/trials/{number}",
            get(studies::trial).put(studies::tell),
        )
        .route(
            "/api/v1/studies/{name}/trials/{number}/report",
            post(studies::report),
        )
        .route("/api/v1/members", get(users::list_members))
        .route(
            "/api/v1/members/{user}",
            axum::routing::put(users::set_member).delete(users::remove_member),
        )
        .route("/api/v1/experiments", get(tracking::list_experiments))
        .route("/api/v1/runs", get(tracking::list_runs))
        .route("/api/v1/runs/{id}", get(tracking::get_run))
        .route("/api/v1/runs/{id}/metrics/{key}", get(tracking::metric))
        .route(
            "/api/v1/runs/metric-histories",
            post(tracking::metric_histories),
        )
        .route("/api/v1/models", get(tracking::list_models))
        .route("/api/v1/datasets", get(datasets::list))
        .route("/api/v1/datasets/{name}", get(datasets::versions))
        .route(
            "/api/v1/datasets/{name}/versions",
            post(datasets::create_version),
        )
        .route(
            "/api/v1/datasets/{name}/versions/{version}",
            get(datasets::version),
        )
        .route(
            "/api/v1/datasets/{name}/versions/{version}/head",
            get(datasets::head),
        )
        .route(
            "/api/v1/datasets/shards/{sha256}",
            get(datasets::get_shard)
                .head(datasets::has_shard)
                .put(datasets::put_shard)
                .layer(DefaultBodyLimit::max(datasets::MAX_SHARD_BYTES)),
        )
        .route("/api/v1/models/{name}", get(tracking::get_model))
        .route(
            "/api/v1/models/{name}/versions/{version}/graph",
            get(tracking::model_graph),
        )
        .route("/metrics", get(metrics::render))
        .merge(mlflow::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.auth.clone(),
            auth::require_token,
        ));
    let mut open = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/api/v1/login", post(users::login))
        .route("/api/v1/openapi.json", get(openapi::document));
    // The web UI's page and assets: public files (its data comes from the API, with a token).
    match ui::routes() {
        Some(ui) => open = open.merge(ui),
        None => tracing::info!("this binary was built without the web UI (TRAINYARD_SKIP_UI)"),
    }
    let mut all: Router = api
        .merge(open)
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state.clone());
    if let Some(inference) = inference {
        all = all.merge(inference::router(inference));
    }
    // Around auth, after routing: every route's changing and denied calls are recorded.
    let all = all.route_layer(axum::middleware::from_fn_with_state(
        state.audit.clone(),
        audit::record_calls,
    ));
    observed(all, state.metrics.clone())
}

/// Request metrics and tracing around every route, and a 500 in the error shape for a
/// handler that panics (inside the metrics, so they count it).
fn observed(router: Router, metrics: Arc<HttpMetrics>) -> Router {
    guarded(router)
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track_requests,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// Turns a panic in a handler into a 500 answer instead of a dropped connection.
fn guarded(router: Router) -> Router {
    router.layer(tower_http::catch_panic::CatchPanicLayer::custom(
        error::panic_response,
    ))
}

/// The standalone inference server (`trainyard serve`): `/v2`, `/metrics` and health.
pub fn inference_router(inference: InferenceState, metrics: Arc<HttpMetrics>) -> Router {
    let scrape = Router::new()
        .route("/metrics", get(metrics::render_registry))
        .route_layer(axum::middleware::from_fn_with_state(
            inference.auth.clone(),
            auth::require_token,
        ))
        .route("/healthz", get(health::healthz))
        .with_state(metrics.clone());
    observed(
        inference::router(inference)
            .merge(scrape)
            .fallback(error::route_not_found),
        metrics,
    )
}

/// Serves the API on `listener` (over TLS with `tls`) until `shutdown` completes, then
/// drains open requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    tls: Option<&TlsIdentity>,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // The peer's address reaches handlers (the audit trail records it).
    let app = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    match tls {
        Some(identity) => {
            // Its connections are past their handshake (and have TCP_NODELAY already).
            let listener = tls::TlsListener::new(listener, identity)?.tap_io(|_| {});
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            // Small answers (inference, health) go out at once instead of waiting on Nagle.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_in_the_error_shape_and_serving_goes_on() {
        async fn boom() -> &'static str {
            panic!("the handler broke")
        }
        let app = super::guarded(
            axum::Router::new()
                .route("/boom", get(boom))
                .route("/ok", get(|| async { "fine" })),
        );
        for _ in 0..2 {
            let r = app
                .clone()
                .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
            let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"]["code"], "internal", "{v}");
            let r = app
                .clone()
                .oneshot(Request::get("/ok").body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
    }
}
