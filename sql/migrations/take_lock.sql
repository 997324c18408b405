-- yoyo's lock row, taken by a migrate run unless another holds it: returns the row when
-- taken, nothing when held. `pid` holds the run's random token (not a process id, which
-- means nothing across hosts); `ctime` (UTC, as yoyo writes it) is the holder's heartbeat.
INSERT INTO yoyo_lock (locked, ctime, pid)
VALUES (1, now() AT TIME ZONE 'UTC', $1)
ON CONFLICT (locked) DO NOTHING
RETURNING pid
