-- The relay's row for its stream, made on first start (before every event, nobody holding
-- the lease); an existing row is left as it is.
-- $1 stream name
INSERT INTO relay_state (stream) VALUES ($1) ON CONFLICT (stream) DO NOTHING
