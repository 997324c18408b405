-- Posts 1..$1 over the $2 seeded users, created one after the other during the last year
-- before $3 (so created_at rises with the id, as it does for posts made through the API).
--
-- Everything is a function of the post's number n, so that two seeds write the same rows:
-- * author: u, a hash of n read as a number in [0, 1), picks user 1 + floor($2 * u^2).
--   Every user writes, some far more than others, as in real life: the chance of
--   user a falls as 1 / sqrt(a), so at SEED_SCALE=1 user 1 has about 2,000 posts and the
--   last users about 10 (20 on average). The planner sees the prolific authors in its
--   statistics, and one author's posts lie scattered through the table, in no order.
-- * published: every other post;
-- * body: about 500 characters (480 to 520) cut from a fixed text at an offset that
--   varies with n. Below PostgreSQL's 2 kB TOAST threshold, so the bodies stay inline and
--   uncompressed, as most real ones would.
-- $1 number of posts, $2 number of users, $3 created_at of the newest post
INSERT INTO posts (id, author_id, title, body, published, created_at, updated_at)
OVERRIDING SYSTEM VALUE
SELECT
    n,
    1 + floor($2::bigint * power(hash.u, 2))::bigint,
    'Post number ' || n,
    'Post ' || n || ': ' || substr(filler.text, 1 + (n % 97)::integer, 470 + (n % 41)::integer),
    n % 2 = 0,
    stamp.created_at,
    stamp.created_at
FROM generate_series(1, $1::bigint) AS n
CROSS JOIN (
    SELECT repeat(
        'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor '
        'incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud '
        'exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure '
        'dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur. ',
        3
    ) AS text
) AS filler
CROSS JOIN LATERAL (SELECT (hashint8(n) & 2147483647) / 2147483648.0::float8 AS u) AS hash
CROSS JOIN LATERAL (
    SELECT $3::timestamptz - interval '1 year' * (1 - n::float8 / $1) AS created_at
) AS stamp
