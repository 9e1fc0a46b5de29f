//! Bearer-token auth: every route but health and the API description needs a token.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use std::time::{Duration, Instant};

/// How long a recognised token is trusted without asking the database again.
const CACHE_FOR: Duration = Duration::from_secs(60);
/// The same for a job's token.
const JOB_CACHE_FOR: Duration = Duration::from_secs(5);

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use trainyard_store::{hash_token, Db, Principal};

use crate::ApiError;
use crate::ErrorCode;

/// Recognises tokens; known ones are cached by hash for a minute, so a request rarely
/// costs a query and a revoked token (a finished job's) stops working soon after.
#[derive(Clone)]
pub struct Auth {
    backend: Backend,
    known: Arc<RwLock<HashMap<String, (Principal, Instant)>>>,
}

#[derive(Clone)]
enum Backend {
    Db(Db),
    /// One admin token, by hash: the standalone `trainyard serve`, which has no database.
    Fixed(String),
}

impl Auth {
    pub fn new(db: Db) -> Self {
        Self {
            backend: Backend::Db(db),
            known: Arc::default(),
        }
    }

    /// Accepts exactly `token` (as an admin).
    pub fn fixed(token: &str) -> Self {
        Self {
            backend: Backend::Fixed(hash_token(token)),
            known: Arc::default(),
        }
    }

    pub async fn principal(&self, token: &str) -> Result<Option<Principal>, ApiError> {
        let hash = hash_token(token);
        let db = match &self.backend {
            Backend::Db(db) => db,
            Backend::Fixed(admin) => {
                return Ok((*admin == hash).then(|| Principal {
                    token_id: "admin".to_string(),
                    workspace: trainyard_core::DEFAULT_WORKSPACE.to_string(),
                    name: "admin (TRAINYARD_ADMIN_TOKEN)".to_string(),
                    role: "admin".to_string(),
                }))
            }
        };
        if let Some((p, at)) = self.known.read().get(&hash) {
            // A job's token is deleted when its attempt ends: trust it only briefly, so it
            // stops working within seconds of that.
            let trusted_for = if p.role == "job" {
                JOB_CACHE_FOR
            } else {
                CACHE_FOR
            };
            if at.elapsed() < trusted_for {
                return Ok(Some(p.clone()));
            }
        }
        let found = db.find_token(token).await?;
        if let Some(p) = &found {
            self.known.write().insert(hash, (p.clone(), Instant::now()));
        } else {
            self.known.write().remove(&hash);
        }
        Ok(found)
    }
}

/// `Bearer TOKEN`, or `Basic` credentials carrying the token as password (or as user name
/// when the password is empty) — how MLflow clients send `MLFLOW_TRACKING_PASSWORD`.
pub(crate) fn token_from_header(value: &str) -> Option<String> {
    use base64::Engine;
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    let token = if scheme.eq_ignore_ascii_case("bearer") {
        rest.to_string()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
        if password.is_empty() { user } else { password }.to_string()
    } else {
        return None;
    };
    (!token.is_empty()).then_some(token)
}

pub async fn require_token(
    State(auth): State<Auth>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("send `Authorization: Bearer TOKEN`"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(token_from_header)
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer TOKEN`"))?;
    let principal = auth
        .principal(&token)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown token"))?;
    // A job's token logs into tracking and reads and writes datasets; it cannot submit or
    // cancel jobs, nor delete, rename or re-point anything (see `mlflow::job_may_call`).
    let mut response = allowed(&principal, request, next).await;
    // Who made the call, for the audit trail around this layer.
    response.extensions_mut().insert(principal);
    Ok(response)
}

/// Runs the call when `principal` may make it; answers 403 otherwise.
async fn allowed(principal: &Principal, mut request: Request, next: Next) -> Response {
    if principal.role == "job"
        && !crate::mlflow::job_may_call(request.method(), request.uri().path())
    {
        let path = request.uri().path();
        let message = format!(
            "a job's token may not {} {path}: it reaches the tracking API and datasets, writes \
             only what its job owns, and never deletes, renames or moves aliases and stages",
            request.method()
        );
        // MLflow clients read MLflow's error shape.
        if path.starts_with("/api/2.0/mlflow")
            || path.starts_with("/ajax-api/")
            || path.starts_with("/api/3.0/mlflow")
        {
            return crate::mlflow::MlflowError::permission_denied(message).into_response();
        }
        return ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            message,
        )
        .into_response();
    }
    request.extensions_mut().insert(principal.clone());
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::token_from_header;

    #[test]
    fn bearer_and_basic() {
        assert_eq!(token_from_header("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(token_from_header("bearer  abc ").as_deref(), Some("abc"));
        // "user:tok" and "tok:" in base64.
        assert_eq!(
            token_from_header("Basic dXNlcjp0b2s=").as_deref(),
            Some("tok")
        );
        assert_eq!(token_from_header("Basic dG9rOg==").as_deref(), Some("tok"));
        assert_eq!(token_from_header("Basic !!!"), None);
        assert_eq!(token_from_header("Bearer "), None);
        assert_eq!(token_from_header("Digest x"), None);
    }
}
