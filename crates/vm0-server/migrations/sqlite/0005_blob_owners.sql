-- Who holds each blob's bytes: the users who uploaded them or whose runs wrote them. A
-- version may only name blobs its user holds, so knowing another user's hash and size
-- gives nothing. Existing versions' blobs belong to their storages' users.
CREATE TABLE blob_owners (
    hash    TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (hash, user_id)
);
INSERT OR IGNORE INTO blob_owners (hash, user_id)
    SELECT DISTINCT f.hash, s.user_id
    FROM version_files f JOIN storage_versions v ON v.seq = f.version_seq JOIN storages s ON s.id = v.storage_id;
