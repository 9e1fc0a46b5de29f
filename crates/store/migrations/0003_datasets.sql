-- Dataset versions: immutable and content-addressed (`version` is the SHA-256 of the
-- manifest). The manifest (schema, shards, statistics, lineage) is kept whole as JSON; its
-- shards live in blobs under datasets/shards/<sha256>.
CREATE TABLE dataset_versions (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    row_count BIGINT NOT NULL,
    byte_count BIGINT NOT NULL,
    parent TEXT,
    manifest TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX dataset_versions_by_time ON dataset_versions (name, created_ms);
