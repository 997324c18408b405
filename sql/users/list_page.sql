-- A page of users in ascending id, after the keyset bound (wrapped by queries.py with the
-- feed's head, the page's Events-Cursor: service.database.statements.behind_horizon).
-- $1 last id of the previous page (0 for the first page), $2 rows to fetch
SELECT id, email, name, created_at, updated_at, version
FROM users
WHERE id > $1
ORDER BY id
LIMIT $2
