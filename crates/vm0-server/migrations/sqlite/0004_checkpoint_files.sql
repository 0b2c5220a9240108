-- A checkpoint is a manifest of blobs: the files of the session's working directory
-- (without its volumes and artifact, which have versions of their own), each stored
-- once by content, so a file no run changed costs no new bytes.
CREATE TABLE checkpoint_files (
    checkpoint_id TEXT NOT NULL REFERENCES checkpoints (id) ON DELETE CASCADE,
    path          TEXT NOT NULL,
    size          INTEGER NOT NULL,
    hash          TEXT NOT NULL,
    PRIMARY KEY (checkpoint_id, path)
);
CREATE INDEX checkpoint_files_by_hash ON checkpoint_files (hash);
CREATE INDEX checkpoints_by_time ON checkpoints (created_at);

-- A session past its retention: its working directory is gone and it cannot be continued.
ALTER TABLE sessions ADD COLUMN expired_at TEXT;
