-- Dataset versions belong to a workspace; dataset names are unique per workspace. Shards
-- stay content-addressed and stored once, but a workspace reads only the shards it uploaded
-- or that its versions name (`dataset_shards`), so knowing a hash reveals nothing of
-- another workspace's data. Existing rows go to `default`.
CREATE TABLE dataset_versions_w (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    row_count BIGINT NOT NULL,
    byte_count BIGINT NOT NULL,
    parent TEXT,
    manifest TEXT NOT NULL,
    created_by TEXT,
    PRIMARY KEY (workspace_id, name, version)
);
INSERT INTO dataset_versions_w (workspace_id, name, version, created_ms, row_count, byte_count,
    parent, manifest, created_by)
SELECT 'default', name, version, created_ms, row_count, byte_count, parent, manifest, created_by
FROM dataset_versions;
DROP TABLE dataset_versions;
ALTER TABLE dataset_versions_w RENAME TO dataset_versions;
CREATE INDEX dataset_versions_by_time ON dataset_versions (workspace_id, name, created_ms);

CREATE TABLE dataset_shards (
    workspace_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (workspace_id, sha256)
);
