-- Create a user. A taken email violates users_email_key (→ 409). Also returns the
-- transaction's id, which the Consistency-Token of the answer carries.
-- $1 email (trimmed, lower-cased), $2 name (trimmed)
INSERT INTO users (email, name)
VALUES ($1, $2)
RETURNING id, email, name, created_at, updated_at, version,
    pg_current_xact_id()::text::bigint AS written_by
