-- Delete a post when its version is one of $2, or whatever its version when $2 is NULL
-- (no If-Match). Returns the transaction's id (for the Consistency-Token); no row back:
-- absent or version mismatch.
-- $1 id, $2 acceptable versions or NULL
DELETE FROM posts
WHERE id = $1 AND ($2::integer[] IS NULL OR version = ANY ($2::integer[]))
RETURNING pg_current_xact_id()::text::bigint AS written_by
