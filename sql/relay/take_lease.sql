-- Take or renew the lease on the stream's row: granted when nobody holds it, when it has
-- expired (by the database's clock), or when the caller holds it already. Returns the
-- stored position to publish from; no row when another relay holds a live lease.
-- $1 stream name, $2 holder id, $3 lease in seconds
UPDATE relay_state
SET holder = $2, expires_at = now() + make_interval(secs => $3)
WHERE stream = $1 AND (holder IS NULL OR holder = $2 OR expires_at <= now())
RETURNING position, seq
