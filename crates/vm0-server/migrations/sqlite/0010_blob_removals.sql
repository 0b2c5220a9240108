-- A blob the collector has forgotten and whose file or object it is removing: a writer of
-- the same blob, on any instance, waits until the removal ends, so that the collector never
-- removes bytes a writer has just put back. A removal older than ten minutes was abandoned
-- (its collector died), and the next writer or collection takes it over.
CREATE TABLE blob_removals (
    hash  TEXT PRIMARY KEY,
    -- When the removal began or was taken over, in milliseconds of the database's clock.
    since_ms INTEGER NOT NULL
);
