-- Fencing: every claim of a run takes a new epoch, and every write its executor makes
-- is conditional on it, so that an executor that lost its run (paused past its lease,
-- cut off from the database) writes nothing more once another instance ended or claimed
-- it. The lease's end is the database's clock in milliseconds since 1970, set and judged
-- by the database alone, so that no instance's clock decides whether another's runs are
-- lost. A run records the checkpoint it started from, read from its session's head in
-- the claim itself.
ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN lease_until_ms INTEGER;
ALTER TABLE runs ADD COLUMN base_checkpoint_id TEXT;
UPDATE runs
SET lease_until_ms = CAST((julianday(lease_expires_at) - 2440587.5) * 86400000 AS INTEGER)
WHERE status = 'running' AND lease_expires_at IS NOT NULL;
