-- Blobs a run has stored but whose version or checkpoint it has not committed yet are
-- pinned by that run, so that the collector does not take them in between. A run's pins
-- go when it ends; `until` frees those of a server that died first.
CREATE TABLE blob_pins (
    hash   TEXT NOT NULL,
    holder TEXT NOT NULL,
    until  TEXT NOT NULL,
    PRIMARY KEY (hash, holder)
);
CREATE INDEX blob_pins_by_holder ON blob_pins (holder);
