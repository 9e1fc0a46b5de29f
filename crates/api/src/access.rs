//! What each route needs of its caller, decided from the route as declared (never from the
//! path the caller chose), and the 403 each shortfall answers.
//!
//! [`route_table`] names every route with its need. The token layer refuses a route that is
//! not in it (a new route cannot be added without saying who may call it), and the
//! authorization matrix test walks it. Most needs follow one rule: `read` when the call
//! only reads, `write` otherwise; the rest are named in [`NAMED`].

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use trainyard_core::{Need, Principal};

use crate::{ApiError, ErrorCode};

/// POST routes that only read, by how their declared path ends.
const READING_POSTS: &[&str] = &[
    "/search",
    "/search-datasets",
    "/get-latest-versions",
    "/infer",
    "/index",
    "/metric-histories",
];

/// Token routes that need more than the read/write rule says (or only a user's token).
const NAMED: &[(&str, &str, Need)] = &[
    ("GET", "/api/v1/whoami", Need::User),
    ("GET", "/api/v1/tokens", Need::User),
    ("POST", "/api/v1/tokens", Need::User),
    ("DELETE", "/api/v1/tokens/{id}", Need::User),
    ("GET", "/api/v1/workspaces", Need::User),
    ("GET", "/api/v1/members", Need::Admin),
    ("PUT", "/api/v1/members/{user}", Need::Admin),
    ("DELETE", "/api/v1/members/{user}", Need::Admin),
    ("GET", "/api/v1/audit", Need::Admin),
    ("PUT", "/api/v1/secrets/{name}", Need::Admin),
    ("DELETE", "/api/v1/secrets/{name}", Need::Admin),
    ("POST", "/api/v1/workspaces", Need::Owner),
    ("DELETE", "/api/v1/workspaces/{name}", Need::Owner),
    // A workspace's own admins cannot raise the quotas that limit it.
    ("PUT", "/api/v1/workspaces/{name}/policy", Need::Owner),
    ("GET", "/api/v1/users", Need::Owner),
    ("POST", "/api/v1/users", Need::Owner),
    ("DELETE", "/api/v1/users/{name}", Need::Owner),
    // One's own, or an owner's for anyone (checked in the handler).
    ("PUT", "/api/v1/users/{name}/password", Need::User),
    // Every workspace's serving and HTTP figures.
    ("GET", "/metrics", Need::Owner),
];

/// REST v1 (and two MLflow helper) routes that follow the read/write rule.
const REST: &[(&str, &str)] = &[
    ("GET", "/api/v1/jobs"),
    ("POST", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs/{id}"),
    ("POST", "/api/v1/jobs/{id}/cancel"),
    ("POST", "/api/v1/jobs/{id}/retry"),
    ("GET", "/api/v1/jobs/{id}/logs"),
    ("GET", "/api/v1/resources"),
    ("GET", "/api/v1/secrets"),
    ("GET", "/api/v1/studies"),
    ("POST", "/api/v1/studies"),
    ("GET", "/api/v1/studies/{name}"),
    ("GET", "/api/v1/studies/{name}/best"),
    ("POST", "/api/v1/studies/{name}/stop"),
    ("GET", "/api/v1/studies/{name}/trials"),
    ("POST", "/api/v1/studies/{name}/trials"),
    ("GET", "/api/v1/studies/{name}/trials/{number}"),
    ("PUT", "/api/v1/studies/{name}/trials/{number}"),
    ("POST", "/api/v1/studies/{name}/trials/{number}/report"),
    ("GET", "/api/v1/experiments"),
    ("GET", "/api/v1/runs"),
    ("GET", "/api/v1/runs/{id}"),
    ("GET", "/api/v1/runs/{id}/metrics/{key}"),
    ("POST", "/api/v1/runs/metric-histories"),
    ("GET", "/api/v1/models"),
    ("GET", "/api/v1/models/{name}"),
    ("GET", "/api/v1/models/{name}/versions/{version}/graph"),
    ("GET", "/api/v1/datasets"),
    ("GET", "/api/v1/datasets/{name}"),
    ("POST", "/api/v1/datasets/{name}/versions"),
    ("GET", "/api/v1/datasets/{name}/versions/{version}"),
    ("GET", "/api/v1/datasets/{name}/versions/{version}/head"),
    ("GET", "/api/v1/datasets/shards/{sha256}"),
    ("PUT", "/api/v1/datasets/shards/{sha256}"),
    ("GET", "/api/3.0/mlflow/server-info"),
    ("GET", "/get-artifact"),
];

/// MLflow's tracking, registry and logged-model routes, mounted under both prefixes.
const MLFLOW_PREFIXES: &[&str] = &["/api/2.0/mlflow", "/ajax-api/2.0/mlflow"];
const MLFLOW: &[(&str, &str)] = &[
    ("POST", "/experiments/create"),
    ("GET", "/experiments/get"),
    ("GET", "/experiments/get-by-name"),
    ("GET", "/experiments/search"),
    ("POST", "/experiments/search"),
    ("POST", "/experiments/update"),
    ("POST", "/experiments/delete"),
    ("POST", "/experiments/restore"),
    ("POST", "/experiments/set-experiment-tag"),
    ("POST", "/experiments/delete-experiment-tag"),
    ("POST", "/experiments/search-datasets"),
    ("POST", "/runs/create"),
    ("GET", "/runs/get"),
    ("POST", "/runs/update"),
    ("POST", "/runs/delete"),
    ("POST", "/runs/restore"),
    ("POST", "/runs/log-parameter"),
    ("POST", "/runs/set-tag"),
    ("POST", "/runs/delete-tag"),
    ("POST", "/runs/log-metric"),
    ("POST", "/runs/log-batch"),
    ("POST", "/runs/log-inputs"),
    ("POST", "/runs/outputs"),
    ("POST", "/runs/log-model"),
    ("GET", "/runs/search"),
    ("POST", "/runs/search"),
    ("GET", "/metrics/get-history"),
    ("GET", "/metrics/get-history-bulk-interval"),
    ("GET", "/metrics/get-history-bulk"),
    ("GET", "/artifacts/list"),
    ("POST", "/logged-models"),
    ("POST", "/logged-models/search"),
    ("GET", "/logged-models/{model_id}"),
    ("PATCH", "/logged-models/{model_id}"),
    ("DELETE", "/logged-models/{model_id}"),
    ("PATCH", "/logged-models/{model_id}/tags"),
    ("DELETE", "/logged-models/{model_id}/tags/{key}"),
    ("POST", "/logged-models/{model_id}/params"),
    ("GET", "/logged-models/{model_id}/artifacts/directories"),
    ("GET", "/logged-models/{model_id}/artifacts/files"),
    ("POST", "/upload-artifact"),
    ("POST", "/registered-models/create"),
    ("GET", "/registered-models/get"),
    ("PATCH", "/registered-models/update"),
    ("POST", "/registered-models/rename"),
    ("DELETE", "/registered-models/delete"),
    ("GET", "/registered-models/search"),
    ("GET", "/registered-models/get-latest-versions"),
    ("POST", "/registered-models/get-latest-versions"),
    ("POST", "/registered-models/set-tag"),
    ("DELETE", "/registered-models/delete-tag"),
    ("GET", "/registered-models/alias"),
    ("POST", "/registered-models/alias"),
    ("DELETE", "/registered-models/alias"),
    ("POST", "/model-versions/create"),
    ("GET", "/model-versions/get"),
    ("PATCH", "/model-versions/update"),
    ("POST", "/model-versions/transition-stage"),
    ("DELETE", "/model-versions/delete"),
    ("GET", "/model-versions/search"),
    ("GET", "/model-versions/get-download-uri"),
    ("POST", "/model-versions/set-tag"),
    ("DELETE", "/model-versions/delete-tag"),
];

/// MLflow's proxied artifact service.
const MLFLOW_ARTIFACTS: &[(&str, &str)] = &[
    ("GET", "/api/2.0/mlflow-artifacts/artifacts"),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts/{*path}"),
    ("PUT", "/api/2.0/mlflow-artifacts/artifacts/{*path}"),
    ("DELETE", "/api/2.0/mlflow-artifacts/artifacts/{*path}"),
    ("POST", "/api/2.0/mlflow-artifacts/mpu/create/{*path}"),
    ("PUT", "/api/2.0/mlflow-artifacts/mpu/upload/{id}/{part}"),
    ("POST", "/api/2.0/mlflow-artifacts/mpu/complete/{*path}"),
    ("POST", "/api/2.0/mlflow-artifacts/mpu/abort/{*path}"),
    ("GET", "/api/2.0/mlflow-artifacts/presigned/{*rest}"),
];

/// The Open Inference Protocol's routes, which check tokens themselves (`inference`):
/// reads need a role in the workspace (or nothing with anonymous inference on), loading
/// and unloading need `write`. Health answers without a token, and so does a model's
/// readiness (for `default`'s models); a token sent there is checked as a read.
const INFERENCE: &[(&str, &str, Option<Need>)] = &[
    ("GET", "/v2", Some(Need::Read)),
    ("GET", "/v2/models/stats", Some(Need::Read)),
    ("GET", "/v2/models/{m}", Some(Need::Read)),
    ("GET", "/v2/models/{m}/versions/{v}", Some(Need::Read)),
    ("GET", "/v2/models/{m}/config", Some(Need::Read)),
    (
        "GET",
        "/v2/models/{m}/versions/{v}/config",
        Some(Need::Read),
    ),
    ("GET", "/v2/models/{m}/stats", Some(Need::Read)),
    ("GET", "/v2/models/{m}/versions/{v}/stats", Some(Need::Read)),
    ("POST", "/v2/models/{m}/infer", Some(Need::Read)),
    (
        "POST",
        "/v2/models/{m}/versions/{v}/infer",
        Some(Need::Read),
    ),
    ("POST", "/v2/repository/index", Some(Need::Read)),
    ("POST", "/v2/repository/{repo}/index", Some(Need::Read)),
    ("POST", "/v2/repository/models/{m}/load", Some(Need::Write)),
    (
        "POST",
        "/v2/repository/models/{m}/unload",
        Some(Need::Write),
    ),
    (
        "POST",
        "/v2/repository/{repo}/models/{m}/load",
        Some(Need::Write),
    ),
    (
        "POST",
        "/v2/repository/{repo}/models/{m}/unload",
        Some(Need::Write),
    ),
    ("GET", "/v2/models/{m}/ready", None),
    ("GET", "/v2/models/{m}/versions/{v}/ready", None),
    ("GET", "/v2/health/live", None),
    ("GET", "/v2/health/ready", None),
];

/// Routes that answer without any token.
const OPEN: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/api/v1/openapi.json"),
    // A password for a token: no token yet.
    ("POST", "/api/v1/login"),
    // The web UI's page and files (its data comes from the token routes).
    ("GET", "/"),
    ("GET", "/index.html"),
    ("GET", "/assets/{*file}"),
];

/// One route as declared, and what a call of it needs (`None`: nothing, not even a token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    pub template: String,
    pub need: Option<Need>,
}

/// Every route of the server with its need: the token routes (REST v1, MLflow, metrics),
/// the inference routes, and the open ones.
pub fn route_table() -> Vec<Route> {
    let route = |method: &str, template: String, need: Option<Need>| Route {
        method: Method::from_bytes(method.as_bytes()).expect("a method"),
        template,
        need,
    };
    let mut out = Vec::new();
    let token_routes = REST
        .iter()
        .map(|(m, t)| (*m, t.to_string()))
        .chain(MLFLOW_PREFIXES.iter().flat_map(|prefix| {
            MLFLOW
                .iter()
                .map(move |(m, tail)| (*m, format!("{prefix}{tail}")))
        }))
        .chain(MLFLOW_ARTIFACTS.iter().map(|(m, t)| (*m, t.to_string())));
    for (method, template) in token_routes {
        let need = rule(method, &template);
        out.push(route(method, template, Some(need)));
    }
    for (method, template, need) in NAMED {
        out.push(route(method, template.to_string(), Some(*need)));
    }
    for (method, template, need) in INFERENCE {
        out.push(route(method, template.to_string(), *need));
    }
    for (method, template) in OPEN {
        out.push(route(method, template.to_string(), None));
    }
    out
}

/// Whether a route checks tokens itself rather than in the token layer.
pub fn is_inference(template: &str) -> bool {
    template == "/v2" || template.starts_with("/v2/")
}

/// The read/write rule.
fn rule(method: &str, template: &str) -> Need {
    let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::POST);
    if changes_something(&method, template) {
        Need::Write
    } else {
        Need::Read
    }
}

/// The token routes' needs by (method, template), built once.
fn token_needs() -> &'static HashMap<(Method, String), Need> {
    static NEEDS: OnceLock<HashMap<(Method, String), Need>> = OnceLock::new();
    NEEDS.get_or_init(|| {
        route_table()
            .into_iter()
            .filter(|r| !is_inference(&r.template))
            .filter_map(|r| Some(((r.method, r.template), r.need?)))
            .collect()
    })
}

/// What a call of `method` on the token route `template` needs; `None` for a route missing
/// from [`route_table`] (a call of one is refused).
pub fn need_of(method: &Method, template: &str) -> Option<Need> {
    let method = if *method == Method::HEAD {
        Method::GET
    } else {
        method.clone()
    };
    token_needs().get(&(method, template.to_string())).copied()
}

/// Whether `template` is a token route of the access table under some method.
fn declared_for_another_method(template: &str) -> bool {
    token_needs().keys().any(|(_, t)| t == template)
}

/// Whether a call of `method` on the route `template` may change something.
pub fn changes_something(method: &Method, template: &str) -> bool {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => false,
        Method::POST => !READING_POSTS.iter().any(|end| template.ends_with(end)),
        _ => true,
    }
}

/// Why `principal` may not make a call of `method` on `template` (with `path` the path
/// called), or `None` when it may.
pub fn refusal(
    principal: &Principal,
    method: &Method,
    template: &str,
    path: &str,
) -> Option<Denial> {
    let Some(need) = need_of(method, template) else {
        if declared_for_another_method(template) {
            // A known route called with a method it does not take: the router answers 405,
            // and no handler runs.
            return None;
        }
        tracing::error!(%method, template, "a route missing from access::route_table was called");
        return Some(Denial {
            code: ErrorCode::NeedsOwner,
            message: format!("{method} {template} is not in the server's access table"),
        });
    };
    if let Some(job) = &principal.job {
        // A job's token logs into its own run and reads and writes datasets; it never
        // manages anything, nor deletes, renames or re-points (see `mlflow::job_may_call`).
        let ok =
            matches!(need, Need::Read | Need::Write) && crate::mlflow::job_may_call(method, path);
        return (!ok).then(|| Denial {
            code: ErrorCode::Forbidden,
            message: format!(
                "a job's token (job {job}) may not {method} {path}: it reaches the tracking API \
                 and datasets of its workspace, writes only what its job owns, and never \
                 deletes, renames or moves aliases and stages"
            ),
        });
    }
    // A read-only token may still make (read-only) tokens: `TokenRequest::check` keeps
    // them no wider than itself.
    let makes_a_token = *method == Method::POST && template == "/api/v1/tokens";
    if principal.read_only && changes_something(method, template) && !makes_a_token {
        return Some(Denial {
            code: ErrorCode::ReadOnlyToken,
            message: format!("{method} {path} changes something and this token is read-only"),
        });
    }
    if principal.narrowed && need == Need::Owner {
        return Some(Denial {
            code: ErrorCode::TokenNarrowed,
            message: format!(
                "{method} {template} acts on the whole cluster; this token is narrowed to \
                 workspace `{}`",
                principal.workspace
            ),
        });
    }
    if principal.meets(need) {
        return None;
    }
    let (code, what) = match need {
        Need::User => (ErrorCode::NeedsUser, "a user's token".to_string()),
        Need::Read => (
            ErrorCode::NeedsViewer,
            format!("a role in workspace `{}`", principal.workspace),
        ),
        Need::Write => (
            ErrorCode::NeedsEditor,
            format!("editor or more in workspace `{}`", principal.workspace),
        ),
        Need::Admin => (
            ErrorCode::NeedsAdmin,
            format!("admin of workspace `{}`", principal.workspace),
        ),
        Need::Owner => (ErrorCode::NeedsOwner, "an owner".to_string()),
    };
    Some(Denial {
        code,
        message: format!("{method} {template} needs {what}"),
    })
}

/// A refused call: 403 with a code naming what was missing.
#[derive(Debug, Clone)]
pub struct Denial {
    pub code: ErrorCode,
    pub message: String,
}

impl Denial {
    /// In MLflow's error shape on its routes (its clients read that), in ours elsewhere.
    pub fn answer(self, path: &str) -> Response {
        if crate::mlflow::is_mlflow_path(path) {
            return crate::mlflow::MlflowError::permission_denied(format!(
                "{} ({})",
                self.message,
                self.code.as_str()
            ))
            .into_response();
        }
        ApiError::new(StatusCode::FORBIDDEN, self.code, self.message).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_not_audited_and_changes_are() {
        let cases = [
            (Method::GET, "/api/v1/jobs", false),
            (Method::HEAD, "/api/v1/datasets/shards/ab", false),
            (Method::POST, "/api/v1/jobs", true),
            (Method::POST, "/api/v1/jobs/x/cancel", true),
            (Method::POST, "/api/2.0/mlflow/runs/log-metric", true),
            (Method::POST, "/api/2.0/mlflow/runs/search", false),
            (
                Method::POST,
                "/api/2.0/mlflow/registered-models/search",
                false,
            ),
            (
                Method::POST,
                "/api/2.0/mlflow/registered-models/get-latest-versions",
                false,
            ),
            (Method::POST, "/v2/models/{m}/infer", false),
            (Method::POST, "/v2/repository/{repo}/index", false),
            // A wildcard route is judged by its template, not by the caller's tail.
            (
                Method::POST,
                "/api/2.0/mlflow-artifacts/mpu/complete/{*path}",
                true,
            ),
            (Method::POST, "/v2/repository/models/{m}/load", true),
            (
                Method::PATCH,
                "/api/2.0/mlflow/registered-models/rename",
                true,
            ),
            (Method::DELETE, "/api/2.0/mlflow/runs/delete", true),
            (Method::PUT, "/api/v1/datasets/shards/ab", true),
        ];
        for (method, path, audited) in cases {
            assert_eq!(changes_something(&method, path), audited, "{method} {path}");
        }
    }

    #[test]
    fn every_token_route_has_one_need() {
        assert_eq!(
            need_of(&Method::HEAD, "/api/v1/datasets/shards/{sha256}"),
            Some(Need::Read)
        );
        assert_eq!(need_of(&Method::POST, "/api/v1/jobs"), Some(Need::Write));
        assert_eq!(
            need_of(&Method::PUT, "/api/v1/workspaces/{name}/policy"),
            Some(Need::Owner)
        );
        assert_eq!(need_of(&Method::GET, "/api/v1/members"), Some(Need::Admin));
        assert_eq!(need_of(&Method::POST, "/api/v1/tokens"), Some(Need::User));
        assert_eq!(
            need_of(&Method::POST, "/ajax-api/2.0/mlflow/runs/search"),
            Some(Need::Read)
        );
        assert_eq!(need_of(&Method::GET, "/api/v1/no-such-route"), None);
        // No route is listed twice.
        let mut seen = std::collections::HashSet::new();
        for r in route_table() {
            assert!(
                seen.insert((r.method.clone(), r.template.clone())),
                "{r:?} twice"
            );
        }
    }
}
