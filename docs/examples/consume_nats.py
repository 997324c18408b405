"""A complete consumer of the posts-service change feed on NATS JetStream (docs/events.md).

It keeps a local copy of every user and post in SQLite, applying each event by `version`:
an event whose version is not newer than the copy's is skipped, so a redelivery, or an
event older than what the copy already holds, changes nothing. A delete leaves a tombstone
with the version deleted, so that a late update of a deleted resource is skipped too.

A durable pull consumer (`--durable`) remembers what was acknowledged across restarts;
events are acknowledged after the SQLite transaction that applied them commits, so a crash
in between redelivers them, and applying by version makes that harmless.

    python docs/examples/consume_nats.py --nats-url nats://127.0.0.1:4222 --db copy.sqlite

Needs only nats-py (`pip install nats-py==2.16.0`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
from typing import Any

import nats

SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    kind    TEXT    NOT NULL,  -- 'user' or 'post'
    id      INTEGER NOT NULL,
    version INTEGER NOT NULL,
    deleted INTEGER NOT NULL,  -- 1: a tombstone, `data` is NULL
    data    TEXT,              -- the resource as GET shows it, JSON
    PRIMARY KEY (kind, id)
)
"""


def apply(db: sqlite3.Connection, event: dict[str, Any]) -> bool:
    """Apply one event to the copy; whether it changed anything."""
    kind, action = event["type"].split(".")
    row = db.execute(
        "SELECT version, deleted FROM resources WHERE kind = ? AND id = ?",
        (kind, event["resource_id"]),
    ).fetchone()
    deleted = action == "deleted"
    if row is not None:
        version, was_deleted = row
        # Newer wins; at the same version only a delete moves the copy (to a tombstone).
        if event["version"] < version or (
            event["version"] == version and (was_deleted or not deleted)
        ):
            return False
    data = None if deleted else json.dumps(event["data"])
    db.execute(
        "INSERT INTO resources (kind, id, version, deleted, data) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (kind, id) DO UPDATE SET version = excluded.version, "
        "deleted = excluded.deleted, data = excluded.data",
        (kind, event["resource_id"], event["version"], int(deleted), data),
    )
    return True


async def consume(options: argparse.Namespace) -> int:
    db = sqlite3.connect(options.db)
    db.execute(SCHEMA)
    nc = await nats.connect(options.nats_url, name="posts-service-example-consumer")
    js = nc.jetstream()
    subscription = await js.pull_subscribe(
        f"{options.prefix}.>", durable=options.durable, stream=options.stream
    )
    applied = seen = 0
    idle_since = asyncio.get_running_loop().time()
    try:
        while True:
            try:
                messages = await subscription.fetch(options.batch, timeout=1)
            except TimeoutError:  # nats-py's own, or a bare asyncio one near the deadline
                now = asyncio.get_running_loop().time()
                if options.exit_when_idle and now - idle_since >= options.exit_when_idle:
                    break
                continue
            idle_since = asyncio.get_running_loop().time()
            with db:  # one SQLite transaction per batch, committed before the acks
                for message in messages:
                    applied += apply(db, json.loads(message.data))
            for message in messages:
                await message.ack()
            seen += len(messages)
    finally:
        await nc.close()
        db.close()
    print(json.dumps({"events": seen, "applied": applied}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--stream", default="POSTS_SERVICE_EVENTS")
    parser.add_argument("--prefix", default="posts_service", help="RELAY_SUBJECT_PREFIX")
    parser.add_argument("--durable", default="example-copy", help="the consumer's name")
    parser.add_argument("--db", default="copy.sqlite", help="the SQLite file of the copy")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument(
        "--exit-when-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="stop after this long without a new event (0: run until interrupted)",
    )
    return asyncio.run(consume(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
