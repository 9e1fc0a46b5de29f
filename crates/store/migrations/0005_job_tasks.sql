-- A job names a built-in task (kind and pinned arguments, JSON) instead of a command: the
-- executor resolves the `trainyard` program where the job runs. NULL for command jobs.
ALTER TABLE jobs ADD COLUMN task TEXT;
