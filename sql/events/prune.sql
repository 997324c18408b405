-- Delete the oldest events, in the feed's order, up to (not including) the first that is
-- younger than the retention or not yet deliverable, at most $2 of them, and move
-- feed_state's pruned position to the last one deleted: a cursor before it is a 410. Only
-- a prefix of the feed is ever deleted, so every event after the pruned position is kept.
-- Returns how many were deleted. Inside the transaction that holds feed_state's row.
-- $1 retention in seconds, $2 most events to delete
WITH oldest AS (
    SELECT position, seq, occurred_at
    FROM events
    ORDER BY position, seq
    LIMIT $2
), first_kept AS (
    SELECT position, seq
    FROM oldest
    WHERE occurred_at >= now() - make_interval(secs => $1)
        OR position >= pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY position, seq
    LIMIT 1
), deleted AS (
    DELETE FROM events
    USING oldest
    WHERE events.position = oldest.position AND events.seq = oldest.seq
        AND (NOT EXISTS (SELECT FROM first_kept)
            OR (oldest.position, oldest.seq) < (SELECT position, seq FROM first_kept))
    RETURNING events.position, events.seq
), last_deleted AS (
    SELECT position, seq FROM deleted ORDER BY position DESC, seq DESC LIMIT 1
), moved AS (
    UPDATE feed_state
    SET pruned_position = last_deleted.position, pruned_seq = last_deleted.seq
    FROM last_deleted
    RETURNING 1
)
SELECT count(*) FROM deleted
