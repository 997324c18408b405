-- The transaction that wrote a key's first response: its replay carries the same
-- Consistency-Token. Empty for keys kept before this step (their replays carry none).
-- depends: 0003.create-idempotency-keys
-- squawk-ignore prefer-robust-stmts -- a transactional step (all or nothing): it never half-applies
ALTER TABLE idempotency_keys ADD COLUMN written_by bigint;
