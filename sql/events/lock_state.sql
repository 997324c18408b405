-- Pruning is done by one process at a time: the one that gets this row (the others skip
-- the round). Inside the pruning transaction.
SELECT pruned_position FROM feed_state FOR UPDATE SKIP LOCKED
