-- Studies kept for Optuna clients through its gRPC storage protocol, in one workspace each.
-- Optuna's model differs from a Trainyard study's (distributions are declared per trial,
-- attributes are opaque JSON texts, several objectives), so it has its own rows: a trial's
-- values, datetimes, parameters, attributes and intermediate values are one JSON body, its
-- state a column (finished trials never change, and the WAITING → RUNNING claim is one
-- conditional update). Ids come from `optuna_counters` and are never reused.
CREATE TABLE optuna_counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO optuna_counters (name, value) VALUES ('study', 0), ('trial', 0);
CREATE TABLE optuna_studies (
    id BIGINT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    directions TEXT NOT NULL,
    user_attrs TEXT NOT NULL,
    system_attrs TEXT NOT NULL,
    distributions TEXT NOT NULL,
    experiment_id TEXT NOT NULL,
    next_number BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);
CREATE TABLE optuna_trials (
    id BIGINT PRIMARY KEY,
    study_id BIGINT NOT NULL REFERENCES optuna_studies(id),
    number BIGINT NOT NULL,
    state TEXT NOT NULL,
    body TEXT NOT NULL,
    run_id TEXT,
    UNIQUE (study_id, number)
);
