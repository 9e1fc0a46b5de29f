-- Users, their roles per workspace, and personal tokens. A user's token acts in the
-- workspace a call names (X-Trainyard-Workspace) with the user's role there; a token
-- `narrowed` to its workspace acts only there, a `read_only` one only reads, and one past
-- `expires_at_ms` is refused. Job tokens (`role` = 'job') have no user.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    owner BIGINT NOT NULL,
    password_hash TEXT,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE workspace_members (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    role TEXT NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX workspace_members_by_user ON workspace_members (user_id);

ALTER TABLE api_tokens ADD COLUMN user_id TEXT;
ALTER TABLE api_tokens ADD COLUMN narrowed BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_tokens ADD COLUMN read_only BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_tokens ADD COLUMN expires_at_ms BIGINT;
CREATE INDEX api_tokens_by_user ON api_tokens (user_id);

-- The admin tokens of earlier versions become tokens of the first owner, `admin`.
INSERT INTO users (id, name, owner, created_at_ms)
SELECT 'admin', 'admin', 1, (SELECT MIN(created_at_ms) FROM api_tokens WHERE role = 'admin')
WHERE EXISTS (SELECT 1 FROM api_tokens WHERE role = 'admin');
UPDATE api_tokens SET user_id = 'admin', role = 'user' WHERE role = 'admin';
