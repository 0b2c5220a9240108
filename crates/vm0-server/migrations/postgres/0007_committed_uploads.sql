-- Committed upload sessions, as in migrations/sqlite/0011_committed_uploads.sql.
CREATE TABLE committed_uploads (
    session_id   TEXT COLLATE "C" PRIMARY KEY,
    storage_id   TEXT COLLATE "C" NOT NULL REFERENCES storages (id) ON DELETE CASCADE,
    version_seq  BIGINT NOT NULL REFERENCES storage_versions (seq) ON DELETE CASCADE,
    committed_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX committed_uploads_by_time ON committed_uploads (committed_at);
