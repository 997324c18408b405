-- Whether a user exists: asked only when a page of the user's posts came back empty, to
-- tell "no posts" (200) from "no such user" (404).
-- $1 id
SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)
