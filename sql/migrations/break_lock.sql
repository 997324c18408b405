-- `python -m service migrate --break-lock`: removes the lock row whoever holds it.
DELETE FROM yoyo_lock RETURNING pid, extract(epoch FROM now() AT TIME ZONE 'UTC' - ctime)::float8 AS silent_s
