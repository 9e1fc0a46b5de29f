-- How a job is tracked (experiment, metrics read from its output), as JSON.
ALTER TABLE jobs ADD COLUMN tracking TEXT;

-- Tracking (MLflow-compatible experiments, runs, params, tags, metrics), logged models and
-- the model registry. Same rules as 0001: TEXT, BIGINT and DOUBLE PRECISION only.

CREATE TABLE experiments (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    artifact_location TEXT NOT NULL,
    lifecycle_stage TEXT NOT NULL,
    creation_time BIGINT NOT NULL,
    last_update_time BIGINT NOT NULL
);
-- MLflow clients log into experiment 0 when none is chosen.
INSERT INTO experiments (id, name, artifact_location, lifecycle_stage, creation_time, last_update_time)
VALUES (0, 'Default', 'mlflow-artifacts:/0', 'active', 0, 0);

CREATE TABLE experiment_tags (
    experiment_id BIGINT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (experiment_id, key)
);

-- A job's run has the job's id as run id; `job_id` is set for those.
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    experiment_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    start_time BIGINT NOT NULL,
    end_time BIGINT,
    lifecycle_stage TEXT NOT NULL,
    artifact_uri TEXT NOT NULL,
    deleted_time BIGINT,
    job_id TEXT
);
CREATE INDEX runs_by_experiment ON runs (experiment_id, start_time);

CREATE TABLE run_params (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);

CREATE TABLE run_tags (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);

-- One row per (run, metric key): its latest point (greatest step, timestamp, value), how
-- many points it has and their step range, so listings and searches never read history.
-- `monotone` = 1 while timestamps never decrease as steps grow (the usual case): then the
-- history in (timestamp, step) order is the primary key's order and pages need no sort.
CREATE TABLE metric_series (
    id BIGINT PRIMARY KEY,
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    is_nan BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    step BIGINT NOT NULL,
    points BIGINT NOT NULL,
    min_step BIGINT NOT NULL,
    max_step BIGINT NOT NULL,
    monotone BIGINT NOT NULL,
    UNIQUE (run_id, key)
);

-- Every point, clustered by (series, step) for appends and step-range reads. NaN is stored
-- as value 0 with is_nan = 1; an exact duplicate point is one row.
CREATE TABLE metric_points (
    series_id BIGINT NOT NULL,
    step BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    is_nan BIGINT NOT NULL,
    PRIMARY KEY (series_id, step, timestamp, value, is_nan)
);

-- Per-bucket minimum and maximum of a series at a few step resolutions, kept on write, so a
-- chart of a very long history reads thousands of rows instead of millions.
CREATE TABLE metric_rollups (
    series_id BIGINT NOT NULL,
    level BIGINT NOT NULL,
    bucket BIGINT NOT NULL,
    points BIGINT NOT NULL,
    min_value DOUBLE PRECISION NOT NULL,
    min_step BIGINT NOT NULL,
    min_timestamp BIGINT NOT NULL,
    max_value DOUBLE PRECISION NOT NULL,
    max_step BIGINT NOT NULL,
    max_timestamp BIGINT NOT NULL,
    PRIMARY KEY (series_id, level, bucket)
);

CREATE TABLE datasets (
    experiment_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    source_type TEXT NOT NULL,
    source TEXT NOT NULL,
    schema_json TEXT,
    profile TEXT,
    PRIMARY KEY (experiment_id, name, digest)
);

CREATE TABLE run_inputs (
    run_id TEXT NOT NULL,
    dataset_name TEXT NOT NULL,
    dataset_digest TEXT NOT NULL,
    tags TEXT NOT NULL,
    PRIMARY KEY (run_id, dataset_name, dataset_digest)
);

-- Logged models a run consumed (`direction` = 'input') or produced ('output', with a step).
CREATE TABLE run_models (
    run_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    direction TEXT NOT NULL,
    step BIGINT NOT NULL,
    PRIMARY KEY (run_id, model_id, direction)
);

CREATE TABLE logged_models (
    model_id TEXT PRIMARY KEY,
    experiment_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    artifact_uri TEXT NOT NULL,
    status TEXT NOT NULL,
    status_message TEXT,
    model_type TEXT,
    source_run_id TEXT,
    creation_time BIGINT NOT NULL,
    last_updated_time BIGINT NOT NULL,
    deleted BIGINT NOT NULL
);
CREATE INDEX logged_models_by_experiment ON logged_models (experiment_id, creation_time);

CREATE TABLE logged_model_tags (
    model_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (model_id, key)
);

CREATE TABLE logged_model_params (
    model_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (model_id, key)
);

-- Latest value per key of metrics logged with a `model_id`.
CREATE TABLE logged_model_metrics (
    model_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    is_nan BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    step BIGINT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (model_id, key)
);

-- `next_version` only grows: a deleted version's number is never handed out again.
CREATE TABLE registered_models (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    user_id TEXT NOT NULL,
    creation_time BIGINT NOT NULL,
    last_updated_time BIGINT NOT NULL,
    next_version BIGINT NOT NULL
);

CREATE TABLE registered_model_tags (
    name TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (name, key)
);

CREATE TABLE registered_model_aliases (
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (name, alias)
);

CREATE TABLE model_versions (
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    description TEXT NOT NULL,
    user_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    source TEXT NOT NULL,
    storage_location TEXT NOT NULL,
    run_id TEXT NOT NULL,
    run_link TEXT NOT NULL,
    model_id TEXT,
    status TEXT NOT NULL,
    creation_time BIGINT NOT NULL,
    last_updated_time BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE model_version_tags (
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (name, version, key)
);
