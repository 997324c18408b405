-- Give the lease up (graceful stop): another relay may take it at once.
-- $1 stream name, $2 holder id
UPDATE relay_state
SET holder = NULL, expires_at = now()
WHERE stream = $1 AND holder = $2
