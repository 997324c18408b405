-- A page of users whose email equals $1 (lower-cased; served by users_email_key), behind
-- the feed's horizon as list_page.sql returns it.
-- $1 email, $2 last id of the previous page (0 for the first page), $3 rows to fetch
SELECT horizon.xmin, page.*
FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) AS horizon
LEFT JOIN LATERAL (
    SELECT id, email, name, created_at, updated_at, version
    FROM users
    WHERE lower(email) = $1 AND id > $2
    ORDER BY id
    LIMIT $3
) AS page ON true
