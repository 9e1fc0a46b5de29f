-- Named secrets per workspace, encrypted at rest (AES-256-GCM with the server's secrets key;
-- the workspace and name are the associated data), and the secrets a job asks for
-- (variable name → secret name, as JSON).
CREATE TABLE workspace_secrets (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    sealed TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, name)
);
ALTER TABLE jobs ADD COLUMN secrets TEXT NOT NULL DEFAULT '{}';
