-- The upload sessions that committed, and the version each made, kept for a day: a
-- commit replayed after its answer was lost (a timeout, a proxy's reset, a restart)
-- answers the version it made instead of "no such upload session".
CREATE TABLE committed_uploads (
    session_id   TEXT PRIMARY KEY,
    storage_id   TEXT NOT NULL REFERENCES storages (id) ON DELETE CASCADE,
    version_seq  INTEGER NOT NULL REFERENCES storage_versions (seq) ON DELETE CASCADE,
    committed_at TEXT NOT NULL
);
CREATE INDEX committed_uploads_by_time ON committed_uploads (committed_at);
