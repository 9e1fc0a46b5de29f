-- Every point of a metric logged with a `model_id`, with the dataset it was measured on:
-- MLflow keeps the whole history (and the dataset fields) on the logged model, where the
-- run's own series keeps neither. Replaces the latest-value-only table.
CREATE TABLE logged_model_metric_points (
    model_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    is_nan BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    step BIGINT NOT NULL,
    run_id TEXT NOT NULL,
    dataset_name TEXT,
    dataset_digest TEXT
);

CREATE INDEX logged_model_metric_points_by_model ON logged_model_metric_points (model_id, key);

INSERT INTO logged_model_metric_points
    (model_id, key, value, is_nan, timestamp, step, run_id, dataset_name, dataset_digest)
SELECT model_id, key, value, is_nan, timestamp, step, run_id, NULL, NULL FROM logged_model_metrics;

DROP TABLE logged_model_metrics;

-- Who made each dataset version (the token's name: a user, or `job:<id>`), so a job's token
-- adds versions only to datasets it created.
ALTER TABLE dataset_versions ADD COLUMN created_by TEXT;
