-- Jobs run in a named resource pool (this machine, a Slurm or Ray cluster, Kubernetes); NULL
-- for jobs from before pools existed, which run in the first pool. `engine_id` is what the
-- pool's engine calls the current attempt (a Slurm job id, a Ray submission id), stored
-- before the attempt counts as started so that a restarted server finds it again.
ALTER TABLE jobs ADD COLUMN pool TEXT;
ALTER TABLE jobs ADD COLUMN engine_id TEXT;
