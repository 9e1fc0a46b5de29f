-- A gang-scheduled job runs this many workers, each with the job's cpus, memory and GPUs.
ALTER TABLE jobs ADD COLUMN workers BIGINT NOT NULL DEFAULT 1;
