-- `make bench-feed` only, on the bench's own database: the same service and data without
-- the feed's capture, to measure what it costs the writes. The AFTER triggers that write the
-- events stop; the BEFORE triggers that move `version`, `updated_at` and `feed_position`
-- keep running, so the writes do the same work otherwise. feed_capture_on.sql undoes it.
-- Two statements, sent together (no parameters); each takes the table's ACCESS EXCLUSIVE
-- lock for a moment, between rounds, when nothing else writes.
ALTER TABLE users DISABLE TRIGGER users_feed_record;
ALTER TABLE posts DISABLE TRIGGER posts_feed_record
