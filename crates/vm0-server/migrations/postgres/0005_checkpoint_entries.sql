-- Files' modes, folders and symbolic links in checkpoints, as in
-- migrations/sqlite/0009_checkpoint_entries.sql.
ALTER TABLE checkpoint_files ADD COLUMN mode BIGINT NOT NULL DEFAULT 420;
CREATE TABLE checkpoint_entries (
    checkpoint_id TEXT COLLATE "C" NOT NULL REFERENCES checkpoints (id) ON DELETE CASCADE,
    path          TEXT COLLATE "C" NOT NULL,
    mode          BIGINT,
    target        TEXT,
    PRIMARY KEY (checkpoint_id, path)
);
