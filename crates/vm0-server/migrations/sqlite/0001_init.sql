-- The reference server's schema. Ids are ULIDs behind a type prefix, so ordering by id is
-- ordering by creation, and keyset pages use the (owner, id) indexes.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

-- Token values are never stored: only their SHA-256.
CREATE TABLE tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_prefix TEXT NOT NULL,
    token_hash   BLOB NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
);
CREATE INDEX tokens_by_user ON tokens (user_id, id);

CREATE TABLE agents (
    id                 TEXT PRIMARY KEY,
    user_id            TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    current_version_id TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    UNIQUE (user_id, name)
);
CREATE INDEX agents_by_user ON agents (user_id, id);

CREATE TABLE agent_versions (
    id             TEXT PRIMARY KEY,
    agent_id       TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    version_number INTEGER NOT NULL,
    config         TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    UNIQUE (agent_id, version_number)
);

-- Volumes and artifacts have the same shape; `kind` tells them apart.
CREATE TABLE storages (
    id                 TEXT PRIMARY KEY,
    user_id            TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind               TEXT NOT NULL CHECK (kind IN ('volume', 'artifact')),
    name               TEXT NOT NULL,
    current_version_id TEXT,
    size               INTEGER NOT NULL DEFAULT 0,
    file_count         INTEGER NOT NULL DEFAULT 0,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    UNIQUE (user_id, kind, name)
);
CREATE INDEX storages_by_user ON storages (user_id, kind, id);

-- A version's id is the SHA-256 of its manifest; `seq` orders versions newest first.
CREATE TABLE storage_versions (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    storage_id TEXT NOT NULL REFERENCES storages (id) ON DELETE CASCADE,
    id         TEXT NOT NULL,
    size       INTEGER NOT NULL,
    file_count INTEGER NOT NULL,
    message    TEXT,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (storage_id, id)
);

CREATE TABLE version_files (
    version_seq INTEGER NOT NULL REFERENCES storage_versions (seq) ON DELETE CASCADE,
    path        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    hash        TEXT NOT NULL,
    PRIMARY KEY (version_seq, path)
);
CREATE INDEX version_files_by_hash ON version_files (hash);

-- A blob is listed here only once its file is complete on disk.
CREATE TABLE blobs (
    hash       TEXT PRIMARY KEY,
    size       INTEGER NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE upload_sessions (
    id         TEXT PRIMARY KEY,
    storage_id TEXT NOT NULL REFERENCES storages (id) ON DELETE CASCADE,
    message    TEXT,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);

CREATE TABLE upload_files (
    session_id TEXT NOT NULL REFERENCES upload_sessions (id) ON DELETE CASCADE,
    upload_id  TEXT NOT NULL,
    path       TEXT NOT NULL,
    size       INTEGER NOT NULL,
    hash       TEXT NOT NULL,
    PRIMARY KEY (session_id, path)
);
CREATE INDEX upload_files_by_hash ON upload_files (hash);
