"""The relay to NATS JetStream (`python -m service relay`, docs/events.md): moves the change
feed to a stream, effectively once. It reads the feed with the same gapless reader as `GET
/events` (`service.feed.reader`), publishes each event with `Nats-Msg-Id` set to its id,
and stores its position in the database (`relay_state`, migration 0006) only after
JetStream acknowledged every event up to it; a lease on that row lets one relay process
publish at a time.

Here: the stream's shape and its check (`stream`), the lease and the stored position
(`lease`), publishing a batch (`publisher`), the loop and its process (`runner`), and the
relay's small HTTP port for metrics and readiness (`health`).

Above the change feed: may import `service.feed` and every layer below it (`service.http`
for `FeedPosition`, `service.database`, `service.base`); nothing imports it but
`service.__main__`.
"""
