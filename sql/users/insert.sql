-- Create a user. A taken email violates users_email_key (→ 409).
-- $1 email (trimmed, lower-cased), $2 name (trimmed)
INSERT INTO users (email, name)
VALUES ($1, $2)
RETURNING id, email, name, created_at, updated_at, version
