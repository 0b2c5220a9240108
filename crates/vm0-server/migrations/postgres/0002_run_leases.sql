-- Run leases, as in migrations/sqlite/0006_run_leases.sql.
ALTER TABLE runs ADD COLUMN executor TEXT COLLATE "C";
ALTER TABLE runs ADD COLUMN lease_expires_at TIMESTAMPTZ;
ALTER TABLE runs ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX runs_by_executor ON runs (executor) WHERE status = 'running';
