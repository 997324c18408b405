-- After truncate.sql, in the seed's transaction: the feed's history before this seed is gone
-- (truncated, with no delete events), so every cursor handed out before it must be a 410
-- ("list again and follow from the new Events-Cursor"), as behind retention. The seed's own
-- events all stand at this transaction's position, after (pruned_position, 0).
UPDATE feed_state SET pruned_position = pg_current_xact_id(), pruned_seq = 0
