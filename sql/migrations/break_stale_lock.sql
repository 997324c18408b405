-- Removes the lock row when its holder's heartbeat is older than $1 seconds: the holder is
-- gone (killed, its host lost). Returns the removed row.
DELETE FROM yoyo_lock
WHERE ctime < now() AT TIME ZONE 'UTC' - make_interval(secs => $1)
RETURNING pid, extract(epoch FROM now() AT TIME ZONE 'UTC' - ctime)::float8 AS silent_s
