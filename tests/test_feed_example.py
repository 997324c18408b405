"""The example follower of docs/events.md works against a live service: it lists, follows
and ends with a mirror equal to what the service holds."""

from __future__ import annotations

from pathlib import Path

import httpx

from docs.examples import follower
from tests.helpers import unique_email
from tests.server import running_service


def everything(client: httpx.Client) -> follower.Mirror:
    """What the service holds now, as the mirror keys it (versions left out)."""
    state: follower.Mirror = {}
    for kind, path in (("user", "/users"), ("post", "/posts")):
        for item in client.get(path, params={"limit": 200}).json()["items"]:
            state[kind, item["id"]] = (0, item)
    return state


def test_the_example_follower_keeps_an_exact_mirror(data_dir: Path) -> None:
    with running_service(data_dir) as service, service.client() as client:
        users = [
            client.post("/users", json={"email": unique_email(), "name": "Ada"}).json()
            for _ in range(3)
        ]
        posts = [
            client.post("/posts", json={"author_id": user["id"], "title": "Hi", "body": ""}).json()
            for user in users
        ]
        mirror, cursor = follower.list_everything(service.base_url)
        assert set(mirror) == set(everything(client))
        # Changes after the listing: an update, a delete, a cascade, a create.
        assert client.patch(f"/posts/{posts[0]['id']}", json={"title": "Edited"}).status_code == 200
        assert client.delete(f"/posts/{posts[1]['id']}").status_code == 204
        assert client.delete(f"/users/{users[2]['id']}").status_code == 204
        new = client.post("/posts", json={"author_id": users[0]["id"], "title": "New", "body": ""})
        while True:
            page, _ = follower.get(service.base_url, "/events", None, after=cursor, limit=2)
            for event in page["items"]:
                follower.apply(mirror, event)
            cursor = page["next_cursor"]
            if not page["items"]:
                break
        expected = everything(client)
        assert set(mirror) == set(expected)
        assert {key: resource for key, (_, resource) in mirror.items()} == {
            key: resource for key, (_, resource) in expected.items()
        }
        assert mirror["post", posts[0]["id"]][0] == 2
        assert mirror["post", new.json()["id"]][1]["title"] == "New"
