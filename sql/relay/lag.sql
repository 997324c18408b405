-- How far the relay of stream $1 is behind, as its stored position says: the events after
-- it, and how many seconds ago the oldest of them happened (0 when there is none). For the
-- relay's metrics, every few seconds: a range scan of events_pkey over what is unpublished.
-- $1 stream name
SELECT count(*) AS events,
    coalesce(extract(epoch FROM now() - min(events.occurred_at)), 0)::float8 AS seconds
FROM events, relay_state
WHERE relay_state.stream = $1
    AND (events.position, events.seq) > (relay_state.position, relay_state.seq)
