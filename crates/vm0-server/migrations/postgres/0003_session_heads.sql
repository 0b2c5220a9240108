-- One running run per session, held by the database, and each session's head checkpoint,
-- as in migrations/sqlite/0007_session_heads.sql.
UPDATE runs
SET status = 'failed',
    error = 'Another run of its session was running at the same time',
    completed_at = started_at,
    secrets = '{}'
WHERE status = 'running'
  AND id NOT IN (SELECT MIN(id) FROM runs WHERE status = 'running' GROUP BY session_id);
CREATE UNIQUE INDEX runs_one_running_per_session ON runs (session_id) WHERE status = 'running';

ALTER TABLE sessions ADD COLUMN head_checkpoint_id TEXT COLLATE "C";
UPDATE sessions
SET head_checkpoint_id =
    (SELECT c.id FROM checkpoints c WHERE c.session_id = sessions.id ORDER BY c.id DESC LIMIT 1);
