"""The README's tour runs as written: every `sh` block under "A five-minute tour", in
order, in one shell, against a live service on the embedded database; each block's output
is checked (statuses, headers, bodies, and ids that flow from one block to the next)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.server import running_service

ROOT = Path(__file__).resolve().parent.parent
TOUR_HEADING = "## A five-minute tour"
README_URL = "http://127.0.0.1:8000"
MARK = "@@ tour block {} @@"


def tour_blocks(readme: str) -> list[str]:
    section = readme.split(TOUR_HEADING + "\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)^```", section, re.M | re.S)


class Answer:
    """What one block printed: the statuses, headers and JSON bodies, in order."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.statuses = [int(code) for code in re.findall(r"^HTTP/1\.1 (\d{3})", text, re.M)]
        self.headers = [
            (name.lower(), value)
            for name, value in re.findall(r"^([A-Za-z-]+): (.*?)\r?$", text, re.M)
        ]
        self.bodies = [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


def ready(answer: Answer, seen: dict[str, object]) -> None:
    assert answer.bodies[0]["status"] == "ready"


def user_created_and_read(answer: Answer, seen: dict[str, object]) -> None:
    assert answer.statuses == [200]
    assert answer.header("etag") == ['"1"']
    (user,) = answer.bodies
    assert user["name"] == "Ada Lovelace"
    assert re.fullmatch(r"ada\.\d+@example\.com", user["email"])
    seen["user_id"] = user["id"]


def post_created_and_read(answer: Answer, seen: dict[str, object]) -> None:
    assert answer.statuses == [201]
    created, read = answer.bodies
    assert answer.header("location") == [f"/posts/{created['id']}"]
    assert answer.header("etag") == ['"1"']
    assert created["author_id"] == seen["user_id"]
    assert created["title"] == "Hello"
    assert read == created
    seen["post_id"] = created["id"]


def paged(answer: Answer, seen: dict[str, object]) -> None:
    first, second = answer.bodies
    assert [post["title"] for post in first["items"]] == ["Third", "Second"]
    assert [post["title"] for post in second["items"]] == ["Hello"]
    assert first["next_cursor"]
    assert second["next_cursor"] is None
    assert {post["author_id"] for post in first["items"] + second["items"]} == {seen["user_id"]}


def conditional_write(answer: Answer, seen: dict[str, object]) -> None:
    assert answer.statuses == [200, 412]
    assert answer.header("etag") == ['"2"']
    changed, refused = answer.bodies
    assert changed["id"] == seen["post_id"]
    assert changed["title"] == "Hello again"
    assert refused["status"] == 412
    assert answer.header("content-type")[-1].startswith("application/problem+json")


def feed_followed(answer: Answer, seen: dict[str, object]) -> None:
    page, waited = answer.bodies
    (event,) = page["items"]
    assert event["type"] == "post.updated"
    assert event["resource_id"] == seen["post_id"]
    assert event["version"] == 3
    assert event["data"]["title"] == "Hello again"
    assert event["data"]["published"] is False
    assert waited == {"items": [], "next_cursor": page["next_cursor"]}


# One check per block, in the README's order. A new block of the tour needs its check here.
CHECKS: list[Callable[[Answer, dict[str, object]], None]] = [
    ready,
    user_created_and_read,
    post_created_and_read,
    paged,
    conditional_write,
    feed_followed,
]


def test_the_tour_blocks_are_found() -> None:
    blocks = tour_blocks((ROOT / "README.md").read_text())
    assert len(blocks) == len(CHECKS), "each block of the tour needs its check in CHECKS"
    assert README_URL in blocks[0]


def test_the_readme_tour_runs_as_written(data_dir: Path, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        if os.environ.get("REQUIRE_CURL") == "1":
            pytest.fail("REQUIRE_CURL=1 but curl is not installed")
        pytest.skip("the tour is curl commands, and curl is not installed")
    blocks = tour_blocks((ROOT / "README.md").read_text())
    assert len(blocks) == len(CHECKS)
    with running_service(data_dir) as service:
        script = "\n".join(
            f"echo '{MARK.format(number)}'\n{block.replace(README_URL, service.base_url)}"
            for number, block in enumerate(blocks)
        )
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    outputs = re.split(r"^@@ tour block \d+ @@\n", done.stdout, flags=re.M)[1:]
    assert len(outputs) == len(CHECKS)
    seen: dict[str, object] = {}
    for number, (check, output) in enumerate(zip(CHECKS, outputs, strict=True)):
        try:
            check(Answer(output), seen)
        except Exception as error:
            raise AssertionError(f"tour block {number} printed:\n{output}") from error
