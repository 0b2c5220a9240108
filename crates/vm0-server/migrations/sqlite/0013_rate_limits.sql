-- Each token's requests in each minute (the window's start, in milliseconds of the
-- database's clock), counted by every instance on the database together: an instance
-- reserves a few at a time, so that the requests of one token on every instance add up
-- to its quota. An instance alone on its database counts in its memory and writes none.
CREATE TABLE rate_windows (
    token_hash TEXT NOT NULL,
    window_ms  INTEGER NOT NULL,
    used       INTEGER NOT NULL,
    PRIMARY KEY (token_hash, window_ms)
);

-- A user's pending runs, counted by each createRun against the pending cap.
CREATE INDEX runs_pending_by_user ON runs (user_id) WHERE status = 'pending';

-- When the retention deleted an ended run's logs, events and metrics; the runs whose
-- logs are kept, by their end, for the retention to find the next hundred.
ALTER TABLE runs ADD COLUMN logs_expired_at TEXT;
CREATE INDEX runs_with_logs_by_end ON runs (completed_at) WHERE logs_expired_at IS NULL;
