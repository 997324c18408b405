-- Store how far the stream holds the feed, and renew the lease, in one statement: only
-- while the caller still holds a lease that has not expired. No row: the lease is lost
-- (another relay may be publishing now) and nothing was stored.
-- $1 stream name, $2 holder id, $3 lease in seconds, $4 position's xid8, $5 position's seq
UPDATE relay_state
SET position = $4::xid8, seq = $5, stored_at = now(),
    expires_at = now() + make_interval(secs => $3)
WHERE stream = $1 AND holder = $2 AND expires_at > now()
RETURNING expires_at
