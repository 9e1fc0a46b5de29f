//! Bearer-token auth and the workspace a call acts on. Every route but health and the API
//! description needs a token; the route's need (`access`) is then checked against the
//! caller's role in the workspace the call names.
//!
//! Which workspace: a token narrowed to one acts only there; otherwise the
//! `X-Trainyard-Workspace` header names it, else the token's own workspace (`default` for
//! the first admin's). A job's token is narrowed to its job's workspace.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::RwLock;
use trainyard_core::time::now_ms;
use trainyard_core::{Principal, Role};
use trainyard_store::{hash_token, Db, Holder, TokenGrant};

use crate::{ApiError, ErrorCode};

/// The header that names the workspace a call acts on.
pub const WORKSPACE_HEADER: &str = "x-trainyard-workspace";

/// How long a recognised token, and a user's role in a workspace, are trusted without
/// asking the database again. A change that takes access away, made through any server,
/// also moves the database's access revision, which ends the trust sooner (see
/// [`REVISION_EVERY`]); this bounds what nothing signals (a row changed by hand).
pub const CACHE_FOR: Duration = Duration::from_secs(60);
/// How often the access revision is read (on a call, by the first call after this long):
/// servers sharing a database see each other's revocations within about this long, for one
/// small read a second whatever the traffic.
pub const REVISION_EVERY: Duration = Duration::from_secs(1);
/// The same for a job's token, which is deleted when its attempt ends.
const JOB_CACHE_FOR: Duration = Duration::from_secs(5);
/// Entries kept before the caches are emptied (a flood of distinct tokens cannot grow them
/// without bound).
const CACHE_ENTRIES: usize = 65_536;

/// Recognises tokens and resolves roles, with both cached briefly.
#[derive(Clone)]
pub struct Auth {
    backend: Backend,
    grants: Arc<RwLock<HashMap<String, (TokenGrant, Instant)>>>,
    roles: Arc<RwLock<HashMap<UserInWorkspace, (Standing, Instant)>>>,
    /// Moves at every [`Auth::forget`]: a lookup that began before one does not fill the
    /// caches after it (it may have read what the change took away).
    generation: Arc<AtomicU64>,
    revision: Arc<parking_lot::Mutex<Revision>>,
}

/// The last access revision read, and when it was last asked for.
#[derive(Default)]
struct Revision {
    seen: Option<i64>,
    asked_at: Option<Instant>,
}

/// (user id, workspace): whose standing where.
type UserInWorkspace = (String, String);

/// What a user is in one workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Role(Option<Role>),
    /// The workspace does not exist.
    NoWorkspace,
}

#[derive(Clone)]
enum Backend {
    Db(Db),
    /// One owner token, by hash: the standalone `trainyard serve`, which has no database.
    Fixed(String),
}

/// Why a call got no principal.
#[derive(Debug)]
pub enum Refused {
    /// 401: no, an unknown or an expired token.
    Unauthenticated(String),
    /// 400: a malformed workspace header.
    BadWorkspace(String),
    /// 403: the token is narrowed to another workspace (who asked, for the audit trail).
    Narrowed(String, Box<Principal>),
    /// 404: an owner named a workspace that does not exist.
    NoWorkspace(String),
    Store(ApiError),
}

impl Refused {
    fn answer(self, path: &str) -> Response {
        match self {
            Refused::Unauthenticated(m) => ApiError::unauthorized(m).into_response(),
            Refused::BadWorkspace(m) => {
                ApiError::invalid_field("X-Trainyard-Workspace", m).into_response()
            }
            Refused::Narrowed(m, who) => {
                let mut response = crate::access::Denial {
                    code: ErrorCode::TokenNarrowed,
                    message: m,
                }
                .answer(path);
                response.extensions_mut().insert(*who);
                response
            }
            Refused::NoWorkspace(name) => ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::WorkspaceNotFound,
                format!("no workspace `{name}`"),
            )
            .into_response(),
            Refused::Store(e) => e.into_response(),
        }
    }
}

impl Auth {
    pub fn new(db: Db) -> Self {
        Self {
            backend: Backend::Db(db),
            grants: Arc::default(),
            roles: Arc::default(),
            generation: Arc::default(),
            revision: Arc::default(),
        }
    }

    /// Accepts exactly `token`, as an owner.
    pub fn fixed(token: &str) -> Self {
        Self {
            backend: Backend::Fixed(hash_token(token)),
            grants: Arc::default(),
            roles: Arc::default(),
            generation: Arc::default(),
            revision: Arc::default(),
        }
    }

    /// Who `token` acts as in the workspace `named` (by the header), or why it may not.
    pub async fn principal(&self, token: &str, named: Option<&str>) -> Result<Principal, Refused> {
        let unknown = || Refused::Unauthenticated("unknown token".into());
        if let Some(name) = named {
            if !trainyard_core::access::valid_name(name) {
                return Err(Refused::BadWorkspace(format!(
                    "`{}` is not a workspace name (1-63 of a-z 0-9 - _ .)",
                    name.escape_debug()
                )));
            }
        }
        self.follow_revision().await;
        let grant = self.grant(token).await?.ok_or_else(unknown)?;
        if grant.expires_at_ms.is_some_and(|at| at <= now_ms()) {
            return Err(Refused::Unauthenticated(format!(
                "token `{}` expired",
                grant.name
            )));
        }
        // A job's token acts only in its job's workspace, whatever its row says (tokens
        // minted before narrowing existed say nothing).
        let narrowed = grant.narrowed || matches!(grant.holder, Holder::Job { .. });
        let workspace = match named {
            Some(name) if narrowed && name != grant.workspace => {
                let who = Principal {
                    token_id: grant.token_id.clone(),
                    name: grant.name.clone(),
                    user: match &grant.holder {
                        Holder::User { name, .. } => Some(name.clone()),
                        Holder::Job { .. } => None,
                    },
                    workspace: name.to_string(),
                    role: None,
                    read_only: grant.read_only,
                    narrowed: true,
                    expires_at_ms: grant.expires_at_ms,
                    job: match &grant.holder {
                        Holder::Job { job_id } => Some(job_id.clone()),
                        Holder::User { .. } => None,
                    },
                };
                return Err(Refused::Narrowed(
                    format!(
                        "this token acts only in workspace `{}`, not `{name}`",
                        grant.workspace
                    ),
                    Box::new(who),
                ));
            }
            Some(name) => name.to_string(),
            None => grant.workspace.clone(),
        };
        let (user, role, job) = match &grant.holder {
            Holder::Job { job_id } => (None, None, Some(job_id.clone())),
            Holder::User { id, name, owner } => {
                let standing = if *owner {
                    self.owner_standing(id, &workspace).await?
                } else {
                    self.standing(id, &workspace).await?
                };
                match standing {
                    Standing::Role(role) => (Some(name.clone()), role, None),
                    Standing::NoWorkspace => return Err(Refused::NoWorkspace(workspace)),
                }
            }
        };
        Ok(Principal {
            token_id: grant.token_id,
            name: grant.name,
            user,
            workspace,
            role,
            read_only: grant.read_only,
            narrowed,
            expires_at_ms: grant.expires_at_ms,
            job,
        })
    }

    /// Forgets every cached token and role (after a change made through this server, so it
    /// takes effect at once here; other servers follow within [`REVISION_EVERY`]).
    pub fn forget(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.grants.write().clear();
        self.roles.write().clear();
    }

    /// Reads the database's access revision when it was last read [`REVISION_EVERY`] ago or
    /// more, and forgets the caches when another server moved it. One call asks; calls
    /// beside it go on with the caches meanwhile. When the database cannot answer, nothing
    /// cached is trusted (the lookups that follow report the error).
    async fn follow_revision(&self) {
        let Backend::Db(db) = &self.backend else {
            return;
        };
        {
            let mut revision = self.revision.lock();
            if revision
                .asked_at
                .is_some_and(|at| at.elapsed() < REVISION_EVERY)
            {
                return;
            }
            revision.asked_at = Some(Instant::now());
        }
        match db.access_revision().await {
            Ok(now) => {
                // The first read forgets too: calls beside it may have cached what a change
                // made before that read took away.
                let before = self.revision.lock().seen.replace(now);
                if before != Some(now) {
                    self.forget();
                }
            }
            Err(e) => {
                tracing::warn!("cannot read the access revision, so cached tokens and roles are forgotten: {e}");
                self.forget();
            }
        }
    }

    async fn grant(&self, token: &str) -> Result<Option<TokenGrant>, Refused> {
        let hash = hash_token(token);
        let db = match &self.backend {
            Backend::Db(db) => db,
            Backend::Fixed(owner) => {
                return Ok((*owner == hash).then(|| TokenGrant {
                    token_id: "admin".to_string(),
                    name: "admin (TRAINYARD_ADMIN_TOKEN)".to_string(),
                    workspace: trainyard_core::DEFAULT_WORKSPACE.to_string(),
                    narrowed: false,
                    read_only: false,
                    expires_at_ms: None,
                    holder: Holder::User {
                        id: "admin".to_string(),
                        name: "admin".to_string(),
                        owner: true,
                    },
                }))
            }
        };
        if let Some((grant, at)) = self.grants.read().get(&hash) {
            let trusted_for = match grant.holder {
                Holder::Job { .. } => JOB_CACHE_FOR,
                Holder::User { .. } => CACHE_FOR,
            };
            if at.elapsed() < trusted_for {
                return Ok(Some(grant.clone()));
            }
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let found = db
            .find_token(token)
            .await
            .map_err(|e| Refused::Store(e.into()))?;
        let mut grants = self.grants.write();
        if self.generation.load(Ordering::SeqCst) != generation {
            // Forgotten meanwhile: what was read may be what the change took away.
            return Ok(found);
        }
        if grants.len() >= CACHE_ENTRIES {
            grants.clear();
        }
        match &found {
            Some(grant) => {
                grants.insert(hash, (grant.clone(), Instant::now()));
            }
            None => {
                grants.remove(&hash);
            }
        }
        Ok(found)
    }

    /// An owner is owner of every workspace that exists.
    async fn owner_standing(&self, user: &str, workspace: &str) -> Result<Standing, Refused> {
        self.cached_standing(user, workspace, |db: Db| async move {
            let exists = db.workspace_exists(workspace).await?;
            Ok(if exists {
                Standing::Role(Some(Role::Owner))
            } else {
                Standing::NoWorkspace
            })
        })
        .await
    }

    /// A user's role is their membership; a workspace they are not in (or that does not
    /// exist: its existence is not told to strangers) gives none.
    async fn standing(&self, user: &str, workspace: &str) -> Result<Standing, Refused> {
        self.cached_standing(user, workspace, |db: Db| async move {
            Ok(Standing::Role(db.member_role(workspace, user).await?))
        })
        .await
    }

    async fn cached_standing<F, Fut>(
        &self,
        user: &str,
        workspace: &str,
        look_up: F,
    ) -> Result<Standing, Refused>
    where
        F: FnOnce(Db) -> Fut,
        Fut: std::future::Future<Output = Result<Standing, trainyard_store::StoreError>>,
    {
        let db = match &self.backend {
            Backend::Db(db) => db,
            Backend::Fixed(_) => return Ok(Standing::Role(Some(Role::Owner))),
        };
        let key = (user.to_string(), workspace.to_string());
        if let Some((standing, at)) = self.roles.read().get(&key) {
            if at.elapsed() < CACHE_FOR {
                return Ok(*standing);
            }
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let standing = look_up(db.clone())
            .await
            .map_err(|e| Refused::Store(e.into()))?;
        let mut roles = self.roles.write();
        if self.generation.load(Ordering::SeqCst) != generation {
            return Ok(standing);
        }
        if roles.len() >= CACHE_ENTRIES {
            roles.clear();
        }
        roles.insert(key, (standing, Instant::now()));
        Ok(standing)
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

/// Recognises the token, chooses the workspace, and runs the call when the caller's role
/// there meets the route's need; answers 401, 403 (a code naming what is missing) or 404
/// otherwise. The principal is left on the response for the audit trail around this layer.
pub async fn require_token(State(auth): State<Auth>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let token = match request.headers().get(AUTHORIZATION) {
        None => {
            return ApiError::unauthorized("send `Authorization: Bearer TOKEN`").into_response()
        }
        Some(header) => match header.to_str().ok().and_then(token_from_header) {
            Some(token) => token,
            None => {
                return ApiError::unauthorized("the Authorization header must be `Bearer TOKEN`")
                    .into_response()
            }
        },
    };
    let named = match request.headers().get(WORKSPACE_HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(name)) => Some(name.trim().to_string()),
        Some(Err(_)) => {
            return ApiError::invalid_field("X-Trainyard-Workspace", "not visible ASCII")
                .into_response()
        }
    };
    let principal = match auth.principal(&token, named.as_deref()).await {
        Ok(p) => p,
        Err(refused) => return refused.answer(&path),
    };
    // The route as declared decides the need (unmatched calls never reach route layers).
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    let mut response = match crate::access::refusal(&principal, request.method(), &template, &path)
    {
        Some(denial) => denial.answer(&path),
        None => {
            request.extensions_mut().insert(principal.clone());
            next.run(request).await
        }
    };
    response.extensions_mut().insert(principal);
    response
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
