-- Delete up to $2 expired keys, skipping any a request holds right now: the clean-up never
-- makes a request wait. Run again while it deletes a full batch.
-- $1 TTL hours, $2 batch size
DELETE FROM idempotency_keys
WHERE ctid IN (
    SELECT ctid FROM idempotency_keys
    WHERE created_at < now() - make_interval(hours => $1)
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
