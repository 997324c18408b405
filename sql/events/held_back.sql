-- The newest event's sequence number, and when the oldest event that is committed but not
-- yet deliverable (at or above the horizon: an older transaction is still open) happened;
-- NULL when every committed event can be delivered. For the feed's metrics.
SELECT
    (SELECT max(seq) FROM events) AS newest_seq,
    (SELECT min(occurred_at) FROM events
     WHERE position >= pg_snapshot_xmin(pg_current_snapshot())) AS held_since
