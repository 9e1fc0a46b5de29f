-- Hyper-parameter studies and their trials, scoped to a workspace from birth. A study's
-- specification (space, sampler, rule, budgets, template) is JSON; each trial keeps its
-- configuration, state, value, intermediate values ([[step, value], …] as JSON), its
-- successive-halving rung, the resource it used so far, the job running it and the job of
-- its previous rung (whose checkpoint a promoted trial resumes from).
CREATE TABLE studies (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    message TEXT,
    created_at_ms BIGINT NOT NULL,
    finished_at_ms BIGINT,
    UNIQUE (workspace_id, name)
);
CREATE INDEX studies_by_state ON studies (state);
CREATE TABLE study_trials (
    study_id TEXT NOT NULL REFERENCES studies(id),
    number BIGINT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    value DOUBLE PRECISION,
    constraint_value DOUBLE PRECISION,
    intermediate TEXT NOT NULL,
    rung BIGINT NOT NULL,
    resource BIGINT NOT NULL,
    job_id TEXT,
    resume_from TEXT,
    message TEXT,
    started_at_ms BIGINT NOT NULL,
    finished_at_ms BIGINT,
    PRIMARY KEY (study_id, number)
);
CREATE INDEX study_trials_by_value ON study_trials (study_id, state, value);
CREATE INDEX study_trials_by_job ON study_trials (job_id);
