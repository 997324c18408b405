-- The relay's own state (service/relay; docs/events.md, "The relay to NATS JetStream"):
-- one row per stream it publishes to, holding how far the feed has been published
-- (stored only after JetStream acknowledged every event up to it) and the lease that lets
-- one relay process publish at a time. The lease is taken, renewed and released with plain
-- statements on this row (no session-level advisory lock), so that it works through a
-- transaction pooler; times are the database's clock only.
-- A new table: expand-only, nothing of the previous release reads or writes it.
-- depends: 0005.create-change-feed

-- squawk-ignore prefer-robust-stmts -- a transactional step (all or nothing)
CREATE TABLE relay_state (
    stream      text        NOT NULL,
    -- The feed position (as service/feed/reader.py counts it) up to which every event is
    -- in the stream; ('0', 0) is before every event.
    position    xid8        NOT NULL DEFAULT '0',
    seq         bigint      NOT NULL DEFAULT 0,
    -- Who may publish, and until when; NULL when nobody holds the lease.
    holder      text,
    expires_at  timestamptz NOT NULL DEFAULT '-infinity',
    stored_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT relay_state_pkey PRIMARY KEY (stream)
);
