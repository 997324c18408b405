-- After truncate.sql, in the seed's transaction: the feed's history before this seed is gone
-- (truncated, with no delete events), so every cursor handed out before it must be a 410
-- ("list again and follow from the new Events-Cursor"), as behind retention. A cursor is
-- gone when it is before (pruned_position, pruned_seq). Handed out before the seed, it is
-- at most (this transaction's id, 0): a follower that read while no transaction was running
-- got the next id to be assigned, which can be this one; seq 1 puts that cursor behind too.
-- The seed's own events stand at this transaction's position, with seqs of 1 or more, and a
-- cursor at one of them follows on.
UPDATE feed_state SET pruned_position = pg_current_xact_id(), pruned_seq = 1
