-- Rate windows, the pending runs' index and logs_expired_at, as in
-- migrations/sqlite/0013_rate_limits.sql.
CREATE TABLE rate_windows (
    token_hash TEXT COLLATE "C" NOT NULL,
    window_ms  BIGINT NOT NULL,
    used       BIGINT NOT NULL,
    PRIMARY KEY (token_hash, window_ms)
);

CREATE INDEX runs_pending_by_user ON runs (user_id) WHERE status = 'pending';

ALTER TABLE runs ADD COLUMN logs_expired_at TIMESTAMPTZ;
CREATE INDEX runs_with_logs_by_end ON runs (completed_at) WHERE logs_expired_at IS NULL;
