-- Output events name their stream since API 1.1.0. The events stored before did not
-- record it: they read as standard output, which is where `vm0 run` printed them. (The
-- agent log entries always kept it, in their metadata.)
UPDATE run_events SET data = json_set(data, '$.stream', 'stdout')
 WHERE event = 'output' AND json_type(data, '$.stream') IS NULL;
