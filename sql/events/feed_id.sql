-- The feed's identity: feed cursors carry it, so that one of another database is refused.
SELECT feed_id::text FROM feed_state
