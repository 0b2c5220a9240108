-- The reference server's schema on PostgreSQL: the SQLite schema of migrations/sqlite as
-- it stands after its last migration, in PostgreSQL's types. Ids, names, paths and hashes
-- compare byte by byte (`COLLATE "C"`), as in SQLite, so that keyset pages and manifests
-- sort the same whatever the database's locale. Comments on the tables are in the SQLite
-- migrations.

CREATE TABLE settings (
    key   TEXT COLLATE "C" PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE users (
    id         TEXT COLLATE "C" PRIMARY KEY,
    name       TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE tokens (
    id           TEXT COLLATE "C" PRIMARY KEY,
    user_id      TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_prefix TEXT NOT NULL,
    token_hash   BYTEA NOT NULL UNIQUE,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX tokens_by_user ON tokens (user_id, id);

CREATE TABLE agents (
    id                 TEXT COLLATE "C" PRIMARY KEY,
    user_id            TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name               TEXT COLLATE "C" NOT NULL,
    current_version_id TEXT COLLATE "C" NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    UNIQUE (user_id, name)
);
CREATE INDEX agents_by_user ON agents (user_id, id);

CREATE TABLE agent_versions (
    id             TEXT COLLATE "C" PRIMARY KEY,
    agent_id       TEXT COLLATE "C" NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    version_number BIGINT NOT NULL,
    config         JSONB NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    UNIQUE (agent_id, version_number)
);

CREATE TABLE storages (
    id                 TEXT COLLATE "C" PRIMARY KEY,
    user_id            TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind               TEXT NOT NULL CHECK (kind IN ('volume', 'artifact')),
    name               TEXT COLLATE "C" NOT NULL,
    current_version_id TEXT COLLATE "C",
    size               BIGINT NOT NULL DEFAULT 0,
    file_count         BIGINT NOT NULL DEFAULT 0,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    UNIQUE (user_id, kind, name)
);
CREATE INDEX storages_by_user ON storages (user_id, kind, id);

CREATE TABLE storage_versions (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    storage_id TEXT COLLATE "C" NOT NULL REFERENCES storages (id) ON DELETE CASCADE,
    id         TEXT COLLATE "C" NOT NULL,
    size       BIGINT NOT NULL,
    file_count BIGINT NOT NULL,
    message    TEXT,
    created_by TEXT COLLATE "C" NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (storage_id, id)
);

CREATE TABLE version_files (
    version_seq BIGINT NOT NULL REFERENCES storage_versions (seq) ON DELETE CASCADE,
    path        TEXT COLLATE "C" NOT NULL,
    size        BIGINT NOT NULL,
    hash        TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (version_seq, path)
);
CREATE INDEX version_files_by_hash ON version_files (hash);

CREATE TABLE blobs (
    hash       TEXT COLLATE "C" PRIMARY KEY,
    size       BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE blob_owners (
    hash    TEXT COLLATE "C" NOT NULL,
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (hash, user_id)
);

CREATE TABLE blob_pins (
    hash   TEXT COLLATE "C" NOT NULL,
    holder TEXT COLLATE "C" NOT NULL,
    until  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (hash, holder)
);
CREATE INDEX blob_pins_by_holder ON blob_pins (holder);

CREATE TABLE upload_sessions (
    id         TEXT COLLATE "C" PRIMARY KEY,
    storage_id TEXT COLLATE "C" NOT NULL REFERENCES storages (id) ON DELETE CASCADE,
    message    TEXT,
    created_by TEXT COLLATE "C" NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE upload_files (
    session_id TEXT COLLATE "C" NOT NULL REFERENCES upload_sessions (id) ON DELETE CASCADE,
    upload_id  TEXT COLLATE "C" NOT NULL,
    path       TEXT COLLATE "C" NOT NULL,
    size       BIGINT NOT NULL,
    hash       TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (session_id, path)
);
CREATE INDEX upload_files_by_hash ON upload_files (hash);

CREATE TABLE sessions (
    id         TEXT COLLATE "C" PRIMARY KEY,
    user_id    TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    agent_id   TEXT COLLATE "C" NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expired_at TIMESTAMPTZ
);

CREATE TABLE checkpoints (
    id         TEXT COLLATE "C" PRIMARY KEY,
    session_id TEXT COLLATE "C" NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    run_id     TEXT COLLATE "C" NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX checkpoints_by_time ON checkpoints (created_at);

CREATE TABLE checkpoint_files (
    checkpoint_id TEXT COLLATE "C" NOT NULL REFERENCES checkpoints (id) ON DELETE CASCADE,
    path          TEXT COLLATE "C" NOT NULL,
    size          BIGINT NOT NULL,
    hash          TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (checkpoint_id, path)
);
CREATE INDEX checkpoint_files_by_hash ON checkpoint_files (hash);

CREATE TABLE runs (
    id                TEXT COLLATE "C" PRIMARY KEY,
    user_id           TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    agent_id          TEXT COLLATE "C" NOT NULL,
    agent_name        TEXT COLLATE "C" NOT NULL,
    agent_version_id  TEXT COLLATE "C" NOT NULL,
    session_id        TEXT COLLATE "C" NOT NULL REFERENCES sessions (id),
    from_checkpoint   TEXT COLLATE "C",
    status            TEXT NOT NULL,
    prompt            TEXT NOT NULL,
    variables         JSONB NOT NULL,
    secrets           JSONB NOT NULL,
    volumes           JSONB NOT NULL,
    artifact_name     TEXT COLLATE "C",
    artifact_base     TEXT COLLATE "C",
    artifact_version  TEXT COLLATE "C",
    checkpoint_id     TEXT COLLATE "C",
    error             TEXT,
    execution_time_ms BIGINT,
    created_at        TIMESTAMPTZ NOT NULL,
    started_at        TIMESTAMPTZ,
    completed_at      TIMESTAMPTZ
);
CREATE INDEX runs_by_user ON runs (user_id, id);
CREATE INDEX runs_by_status ON runs (status, id);

CREATE TABLE run_events (
    run_id TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    id     BIGINT NOT NULL,
    event  TEXT NOT NULL,
    data   TEXT NOT NULL,
    PRIMARY KEY (run_id, id)
);

CREATE TABLE run_logs (
    run_id    TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq       BIGINT NOT NULL,
    timestamp TIMESTAMPTZ NOT NULL,
    type      TEXT NOT NULL,
    level     TEXT NOT NULL,
    message   TEXT NOT NULL,
    metadata  JSONB NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX run_logs_by_time ON run_logs (run_id, timestamp, seq);

CREATE TABLE run_metrics (
    run_id          TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq             BIGINT NOT NULL,
    timestamp       TIMESTAMPTZ NOT NULL,
    cpu_percent     DOUBLE PRECISION NOT NULL,
    memory_used_mb  DOUBLE PRECISION NOT NULL,
    memory_total_mb DOUBLE PRECISION NOT NULL,
    disk_used_mb    DOUBLE PRECISION NOT NULL,
    disk_total_mb   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, seq)
);
