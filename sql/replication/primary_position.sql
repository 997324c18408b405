-- The primary's current WAL position, in bytes: sampled with the time it was read, so that
-- a replica's replay position can be turned into a lag in time.
SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint
