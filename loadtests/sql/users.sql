-- Users 1..$1, named by their id: user{n}@example.com (lower-case, unique), "User {n}".
-- The ids are given explicitly (OVERRIDING SYSTEM VALUE) so that email and id always match;
-- restart_identities.sql moves the identity past them. They were created over the two
-- years before the first post, oldest first, so created_at rises with the id.
-- $1 number of users, $2 created_at of the newest post
INSERT INTO users (id, email, name, created_at, updated_at)
OVERRIDING SYSTEM VALUE
SELECT n, 'user' || n || '@example.com', 'User ' || n, stamp.created_at, stamp.created_at
FROM generate_series(1, $1::bigint) AS n
CROSS JOIN LATERAL (
    SELECT $2::timestamptz - interval '3 years' + interval '2 years' * (n::float8 / $1)
        AS created_at
) AS stamp
