//! The audit trail's table: appended to in batches by the API's audit writer, read newest
//! first in pages, trimmed only by retention.

use sqlx::Row;
use trainyard_core::{AuditEvent, AuditOutcome};

use crate::{Db, StoreError};

/// Which audit events to list; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this workspace's.
    pub workspace: Option<String>,
    pub token_id: Option<String>,
    pub outcome: Option<AuditOutcome>,
    /// Actions starting with this (`POST /api/v1/jobs`).
    pub action_prefix: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Older than this event id (the last of the previous page).
    pub cursor: Option<String>,
    pub limit: u32,
}

impl Db {
    /// Appends `events` in one transaction.
    pub async fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for e in events {
            sqlx::query(
                "INSERT INTO audit_events (id, at_ms, workspace_id, principal, token_id, role, \
                 action, target, status, outcome, client) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(&e.id)
            .bind(e.at_ms)
            .bind(e.workspace.clone())
            .bind(e.principal.clone())
            .bind(e.token_id.clone())
            .bind(e.role.clone())
            .bind(&e.action)
            .bind(&e.target)
            .bind(i32::from(e.status))
            .bind(e.outcome.as_str())
            .bind(e.client.clone())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Audit events matching `filter`, newest first.
    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let mut sql = "SELECT id, at_ms, workspace_id, principal, token_id, role, action, target, \
                       status, outcome, client FROM audit_events WHERE 1 = 1"
            .to_string();
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        let mut texts: Vec<String> = Vec::new();
        if let Some(w) = &filter.workspace {
            sql += &format!(" AND workspace_id = {}", next());
            texts.push(w.clone());
        }
        if let Some(t) = &filter.token_id {
            sql += &format!(" AND token_id = {}", next());
            texts.push(t.clone());
        }
        if let Some(o) = filter.outcome {
            sql += &format!(" AND outcome = {}", next());
            texts.push(o.as_str().to_string());
        }
        if let Some(prefix) = &filter.action_prefix {
            // A prefix compared with SUBSTR, so `%` and `_` in it mean themselves.
            sql += &format!(
                " AND SUBSTR(action, 1, {}) = {}",
                prefix.chars().count(),
                next()
            );
            texts.push(prefix.clone());
        }
        if let Some(c) = &filter.cursor {
            sql += &format!(" AND id < {}", next());
            texts.push(c.clone());
        }
        let mut numbers: Vec<i64> = Vec::new();
        if let Some(since) = filter.since_ms {
            sql += &format!(" AND at_ms >= {}", next());
            numbers.push(since);
        }
        if let Some(until) = filter.until_ms {
            sql += &format!(" AND at_ms < {}", next());
            numbers.push(until);
        }
        sql += &format!(" ORDER BY id DESC LIMIT {}", next());
        numbers.push(i64::from(filter.limit));
        let mut query = sqlx::query(&sql);
        for t in texts {
            query = query.bind(t);
        }
        for n in numbers {
            query = query.bind(n);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                let outcome: String = row.try_get("outcome")?;
                let status: i32 = row.try_get("status")?;
                Ok(AuditEvent {
                    id: row.try_get("id")?,
                    at_ms: row.try_get("at_ms")?,
                    workspace: row.try_get("workspace_id")?,
                    principal: row.try_get("principal")?,
                    token_id: row.try_get("token_id")?,
                    role: row.try_get("role")?,
                    action: row.try_get("action")?,
                    target: row.try_get("target")?,
                    status: u16::try_from(status).unwrap_or(0),
                    outcome: AuditOutcome::parse(&outcome).unwrap_or(AuditOutcome::Failed),
                    client: row.try_get("client")?,
                })
            })
            .collect()
    }

    /// Deletes the events older than `before_ms` (retention); returns how many.
    pub async fn trim_audit(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM audit_events WHERE at_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
