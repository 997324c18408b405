-- A page of the change feed: at most $3 events after the position ($1, $2), of the
-- resources named in $4, in the feed's order. Only events below the horizon (the oldest
-- transaction still running, as this statement's snapshot sees it) are returned: every
-- transaction that could still add an event there has ended, so nothing can later appear
-- behind the page (migrations/0005.create-change-feed.sql says why positions allow this).
-- The first columns are the head (the newest event below the horizon, of any resource:
-- where a page that is not full lets the follower go on from) and how far pruning has
-- gone; an empty page is one row with NULL event columns. Served by events_pkey, in order
-- (no sort): a nested loop over the one horizon row yields the page in its scan's order.
-- $1 position's transaction id (xid8), $2 position's seq, $3 events, $4 resources (text[])
SELECT head.position, head.seq,
    (SELECT pruned_position FROM feed_state), (SELECT pruned_seq FROM feed_state),
    page.position, page.seq, page.resource, page.action, page.resource_id, page.version,
    page.occurred_at, page.data
FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) AS horizon
LEFT JOIN LATERAL (
    SELECT position, seq
    FROM events
    WHERE position < horizon.xmin
    ORDER BY position DESC, seq DESC
    LIMIT 1
) AS head ON true
LEFT JOIN LATERAL (
    SELECT position, seq, resource, action, resource_id, version, occurred_at, data::text
    FROM events
    WHERE (position, seq) > ($1::xid8, $2::bigint)
        AND position < horizon.xmin
        AND resource = ANY ($4::text[])
    ORDER BY position, seq
    LIMIT $3
) AS page ON true
