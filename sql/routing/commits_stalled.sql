-- Whether commits on this server wait for a synchronous standby that is not there
-- (synchronous_standby_names set, no standby connected as sync or quorum): a primary cut
-- off from its standbys, such as one whose Patroni died and whose standby was promoted in
-- its place (an orphan). As in health/readiness.sql, answered only for a role that may
-- read pg_stat_replication's columns; for others it is false.
SELECT
    current_setting('synchronous_standby_names') <> ''
    AND pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')
    AND NOT EXISTS (
        SELECT 1 FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')
    )
