-- The response kept for a live idempotency key.
-- $1 caller, $2 key, $3 TTL hours
SELECT fingerprint, status, body, location, etag, written_by
FROM idempotency_keys
WHERE caller = $1 AND key = $2 AND created_at >= now() - make_interval(hours => $3)
