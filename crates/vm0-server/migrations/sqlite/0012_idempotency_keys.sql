-- The Idempotency-Keys of each user, with the fingerprint of the request that took each
-- and, once it answered, its answer (status, the headers kept, the body sealed), for
-- --idempotency-hours. A key whose request is still executing has no status and a lock
-- until which it is held; a lock that passed (its instance died) lets the next request
-- take the key. Times are milliseconds of the database's clock.
CREATE TABLE idempotency_keys (
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key             TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    created_ms      INTEGER NOT NULL,
    locked_until_ms INTEGER,
    status          INTEGER,
    headers         TEXT,
    body            TEXT,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_by_time ON idempotency_keys (created_ms);
