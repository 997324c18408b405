-- Which of these index names ($1) name an INVALID index: what a failed or interrupted
-- CREATE INDEX CONCURRENTLY leaves behind.
SELECT name
FROM unnest($1::text[]) AS name
JOIN pg_index ON pg_index.indexrelid = to_regclass(name)
WHERE NOT pg_index.indisvalid
