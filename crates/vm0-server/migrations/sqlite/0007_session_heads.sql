-- A session runs one run at a time, and the database holds it so: two instances that
-- claim two runs of one session at once cannot both succeed. Runs of one session left
-- running together by the race this closes (before this migration) end failed, all but
-- the oldest, so that the index can be made.
UPDATE runs
SET status = 'failed',
    error = 'Another run of its session was running at the same time',
    completed_at = started_at,
    secrets = '{}'
WHERE status = 'running'
  AND id NOT IN (SELECT MIN(id) FROM runs WHERE status = 'running' GROUP BY session_id);
CREATE UNIQUE INDEX runs_one_running_per_session ON runs (session_id) WHERE status = 'running';

-- The checkpoint a session continues from, set when a run of it records one: no longer
-- the highest id, which an instance's clock mints. Existing sessions take that one.
ALTER TABLE sessions ADD COLUMN head_checkpoint_id TEXT;
UPDATE sessions
SET head_checkpoint_id =
    (SELECT c.id FROM checkpoints c WHERE c.session_id = sessions.id ORDER BY c.id DESC LIMIT 1);
