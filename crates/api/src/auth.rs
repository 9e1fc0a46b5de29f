//! Bearer-token auth: every route but health and the API description needs a token.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use trainyard_store::{hash_token, Db, Principal};

use crate::{ApiError, AppState};

/// Recognises tokens; known ones are cached by hash so a request costs no query.
#[derive(Clone)]
pub struct Auth {
    db: Db,
    known: Arc<RwLock<HashMap<String, Principal>>>,
}

impl Auth {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            known: Arc::default(),
        }
    }

    pub async fn principal(&self, token: &str) -> Result<Option<Principal>, ApiError> {
        let hash = hash_token(token);
        if let Some(p) = self.known.read().unwrap().get(&hash) {
            return Ok(Some(p.clone()));
        }
        let found = self.db.find_token(token).await?;
        if let Some(p) = &found {
            self.known.write().unwrap().insert(hash, p.clone());
        }
        Ok(found)
    }
}

pub async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("send `Authorization: Bearer TOKEN`"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer TOKEN`"))?;
    let principal = state
        .auth
        .principal(token)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown token"))?;
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
}
