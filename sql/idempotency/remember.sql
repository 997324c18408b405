-- Keep the first response of an idempotency key, in the transaction that made it. An
-- expired entry of the same key is replaced. No row back: the key is live and taken
-- (by a transaction that committed first, which this statement waited for). The
-- transaction's id is kept too: a replay carries the Consistency-Token of the first answer.
-- $1 caller, $2 key, $3 fingerprint, $4 status, $5 body, $6 location, $7 etag, $8 TTL hours
INSERT INTO idempotency_keys AS kept
    (caller, key, fingerprint, status, body, location, etag, written_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, pg_current_xact_id()::text::bigint)
ON CONFLICT (caller, key) DO UPDATE
    SET fingerprint = EXCLUDED.fingerprint, status = EXCLUDED.status, body = EXCLUDED.body,
        location = EXCLUDED.location, etag = EXCLUDED.etag,
        written_by = EXCLUDED.written_by, created_at = now()
    WHERE kept.created_at < now() - make_interval(hours => $8)
RETURNING 1
