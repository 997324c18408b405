-- The holder lets go of its own lock row (and of nobody else's).
DELETE FROM yoyo_lock WHERE pid = $1
