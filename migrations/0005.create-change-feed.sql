-- The change feed (API.md, "The change feed"; docs/events.md): every insert, update and
-- delete of a row of `users` or `posts`, whoever makes it, writes one row of `events` in
-- the same transaction, from row triggers.
--
-- Where an event stands in the feed's one order is its `position` (then `seq`). Readers
-- hand out only events whose position is below the oldest transaction still running
-- (`pg_snapshot_xmin`): every transaction that can still write an event there has ended,
-- so no event can appear behind a cursor already handed out. A position is the writing
-- transaction's id (assigned at its first write), raised to the position of the row's
-- previous event when that is higher: a transaction that took its id early and then
-- waited for a row lock still lands after the change it waited for, so each resource's
-- events stay in version order. The row keeps its last position in `feed_position`.
-- Rolled back: nothing. Expand-only: the previous release keeps working (its statements
-- name their columns; the triggers fill the new one and keep `version` as it sets it).
-- depends: 0004.idempotency-keys-written-by

-- squawk-ignore prefer-robust-stmts -- a transactional step (all or nothing)
ALTER TABLE users ADD COLUMN feed_position xid8;
-- squawk-ignore prefer-robust-stmts -- a transactional step (all or nothing)
ALTER TABLE posts ADD COLUMN feed_position xid8;

-- squawk-ignore prefer-robust-stmts -- a transactional step (all or nothing)
CREATE TABLE events (
    position    xid8        NOT NULL,
    seq         bigint      GENERATED ALWAYS AS IDENTITY,
    resource    text        NOT NULL,
    action      text        NOT NULL,
    resource_id bigint      NOT NULL,
    -- The resource's version after the change; for a delete, the version deleted.
    -- squawk-ignore prefer-bigint-over-int -- the same type as the rows' version
    version     integer     NOT NULL,
    occurred_at timestamptz NOT NULL,
    -- The row after the change, timestamps in UTC; NULL for a delete.
    data        json,
    CONSTRAINT events_pkey PRIMARY KEY (position, seq),
    CONSTRAINT events_resource_known CHECK (resource IN ('users', 'posts')),
    CONSTRAINT events_action_known CHECK (action IN ('created', 'updated', 'deleted'))
);

-- One row: the feed's identity (a cursor of another database is refused) and how far
-- pruning has gone (a cursor before it is a 410).
-- squawk-ignore prefer-robust-stmts -- a transactional step (all or nothing)
CREATE TABLE feed_state (
    singleton       boolean NOT NULL DEFAULT true,
    feed_id         uuid    NOT NULL DEFAULT gen_random_uuid(),
    pruned_position xid8    NOT NULL DEFAULT '0',
    pruned_seq      bigint  NOT NULL DEFAULT 0,
    CONSTRAINT feed_state_pkey PRIMARY KEY (singleton),
    CONSTRAINT feed_state_one_row CHECK (singleton)
);
INSERT INTO feed_state DEFAULT VALUES;

-- BEFORE INSERT OR UPDATE: every change moves `version` and `updated_at` (an operator's
-- UPDATE that forgets to is corrected here; the service's own statements set the same
-- values), and stamps the row with its feed position. `updated_at` never goes back, even
-- when a transaction that started earlier writes after a later one.
CREATE FUNCTION feed_stamp_row() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        NEW.version := OLD.version + 1;
        NEW.updated_at := greatest(now(), OLD.updated_at + interval '1 microsecond');
        NEW.feed_position := greatest(pg_current_xact_id(), OLD.feed_position);
    ELSE
        NEW.feed_position := pg_current_xact_id();
    END IF;
    RETURN NEW;
END;
$$;

-- AFTER INSERT, UPDATE OR DELETE: the event. AFTER, so that a row an ON CONFLICT or a
-- failed constraint did not write has no event. `timezone` is UTC inside, so `data`'s
-- timestamps read as the service writes them.
CREATE FUNCTION feed_record_change() RETURNS trigger
LANGUAGE plpgsql SET timezone = 'UTC' AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO events (position, resource, action, resource_id, version, occurred_at, data)
        VALUES (
            greatest(pg_current_xact_id(), OLD.feed_position), TG_TABLE_NAME, 'deleted',
            OLD.id, OLD.version, greatest(now(), OLD.updated_at), NULL
        );
    ELSE
        INSERT INTO events (position, resource, action, resource_id, version, occurred_at, data)
        VALUES (
            NEW.feed_position, TG_TABLE_NAME,
            CASE TG_OP WHEN 'INSERT' THEN 'created' ELSE 'updated' END,
            NEW.id, NEW.version, NEW.updated_at, row_to_json(NEW)
        );
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER users_feed_stamp BEFORE INSERT OR UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION feed_stamp_row();
CREATE TRIGGER users_feed_record AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION feed_record_change();
CREATE TRIGGER posts_feed_stamp BEFORE INSERT OR UPDATE ON posts
    FOR EACH ROW EXECUTE FUNCTION feed_stamp_row();
CREATE TRIGGER posts_feed_record AFTER INSERT OR UPDATE OR DELETE ON posts
    FOR EACH ROW EXECUTE FUNCTION feed_record_change();
