-- squawk-ignore ban-drop-table, prefer-robust-stmts -- the rollback of the step that made it, run by an operator on purpose (never by a deploy)
DROP TABLE relay_state;
