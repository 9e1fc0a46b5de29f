-- How workspaces share the pools: a weight for fair share under contention (1: equal) and
-- quotas (JSON: cpus, memory_mb, gpus, running_jobs, queued_jobs; absent = no limit).
ALTER TABLE workspaces ADD COLUMN weight DOUBLE PRECISION NOT NULL DEFAULT 1;
ALTER TABLE workspaces ADD COLUMN quota TEXT NOT NULL DEFAULT '{}';
