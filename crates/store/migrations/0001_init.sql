-- One schema for SQLite and PostgreSQL: only TEXT, BIGINT and DOUBLE PRECISION columns,
-- times as milliseconds since the epoch, ids made by the application.
CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
INSERT INTO workspaces (id, name, created_at_ms) VALUES ('default', 'default', 0);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    command TEXT NOT NULL,
    env TEXT NOT NULL,
    working_dir TEXT,
    cpus DOUBLE PRECISION NOT NULL,
    memory_mb BIGINT,
    gpus BIGINT NOT NULL,
    priority BIGINT NOT NULL,
    max_retries BIGINT NOT NULL,
    timeout_s BIGINT,
    labels TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    exit_code BIGINT,
    exit_reason TEXT,
    message TEXT,
    host TEXT,
    gpu_ids TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    started_at_ms BIGINT,
    finished_at_ms BIGINT
);
CREATE INDEX jobs_by_workspace ON jobs (workspace_id, id);
CREATE INDEX jobs_by_workspace_state ON jobs (workspace_id, state, id);
CREATE INDEX jobs_by_state ON jobs (state);

CREATE TABLE job_labels (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (job_id, key)
);
CREATE INDEX job_labels_by_key_value ON job_labels (key, value, job_id);
