-- Empty the tables and the change feed, so that every seed starts from the same state and a
-- seeded row has the id it had last time (restart_identities.sql sets the users' and posts'
-- identities). The events' identity is not restarted: an event id (its seq) is never given
-- twice on one database, as followers and the broker deduplicate on it. TRUNCATE fires no
-- row trigger, so the emptied rows leave no events; forget_feed.sql tells the followers.
TRUNCATE users, posts, events CASCADE
