-- A page of users whose email equals $1 (lower-cased; served by users_email_key), behind
-- the feed's head as list_page.sql returns it.
-- $1 email, $2 last id of the previous page (0 for the first page), $3 rows to fetch
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
    WHERE lower(email) = $1 AND id > $2
    ORDER BY id
    LIMIT $3
) AS page ON true
