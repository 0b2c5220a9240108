-- Which server instance executes a running run, and until when its lease holds: the
-- executor renews it while the run lives, and any instance ends a run whose lease has
-- run out (its executor was lost). A cancel made on another instance than the executor's
-- is a request the executor reads.
ALTER TABLE runs ADD COLUMN executor TEXT;
ALTER TABLE runs ADD COLUMN lease_expires_at TEXT;
ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
CREATE INDEX runs_by_executor ON runs (executor) WHERE status = 'running';
