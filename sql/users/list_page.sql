-- A page of users in ascending id, after the keyset bound, behind the feed's head as this
-- statement's snapshot sees it (the newest event below the horizon: the page's
-- Events-Cursor): one row with NULL columns when the page is
-- empty. A nested loop over the one horizon row yields the page's rows in the order of
-- its index scan.
-- $1 last id of the previous page (0 for the first page), $2 rows to fetch
SELECT head.position, head.seq, page.*
FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) AS horizon
LEFT JOIN LATERAL (
    -- The newest event below the horizon; with every event pruned, the pruned position.
    (SELECT position, seq FROM events WHERE position < horizon.xmin
     ORDER BY position DESC, seq DESC LIMIT 1)
    UNION ALL (SELECT pruned_position, pruned_seq FROM feed_state)
    ORDER BY position DESC, seq DESC LIMIT 1
) AS head ON true
LEFT JOIN LATERAL (
    SELECT id, email, name, created_at, updated_at, version
    FROM users
    WHERE id > $1
    ORDER BY id
    LIMIT $2
) AS page ON true
