-- A page of users whose email equals $1 (lower-cased; served by users_email_key); wrapped
-- by queries.py with the feed's head, as list_page.sql is.
-- $1 email, $2 last id of the previous page (0 for the first page), $3 rows to fetch
SELECT id, email, name, created_at, updated_at, version
FROM users
WHERE lower(email) = $1 AND id > $2
ORDER BY id
LIMIT $3
