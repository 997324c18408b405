-- Idempotency keys of POST /users and POST /posts: the first response of each key, kept
-- for IDEMPOTENCY_TTL_HOURS, written in the same transaction as the row it created.
-- depends: 0002.create-posts
-- squawk-ignore prefer-robust-stmts -- a transactional step (all or nothing)
CREATE TABLE idempotency_keys (
    caller       text        NOT NULL,
    key          text        NOT NULL,
    fingerprint  bytea       NOT NULL,
    -- squawk-ignore prefer-bigint-over-smallint -- an HTTP status code
    status       smallint    NOT NULL,
    body         bytea       NOT NULL,
    location     text        NOT NULL,
    etag         text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (caller, key)
);

-- Serves the clean-up of expired keys.
-- squawk-ignore prefer-robust-stmts, require-concurrent-index-creation -- the table is made in this same transaction: empty and seen by nobody yet
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
