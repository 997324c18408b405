"""The change feed (API.md, "The change feed"): every change to users and posts, in one
gapless order. The triggers that write it live in `migrations/0005.create-change-feed.sql`;
here: reading it (`reader`), the long-poll watcher each worker shares (`watcher`),
retention (`retention`), its JSON shapes (`models`) and its route (`controller`).

A resource above `service.posts` and `service.users` (an event's `data` is their
resource): may import them, `service.http`, `service.database` and `service.base`.
"""
