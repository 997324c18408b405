-- The holder proves it is alive: no row back means its lock was broken (taken as stale).
UPDATE yoyo_lock SET ctime = now() AT TIME ZONE 'UTC' WHERE pid = $1 RETURNING pid
