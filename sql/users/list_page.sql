-- A page of users in ascending id, after the keyset bound, behind the feed's horizon as
-- this statement's snapshot sees it (the page's Events-Cursor): one row with NULL columns
-- when the page is empty. A nested loop over the one horizon row yields the page's rows
-- in the order of its index scan.
-- $1 last id of the previous page (0 for the first page), $2 rows to fetch
SELECT horizon.xmin, page.*
FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) AS horizon
LEFT JOIN LATERAL (
    SELECT id, email, name, created_at, updated_at, version
    FROM users
    WHERE id > $1
    ORDER BY id
    LIMIT $2
) AS page ON true
