-- A checkpoint keeps what a working directory holds beside its files' bytes: each file's
-- mode, and its folders (empty ones too, with their modes) and symbolic links, so that an
-- executable script, an empty folder or node_modules/.bin come back as they were when a
-- session continues on another instance. Files recorded before kept no mode: they read as
-- 0644 (420), the mode they were restored with.
ALTER TABLE checkpoint_files ADD COLUMN mode INTEGER NOT NULL DEFAULT 420;
CREATE TABLE checkpoint_entries (
    checkpoint_id TEXT NOT NULL REFERENCES checkpoints (id) ON DELETE CASCADE,
    path          TEXT NOT NULL,
    -- A folder's mode; NULL for a symbolic link.
    mode          INTEGER,
    -- A symbolic link's target, inside the working directory; NULL for a folder.
    target        TEXT,
    PRIMARY KEY (checkpoint_id, path)
);
