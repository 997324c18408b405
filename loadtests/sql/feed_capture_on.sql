-- `make bench-feed`: the feed's capture as the migration made it (undoes feed_capture_off.sql;
-- harmless when it is already on). Two statements, sent together.
ALTER TABLE users ENABLE TRIGGER users_feed_record;
ALTER TABLE posts ENABLE TRIGGER posts_feed_record
