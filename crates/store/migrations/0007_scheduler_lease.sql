-- Several servers may share one PostgreSQL database; one of them schedules at a time. The
-- lease says which, until when; `epoch` grows at every takeover and fences the starts of
-- jobs: a start is written only while its server still holds the epoch it read.
CREATE TABLE scheduler_lease (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    address TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
-- A cancel asked of a server that does not schedule: the leader carries it out.
ALTER TABLE jobs ADD COLUMN cancel_requested_at_ms BIGINT;
