//! What each route needs of its caller, decided from the route as declared (never from the
//! path the caller chose), and the 403 each shortfall answers. One table for the whole
//! API: a route not named below needs `read` when it only reads and `write` otherwise, so a
//! new route is never left open.

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
];

/// Routes that need more than read/write (or only a user's token), by method and template.
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
    ("POST", "/api/v1/workspaces", Need::Owner),
    ("DELETE", "/api/v1/workspaces/{name}", Need::Owner),
    // A workspace's own admins cannot raise the quotas that limit it.
    ("PUT", "/api/v1/workspaces/{name}/policy", Need::Owner),
    ("GET", "/api/v1/users", Need::Owner),
    ("POST", "/api/v1/users", Need::Owner),
    ("DELETE", "/api/v1/users/{name}", Need::Owner),
    // Every workspace's serving and HTTP figures.
    ("GET", "/metrics", Need::Owner),
];

/// Whether a call of `method` on the route `template` may change something.
pub fn changes_something(method: &Method, template: &str) -> bool {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => false,
        Method::POST => !READING_POSTS.iter().any(|end| template.ends_with(end)),
        _ => true,
    }
}

/// What a call of `method` on the route `template` needs.
pub fn need_of(method: &Method, template: &str) -> Need {
    let method = if *method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    if let Some((_, _, need)) = NAMED
        .iter()
        .find(|(m, t, _)| *m == method && *t == template)
    {
        return *need;
    }
    if changes_something(
        &Method::from_bytes(method.as_bytes()).unwrap_or(Method::POST),
        template,
    ) {
        Need::Write
    } else {
        Need::Read
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
    let need = need_of(method, template);
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
    if principal.read_only && changes_something(method, template) {
        return Some(Denial {
            code: ErrorCode::ReadOnlyToken,
            message: format!("{method} {path} changes something and this token is read-only"),
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
    fn named_routes_need_more_than_read_or_write() {
        assert_eq!(
            need_of(&Method::HEAD, "/api/v1/datasets/shards/{sha256}"),
            Need::Read
        );
        assert_eq!(need_of(&Method::POST, "/api/v1/jobs"), Need::Write);
        assert_eq!(
            need_of(&Method::PUT, "/api/v1/workspaces/{name}/policy"),
            Need::Owner
        );
        assert_eq!(need_of(&Method::GET, "/api/v1/members"), Need::Admin);
        assert_eq!(need_of(&Method::POST, "/api/v1/tokens"), Need::User);
    }
}
