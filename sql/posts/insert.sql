-- Create a post. An author_id naming no user violates posts_author_id_fkey (→ 422). Also
-- returns the transaction's id, which the Consistency-Token of the answer carries.
-- $1 author_id, $2 title (trimmed), $3 body, $4 published
INSERT INTO posts (author_id, title, body, published)
VALUES ($1, $2, $3, $4)
RETURNING id, author_id, title, body, published, created_at, updated_at, version,
    pg_current_xact_id()::text::bigint AS written_by
