-- One user by id.
-- $1 id
SELECT id, email, name, created_at, updated_at, version
FROM users
WHERE id = $1
