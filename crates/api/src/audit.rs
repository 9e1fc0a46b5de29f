//! The audit trail: every call that changes something and every call that is denied is
//! recorded — when, who (the token's name, id, role and workspace), which route, on which
//! path, how it ended, from which address — and listed at `GET /api/v1/audit`.
//!
//! What is recorded is decided here, from the call alone: a method other than GET, HEAD or
//! OPTIONS changes something, except the POSTs that only read (MLflow's searches,
//! inference), recognised by their route as declared, never by the path the caller chose.
//! Events of calls without a valid token are dropped rather than waited for when the
//! writer is behind, so an unauthenticated flood cannot hold real callers up. Nothing secret is kept: not the token (only its id), not the body, not the
//! query string.
//!
//! Events go to the database through one writer task in batches, so the hot write paths
//! (`log-metric`, `log-batch`) pay a channel send rather than a transaction each. The send
//! waits when the writer is behind (bounded channel): a flood of calls slows down instead
//! of being forgotten. What is lost on a crash is what the writer had not written yet (a
//! batch: milliseconds); a graceful stop writes everything first ([`AuditLog::flush`]).

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use trainyard_core::time::now_ms;
use trainyard_core::Principal;
use trainyard_core::{AuditEvent, AuditOutcome};
use trainyard_store::{AuditFilter, Db};
use utoipa::{IntoParams, ToSchema};

use crate::extract::ApiQuery;
use crate::{ApiError, AppState, ErrorBody, ErrorCode};

/// Events waiting for the writer before a call waits for room.
const QUEUE: usize = 8192;
/// Most events written in one transaction.
const BATCH: usize = 512;
/// The longest path kept (a path is the caller's to choose).
const MAX_TARGET: usize = 512;
/// Largest page of `GET /api/v1/audit`.
const MAX_PAGE: u32 = 1000;

enum Message {
    Event(AuditEvent),
    /// Answered once every event sent before it is stored.
    Flush(oneshot::Sender<()>),
}

/// Hands audit events to the writer. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Message>,
    /// Events of calls without a token dropped while the writer was behind.
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl AuditLog {
    /// Starts the writer into `db` (needs a Tokio runtime). It ends when the last handle
    /// is dropped, after writing what it was given.
    pub fn start(db: Db) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_events(db, rx));
        Self {
            tx,
            dropped: Default::default(),
        }
    }

    async fn record(&self, event: AuditEvent) {
        if self.tx.send(Message::Event(event)).await.is_err() {
            tracing::error!("the audit writer is gone; an audit event is lost");
        }
    }

    fn record_if_room(&self, event: AuditEvent) {
        if self.tx.try_send(Message::Event(event)).is_err() {
            let dropped = self
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    "the audit writer is behind: events of calls without a token are dropped"
                );
            }
        }
    }

    /// Waits until every event recorded so far is in the database (or `within` passed).
    pub async fn flush(&self, within: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        let sent = async {
            self.tx.send(Message::Flush(tx)).await.ok()?;
            rx.await.ok()
        };
        matches!(tokio::time::timeout(within, sent).await, Ok(Some(())))
    }

    /// Deletes the events older than `keep`, every hour, while the server runs.
    pub async fn keep_for(db: Db, keep: Duration) -> Result<(), trainyard_store::StoreError> {
        let mut every = tokio::time::interval(Duration::from_secs(3600));
        loop {
            every.tick().await;
            let before =
                now_ms().saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
            let trimmed = db.trim_audit(before).await?;
            if trimmed > 0 {
                tracing::info!(trimmed, "audit events past their retention deleted");
            }
        }
    }
}

/// The writer: takes what is waiting (up to a batch), writes it in one transaction, and
/// retries a failed write until it lands, so an event once sent is not dropped.
async fn write_events(db: Db, mut rx: mpsc::Receiver<Message>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut flushes = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Event(e) => batch.push(e),
                Message::Flush(done) => flushes.push(done),
            }
            if batch.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        let mut pause = Duration::from_millis(100);
        while let Err(e) = db.append_audit(&batch).await {
            tracing::warn!(error = %e, events = batch.len(), "cannot write audit events; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
        batch.clear();
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Records the call when it changes something or is denied. Runs around auth, after
/// routing (so the route as declared is known); auth leaves the principal it recognised on
/// the response.
pub async fn record_calls(State(audit): State<AuditLog>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    // The route as declared, never the path the caller chose: `/…/{*path}` routes take
    // any tail, and a tail ending in `/search` must not pass a write off as a read. A
    // call no route matched is recorded.
    let changes = route
        .as_deref()
        .is_none_or(|route| crate::access::changes_something(&method, route));
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let outcome = AuditOutcome::of_status(status);
    if changes || outcome == AuditOutcome::Denied {
        let who = response.extensions().get::<Principal>();
        let mut target = path;
        if target.len() > MAX_TARGET {
            let mut end = MAX_TARGET;
            while !target.is_char_boundary(end) {
                end -= 1;
            }
            target.truncate(end);
        }
        let event = AuditEvent {
            id: trainyard_core::new_id(),
            at_ms: now_ms(),
            workspace: who.map(|p| p.workspace.clone()),
            principal: who.map(|p| match &p.user {
                Some(user) => format!("{user} ({})", p.name),
                None => p.name.clone(),
            }),
            token_id: who.map(|p| p.token_id.clone()),
            role: who.map(|p| p.role_label().to_string()),
            action: format!("{method} {}", route.as_deref().unwrap_or(&target)),
            target,
            status,
            outcome,
            client,
        };
        if who.is_some() {
            audit.record(event).await;
        } else {
            // Without a token anyone can call: such events never make a real caller wait
            // for the writer. When it is behind, they are counted and dropped.
            audit.record_if_room(event);
        }
    }
    response
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only events at or after this time (ms since the epoch).
    since_ms: Option<i64>,
    /// Only events before this time (ms since the epoch).
    until_ms: Option<i64>,
    /// Only `ok`, `denied` or `failed` calls.
    outcome: Option<String>,
    /// Only calls made with this token (its id).
    token_id: Option<String>,
    /// Only calls of the principal's workspace named so.
    workspace: Option<String>,
    /// Only actions starting with this (`POST /api/v1/jobs`).
    action: Option<String>,
    /// At most this many events (1-1000, default 100).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// One page of audit events, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The audit trail, newest first, for admins.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody, description = "not an admin of the workspace")),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    // A workspace's admins read its trail; owners read every workspace's.
    let workspace = match (&query.workspace, who.is_owner() && !who.narrowed) {
        (w, true) => w.clone(),
        (Some(w), false) if *w != who.workspace => {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                ErrorCode::NeedsOwner,
                "another workspace's trail needs an owner",
            ))
        }
        (_, false) => Some(who.workspace.clone()),
    };
    let outcome = match &query.outcome {
        Some(o) => Some(AuditOutcome::parse(o).ok_or_else(|| {
            ApiError::invalid_field(
                "outcome",
                format!("unknown outcome `{o}`; use ok, denied or failed"),
            )
        })?),
        None => None,
    };
    crate::page::check_cursor(query.cursor.as_deref())?;
    for (field, value) in [("since_ms", query.since_ms), ("until_ms", query.until_ms)] {
        if value.is_some_and(|v| v < 0) {
            return Err(ApiError::invalid_field(
                field,
                "must be a time in ms since the epoch",
            ));
        }
    }
    let limit = crate::page::limit(query.limit, 100, MAX_PAGE)?;
    let filter = AuditFilter {
        workspace,
        token_id: query.token_id.clone(),
        outcome,
        action_prefix: query.action.clone(),
        since_ms: query.since_ms,
        until_ms: query.until_ms,
        cursor: query.cursor.clone(),
        limit: limit + 1,
    };
    let mut events = state.tracking.db().list_audit(&filter).await?;
    let next_cursor = crate::page::cut(&mut events, limit, |e| &e.id);
    Ok(Json(AuditPage {
        events,
        next_cursor,
    }))
}
