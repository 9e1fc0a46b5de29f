-- Registered models, their tags, aliases, versions and version tags belong to a workspace;
-- model names are unique per workspace. Existing rows go to `default`.
CREATE TABLE registered_models_w (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    user_id TEXT NOT NULL,
    creation_time BIGINT NOT NULL,
    last_updated_time BIGINT NOT NULL,
    next_version BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, name)
);
INSERT INTO registered_models_w (workspace_id, name, description, user_id, creation_time,
    last_updated_time, next_version)
SELECT 'default', name, description, user_id, creation_time, last_updated_time, next_version
FROM registered_models;
DROP TABLE registered_models;
ALTER TABLE registered_models_w RENAME TO registered_models;

CREATE TABLE registered_model_tags_w (
    workspace_id TEXT NOT NULL,
    name TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (workspace_id, name, key)
);
INSERT INTO registered_model_tags_w (workspace_id, name, key, value)
SELECT 'default', name, key, value FROM registered_model_tags;
DROP TABLE registered_model_tags;
ALTER TABLE registered_model_tags_w RENAME TO registered_model_tags;

CREATE TABLE registered_model_aliases_w (
    workspace_id TEXT NOT NULL,
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, name, alias)
);
INSERT INTO registered_model_aliases_w (workspace_id, name, alias, version)
SELECT 'default', name, alias, version FROM registered_model_aliases;
DROP TABLE registered_model_aliases;
ALTER TABLE registered_model_aliases_w RENAME TO registered_model_aliases;

CREATE TABLE model_versions_w (
    workspace_id TEXT NOT NULL,
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
    PRIMARY KEY (workspace_id, name, version)
);
INSERT INTO model_versions_w (workspace_id, name, version, description, user_id, stage,
    source, storage_location, run_id, run_link, model_id, status, creation_time,
    last_updated_time)
SELECT 'default', name, version, description, user_id, stage, source, storage_location, run_id,
    run_link, model_id, status, creation_time, last_updated_time
FROM model_versions;
DROP TABLE model_versions;
ALTER TABLE model_versions_w RENAME TO model_versions;

CREATE TABLE model_version_tags_w (
    workspace_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (workspace_id, name, version, key)
);
INSERT INTO model_version_tags_w (workspace_id, name, version, key, value)
SELECT 'default', name, version, key, value FROM model_version_tags;
DROP TABLE model_version_tags;
ALTER TABLE model_version_tags_w RENAME TO model_version_tags;
