-- The newest event a follower can be given now (below the horizon), for the long-poll
-- watcher: when it moves, waiting followers read again. A backward scan of events_pkey.
SELECT position, seq
FROM events
WHERE position < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY position DESC, seq DESC
LIMIT 1
