-- Runs, their sessions and checkpoints, and what they record: events, logs, metrics.

CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    agent_id   TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- An immutable snapshot of a session's working state, recorded by a completed run.
CREATE TABLE checkpoints (
    id         TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    run_id     TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE runs (
    id                TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    agent_id          TEXT NOT NULL,
    agent_name        TEXT NOT NULL,
    agent_version_id  TEXT NOT NULL,
    session_id        TEXT NOT NULL REFERENCES sessions (id),
    -- The checkpoint a new session starts from, copied in before the run's first start.
    from_checkpoint   TEXT,
    status            TEXT NOT NULL,
    prompt            TEXT NOT NULL,
    variables         TEXT NOT NULL,
    -- Kept to run the agent, never returned.
    secrets           TEXT NOT NULL,
    volumes           TEXT NOT NULL,
    artifact_name     TEXT,
    artifact_base     TEXT,
    artifact_version  TEXT,
    checkpoint_id     TEXT,
    error             TEXT,
    execution_time_ms INTEGER,
    created_at        TEXT NOT NULL,
    started_at        TEXT,
    completed_at      TEXT
);
CREATE INDEX runs_by_user ON runs (user_id, id);
CREATE INDEX runs_by_status ON runs (status, id);

CREATE TABLE run_events (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    id     INTEGER NOT NULL,
    event  TEXT NOT NULL,
    data   TEXT NOT NULL,
    PRIMARY KEY (run_id, id)
);

CREATE TABLE run_logs (
    run_id    TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq       INTEGER NOT NULL,
    timestamp TEXT NOT NULL,
    type      TEXT NOT NULL,
    level     TEXT NOT NULL,
    message   TEXT NOT NULL,
    metadata  TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX run_logs_by_time ON run_logs (run_id, timestamp, seq);

CREATE TABLE run_metrics (
    run_id          TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    timestamp       TEXT NOT NULL,
    cpu_percent     REAL NOT NULL,
    memory_used_mb  REAL NOT NULL,
    memory_total_mb REAL NOT NULL,
    disk_used_mb    REAL NOT NULL,
    disk_total_mb   REAL NOT NULL,
    PRIMARY KEY (run_id, seq)
);
