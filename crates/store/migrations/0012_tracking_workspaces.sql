-- Experiments belong to a workspace, and their names are unique per workspace: the same
-- name in two workspaces is two experiments. Runs, metrics, artifacts and logged models
-- belong to their experiment's workspace. Ids stay unique across workspaces.
CREATE TABLE experiments_in_workspaces (
    id BIGINT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    artifact_location TEXT NOT NULL,
    lifecycle_stage TEXT NOT NULL,
    creation_time BIGINT NOT NULL,
    last_update_time BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);
INSERT INTO experiments_in_workspaces (id, workspace_id, name, artifact_location,
    lifecycle_stage, creation_time, last_update_time)
SELECT id, 'default', name, artifact_location, lifecycle_stage, creation_time, last_update_time
FROM experiments;
DROP TABLE experiments;
ALTER TABLE experiments_in_workspaces RENAME TO experiments;
