-- Whether this server's snapshot shows transaction $1 (the id a write's Consistency-Token
-- carries) as finished: true on a replica once it has replayed that commit. An id at or
-- past the snapshot's xmax has not even started here (pg_visible_in_snapshot could not
-- tell; pg_xact_status raises for it), so it is not visible either.
-- $1 transaction id (xid8) as text
SELECT CASE
    WHEN $1::text::xid8 < pg_snapshot_xmax(pg_current_snapshot())
        THEN pg_visible_in_snapshot($1::text::xid8, pg_current_snapshot())
    ELSE false
END
