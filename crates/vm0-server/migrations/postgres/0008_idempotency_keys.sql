-- Idempotency-Keys, as in migrations/sqlite/0012_idempotency_keys.sql.
CREATE TABLE idempotency_keys (
    user_id         TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key             TEXT COLLATE "C" NOT NULL,
    fingerprint     TEXT COLLATE "C" NOT NULL,
    created_ms      BIGINT NOT NULL,
    locked_until_ms BIGINT,
    status          BIGINT,
    headers         TEXT,
    body            TEXT,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_by_time ON idempotency_keys (created_ms);
