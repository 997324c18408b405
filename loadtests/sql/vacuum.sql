-- After the bulk insert: fresh planner statistics (ANALYZE), and the visibility map and
-- hint bits set now (VACUUM) rather than by the first minutes of a load test, whose reads
-- would otherwise also write. Runs outside a transaction, as VACUUM must.
VACUUM (ANALYZE) users, posts
