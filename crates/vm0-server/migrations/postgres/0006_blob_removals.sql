-- Blobs being removed, as in migrations/sqlite/0010_blob_removals.sql.
CREATE TABLE blob_removals (
    hash  TEXT COLLATE "C" PRIMARY KEY,
    -- When the removal began or was taken over, in milliseconds of the database's clock.
    since_ms BIGINT NOT NULL
);
