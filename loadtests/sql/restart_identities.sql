-- Continue both identities after the seeded ids, so that rows created through the API get
-- fresh ones (users.sql and posts.sql give their ids explicitly).
-- $1 number of users, $2 number of posts (is_called false when 0: the next id is then 1)
SELECT
    setval(pg_get_serial_sequence('users', 'id'), greatest($1::bigint, 1), $1::bigint > 0),
    setval(pg_get_serial_sequence('posts', 'id'), greatest($2::bigint, 1), $2::bigint > 0)
