DROP TRIGGER posts_feed_record ON posts;
DROP TRIGGER posts_feed_stamp ON posts;
DROP TRIGGER users_feed_record ON users;
DROP TRIGGER users_feed_stamp ON users;
-- squawk-ignore ban-drop-function -- the rollback of the step that made it, run by an operator on purpose
DROP FUNCTION feed_record_change();
-- squawk-ignore ban-drop-function -- the rollback of the step that made it, run by an operator on purpose
DROP FUNCTION feed_stamp_row();
-- squawk-ignore ban-drop-table, prefer-robust-stmts -- the rollback of the step that made it, run by an operator on purpose
DROP TABLE feed_state;
-- squawk-ignore ban-drop-table, prefer-robust-stmts -- the rollback of the step that made it, run by an operator on purpose
DROP TABLE events;
-- squawk-ignore ban-drop-column, prefer-robust-stmts -- the rollback of the step that made it, run by an operator on purpose
ALTER TABLE posts DROP COLUMN feed_position;
-- squawk-ignore ban-drop-column, prefer-robust-stmts -- the rollback of the step that made it, run by an operator on purpose
ALTER TABLE users DROP COLUMN feed_position;
