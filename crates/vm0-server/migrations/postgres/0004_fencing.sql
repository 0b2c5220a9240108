-- Fencing epochs, leases on the database's clock, and the checkpoint a run started
-- from, as in migrations/sqlite/0008_fencing.sql.
ALTER TABLE runs ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN lease_until_ms BIGINT;
ALTER TABLE runs ADD COLUMN base_checkpoint_id TEXT COLLATE "C";
UPDATE runs
SET lease_until_ms = CAST(EXTRACT(EPOCH FROM lease_expires_at) * 1000 AS BIGINT)
WHERE status = 'running' AND lease_expires_at IS NOT NULL;
