//! The audit trail's record: who made a call that changed something or was denied, on
//! what, and how it ended. Built in `api` (which knows the calls), kept by `store`.

use serde::{Deserialize, Serialize};

/// How an audited call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutcome {
    /// Answered 1xx–3xx.
    Ok,
    /// Refused for want of a valid token (401) or a permission (403).
    Denied,
    /// Any other 4xx or 5xx.
    Failed,
}

impl AuditOutcome {
    pub fn of_status(status: u16) -> Self {
        match status {
            401 | 403 => Self::Denied,
            400.. => Self::Failed,
            _ => Self::Ok,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Denied => "denied",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Ok, Self::Denied, Self::Failed]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// One audited call. Holds no secret: no token value, no request body, no query string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// Sorts by time (a UUIDv7); pages continue from the last one seen.
    pub id: String,
    pub at_ms: i64,
    /// The caller's workspace; absent when no token was recognised.
    pub workspace: Option<String>,
    /// The token's name (who), its id and role; absent when no token was recognised.
    pub principal: Option<String>,
    pub token_id: Option<String>,
    pub role: Option<String>,
    /// Method and route as declared: `POST /api/v1/jobs/{id}/cancel`.
    pub action: String,
    /// The path called, which names the object acted on.
    pub target: String,
    pub status: u16,
    pub outcome: AuditOutcome,
    /// The peer's address as the server saw it.
    pub client: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(AuditOutcome::of_status(200), AuditOutcome::Ok);
        assert_eq!(AuditOutcome::of_status(304), AuditOutcome::Ok);
        assert_eq!(AuditOutcome::of_status(401), AuditOutcome::Denied);
        assert_eq!(AuditOutcome::of_status(403), AuditOutcome::Denied);
        assert_eq!(AuditOutcome::of_status(404), AuditOutcome::Failed);
        assert_eq!(AuditOutcome::of_status(500), AuditOutcome::Failed);
        for o in [AuditOutcome::Ok, AuditOutcome::Denied, AuditOutcome::Failed] {
            assert_eq!(AuditOutcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(AuditOutcome::parse("maybe"), None);
    }
}
