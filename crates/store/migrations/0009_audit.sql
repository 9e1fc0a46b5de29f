-- The audit trail: every mutating call and every denied one, who made it, on what, and how
-- it ended. Rows are only ever inserted, and deleted only by retention once older than it.
-- No secret goes in: no token value, no request body, no query string.
CREATE TABLE audit_events (
    -- A UUIDv7 in hex: ids sort by time, so pages need no other column.
    id TEXT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    -- The principal's workspace; NULL when no token was recognised.
    workspace_id TEXT,
    principal TEXT,
    token_id TEXT,
    role TEXT,
    -- The method and route as declared ("POST /api/v1/jobs/{id}/cancel").
    action TEXT NOT NULL,
    -- The path called (names the object acted on).
    target TEXT NOT NULL,
    status INTEGER NOT NULL,
    -- ok, failed (4xx/5xx other than a denial) or denied (401, 403).
    outcome TEXT NOT NULL,
    client TEXT
);
CREATE INDEX audit_events_at ON audit_events (at_ms);
CREATE INDEX audit_events_token ON audit_events (token_id, id);
