//! Prometheus text exposition: jobs by state, queue length, submit→start latency, and
//! HTTP requests by route and status with their latency.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use trainyard_core::JobState;

use crate::{ApiError, AppState, ErrorCode};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

type RequestHistograms = Family<RequestLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
    ])
}

/// HTTP-side metrics and the registry they are exposed from.
pub struct HttpMetrics {
    registry: Registry,
    requests: RequestHistograms,
    jobs: Family<StateLabels, Gauge>,
    queue_length: Gauge,
}

impl HttpMetrics {
    /// The registry of the standalone inference server: HTTP and the model manager.
    pub fn for_serving(serve: &trainyard_serve::metrics::ServeMetrics) -> Self {
        let (mut registry, requests) = Self::http_registry();
        serve.register(&mut registry);
        Self {
            registry,
            requests,
            jobs: Family::default(),
            queue_length: Gauge::default(),
        }
    }

    /// A registry with the HTTP request histogram every server has.
    fn http_registry() -> (Registry, RequestHistograms) {
        let mut registry = Registry::with_prefix("trainyard");
        let requests = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP requests by method, route and status, with their latency",
            requests.clone(),
        );
        (registry, requests)
    }

    pub fn new(
        scheduler: &trainyard_compute::SchedulerHandle,
        serve: Option<&trainyard_serve::metrics::ServeMetrics>,
        background: &trainyard_background::Background,
    ) -> Self {
        let (mut registry, requests) = Self::http_registry();
        let jobs = Family::<StateLabels, Gauge>::default();
        registry.register("jobs", "Jobs by state", jobs.clone());
        let queue_length = Gauge::default();
        registry.register(
            "queue_length",
            "Jobs waiting for resources",
            queue_length.clone(),
        );
        let m = scheduler.metrics();
        registry.register(
            "job_submit_to_start_seconds",
            "Time from entering the queue to the start of an attempt",
            m.submit_to_start.clone(),
        );
        registry.register(
            "job_attempts_started",
            "Job attempts started",
            m.attempts_started.clone(),
        );
        registry.register(
            "job_attempts_finished",
            "Job attempts finished",
            m.attempts_finished.clone(),
        );
        if let Some(serve) = serve {
            serve.register(&mut registry);
        }
        background.register_metrics(&mut registry);
        Self {
            registry,
            requests,
            jobs,
            queue_length,
        }
    }

    fn encode(&self) -> Result<Response, ApiError> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                e.to_string(),
            )
        })?;
        Ok((
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response())
    }
}

pub async fn track_requests(
    State(metrics): State<Arc<HttpMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`.
pub async fn render(State(state): State<AppState>) -> Result<Response, ApiError> {
    let counts = state.scheduler.store().db.count_jobs_by_state().await?;
    for s in JobState::ALL {
        let n = counts
            .iter()
            .find(|(st, _)| *st == s)
            .map(|(_, n)| *n)
            .unwrap_or(0);
        state
            .metrics
            .jobs
            .get_or_create(&StateLabels {
                state: s.as_str().to_string(),
            })
            .set(n);
    }
    state
        .metrics
        .queue_length
        .set(state.scheduler.queue_len() as i64);
    state.metrics.encode()
}

/// `GET /metrics` of the standalone inference server.
pub async fn render_registry(
    State(metrics): State<Arc<HttpMetrics>>,
) -> Result<Response, ApiError> {
    metrics.encode()
}
