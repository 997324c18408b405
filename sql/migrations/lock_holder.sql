-- Who holds the lock row, and how long ago it last showed a sign of life.
SELECT pid, extract(epoch FROM now() AT TIME ZONE 'UTC' - ctime)::float8 AS silent_s
FROM yoyo_lock
