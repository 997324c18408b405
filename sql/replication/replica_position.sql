-- Whether this server is still a standby, and the WAL position its queries see: the
-- replayed one on a standby, the current one on a server that has been promoted.
SELECT pg_is_in_recovery() AS in_recovery,
       pg_wal_lsn_diff(
           CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END,
           '0/0'
       )::bigint AS position
