-- What readiness needs from the primary, in one round trip:
-- applied: the ids of the migrations applied (yoyo's own table);
-- commits_stalled: whether commits wait for a synchronous standby that is not there
--   (synchronous_standby_names set, no standby connected as sync or quorum). Answered
--   only for a role that may read pg_stat_replication's columns (pg_monitor or
--   pg_read_all_stats); for others those columns are NULL, and the answer is false.
SELECT
    ARRAY(SELECT migration_id FROM _yoyo_migration) AS applied,
    current_setting('synchronous_standby_names') <> ''
        AND pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')
        AND NOT EXISTS (
            SELECT 1 FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')
        ) AS commits_stalled
