-- One post by id.
-- $1 id
SELECT id, author_id, title, body, published, created_at, updated_at, version
FROM posts
WHERE id = $1
