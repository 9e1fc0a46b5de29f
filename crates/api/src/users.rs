//! REST v1 users, personal tokens and workspace members: who may call, and with which role
//! where. What each route needs is in `access`; the rules for tokens in
//! `trainyard_core::access`.

use axum::extract::State;

use crate::extract::ApiPath as Path;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use trainyard_core::access::{valid_name, TokenRefusal};
use trainyard_core::time::now_ms;
use trainyard_core::{Member, Principal, Role, TokenInfo, TokenRequest, UserInfo};
use trainyard_store::{MemberChange, NewToken};
use utoipa::{IntoParams, ToSchema};

use crate::extract::{ApiJson, ApiQuery};
use crate::{ApiError, AppState, ErrorBody, ErrorCode};

/// Who the caller is, where the call acts, and with what role.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    pub user: Option<String>,
    pub token_id: String,
    pub token_name: String,
    pub workspace: String,
    /// The role there; absent when the caller has none.
    pub role: Option<Role>,
    pub read_only: bool,
    pub narrowed: bool,
}

#[utoipa::path(get, path = "/api/v1/whoami", tag = "users",
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn whoami(Extension(who): Extension<Principal>) -> Json<WhoAmI> {
    Json(WhoAmI {
        user: who.user,
        token_id: who.token_id,
        token_name: who.name,
        workspace: who.workspace,
        role: who.role,
        read_only: who.read_only,
        narrowed: who.narrowed,
    })
}

/// A new token: its value, shown this once, and how it is listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// Every user's tokens (owners only).
    #[serde(default)]
    all: bool,
}

/// The caller's personal tokens (every user's with `all=true`, for owners).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "users", params(TokenQuery),
    responses((status = 200, body = TokenList), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_tokens(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiQuery(query): ApiQuery<TokenQuery>,
) -> Result<Json<TokenList>, ApiError> {
    if query.all && !who.is_owner() {
        return Err(needs_owner("listing every user's tokens"));
    }
    let user = match query.all {
        true => None,
        false => Some(user_id_of(&state, &who).await?),
    };
    let mut tokens = state.tracking.db().list_tokens(user.as_deref()).await?;
    // A narrowed token sees only the tokens of its workspace.
    if who.narrowed {
        tokens.retain(|t| t.workspace == who.workspace);
    }
    Ok(Json(TokenList { tokens }))
}

/// Makes a personal token acting in this call's workspace. Never wider than the caller's
/// own: a read-only or narrowed token makes only read-only or narrowed ones.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "users", request_body = TokenRequest,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_token(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(request): ApiJson<TokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let now = now_ms();
    match request.check(&who, now) {
        Ok(()) => {}
        Err(TokenRefusal::Invalid(f)) => return Err(ApiError::invalid_field(f.field, f.message)),
        Err(TokenRefusal::Wider(why)) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                why,
            ))
        }
    }
    // Only where the caller has a role (whether a workspace exists is not told to
    // strangers); owners anywhere that exists.
    if who.role.is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::NeedsViewer,
            format!(
                "a token for workspace `{}` needs a role there",
                who.workspace
            ),
        ));
    }
    let db = state.tracking.db();
    if !db.workspace_exists(&who.workspace).await? {
        return Err(no_workspace(&who.workspace));
    }
    let holder = match &request.user {
        Some(name) => db.find_user(name).await?.ok_or_else(|| no_user(name))?,
        None => {
            let name = who.user.as_deref().unwrap_or_default();
            db.find_user(name).await?.ok_or_else(|| no_user(name))?
        }
    };
    let expires_at_ms = request
        .expires_in_s
        .map(|s| now.saturating_add(s as i64 * 1000));
    let (id, token) = (trainyard_core::new_id(), trainyard_store::generate_token());
    let new = NewToken {
        id: &id,
        name: &request.name,
        workspace: &who.workspace,
        user_id: Some(&holder.id),
        narrowed: request.narrowed,
        read_only: request.read_only,
        expires_at_ms,
        created_at_ms: now,
    };
    db.insert_token(&new, &token).await?;
    let info = TokenInfo {
        id,
        name: request.name,
        user: Some(holder.name),
        workspace: who.workspace,
        narrowed: request.narrowed,
        read_only: request.read_only,
        expires_at_ms,
        created_at_ms: now,
    };
    Ok((StatusCode::CREATED, Json(CreatedToken { token, info })))
}

/// Revokes a token: one's own, any (owners), or one narrowed to a workspace one is admin of.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "users",
    params(("id" = String, Path, description = "the token's id")),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke_token(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let db = state.tracking.db();
    let gone = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::TokenNotFound,
            format!("no token `{id}` of yours"),
        )
    };
    let token = db.get_token(&id).await?.ok_or_else(gone)?;
    let own = token.user.is_some() && token.user == who.user;
    let admin_of_it = token.narrowed
        && token.workspace == who.workspace
        && who.role.is_some_and(|r| r >= Role::Admin);
    let reachable = !who.narrowed || token.workspace == who.workspace;
    if !reachable || !(own || who.is_owner() || admin_of_it) {
        // Another user's token is not told to exist.
        return Err(gone());
    }
    db.revoke_token(&id).await?;
    state.auth.forget();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserInfo>,
}

/// A user to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// 1-63 of a-z 0-9 - _ . (a letter or digit first).
    pub name: String,
    /// Cluster-wide owner.
    #[serde(default)]
    pub owner: bool,
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    responses((status = 200, body = UserList), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_users(State(state): State<AppState>) -> Result<Json<UserList>, ApiError> {
    Ok(Json(UserList {
        users: state.tracking.db().users().await?,
    }))
}

/// Adds a user (owners). Give them roles with `PUT /api/v1/members/{user}` and a token with
/// `POST /api/v1/tokens` naming them.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUser,
    responses((status = 201, body = UserInfo), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_user(
    State(state): State<AppState>,
    ApiJson(new): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<UserInfo>), ApiError> {
    if !valid_name(&new.name) {
        return Err(ApiError::invalid_field(
            "name",
            "1-63 of a-z 0-9 - _ . starting with a letter or digit",
        ));
    }
    let (id, now) = (trainyard_core::new_id(), now_ms());
    if !state
        .tracking
        .db()
        .create_user(&id, &new.name, new.owner, None, now)
        .await?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::AlreadyExists,
            format!("a user `{}` exists", new.name),
        )
        .with_field("name"));
    }
    Ok((
        StatusCode::CREATED,
        Json(UserInfo {
            id,
            name: new.name,
            owner: new.owner,
            has_password: false,
            created_at_ms: now,
            roles: Default::default(),
        }),
    ))
}

/// Removes a user with their tokens and roles (owners, not themselves). Their tokens stop
/// working at once on this server and within a minute (the auth cache) on others. The last
/// owner stays.
#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "users",
    params(("name" = String, Path, description = "the user")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_user(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    // Nobody locks themselves out by mistake: another owner removes an owner.
    if who.user.as_deref() == Some(name.as_str()) {
        return Err(ApiError::invalid_field(
            "name",
            "you cannot remove yourself; another owner can",
        ));
    }
    let db = state.tracking.db();
    let user = db.find_user(&name).await?.ok_or_else(|| no_user(&name))?;
    if user.owner && db.count_owners().await? <= 1 {
        return Err(ApiError::invalid_field(
            "name",
            "the last owner cannot be removed",
        ));
    }
    db.delete_user(&name).await?;
    state.auth.forget();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberList {
    pub workspace: String,
    pub members: Vec<Member>,
}

/// A role to give.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberRole {
    /// viewer, editor or admin (owner is cluster-wide, not a membership).
    pub role: Role,
}

/// The members of the workspace the call acts on (its admins).
#[utoipa::path(get, path = "/api/v1/members", tag = "users",
    responses((status = 200, body = MemberList), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_members(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<MemberList>, ApiError> {
    Ok(Json(MemberList {
        members: state.tracking.db().members(&who.workspace).await?,
        workspace: who.workspace,
    }))
}

/// Gives a user a role in the workspace the call acts on (its admins). The workspace's last
/// admin is given a lesser role only by an owner (409 `last_admin`).
#[utoipa::path(put, path = "/api/v1/members/{user}", tag = "users",
    params(("user" = String, Path, description = "the user")), request_body = MemberRole,
    responses((status = 200, body = Member), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_member(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(user): Path<String>,
    ApiJson(body): ApiJson<MemberRole>,
) -> Result<Json<Member>, ApiError> {
    if body.role == Role::Owner {
        return Err(ApiError::invalid_field(
            "role",
            "owner is cluster-wide (POST /api/v1/users with owner); members are viewer, editor or admin",
        ));
    }
    let db = state.tracking.db();
    let found = db.find_user(&user).await?.ok_or_else(|| no_user(&user))?;
    let change = db
        .change_member(
            &who.workspace,
            &found.id,
            Some(body.role),
            !owner_at_large(&who),
        )
        .await?;
    if change == MemberChange::LastAdmin {
        return Err(last_admin(&user, &who.workspace, "given a lesser role"));
    }
    state.auth.forget();
    Ok(Json(Member {
        user,
        role: body.role,
    }))
}

/// Takes a user's role in the workspace the call acts on away (its admins). Nobody removes
/// themselves (400 naming `user`), and the workspace's last admin is removed only by an
/// owner (409 `last_admin`).
#[utoipa::path(delete, path = "/api/v1/members/{user}", tag = "users",
    params(("user" = String, Path, description = "the user")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove_member(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(user): Path<String>,
) -> Result<StatusCode, ApiError> {
    if who.user.as_deref() == Some(user.as_str()) {
        return Err(ApiError::invalid_field(
            "user",
            "you cannot remove yourself; another admin of the workspace or an owner can",
        ));
    }
    let db = state.tracking.db();
    let found = db.find_user(&user).await?.ok_or_else(|| no_user(&user))?;
    match db
        .change_member(&who.workspace, &found.id, None, !owner_at_large(&who))
        .await?
    {
        MemberChange::Done => {}
        MemberChange::NotMember => return Err(no_user(&user)),
        MemberChange::LastAdmin => return Err(last_admin(&user, &who.workspace, "removed")),
    }
    state.auth.forget();
    Ok(StatusCode::NO_CONTENT)
}

/// An owner whose token is not narrowed: who may leave a workspace without an admin (a
/// token narrowed to the workspace acts as its members do).
fn owner_at_large(who: &Principal) -> bool {
    who.is_owner() && !who.narrowed
}

/// 409: the change would leave `workspace` without an admin.
fn last_admin(user: &str, workspace: &str, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::LastAdmin,
        format!(
            "`{user}` is the last admin of workspace `{workspace}` and is not {what}; make \
             another admin first (an owner may do it anyway)"
        ),
    )
}

/// The id of the caller's user.
async fn user_id_of(state: &AppState, who: &Principal) -> Result<String, ApiError> {
    let name = who.user.as_deref().unwrap_or_default();
    Ok(state
        .tracking
        .db()
        .find_user(name)
        .await?
        .ok_or_else(|| no_user(name))?
        .id)
}

fn no_user(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::UserNotFound,
        format!("no user `{name}` here"),
    )
}

pub(crate) fn no_workspace(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::WorkspaceNotFound,
        format!("no workspace `{name}`"),
    )
}

pub(crate) fn needs_owner(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::NeedsOwner,
        format!("{what} needs an owner"),
    )
}

/// A password to set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    /// 12 to 1024 characters; `null` removes the password (no login by password).
    pub password: Option<String>,
    /// The user's password now. Needed to change one's own once one is set (an owner's
    /// reset aside); with it, any of the user's tokens that is not narrowed may change it.
    #[serde(default)]
    pub current_password: Option<String>,
}

/// Sets or removes a user's password (for logging in to the UI and `trainyard login`); kept
/// as an argon2id hash. A password gives tokens as wide as its user's for up to 30 days at a
/// time, for ever, so setting one is never a way to widen a token: a narrowed token changes
/// no password (403 `token_narrowed`); one's own, once set, needs `current_password` (400
/// naming it when absent, 403 naming it when wrong); and without the current password (a
/// first password, or an owner setting anyone's) the token must not expire (403
/// `forbidden`). Another user's password needs an owner. `current_password` is braked as
/// login is (429 `too_many_attempts` naming it).
#[utoipa::path(put, path = "/api/v1/users/{name}/password", tag = "users",
    params(("name" = String, Path, description = "the user")), request_body = NewPassword,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_password(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<NewPassword>,
) -> Result<StatusCode, ApiError> {
    if who.narrowed {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::TokenNarrowed,
            format!(
                "this token is narrowed to workspace `{}` and changes no password: a password \
                 logs in to every workspace of its user",
                who.workspace
            ),
        ));
    }
    let own = who.user.as_deref() == Some(name.as_str());
    if !own && !who.is_owner() {
        return Err(needs_owner("another user's password"));
    }
    if body
        .password
        .as_ref()
        .is_some_and(|p| !trainyard_store::PASSWORD_LENGTH.contains(&p.chars().count()))
    {
        return Err(ApiError::invalid_field("password", "12 to 1024 characters"));
    }
    let db = state.tracking.db();
    let user = db.find_user(&name).await?.ok_or_else(|| no_user(&name))?;
    let proven = match (&body.current_password, &user.password_hash) {
        (None, _) => false,
        (Some(_), None) => {
            return Err(ApiError::invalid_field(
                "current_password",
                format!("`{name}` has no password yet; leave current_password out"),
            ))
        }
        (Some(given), Some(hash)) => {
            check_admitted(&state, &name, "current_password")?;
            let (given, hash) = (given.clone(), hash.clone());
            let matches = blocking(move || trainyard_store::verify_password(&given, &hash)).await?;
            if matches {
                state.passwords.succeeded(&name);
            } else {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    ErrorCode::Forbidden,
                    "current_password is not the user's password",
                )
                .with_field("current_password"));
            }
            true
        }
    };
    if !proven {
        // Without the current password: one's own first one, or an owner's reset. The
        // password then outlives the token that set it, so the token must not expire.
        if own && !who.is_owner() && user.password_hash.is_some() {
            return Err(ApiError::invalid_field(
                "current_password",
                "changing your own password needs the current one",
            ));
        }
        if who.expires_at_ms.is_some() {
            let refused = |message: String| {
                ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
            };
            return Err(match user.password_hash {
                None => refused(format!(
                    "`{name}` has no password yet, and the first one would outlive this token, \
                     which expires: set it with a token that does not expire"
                )),
                Some(_) => refused(format!(
                    "this token expires, and a password set without the current one would \
                     outlive it: give `{name}`'s current_password, or use a token that does \
                     not expire"
                ))
                .with_field("current_password"),
            });
        }
    }
    let hash = match body.password {
        None => None,
        Some(p) => Some(blocking(move || trainyard_store::hash_password(&p)).await?),
    };
    if !db.set_password_hash(&name, hash.as_deref()).await? {
        return Err(no_user(&name));
    }
    // Whoever logged in with the old password is signed out (the caller's own token
    // aside): a password changed because it leaked must not leave 30-day logins working.
    for token in db.list_tokens(Some(&user.id)).await? {
        if token.name == "login" && token.id != who.token_id {
            db.revoke_token(&token.id).await?;
        }
    }
    state.auth.forget();
    Ok(StatusCode::NO_CONTENT)
}

/// Runs slow password work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!("password hashing: {e}"),
        )
    })
}

/// What a login sends.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub user: String,
    pub password: String,
    /// The workspace the token acts in when a call names none (default: `default`).
    #[serde(default)]
    pub workspace: Option<String>,
    /// Seconds the token lasts: 12 hours when absent, 30 days at most.
    #[serde(default)]
    pub expires_in_s: Option<u64>,
}

/// Refuses a password check for `user` that comes too soon after too many (429
/// `too_many_attempts` naming `field`, with `Retry-After`): see [`crate::PasswordGuard`].
fn check_admitted(state: &AppState, user: &str, field: &str) -> Result<(), ApiError> {
    // Names no user can have share one brake, so made-up ones (of any length) cost the
    // guard one entry, not one each.
    let key = if valid_name(user) {
        user
    } else {
        "(not a user name)"
    };
    state.passwords.admit(key).map_err(|wait| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManyAttempts,
            format!(
                "too many password checks for `{key}` since its last success; the next is \
                 taken in {} s",
                crate::error::retry_after_s(wait)
            ),
        )
        .with_field(field)
        .with_retry_after(wait)
    })
}

/// Longest a login's token lasts.
const MAX_LOGIN_S: u64 = 30 * 24 * 3600;

/// Exchanges a user's password for a token that expires (the UI's login). Needs no
/// token. A wrong user or password is one 401, after the same work either way. As with
/// `POST /api/v1/tokens`, the token acts in a workspace where the user has a role (403
/// `needs_viewer` naming `workspace` otherwise; owners: any that exists). Without
/// `workspace`: `default` if the user has a role there, else the first of theirs by name.
/// Password guessing is braked per user name: past five checks since the user's last
/// success, each must wait for the one before (1 s, doubling to 5 min), else 429
/// `too_many_attempts` naming `password`, with `Retry-After`.
#[utoipa::path(post, path = "/api/v1/login", tag = "users", request_body = Login,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Login>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let expires_in_s = body.expires_in_s.unwrap_or(12 * 3600);
    if expires_in_s == 0 || expires_in_s > MAX_LOGIN_S {
        return Err(ApiError::invalid_field(
            "expires_in_s",
            "between 1 s and 30 days",
        ));
    }
    if body.workspace.as_deref().is_some_and(|w| !valid_name(w)) {
        return Err(ApiError::invalid_field("workspace", "not a workspace name"));
    }
    check_admitted(&state, &body.user, "password")?;
    let db = state.tracking.db();
    let user = db.find_user(&body.user).await?;
    // A real hash to check against when there is no user (or no password), so both
    // answers take as long.
    static NOBODY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = match user.as_ref().and_then(|u| u.password_hash.clone()) {
        Some(hash) => hash,
        None => {
            let nobody = tokio::task::spawn_blocking(|| {
                NOBODY
                    .get_or_init(|| trainyard_store::hash_password("no user has this password"))
                    .clone()
            })
            .await
            .unwrap_or_default();
            nobody
        }
    };
    let password = body.password.clone();
    let matches =
        tokio::task::spawn_blocking(move || trainyard_store::verify_password(&password, &hash))
            .await
            .unwrap_or(false);
    let user = match user {
        Some(u) if matches && u.password_hash.is_some() => u,
        _ => return Err(ApiError::unauthorized("unknown user or wrong password")),
    };
    state.passwords.succeeded(&body.user);
    let workspace = login_workspace(db, &user, body.workspace).await?;
    let now = now_ms();
    let expires_at_ms = Some(now.saturating_add(expires_in_s as i64 * 1000));
    let (id, token) = (trainyard_core::new_id(), trainyard_store::generate_token());
    db.insert_token(
        &NewToken {
            id: &id,
            name: "login",
            workspace: &workspace,
            user_id: Some(&user.id),
            narrowed: false,
            read_only: false,
            expires_at_ms,
            created_at_ms: now,
        },
        &token,
    )
    .await?;
    let info = TokenInfo {
        id,
        name: "login".into(),
        user: Some(user.name),
        workspace,
        narrowed: false,
        read_only: false,
        expires_at_ms,
        created_at_ms: now,
    };
    Ok((StatusCode::CREATED, Json(CreatedToken { token, info })))
}

/// The workspace a login's token acts in: the one asked for, where the user has a role (an
/// owner: any that exists); without one, `default` where they have a role, else the first
/// of theirs by name.
async fn login_workspace(
    db: &trainyard_store::Db,
    user: &trainyard_store::UserRow,
    asked: Option<String>,
) -> Result<String, ApiError> {
    let default = trainyard_core::DEFAULT_WORKSPACE;
    if user.owner {
        let workspace = asked.unwrap_or_else(|| default.to_string());
        if !db.workspace_exists(&workspace).await? {
            return Err(no_workspace(&workspace));
        }
        return Ok(workspace);
    }
    let roles = db.roles_of(&user.name).await?;
    let no_role = |message: String| {
        ApiError::new(StatusCode::FORBIDDEN, ErrorCode::NeedsViewer, message)
            .with_field("workspace")
    };
    match asked {
        // Whether a workspace without them exists is not told.
        Some(w) if roles.contains_key(&w) => Ok(w),
        Some(w) => Err(no_role(format!(
            "a token for workspace `{w}` needs a role there, and `{}` has none",
            user.name
        ))),
        None if roles.contains_key(default) => Ok(default.to_string()),
        None => roles.into_keys().next().ok_or_else(|| {
            no_role(format!(
                "`{}` has no role in any workspace; an admin of one can give one",
                user.name
            ))
        }),
    }
}
