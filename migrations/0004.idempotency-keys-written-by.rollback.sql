-- squawk-ignore ban-drop-column, prefer-robust-stmts -- the rollback of the step that made it, run by an operator on purpose (never by a deploy)
ALTER TABLE idempotency_keys DROP COLUMN written_by;
