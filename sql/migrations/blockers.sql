-- The sessions that block a migrate run's waiting statement: every session in
-- pg_blocking_pids() of the sessions named $1 (the run's application_name), with what
-- an operator needs to find it. Run from a second connection while the step waits.
SELECT DISTINCT blocker.pid, blocker.application_name, blocker.state,
       coalesce(blocker.xact_start, blocker.query_start) AS since, blocker.query
FROM pg_stat_activity AS waiting
CROSS JOIN LATERAL unnest(pg_blocking_pids(waiting.pid)) AS blocking(pid)
JOIN pg_stat_activity AS blocker ON blocker.pid = blocking.pid
WHERE waiting.application_name = $1
ORDER BY blocker.pid
