-- A blob a run has stored but not yet committed to a version is pinned until then, so
-- that the collector does not take it in between.
ALTER TABLE blobs ADD COLUMN pinned_until TEXT;
